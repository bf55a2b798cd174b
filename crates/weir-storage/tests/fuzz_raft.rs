//! The `raft_terms` fuzz target, run as a property test so it runs on stable and in CI.
//!
//! `fuzz/fuzz_targets/raft_terms.rs` feeds cargo-fuzz's inputs to
//! `weir_storage::raft::fuzzing::raft_files`; this file feeds it proptest's: arbitrary bytes,
//! and real terms and vote files with a byte changed or cut short, which get past the header
//! and the CRCs far more often than noise.

use proptest::prelude::*;
use weir_storage::io::sim::SimDirectory;
use weir_storage::raft::{TERMS_FILE, TermStart, TermsFile, VOTE_FILE, VoteFile, fuzzing};

/// The bytes of a real terms file holding `count` increasing term starts.
fn terms_file(count: usize, step: u64) -> Vec<u8> {
    let directory = SimDirectory::new(0);
    let mut terms = TermsFile::open(directory.clone()).expect("open");
    for index in 0..count as u64 {
        terms
            .append(TermStart {
                term: index + 1,
                leader: index % 3,
                first_index: index * step + 1,
                first_offset: index * step * 7,
            })
            .expect("append");
    }
    directory.file_bytes(TERMS_FILE).expect("created")
}

fn vote_file(value: &[u8]) -> Vec<u8> {
    let directory = SimDirectory::new(0);
    VoteFile::new(directory.clone()).save(value).expect("save");
    directory.file_bytes(VOTE_FILE).expect("saved")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        fuzzing::raft_files(&data);
    }

    #[test]
    fn terms_files_with_a_byte_changed_or_cut(
        count in 0usize..6,
        step in 1u64..1000,
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let whole = terms_file(count, step);
        fuzzing::raft_files(&whole);
        let mut changed = whole.clone();
        let at = position.index(changed.len());
        changed[at] = value;
        fuzzing::raft_files(&changed);
        fuzzing::raft_files(&whole[..cut.index(whole.len() + 1)]);
    }

    #[test]
    fn vote_files_with_a_byte_changed(
        vote in proptest::collection::vec(any::<u8>(), 0..64),
        position in any::<prop::sample::Index>(),
        value in any::<u8>(),
    ) {
        let mut bytes = vote_file(&vote);
        fuzzing::raft_files(&bytes);
        let at = position.index(bytes.len());
        bytes[at] = value;
        fuzzing::raft_files(&bytes);
    }
}
