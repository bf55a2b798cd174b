//! One partition's log: segments of batches, sparse indexes, recovery, retention.
//!
//! [`PartitionLog`] is the single writer. [`append`](PartitionLog::append) only copies the batch
//! into a user-space buffer, stamps its base offset and maybe notes an index entry: no system
//! call, no per-record work. [`flush`](PartitionLog::flush) writes everything buffered with one
//! `pwrite` per touched segment and publishes it to readers; [`sync`](PartitionLog::sync) also
//! fdatasyncs it before publishing. So weir-core's partition writer appends every queued batch and
//! then syncs once: group commit. [`LogReader`]s share the published segment list (an
//! `Arc<Vec<…>>` swapped under a briefly held lock) and the visible end offset (an atomic), read
//! with `pread`, and never wait for the writer's I/O.
//!
//! The byte formats and the recovery rules are documented in `docs/storage-format.md`.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use weir_batch::Batch;

use crate::io::{Directory, File, FsDirectory};
use crate::{Error, Result};

mod recovery;
mod segment;

use segment::{
    INDEX_SUFFIX, IndexCursor, IndexWriteError, LOG_SUFFIX, OffsetEntry, ScanError, Scanner,
    Segment, SegmentIndex, TIME_INDEX_SUFFIX, TimeEntry, file_name,
};

/// How a log is laid out and how long it keeps data.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment once the active one reaches this size. Capped at 4 GiB, because
    /// index entries hold 32-bit positions.
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

/// The writer's view of the segment receiving appends, including bytes not yet flushed.
/// `Copy`, so a failed flush can restore the last committed value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriterState {
    pub segment_base: u64,
    /// Bytes of the segment, flushed or not.
    pub segment_len: u64,
    pub cursor: IndexCursor,
    /// When the segment got its first batch (for age-based rolls); for a segment found on open,
    /// the max timestamp of its first batch, since the append time is not stored.
    pub opened_ms: Option<i64>,
    pub next_offset: u64,
}

/// Appended bytes waiting for a flush, all destined for one segment.
#[derive(Debug)]
struct PendingSegment {
    base_offset: u64,
    /// The segment file does not exist yet; the flush creates it.
    is_new: bool,
    /// Where `bytes` go in the segment.
    start_position: u64,
    bytes: Vec<u8>,
    offsets: Vec<OffsetEntry>,
    times: Vec<TimeEntry>,
    max_timestamp_ms: i64,
    /// Set when a later segment follows: this one is closed by the flush.
    closing: Option<Closing>,
}

#[derive(Debug, Clone, Copy)]
struct Closing {
    end_offset: u64,
    max_timestamp_ms: i64,
}

/// What readers share with the writer.
#[derive(Debug)]
struct Shared {
    directory: Arc<dyn Directory>,
    /// Invariant: non-empty, ordered by base offset, contiguous (each segment ends where the
    /// next begins); the last one is the active segment. Replaced wholesale (copy on write) by
    /// rolls and retention, so readers hold the lock only to clone the `Arc`.
    segments: RwLock<Arc<Vec<Arc<Segment>>>>,
    /// One past the last offset readers may see. Stored after the segment list and the
    /// segments' visible lengths that cover it, with `Release`; loaded first, with `Acquire`.
    end_offset: AtomicU64,
    start_offset: AtomicU64,
    /// Closed segments holding an open handle, least recently opened first; at most
    /// `OPEN_CLOSED_SEGMENTS` of them, so descriptors do not grow with the number of segments.
    open_closed: Mutex<VecDeque<Arc<Segment>>>,
}

/// Closed segments of one log kept open for readers: a consumer catching up reads one or two
/// at a time; more are opened on demand and the oldest handle is closed.
const OPEN_CLOSED_SEGMENTS: usize = 4;

impl Shared {
    /// `segment`'s file, opened if it holds no handle (and then kept among the few open
    /// closed segments).
    fn segment_file(&self, segment: &Arc<Segment>) -> Result<Arc<dyn File>> {
        let (file, opened) = segment.file(self.directory.as_ref())?;
        if opened {
            segment.keep_handle(Arc::clone(&file));
            let mut open = self
                .open_closed
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            open.push_back(Arc::clone(segment));
            while open.len() > OPEN_CLOSED_SEGMENTS {
                if let Some(oldest) = open.pop_front() {
                    oldest.close_handle();
                }
            }
        }
        Ok(file)
    }

