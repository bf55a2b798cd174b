//! Recovery on open: find the segments, validate what can be damaged, cut a torn or corrupt
//! tail, rebuild missing or damaged indexes. It never reads a whole closed segment unless that
//! segment fails its cheap check, so open time grows with the number of segments (a few small
//! reads each), not with the bytes in the log.
//!
//! Why checking closed segments cheaply is enough: the writer closes a segment only after its
//! data and index files are durable, and creates the next segment only after that (see
//! `PartitionLog::flush`). So a crash can tear only the last segment, plus, if the last one
//! is new and still empty, we scan the one before it in full as well. The cheap check still
//! catches the damage a crash cannot cause but a disk can: missing or truncated index files,
//! a missing closing entry, and a bad tail region.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::segment::{
    self, INDEX_HEADER_LEN, INDEX_SUFFIX, IndexHeader, IndexInterval, LOG_SUFFIX, OFFSET_ENTRY_LEN,
    QUARANTINE_SUFFIX, ScanError, ScanOutcome, Scanner, Segment, SegmentIndex, TIME_ENTRY_LEN,
    TIME_INDEX_SUFFIX, TimeEntry, file_name,
};
use super::{LogConfig, RecoveryReport, WriterState};
use crate::io::{Directory, File};
use crate::{Error, Result};

/// The state recovery hands to the log.
pub(crate) struct Recovered {
    /// Ordered by base offset, contiguous; the last one is the active segment.
    pub segments: Vec<Arc<Segment>>,
    pub writer: WriterState,
    pub report: RecoveryReport,
    pub closed_bytes: u64,
}

/// What the cheap check learned about a closed segment.
struct ClosedInfo {
    len: u64,
    max_timestamp_ms: i64,
    /// Present when recovery rebuilt the index (then it is already in memory).
    index: Option<SegmentIndex>,
}

