//! One partition's log: segments of batches, sparse indexes, recovery, retention.
//! (API skeleton: the implementation is being written; signatures are the contract.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weir_batch::Batch;

use crate::Result;
use crate::io::Directory;

/// How a log is laid out and how long it keeps data.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment once the active one reaches this size.
    pub segment_bytes_max: u64,
    /// Roll to a new segment once the active one is this old (by append time).
    pub segment_age_max: Option<Duration>,
    /// Add a sparse index entry every this many bytes.
    pub index_interval_bytes: u32,
    /// Delete closed segments whose newest batch is older than this.
    pub retention_age: Option<Duration>,
    /// Delete the oldest closed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Largest batch accepted by `append`.
    pub max_batch_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes_max: 256 << 20,
            segment_age_max: None,
            index_interval_bytes: 4096,
            retention_age: None,
            retention_bytes: None,
            max_batch_bytes: 8 << 20,
        }
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
}

/// What recovery found and did on open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    /// Bytes cut from the tail because they were torn or corrupt.
    pub truncated_bytes: u64,
    /// First offset of the data that was cut, if any.
    pub truncated_from_offset: Option<u64>,
    pub indexes_rebuilt: usize,
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub new_start_offset: u64,
}

/// The single writer of one partition's log.
pub struct PartitionLog {
    _private: (),
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, validating and repairing the tail.
    pub fn open(dir: Arc<dyn Directory>, config: LogConfig) -> Result<(PartitionLog, RecoveryReport)> {
        let _ = (dir, config);
        todo!()
    }

    /// Opens the log in a real directory.
    pub fn open_path(path: &Path, config: LogConfig) -> Result<(PartitionLog, RecoveryReport)> {
        let _ = (path, config);
        todo!()
    }

    /// Appends `batch`, assigning its offsets. Not yet visible to readers nor durable: call
    /// [`flush`](Self::flush) or [`sync`](Self::sync). `now_ms` drives age-based segment rolls.
    pub fn append(&mut self, batch: &Batch, now_ms: i64) -> Result<Appended> {
        let _ = (batch, now_ms);
        todo!()
    }

    /// Hands appended bytes to the OS and makes them visible to readers (`fsync = os`).
    pub fn flush(&mut self) -> Result<()> {
        todo!()
    }

    /// `flush` plus fdatasync: appended batches survive power loss. A failed sync poisons the
    /// log; every later call returns `Error::Poisoned`.
    pub fn sync(&mut self) -> Result<()> {
        todo!()
    }

    /// A reader that sees batches up to the last flush.
    pub fn reader(&self) -> LogReader {
        todo!()
    }

    pub fn start_offset(&self) -> u64 {
        todo!()
    }

    /// Offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        todo!()
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }

    /// Deletes whole closed segments beyond the retention limits.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        let _ = now_ms;
        todo!()
    }
}

/// Reads one partition's log concurrently with its writer. Cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    _private: (),
}

impl LogReader {
    /// Whole batches holding offsets `>= from` (starting at the start offset if `from` is below
    /// it), in order, up to about `max_bytes` but at least one batch if one is visible.
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<Batch>> {
        let _ = (from, max_bytes);
        todo!()
    }

    /// The first offset whose timestamp is at or after `timestamp_ms`, if any.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let _ = timestamp_ms;
        todo!()
    }

    pub fn start_offset(&self) -> u64 {
        todo!()
    }

    /// One past the last visible offset.
    pub fn end_offset(&self) -> u64 {
        todo!()
    }
}
