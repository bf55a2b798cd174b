//! Deterministic crash and fault tests over the simulated directory.
//!
//! The property throughout: after any simulated power loss (with the unsynced tail torn at a
//! random byte) or any failed operation, reopening the log serves every batch confirmed by a
//! successful `sync`, byte for byte; every batch it serves is one that was appended at that
//! offset (nothing half-written, nothing invented); offsets are contiguous. Seeds make every
//! case replayable: a failure message names the seed and step.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_storage::io::sim::{CrashMode, SimDirectory};
use weir_storage::{Error, LogConfig, PartitionLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 2_000,
        index_interval_bytes: 256,
        retention_bytes: Some(6_000),
        ..LogConfig::default()
    }
}

/// Drives a log over a simulated directory and remembers what must and may be on disk.
struct Harness {
    directory: Arc<SimDirectory>,
    log: Option<PartitionLog>,
    /// Stored bytes of every batch that may be on disk, by base offset.
    appended: BTreeMap<u64, Vec<u8>>,
    /// One past the last offset confirmed by a successful sync.
    confirmed_end: u64,
    /// Offsets below this may have been deleted by retention.
    retained_from: u64,
    label: String,
}

impl Harness {
    fn new(seed: u64, label: String) -> Harness {
        Harness {
            directory: SimDirectory::new(seed),
            log: None,
            appended: BTreeMap::new(),
            confirmed_end: 0,
            retained_from: 0,
            label,
        }
    }

    /// Opens the log, retrying once if an injected fault hits recovery, and checks it.
    fn open(&mut self) {
        let directory: Arc<dyn weir_storage::io::Directory> = self.directory.clone();
        let opened = PartitionLog::open(Arc::clone(&directory), config())
            .or_else(|_| PartitionLog::open(directory, config()));
        let (log, _report) =
            opened.unwrap_or_else(|error| panic!("{}: open failed: {error}", self.label));
        self.log = Some(log);
        self.verify();
    }

    fn log(&mut self) -> &mut PartitionLog {
        self.log.as_mut().expect("opened")
    }

    /// Everything served is what was appended there; everything confirmed is served.
    fn verify(&mut self) {
        let label = self.label.clone();
        let log = self.log.as_ref().expect("opened");
        let reader = log.reader();
        let batches = reader
            .read(0, usize::MAX)
            .unwrap_or_else(|error| panic!("{label}: reading after recovery failed: {error}"));
        let mut expected = reader.start_offset();
        assert!(reader.start_offset() <= self.retained_from.max(reader.start_offset()));
        for batch in &batches {
            assert_eq!(
                batch.base_offset(),
                expected,
                "{label}: offsets not contiguous"
            );
            let appended = self.appended.get(&batch.base_offset()).unwrap_or_else(|| {
                panic!(
                    "{label}: batch at {} was never appended",
                    batch.base_offset()
                )
            });
            assert_eq!(
                &batch.as_bytes()[..],
                &appended[..],
                "{label}: batch at {} differs",
                batch.base_offset()
            );
            expected = batch.next_offset();
        }
        assert_eq!(
            expected,
            reader.end_offset(),
            "{label}: read stopped before the end"
        );
        assert!(
            reader.end_offset() >= self.confirmed_end,
            "{label}: confirmed offsets up to {} but only {} survived",
            self.confirmed_end,
            reader.end_offset()
        );
        assert_eq!(log.next_offset(), reader.end_offset());
        // Offsets past the recovered end will be reused by new appends.
        let end = reader.end_offset();
        self.appended.retain(|base, _| *base < end);
        self.retained_from = reader.start_offset();
    }

    fn append(&mut self, rng: &mut StdRng) {
        let records = rng.random_range(1..8);
        let value_len = rng.random_range(0..200);
        let batch = common::batch(records, rng.random_range(0..1_000_000), value_len);
        let log = self.log.as_mut().expect("opened");
        if let Ok(appended) = log.append(&batch, 0) {
            self.appended.insert(
                appended.base_offset,
                common::stored_bytes(&batch, appended.base_offset),
            );
        }
    }

    /// A flush or sync; on success a sync confirms everything appended.
    fn commit(&mut self, durable: bool) -> Result<(), Error> {
        let log = self.log.as_mut().expect("opened");
        let result = if durable { log.sync() } else { log.flush() };
        match &result {
            Ok(()) if durable => self.confirmed_end = log.next_offset(),
            Ok(()) => {}
            Err(_) if !log.is_poisoned() => {
                // Undone: the appended batches are gone and their offsets will be reused.
                let next = log.next_offset();
                self.appended.retain(|base, _| *base < next);
            }
            // Poisoned: the batches may or may not be on disk; both are allowed.
            Err(_) => {}
        }
        result
    }

    fn crash(&mut self, mode: CrashMode) {
        self.log = None;
        self.directory.crash(mode);
        self.open();
    }

    /// A process restart: the OS keeps everything written; only the user-space buffer is lost.
    fn restart(&mut self) {
        self.log = None;
        self.open();
    }
}

