//! Damage on disk: a flipped byte, a file cut mid-batch, a missing or damaged index. The log
//! must open, report what it found, serve everything before the damage, and never panic.

mod common;

use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weir_storage::io::sim::SimDirectory;
use weir_storage::{Batch, Error, LogConfig, PartitionLog};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 4_000,
        index_interval_bytes: 200,
        ..LogConfig::default()
    }
}

/// Writes `count` batches of 3 records (synced) and returns them as stored.
fn fill(directory: &Arc<SimDirectory>, count: usize) -> Vec<Batch> {
    let (mut log, _) = PartitionLog::open(directory.clone(), config()).expect("open");
    for index in 0..count {
        log.append(&common::batch(3, index as i64 * 10, 60), 0)
            .expect("append");
        if index % 4 == 3 {
            log.sync().expect("sync");
        }
    }
    log.sync().expect("sync");
    log.reader().read(0, usize::MAX).expect("read")
}

fn segment_name(base: u64, suffix: &str) -> String {
    format!("{base:020}{suffix}")
}

/// The position of `batch` in its segment file.
fn position_in_segment(all: &[Batch], batch_index: usize, segment_base: u64) -> usize {
    all.iter()
        .take(batch_index)
        .filter(|batch| batch.base_offset() >= segment_base)
        .map(Batch::len)
        .sum()
}

fn last_segment_base(directory: &SimDirectory) -> u64 {
    directory
        .file_names()
        .iter()
        .filter_map(|name| name.strip_suffix(".log")?.parse().ok())
        .max()
        .expect("a segment")
}

fn assert_prefix(log: &PartitionLog, all: &[Batch], count: usize) {
    let read = log.reader().read(0, usize::MAX).expect("read");
    assert_eq!(read.len(), count);
    for (got, expected) in read.iter().zip(all) {
        assert_eq!(got.as_bytes(), expected.as_bytes());
    }
}

/// A flipped byte inside a batch of the tail segment: the tail is cut at that batch.
#[test]
fn a_flipped_byte_in_the_tail_cuts_the_log_there() {
    let directory = SimDirectory::new(1);
    let all = fill(&directory, 40);
    let tail = last_segment_base(&directory);
    let damaged = all
        .iter()
        .position(|batch| batch.base_offset() >= tail)
        .expect("tail batch")
        + 1;
    let name = segment_name(tail, ".log");
    let mut bytes = directory.file_bytes(&name).expect("segment");
    let position = position_in_segment(&all, damaged, tail) + 30;
    bytes[position] ^= 0x10;
    let file_len = bytes.len();
    directory.set_file_bytes(&name, bytes);

    let (mut log, report) = PartitionLog::open(directory.clone(), config()).expect("open");
    assert_eq!(
        report.truncated_from_offset,
        Some(all[damaged].base_offset())
    );
    assert_eq!(report.truncated_bytes as usize, file_len - (position - 30));
    assert_prefix(&log, &all, damaged);
    // The log goes on from the cut.
    let appended = log.append(&common::batch(1, 0, 1), 0).expect("append");
    assert_eq!(appended.base_offset, all[damaged].base_offset());
    log.sync().expect("sync");
}

/// A segment cut in the middle of its last batch (a torn write).
#[test]
fn a_file_cut_mid_batch_loses_only_that_batch() {
    let directory = SimDirectory::new(1);
    let all = fill(&directory, 10);
    let name = segment_name(last_segment_base(&directory), ".log");
    let mut bytes = directory.file_bytes(&name).expect("segment");
    bytes.truncate(bytes.len() - all.last().expect("batches").len() / 2);
    directory.set_file_bytes(&name, bytes);

    let (log, report) = PartitionLog::open(directory.clone(), config()).expect("open");
    assert_eq!(
        report.truncated_from_offset,
        Some(all[all.len() - 1].base_offset())
    );
    assert_prefix(&log, &all, all.len() - 1);
    assert_eq!(
        directory.file_bytes(&name).expect("segment").len(),
        bytes_before_last(&all, &directory)
    );
}

fn bytes_before_last(all: &[Batch], directory: &SimDirectory) -> usize {
    let tail = last_segment_base(directory);
    position_in_segment(all, all.len() - 1, tail)
}

/// A deleted index file of a closed segment is rebuilt on open; every batch is still served.
#[test]
fn a_deleted_index_is_rebuilt() {
    let directory = SimDirectory::new(1);
    let all = fill(&directory, 60);
    directory.delete_file(&segment_name(0, ".index"));
    directory.delete_file(&segment_name(0, ".timeindex"));
    let (log, report) = PartitionLog::open(directory.clone(), config()).expect("open");
    assert_eq!(report.indexes_rebuilt, 1);
    assert_eq!(report.truncated_bytes, 0);
    assert!(directory.file_bytes(&segment_name(0, ".index")).is_some());
    assert_prefix(&log, &all, all.len());
    for batch in &all {
        let first = &log.reader().read(batch.base_offset() + 1, 1).expect("read")[0];
        assert_eq!(first.base_offset(), batch.base_offset());
    }
    assert_eq!(
        log.reader().offset_for_timestamp(100).expect("time"),
        Some(30)
    );
}

