//! One segment: a file of back-to-back batches plus its sparse offset and time indexes, the
//! scanner that walks batches in a file, and the index file format. Shared by the writer, the
//! readers and recovery; it decides nothing about when to roll, retain or cut.
//!
//! Index rule (the writer, recovery and index rebuilds all follow it, so they build identical
//! indexes): before a batch is placed, if at least `index_interval_bytes` bytes were written since
//! the last offset-index entry, add an offset entry `(batch offset - base, batch position)`, and,
//! if the running maximum timestamp of the batches *before* it grew since the last time entry, a
//! time entry `(that maximum, batch offset - base)`. A time entry `(T, r)` therefore promises:
//! every batch with offset below `base + r` has a max timestamp `<= T`. A closed segment's time
//! index ends with a closing entry `(segment max timestamp, end offset - base)`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use weir_batch::{Batch, BatchError, HEADER_LEN, check_len};

use crate::io::{Directory, File};
use crate::{Error, Result};

pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";
pub(crate) const QUARANTINE_SUFFIX: &str = ".quarantined";

const OFFSET_INDEX_MAGIC: [u8; 4] = *b"WXOI";
const TIME_INDEX_MAGIC: [u8; 4] = *b"WXTI";
const INDEX_VERSION: u32 = 1;
/// magic (4) + version (4) + entry count (4) + CRC32C of the entries (4).
pub(crate) const INDEX_HEADER_LEN: usize = 16;
pub(crate) const OFFSET_ENTRY_LEN: usize = 8;
pub(crate) const TIME_ENTRY_LEN: usize = 12;

/// `00000000000000000042.log` for base offset 42: fixed width, so names sort like offsets.
pub(crate) fn file_name(base_offset: u64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// The base offset and suffix of one of our file names; `None` for anything else.
pub(crate) fn parse_file_name(name: &str) -> Option<(u64, &'static str)> {
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        if let Some(stem) = name.strip_suffix(suffix)
            && stem.len() == 20
            && stem.bytes().all(|byte| byte.is_ascii_digit())
        {
            return stem.parse().ok().map(|base| (base, suffix));
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp_ms: i64,
    pub relative_offset: u32,
}

/// A segment's sparse indexes. Invariant: offset entries strictly increase in both fields; time
/// entries strictly increase in timestamp and never decrease in relative offset.
#[derive(Debug, Clone, Default)]
pub(crate) struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// Byte position of the last indexed batch at or before `relative_offset` (0 if none).
    pub fn position_for(&self, relative_offset: u64) -> u64 {
        let after = self
            .offsets
            .partition_point(|entry| u64::from(entry.relative_offset) <= relative_offset);
        match after {
            0 => 0,
            _ => u64::from(self.offsets[after - 1].position),
        }
    }

    /// A relative offset at or before the first batch whose max timestamp is `>= timestamp_ms`.
    pub fn scan_start_for_time(&self, timestamp_ms: i64) -> u64 {
        let after = self
            .times
            .partition_point(|entry| entry.timestamp_ms < timestamp_ms);
        match after {
            0 => 0,
            _ => u64::from(self.times[after - 1].relative_offset),
        }
    }
}

/// Incremental state of the index rule (see the module doc), carried across appends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexCursor {
    pub bytes_since_entry: u64,
    /// Max timestamp of every batch placed so far (`i64::MIN` when none).
    pub running_max_timestamp_ms: i64,
    pub last_time_entry_ms: i64,
}

impl IndexCursor {
    pub fn new() -> IndexCursor {
        IndexCursor {
            bytes_since_entry: 0,
            running_max_timestamp_ms: i64::MIN,
            last_time_entry_ms: i64::MIN,
        }
    }

