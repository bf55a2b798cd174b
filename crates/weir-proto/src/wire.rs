//! The payload primitives: integers, flags, strings, byte strings, options and lists.
//!
//! All integers are little-endian and fixed-width; strings and byte strings are a `u32`
//! length then the bytes; an option is a `u8` tag (0 none, 1 some) then the value; a list is a
//! `u32` count then the items. The [`Reader`] checks every length and count against the bytes
//! left *before* it slices or allocates, names the field in every error, and hands out byte
//! strings as slices of the frame. Nothing here knows what a request is.

use crate::error::DecodeError;
use bytes::{BufMut, Bytes, BytesMut};

/// A cursor over one frame's payload.
///
/// Invariant: `position <= payload.len()`.
pub(crate) struct Reader {
    payload: Bytes,
    position: usize,
}

impl Reader {
    pub(crate) fn new(payload: Bytes) -> Reader {
        Reader {
            payload,
            position: 0,
        }
    }

    pub(crate) fn position(&self) -> usize {
        self.position
    }

    pub(crate) fn remaining(&self) -> usize {
        self.payload.len() - self.position
    }

    /// The next `length` bytes, borrowed; the cursor moves past them.
    fn take(&mut self, length: usize, expected: &'static str) -> Result<&[u8], DecodeError> {
        if length > self.remaining() {
            return Err(DecodeError::Truncated {
                offset: self.position,
                expected,
                needed: length,
                available: self.remaining(),
            });
        }
        let start = self.position;
        self.position += length;
        Ok(&self.payload[start..self.position])
    }