    /// Closes the handles of segments leaving the log (retention).
    fn forget_handles(&self, removed: &[Arc<Segment>]) {
        let mut open = self
            .open_closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|segment| !removed.iter().any(|gone| Arc::ptr_eq(gone, segment)));
        for segment in removed {
            segment.close_handle();
        }
    }

    /// Makes `segment` (a closed segment `truncate_from` cut) the active one: it holds `file`
    /// for good and leaves the list of closed segments' handles.
    fn adopt_as_active(&self, segment: &Arc<Segment>, file: Arc<dyn File>) {
        let mut open = self
            .open_closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        open.retain(|closed| !Arc::ptr_eq(closed, segment));
        segment.keep_handle(file);
    }

    fn snapshot(&self) -> Arc<Vec<Arc<Segment>>> {
        // The list is replaced, never mutated in place, so a poisoned lock still holds a
        // consistent list.
        Arc::clone(
            &self
                .segments
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    fn replace(&self, segments: Vec<Arc<Segment>>) {
        assert!(!segments.is_empty(), "a log always has an active segment");
        let start = segments[0].base_offset;
        *self
            .segments
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(segments);
        self.start_offset.store(start, Ordering::Release);
    }
}

/// Why a flush stopped: undo what it wrote, or poison the log (a failed fsync leaves the file's
/// durable state unknown, so retrying could confirm data that is not on disk).
enum FlushFailure {
    Undo(Error),
    Poison(Error),
}

/// What a flush did so far, so that a failure can undo it.
#[derive(Default)]
struct FlushProgress {
    files: Vec<Arc<dyn File>>,
    created: Vec<u64>,
    index_files_written: Vec<u64>,
    closed_indexes: Vec<Option<SegmentIndex>>,
    wrote_active: bool,
    synced: bool,
}

/// Buffers larger than this are not kept for reuse after a flush.
const SPARE_BUFFER_MAX: usize = 16 << 20;

/// The single writer of one partition's log.
///
/// Dropping it without [`flush`](Self::flush) loses the batches appended since the last flush,
/// as a crash would; nothing already flushed is affected.
pub struct PartitionLog {
    config: LogConfig,
    shared: Arc<Shared>,
    /// The last segment of the published list.
    active: Arc<Segment>,
    /// The state as of the last successful flush: what a failed flush restores.
    committed: WriterState,
    current: WriterState,
    /// Invariant: if non-empty, the last entry is for `current.segment_base`; entries are in
    /// segment order and every entry but the last is closing.
    pending: Vec<PendingSegment>,
    spare_buffer: Vec<u8>,
    /// Sum of the closed (non-active) published segments' lengths.
    closed_bytes: u64,
    /// Bytes written to the active segment since its last fdatasync.
    unsynced: bool,
    poisoned: bool,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("PartitionLog")
            .field("start_offset", &self.start_offset())
            .field("next_offset", &self.next_offset())
            .field("poisoned", &self.poisoned)
            .finish_non_exhaustive()
    }
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, validating and repairing the tail.
    pub fn open(
        dir: Arc<dyn Directory>,
        config: LogConfig,
    ) -> Result<(PartitionLog, RecoveryReport)> {
        let mut config = config;
        config.segment_bytes_max = config.segment_bytes_max.min(u64::from(u32::MAX));
        let recovered = recovery::recover(dir.as_ref(), &config)?;
        let active = Arc::clone(
            recovered
                .segments
                .last()
                .expect("recovery returns at least one segment"),
        );
        let shared = Arc::new(Shared {
            directory: dir,
            start_offset: AtomicU64::new(recovered.segments[0].base_offset),
            segments: RwLock::new(Arc::new(recovered.segments)),
            end_offset: AtomicU64::new(recovered.writer.next_offset),
            open_closed: Mutex::new(VecDeque::new()),
        });
        let log = PartitionLog {
            config,
            shared,
            active,
            committed: recovered.writer,
            current: recovered.writer,
            pending: Vec::new(),
            spare_buffer: Vec::new(),
            closed_bytes: recovered.closed_bytes,
            unsynced: false,
            poisoned: false,
        };
        Ok((log, recovered.report))
    }

    /// Opens the log in a real directory.
    pub fn open_path(path: &Path, config: LogConfig) -> Result<(PartitionLog, RecoveryReport)> {
        let directory = FsDirectory::open(path)?;
        PartitionLog::open(Arc::new(directory), config)
    }

    /// Appends `batch`, assigning its offsets. Not yet visible to readers nor durable: call
    /// [`flush`](Self::flush) or [`sync`](Self::sync). `now_ms` drives age-based segment rolls.
    ///
    /// Only copies bytes into memory; I/O errors surface at the next flush or sync, which then
    /// fails for every batch appended since the last successful one.
    pub fn append(&mut self, batch: &Batch, now_ms: i64) -> Result<Appended> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let len = batch.len();
        if len > self.config.max_batch_bytes {
            return Err(Error::BatchTooLarge {
                length: len,
                limit: self.config.max_batch_bytes,
            });
        }
        let records = u64::from(batch.record_count());
        let state = &self.current;
        if state.segment_len > 0 {
            let full = state.segment_len + len as u64 > self.config.segment_bytes_max;
            let old = match (self.config.segment_age_max, state.opened_ms) {
                (Some(age), Some(opened_ms)) => {
                    now_ms.saturating_sub(opened_ms)
                        >= i64::try_from(age.as_millis()).unwrap_or(i64::MAX)
                }
                _ => false,
            };
            let offsets_exhausted =
                state.next_offset + records - state.segment_base > u64::from(u32::MAX);
            if full || old || offsets_exhausted {
                self.roll();
            }
        }
        let state = &mut self.current;
        state.opened_ms.get_or_insert(now_ms);
        if self
            .pending
            .last()
            .is_none_or(|pending| pending.base_offset != state.segment_base)
        {
            debug_assert!(
                self.pending.is_empty(),
                "only a roll adds a second pending segment"
            );
            self.pending.push(PendingSegment {
                base_offset: state.segment_base,
                is_new: false,
                start_position: state.segment_len,
                bytes: std::mem::take(&mut self.spare_buffer),
                offsets: Vec::new(),
                times: Vec::new(),
                max_timestamp_ms: i64::MIN,
                closing: None,
            });
        }
        let pending = self.pending.last_mut().expect("pushed above if missing");
        let relative = u32::try_from(state.next_offset - state.segment_base)
            .expect("the writer rolls before a segment spans 2^32 offsets");
        let position = u32::try_from(state.segment_len)
            .expect("segments roll before 4 GiB, so positions fit in u32");
        let (offset_entry, time_entry) = state.cursor.place(
            u64::from(self.config.index_interval_bytes),
            relative,
            position,
            len as u64,
            batch.max_timestamp_ms(),
        );
        pending.offsets.extend(offset_entry);
        pending.times.extend(time_entry);
        let start = pending.bytes.len();
        pending.bytes.extend_from_slice(batch.as_bytes());
        Batch::set_base_offset(&mut pending.bytes[start..], state.next_offset);
        pending.max_timestamp_ms = pending.max_timestamp_ms.max(batch.max_timestamp_ms());
        let appended = Appended {
            base_offset: state.next_offset,
            last_offset: state.next_offset + records - 1,
        };
        state.segment_len += len as u64;
        state.next_offset += records;
        Ok(appended)
    }

    /// Closes the segment receiving appends (in the pending state) and starts a new one at the
    /// next offset. The files change at the next flush.
    fn roll(&mut self) {
        let state = self.current;
        if self
            .pending
            .last()
            .is_none_or(|pending| pending.base_offset != state.segment_base)
        {
            self.pending.push(PendingSegment {
                base_offset: state.segment_base,
                is_new: false,
                start_position: state.segment_len,
                bytes: Vec::new(),
                offsets: Vec::new(),
                times: Vec::new(),
                max_timestamp_ms: i64::MIN,
                closing: None,
            });
        }
        let pending = self.pending.last_mut().expect("pushed above if missing");
        pending.closing = Some(Closing {
            end_offset: state.next_offset,
            max_timestamp_ms: state.cursor.running_max_timestamp_ms,
        });
        self.pending.push(PendingSegment {
            base_offset: state.next_offset,
            is_new: true,
            start_position: 0,
            bytes: Vec::new(),
            offsets: Vec::new(),
            times: Vec::new(),
            max_timestamp_ms: i64::MIN,
            closing: None,
        });
        self.current = WriterState {
            segment_base: state.next_offset,
            segment_len: 0,
            cursor: IndexCursor::new(),
            opened_ms: None,
            next_offset: state.next_offset,
        };
    }

    /// Hands appended bytes to the OS and makes them visible to readers (`fsync = os`).
    ///
    /// On `StorageFull` (or another write error) every batch appended since the last successful
    /// flush is dropped and the log is exactly as it was after that flush: later appends reuse
    /// the offsets, and succeed once space returns. A segment rolled by this flush is fdatasynced
    /// before the next one is created (the invariant recovery relies on); if that fails, the log
    /// is poisoned.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_pending(false)
    }

    /// `flush` plus fdatasync: appended batches survive power loss. A failed sync poisons the
    /// log; every later call returns `Error::Poisoned`.
    ///
    /// The batches become visible to readers only after the fdatasync, so no reader sees a
    /// batch that a power loss could still take away.
    pub fn sync(&mut self) -> Result<()> {
        self.flush_pending(true)
    }

    fn flush_pending(&mut self, durable: bool) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.pending.is_empty() {
            if durable && self.unsynced {
                if let Err(error) = self.active_file()?.sync_data() {
                    return Err(self.poison(error));
                }
                self.unsynced = false;
            }
            return Ok(());
        }
        let mut progress = FlushProgress::default();
        match self.write_pending(durable, &mut progress) {
            Ok(()) => {
                self.publish(progress, durable);
                Ok(())
            }
            Err(FlushFailure::Poison(error)) => Err(self.poison(error)),
            Err(FlushFailure::Undo(error)) => {
                if let Err(undo_error) = self.undo(&progress) {
                    tracing::error!(error = %undo_error, "undoing a failed flush failed");
                    return Err(self.poison(error));
                }
                self.current = self.committed;
                self.recycle_pending();
                Err(error)
            }
        }
    }

    fn poison(&mut self, error: Error) -> Error {
        tracing::error!(%error, "partition log poisoned: refusing writes until reopened");
        self.poisoned = true;
        error
    }

    /// Writes the pending segments in order. Calling context: `flush_pending`, which undoes or
    /// poisons on failure.
    fn write_pending(
        &mut self,
        durable: bool,
        progress: &mut FlushProgress,
    ) -> std::result::Result<(), FlushFailure> {
        let directory = Arc::clone(&self.shared.directory);
        for pending in &self.pending {
            let file = if pending.is_new {
                let file = directory
                    .create(&file_name(pending.base_offset, LOG_SUFFIX))
                    .map_err(FlushFailure::Undo)?;
                progress.created.push(pending.base_offset);
                file
            } else {
                debug_assert_eq!(pending.base_offset, self.active.base_offset);
                progress.wrote_active = true;
                self.active_file().map_err(FlushFailure::Undo)?
            };
            progress.files.push(Arc::clone(&file));
            if !pending.bytes.is_empty() {
                file.write_at(pending.start_position, &pending.bytes)
                    .map_err(FlushFailure::Undo)?;
            }
            let Some(closing) = pending.closing else {
                progress.closed_indexes.push(None);
                continue;
            };
            // Roll invariant: a segment's data and index are durable before the next segment
            // exists, so recovery only ever has to scan the last segment(s).
            progress.synced = true;
            file.sync_data().map_err(FlushFailure::Poison)?;
            let mut index = if pending.is_new {
                SegmentIndex::default()
            } else {
                self.active.index_snapshot().unwrap_or_default()
            };
            index.offsets.extend_from_slice(&pending.offsets);
            index.times.extend_from_slice(&pending.times);
            let index = recovery::closed_index(
                index,
                closing.max_timestamp_ms,
                closing.end_offset - pending.base_offset,
            );
            progress.index_files_written.push(pending.base_offset);
            segment::write_index_files(directory.as_ref(), pending.base_offset, &index).map_err(
                |error| match error {
                    IndexWriteError::Write(error) => FlushFailure::Undo(error),
                    IndexWriteError::Sync(error) => FlushFailure::Poison(error),
                },
            )?;
            progress.closed_indexes.push(Some(index));
        }
        if !progress.created.is_empty() {
            directory.sync().map_err(|error| match error {
                // The directory could not even be opened: no fsync ran, so nothing is in
                // doubt and the flush can be undone (a transient lack of descriptors must not
                // poison the log until restart).
                Error::TooManyOpenFiles { .. } => FlushFailure::Undo(error),
                error => FlushFailure::Poison(error),
            })?;
        }
        if durable {
            let last = progress.files.last().expect("pending is non-empty");
            last.sync_data().map_err(FlushFailure::Poison)?;
        }
        Ok(())
    }

    /// Puts the files back as they were after the last successful flush.
    fn undo(&mut self, progress: &FlushProgress) -> Result<()> {
        let directory = Arc::clone(&self.shared.directory);
        if progress.wrote_active {
            let active = self.active_file()?;
            active.truncate(self.committed.segment_len)?;
            // The cut-off bytes may already be durable (a sync of this flush, or the kernel's
            // own write-back of the page cache); make the cut durable too, or a power loss
            // would bring back batches their producers were told had failed.
            active.sync_data()?;
        }
        for base in &progress.index_files_written {
            recovery::remove_if_exists(directory.as_ref(), &file_name(*base, INDEX_SUFFIX))?;
            recovery::remove_if_exists(directory.as_ref(), &file_name(*base, TIME_INDEX_SUFFIX))?;
        }
        for base in &progress.created {
            recovery::remove_if_exists(directory.as_ref(), &file_name(*base, LOG_SUFFIX))?;
        }
        if !progress.created.is_empty() || !progress.index_files_written.is_empty() {
            directory.sync()?;
        }
        Ok(())
    }

    /// Makes the flushed segments visible: new segments join the list, lengths and the end
    /// offset are published (in that order, see `Shared::end_offset`).
    fn publish(&mut self, progress: FlushProgress, durable: bool) {
        let pending = std::mem::take(&mut self.pending);
        let mut segments: Option<Vec<Arc<Segment>>> = None;
        for ((pending, file), closed_index) in pending
            .into_iter()
            .zip(progress.files)
            .zip(progress.closed_indexes)
        {
            let segment = if pending.is_new {
                let segment = Arc::new(Segment::new(
                    pending.base_offset,
                    self.shared.directory.as_ref(),
                    Some(file),
                    0,
                    i64::MIN,
                    Some(SegmentIndex::default()),
                ));
                segments
                    .get_or_insert_with(|| self.shared.snapshot().as_ref().clone())
                    .push(Arc::clone(&segment));
                segment
            } else {
                Arc::clone(&self.active)
            };
            segment.extend_index(&pending.offsets, &pending.times);
            segment.publish_max_timestamp(pending.max_timestamp_ms);
            let len = pending.start_position + pending.bytes.len() as u64;
            segment.publish_len(len);
            if let Some(index) = closed_index {
                segment.replace_index(index);
                self.closed_bytes += len;
                // No longer written: readers open it when they need it.
                segment.close_handle();
            }
            self.active = segment;
            if pending.bytes.capacity() <= SPARE_BUFFER_MAX
                && pending.bytes.capacity() > self.spare_buffer.capacity()
            {
                let mut bytes = pending.bytes;
                bytes.clear();
                self.spare_buffer = bytes;
            }
        }
        if let Some(segments) = segments {
            self.shared.replace(segments);
        }
        self.shared
            .end_offset
            .store(self.current.next_offset, Ordering::Release);
        self.committed = self.current;
        self.unsynced = !durable;
    }

    /// The active segment's file. It always holds a handle; should it not, reopen it.
    fn active_file(&self) -> Result<Arc<dyn File>> {
        match self.active.open_handle() {
            Some(file) => Ok(file),
            None => {
                let file = self.shared.directory.open(&self.active.name)?;
                self.active.keep_handle(Arc::clone(&file));
                Ok(file)
            }
        }
    }

    fn recycle_pending(&mut self) {
        for mut pending in self.pending.drain(..) {
            if pending.bytes.capacity() <= SPARE_BUFFER_MAX
                && pending.bytes.capacity() > self.spare_buffer.capacity()
            {
                pending.bytes.clear();
                self.spare_buffer = pending.bytes;
            }
        }
    }

    /// A reader that sees batches up to the last flush.
    pub fn reader(&self) -> LogReader {
        LogReader {
            shared: Arc::clone(&self.shared),
        }
    }

    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset.load(Ordering::Acquire)
    }

    /// Offset the next appended record gets.
    pub fn next_offset(&self) -> u64 {
        self.current.next_offset
    }

    /// One past the last offset visible to readers (the last successful flush or sync).
    pub fn flushed_offset(&self) -> u64 {
        self.committed.next_offset
    }

    /// Whether an earlier failure poisoned the log (fail-stop until reopened).
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Number of segments, counting one not yet created by a pending roll.
    pub fn segment_count(&self) -> usize {
        self.shared.snapshot().len() + self.pending.iter().filter(|pending| pending.is_new).count()
    }

    /// Total bytes of all segments, including appended bytes not yet flushed.
    pub fn size_bytes(&self) -> u64 {
        let pending: u64 = self
            .pending
            .iter()
            .map(|pending| pending.bytes.len() as u64)
            .sum();
        self.closed_bytes + self.committed_active_len() + pending
    }

    fn committed_active_len(&self) -> u64 {
        self.active.visible_len()
    }

    /// Deletes whole closed segments beyond the retention limits.
    ///
    /// Only a prefix of the log is deleted (offsets stay contiguous), never the active segment.
    /// A segment is old when its newest batch's max timestamp is older than `now_ms` minus
    /// `retention_age`; by size, the oldest segments go while the log exceeds `retention_bytes`.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let segments = self.shared.snapshot();
        let closed = &segments[..segments.len() - 1];
        let age_limit_ms = self
            .config
            .retention_age
            .map(|age| now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
        let mut total = self.size_bytes();
        let mut deleted = 0;
        let mut bytes_deleted = 0;
        for segment in closed {
            let expired = age_limit_ms.is_some_and(|limit| segment.max_timestamp_ms() < limit);
            let oversized = self
                .config
                .retention_bytes
                .is_some_and(|limit| total > limit);
            if !(expired || oversized) {
                break;
            }
            let len = segment.visible_len();
            total -= len;
            bytes_deleted += len;
            deleted += 1;
        }
        if deleted > 0 {
            // Readers stop finding the segments first; readers already holding them keep reading
            // through their open handles.
            self.shared.replace(segments[deleted..].to_vec());
            self.shared.forget_handles(&segments[..deleted]);
            let directory = Arc::clone(&self.shared.directory);
            for (removed, segment) in segments[..deleted].iter().enumerate() {
                // Oldest first, the log file before its indexes: whatever a failure leaves is a
                // contiguous log (an index without its segment is removed on open).
                if let Err(error) = directory.remove(&segment.name) {
                    // Put back what is still on disk, or the next pass would delete newer
                    // segments and leave a hole in the offsets.
                    self.shared.replace(segments[removed..].to_vec());
                    let gone: u64 = segments[..removed]
                        .iter()
                        .map(|segment| segment.visible_len())
                        .sum();
                    self.closed_bytes -= gone;
                    return Err(error);
                }
                for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                    if let Err(error) = recovery::remove_if_exists(
                        directory.as_ref(),
                        &file_name(segment.base_offset, suffix),
                    ) {
                        tracing::warn!(%error, "could not remove an index file; the next open removes it");
                    }
                }
            }
            self.closed_bytes -= bytes_deleted;
            directory.sync()?;
            tracing::debug!(
                segments = deleted,
                bytes = bytes_deleted,
                "retention deleted segments"
            );
        }
        Ok(RetentionReport {
            segments_deleted: deleted,
            bytes_deleted,
            new_start_offset: self.start_offset(),
        })
    }

    /// Drops every batch from `offset` on, so that the next append gets `offset` (Raft's
    /// "truncate a conflicting suffix"). `offset` must be the base offset of a stored batch or
    /// the next offset (then nothing is cut, the log is only synced); anything else is
    /// `Error::NotBatchBoundary` and changes nothing. Batches appended but not flushed are
    /// flushed first.
    ///
    /// Durable when it returns: the whole log up to `offset` is then on disk (earlier segments
    /// were synced when they closed, and the cut segment is fdatasynced). Crash-safe at every
    /// step: later segments go from the highest down, each removal made durable before the
    /// next, and the segment holding the cut is cut last, so a crash leaves the old log or a
    /// prefix of it at least as long as the truncated one, never a hole.
    ///
    /// Readers stop seeing the dropped batches before any file changes. A reader in the middle
    /// of reading them (it loaded the end offset before the call) may get an error or the old
    /// batches: callers cut only what readers were not yet allowed to act on (in a cluster,
    /// entries past the commit index). A failure after the first change to a file poisons the
    /// log; a reopen then recovers the old log or a prefix of it, as after a crash.
    ///
    /// Cost: a scan of the part of the cut segment before the cut (to rebuild its in-memory
    /// index and writer state); rare by design (a leader change with conflicting entries).
    pub fn truncate_from(&mut self, offset: u64) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        self.flush()?;
        let next_offset = self.current.next_offset;
        if offset == next_offset {
            // Nothing to cut, but the promise holds: the log up to `offset` is durable.
            return self.sync();
        }
        if offset < self.start_offset() || offset > next_offset {
            return Err(Error::NotBatchBoundary { offset });
        }
        let segments = self.shared.snapshot();
        let kept = segments.partition_point(|segment| segment.base_offset <= offset);
        let cut_segment = Arc::clone(&segments[kept - 1]);
        let was_active = Arc::ptr_eq(&cut_segment, &self.active);
        let file = self.shared.segment_file(&cut_segment)?;
        let scan = segment::scan_segment_until(
            file.as_ref(),
            cut_segment.base_offset,
            cut_segment.visible_len(),
            segment::IndexInterval::Bytes(u64::from(self.config.index_interval_bytes)),
            offset,
        )?;
        if let Some((position, reason)) = scan.damage {
            return Err(Error::Corrupt {
                path: cut_segment.path.clone(),
                position,
                reason,
            });
        }
        if scan.next_offset != offset {
            return Err(Error::NotBatchBoundary { offset });
        }
        let cut = scan.valid_len;

        // Readers first: the end offset, then the segment list, then the cut segment's length.
        self.shared.end_offset.store(offset, Ordering::Release);
        let removed = segments[kept..].to_vec();
        if !removed.is_empty() {
            self.shared.replace(segments[..kept].to_vec());
            self.shared.forget_handles(&removed);
        }
        cut_segment.cut_to(cut, scan.cursor.running_max_timestamp_ms, scan.index);
        self.shared.adopt_as_active(&cut_segment, Arc::clone(&file));
        self.active = Arc::clone(&cut_segment);
        self.closed_bytes = segments[..kept - 1]
            .iter()
            .map(|segment| segment.visible_len())
            .sum();
        // The segment keeps its append time while it stays active and non-empty; otherwise
        // the clock starts as recovery starts it (first batch's max timestamp).
        let opened_ms = if was_active && cut > 0 {
            self.current.opened_ms
        } else {
            scan.first_max_timestamp_ms
        };
        self.current = WriterState {
            segment_base: cut_segment.base_offset,
            segment_len: cut,
            cursor: scan.cursor,
            opened_ms,
            next_offset: offset,
        };
        self.committed = self.current;
        self.unsynced = false;

        match self.cut_files(&removed, &cut_segment, file.as_ref(), cut, was_active) {
            Ok(()) => Ok(()),
            Err(error) => Err(self.poison(error)),
        }
    }

    /// The file side of `truncate_from`. Order (each step durable before the next): remove the
    /// later segments from the highest down (a crash leaves a prefix), cut the segment holding
    /// the cut and fdatasync it, then remove that segment's index files if it was closed (an
    /// active segment has none; recovery would remove them too).
    fn cut_files(
        &self,
        removed: &[Arc<Segment>],
        cut_segment: &Segment,
        file: &dyn File,
        cut: u64,
        was_active: bool,
    ) -> Result<()> {
        let directory = self.shared.directory.as_ref();
        for segment in removed.iter().rev() {
            directory.remove(&segment.name)?;
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                recovery::remove_if_exists(directory, &file_name(segment.base_offset, suffix))?;
            }
            directory.sync()?;
        }
        file.truncate(cut)?;
        file.sync_data()?;
        if !was_active {
            for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
                recovery::remove_if_exists(directory, &file_name(cut_segment.base_offset, suffix))?;
            }
            directory.sync()?;
        }
        Ok(())
    }
}