    /// Accounts for one batch about to be placed at `position`; returns the entries to add.
    pub fn place(
        &mut self,
        interval_bytes: u64,
        relative_offset: u32,
        position: u32,
        len: u64,
        max_timestamp_ms: i64,
    ) -> (Option<OffsetEntry>, Option<TimeEntry>) {
        let mut entries = (None, None);
        if self.bytes_since_entry >= interval_bytes {
            entries.0 = Some(OffsetEntry {
                relative_offset,
                position,
            });
            if self.running_max_timestamp_ms > self.last_time_entry_ms {
                entries.1 = Some(TimeEntry {
                    timestamp_ms: self.running_max_timestamp_ms,
                    relative_offset,
                });
                self.last_time_entry_ms = self.running_max_timestamp_ms;
            }
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += len;
        self.running_max_timestamp_ms = self.running_max_timestamp_ms.max(max_timestamp_ms);
        entries
    }
}

/// A segment as readers see it. Shared (`Arc`) between the writer, readers and snapshots of the
/// segment list; a deleted segment lives on for readers that still hold it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: u64,
    pub name: String,
    pub path: PathBuf,
    /// The open file: always for the active segment; for a closed one only while it is among
    /// the log's few recently read segments (see `Shared::segment_file`), so a log of many
    /// segments holds few descriptors.
    file: Mutex<Option<Arc<dyn File>>>,
    /// Bytes readers may read. Invariant: a whole number of valid batches; grows only while the
    /// segment is active and is fixed once it is closed, except that `truncate_from` lowers it
    /// (and makes the segment active again). Stored before the log's end offset, so a
    /// reader that loaded the end offset first sees at least the bytes holding it.
    visible_len: AtomicU64,
    /// Max timestamp of the visible batches (`i64::MIN` when none).
    max_timestamp_ms: AtomicI64,
    /// `None` for a closed segment whose index files were not read yet (loaded lazily so that
    /// open time does not grow with the log). The lock is held only to copy or search entries.
    index: RwLock<Option<SegmentIndex>>,
}

impl Segment {
    pub fn new(
        base_offset: u64,
        directory: &dyn Directory,
        file: Option<Arc<dyn File>>,
        visible_len: u64,
        max_timestamp_ms: i64,
        index: Option<SegmentIndex>,
    ) -> Segment {
        let name = file_name(base_offset, LOG_SUFFIX);
        Segment {
            base_offset,
            path: directory.path(&name),
            name,
            file: Mutex::new(file),
            visible_len: AtomicU64::new(visible_len),
            max_timestamp_ms: AtomicI64::new(max_timestamp_ms),
            index: RwLock::new(index),
        }
    }

    /// The open handle, if the segment holds one.
    pub fn open_handle(&self) -> Option<Arc<dyn File>> {
        lock(&self.file).clone()
    }

    /// The segment's file: its open handle, or a newly opened one that `keep` decides whether
    /// to hold (`true` when it was opened now).
    pub fn file(&self, directory: &dyn Directory) -> Result<(Arc<dyn File>, bool)> {
        if let Some(file) = self.open_handle() {
            return Ok((file, false));
        }
        Ok((directory.open(&self.name)?, true))
    }

    /// Holds `file` as the segment's open handle.
    pub fn keep_handle(&self, file: Arc<dyn File>) {
        *lock(&self.file) = Some(file);
    }

    /// Drops the segment's handle; readers using it keep it until they finish.
    pub fn close_handle(&self) {
        *lock(&self.file) = None;
    }

    pub fn visible_len(&self) -> u64 {
        self.visible_len.load(Ordering::Acquire)
    }

    /// Writer only: publishes bytes that are already written to the file.
    pub fn publish_len(&self, len: u64) {
        self.visible_len.store(len, Ordering::Release);
    }

    /// Writer only (`truncate_from`): lowers the visible length and max timestamp to those of
    /// the batches left before a cut. The log's end offset is lowered before this.
    pub fn cut_to(&self, len: u64, max_timestamp_ms: i64, index: SegmentIndex) {
        self.visible_len.store(len, Ordering::Release);
        self.max_timestamp_ms
            .store(max_timestamp_ms, Ordering::Release);
        *write_lock(&self.index) = Some(index);
    }

