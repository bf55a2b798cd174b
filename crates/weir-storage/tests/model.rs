//! Property test: random interleavings of appends, flushes, reads by offset and by time, age
//! and size rolls, retention, truncation of a suffix (`truncate_from`) and close/reopen, run against the log and against a plain `Vec`
//! model; after every step both must agree on every observable (offsets, bytes, segment count,
//! sizes, retention reports). The model re-implements the documented rules (roll by size and
//! age, retention of a closed prefix, "at least one batch, then up to max bytes") in the most
//! direct way, so a disagreement is a bug in one of them.

mod common;

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use weir_storage::io::Directory;
use weir_storage::io::sim::SimDirectory;
use weir_storage::{LogConfig, PartitionLog};

#[derive(Debug, Clone)]
enum Operation {
    Append {
        timestamps: Vec<i64>,
        value_len: usize,
    },
    Flush,
    Sync,
    Read {
        from_delta: i64,
        max_bytes: usize,
    },
    OffsetForTimestamp {
        delta: i64,
    },
    AdvanceClock {
        ms: i64,
    },
    Retention,
    /// Cut at the boundary `back` batches before the end (0: the next offset, a no-op), or,
    /// with `inside`, one offset into that batch (refused when the batch has several records).
    Truncate {
        back: usize,
        inside: bool,
    },
    Reopen,
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![
        6 => (proptest::collection::vec(-100i64..100, 1..6), 0usize..120)
            .prop_map(|(timestamps, value_len)| Operation::Append { timestamps, value_len }),
        2 => Just(Operation::Flush),
        1 => Just(Operation::Sync),
        3 => (-3i64..60, 1usize..1500).prop_map(|(from_delta, max_bytes)| Operation::Read { from_delta, max_bytes }),
        2 => (-150i64..150).prop_map(|delta| Operation::OffsetForTimestamp { delta }),
        2 => (0i64..400).prop_map(|ms| Operation::AdvanceClock { ms }),
        1 => Just(Operation::Retention),
        2 => (0usize..12, proptest::bool::weighted(0.2)).prop_map(|(back, inside)| Operation::Truncate { back, inside }),
        1 => Just(Operation::Reopen),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        150u64..1500,
        proptest::option::of(50u64..1500),
        0u32..400,
        proptest::option::of(100u64..3000),
        proptest::option::of(500u64..5000),
    )
        .prop_map(
            |(segment_bytes_max, age, index_interval_bytes, retention_age, retention_bytes)| {
                LogConfig {
                    segment_bytes_max,
                    segment_age_max: age.map(Duration::from_millis),
                    index_interval_bytes,
                    retention_age: retention_age.map(Duration::from_millis),
                    retention_bytes,
                    max_batch_bytes: 1 << 20,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct ModelBatch {
    base: u64,
    last: u64,
    bytes: Rc<Vec<u8>>,
    timestamps: Rc<Vec<i64>>,
}

#[derive(Debug, Clone)]
struct ModelSegment {
    base: u64,
    len: u64,
    max_timestamp_ms: i64,
    opened_ms: Option<i64>,
}

#[derive(Debug, Clone)]
struct Model {
    batches: Vec<ModelBatch>,
    segments: Vec<ModelSegment>,
    next_offset: u64,
    start_offset: u64,
}

impl Model {
    fn append(
        &mut self,
        config: &LogConfig,
        bytes: Vec<u8>,
        timestamps: Vec<i64>,
        now_ms: i64,
    ) -> (u64, u64) {
        let len = bytes.len() as u64;
        let max_timestamp_ms = *timestamps.iter().max().expect("non-empty");
        let segment = self.segments.last().expect("always one segment");
        let full = segment.len + len > config.segment_bytes_max;
        let old = match (config.segment_age_max, segment.opened_ms) {
            (Some(age), Some(opened)) => now_ms - opened >= age.as_millis() as i64,
            _ => false,
        };
        if segment.len > 0 && (full || old) {
            self.segments.push(ModelSegment {
                base: self.next_offset,
                len: 0,
                max_timestamp_ms: i64::MIN,
                opened_ms: None,
            });
        }
        let segment = self.segments.last_mut().expect("always one segment");
        segment.opened_ms.get_or_insert(now_ms);
        segment.len += len;
        segment.max_timestamp_ms = segment.max_timestamp_ms.max(max_timestamp_ms);
        let base = self.next_offset;
        let last = base + timestamps.len() as u64 - 1;
        self.batches.push(ModelBatch {
            base,
            last,
            bytes: Rc::new(bytes),
            timestamps: Rc::new(timestamps),
        });
        self.next_offset = last + 1;
        (base, last)
    }

    fn read(&self, from: u64, max_bytes: usize) -> Vec<Rc<Vec<u8>>> {
        let from = from.max(self.start_offset);
        let mut total = 0;
        let mut out = Vec::new();
        for batch in &self.batches {
            if batch.last < from {
                continue;
            }
            total += batch.bytes.len();
            out.push(Rc::clone(&batch.bytes));
            if total >= max_bytes {
                break;
            }
        }
        out
    }

    fn offset_for_timestamp(&self, timestamp_ms: i64) -> Option<u64> {
        self.batches.iter().find_map(|batch| {
            batch
                .timestamps
                .iter()
                .position(|timestamp| *timestamp >= timestamp_ms)
                .map(|index| batch.base + index as u64)
        })
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|segment| segment.len).sum()
    }

    /// Returns (segments deleted, bytes deleted).
    fn retention(&mut self, config: &LogConfig, now_ms: i64) -> (usize, u64) {
        let mut total = self.size_bytes();
        let mut deleted = 0;
        let mut bytes = 0;
        for segment in &self.segments[..self.segments.len() - 1] {
            let expired = config
                .retention_age
                .is_some_and(|age| segment.max_timestamp_ms < now_ms - age.as_millis() as i64);
            let oversized = config.retention_bytes.is_some_and(|limit| total > limit);
            if !(expired || oversized) {
                break;
            }
            total -= segment.len;
            bytes += segment.len;
            deleted += 1;
        }
        self.segments.drain(..deleted);
        self.start_offset = self.segments[0].base;
        let start = self.start_offset;
        self.batches.retain(|batch| batch.base >= start);
        (deleted, bytes)
    }

    /// `truncate_from(offset)` for a batch boundary `offset` below the next offset: later
    /// segments go, the one holding the cut becomes the active one, shortened.
    fn truncate(&mut self, offset: u64) {
        self.batches.retain(|batch| batch.base < offset);
        let holding = self
            .segments
            .iter()
            .rposition(|segment| segment.base <= offset)
            .expect("offset is at or after the start");
        let was_active = holding == self.segments.len() - 1;
        self.segments.truncate(holding + 1);
        let segment = self.segments.last_mut().expect("kept above");
        let left: Vec<&ModelBatch> = self
            .batches
            .iter()
            .filter(|batch| batch.base >= segment.base)
            .collect();
        segment.len = left.iter().map(|batch| batch.bytes.len() as u64).sum();
        let batch_max = |batch: &ModelBatch| *batch.timestamps.iter().max().expect("non-empty");
        segment.max_timestamp_ms = left
            .iter()
            .map(|batch| batch_max(batch))
            .max()
            .unwrap_or(i64::MIN);
        if !(was_active && segment.len > 0) {
            segment.opened_ms = left.first().map(|batch| batch_max(batch));
        }
        self.next_offset = offset;
    }

    /// The state a reopen finds: the flushed model, with the active segment's age clock taken
    /// from its first batch.
    fn reopened(flushed: &Model) -> Model {
        let mut model = flushed.clone();
        let base = model.segments.last().expect("always one segment").base;
        let first = model.batches.iter().find(|batch| batch.base == base);
        let opened = first.map(|batch| *batch.timestamps.iter().max().expect("non-empty"));
        model
            .segments
            .last_mut()
            .expect("always one segment")
            .opened_ms = opened;
        model
    }
}

fn run(
    directory: Arc<dyn Directory>,
    config: LogConfig,
    operations: Vec<Operation>,
) -> Result<(), TestCaseError> {
    let (mut log, _) = PartitionLog::open(Arc::clone(&directory), config.clone()).expect("open");
    let mut reader = log.reader();
    let mut model = Model {
        batches: Vec::new(),
        segments: vec![ModelSegment {
            base: 0,
            len: 0,
            max_timestamp_ms: i64::MIN,
            opened_ms: None,
        }],
        next_offset: 0,
        start_offset: 0,
    };
    let mut flushed = model.clone();
    let mut now_ms: i64 = 1_000_000;
    for (step, operation) in operations.into_iter().enumerate() {
        match operation {
            Operation::Append {
                timestamps,
                value_len,
            } => {
                let timestamps: Vec<i64> = timestamps.iter().map(|delta| now_ms + delta).collect();
                let batch = common::batch_with_timestamps(&timestamps, value_len, step as u8);
                let appended = log.append(&batch, now_ms).expect("append");
                let expected = model.append(
                    &config,
                    common::stored_bytes(&batch, model.next_offset),
                    timestamps,
                    now_ms,
                );
                prop_assert_eq!(
                    (appended.base_offset, appended.last_offset),
                    expected,
                    "step {}",
                    step
                );
            }
            Operation::Flush => {
                log.flush().expect("flush");
                flushed = model.clone();
            }
            Operation::Sync => {
                log.sync().expect("sync");
                flushed = model.clone();
            }
            Operation::Read {
                from_delta,
                max_bytes,
            } => {
                let from = (flushed.start_offset as i64 + from_delta).max(0) as u64;
                let got: Vec<Vec<u8>> = reader
                    .read(from, max_bytes)
                    .expect("read")
                    .iter()
                    .map(|batch| batch.as_bytes().to_vec())
                    .collect();
                let expected: Vec<Vec<u8>> = flushed
                    .read(from, max_bytes)
                    .iter()
                    .map(|bytes| bytes.to_vec())
                    .collect();
                prop_assert_eq!(
                    got,
                    expected,
                    "step {}: read({}, {})",
                    step,
                    from,
                    max_bytes
                );
            }
            Operation::OffsetForTimestamp { delta } => {
                let timestamp = now_ms + delta;
                prop_assert_eq!(
                    reader.offset_for_timestamp(timestamp).expect("time lookup"),
                    flushed.offset_for_timestamp(timestamp),
                    "step {}: offset_for_timestamp({})",
                    step,
                    timestamp
                );
            }
            Operation::AdvanceClock { ms } => now_ms += ms,
            Operation::Retention => {
                log.flush().expect("flush");
                let report = log.enforce_retention(now_ms).expect("retention");
                let expected = model.retention(&config, now_ms);
                prop_assert_eq!(
                    (report.segments_deleted, report.bytes_deleted),
                    expected,
                    "step {}",
                    step
                );
                prop_assert_eq!(report.new_start_offset, model.start_offset);
                flushed = model.clone();
            }
            Operation::Truncate { back, inside } => {
                let count = model.batches.len();
                let (offset, valid) = if back == 0 || count == 0 {
                    (model.next_offset, true)
                } else {
                    let batch = &model.batches[count - 1 - (back - 1) % count];
                    if inside {
                        (batch.base + 1, batch.last == batch.base)
                    } else {
                        (batch.base, true)
                    }
                };
                match log.truncate_from(offset) {
                    Ok(()) => {
                        prop_assert!(valid, "step {}: truncate_from({}) accepted", step, offset);
                        if offset < model.next_offset {
                            model.truncate(offset);
                        }
                    }
                    Err(weir_storage::Error::NotBatchBoundary { offset: refused }) => {
                        prop_assert!(!valid, "step {}: truncate_from({}) refused", step, offset);
                        prop_assert_eq!(refused, offset);
                    }
                    Err(error) => panic!("step {step}: truncate_from({offset}): {error}"),
                }
                flushed = model.clone();
            }
            Operation::Reopen => {
                drop(log);
                let (reopened, report) =
                    PartitionLog::open(Arc::clone(&directory), config.clone()).expect("reopen");
                prop_assert_eq!(report.truncated_bytes, 0, "step {}: {:?}", step, report);
                prop_assert_eq!(report.indexes_rebuilt, 0);
                log = reopened;
                reader = log.reader();
                model = Model::reopened(&flushed);
                flushed = model.clone();
            }
        }
        prop_assert_eq!(log.next_offset(), model.next_offset, "step {}", step);
        prop_assert_eq!(log.start_offset(), flushed.start_offset, "step {}", step);
        prop_assert_eq!(reader.start_offset(), flushed.start_offset);
        prop_assert_eq!(reader.end_offset(), flushed.next_offset, "step {}", step);
        prop_assert_eq!(log.size_bytes(), model.size_bytes(), "step {}", step);
        prop_assert_eq!(log.segment_count(), model.segments.len(), "step {}", step);
    }
    // Whatever happened, a final reopen serves exactly the flushed model.
    log.flush().expect("flush");
    drop(log);
    let (log, _) = PartitionLog::open(directory, config).expect("final reopen");
    let all: Vec<Vec<u8>> = log
        .reader()
        .read(0, usize::MAX)
        .expect("read")
        .iter()
        .map(|batch| batch.as_bytes().to_vec())
        .collect();
    let expected: Vec<Vec<u8>> = model
        .read(0, usize::MAX)
        .iter()
        .map(|bytes| bytes.to_vec())
        .collect();
    prop_assert_eq!(all, expected);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    /// The log agrees with the model over the simulated directory (fast, so many cases).
    #[test]
    fn the_log_matches_a_vec_model(config in config(), operations in proptest::collection::vec(operation(), 1..120)) {
        run(SimDirectory::new(7), config, operations)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    /// The same property on the real file system (fewer cases: every roll fsyncs).
    #[test]
    fn the_log_matches_a_vec_model_on_the_file_system(config in config(), operations in proptest::collection::vec(operation(), 1..80)) {
        let temporary = tempfile::tempdir().expect("temporary directory");
        let directory = weir_storage::io::FsDirectory::open(temporary.path()).expect("directory");
        run(Arc::new(directory), config, operations)?;
    }
}
