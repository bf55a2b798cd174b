//! Framing: how a byte stream is cut into frames, and the limit on a frame's size.
//!
//! ```text
//! [u32 LE length of the rest][u8 kind][u64 LE correlation id][payload …]
//! ```
//!
//! [`Frame::check`] reads only the length prefix, so a peer that declares a huge frame is
//! refused before anything is read or allocated for it; [`Frame::parse`] then splits the whole
//! frame off the front of the connection's buffer without copying. This module knows nothing
//! of kinds or payloads: `request.rs` and `response.rs` give the payload a meaning.

use crate::error::FrameError;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LENGTH_PREFIX_LEN: usize = 4;
/// Bytes before the payload: length prefix, kind, correlation id.
pub const FRAME_HEADER_LEN: usize = LENGTH_PREFIX_LEN + 1 + 8;
/// The largest frame a peer accepts unless configured otherwise: 16 MiB, length prefix
/// included. Large enough for a generous batch, small enough that one connection cannot make
/// the broker allocate without bound.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// One frame: a kind byte, the correlation id, and the payload that the kind gives a meaning.
///
/// The payload is a slice of the buffer the frame was read into: decoding a publish or a
/// delivery hands out slices of it instead of copying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// A [`crate::RequestKind`] or [`crate::ResponseKind`] code.
    pub kind: u8,
    /// Chosen by the client for each request and echoed by the server's answer; 0 on frames
    /// the server sends unasked (deliveries, connection-level errors).
    pub correlation_id: u64,
    /// Everything after the header.
    pub payload: Bytes,
}

impl Frame {
    /// How many bytes the frame at the front of `buf` occupies, if all of it is buffered.
    ///
    /// Reads only the 4-byte length prefix. A declared size over `max_frame_bytes` (the whole
    /// frame, prefix included) is refused with [`FrameError::TooLarge`] as soon as the prefix
    /// is in, before the caller reads or reserves the rest. [`FrameError::Incomplete`] means
    /// "read more"; its `needed` is safe to reserve because it never exceeds the limit.
    ///
    /// # Errors
    /// [`FrameError::Incomplete`] (read more), [`FrameError::TooLarge`] or
    /// [`FrameError::TooShort`] (report and close: the stream cannot be resynchronised).
    pub fn check(buf: &[u8], max_frame_bytes: usize) -> Result<usize, FrameError> {
        let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX_LEN>() else {
            return Err(FrameError::Incomplete {
                needed: FRAME_HEADER_LEN,
                available: buf.len(),
            });
        };
        let length = u32::from_le_bytes(*prefix);
        // u32 always fits usize on the 32- and 64-bit targets Weir builds for; saturate
        // rather than wrap on anything smaller so the limit check still refuses it.
        let total = usize::try_from(length)
            .unwrap_or(usize::MAX)
            .saturating_add(LENGTH_PREFIX_LEN);
        if total > max_frame_bytes {
            return Err(FrameError::TooLarge {
                length: total,
                limit: max_frame_bytes,
            });
        }
        if total < FRAME_HEADER_LEN {
            return Err(FrameError::TooShort { length });
        }
        if buf.len() < total {
            return Err(FrameError::Incomplete {
                needed: total,
                available: buf.len(),
            });
        }
        Ok(total)
    }

    /// How many bytes of room to make in a read buffer holding `buffered` bytes of a frame
    /// that needs `needed` in all (from [`FrameError::Incomplete`]), reading at least `chunk`
    /// bytes at a time.
    ///
    /// The buffer grows as bytes arrive, never by the declared size at once: at most by what
    /// is buffered already (doubling, so a large frame costs few reallocations) and never past
    /// the frame. A peer that declares a frame of the maximum size and then stalls holds about
    /// what it sent, not the maximum.
    pub fn next_read_len(buffered: usize, needed: usize, chunk: usize) -> usize {
        needed
            .saturating_sub(buffered)
            .min(buffered.max(chunk))
            .max(chunk)
    }

    /// Splits the frame at the front of `buf` off it, without copying.
    ///
    /// Runs [`Frame::check`] first. On any error `buf` is left as it was, so after
    /// [`FrameError::Incomplete`] the caller reads more into the same buffer and calls again.
    /// The other errors leave the stream out of step: report and close.
    ///
    /// # Errors
    /// As [`Frame::check`].
    pub fn parse(buf: &mut BytesMut, max_frame_bytes: usize) -> Result<Frame, FrameError> {
        let total = Frame::check(buf, max_frame_bytes)?;
        let mut frame = buf.split_to(total).freeze();
        // `check` guaranteed at least a whole header, so these reads cannot run short.
        let mut header = frame.split_to(FRAME_HEADER_LEN);
        header.advance(LENGTH_PREFIX_LEN);
        let kind = header.get_u8();
        let correlation_id = header.get_u64_le();
        Ok(Frame {
            kind,
            correlation_id,
            payload: frame,
        })
    }

    /// Appends the encoded frame to `buf`.
    ///
    /// # Panics
    /// If the frame would be 4 GiB or more, which the length prefix cannot express. Frames are
    /// bounded far below that by the maximum frame size, so this is a caller bug.
    pub fn encode(&self, buf: &mut BytesMut) {
        let start = begin(buf, self.kind, self.correlation_id);
        buf.put_slice(&self.payload);
        finish(buf, start);
    }

    /// Size of the encoded frame, header included.
    pub fn encoded_len(&self) -> usize {
        FRAME_HEADER_LEN + self.payload.len()
    }
}

