//! The `frame` fuzz target, run as a property test so it runs on stable and in CI.
//!
//! `fuzz/fuzz_targets/frame.rs` feeds cargo-fuzz's inputs to `weir_proto::fuzzing::frame`;
//! this file feeds it proptest's: arbitrary bytes, and valid frames with bytes flipped,
//! inserted or cut, which reach far deeper into the payload decoders than random noise.
//! The checks (no panic, `check` and `parse` agree, decode-then-encode is the identity) live
//! in that one function, so both runners check the same things.

mod strategies;

use proptest::prelude::*;
use weir_proto::fuzzing;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::frame(&data);
    }

    #[test]
    fn valid_requests_with_a_byte_changed(
        (_request, _id, frame) in strategies::encoded_request(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut data = frame.to_vec();
        let position = position.index(data.len());
        data[position] = value;
        fuzzing::frame(&data);
    }

    #[test]
    fn valid_responses_with_a_byte_changed(
        (_response, _id, frame) in strategies::encoded_response(),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut data = frame.to_vec();
        let position = position.index(data.len());
        data[position] = value;
        fuzzing::frame(&data);
    }

    #[test]
    fn valid_frames_cut_or_extended(
        (_request, _id, request) in strategies::encoded_request(),
        (_response, _id2, response) in strategies::encoded_response(),
        cut in any::<prop::sample::Index>(),
        extra in proptest::collection::vec(any::<u8>(), 0..8),
    ) {
        let mut data = request.to_vec();
        data.extend_from_slice(&response);
        let cut = cut.index(data.len() + 1);
        data.truncate(cut);
        data.extend_from_slice(&extra);
        fuzzing::frame(&data);
        // Also as a lone payload, with the kind byte first, and without the frame header.
        let mut payload = vec![request[4]];
        payload.extend_from_slice(&request[weir_proto::FRAME_HEADER_LEN..]);
        payload.extend_from_slice(&extra);
        fuzzing::frame(&payload);
    }
}
