//! The small durable files a partition's Raft group keeps beside its log (see
//! `docs/storage-format.md`, "Raft support"):
//!
//! - [`VoteFile`] (`raft-vote`): one opaque value, the serialized vote, replaced atomically
//!   (write a temporary file, fdatasync, rename over the old one, fsync the directory).
//! - [`TermsFile`] (`raft-terms`): the append-only list of [`TermStart`]s, one per term that
//!   wrote entries: the log id of entry *i* is *i* plus the term of the last start at or before
//!   *i*. Terms change only at elections, so the batch format carries no term.
//!
//! Both go through the [`Directory`] seam, so the simulated directory's crashes and faults reach
//! them. Neither knows about openraft: the values are plain bytes and integers.

use std::sync::Arc;

use crate::io::{Directory, File};
use crate::{Error, Result};

/// File name of the vote.
pub const VOTE_FILE: &str = "raft-vote";
/// Where a new vote is written before it is renamed over [`VOTE_FILE`].
pub const VOTE_TEMPORARY_FILE: &str = "raft-vote.tmp";
/// File name of the term starts.
pub const TERMS_FILE: &str = "raft-terms";

const VOTE_MAGIC: [u8; 4] = *b"WXRV";
const TERMS_MAGIC: [u8; 4] = *b"WXRT";
const FORMAT_VERSION: u32 = 1;
/// magic (4) + version (4) + value length (4) + CRC-32C of the value (4).
const VOTE_HEADER_LEN: usize = 16;
/// magic (4) + version (4).
pub const TERMS_HEADER_LEN: usize = 8;
/// term, leader, first index, first offset (8 each) + CRC-32C of those 32 bytes (4).
pub const TERM_ENTRY_LEN: usize = 36;
/// Largest vote value accepted: a vote is a few dozen bytes; this bounds what a damaged length
/// field can make `load` allocate.
pub const VOTE_MAX_BYTES: usize = 64 << 10;

/// The vote of one Raft group, saved atomically.
#[derive(Debug, Clone)]
pub struct VoteFile {
    directory: Arc<dyn Directory>,
}

impl VoteFile {
    pub fn new(directory: Arc<dyn Directory>) -> VoteFile {
        VoteFile { directory }
    }

    /// The last saved value, or `None` if none was ever saved. A temporary file left by a
    /// save that crashed is never read (it is replaced by the next save).
    pub fn load(&self) -> Result<Option<Vec<u8>>> {
        let file = match self.directory.open(VOTE_FILE) {
            Ok(file) => file,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        let bytes = read_all(file.as_ref(), VOTE_HEADER_LEN + VOTE_MAX_BYTES)?;
        decode_vote(&bytes)
            .map(Some)
            .map_err(|(position, reason)| Error::Corrupt {
                path: self.directory.path(VOTE_FILE),
                position,
                reason,
            })
    }

    /// Replaces the saved value; durable when it returns. Each step is durable before the next
    /// (temporary file written and fdatasynced, renamed over the old file, directory fsynced), so
    /// a crash leaves the old value or the new one, never a mix. After an error the value on
    /// disk may be either (`load` tells), so the caller must not act on the new vote.
    pub fn save(&self, value: &[u8]) -> Result<()> {
        if value.len() > VOTE_MAX_BYTES {
            return Err(Error::VoteTooLarge {
                length: value.len(),
                limit: VOTE_MAX_BYTES,
            });
        }
        let file = self.directory.create(VOTE_TEMPORARY_FILE)?;
        file.write_at(0, &encode_vote(value))?;
        file.sync_data()?;
        self.directory.rename(VOTE_TEMPORARY_FILE, VOTE_FILE)?;
        self.directory.sync()
    }
}

fn encode_vote(value: &[u8]) -> Vec<u8> {
    let len = u32::try_from(value.len()).expect("bounded by VOTE_MAX_BYTES");
    let mut bytes = Vec::with_capacity(VOTE_HEADER_LEN + value.len());
    bytes.extend_from_slice(&VOTE_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&crc32c::crc32c(value).to_le_bytes());
    bytes.extend_from_slice(value);
    bytes
}

/// Decodes a whole vote file; the error is `(byte position, reason)`. The file is only ever
/// renamed into place after it was fdatasynced, so any damage here is real damage.
pub fn decode_vote(bytes: &[u8]) -> std::result::Result<Vec<u8>, (u64, String)> {
    if bytes.len() < VOTE_HEADER_LEN {
        return Err((0, "vote file shorter than its header".to_owned()));
    }
    if bytes[..4] != VOTE_MAGIC {
        return Err((0, "vote file has a wrong magic number".to_owned()));
    }
    let version = u32_at(bytes, 4);
    if version != FORMAT_VERSION {
        return Err((4, format!("vote format version {version} is unknown")));
    }
    let len = u32_at(bytes, 8) as usize;
    let value = &bytes[VOTE_HEADER_LEN..];
    if value.len() != len {
        return Err((
            8,
            format!("vote value is {} bytes, its header says {len}", value.len()),
        ));
    }
    let crc = crc32c::crc32c(value);
    if crc != u32_at(bytes, 12) {
        return Err((12, "vote value fails its CRC".to_owned()));
    }
    Ok(value.to_vec())
}

/// Where a term starts in the log: the leader of `term` (node id `leader`) wrote its first
/// entry at Raft index `first_index`, stored at log offset `first_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TermStart {
    pub term: u64,
    pub leader: u64,
    pub first_index: u64,
    pub first_offset: u64,
}

