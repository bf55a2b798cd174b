//! Partition log throughput: appends of 100-byte records in batches of 1, 100 and 1000 under
//! `fsync = os` (flush) and `fsync = always` (sync), 1000 records in flight per commit (the
//! group commit weir-core's partition writer performs); reads from the page cache; and, when
//! `WEIR_BENCH_OPEN_GB` is set, the time to open a log of that many GiB.
//!
//! Run: `cargo bench -p weir-storage --bench log -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use weir_storage::{Batch, BatchBuilder, LogConfig, PartitionLog};

const VALUE_LEN: usize = 100;
const RECORDS_IN_FLIGHT: usize = 1000;

fn batch(records: usize) -> Batch {
    let mut builder = BatchBuilder::with_capacity(records * (VALUE_LEN + 8) + 64);
    for index in 0..records {
        builder.push(
            1_700_000_000_000 + index as i64,
            None,
            &[],
            &[index as u8; VALUE_LEN],
        );
    }
    Batch::parse(builder.finish(), usize::MAX).expect("a built batch parses")
}

fn bench_config() -> LogConfig {
    LogConfig {
        segment_bytes_max: 128 << 20,
        // Keeps the benchmark's disk use bounded however long it runs.
        retention_bytes: Some(1 << 30),
        ..LogConfig::default()
    }
}

fn append(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("append");
    group.throughput(Throughput::Elements(RECORDS_IN_FLIGHT as u64));
    for policy in ["os", "always"] {
        for records_per_batch in [1usize, 100, 1000] {
            let temporary = tempfile::tempdir().expect("temporary directory");
            let (mut log, _) =
                PartitionLog::open_path(temporary.path(), bench_config()).expect("open");
            let batch = batch(records_per_batch);
            let batches = RECORDS_IN_FLIGHT / records_per_batch;
            let mut commits = 0u64;
            group.bench_function(
                BenchmarkId::new(policy, format!("{records_per_batch}_per_batch")),
                |bencher| {
                    bencher.iter(|| {
                        for _ in 0..batches {
                            black_box(log.append(&batch, 0).expect("append"));
                        }
                        if policy == "always" {
                            log.sync().expect("sync");
                        } else {
                            log.flush().expect("flush");
                        }
                        commits += 1;
                        if commits.is_multiple_of(256) {
                            log.enforce_retention(0).expect("retention");
                        }
                    });
                },
            );
        }
    }
    group.finish();
}

fn read(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("read");
    group.sample_size(10);
    for records_per_batch in [1usize, 100, 1000] {
        let temporary = tempfile::tempdir().expect("temporary directory");
        let (mut log, _) = PartitionLog::open_path(temporary.path(), bench_config()).expect("open");
        let batch = batch(records_per_batch);
        let total_records = 1_000_000 / records_per_batch * records_per_batch;
        for _ in 0..total_records / records_per_batch {
            log.append(&batch, 0).expect("append");
        }
        log.flush().expect("flush");
        let reader = log.reader();
        group.throughput(Throughput::Elements(total_records as u64));
        group.bench_function(
            BenchmarkId::new(
                "sequential_1MiB_reads",
                format!("{records_per_batch}_per_batch"),
            ),
            |bencher| {
                bencher.iter(|| {
                    let mut from = 0;
                    let mut records = 0u64;
                    while from < reader.end_offset() {
                        let batches = reader.read(from, 1 << 20).expect("read");
                        for batch in &batches {
                            records += u64::from(batch.record_count());
                        }
                        from = batches.last().expect("a batch").next_offset();
                    }
                    assert_eq!(records, total_records as u64);
                });
            },
        );
    }
    group.finish();
}

/// Builds (once) a log of `gib` GiB in `directory`, then measures opening it.
fn open_big_log(criterion: &mut Criterion) {
    let Some(gib) = std::env::var("WEIR_BENCH_OPEN_GB")
        .ok()
        .and_then(|gib| gib.parse::<u64>().ok())
    else {
        return;
    };
    let directory = std::env::var("WEIR_BENCH_OPEN_DIR")
        .unwrap_or_else(|_| format!("target/bench-open-{gib}g"));
    let directory = Path::new(&directory);
    let config = LogConfig {
        segment_bytes_max: 256 << 20,
        ..LogConfig::default()
    };
    {
        let (mut log, _) = PartitionLog::open_path(directory, config.clone()).expect("open");
        let batch = batch(1000);
        while log.size_bytes() < gib << 30 {
            for _ in 0..64 {
                log.append(&batch, 0).expect("append");
            }
            log.flush().expect("flush");
        }
        log.sync().expect("sync");
    }
    // The worst case for the tail scan: an active segment just short of `segment_bytes_max`.
    let full_tail = directory.with_extension("full-tail");
    {
        let (mut log, _) = PartitionLog::open_path(&full_tail, config.clone()).expect("open");
        let batch = batch(1000);
        while log.size_bytes() + 64 * batch.len() as u64 <= config.segment_bytes_max {
            for _ in 0..64 {
                log.append(&batch, 0).expect("append");
            }
            log.flush().expect("flush");
        }
        log.sync().expect("sync");
    }
    let mut group = criterion.benchmark_group("open");
    group.sample_size(10);
    for (name, path) in [
        (format!("{gib}_GiB"), directory),
        ("one_full_active_segment".to_owned(), full_tail.as_path()),
    ] {
        group.bench_function(name, |bencher| {
            bencher.iter(|| {
                let (log, report) = PartitionLog::open_path(path, config.clone()).expect("open");
                assert_eq!(report.truncated_bytes, 0);
                black_box(log.next_offset());
            });
        });
    }
    group.finish();
}

criterion_group!(benches, append, read, open_big_log);
criterion_main!(benches);
