//! Roundtrip properties: every request and response variant, with random fields, decodes to
//! exactly what was encoded; every strict prefix of a payload is refused; and the bulk fields
//! of publishes and deliveries come back as slices of the frame, not copies.

mod strategies;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use strategies::{encoded_request, encoded_response};
use weir_proto::{
    DEFAULT_MAX_FRAME_BYTES, Frame, FrameError, Request, RequestKind, Response, ResponseKind,
};

/// True when `part` lies inside `whole`'s memory: a zero-copy slice.
fn is_slice_of(part: &Bytes, whole: &Bytes) -> bool {
    let start = whole.as_ptr() as usize;
    let end = start + whole.len();
    let part_start = part.as_ptr() as usize;
    part.is_empty() || (part_start >= start && part_start + part.len() <= end)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Goal: the client's encoding is what the server decodes, for every request variant.
    /// Method: encode a random request, cut the frame off the buffer, decode, compare.
    #[test]
    fn every_request_decodes_to_what_was_encoded((request, correlation_id, mut buf) in encoded_request()) {
        let encoded_len = buf.len();
        let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
        prop_assert!(buf.is_empty(), "encode wrote exactly one frame");
        prop_assert_eq!(frame.encoded_len(), encoded_len);
        prop_assert_eq!(frame.kind, request.kind().code());
        prop_assert_eq!(frame.correlation_id, correlation_id);
        let decoded = Request::decode(frame.kind, frame.payload.clone()).unwrap();
        if let Request::Publish { batch, .. }
        | Request::PublishReportingDuplicates { batch, .. }
        | Request::PublishToExchange { batch, .. }
        | Request::PublishDelayed { batch, .. }
        | Request::SendHalf { batch, .. } = &decoded
        {
            prop_assert!(is_slice_of(batch, &frame.payload), "the batch is not copied");
        }
        prop_assert_eq!(decoded, request);
    }

    /// Goal: the server's encoding is what the client decodes, for every response variant.
    #[test]
    fn every_response_decodes_to_what_was_encoded((response, correlation_id, mut buf) in encoded_response()) {
        let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
        prop_assert!(buf.is_empty());
        prop_assert_eq!(frame.kind, response.kind().code());
        prop_assert_eq!(frame.correlation_id, correlation_id);
        let decoded = Response::decode(frame.kind, frame.payload.clone()).unwrap();
        if let Response::Deliver { messages, .. } | Response::DeadLetters(messages) = &decoded {
            for delivery in messages {
                prop_assert!(is_slice_of(&delivery.value, &frame.payload));
                if let Some(key) = &delivery.key {
                    prop_assert!(is_slice_of(key, &frame.payload));
                }
                prop_assert_eq!(delivery.encoded_len(), weir_proto_len(delivery));
            }
        }
        if let Response::ScheduledMessage { messages, .. } = &decoded {
            for message in messages {
                prop_assert!(is_slice_of(&message.value, &frame.payload));
                prop_assert_eq!(message.encoded_len(), message_len(message));
            }
        }
        prop_assert_eq!(decoded, response);
    }

    /// Goal: a payload cut short anywhere is an error, never a different valid value and
    /// never a panic. Method: decode every strict prefix of a valid payload.
    #[test]
    fn every_strict_prefix_of_a_request_payload_is_refused((_request, _id, mut buf) in encoded_request()) {
        let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
        for cut in 0..frame.payload.len() {
            prop_assert!(Request::decode(frame.kind, frame.payload.slice(..cut)).is_err(), "cut at {}", cut);
        }
    }

    #[test]
    fn every_strict_prefix_of_a_response_payload_is_refused((_response, _id, mut buf) in encoded_response()) {
        let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
        for cut in 0..frame.payload.len() {
            prop_assert!(Response::decode(frame.kind, frame.payload.slice(..cut)).is_err(), "cut at {}", cut);
        }
    }

    /// Goal: a frame arriving a byte at a time is "incomplete" at every step before the last,
    /// and the buffer is never consumed early.
    #[test]
    fn every_prefix_of_a_frame_is_incomplete((_request, _id, buf) in encoded_request()) {
        for cut in 0..buf.len() {
            let mut partial = BytesMut::from(&buf[..cut]);
            let result = Frame::parse(&mut partial, DEFAULT_MAX_FRAME_BYTES);
            let is_incomplete = matches!(result, Err(FrameError::Incomplete { .. }));
            prop_assert!(is_incomplete, "cut at {}: {:?}", cut, result);
            prop_assert_eq!(partial.len(), cut);
        }
    }

    /// Goal: frames back to back in one buffer come apart in order (a pipelining client).
    #[test]
    fn frames_back_to_back_split_in_order(requests in proptest::collection::vec(strategies::request(), 1..6)) {
        let mut buf = BytesMut::new();
        for (index, request) in requests.iter().enumerate() {
            request.encode(index as u64 + 1, &mut buf);
        }
        for (index, request) in requests.iter().enumerate() {
            let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
            prop_assert_eq!(frame.correlation_id, index as u64 + 1);
            prop_assert_eq!(&Request::decode(frame.kind, frame.payload).unwrap(), request);
        }
        prop_assert!(buf.is_empty());
    }
}

/// The documented size of one delivery, computed independently of the codec.
fn weir_proto_len(delivery: &weir_proto::Delivery) -> usize {
    4 + 8
        + 4
        + 8
        + 1
        + delivery.key.as_ref().map_or(0, |key| 4 + key.len())
        + 4
        + delivery
            .headers
            .iter()
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum::<usize>()
        + 4
        + delivery.value.len()
}

/// The documented size of one message, computed independently of the codec.
fn message_len(message: &weir_proto::Message) -> usize {
    8 + 1
        + message.key.as_ref().map_or(0, |key| 4 + key.len())
        + 4
        + message
            .headers
            .iter()
            .map(|(name, value)| 8 + name.len() + value.len())
            .sum::<usize>()
        + 4
        + message.value.len()
}

#[test]
fn each_variant_uses_the_kind_of_its_table_entry() {
    // Every command in the table has a variant that encodes with that kind, and back.
    for kind in RequestKind::ALL {
        let mut found = false;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..2000 {
            let request = strategies::request()
                .new_tree(&mut runner)
                .unwrap()
                .current();
            if request.kind() == *kind {
                found = true;
                break;
            }
        }
        assert!(found, "no request variant encodes as {kind}");
    }
    for kind in ResponseKind::ALL {
        let mut found = false;
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        for _ in 0..2000 {
            let response = strategies::response()
                .new_tree(&mut runner)
                .unwrap()
                .current();
            if response.kind() == *kind {
                found = true;
                break;
            }
        }
        assert!(found, "no response variant encodes as {kind}");
    }
}