impl TermStart {
    fn encode(&self) -> [u8; TERM_ENTRY_LEN] {
        let mut bytes = [0; TERM_ENTRY_LEN];
        for (at, value) in [self.term, self.leader, self.first_index, self.first_offset]
            .into_iter()
            .enumerate()
        {
            bytes[at * 8..at * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        let crc = crc32c::crc32c(&bytes[..32]);
        bytes[32..].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Whether `self` may follow `previous`: terms, indexes and offsets all increase.
    fn follows(&self, previous: &TermStart) -> bool {
        self.term > previous.term
            && self.first_index > previous.first_index
            && self.first_offset > previous.first_offset
    }
}

/// What [`decode_terms`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedTerms {
    pub entries: Vec<TermStart>,
    /// Bytes of the file holding the header and `entries`; anything after is a torn last entry
    /// (or a torn header, when this is 0), to be cut.
    pub valid_len: u64,
}

/// Decodes a terms file. A file shorter than the header whose bytes are a prefix of it (a
/// crash while creating it), and a last entry that is incomplete or fails its CRC (a crash
/// while appending), are torn: left out and reported through `valid_len`. Damage anywhere
/// else (a bad header, a bad entry followed by more bytes, entries out of order) is an error
/// `(byte position, reason)`.
pub fn decode_terms(bytes: &[u8]) -> std::result::Result<DecodedTerms, (u64, String)> {
    let mut header = [0; TERMS_HEADER_LEN];
    header[..4].copy_from_slice(&TERMS_MAGIC);
    header[4..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    if bytes.len() < TERMS_HEADER_LEN {
        if header.starts_with(bytes) {
            return Ok(DecodedTerms {
                entries: Vec::new(),
                valid_len: 0,
            });
        }
        return Err((0, "terms file has a damaged header".to_owned()));
    }
    if bytes[..4] != TERMS_MAGIC {
        return Err((0, "terms file has a wrong magic number".to_owned()));
    }
    let version = u32_at(bytes, 4);
    if version != FORMAT_VERSION {
        return Err((4, format!("terms format version {version} is unknown")));
    }
    let body = &bytes[TERMS_HEADER_LEN..];
    let mut entries: Vec<TermStart> = Vec::with_capacity(body.len() / TERM_ENTRY_LEN);
    let mut valid_len = TERMS_HEADER_LEN;
    for chunk in body.chunks(TERM_ENTRY_LEN) {
        let is_last = valid_len + chunk.len() == bytes.len();
        if chunk.len() < TERM_ENTRY_LEN {
            break; // Only the last chunk can be short: a torn append.
        }
        let crc = u32_at(chunk, 32);
        if crc != crc32c::crc32c(&chunk[..32]) {
            if is_last {
                break;
            }
            return Err((valid_len as u64, "terms entry fails its CRC".to_owned()));
        }
        let entry = TermStart {
            term: u64_at(chunk, 0),
            leader: u64_at(chunk, 8),
            first_index: u64_at(chunk, 16),
            first_offset: u64_at(chunk, 24),
        };
        if entries.last().is_some_and(|last| !entry.follows(last)) {
            return Err((
                valid_len as u64,
                "terms entry does not follow the one before it".to_owned(),
            ));
        }
        entries.push(entry);
        valid_len += TERM_ENTRY_LEN;
    }
    Ok(DecodedTerms {
        entries,
        valid_len: valid_len as u64,
    })
}

/// A partition's term starts: loaded whole on open (a few entries per election), appended
/// and cut in place.
///
/// Fail-stop like the log: after a failed write or sync, the file's durable content is unknown,
/// so every later change returns `Error::Poisoned`; reopen to learn what is on disk.
#[derive(Debug)]
pub struct TermsFile {
    directory: Arc<dyn Directory>,
    file: Arc<dyn File>,
    entries: Vec<TermStart>,
    poisoned: bool,
}

impl TermsFile {
    /// Opens the terms file in `directory`, creating it if needed, and cuts a torn last entry.
    /// Creation is durable when this returns.
    pub fn open(directory: Arc<dyn Directory>) -> Result<TermsFile> {
        let (file, entries) = match directory.open(TERMS_FILE) {
            Ok(file) => {
                let bytes = read_all(file.as_ref(), usize::MAX)?;
                let decoded =
                    decode_terms(&bytes).map_err(|(position, reason)| Error::Corrupt {
                        path: directory.path(TERMS_FILE),
                        position,
                        reason,
                    })?;
                if decoded.valid_len < bytes.len() as u64 {
                    tracing::warn!(
                        file = %directory.path(TERMS_FILE).display(),
                        bytes = bytes.len() as u64 - decoded.valid_len,
                        "cutting a torn entry of the Raft terms file"
                    );
                    file.truncate(decoded.valid_len)?;
                    file.sync_data()?;
                }
                if decoded.valid_len == 0 {
                    write_terms_header(file.as_ref())?;
                }
                (file, decoded.entries)
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let file = directory.create(TERMS_FILE)?;
                write_terms_header(file.as_ref())?;
                directory.sync()?;
                (file, Vec::new())
            }
            Err(error) => return Err(error),
        };
        Ok(TermsFile {
            directory,
            file,
            entries,
            poisoned: false,
        })
    }

    /// Every term start, oldest first.
    pub fn entries(&self) -> &[TermStart] {
        &self.entries
    }

    pub fn last(&self) -> Option<&TermStart> {
        self.entries.last()
    }

    /// The term start that covers Raft index `index` (the last one at or before it).
    pub fn start_at(&self, index: u64) -> Option<&TermStart> {
        let after = self
            .entries
            .partition_point(|entry| entry.first_index <= index);
        after.checked_sub(1).map(|position| &self.entries[position])
    }

    /// The term of the entry at Raft index `index`, if a term start covers it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.start_at(index).map(|start| start.term)
    }

    /// Appends a term start; durable when it returns. It must follow the last one (larger
    /// term, index and offset), else `Error::TermOutOfOrder` and nothing changes.
    pub fn append(&mut self, start: TermStart) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        if self.entries.last().is_some_and(|last| !start.follows(last)) {
            return Err(Error::TermOutOfOrder {
                term: start.term,
                first_index: start.first_index,
            });
        }
        let position = self.len_bytes();
        let result = self
            .file
            .write_at(position, &start.encode())
            .and_then(|()| self.file.sync_data());
        if let Err(error) = result {
            return Err(self.poison(error));
        }
        self.entries.push(start);
        Ok(())
    }

    /// Drops every term start whose first index is `index` or more (the terms side of
    /// `PartitionLog::truncate_from`); durable when it returns. A crash leaves the old list or
    /// the cut one.
    pub fn truncate_from_index(&mut self, index: u64) -> Result<()> {
        if self.poisoned {
            return Err(Error::Poisoned);
        }
        let kept = self
            .entries
            .partition_point(|entry| entry.first_index < index);
        if kept == self.entries.len() {
            return Ok(());
        }
        let len = (TERMS_HEADER_LEN + kept * TERM_ENTRY_LEN) as u64;
        let result = self.file.truncate(len).and_then(|()| self.file.sync_data());
        if let Err(error) = result {
            return Err(self.poison(error));
        }
        self.entries.truncate(kept);
        Ok(())
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    fn len_bytes(&self) -> u64 {
        (TERMS_HEADER_LEN + self.entries.len() * TERM_ENTRY_LEN) as u64
    }

    fn poison(&mut self, error: Error) -> Error {
        tracing::error!(
            file = %self.directory.path(TERMS_FILE).display(),
            %error,
            "Raft terms file poisoned: refusing changes until reopened"
        );
        self.poisoned = true;
        error
    }
}

fn write_terms_header(file: &dyn File) -> Result<()> {
    let mut header = [0; TERMS_HEADER_LEN];
    header[..4].copy_from_slice(&TERMS_MAGIC);
    header[4..].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    file.write_at(0, &header)?;
    file.sync_data()
}

/// Reads a whole file of at most `limit` bytes (longer is reported as corrupt by the decoder
/// through a length mismatch, never allocated).
fn read_all(file: &dyn File, limit: usize) -> Result<Vec<u8>> {
    let len = usize::try_from(file.len()?)
        .unwrap_or(usize::MAX)
        .min(limit);
    let mut bytes = vec![0; len];
    let read = file.read_at(0, &mut bytes)?;
    bytes.truncate(read);
    Ok(bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut array = [0; 4];
    array.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(array)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut array = [0; 8];
    array.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(array)
}

/// The body of the `raft_terms` fuzz target, shared by `fuzz/fuzz_targets/raft_terms.rs`
/// (cargo-fuzz, nightly) and `tests/fuzz_raft.rs` (proptest, stable). Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Feeds `data` to both decoders and checks what must hold whatever the bytes are: no
    /// panic; what decodes re-encodes to the same bytes (so nothing is skipped or invented);
    /// decoded term starts are in order; a torn tail is only ever the last, short or
    /// CRC-failing entry.
    pub fn raft_files(data: &[u8]) {
        if let Ok(decoded) = decode_terms(data) {
            let valid_len = usize::try_from(decoded.valid_len).expect("at most data.len()");
            assert!(valid_len <= data.len());
            if valid_len > 0 {
                let mut encoded = data[..TERMS_HEADER_LEN].to_vec();
                for entry in &decoded.entries {
                    encoded.extend_from_slice(&entry.encode());
                }
                assert_eq!(encoded, &data[..valid_len]);
                assert!(
                    data.len() - valid_len <= TERM_ENTRY_LEN,
                    "only the last entry is torn"
                );
            } else {
                assert!(decoded.entries.is_empty());
                assert!(data.len() < TERMS_HEADER_LEN);
            }
            for pair in decoded.entries.windows(2) {
                assert!(pair[1].follows(&pair[0]));
            }
        }
        if let Ok(value) = decode_vote(data) {
            assert_eq!(encode_vote(&value), data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::sim::{CrashMode, SimDirectory};

    fn start(term: u64, first_index: u64) -> TermStart {
        TermStart {
            term,
            leader: term % 3,
            first_index,
            first_offset: first_index * 10,
        }
    }

    #[test]
    fn the_vote_round_trips_and_is_none_before_the_first_save() {
        let directory = SimDirectory::new(1);
        let vote = VoteFile::new(directory.clone());
        assert_eq!(vote.load().unwrap(), None);
        vote.save(b"term 1, voted for 2").unwrap();
        assert_eq!(vote.load().unwrap().unwrap(), b"term 1, voted for 2");
        vote.save(b"term 2").unwrap();
        assert!(matches!(
            vote.save(&vec![0; VOTE_MAX_BYTES + 1]),
            Err(Error::VoteTooLarge { .. })
        ));
        directory.crash(CrashMode::DropUnsynced);
        assert_eq!(VoteFile::new(directory).load().unwrap().unwrap(), b"term 2");
    }

    #[test]
    fn a_damaged_vote_is_corrupt_not_a_missing_one() {
        let directory = SimDirectory::new(1);
        let vote = VoteFile::new(directory.clone());
        vote.save(b"term 7").unwrap();
        let mut bytes = directory.file_bytes(VOTE_FILE).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        directory.set_file_bytes(VOTE_FILE, bytes);
        assert!(matches!(vote.load(), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn term_lookups_take_the_last_start_at_or_before_the_index() {
        let directory = SimDirectory::new(1);
        let mut terms = TermsFile::open(directory.clone()).unwrap();
        assert_eq!(terms.term_at(1), None);
        terms.append(start(1, 1)).unwrap();
        terms.append(start(3, 5)).unwrap();
        terms.append(start(4, 9)).unwrap();
        assert_eq!(terms.term_at(0), None);
        assert_eq!(terms.term_at(1), Some(1));
        assert_eq!(terms.term_at(4), Some(1));
        assert_eq!(terms.term_at(5), Some(3));
        assert_eq!(terms.term_at(100), Some(4));
        assert!(matches!(
            terms.append(start(4, 12)),
            Err(Error::TermOutOfOrder { term: 4, .. })
        ));
        terms.truncate_from_index(6).unwrap();
        assert_eq!(terms.entries(), &[start(1, 1), start(3, 5)]);
        terms.truncate_from_index(5).unwrap();
        assert_eq!(terms.entries(), &[start(1, 1)]);
        terms.append(start(5, 5)).unwrap();
        directory.crash(CrashMode::DropUnsynced);
        let terms = TermsFile::open(directory).unwrap();
        assert_eq!(terms.entries(), &[start(1, 1), start(5, 5)]);
    }

    #[test]
    fn a_torn_last_entry_is_cut_and_damage_before_it_is_corrupt() {
        let directory = SimDirectory::new(1);
        let mut terms = TermsFile::open(directory.clone()).unwrap();
        terms.append(start(1, 1)).unwrap();
        terms.append(start(2, 4)).unwrap();
        drop(terms);
        let whole = directory.file_bytes(TERMS_FILE).unwrap();
        for cut in TERMS_HEADER_LEN + TERM_ENTRY_LEN..whole.len() {
            directory.set_file_bytes(TERMS_FILE, whole[..cut].to_vec());
            let terms = TermsFile::open(directory.clone()).unwrap();
            assert_eq!(terms.entries(), &[start(1, 1)], "cut at {cut}");
            assert_eq!(
                directory.file_bytes(TERMS_FILE).unwrap().len(),
                TERMS_HEADER_LEN + TERM_ENTRY_LEN
            );
        }
        let mut damaged = whole.clone();
        damaged[TERMS_HEADER_LEN] ^= 1;
        directory.set_file_bytes(TERMS_FILE, damaged);
        assert!(matches!(
            TermsFile::open(directory.clone()),
            Err(Error::Corrupt { .. })
        ));
        // A crash while creating the file leaves a prefix of its header: an empty list.
        directory.set_file_bytes(TERMS_FILE, whole[..3].to_vec());
        let mut terms = TermsFile::open(directory.clone()).unwrap();
        assert!(terms.entries().is_empty());
        terms.append(start(1, 1)).unwrap();
        assert_eq!(
            TermsFile::open(directory).unwrap().entries(),
            &[start(1, 1)]
        );
    }

    #[test]
    fn a_failed_sync_poisons_the_terms_file() {
        let directory = SimDirectory::new(1);
        let mut terms = TermsFile::open(directory.clone()).unwrap();
        terms.append(start(1, 1)).unwrap();
        // Operations of an append: the write, then the fdatasync.
        directory.fail_operation(directory.operation_count() + 1);
        assert!(matches!(terms.append(start(2, 2)), Err(Error::Io { .. })));
        assert!(terms.is_poisoned());
        assert!(matches!(terms.append(start(3, 3)), Err(Error::Poisoned)));
        assert!(matches!(terms.truncate_from_index(1), Err(Error::Poisoned)));
        // Reopening tells what is on disk: the entry was written, so it is there or not.
        let reopened = TermsFile::open(directory).unwrap();
        assert!(reopened.entries().starts_with(&[start(1, 1)]));
    }
}