/// Writes a frame header with a placeholder length; returns where the frame starts, for
/// [`finish`]. Writing in place, then patching the length, is what lets every encoder put its
/// payload straight into the caller's buffer with no intermediate copy.
pub(crate) fn begin(buf: &mut BytesMut, kind: u8, correlation_id: u64) -> usize {
    let start = buf.len();
    buf.put_u32_le(0);
    buf.put_u8(kind);
    buf.put_u64_le(correlation_id);
    start
}

/// Patches the length prefix of the frame that [`begin`] started at `start`, covering
/// everything written since.
///
/// # Panics
/// If the frame reached 4 GiB (see [`Frame::encode`]).
pub(crate) fn finish(buf: &mut BytesMut, start: usize) {
    let length = u32::try_from(buf.len() - start - LENGTH_PREFIX_LEN)
        .expect("a frame stays far below 4 GiB: callers respect the maximum frame size");
    buf[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&length.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BytesMut {
        let mut buf = BytesMut::new();
        Frame {
            kind: 0x02,
            correlation_id: 0x0102_0304_0506_0708,
            payload: Bytes::from_static(b"abc"),
        }
        .encode(&mut buf);
        buf
    }

    #[test]
    fn a_frame_is_laid_out_as_documented() {
        assert_eq!(
            &sample()[..],
            &[12, 0, 0, 0, 0x02, 8, 7, 6, 5, 4, 3, 2, 1, b'a', b'b', b'c']
        );
    }

    #[test]
    fn a_whole_frame_parses_and_leaves_the_rest_in_the_buffer() {
        let mut buf = sample();
        buf.extend_from_slice(&[9, 9]);
        assert_eq!(Frame::check(&buf, DEFAULT_MAX_FRAME_BYTES), Ok(16));
        let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
        assert_eq!(frame.kind, 0x02);
        assert_eq!(frame.correlation_id, 0x0102_0304_0506_0708);
        assert_eq!(&frame.payload[..], b"abc");
        assert_eq!(frame.encoded_len(), 16);
        assert_eq!(&buf[..], &[9, 9]);
    }

    /// Goal: a frame cut at any byte is "read more", never an error or a panic, and the
    /// buffer is untouched. Method: every prefix of a valid frame.
    #[test]
    fn every_prefix_of_a_frame_is_incomplete_and_untouched() {
        let whole = sample();
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            let result = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES);
            match result {
                Err(FrameError::Incomplete { needed, available }) => {
                    assert_eq!(available, cut);
                    assert!(needed > cut && needed <= whole.len());
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
            assert_eq!(&buf[..], &whole[..cut]);
        }
    }

    #[test]
    fn an_oversized_length_is_refused_from_the_prefix_alone() {
        // Only the four length bytes are buffered: a frame of u32::MAX bytes is refused
        // without waiting for (or reserving room for) any of it.
        let prefix = u32::MAX.to_le_bytes();
        assert_eq!(
            Frame::check(&prefix, DEFAULT_MAX_FRAME_BYTES),
            Err(FrameError::TooLarge {
                length: u32::MAX as usize + 4,
                limit: DEFAULT_MAX_FRAME_BYTES
            })
        );
        let just_over = u32::try_from(DEFAULT_MAX_FRAME_BYTES - 3).unwrap();
        assert!(matches!(
            Frame::check(&just_over.to_le_bytes(), DEFAULT_MAX_FRAME_BYTES),
            Err(FrameError::TooLarge { .. })
        ));
        let at_limit = u32::try_from(DEFAULT_MAX_FRAME_BYTES - 4).unwrap();
        assert!(matches!(
            Frame::check(&at_limit.to_le_bytes(), DEFAULT_MAX_FRAME_BYTES),
            Err(FrameError::Incomplete { needed, .. }) if needed == DEFAULT_MAX_FRAME_BYTES
        ));
        assert_eq!(
            FrameError::TooLarge {
                length: 0,
                limit: 0
            }
            .code(),
            Some(crate::ErrorCode::PayloadTooLarge)
        );
    }

    /// Goal (issue 10, defect 23): a frame that declares the maximum size and stalls does
    /// not make the reader reserve the maximum; the buffer grows with the bytes that arrive.
    /// Method: the room asked for at each step while a 16 MiB frame trickles in.
    #[test]
    fn a_read_buffer_grows_with_the_bytes_that_arrive_not_the_declared_size() {
        let chunk = 16 * 1024;
        let needed = DEFAULT_MAX_FRAME_BYTES;
        // Only the header arrived: one chunk, not 16 MiB.
        assert_eq!(Frame::next_read_len(FRAME_HEADER_LEN, needed, chunk), chunk);
        // Growth doubles what is buffered, and never goes past the frame.
        assert_eq!(Frame::next_read_len(1 << 20, needed, chunk), 1 << 20);
        assert_eq!(Frame::next_read_len(needed - 10, needed, chunk), chunk);
        assert_eq!(
            Frame::next_read_len(needed - 100_000, needed, chunk),
            100_000
        );
        // Reading a whole frame this way takes a logarithmic number of steps.
        let mut buffered = FRAME_HEADER_LEN;
        let mut steps = 0;
        while buffered < needed {
            buffered += Frame::next_read_len(buffered, needed, chunk).min(needed - buffered);
            steps += 1;
        }
        assert!(steps <= 12, "{steps} steps");
    }

    #[test]
    fn a_length_shorter_than_the_header_is_refused() {
        for length in 0..9u32 {
            assert_eq!(
                Frame::check(&length.to_le_bytes(), DEFAULT_MAX_FRAME_BYTES),
                Err(FrameError::TooShort { length })
            );
        }
        let mut buf = BytesMut::from(&9u32.to_le_bytes()[..]);
        buf.extend_from_slice(&[0x02, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Frame::parse(&mut buf, 13).unwrap().payload.len(), 0);
    }
}