    pub fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms.load(Ordering::Acquire)
    }

    pub fn publish_max_timestamp(&self, timestamp_ms: i64) {
        self.max_timestamp_ms
            .fetch_max(timestamp_ms, Ordering::AcqRel);
    }

    /// Writer only: adds published entries to the in-memory index of the active segment.
    pub fn extend_index(&self, offsets: &[OffsetEntry], times: &[TimeEntry]) {
        if offsets.is_empty() && times.is_empty() {
            return;
        }
        let mut guard = write_lock(&self.index);
        let index = guard.get_or_insert_with(SegmentIndex::default);
        index.offsets.extend_from_slice(offsets);
        index.times.extend_from_slice(times);
    }

    /// Writer only: installs the full index of a segment it just closed (the published entries
    /// plus the closing time entry).
    pub fn replace_index(&self, index: SegmentIndex) {
        *write_lock(&self.index) = Some(index);
    }

    /// A copy of the in-memory index (the writer uses it to write index files at roll).
    pub fn index_snapshot(&self) -> Option<SegmentIndex> {
        read_lock(&self.index).clone()
    }

    /// Runs `lookup` on the index, loading it from its files first if needed.
    pub fn with_index<T>(
        &self,
        directory: &dyn Directory,
        end_offset: u64,
        lookup: impl Fn(&SegmentIndex) -> T,
    ) -> Result<T> {
        if let Some(index) = read_lock(&self.index).as_ref() {
            return Ok(lookup(index));
        }
        // Load without holding the lock (it is I/O); a racing reader may load it too, and the
        // first one to finish wins. Both results are equal.
        let loaded = self.load_index(directory, end_offset)?;
        let mut guard = write_lock(&self.index);
        let index = guard.get_or_insert(loaded);
        Ok(lookup(index))
    }

    fn load_index(&self, directory: &dyn Directory, end_offset: u64) -> Result<SegmentIndex> {
        let len = self.visible_len();
        let relative_end = end_offset - self.base_offset;
        let offsets = read_index_file(directory, self.base_offset, INDEX_SUFFIX, OFFSET_ENTRY_LEN)
            .and_then(|bytes| decode_offset_entries(&bytes, relative_end, len));
        let times = read_index_file(
            directory,
            self.base_offset,
            TIME_INDEX_SUFFIX,
            TIME_ENTRY_LEN,
        )
        .and_then(|bytes| decode_time_entries(&bytes, relative_end));
        match (offsets, times) {
            (Ok(offsets), Ok(times)) => Ok(SegmentIndex { offsets, times }),
            (offsets, times) => {
                let reason = offsets.err().or(times.err()).unwrap_or_default();
                tracing::warn!(
                    segment = %self.path.display(),
                    reason = %reason,
                    "segment index unreadable; rebuilding it in memory from the segment"
                );
                let (file, _) = self.file(directory)?;
                let scan =
                    scan_segment(file.as_ref(), self.base_offset, len, IndexInterval::Stored)?;
                Ok(scan.index)
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Holds an `Option` replaced in one store: consistent even after a panic elsewhere.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Index updates are single pushes that cannot leave the vector half-changed, so the data
    // behind a poisoned lock is still consistent.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads a whole index file and checks its header; the entry bytes are returned.
fn read_index_file(
    directory: &dyn Directory,
    base_offset: u64,
    suffix: &str,
    entry_len: usize,
) -> std::result::Result<Vec<u8>, String> {
    let name = file_name(base_offset, suffix);
    let file = directory.open(&name).map_err(|error| error.to_string())?;
    let len = file.len().map_err(|error| error.to_string())?;
    let len = usize::try_from(len).map_err(|_| "index file too large".to_owned())?;
    let mut bytes = vec![0; len];
    let read = file
        .read_at(0, &mut bytes)
        .map_err(|error| error.to_string())?;
    bytes.truncate(read);
    let header = IndexHeader::decode(&bytes, suffix)?;
    if bytes.len() != INDEX_HEADER_LEN + header.count as usize * entry_len {
        return Err(format!(
            "{name}: length does not match its {} entries",
            header.count
        ));
    }
    let entries = bytes.split_off(INDEX_HEADER_LEN);
    let computed = crc32c::crc32c(&entries);
    if computed != header.crc {
        return Err(format!(
            "{name}: entry CRC {computed:#010x} != stored {:#010x}",
            header.crc
        ));
    }
    Ok(entries)
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexHeader {
    pub count: u32,
    pub crc: u32,
}

impl IndexHeader {
    pub fn decode(bytes: &[u8], suffix: &str) -> std::result::Result<IndexHeader, String> {
        let magic = if suffix == INDEX_SUFFIX {
            OFFSET_INDEX_MAGIC
        } else {
            TIME_INDEX_MAGIC
        };
        if bytes.len() < INDEX_HEADER_LEN {
            return Err("index file shorter than its header".to_owned());
        }
        if bytes[..4] != magic {
            return Err("index file has a wrong magic number".to_owned());
        }
        let version = u32_at(bytes, 4);
        if version != INDEX_VERSION {
            return Err(format!("index format version {version} is unknown"));
        }
        Ok(IndexHeader {
            count: u32_at(bytes, 8),
            crc: u32_at(bytes, 12),
        })
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn i64_at(bytes: &[u8], at: usize) -> i64 {
    let mut array = [0; 8];
    array.copy_from_slice(&bytes[at..at + 8]);
    i64::from_le_bytes(array)
}

pub(crate) fn decode_offset_entry(bytes: &[u8]) -> OffsetEntry {
    OffsetEntry {
        relative_offset: u32_at(bytes, 0),
        position: u32_at(bytes, 4),
    }
}

pub(crate) fn decode_time_entry(bytes: &[u8]) -> TimeEntry {
    TimeEntry {
        timestamp_ms: i64_at(bytes, 0),
        relative_offset: u32_at(bytes, 8),
    }
}

/// Decodes and checks offset entries against the segment's end and length.
fn decode_offset_entries(
    bytes: &[u8],
    relative_end: u64,
    segment_len: u64,
) -> std::result::Result<Vec<OffsetEntry>, String> {
    let mut entries: Vec<OffsetEntry> = Vec::with_capacity(bytes.len() / OFFSET_ENTRY_LEN);
    for chunk in bytes.chunks_exact(OFFSET_ENTRY_LEN) {
        let entry = decode_offset_entry(chunk);
        let increasing = entries.last().is_none_or(|last| {
            entry.relative_offset > last.relative_offset && entry.position > last.position
        });
        if !increasing
            || u64::from(entry.relative_offset) >= relative_end
            || u64::from(entry.position) >= segment_len
        {
            return Err(format!(
                "offset index entry {} out of order or range",
                entries.len()
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

fn decode_time_entries(
    bytes: &[u8],
    relative_end: u64,
) -> std::result::Result<Vec<TimeEntry>, String> {
    let mut entries: Vec<TimeEntry> = Vec::with_capacity(bytes.len() / TIME_ENTRY_LEN);
    for chunk in bytes.chunks_exact(TIME_ENTRY_LEN) {
        let entry = decode_time_entry(chunk);
        let increasing = entries.last().is_none_or(|last| {
            entry.timestamp_ms > last.timestamp_ms && entry.relative_offset >= last.relative_offset
        });
        if !increasing || u64::from(entry.relative_offset) > relative_end {
            return Err(format!(
                "time index entry {} out of order or range",
                entries.len()
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

/// Encodes an index file: header then entries.
pub(crate) fn encode_offset_index(entries: &[OffsetEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * OFFSET_ENTRY_LEN);
    for entry in entries {
        body.extend_from_slice(&entry.relative_offset.to_le_bytes());
        body.extend_from_slice(&entry.position.to_le_bytes());
    }
    with_header(OFFSET_INDEX_MAGIC, entries.len(), body)
}

pub(crate) fn encode_time_index(entries: &[TimeEntry]) -> Vec<u8> {
    let mut body = Vec::with_capacity(entries.len() * TIME_ENTRY_LEN);
    for entry in entries {
        body.extend_from_slice(&entry.timestamp_ms.to_le_bytes());
        body.extend_from_slice(&entry.relative_offset.to_le_bytes());
    }
    with_header(TIME_INDEX_MAGIC, entries.len(), body)
}

fn with_header(magic: [u8; 4], count: usize, body: Vec<u8>) -> Vec<u8> {
    let count = u32::try_from(count)
        .expect("a segment holds fewer than 2^32 index entries: positions are u32");
    let mut bytes = Vec::with_capacity(INDEX_HEADER_LEN + body.len());
    bytes.extend_from_slice(&magic);
    bytes.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    bytes
}

/// Writes both index files of a closed segment and makes them durable.
pub(crate) fn write_index_files(
    directory: &dyn Directory,
    base_offset: u64,
    index: &SegmentIndex,
) -> std::result::Result<(), IndexWriteError> {
    for (suffix, bytes) in [
        (INDEX_SUFFIX, encode_offset_index(&index.offsets)),
        (TIME_INDEX_SUFFIX, encode_time_index(&index.times)),
    ] {
        let file = directory
            .create(&file_name(base_offset, suffix))
            .map_err(IndexWriteError::Write)?;
        file.write_at(0, &bytes).map_err(IndexWriteError::Write)?;
        file.sync_data().map_err(IndexWriteError::Sync)?;
    }
    Ok(())
}

/// Whether a failed index write can be undone (a write) or must poison (a failed sync).
#[derive(Debug)]
pub(crate) enum IndexWriteError {
    Write(Error),
    Sync(Error),
}

/// Why a scan stopped early: an I/O failure, or bytes that are not the next valid batch.
#[derive(Debug)]
pub(crate) enum ScanError {
    Io(Error),
    /// The bytes at `position` are not a valid batch (torn, corrupt or cut short).
    Damaged {
        position: u64,
        reason: String,
    },
}

impl ScanError {
    pub fn into_error(self, path: &Path) -> Error {
        match self {
            ScanError::Io(error) => error,
            ScanError::Damaged { position, reason } => Error::Corrupt {
                path: path.to_path_buf(),
                position,
                reason,
            },
        }
    }
}

/// Walks the batches of a file from a position up to a limit, reading in chunks and handing
/// out batches as zero-copy slices of the chunk they were read in. Every batch is fully
/// validated ([`Batch::parse`]); a scan never reads past `limit` and never allocates more than
/// `limit - position` bytes, whatever a length field on disk says.
pub(crate) struct Scanner<'a> {
    file: &'a dyn File,
    position: u64,
    limit: u64,
    read_size: usize,
    buffer: Bytes,
    buffer_start: u64,
}

/// The size of the first read of a scan when the caller has no better guess.
pub(crate) const DEFAULT_READ_SIZE: usize = 256 << 10;

impl<'a> Scanner<'a> {
    pub fn new(file: &'a dyn File, position: u64, limit: u64, read_size: usize) -> Scanner<'a> {
        Scanner {
            file,
            position,
            limit,
            read_size: read_size.max(HEADER_LEN),
            buffer: Bytes::new(),
            buffer_start: position,
        }
    }

    /// Position of the next batch (after the last one returned).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads `needed` bytes or more from the current position into a fresh buffer (batches
    /// already handed out keep the old one alive).
    fn refill(&mut self, needed: usize) -> std::result::Result<(), ScanError> {
        let remaining = self.limit - self.position;
        let wanted = (self.read_size.max(needed) as u64).min(remaining);
        let wanted = usize::try_from(wanted).expect("bounded by read_size or needed, both usize");
        let mut buffer = BytesMut::zeroed(wanted);
        let read = self
            .file
            .read_at(self.position, &mut buffer)
            .map_err(ScanError::Io)?;
        buffer.truncate(read);
        self.buffer = buffer.freeze();
        self.buffer_start = self.position;
        Ok(())
    }

    pub fn next_batch(&mut self) -> std::result::Result<Option<(u64, Batch)>, ScanError> {
        if self.position >= self.limit {
            return Ok(None);
        }
        let position = self.position;
        // The bytes the last refill was sized for. A refill reads at least that much (unless the
        // file ends first), so a second one is needed only when the first was sized for the
        // header alone and the batch turned out larger than `read_size`.
        let mut refilled_for = 0;
        loop {
            let start = usize::try_from(position - self.buffer_start).unwrap_or(usize::MAX);
            let available = self.buffer.get(start..).unwrap_or(&[]);
            match check_len(available, usize::MAX) {
                Ok(total) => {
                    let batch = Batch::parse(self.buffer.slice(start..start + total), usize::MAX)
                        .map_err(|error| ScanError::Damaged {
                        position,
                        reason: error.to_string(),
                    })?;
                    self.position += total as u64;
                    return Ok(Some((position, batch)));
                }
                Err(BatchError::Incomplete { needed, available }) => {
                    if refilled_for >= needed {
                        let end = position + available as u64;
                        return Err(ScanError::Damaged {
                            position,
                            reason: format!(
                                "batch needs {needed} bytes but only {available} remain before byte {end}"
                            ),
                        });
                    }
                    self.refill(needed)?;
                    refilled_for = needed;
                }
                Err(error) => {
                    return Err(ScanError::Damaged {
                        position,
                        reason: error.to_string(),
                    });
                }
            }
        }
    }
}

/// Which index interval a rebuild uses. Rebuilt indexes only need to be *valid* sparse
/// indexes, not identical to the writer's, so lazy rebuilds use a fixed interval.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IndexInterval {
    Bytes(u64),
    /// The default interval, for rebuilds by a reader that does not know the writer's config.
    Stored,
}

impl IndexInterval {
    fn bytes(self) -> u64 {
        match self {
            IndexInterval::Bytes(bytes) => bytes,
            IndexInterval::Stored => 4096,
        }
    }
}

/// What a full scan of a segment found.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Bytes of valid, contiguous batches from the start of the segment.
    pub valid_len: u64,
    /// Offset after the last valid batch (the base offset if none).
    pub next_offset: u64,
    pub index: SegmentIndex,
    pub cursor: IndexCursor,
    pub batches: u64,
    pub first_max_timestamp_ms: Option<i64>,
    /// Where and why the scan stopped before `limit`.
    pub damage: Option<(u64, String)>,
}

/// Validates every batch of a segment from its start up to `limit`, checking CRCs and offset
/// continuity from `base_offset`, and builds its index. Damage is reported, not returned as an
/// error; only I/O failures are errors.
pub(crate) fn scan_segment(
    file: &dyn File,
    base_offset: u64,
    limit: u64,
    interval: IndexInterval,
) -> Result<ScanOutcome> {
    scan_segment_until(file, base_offset, limit, interval, u64::MAX)
}

/// [`scan_segment`] that stops before the first batch whose base offset is `stop_offset` or
/// more (the scan `truncate_from` uses to rebuild the state of the segment it cuts).
pub(crate) fn scan_segment_until(
    file: &dyn File,
    base_offset: u64,
    limit: u64,
    interval: IndexInterval,
    stop_offset: u64,
) -> Result<ScanOutcome> {
    let mut outcome = ScanOutcome {
        valid_len: 0,
        next_offset: base_offset,
        index: SegmentIndex::default(),
        cursor: IndexCursor::new(),
        batches: 0,
        first_max_timestamp_ms: None,
        damage: None,
    };
    let mut scanner = Scanner::new(file, 0, limit, 4 << 20);
    loop {
        match scanner.next_batch() {
            Ok(None) => break,
            Ok(Some((position, batch))) => {
                if batch.base_offset() >= stop_offset {
                    break;
                }
                if batch.base_offset() != outcome.next_offset {
                    outcome.damage = Some((
                        position,
                        format!(
                            "batch has base offset {} where {} was expected",
                            batch.base_offset(),
                            outcome.next_offset
                        ),
                    ));
                    break;
                }
                let relative = batch.base_offset() - base_offset;
                let (Ok(relative), Ok(position_u32)) =
                    (u32::try_from(relative), u32::try_from(position))
                else {
                    outcome.damage = Some((
                        position,
                        "segment exceeds the 4 GiB / 2^32 offset limit".to_owned(),
                    ));
                    break;
                };
                let (offset_entry, time_entry) = outcome.cursor.place(
                    interval.bytes(),
                    relative,
                    position_u32,
                    batch.len() as u64,
                    batch.max_timestamp_ms(),
                );
                outcome.index.offsets.extend(offset_entry);
                outcome.index.times.extend(time_entry);
                outcome
                    .first_max_timestamp_ms
                    .get_or_insert(batch.max_timestamp_ms());
                outcome.next_offset = batch.next_offset();
                outcome.valid_len = scanner.position();
                outcome.batches += 1;
            }
            Err(ScanError::Io(error)) => return Err(error),
            Err(ScanError::Damaged { position, reason }) => {
                outcome.damage = Some((position, reason));
                break;
            }
        }
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in memory, for scans.
    #[derive(Debug)]
    struct MemoryFile(Vec<u8>);

    impl File for MemoryFile {
        fn read_at(&self, position: u64, buf: &mut [u8]) -> crate::Result<usize> {
            let start = usize::try_from(position).unwrap().min(self.0.len());
            let read = buf.len().min(self.0.len() - start);
            buf[..read].copy_from_slice(&self.0[start..start + read]);
            Ok(read)
        }
        fn write_at(&self, _: u64, _: &[u8]) -> crate::Result<()> {
            unimplemented!("read only")
        }
        fn sync_data(&self) -> crate::Result<()> {
            Ok(())
        }
        fn len(&self) -> crate::Result<u64> {
            Ok(self.0.len() as u64)
        }
        fn truncate(&self, _: u64) -> crate::Result<()> {
            unimplemented!("read only")
        }
    }

    /// Goal: a healthy batch larger than the scan's read size is read whole even when a
    /// chunk ends inside its length field (a false "damaged" here made reads fail and would
    /// make recovery cut valid data). Method: a small batch then a 50 KB one, scanned with a
    /// read size that ends the first chunk 5 bytes into the big batch's header.
    #[test]
    fn a_batch_larger_than_the_read_size_is_read_whatever_the_chunk_boundary() {
        let mut builder = weir_batch::BatchBuilder::new();
        builder.push(1, None, &[], b"small");
        let small = builder.finish();
        let mut builder = weir_batch::BatchBuilder::new();
        builder.push(2, None, &[], &vec![b'x'; 50_000]);
        let large = Batch::parse(builder.finish(), usize::MAX)
            .unwrap()
            .with_base_offset(1);
        let mut bytes = small.to_vec();
        bytes.extend_from_slice(large.as_bytes());
        let file = MemoryFile(bytes);
        let limit = file.0.len() as u64;
        for read_size in [
            small.len() + 5,
            small.len() + 12,
            small.len() + HEADER_LEN,
            1000,
        ] {
            let mut scanner = Scanner::new(&file, 0, limit, read_size);
            let first = scanner.next_batch().unwrap().unwrap();
            assert_eq!((first.0, first.1.record_count()), (0, 1));
            let (position, batch) = scanner
                .next_batch()
                .unwrap_or_else(|error| panic!("read size {read_size}: {error:?}"))
                .unwrap();
            assert_eq!(position, small.len() as u64);
            assert_eq!(batch, large);
            assert!(scanner.next_batch().unwrap().is_none());
        }
        // A batch that really is cut short is still reported as damaged.
        let cut = MemoryFile(file.0[..file.0.len() - 1].to_vec());
        let mut scanner = Scanner::new(&cut, 0, limit - 1, small.len() + 5);
        scanner.next_batch().unwrap();
        assert!(matches!(
            scanner.next_batch(),
            Err(ScanError::Damaged { .. })
        ));
    }

    #[test]
    fn file_names_round_trip_and_others_are_ignored() {
        assert_eq!(file_name(42, LOG_SUFFIX), "00000000000000000042.log");
        assert_eq!(
            parse_file_name("00000000000000000042.log"),
            Some((42, LOG_SUFFIX))
        );
        assert_eq!(
            parse_file_name("00000000000000000042.timeindex"),
            Some((42, TIME_INDEX_SUFFIX))
        );
        assert_eq!(
            parse_file_name("00000000000000000042.log.quarantined"),
            None
        );
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(
            parse_file_name("99999999999999999999.log"),
            None,
            "overflows u64"
        );
    }

    #[test]
    fn index_lookups_take_the_floor_entry() {
        let index = SegmentIndex {
            offsets: vec![
                OffsetEntry {
                    relative_offset: 10,
                    position: 100,
                },
                OffsetEntry {
                    relative_offset: 20,
                    position: 200,
                },
            ],
            times: vec![
                TimeEntry {
                    timestamp_ms: 5,
                    relative_offset: 10,
                },
                TimeEntry {
                    timestamp_ms: 9,
                    relative_offset: 20,
                },
            ],
        };
        assert_eq!(index.position_for(0), 0);
        assert_eq!(index.position_for(10), 100);
        assert_eq!(index.position_for(19), 100);
        assert_eq!(index.position_for(25), 200);
        assert_eq!(index.scan_start_for_time(5), 0);
        assert_eq!(index.scan_start_for_time(6), 10);
        assert_eq!(index.scan_start_for_time(100), 20);
    }

    #[test]
    fn index_files_round_trip_and_detect_damage() {
        let offsets = vec![OffsetEntry {
            relative_offset: 3,
            position: 4096,
        }];
        let mut bytes = encode_offset_index(&offsets);
        let header = IndexHeader::decode(&bytes, INDEX_SUFFIX).unwrap();
        assert_eq!(header.count, 1);
        assert_eq!(crc32c::crc32c(&bytes[INDEX_HEADER_LEN..]), header.crc);
        assert_eq!(
            decode_offset_entries(&bytes[INDEX_HEADER_LEN..], 10, 8192).unwrap(),
            offsets
        );
        assert!(decode_offset_entries(&bytes[INDEX_HEADER_LEN..], 10, 100).is_err());
        bytes[0] ^= 1;
        assert!(IndexHeader::decode(&bytes, INDEX_SUFFIX).is_err());
    }

    #[test]
    fn the_index_cursor_adds_entries_every_interval() {
        let mut cursor = IndexCursor::new();
        assert_eq!(cursor.place(100, 0, 0, 60, 5), (None, None));
        assert_eq!(cursor.place(100, 1, 60, 60, 7), (None, None));
        let (offset, time) = cursor.place(100, 2, 120, 60, 6);
        assert_eq!(
            offset,
            Some(OffsetEntry {
                relative_offset: 2,
                position: 120
            })
        );
        assert_eq!(
            time,
            Some(TimeEntry {
                timestamp_ms: 7,
                relative_offset: 2
            })
        );
    }
}
