//! The codec's two error types: [`FrameError`] for framing, [`DecodeError`] for payloads.
//!
//! They are separate because they call for different reactions. A [`FrameError`] is about the
//! byte stream: `Incomplete` is the normal "read more" outcome, and the others mean the stream
//! can no longer be split into frames, so the connection must close. A [`DecodeError`] is about
//! one frame whose length was fine: the stream is still in step, so the server answers that one
//! request with an error and carries on. Each maps to the public [`ErrorCode`] the peer sees.
//! This module owns no decoding logic; it only describes what went wrong, where.

use crate::codes::ErrorCode;
use weir_batch::BatchError;

/// Why the front of a byte buffer is not (yet) a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Not a whole frame yet: read more bytes and try again. Not a failure.
    ///
    /// `needed` is the whole frame's size when the length prefix is buffered, otherwise the
    /// size of a frame header (a lower bound). It never exceeds the caller's limit, so it is
    /// safe to reserve.
    #[error("incomplete frame: need {needed} bytes, have {available}")]
    Incomplete {
        /// Bytes the frame needs in all (or at least).
        needed: usize,
        /// Bytes buffered now.
        available: usize,
    },
    /// The declared frame size is over the limit; refused before reading or allocating it.
    #[error("frame of {length} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Whole frame size the length prefix declares, prefix included.
        length: usize,
        /// The limit in force.
        limit: usize,
    },
    /// The length prefix declares fewer bytes than a kind and a correlation id take.
    #[error("frame length {length} is shorter than the 9 bytes of kind and correlation id")]
    TooShort {
        /// The value of the length prefix.
        length: u32,
    },
}

impl FrameError {
    /// The public code to report before closing the connection (`None` for `Incomplete`,
    /// which is not an error to report).
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            FrameError::Incomplete { .. } => None,
            FrameError::TooLarge { .. } => Some(ErrorCode::PayloadTooLarge),
            FrameError::TooShort { .. } => Some(ErrorCode::MalformedFrame),
        }
    }
}

/// Why a frame's payload is not a valid request or response.
///
/// Every variant but `UnknownKind` says at which byte of the payload the problem starts (add
/// [`crate::FRAME_HEADER_LEN`] for the offset in the frame), what the decoder expected there
/// and what it found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The kind byte names no request (or response) this build knows.
    #[error("unknown frame kind {kind:#04x}")]
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// The payload ends, or a declared length runs, past the bytes the frame holds.
    #[error(
        "at payload byte {offset}: expected {expected} ({needed} bytes), found {available} bytes"
    )]
    Truncated {
        /// Where the field starts.
        offset: usize,
        /// The field the decoder was reading.
        expected: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the payload.
        available: usize,
    },
    /// A tag or flag byte holds a value outside its set.
    #[error("at payload byte {offset}: expected {expected}, found {found}")]
    InvalidValue {
        /// Where the byte is.
        offset: usize,
        /// The field and its allowed values.
        expected: &'static str,
        /// The value found.
        found: u64,
    },
    /// A string field is not UTF-8.
    #[error(
        "at payload byte {offset}: expected {expected} as UTF-8, found an invalid byte at {invalid_at}"
    )]
    InvalidUtf8 {
        /// Where the string's bytes start.
        offset: usize,
        /// The field.
        expected: &'static str,
        /// Payload offset of the first byte that is not valid UTF-8.
        invalid_at: usize,
    },
    /// A count of items cannot fit in what is left, even if every item were as small as
    /// possible: refused before allocating room for them.
    #[error(
        "at payload byte {offset}: expected {expected}, found a count of {count} needing at least {needed} bytes, but {available} remain"
    )]
    CountTooLarge {
        /// Where the count is.
        offset: usize,
        /// The list being read.
        expected: &'static str,
        /// The count received.
        count: u32,
        /// The least number of bytes `count` items take.
        needed: u64,
        /// Bytes left in the payload after the count.
        available: usize,
    },
    /// The payload goes on after its last field. Refused so that every value has exactly one
    /// encoding.
    #[error("at payload byte {offset}: expected the end of the payload, found {count} more bytes")]
    TrailingBytes {
        /// Where the extra bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
    /// A publish carries bytes that are not one length-valid record batch.
    #[error("at payload byte {offset}: expected one record batch, {source}")]
    InvalidBatch {
        /// Where the batch starts.
        offset: usize,
        /// What `weir_batch::check_len` found.
        source: BatchError,
    },
}

impl DecodeError {
    /// The public code to answer the request with.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::UnknownKind { .. } => ErrorCode::UnsupportedRequest,
            _ => ErrorCode::MalformedFrame,
        }
    }
}