/// Reads one partition's log concurrently with its writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogReader {
    shared: Arc<Shared>,
}

/// Extra bytes read before the wanted offset: an index entry can be up to one interval (plus
/// a batch) before it.
const READ_SLACK_BYTES: usize = 8 << 10;
/// Largest single read of a scan, unless one batch needs more.
const READ_SIZE_MAX: usize = 8 << 20;

impl LogReader {
    /// Whole batches holding offsets `>= from` (starting at the start offset if `from` is below
    /// it), in order, up to about `max_bytes` but at least one batch if one is visible.
    ///
    /// Batches share one read buffer per read (no copy per batch). If a batch is corrupt, the
    /// batches before it are returned, or `Error::Corrupt` when it is the first one.
    pub fn read(&self, from: u64, max_bytes: usize) -> Result<Vec<Batch>> {
        let end = self.shared.end_offset.load(Ordering::Acquire);
        let segments = self.shared.snapshot();
        let mut from = from.max(segments[0].base_offset);
        let mut batches = Vec::new();
        if from >= end {
            return Ok(batches);
        }
        let mut total = 0usize;
        let mut position_in_list =
            segments.partition_point(|segment| segment.base_offset <= from) - 1;
        while position_in_list < segments.len() {
            let segment = &segments[position_in_list];
            let segment_end = segments
                .get(position_in_list + 1)
                .map_or(end, |next| next.base_offset);
            let start = self.position_for(segment, from, segment_end)?;
            let file = match self.shared.segment_file(segment) {
                Ok(file) => file,
                // Retention removed it after our snapshot (closed segments open lazily): read
                // again, from the new start if `from` is gone.
                Err(_) if self.is_retired(segment) => return self.read(from, max_bytes),
                Err(error) => return Err(error),
            };
            let read_size = max_bytes
                .saturating_sub(total)
                .saturating_add(READ_SLACK_BYTES)
                .min(READ_SIZE_MAX);
            let mut scanner = Scanner::new(file.as_ref(), start, segment.visible_len(), read_size);
            let mut expected: Option<u64> = None;
            loop {
                let batch = match scanner.next_batch() {
                    Ok(Some((position, batch))) => {
                        if expected.is_some_and(|expected| expected != batch.base_offset()) {
                            let error = ScanError::Damaged {
                                position,
                                reason: format!(
                                    "batch offset {} breaks the sequence",
                                    batch.base_offset()
                                ),
                            };
                            return corrupt_or_partial(batches, error, &segment.path);
                        }
                        batch
                    }
                    Ok(None) => break,
                    Err(error) => return corrupt_or_partial(batches, error, &segment.path),
                };
                expected = Some(batch.next_offset());
                if batch.base_offset() >= end {
                    return Ok(batches);
                }
                if batch.last_offset() < from {
                    continue;
                }
                total += batch.len();
                batches.push(batch);
                if total >= max_bytes {
                    return Ok(batches);
                }
            }
            position_in_list += 1;
            from = segment_end;
            if from >= end {
                break;
            }
        }
        Ok(batches)
    }