    fn array<const N: usize>(&mut self, expected: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, expected)?;
        Ok(*bytes
            .first_chunk::<N>()
            .expect("take returned exactly N bytes"))
    }

    pub(crate) fn u8(&mut self, expected: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(expected)?[0])
    }

    pub(crate) fn u16(&mut self, expected: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(expected)?))
    }

    pub(crate) fn u32(&mut self, expected: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(expected)?))
    }

    pub(crate) fn u64(&mut self, expected: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(expected)?))
    }

    pub(crate) fn i64(&mut self, expected: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array(expected)?))
    }

    /// An IEEE 754 binary64 that must be finite. NaN is refused because it has many bit
    /// patterns and equals nothing, infinities because no measurement or threshold is one.
    pub(crate) fn finite_f64(&mut self, expected: &'static str) -> Result<f64, DecodeError> {
        let offset = self.position;
        let bits = self.u64(expected)?;
        let value = f64::from_bits(bits);
        if !value.is_finite() {
            return Err(DecodeError::InvalidValue {
                offset,
                expected,
                found: bits,
            });
        }
        Ok(value)
    }

    /// A tag byte that must be at most `max`; `expected` should list the allowed values.
    pub(crate) fn tag(&mut self, max: u8, expected: &'static str) -> Result<u8, DecodeError> {
        let offset = self.position;
        let tag = self.u8(expected)?;
        if tag > max {
            return Err(DecodeError::InvalidValue {
                offset,
                expected,
                found: u64::from(tag),
            });
        }
        Ok(tag)
    }

    /// 0 or 1; anything else is refused so every value has one encoding.
    pub(crate) fn bool(&mut self, expected: &'static str) -> Result<bool, DecodeError> {
        Ok(self.tag(1, expected)? == 1)
    }

    /// A `u32` length read as `usize`, before checking it against what is left.
    fn length(&mut self, expected: &'static str) -> Result<usize, DecodeError> {
        let length = self.u32(expected)?;
        // A length that does not fit usize cannot fit the payload either: saturating makes
        // `take` report it as truncation instead of wrapping.
        Ok(usize::try_from(length).unwrap_or(usize::MAX))
    }

    /// A length-prefixed byte string, as a slice of the frame (no copy).
    pub(crate) fn bytes(&mut self, expected: &'static str) -> Result<Bytes, DecodeError> {
        let length = self.length(expected)?;
        let start = self.position;
        self.take(length, expected)?;
        Ok(self.payload.slice(start..self.position))
    }

    /// A length-prefixed UTF-8 string. Allocates exactly the string's length, which the
    /// payload already holds.
    pub(crate) fn string(&mut self, expected: &'static str) -> Result<String, DecodeError> {
        let length = self.length(expected)?;
        let offset = self.position;
        let bytes = self.take(length, expected)?;
        match std::str::from_utf8(bytes) {
            Ok(text) => Ok(text.to_owned()),
            Err(error) => Err(DecodeError::InvalidUtf8 {
                offset,
                expected,
                invalid_at: offset + error.valid_up_to(),
            }),
        }
    }

    /// An option tag, then the value if present.
    pub(crate) fn option<T>(
        &mut self,
        expected: &'static str,
        value: impl FnOnce(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.bool(expected)? {
            value(self).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A list: a `u32` count, then the items.
    ///
    /// The count is checked against the bytes left, assuming each item takes at least
    /// `minimum_item_bytes` on the wire, before any room is allocated. The room reserved up
    /// front is further capped at the bytes left, counted in memory-sized items: an item in
    /// memory (a `Delivery` with its `Bytes` handles) can be several times its smallest wire
    /// form, and a lying count must not turn a 16 MiB frame into a 100 MiB reservation. Items
    /// that really are in the frame still decode: the `Vec` then grows as they arrive.
    pub(crate) fn list<T>(
        &mut self,
        expected: &'static str,
        minimum_item_bytes: usize,
        mut item: impl FnMut(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        debug_assert!(
            minimum_item_bytes > 0,
            "a zero-size item makes any count fit"
        );
        let offset = self.position;
        let count = self.u32(expected)?;
        let needed = u64::from(count) * minimum_item_bytes as u64;
        if needed > self.remaining() as u64 {
            return Err(DecodeError::CountTooLarge {
                offset,
                expected,
                count,
                needed,
                available: self.remaining(),
            });
        }
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        let memory_cap = self.remaining() / std::mem::size_of::<T>().max(1);
        let mut items = Vec::with_capacity(count.min(memory_cap));
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// Everything left, as a slice of the frame.
    pub(crate) fn rest(&mut self) -> Bytes {
        let rest = self.payload.slice(self.position..);
        self.position = self.payload.len();
        rest
    }

    /// Refuses bytes after the last field.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.remaining() > 0 {
            return Err(DecodeError::TrailingBytes {
                offset: self.position,
                count: self.remaining(),
            });
        }
        Ok(())
    }
}

/// Converts a length or count to its `u32` wire form.
///
/// # Panics
/// Past `u32::MAX`: such a value cannot be in a frame (frames are far smaller), so reaching
/// this is a caller bug, not bad input.
pub(crate) fn wire_u32(value: usize) -> u32 {
    u32::try_from(value).expect("lengths and counts in a frame fit u32: frames are far smaller")
}

pub(crate) fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u32_le(wire_u32(bytes.len()));
    buf.put_slice(bytes);
}

pub(crate) fn put_string(buf: &mut BytesMut, text: &str) {
    put_bytes(buf, text.as_bytes());
}

pub(crate) fn put_bool(buf: &mut BytesMut, value: bool) {
    buf.put_u8(u8::from(value));
}

pub(crate) fn put_option<T>(
    buf: &mut BytesMut,
    value: Option<T>,
    put: impl FnOnce(&mut BytesMut, T),
) {
    match value {
        None => buf.put_u8(0),
        Some(value) => {
            buf.put_u8(1);
            put(buf, value);
        }
    }
}

pub(crate) fn put_option_u64(buf: &mut BytesMut, value: Option<u64>) {
    put_option(buf, value, BytesMut::put_u64_le);
}

pub(crate) fn put_list<T>(buf: &mut BytesMut, items: &[T], mut put: impl FnMut(&mut BytesMut, &T)) {
    buf.put_u32_le(wire_u32(items.len()));
    for item in items {
        put(buf, item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_length_past_the_end_names_the_field_and_what_is_left() {
        let mut reader = Reader::new(Bytes::from_static(&[9, 0, 0, 0, b'a', b'b']));
        assert_eq!(
            reader.string("topic name"),
            Err(DecodeError::Truncated {
                offset: 4,
                expected: "topic name",
                needed: 9,
                available: 2
            })
        );
    }

    #[test]
    fn a_maximal_length_is_truncation_not_an_allocation() {
        let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]));
        assert!(matches!(
            reader.bytes("value"),
            Err(DecodeError::Truncated { available: 0, .. })
        ));
    }

    #[test]
    fn invalid_utf8_is_refused_with_its_position() {
        let mut reader = Reader::new(Bytes::from_static(&[3, 0, 0, 0, b'a', 0xff, b'b']));
        assert_eq!(
            reader.string("group name"),
            Err(DecodeError::InvalidUtf8 {
                offset: 4,
                expected: "group name",
                invalid_at: 5
            })
        );
    }

    #[test]
    fn a_count_larger_than_the_payload_is_refused_before_allocating() {
        let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]));
        assert_eq!(
            reader.list("message ids", 12, |reader| reader.u64("offset")),
            Err(DecodeError::CountTooLarge {
                offset: 0,
                expected: "message ids",
                count: u32::MAX,
                needed: u64::from(u32::MAX) * 12,
                available: 3
            })
        );
    }

    #[test]
    fn flags_and_tags_outside_their_set_are_refused() {
        let mut reader = Reader::new(Bytes::from_static(&[2]));
        assert_eq!(
            reader.bool("requeue flag (0 or 1)"),
            Err(DecodeError::InvalidValue {
                offset: 0,
                expected: "requeue flag (0 or 1)",
                found: 2
            })
        );
        let mut reader = Reader::new(Bytes::from_static(&[0, 7]));
        assert_eq!(reader.tag(3, "start"), Ok(0));
        assert!(matches!(
            reader.tag(3, "start"),
            Err(DecodeError::InvalidValue {
                offset: 1,
                found: 7,
                ..
            })
        ));
    }

    #[test]
    fn floats_that_are_not_finite_are_refused() {
        let mut payload = Vec::new();
        for value in [1.5_f64, -0.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            payload.extend_from_slice(&value.to_le_bytes());
        }
        let mut reader = Reader::new(Bytes::from(payload));
        assert_eq!(reader.finite_f64("value"), Ok(1.5));
        assert_eq!(
            reader.finite_f64("value").map(f64::to_bits),
            Ok((-0.0_f64).to_bits())
        );
        for (offset, value) in [(16, f64::NAN), (24, f64::INFINITY), (32, f64::NEG_INFINITY)] {
            assert_eq!(
                reader.finite_f64("value"),
                Err(DecodeError::InvalidValue {
                    offset,
                    expected: "value",
                    found: value.to_bits()
                })
            );
        }
    }

    #[test]
    fn bytes_after_the_last_field_are_refused() {
        let mut reader = Reader::new(Bytes::from_static(&[1, 2]));
        reader.u8("kind").unwrap();
        assert_eq!(
            reader.finish(),
            Err(DecodeError::TrailingBytes {
                offset: 1,
                count: 1
            })
        );
    }
}
