//! The Raft files' decoders (`raft-terms`, `raft-vote`) against arbitrary bytes. The body is
//! `weir_storage::raft::fuzzing::raft_files`, shared with the stable proptest in
//! `crates/weir-storage/tests/fuzz_raft.rs`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    weir_storage::raft::fuzzing::raft_files(data);
});
