//! Crash and fault tests of the storage a Raft group needs (issue 11, phase 1): the log's
//! `truncate_from`, the vote file and the terms file, over the simulated directory.
//!
//! The properties: after any power loss (unsynced state dropped or torn at a random byte) or
//! any failed operation followed by one, the reopened log serves a contiguous run of batches,
//! each one exactly the batch appended at that offset and not truncated since; everything
//! confirmed (by a successful `sync` or `truncate_from`) is served; nothing is quarantined (a
//! truncate never leaves a hole for recovery to find). A vote or terms file holds the old or
//! the new content, never a mix. Seeds make every case replayable (`SEED=…`, `FAILING=…`).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_storage::io::Directory;
use weir_storage::io::sim::{CrashMode, SimDirectory};
use weir_storage::raft::{TermStart, TermsFile, VoteFile};
use weir_storage::{Error, LogConfig, PartitionLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 1_500,
        index_interval_bytes: 200,
        retention_bytes: Some(8_000),
        ..LogConfig::default()
    }
}

/// Drives a log and remembers what may and must be on disk.
struct Harness {
    directory: Arc<SimDirectory>,
    log: Option<PartitionLog>,
    /// Stored bytes of every batch that may be on disk, by base offset. A successful truncate
    /// removes what it cut: those bytes must never be served again.
    appended: BTreeMap<u64, Vec<u8>>,
    /// One past the last offset confirmed durable.
    confirmed_end: u64,
    serial: u64,
    label: String,
}

impl Harness {
    fn new(seed: u64) -> Harness {
        Harness {
            directory: SimDirectory::new(seed),
            log: None,
            appended: BTreeMap::new(),
            confirmed_end: 0,
            serial: 0,
            label: String::new(),
        }
    }

    fn open(&mut self) {
        let directory: Arc<dyn Directory> = self.directory.clone();
        // An injected fault may hit recovery itself; the second attempt runs clean.
        let opened = PartitionLog::open(Arc::clone(&directory), config())
            .or_else(|_| PartitionLog::open(directory, config()));
        let (log, _) = opened.unwrap_or_else(|error| panic!("{}: open: {error}", self.label));
        self.log = Some(log);
        self.verify();
    }

    fn log(&mut self) -> &mut PartitionLog {
        self.log.as_mut().expect("opened")
    }

    fn verify(&mut self) {
        let label = self.label.clone();
        let names = self.directory.file_names();
        assert!(
            names.iter().all(|name| !name.ends_with(".quarantined")),
            "{label}: recovery found a hole: {names:?}"
        );
        let log = self.log.as_ref().expect("opened");
        let reader = log.reader();
        let batches = reader
            .read(0, usize::MAX)
            .unwrap_or_else(|error| panic!("{label}: read: {error}"));
        let mut expected = reader.start_offset();
        for batch in &batches {
            assert_eq!(batch.base_offset(), expected, "{label}: not contiguous");
            let appended = self.appended.get(&batch.base_offset()).unwrap_or_else(|| {
                panic!(
                    "{label}: batch at {} was truncated or never appended",
                    batch.base_offset()
                )
            });
            assert_eq!(
                &batch.as_bytes()[..],
                &appended[..],
                "{label}: batch at {} is not the last one appended there",
                batch.base_offset()
            );
            expected = batch.next_offset();
        }
        assert_eq!(expected, reader.end_offset(), "{label}: short read");
        assert!(
            reader.end_offset() >= self.confirmed_end,
            "{label}: confirmed up to {} but only {} survived",
            self.confirmed_end,
            reader.end_offset()
        );
        assert_eq!(log.next_offset(), reader.end_offset());
        let end = reader.end_offset();
        self.appended.retain(|base, _| *base < end);
    }