pub(crate) fn recover(directory: &dyn Directory, config: &LogConfig) -> Result<Recovered> {
    let mut report = RecoveryReport::default();
    let mut names_changed = false;
    let interval = IndexInterval::Bytes(u64::from(config.index_interval_bytes));

    let mut bases = BTreeSet::new();
    let mut index_files = Vec::new();
    for name in directory.list()? {
        match segment::parse_file_name(&name) {
            Some((base, LOG_SUFFIX)) => {
                bases.insert(base);
            }
            Some((base, _)) => index_files.push((base, name)),
            None => {}
        }
    }
    for (base, name) in &index_files {
        if !bases.contains(base) {
            // Left by a retention pass or a quarantine that crashed half-way.
            tracing::warn!(file = %directory.path(name).display(), "removing an index file without a segment");
            remove_if_exists(directory, name)?;
            names_changed = true;
        }
    }
    if bases.is_empty() {
        directory.create(&file_name(0, LOG_SUFFIX))?;
        directory.sync()?;
        bases.insert(0);
    }
    let bases: Vec<u64> = bases.into_iter().collect();
    // One segment file open at a time (plus the tail's, kept for the writer): a log of
    // thousands of segments must not need thousands of descriptors to open.
    let mut open_file: Option<(usize, Arc<dyn File>)> = None;
    let mut file = |position: usize| -> Result<Arc<dyn File>> {
        if let Some((open_position, file)) = &open_file
            && *open_position == position
        {
            return Ok(Arc::clone(file));
        }
        let file = directory.open(&file_name(bases[position], LOG_SUFFIX))?;
        open_file = Some((position, Arc::clone(&file)));
        Ok(file)
    };
    let last = bases.len() - 1;
    let last_is_empty = file(last)?.len()? == 0;

    let mut closed: Vec<ClosedInfo> = Vec::new();
    let mut tail: Option<(usize, ScanOutcome)> = None;
    let mut position = 0;
    while position < bases.len() {
        let base = bases[position];
        let path = directory.path(&file_name(base, LOG_SUFFIX));
        let segment_file = file(position)?;
        if position == last {
            let len = segment_file.len()?;
            tail = Some((
                position,
                segment::scan_segment(segment_file.as_ref(), base, len, interval)?,
            ));
            break;
        }
        let next_base = bases[position + 1];
        let full_scan = position + 1 == last && last_is_empty;
        let check = if full_scan {
            Err("the segment after it is new and empty, so it is scanned in full".to_owned())
        } else {
            check_closed(directory, segment_file.as_ref(), base, next_base)?
        };
        match check {
            Ok(info) => closed.push(info),
            Err(reason) => {
                if !full_scan {
                    tracing::warn!(segment = %path.display(), %reason, "closed segment failed its check; scanning it");
                }
                let len = segment_file.len()?;
                let scan = segment::scan_segment(segment_file.as_ref(), base, len, interval)?;
                let clean =
                    scan.damage.is_none() && scan.batches > 0 && scan.next_offset == next_base;
                if !clean {
                    tail = Some((position, scan));
                    break;
                }
                let relative_end = next_base - base;
                let index = closed_index(
                    scan.index,
                    scan.cursor.running_max_timestamp_ms,
                    relative_end,
                );
                let index_intact = full_scan
                    && check_closed(directory, segment_file.as_ref(), base, next_base)?.is_ok();
                if !index_intact {
                    segment::write_index_files(directory, base, &index).map_err(
                        |error| match error {
                            segment::IndexWriteError::Write(error)
                            | segment::IndexWriteError::Sync(error) => error,
                        },
                    )?;
                    report.indexes_rebuilt += 1;
                    names_changed = true;
                    tracing::warn!(segment = %path.display(), "rebuilt the segment's index files");
                }
                closed.push(ClosedInfo {
                    len: scan.valid_len,
                    max_timestamp_ms: scan.cursor.running_max_timestamp_ms,
                    index: Some(index),
                });
            }
        }
        position += 1;
    }
    let (tail_position, scan) = tail.expect("the loop stops at the last segment at the latest");
    let tail_base = bases[tail_position];
    let tail_path = directory.path(&file_name(tail_base, LOG_SUFFIX));

    // Segments after a damaged closed segment cannot continue its offsets: keep them aside for
    // an operator rather than delete data that might be wanted.
    let mut cut_bytes = 0;
    for (later, later_base) in bases.iter().enumerate().skip(tail_position + 1) {
        let name = file_name(*later_base, LOG_SUFFIX);
        let len = file(later)?.len()?;
        cut_bytes += len;
        if len == 0 {
            directory.remove(&name)?;
        } else {
            let quarantined = format!("{name}{QUARANTINE_SUFFIX}");
            tracing::warn!(segment = %directory.path(&name).display(), bytes = len, "quarantining a segment that follows damaged data");
            directory.rename(&name, &quarantined)?;
        }
        remove_if_exists(directory, &file_name(*later_base, INDEX_SUFFIX))?;
        remove_if_exists(directory, &file_name(*later_base, TIME_INDEX_SUFFIX))?;
        names_changed = true;
    }

    let tail_file = file(tail_position)?;
    let file_len = tail_file.len()?;
    if scan.valid_len < file_len {
        let (damage_position, reason) = scan
            .damage
            .clone()
            .unwrap_or_else(|| (scan.valid_len, "unexplained bytes".to_owned()));
        tracing::warn!(
            segment = %tail_path.display(),
            from_offset = scan.next_offset,
            position = damage_position,
            bytes = file_len - scan.valid_len,
            %reason,
            "cutting a torn or corrupt tail"
        );
        tail_file.truncate(scan.valid_len)?;
        cut_bytes += file_len - scan.valid_len;
    }
    // What recovery serves must be durable: a previous run may have flushed without syncing,
    // and a sync after this open, finding nothing of its own to write, would otherwise confirm
    // bytes that only the page cache holds. This also makes a cut durable.
    tail_file.sync_data()?;
    if cut_bytes > 0 || tail_position < last {
        report.truncated_bytes = cut_bytes;
        report.truncated_from_offset = Some(scan.next_offset);
    }
    // The active segment keeps its index in memory only; files left from an earlier close of
    // this segment (before a cut) would be stale.
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
        names_changed |= remove_if_exists(directory, &file_name(tail_base, suffix))?;
    }
    if names_changed {
        directory.sync()?;
    }

    let mut segments = Vec::with_capacity(tail_position + 1);
    let mut closed_bytes = 0;
    for (position, info) in closed.into_iter().enumerate() {
        closed_bytes += info.len;
        // Closed segments open their file when first read (see `Shared::segment_file`).
        segments.push(Arc::new(Segment::new(
            bases[position],
            directory,
            None,
            info.len,
            info.max_timestamp_ms,
            info.index,
        )));
    }
    segments.push(Arc::new(Segment::new(
        tail_base,
        directory,
        Some(tail_file),
        scan.valid_len,
        scan.cursor.running_max_timestamp_ms,
        Some(scan.index),
    )));
    report.segments = segments.len();
    Ok(Recovered {
        segments,
        writer: WriterState {
            segment_base: tail_base,
            segment_len: scan.valid_len,
            cursor: scan.cursor,
            opened_ms: scan.first_max_timestamp_ms,
            next_offset: scan.next_offset,
        },
        report,
        closed_bytes,
    })
}

/// Adds the closing time entry: every batch of the segment has a max timestamp `<= max`.
pub(crate) fn closed_index(
    mut index: SegmentIndex,
    max_timestamp_ms: i64,
    relative_end: u64,
) -> SegmentIndex {
    let relative_offset = u32::try_from(relative_end)
        .expect("a segment spans fewer than 2^32 offsets: the writer rolls before");
    let entry = TimeEntry {
        timestamp_ms: max_timestamp_ms,
        relative_offset,
    };
    // Keep timestamps strictly increasing: an entry with the same maximum is replaced by the
    // closing one, which promises the same for a longer prefix.
    match index.times.last_mut() {
        Some(last) if last.timestamp_ms >= max_timestamp_ms => *last = entry,
        _ => index.times.push(entry),
    }
    index
}

