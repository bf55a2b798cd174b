//! Native protocol decoders against arbitrary bytes: `Frame::check`/`parse`, then
//! `Request::decode` and `Response::decode`, with the re-encode check. The body is
//! `weir_proto::fuzzing::frame`, shared with the stable proptest in
//! `crates/weir-proto/tests/fuzz_frame.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir_proto::fuzzing::frame(data);
});
