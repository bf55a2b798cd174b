//! The fuzz target's body, shared by `fuzz/fuzz_targets/frame.rs` (cargo-fuzz, nightly) and
//! `tests/fuzz_frame.rs` (proptest, stable), so CI exercises the same checks without nightly.
//!
//! Not part of the public API: hidden from the docs, free to change. It asserts, because a
//! failed assertion is exactly what a fuzzer is looking for.

use crate::{Frame, FrameError, Request, Response};
use bytes::{Bytes, BytesMut};

/// A small limit, so that arbitrary inputs reach the "too large" path as well as the others.
const FUZZ_MAX_FRAME_BYTES: usize = 1 << 16;

/// Feeds `data` to every decoder and checks what must hold whatever the bytes are:
///
/// - nothing panics (the fuzzer's own oracle);
/// - [`Frame::check`] and [`Frame::parse`] agree, and a refused parse leaves the buffer as it
///   was;
/// - whatever decodes re-encodes to exactly the same bytes: every value has one encoding, so
///   a decoder cannot silently skip or invent a field.
///
/// The input is read twice: as a stream of frames, and as one kind byte followed by a payload,
/// which reaches the payload decoders without the fuzzer first finding a valid header.
pub fn frame(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    loop {
        let checked = Frame::check(&buf, FUZZ_MAX_FRAME_BYTES);
        let before = buf.clone();
        match Frame::parse(&mut buf, FUZZ_MAX_FRAME_BYTES) {
            Ok(frame) => {
                assert_eq!(checked, Ok(frame.encoded_len()));
                assert!(frame.encoded_len() <= FUZZ_MAX_FRAME_BYTES);
                payload(frame.kind, frame.correlation_id, frame.payload);
            }
            Err(error) => {
                assert_eq!(checked, Err(error.clone()));
                assert_eq!(buf, before, "a refused parse must not consume bytes");
                if let FrameError::Incomplete { needed, available } = error {
                    assert!(needed > available && needed <= FUZZ_MAX_FRAME_BYTES);
                }
                break;
            }
        }
    }
    if let Some((&kind, rest)) = data.split_first() {
        payload(kind, 0, Bytes::copy_from_slice(rest));
    }
}

/// Decodes `payload` both ways and checks that what decodes re-encodes byte for byte.
fn payload(kind: u8, correlation_id: u64, payload: Bytes) {
    let mut original = BytesMut::new();
    Frame {
        kind,
        correlation_id,
        payload: payload.clone(),
    }
    .encode(&mut original);
    if let Ok(request) = Request::decode(kind, payload.clone()) {
        let mut again = BytesMut::new();
        request.encode(correlation_id, &mut again);
        assert_eq!(again, original, "{request:?} re-encodes differently");
    }
    if let Ok(response) = Response::decode(kind, payload) {
        let mut again = BytesMut::new();
        response.encode(correlation_id, &mut again);
        assert_eq!(again, original, "{response:?} re-encodes differently");
    }
}