/// An index whose entries are damaged (header intact) is detected by its CRC when first used
/// and rebuilt in memory: lookups stay right.
#[test]
fn a_damaged_index_entry_is_detected_and_rebuilt_in_memory() {
    let directory = SimDirectory::new(1);
    let all = fill(&directory, 60);
    let name = segment_name(0, ".index");
    let mut bytes = directory.file_bytes(&name).expect("index");
    assert!(bytes.len() > 24, "the test needs index entries");
    bytes[16] ^= 0x7f;
    directory.set_file_bytes(&name, bytes);
    let (log, _) = PartitionLog::open(directory.clone(), config()).expect("open");
    for batch in &all {
        let first = &log.reader().read(batch.base_offset(), 1).expect("read")[0];
        assert_eq!(first.as_bytes(), batch.as_bytes());
    }
}

/// A flipped byte in the middle of a closed segment is not found by the cheap open check; the
/// read that reaches it serves the batches before it, then reports the damage precisely.
#[test]
fn a_flipped_byte_in_a_closed_segment_is_reported_by_the_read_that_reaches_it() {
    let directory = SimDirectory::new(1);
    let all = fill(&directory, 60);
    let name = segment_name(0, ".log");
    let mut bytes = directory.file_bytes(&name).expect("segment");
    let damaged = 3;
    let position = position_in_segment(&all, damaged, 0);
    bytes[position + 40] ^= 1;
    directory.set_file_bytes(&name, bytes);
    let (log, _) = PartitionLog::open(directory.clone(), config()).expect("open");
    let reader = log.reader();
    let before = reader.read(0, usize::MAX).expect("read");
    assert_eq!(before.len(), damaged);
    match reader.read(all[damaged].base_offset(), 1) {
        Err(Error::Corrupt {
            position: reported, ..
        }) => assert_eq!(reported as usize, position),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Batches after the damaged one are still reachable by offset.
    let after = reader
        .read(all[damaged + 1].base_offset(), 1)
        .expect("read");
    assert_eq!(after[0].as_bytes(), all[damaged + 1].as_bytes());
}

/// Damage in the tail region of a closed segment fails its open check: the log is cut there
/// and the later segments are set aside (renamed, not deleted).
#[test]
fn damage_at_the_end_of_a_closed_segment_cuts_and_quarantines_what_follows() {
    let directory = SimDirectory::new(1);
    let all = fill(&directory, 60);
    let name = segment_name(0, ".log");
    let mut bytes = directory.file_bytes(&name).expect("segment");
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    directory.set_file_bytes(&name, bytes);
    let (log, report) = PartitionLog::open(directory.clone(), config()).expect("open");
    let kept = log.reader().read(0, usize::MAX).expect("read");
    assert!(!kept.is_empty());
    assert_eq!(
        report.truncated_from_offset,
        Some(kept.last().expect("kept").next_offset())
    );
    assert!(
        directory
            .file_names()
            .iter()
            .any(|name| name.ends_with(".log.quarantined"))
    );
    assert_prefix(&log, &all, kept.len());
}

/// Random damage anywhere (flipped bytes, truncations, deleted files) never panics: open
/// either succeeds and serves a valid prefix, or returns an error.
#[test]
fn random_damage_never_panics() {
    for seed in 0..120 {
        let mut rng = StdRng::seed_from_u64(seed);
        let directory = SimDirectory::new(seed);
        let all = fill(&directory, 50);
        let names = directory.file_names();
        for _ in 0..rng.random_range(1..4) {
            let name = &names[rng.random_range(0..names.len())];
            let Some(mut bytes) = directory.file_bytes(name) else {
                continue;
            };
            match rng.random_range(0..4) {
                0 if !bytes.is_empty() => {
                    let position = rng.random_range(0..bytes.len());
                    bytes[position] ^= 1 << rng.random_range(0..8);
                }
                1 => bytes.truncate(rng.random_range(0..=bytes.len())),
                2 => {
                    directory.delete_file(name);
                    continue;
                }
                _ => bytes.extend((0..rng.random_range(1..100)).map(|_| rng.random::<u8>())),
            }
            directory.set_file_bytes(name, bytes);
        }
        let Ok((log, _)) = PartitionLog::open(directory.clone(), config()) else {
            continue;
        };
        let reader = log.reader();
        let mut from = reader.start_offset();
        // Walk the log batch by batch, skipping past damage reported by reads.
        let mut steps = 0;
        while from < reader.end_offset() && steps < 500 {
            steps += 1;
            match reader.read(from, 1) {
                Ok(batches) if batches.is_empty() => break,
                Ok(batches) => {
                    let batch = &batches[0];
                    if let Some(original) = all
                        .iter()
                        .find(|original| original.base_offset() == batch.base_offset())
                    {
                        assert_eq!(original.as_bytes(), batch.as_bytes(), "seed {seed}");
                    }
                    from = batch.next_offset();
                }
                Err(_) => from += 1,
            }
        }
        let _ = reader.offset_for_timestamp(rng.random_range(0..600));
    }
}