    fn append(&mut self, rng: &mut StdRng) {
        // A distinct timestamp per batch: a resurrected truncated batch never equals the one
        // appended at its offset later.
        self.serial += 1;
        let timestamp = self.serial as i64 * 1_000;
        let batch = common::batch(rng.random_range(1..6), timestamp, rng.random_range(0..150));
        if let Ok(appended) = self.log().append(&batch, 0) {
            self.appended.insert(
                appended.base_offset,
                common::stored_bytes(&batch, appended.base_offset),
            );
        }
    }

    fn commit(&mut self, durable: bool) -> Result<(), Error> {
        let log = self.log.as_mut().expect("opened");
        let result = if durable { log.sync() } else { log.flush() };
        match &result {
            Ok(()) if durable => self.confirmed_end = log.next_offset(),
            Ok(()) => {}
            Err(_) if !log.is_poisoned() => {
                let next = log.next_offset();
                self.appended.retain(|base, _| *base < next);
            }
            Err(_) => {}
        }
        result
    }

    /// Truncates at the boundary `back` batches before the end.
    fn truncate(&mut self, back: usize) -> Result<(), Error> {
        let log = self.log.as_mut().expect("opened");
        let start = log.start_offset();
        let bases: Vec<u64> = self
            .appended
            .range(start..)
            .map(|(base, _)| *base)
            .collect();
        let offset = match bases.len().checked_sub(back) {
            Some(position) if position < bases.len() => bases[position],
            _ => log.next_offset(),
        };
        let result = log.truncate_from(offset);
        match &result {
            Ok(()) => {
                self.appended.retain(|base, _| *base < offset);
                self.confirmed_end = offset;
            }
            Err(_) if !log.is_poisoned() => {
                // The flush before the cut failed and was undone; nothing was cut.
                let next = log.next_offset();
                self.appended.retain(|base, _| *base < next);
            }
            // Poisoned half-way: the old batches may survive, and may not.
            Err(_) => self.confirmed_end = self.confirmed_end.min(offset),
        }
        result
    }

    fn crash(&mut self, mode: CrashMode) {
        self.log = None;
        self.directory.crash(mode);
        self.open();
    }

    fn restart(&mut self) {
        self.log = None;
        self.open();
    }
}

fn crash_mode(rng: &mut StdRng) -> CrashMode {
    if rng.random_bool(0.7) {
        CrashMode::TearUnsynced
    } else {
        CrashMode::DropUnsynced
    }
}