/// The cheap check of a closed segment: both index files present with consistent lengths, the
/// last offset entry inside the file, a closing time entry at the next segment's base, and the
/// batches after the last offset entry valid (CRC) and ending exactly at the file's end and at
/// the next segment's base offset. `Ok(Err(reason))` means "scan this segment".
fn check_closed(
    directory: &dyn Directory,
    file: &dyn File,
    base: u64,
    next_base: u64,
) -> Result<std::result::Result<ClosedInfo, String>> {
    let log_len = file.len()?;
    if log_len == 0 {
        return Ok(Err("a closed segment is empty".to_owned()));
    }
    let relative_end = next_base - base;
    if relative_end > u64::from(u32::MAX) || log_len > u64::from(u32::MAX) {
        return Ok(Err("the segment exceeds the u32 index limits".to_owned()));
    }
    let last_offset_entry = match last_entry(directory, base, INDEX_SUFFIX, OFFSET_ENTRY_LEN)? {
        Ok(entry) => entry.map(|bytes| segment::decode_offset_entry(&bytes)),
        Err(reason) => return Ok(Err(reason)),
    };
    let closing = match last_entry(directory, base, TIME_INDEX_SUFFIX, TIME_ENTRY_LEN)? {
        Ok(Some(bytes)) => segment::decode_time_entry(&bytes),
        Ok(None) => return Ok(Err("the time index has no closing entry".to_owned())),
        Err(reason) => return Ok(Err(reason)),
    };
    if u64::from(closing.relative_offset) != relative_end {
        return Ok(Err(
            "the time index's closing entry does not match the next segment".to_owned(),
        ));
    }
    let (start_position, start_relative) = match last_offset_entry {
        Some(entry) => {
            if u64::from(entry.position) >= log_len
                || u64::from(entry.relative_offset) >= relative_end
            {
                return Ok(Err(
                    "the last offset index entry points past the segment".to_owned()
                ));
            }
            (u64::from(entry.position), u64::from(entry.relative_offset))
        }
        None => (0, 0),
    };
    let mut scanner = Scanner::new(file, start_position, log_len, segment::DEFAULT_READ_SIZE);
    let mut expected = base + start_relative;
    loop {
        match scanner.next_batch() {
            Ok(None) => break,
            Ok(Some((position, batch))) => {
                if batch.base_offset() != expected {
                    return Ok(Err(format!(
                        "batch at byte {position} has offset {} where {expected} was expected",
                        batch.base_offset()
                    )));
                }
                if batch.max_timestamp_ms() > closing.timestamp_ms {
                    return Ok(Err(
                        "a batch is newer than the closing time entry".to_owned()
                    ));
                }
                expected = batch.next_offset();
            }
            Err(ScanError::Io(error)) => return Err(error),
            Err(ScanError::Damaged { position, reason }) => {
                return Ok(Err(format!("damaged batch at byte {position}: {reason}")));
            }
        }
    }
    if expected != next_base {
        return Ok(Err(format!(
            "the segment ends at offset {expected}, the next starts at {next_base}"
        )));
    }
    Ok(Ok(ClosedInfo {
        len: log_len,
        max_timestamp_ms: closing.timestamp_ms,
        index: None,
    }))
}

/// Reads an index file's header and its last entry (`None` when it has no entries).
fn last_entry(
    directory: &dyn Directory,
    base: u64,
    suffix: &str,
    entry_len: usize,
) -> Result<std::result::Result<Option<Vec<u8>>, String>> {
    let name = file_name(base, suffix);
    let file = match directory.open(&name) {
        Ok(file) => file,
        Err(error) => return Ok(Err(format!("{name} cannot be opened: {error}"))),
    };
    let len = file.len()?;
    let mut header = [0; INDEX_HEADER_LEN];
    let read = file.read_at(0, &mut header)?;
    let header = match IndexHeader::decode(&header[..read], suffix) {
        Ok(header) => header,
        Err(reason) => return Ok(Err(format!("{name}: {reason}"))),
    };
    let expected_len = INDEX_HEADER_LEN as u64 + u64::from(header.count) * entry_len as u64;
    if len != expected_len {
        return Ok(Err(format!(
            "{name} is {len} bytes, its header says {expected_len}"
        )));
    }
    if header.count == 0 {
        return Ok(Ok(None));
    }
    let mut entry = vec![0; entry_len];
    let read = file.read_at(len - entry_len as u64, &mut entry)?;
    if read != entry_len {
        return Ok(Err(format!("{name} ends early")));
    }
    Ok(Ok(Some(entry)))
}

/// Removes `name` if it exists; true if it did.
pub(crate) fn remove_if_exists(directory: &dyn Directory, name: &str) -> Result<bool> {
    match directory.remove(name) {
        Ok(()) => Ok(true),
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}