/// Random appends, flushes, syncs, retention passes and torn power losses, many seeds.
#[test]
fn every_synced_batch_survives_torn_crashes() {
    let only: Option<u64> = std::env::var("SEED")
        .ok()
        .and_then(|seed| seed.parse().ok());
    for seed in 0..150 {
        if only.is_some_and(|only| only != seed) {
            continue;
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let mut harness = Harness::new(seed, format!("seed {seed}"));
        harness.open();
        for step in 0..60 {
            harness.label = format!("seed {seed} step {step}");
            let choice = rng.random_range(0..100);
            if only.is_some() {
                eprintln!(
                    "step {step} choice {choice} next {} confirmed {} files {:?}",
                    harness.log().next_offset(),
                    harness.confirmed_end,
                    harness.directory.file_names()
                );
            }
            match choice {
                0..50 => harness.append(&mut rng),
                50..65 => harness.commit(false).expect("flush"),
                65..85 => harness.commit(true).expect("sync"),
                85..88 => {
                    harness.commit(false).expect("flush");
                    harness.log().enforce_retention(0).expect("retention");
                }
                88..92 => harness.restart(),
                _ => harness.crash(if rng.random_bool(0.8) {
                    CrashMode::TearUnsynced
                } else {
                    CrashMode::DropUnsynced
                }),
            }
        }
        harness.crash(CrashMode::TearUnsynced);
    }
}

/// A fixed workload that rolls segments, writes indexes and deletes by retention.
fn workload(harness: &mut Harness, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..24 {
        for _ in 0..rng.random_range(1..4) {
            harness.append(&mut rng);
        }
        let durable = round % 3 != 1;
        let result = harness.commit(durable);
        if std::env::var("FAILING").is_ok() {
            eprintln!(
                "round {round} durable {durable} {result:?} next {} confirmed {} ops {} files {:?}",
                harness.log().next_offset(),
                harness.confirmed_end,
                harness.directory.operation_count(),
                harness.directory.file_names()
            );
        }
        if result.is_err() && harness.log().is_poisoned() {
            // Fail-stop: the only way forward is a restart, which recovers.
            assert!(matches!(
                harness.log().append(&common::batch(1, 0, 1), 0),
                Err(Error::Poisoned)
            ));
            assert!(matches!(harness.log().flush(), Err(Error::Poisoned)));
            harness.restart();
        }
        if round % 8 == 7 {
            let log = harness.log();
            if log.flush().is_ok() {
                let _ = log.enforce_retention(0);
            }
            if harness.log().is_poisoned() {
                harness.restart();
            }
        }
    }
}

/// Fails each mutating operation of a workload in turn (one run per operation), then crashes
/// with a torn tail: no panic, and the recovery property holds every time.
#[test]
fn failing_any_single_operation_loses_nothing_confirmed() {
    let mut probe = Harness::new(1, "probe".to_owned());
    probe.open();
    workload(&mut probe, 99);
    let operations = probe.directory.operation_count();
    assert!(
        operations > 100,
        "the workload should exercise rolls and retention: {operations}"
    );
    let only: Option<u64> = std::env::var("FAILING")
        .ok()
        .and_then(|seed| seed.parse().ok());
    for failing in 0..operations {
        if only.is_some_and(|only| only != failing) {
            continue;
        }
        let mut harness = Harness::new(failing, format!("failing operation {failing}"));
        harness.directory.fail_operation(failing);
        harness.open();
        workload(&mut harness, 99);
        harness.crash(CrashMode::TearUnsynced);
    }
}

/// After a failed fdatasync the log refuses every write, and a reopen recovers the data synced
/// before the failure.
#[test]
fn a_failed_sync_poisons_the_log_until_reopened() {
    let mut harness = Harness::new(3, "poison".to_owned());
    harness.open();
    let mut rng = StdRng::seed_from_u64(3);
    harness.append(&mut rng);
    harness.commit(true).expect("first sync");
    harness.append(&mut rng);
    // Operations in this sync: one write, then the fdatasync.
    let next = harness.directory.operation_count();
    harness.directory.fail_operation(next + 1);
    assert!(matches!(harness.commit(true), Err(Error::Io { .. })));
    assert!(harness.log().is_poisoned());
    assert!(matches!(
        harness.log().append(&common::batch(1, 0, 1), 0),
        Err(Error::Poisoned)
    ));
    assert!(matches!(harness.log().flush(), Err(Error::Poisoned)));
    assert!(matches!(harness.log().sync(), Err(Error::Poisoned)));
    assert!(matches!(
        harness.log().enforce_retention(0),
        Err(Error::Poisoned)
    ));
    // Readers still serve what was published before.
    assert_eq!(harness.log().reader().end_offset(), harness.confirmed_end);
    harness.crash(CrashMode::TearUnsynced);
    harness.append(&mut rng);
    harness
        .commit(true)
        .expect("a reopened log accepts writes again");
}

/// Readers running while the writer appends, flushes and rolls see only whole, contiguous
/// batches up to the published end.
#[test]
fn concurrent_readers_never_see_partial_state() {
    let directory = SimDirectory::new(5);
    let (mut log, _) = PartitionLog::open(directory, config()).expect("open");
    let reader = log.reader();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let reader = reader.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut checks = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let end = reader.end_offset();
                    let batches = reader
                        .read(reader.start_offset(), usize::MAX)
                        .expect("read");
                    let mut expected = batches.first().map_or(0, |batch| batch.base_offset());
                    for batch in &batches {
                        assert_eq!(batch.base_offset(), expected);
                        expected = batch.next_offset();
                    }
                    assert!(expected >= end || batches.is_empty());
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(5);
    for round in 0..2_000 {
        let batch = common::batch(rng.random_range(1..5), round, rng.random_range(0..100));
        log.append(&batch, 0).expect("append");
        if round % 3 == 0 {
            log.flush().expect("flush");
        }
        if round % 200 == 0 {
            log.enforce_retention(0).expect("retention");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader thread") > 0);
    }
}