    /// Whether retention removed `segment` (it lies below the start offset now).
    fn is_retired(&self, segment: &Segment) -> bool {
        segment.base_offset < self.start_offset()
    }

    fn position_for(&self, segment: &Segment, offset: u64, segment_end: u64) -> Result<u64> {
        let relative = offset - segment.base_offset;
        segment.with_index(self.shared.directory.as_ref(), segment_end, |index| {
            index.position_for(relative)
        })
    }

    /// The first offset whose timestamp is at or after `timestamp_ms`, if any.
    ///
    /// With timestamps out of order, this is the first record in offset order whose timestamp
    /// is `>= timestamp_ms` (Kafka's `offsetsForTimes`).
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let end = self.shared.end_offset.load(Ordering::Acquire);
        let segments = self.shared.snapshot();
        for (position_in_list, segment) in segments.iter().enumerate() {
            if segment.max_timestamp_ms() < timestamp_ms {
                continue;
            }
            let segment_end = segments
                .get(position_in_list + 1)
                .map_or(end, |next| next.base_offset);
            let start =
                segment.with_index(self.shared.directory.as_ref(), segment_end, |index| {
                    let relative = index.scan_start_for_time(timestamp_ms);
                    index.position_for(relative)
                })?;
            let file = match self.shared.segment_file(segment) {
                Ok(file) => file,
                Err(_) if self.is_retired(segment) => continue,
                Err(error) => return Err(error),
            };
            let mut scanner = Scanner::new(
                file.as_ref(),
                start,
                segment.visible_len(),
                segment::DEFAULT_READ_SIZE,
            );
            while let Some((_, batch)) = scanner
                .next_batch()
                .map_err(|error| error.into_error(&segment.path))?
            {
                if batch.base_offset() >= end {
                    return Ok(None);
                }
                if batch.max_timestamp_ms() < timestamp_ms {
                    continue;
                }
                for record in batch.records() {
                    // Parsed batches hold well-formed records; an error here would be a broken
                    // invariant of weir-batch, reported rather than trusted.
                    let record = record.map_err(|error| Error::Corrupt {
                        path: segment.path.clone(),
                        position: 0,
                        reason: error.to_string(),
                    })?;
                    if record.timestamp_ms >= timestamp_ms {
                        return Ok(Some(record.offset));
                    }
                }
            }
        }
        Ok(None)
    }

    pub fn start_offset(&self) -> u64 {
        self.shared.start_offset.load(Ordering::Acquire)
    }

    /// One past the last visible offset.
    pub fn end_offset(&self) -> u64 {
        self.shared.end_offset.load(Ordering::Acquire)
    }
}