/// Random appends, flushes, syncs, truncations, retention, restarts and power losses, with a
/// failure armed at a random upcoming I/O operation; the step that hits it is followed by a
/// power loss, as if the machine had died at that operation.
#[test]
fn truncation_survives_crashes_at_random_io_points() {
    let only: Option<u64> = std::env::var("SEED")
        .ok()
        .and_then(|seed| seed.parse().ok());
    for seed in 0..200 {
        if only.is_some_and(|only| only != seed) {
            continue;
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut harness = Harness::new(seed);
        harness.label = format!("seed {seed} open");
        harness.open();
        let mut truncations = 0;
        for step in 0..80 {
            harness.label = format!("seed {seed} step {step}");
            if rng.random_bool(0.1) {
                let at = harness.directory.operation_count() + rng.random_range(0..12);
                harness.directory.fail_operation(at);
            }
            let choice = rng.random_range(0..100);
            if only.is_some() {
                eprintln!(
                    "step {step} choice {choice} next {} end {} confirmed {} ops {} files {:?}",
                    harness.log().next_offset(),
                    harness.log().reader().end_offset(),
                    harness.confirmed_end,
                    harness.directory.operation_count(),
                    harness.directory.file_names()
                );
            }
            let failed = match choice {
                0..45 => {
                    harness.append(&mut rng);
                    false
                }
                45..55 => harness.commit(false).is_err(),
                55..68 => harness.commit(true).is_err(),
                68..84 => {
                    truncations += 1;
                    let back = rng.random_range(0..8);
                    harness.truncate(back).is_err()
                }
                84..88 => {
                    harness.commit(false).is_err() || harness.log().enforce_retention(0).is_err()
                }
                88..92 => {
                    harness.restart();
                    false
                }
                _ => {
                    let mode = crash_mode(&mut rng);
                    harness.crash(mode);
                    false
                }
            };
            if failed || harness.log().is_poisoned() {
                harness.directory.clear_faults();
                let mode = crash_mode(&mut rng);
                harness.crash(mode);
            }
        }
        assert!(truncations > 0);
        harness.directory.clear_faults();
        harness.label = format!("seed {seed} end");
        harness.crash(CrashMode::TearUnsynced);
    }
}

/// A fixed workload that rolls segments, truncates into closed and active segments and at
/// segment boundaries, and runs retention.
fn workload(harness: &mut Harness) {
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..30 {
        for _ in 0..rng.random_range(1..5) {
            harness.append(&mut rng);
        }
        let result = match round % 5 {
            0 | 3 => harness.commit(true),
            1 => harness.commit(false),
            2 => harness.truncate(rng.random_range(1..4)),
            _ => harness.truncate(rng.random_range(4..12)),
        };
        if result.is_err() && harness.log().is_poisoned() {
            assert!(matches!(
                harness.log().truncate_from(0),
                Err(Error::Poisoned)
            ));
            harness.restart();
        }
        if round % 10 == 9 {
            if harness.commit(false).is_ok() {
                let _ = harness.log().enforce_retention(0);
            }
            if harness.log().is_poisoned() {
                harness.restart();
            }
        }
    }
}

/// Fails each I/O operation of the workload in turn (one run per operation), then loses power:
/// no panic, and every property holds.
#[test]
fn failing_any_single_operation_around_truncation_loses_nothing_confirmed() {
    let mut probe = Harness::new(1);
    probe.label = "probe".to_owned();
    probe.open();
    workload(&mut probe);
    let operations = probe.directory.operation_count();
    assert!(operations > 100, "{operations}");
    let only: Option<u64> = std::env::var("FAILING").ok().and_then(|at| at.parse().ok());
    for failing in 0..operations {
        if only.is_some_and(|only| only != failing) {
            continue;
        }
        let mut harness = Harness::new(failing);
        harness.label = format!("failing operation {failing}");
        harness.directory.fail_operation(failing);
        harness.open();
        workload(&mut harness);
        harness.directory.clear_faults();
        harness.crash(CrashMode::TearUnsynced);
    }
}

/// A vote save cut at any I/O operation by a failure and a power loss leaves the previous vote
/// or the new one.
#[test]
fn a_vote_is_the_old_or_the_new_one_after_a_crash_at_any_operation() {
    for seed in 0..4 {
        for failing in 0..6 {
            for mode in [CrashMode::TearUnsynced, CrashMode::DropUnsynced] {
                let directory = SimDirectory::new(seed);
                let vote = VoteFile::new(directory.clone());
                vote.save(b"vote of term 1").expect("first save");
                // A torn temporary file from an earlier crash is ignored and replaced.
                directory.set_file_bytes("raft-vote.tmp", b"WXRV\x01garbage".to_vec());
                directory.fail_operation(directory.operation_count() + failing);
                let saved = vote.save(b"vote of term 2, for node 3").is_ok();
                directory.crash(mode);
                let loaded = VoteFile::new(directory.clone()).load().expect("load");
                let loaded = loaded.expect("a vote was saved before");
                if saved {
                    assert_eq!(loaded, b"vote of term 2, for node 3", "failing {failing}");
                } else {
                    assert!(
                        loaded == b"vote of term 1" || loaded == b"vote of term 2, for node 3",
                        "failing {failing}: {loaded:?}"
                    );
                }
            }
        }
    }
}

/// Random appends and cuts of term starts with failures and power losses: the reopened file
/// always holds what the model says is confirmed, plus at most the change in flight.
#[test]
fn the_terms_file_is_the_old_or_the_new_list_after_a_crash() {
    for seed in 0..100 {
        let mut rng = StdRng::seed_from_u64(seed);
        let directory = SimDirectory::new(seed);
        let mut terms = TermsFile::open(directory.clone()).expect("open");
        let mut confirmed: Vec<TermStart> = Vec::new();
        for step in 0..40 {
            if rng.random_bool(0.15) {
                // Within this step's operations (an append or a cut is a write or a truncate,
                // then an fdatasync).
                directory.fail_operation(directory.operation_count() + rng.random_range(0..2));
            }
            let mut in_flight = confirmed.clone();
            let result = if confirmed.is_empty() || rng.random_bool(0.7) {
                let last = confirmed.last().copied().unwrap_or(TermStart {
                    term: 0,
                    leader: 0,
                    first_index: 0,
                    first_offset: 0,
                });
                let start = TermStart {
                    term: last.term + rng.random_range(1..3),
                    leader: rng.random_range(1..4),
                    first_index: last.first_index + rng.random_range(1..5),
                    first_offset: last.first_offset + rng.random_range(1..50),
                };
                in_flight.push(start);
                terms.append(start)
            } else {
                let index =
                    rng.random_range(0..confirmed.last().expect("non-empty").first_index + 2);
                in_flight.retain(|entry| entry.first_index < index);
                terms.truncate_from_index(index)
            };
            let label = format!("seed {seed} step {step}");
            match result {
                Ok(()) => {
                    confirmed = in_flight;
                    assert_eq!(terms.entries(), &confirmed[..], "{label}");
                }
                Err(_) => {
                    directory.clear_faults();
                    directory.crash(if rng.random_bool(0.5) {
                        CrashMode::TearUnsynced
                    } else {
                        CrashMode::DropUnsynced
                    });
                    terms = TermsFile::open(directory.clone()).expect("reopen");
                    let entries = terms.entries().to_vec();
                    assert!(
                        entries == confirmed || entries == in_flight,
                        "{label}: {entries:?} is neither {confirmed:?} nor {in_flight:?}"
                    );
                    confirmed = entries;
                }
            }
            if rng.random_bool(0.1) {
                directory.crash(CrashMode::TearUnsynced);
                terms = TermsFile::open(directory.clone()).expect("reopen");
                assert_eq!(
                    terms.entries(),
                    &confirmed[..],
                    "{label}: after a power loss"
                );
            }
        }
    }
}

/// Readers running while the writer appends, flushes, rolls and truncates never panic, and
/// what they get is always a contiguous run of whole batches; a read racing a cut may fail
/// (documented), but a read that starts after the cut returned sees only the shorter log.
#[test]
fn readers_racing_truncation_see_whole_contiguous_batches() {
    let directory = SimDirectory::new(9);
    let (mut log, _) = PartitionLog::open(directory, config()).expect("open");
    let reader = log.reader();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let reader = reader.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(batches) = reader.read(reader.start_offset(), usize::MAX) else {
                        continue;
                    };
                    for pair in batches.windows(2) {
                        assert_eq!(pair[0].next_offset(), pair[1].base_offset());
                    }
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(9);
    let mut bases = Vec::new();
    for round in 0..3_000 {
        let batch = common::batch(rng.random_range(1..4), round, rng.random_range(0..100));
        bases.push(log.append(&batch, 0).expect("append").base_offset);
        if round % 3 == 0 {
            log.flush().expect("flush");
        }
        if round % 50 == 49 {
            let cut = bases[bases.len() - rng.random_range(1..bases.len().min(20))];
            log.truncate_from(cut).expect("truncate");
            bases.retain(|base| *base < cut);
            assert_eq!(reader.end_offset(), cut);
            let after = reader.read(0, usize::MAX).expect("read after the cut");
            assert!(after.last().is_none_or(|batch| batch.next_offset() == cut));
        }
        if round % 400 == 0 {
            log.enforce_retention(0).expect("retention");
            let start = log.start_offset();
            bases.retain(|base| *base >= start);
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader thread") > 0);
    }
}