fn corrupt_or_partial(batches: Vec<Batch>, error: ScanError, path: &Path) -> Result<Vec<Batch>> {
    match error {
        ScanError::Damaged { .. } if !batches.is_empty() => Ok(batches),
        error => Err(error.into_error(path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io;
    use crate::io::sim::SimDirectory;
    use weir_batch::BatchBuilder;

    fn batch(records: usize, timestamp_ms: i64, value_len: usize) -> Batch {
        let mut builder = BatchBuilder::new();
        for index in 0..records {
            builder.push(
                timestamp_ms + index as i64,
                None,
                &[],
                &vec![index as u8; value_len],
            );
        }
        Batch::parse(builder.finish(), usize::MAX).expect("a built batch parses")
    }

    fn small_segments() -> LogConfig {
        LogConfig {
            segment_bytes_max: 1000,
            index_interval_bytes: 100,
            ..LogConfig::default()
        }
    }

    fn offsets(batches: &[Batch]) -> Vec<(u64, u64)> {
        batches
            .iter()
            .map(|batch| (batch.base_offset(), batch.last_offset()))
            .collect()
    }

    #[test]
    fn appended_batches_are_invisible_until_flushed_then_read_back() {
        let directory = SimDirectory::new(1);
        let (mut log, report) =
            PartitionLog::open(directory.clone(), LogConfig::default()).unwrap();
        assert_eq!(report.segments, 1);
        let reader = log.reader();
        assert_eq!(
            log.append(&batch(3, 10, 5), 0).unwrap(),
            Appended {
                base_offset: 0,
                last_offset: 2
            }
        );
        assert_eq!(
            log.append(&batch(2, 20, 5), 0).unwrap(),
            Appended {
                base_offset: 3,
                last_offset: 4
            }
        );
        assert!(reader.read(0, 1 << 20).unwrap().is_empty());
        assert_eq!(reader.end_offset(), 0);
        log.flush().unwrap();
        assert_eq!(reader.end_offset(), 5);
        assert_eq!(
            offsets(&reader.read(0, 1 << 20).unwrap()),
            vec![(0, 2), (3, 4)]
        );
        assert_eq!(offsets(&reader.read(4, 1).unwrap()), vec![(3, 4)]);
        assert!(reader.read(5, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn one_flush_is_one_write_for_many_appends() {
        let directory = SimDirectory::new(1);
        let (mut log, _) = PartitionLog::open(directory.clone(), LogConfig::default()).unwrap();
        let writes = directory.write_count();
        for _ in 0..100 {
            log.append(&batch(1, 1, 100), 0).unwrap();
        }
        log.sync().unwrap();
        assert_eq!(directory.write_count() - writes, 1);
    }

    #[test]
    fn small_segments_roll_and_reads_cross_them() {
        let directory = SimDirectory::new(1);
        let (mut log, _) = PartitionLog::open(directory.clone(), small_segments()).unwrap();
        for round in 0..30 {
            log.append(&batch(2, round, 50), 0).unwrap();
            if round % 7 == 0 {
                log.flush().unwrap();
            }
        }
        log.flush().unwrap();
        assert!(log.segment_count() > 3, "{}", log.segment_count());
        let reader = log.reader();
        let all = reader.read(0, usize::MAX).unwrap();
        assert_eq!(all.len(), 30);
        for (index, batch) in all.iter().enumerate() {
            assert_eq!(batch.base_offset(), index as u64 * 2);
        }
        for from in 0..60 {
            let first = &reader.read(from, 1).unwrap()[0];
            assert!(first.base_offset() <= from && from <= first.last_offset());
        }
        drop(log);
        let (log, report) = PartitionLog::open(directory, small_segments()).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(report.indexes_rebuilt, 0);
        assert_eq!(log.next_offset(), 60);
        assert_eq!(
            offsets(&log.reader().read(0, usize::MAX).unwrap()),
            offsets(&all)
        );
    }

    #[test]
    fn offset_for_timestamp_finds_the_first_record_at_or_after() {
        let directory = SimDirectory::new(1);
        let (mut log, _) = PartitionLog::open(directory, small_segments()).unwrap();
        for round in 0..20 {
            log.append(&batch(2, 100 + round * 10, 40), 0).unwrap();
        }
        log.flush().unwrap();
        let reader = log.reader();
        assert_eq!(reader.offset_for_timestamp(0).unwrap(), Some(0));
        assert_eq!(reader.offset_for_timestamp(101).unwrap(), Some(1));
        assert_eq!(reader.offset_for_timestamp(102).unwrap(), Some(2));
        assert_eq!(reader.offset_for_timestamp(155).unwrap(), Some(12));
        assert_eq!(reader.offset_for_timestamp(291).unwrap(), Some(39));
        assert_eq!(reader.offset_for_timestamp(292).unwrap(), None);
    }

    #[test]
    fn retention_deletes_old_closed_segments_but_never_the_active_one() {
        let directory = SimDirectory::new(1);
        let config = LogConfig {
            retention_age: Some(Duration::from_millis(1000)),
            ..small_segments()
        };
        let (mut log, _) = PartitionLog::open(directory.clone(), config).unwrap();
        for round in 0..20 {
            log.append(&batch(1, round * 100, 200), 0).unwrap();
        }
        log.flush().unwrap();
        let segments = log.segment_count();
        let report = log.enforce_retention(1_000).unwrap();
        assert_eq!(report.segments_deleted, 0);
        let report = log.enforce_retention(1_000_000).unwrap();
        assert_eq!(report.segments_deleted, segments - 1);
        assert_eq!(log.start_offset(), report.new_start_offset);
        assert_eq!(
            log.reader().read(0, usize::MAX).unwrap()[0].base_offset(),
            log.start_offset()
        );
        let (log, _) = PartitionLog::open(directory, small_segments()).unwrap();
        assert_eq!(log.start_offset(), report.new_start_offset);
        assert_eq!(log.next_offset(), 20);
    }

    #[test]
    fn age_rolls_the_segment() {
        let directory = SimDirectory::new(1);
        let config = LogConfig {
            segment_age_max: Some(Duration::from_millis(50)),
            ..LogConfig::default()
        };
        let (mut log, _) = PartitionLog::open(directory, config).unwrap();
        log.append(&batch(1, 0, 10), 0).unwrap();
        log.append(&batch(1, 0, 10), 49).unwrap();
        assert_eq!(log.segment_count(), 1);
        log.append(&batch(1, 0, 10), 50).unwrap();
        assert_eq!(log.segment_count(), 2);
        log.flush().unwrap();
        assert_eq!(log.reader().read(0, usize::MAX).unwrap().len(), 3);
    }

    /// Issue 10 #18: every segment kept a descriptor open (3,000 segments: 3,000 fds, and a
    /// restart opened them all). Only the active segment and a few recently read ones hold one.
    #[test]
    fn closed_segments_hold_no_descriptor_unless_recently_read() {
        let open_handles = |log: &PartitionLog| {
            log.shared
                .snapshot()
                .iter()
                .filter(|segment| segment.open_handle().is_some())
                .count()
        };
        let directory = SimDirectory::new(1);
        let (mut log, _) = PartitionLog::open(directory.clone(), small_segments()).unwrap();
        for round in 0..200 {
            log.append(&batch(1, round, 200), 0).unwrap();
            log.flush().unwrap();
        }
        assert!(log.segment_count() > 40, "{}", log.segment_count());
        assert_eq!(open_handles(&log), 1, "only the active segment");
        let all = log.reader().read(0, usize::MAX).unwrap();
        assert_eq!(all.len(), 200);
        assert!(open_handles(&log) <= 1 + OPEN_CLOSED_SEGMENTS);
        drop(log);
        let (log, _) = PartitionLog::open(directory, small_segments()).unwrap();
        assert_eq!(
            open_handles(&log),
            1,
            "a restart opens only the active segment"
        );
        assert_eq!(log.reader().read(0, usize::MAX).unwrap().len(), 200);
        assert!(open_handles(&log) <= 1 + OPEN_CLOSED_SEGMENTS);
    }

    /// Issue 10 #18: running out of descriptors while rolling a segment is a transient failure:
    /// the flush fails and is undone, the log is not poisoned, and the next flush succeeds.
    #[test]
    fn running_out_of_descriptors_at_a_roll_does_not_poison_the_log() {
        let directory = SimDirectory::new(1);
        let (mut log, _) = PartitionLog::open(directory.clone(), small_segments()).unwrap();
        log.append(&batch(1, 0, 900), 0).unwrap();
        log.flush().unwrap();
        log.append(&batch(1, 1, 900), 0).unwrap();
        directory.exhaust_descriptors_at_next_directory_sync();
        assert!(matches!(log.sync(), Err(Error::TooManyOpenFiles { .. })));
        assert!(!log.is_poisoned());
        assert_eq!(log.next_offset(), 1, "the failed batch's offset is reused");
        log.append(&batch(1, 1, 900), 0).unwrap();
        log.sync().unwrap();
        assert_eq!(
            offsets(&log.reader().read(0, usize::MAX).unwrap()),
            vec![(0, 0), (1, 1)]
        );
        drop(log);
        let (log, _) = PartitionLog::open(directory, small_segments()).unwrap();
        assert_eq!(log.next_offset(), 2);
    }

    /// `truncate_from` at every batch boundary of a log of several segments: the later
    /// batches are gone for readers, after a reopen and after a power loss, and appends go on
    /// at the cut.
    #[test]
    fn truncate_from_drops_the_suffix_durably_and_appends_go_on_there() {
        for cut_batch in 0..=30u64 {
            let directory = SimDirectory::new(cut_batch);
            let (mut log, _) = PartitionLog::open(directory.clone(), small_segments()).unwrap();
            for round in 0..30 {
                log.append(&batch(2, round, 50), 0).unwrap();
                if round % 4 == 0 {
                    log.sync().unwrap();
                }
            }
            // The last batches are only appended: truncate flushes them first.
            let reader = log.reader();
            let cut = cut_batch * 2;
            log.truncate_from(cut).unwrap();
            assert_eq!(log.next_offset(), cut);
            assert_eq!(reader.end_offset(), cut);
            let expected: Vec<(u64, u64)> = (0..cut_batch).map(|b| (b * 2, b * 2 + 1)).collect();
            assert_eq!(offsets(&reader.read(0, usize::MAX).unwrap()), expected);
            directory.crash(io::sim::CrashMode::DropUnsynced);
            let (mut log, report) =
                PartitionLog::open(directory.clone(), small_segments()).unwrap();
            assert_eq!(report.truncated_bytes, 0, "cut at {cut}: {report:?}");
            assert_eq!(report.indexes_rebuilt, 0);
            assert_eq!(
                offsets(&log.reader().read(0, usize::MAX).unwrap()),
                expected
            );
            let appended = log.append(&batch(3, 99, 10), 0).unwrap();
            assert_eq!(appended.base_offset, cut);
            log.sync().unwrap();
            assert_eq!(
                log.reader().read(cut, usize::MAX).unwrap()[0].record_count(),
                3
            );
        }
    }

    #[test]
    fn truncate_from_refuses_offsets_that_are_not_batch_boundaries() {
        let directory = SimDirectory::new(1);
        let config = LogConfig {
            retention_bytes: Some(1),
            ..small_segments()
        };
        let (mut log, _) = PartitionLog::open(directory, config).unwrap();
        for round in 0..20 {
            log.append(&batch(3, round, 100), 0).unwrap();
        }
        log.flush().unwrap();
        log.enforce_retention(0).unwrap();
        let start = log.start_offset();
        assert!(start > 0);
        for offset in [start - 1, start + 1, start + 2, 58, 61, 1000] {
            assert!(
                matches!(log.truncate_from(offset), Err(Error::NotBatchBoundary { offset: refused }) if refused == offset),
                "{offset}"
            );
        }
        assert!(!log.is_poisoned());
        assert_eq!(log.next_offset(), 60);
        log.truncate_from(60).unwrap();
        assert_eq!(log.next_offset(), 60, "the next offset is a no-op cut");
        log.truncate_from(start).unwrap();
        assert_eq!((log.start_offset(), log.next_offset()), (start, start));
        assert!(log.reader().read(0, usize::MAX).unwrap().is_empty());
    }

    /// A flush whose write fails is undone by cutting the file back; the cut must be durable
    /// even when the flush synced nothing, since the kernel may already have written the
    /// failed bytes back. Found by the truncation crash test: a power loss after an undone
    /// flush brought back a batch its producer was told had failed (and, for Raft, an entry
    /// the node never acknowledged).
    #[test]
    fn a_power_loss_after_an_undone_flush_does_not_bring_back_its_batches() {
        for seed in 0..64 {
            let directory = SimDirectory::new(seed);
            let (mut log, _) = PartitionLog::open(directory.clone(), small_segments()).unwrap();
            log.append(&batch(1, 0, 10), 0).unwrap();
            log.sync().unwrap();
            log.append(&batch(1, 0, 10), 0).unwrap();
            // The flush's first operation is its write.
            directory.fail_operation(directory.operation_count());
            assert!(log.flush().is_err());
            assert!(!log.is_poisoned());
            directory.crash(io::sim::CrashMode::TearUnsynced);
            let (log, _) = PartitionLog::open(directory, small_segments()).unwrap();
            assert_eq!(log.next_offset(), 1, "seed {seed}");
        }
    }

    #[test]
    fn a_poisoned_log_refuses_truncate_from() {
        let directory = SimDirectory::new(1);
        let (mut log, _) = PartitionLog::open(directory.clone(), small_segments()).unwrap();
        log.append(&batch(1, 0, 10), 0).unwrap();
        log.sync().unwrap();
        log.append(&batch(1, 0, 10), 0).unwrap();
        // Operations of this sync: one write, then the fdatasync, which fails.
        directory.fail_operation(directory.operation_count() + 1);
        assert!(log.sync().is_err());
        assert!(matches!(log.truncate_from(0), Err(Error::Poisoned)));
        assert_eq!(log.reader().end_offset(), 1, "nothing cut");
    }

    #[test]
    fn the_writer_can_move_to_a_thread_and_readers_can_be_shared() {
        fn send<T: Send>() {}
        fn send_sync_clone<T: Send + Sync + Clone>() {}
        send::<PartitionLog>();
        send_sync_clone::<LogReader>();
    }

    #[test]
    fn an_oversized_batch_is_refused() {
        let (mut log, _) = PartitionLog::open(
            SimDirectory::new(1),
            LogConfig {
                max_batch_bytes: 100,
                ..LogConfig::default()
            },
        )
        .unwrap();
        assert!(matches!(
            log.append(&batch(1, 0, 200), 0),
            Err(Error::BatchTooLarge { .. })
        ));
        assert_eq!(log.next_offset(), 0);
    }
}
