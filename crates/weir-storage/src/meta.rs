//! The metadata store: consumer offsets, ack state, schedules and transactions as byte keys and
//! byte values in named tables, kept in one redb file. It owns only the storage of those bytes:
//! it does not know what a table means or how its keys and values are encoded (that belongs to
//! `weir-core`, which also owns the table names), and it is not on the publish hot path — the
//! partition log is. Every [`MetaStore::write`] is one redb transaction, so it is atomic; its
//! `durable` flag chooses between an fsynced commit and redb's cheaper non-durable commit (see
//! [`MetaStore::write`] and `docs/internals/meta.md` for exactly what survives what).

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTableMetadata, StorageBackend, TableDefinition,
    TableError, TableHandle, WriteTransaction,
};

use crate::io::{Directory, File};
use crate::{Error, Result};

/// redb's default page cache is 1 GiB; the broker's whole resident budget is 256 MiB
/// (`DESIGN.md` §6) and the metadata hot set is small, so we cap it well below that. A miss
/// costs a `pread` that the OS page cache usually serves.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Every table stores raw bytes; `weir-core` encodes keys big-endian so byte order is the order
/// it scans in.
type ByteTable<'name> = TableDefinition<'name, &'static [u8], &'static [u8]>;

/// A byte table opened for writing inside one write transaction.
type WritableByteTable<'transaction> = redb::Table<'transaction, &'static [u8], &'static [u8]>;

/// One change in a metadata write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOp {
    /// Sets `key` in `table` to `value`, replacing any earlier value; creates the table if needed.
    Put {
        table: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// Removes `key` from `table`; removing an absent key is not an error.
    Delete { table: &'static str, key: Vec<u8> },
}

/// Offsets, ack state, schedules and transactions, keyed by table and byte key.
///
/// One `MetaStore` per file: redb locks the file, so a second open (in this or another process)
/// fails until the first is dropped. Share it between threads with an `Arc`: reads run
/// concurrently on snapshots and never wait for a write; writes are serialised (a second
/// [`write`](Self::write) waits for the first to commit).
///
/// Dropping the store closes the database cleanly, which also makes earlier non-durable writes
/// durable (redb commits them on close).
pub struct MetaStore {
    /// `None` only while a reopen after a failed commit has not succeeded yet.
    database: RwLock<Option<Database>>,
    /// The database file, named in every error.
    path: PathBuf,
    /// Where the database's bytes live, to reopen it.
    source: Source,
    /// Set when a commit failed because the disk was full: redb then refuses every write until
    /// reopened, which this store does itself (see [`MetaStore::write`]).
    full_since: Mutex<Option<FullDisk>>,
}

/// Where a store's bytes live: the file at its path, or a file of the I/O seam.
enum Source {
    Path,
    Seam(Arc<dyn File>),
}

impl Source {
    fn open_database(&self, path: &Path) -> Result<Database> {
        match self {
            Source::Path => open_database(path),
            Source::Seam(file) => Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .create_with_backend(SeamBackend { file: file.clone() })
                .map_err(|error| map_error(path, error)),
        }
    }
}

/// A commit failed for lack of space; the store is reopened once space may have returned.
#[derive(Debug, Clone, Copy)]
struct FullDisk {
    last_reopen_attempt: Option<Instant>,
}

/// How often a store whose commit failed for lack of space tries to reopen (each reopen
/// verifies the whole file).
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

/// The open database, held for the length of one call so a reopen waits for it.
struct DatabaseGuard<'a>(RwLockReadGuard<'a, Option<Database>>);

impl std::ops::Deref for DatabaseGuard<'_> {
    type Target = Database;

    fn deref(&self) -> &Database {
        self.0
            .as_ref()
            .expect("a DatabaseGuard is made only when the database is open")
    }
}

// Broker threads share one store through an `Arc`; fail the build, not a caller, if a redb
// upgrade ever takes that away.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<MetaStore>();
};

impl MetaStore {
    /// Opens the database file at `path` (conventionally `<data dir>/meta.redb`), creating it if
    /// it does not exist; its directory must exist.
    ///
    /// The open verifies the checksum of every committed page, so a file damaged outside redb is
    /// reported as an error instead of being trusted (a plain redb open may panic on such a file).
    /// After a crash, redb also rolls back to the last durable commit and rebuilds its allocator
    /// state. Both walk the whole file: fine for metadata, which stays small next to the log.
    pub fn open(path: &Path) -> Result<MetaStore> {
        let is_new = !path.try_exists().map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;

        let database = open_database(path)?;

        if is_new {
            // redb fsyncs the file it initialises but not the directory entry naming it; without
            // this, power loss could drop a new file together with the durable writes in it.
            sync_parent_directory(path)?;
        }

        Ok(MetaStore {
            database: RwLock::new(Some(database)),
            path: path.to_path_buf(),
            source: Source::Path,
            full_since: Mutex::new(None),
        })
    }

    /// Opens (or creates) the database file `name` in `directory`, doing all of its I/O through
    /// the seam: on a [`SimDirectory`](crate::io::sim::SimDirectory) a crash drops or tears the
    /// store's unsynced writes, a full disk and failed fsyncs reach it, like the logs. Without
    /// redb's file lock (the seam has none), so two opens of one file are not refused here:
    /// the broker opens its store once. The real file system uses [`open`](Self::open).
    pub fn open_in(directory: &dyn Directory, name: &str) -> Result<MetaStore> {
        let path = directory.path(name);
        let is_new = !directory.list()?.iter().any(|existing| existing == name);
        let file = if is_new {
            let file = directory.create(name)?;
            // As in `open`: the name must be durable before the writes in the file count.
            directory.sync()?;
            file
        } else {
            directory.open(name)?
        };
        let source = Source::Seam(file);
        let database = source.open_database(&path)?;
        Ok(MetaStore {
            database: RwLock::new(Some(database)),
            path,
            source,
            full_since: Mutex::new(None),
        })
    }

    fn database(&self) -> Result<DatabaseGuard<'_>> {
        let guard = self.database.read().unwrap_or_else(PoisonError::into_inner);
        if guard.is_none() {
            return Err(Error::StorageFull {
                path: self.path.clone(),
            });
        }
        Ok(DatabaseGuard(guard))
    }

    /// After a commit failed for lack of space, redb refuses writes until the file is reopened
    /// (which rolls back to the last durable commit, as after a crash: non-durable writes since
    /// then are lost, as documented). Reopens at most every `REOPEN_INTERVAL`; until one
    /// succeeds, writes fail with `StorageFull`, never `Poisoned`.
    fn reopen_if_full(&self) -> Result<()> {
        let mut full = self
            .full_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(state) = full.as_mut() else {
            return Ok(());
        };
        let full_error = || Error::StorageFull {
            path: self.path.clone(),
        };
        if state
            .last_reopen_attempt
            .is_some_and(|attempt| attempt.elapsed() < REOPEN_INTERVAL)
        {
            return Err(full_error());
        }
        state.last_reopen_attempt = Some(Instant::now());
        // Waits for calls in progress; the old handle must close first (redb locks the file).
        let mut database = self
            .database
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        *database = None;
        match self.source.open_database(&self.path) {
            Ok(reopened) => {
                *database = Some(reopened);
                *full = None;
                Ok(())
            }
            Err(Error::Io { .. } | Error::StorageFull { .. }) => Err(full_error()),
            Err(error) => Err(error),
        }
    }

    /// Remembers that a commit failed for lack of space, so the store reopens itself.
    fn note_failure(&self, error: &Error) {
        if matches!(error, Error::StorageFull { .. }) {
            let mut full = self
                .full_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            full.get_or_insert(FullDisk {
                last_reopen_attempt: None,
            });
        }
    }

    /// The database file this store was opened on.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The value of `key` in `table`, or `None` if the key or the whole table is absent.
    pub fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let definition = self.definition(table)?;
        let database = self.database()?;
        let transaction = database.begin_read().map_err(|error| self.error(error))?;
        let byte_table = match transaction.open_table(definition) {
            Ok(byte_table) => byte_table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let value = byte_table.get(key).map_err(|error| self.error(error))?;
        Ok(value.map(|guard| guard.value().to_vec()))
    }

    /// The values of `keys` in `table`, in the order given, from one read snapshot (`None` for
    /// an absent key; all `None` if the table is absent).
    pub fn get_many<K: AsRef<[u8]>>(
        &self,
        table: &'static str,
        keys: &[K],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        let definition = self.definition(table)?;
        let database = self.database()?;
        let transaction = database.begin_read().map_err(|error| self.error(error))?;
        let byte_table = match transaction.open_table(definition) {
            Ok(byte_table) => byte_table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
            Err(error) => return Err(self.error(error)),
        };
        keys.iter()
            .map(|key| {
                let value = byte_table
                    .get(key.as_ref())
                    .map_err(|error| self.error(error))?;
                Ok(value.map(|guard| guard.value().to_vec()))
            })
            .collect()
    }

    /// Every entry of `table` whose key starts with `prefix`, in key order.
    ///
    /// An empty prefix returns the whole table; an absent table returns nothing. The result is
    /// one snapshot, read in one go: for a table that can grow large, page through it with
    /// [`scan_range`](Self::scan_range) instead.
    pub fn scan(&self, table: &'static str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let upper = prefix_successor(prefix);
        let upper = upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        self.collect(table, Bound::Included(prefix), upper, usize::MAX)
    }

    /// At most `limit` entries of `table` with `start <= key < end` (no upper bound when `end` is
    /// `None`), in key order.
    ///
    /// To page through a table, pass the last key returned with a zero byte appended as the next
    /// `start`: that is the smallest key greater than it.
    pub fn scan_range(
        &self,
        table: &'static str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.collect(table, Bound::Included(start), upper, limit)
    }

    /// Like [`scan_range`](Self::scan_range), but hands each entry to `map` where it lies in the
    /// store instead of copying it, keeping what `map` returns: for reading a part of many
    /// large values.
    pub fn scan_range_map<T>(
        &self,
        table: &'static str,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
        map: impl FnMut(&[u8], &[u8]) -> T,
    ) -> Result<Vec<T>> {
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        self.visit(table, Bound::Included(start), upper, limit, map)
    }

    /// How many entries `table` holds (0 if it does not exist).
    pub fn count(&self, table: &'static str) -> Result<u64> {
        let definition = self.definition(table)?;
        let database = self.database()?;
        let transaction = database.begin_read().map_err(|error| self.error(error))?;
        match transaction.open_table(definition) {
            Ok(byte_table) => byte_table.len().map_err(|error| self.error(error)),
            Err(TableError::TableDoesNotExist(_)) => Ok(0),
            Err(error) => Err(self.error(error)),
        }
    }

    /// The names of the tables that exist (that some write has created), in name order.
    pub fn tables(&self) -> Result<Vec<String>> {
        let database = self.database()?;
        let transaction = database.begin_read().map_err(|error| self.error(error))?;
        let handles = transaction
            .list_tables()
            .map_err(|error| self.error(error))?;
        let mut names: Vec<String> = handles.map(|handle| handle.name().to_owned()).collect();
        names.sort_unstable();
        Ok(names)
    }

    /// Applies `ops` atomically, in order (a later op on the same key wins): after a crash,
    /// either all of them are there or none is. Tables are created on first write.
    ///
    /// With `durable`, returns only after the commit is on stable storage (redb fsyncs the file):
    /// the write survives a process crash and power loss. Without, the write is visible to every
    /// later read at once but is only in this process's memory: it survives a process crash or
    /// power loss once a later durable write (or [`sync`](Self::sync), or a clean drop of the
    /// store) commits, and is lost — together with every other non-durable write since the last
    /// durable one, never partially — if the process dies before that.
    ///
    /// An empty `ops` with `durable` still commits, which makes earlier non-durable writes
    /// durable; with neither, it does nothing.
    ///
    /// If a commit fails with an I/O error, redb refuses further writes ([`Error::Poisoned`])
    /// until the store is dropped and reopened; the failed write may or may not have reached the
    /// disk, but never partially.
    pub fn write(&self, ops: &[MetaOp], durable: bool) -> Result<()> {
        if ops.is_empty() && !durable {
            return Ok(());
        }
        self.reopen_if_full()?;
        let database = self.database()?;
        let mut transaction = database.begin_write().map_err(|error| self.error(error))?;
        if !durable {
            transaction
                .set_durability(Durability::None)
                .map_err(|error| self.error(error))?;
        }
        // On error the transaction is dropped, which aborts it: nothing of `ops` is applied.
        self.apply(&transaction, ops)?;
        let committed = transaction.commit().map_err(|error| self.error(error));
        if let Err(error) = &committed {
            self.note_failure(error);
        }
        committed
    }

    /// Makes every earlier non-durable write durable: an empty durable [`write`](Self::write).
    pub fn sync(&self) -> Result<()> {
        self.write(&[], true)
    }

    /// Removes every entry of `table` whose key starts with `prefix` in one atomic write, and
    /// returns how many there were; `durable` as in [`write`](Self::write). An absent table is
    /// left absent.
    pub fn delete_prefix(&self, table: &'static str, prefix: &[u8], durable: bool) -> Result<u64> {
        let definition = self.definition(table)?;
        // Only a write transaction can remove, but opening a table in one creates it: look first
        // so deleting from an absent table does not leave an empty one behind.
        if !self.tables()?.iter().any(|name| name == table) {
            return Ok(0);
        }
        self.reopen_if_full()?;
        let database = self.database()?;
        let mut transaction = database.begin_write().map_err(|error| self.error(error))?;
        if !durable {
            transaction
                .set_durability(Durability::None)
                .map_err(|error| self.error(error))?;
        }
        let removed = {
            let mut byte_table = transaction
                .open_table(definition)
                .map_err(|error| self.error(error))?;
            let before = byte_table.len().map_err(|error| self.error(error))?;
            let upper = prefix_successor(prefix);
            let upper = upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            byte_table
                .retain_in::<&[u8], _>((Bound::Included(prefix), upper), |_, _| false)
                .map_err(|error| self.error(error))?;
            let after = byte_table.len().map_err(|error| self.error(error))?;
            before.saturating_sub(after)
        };
        transaction.commit().map_err(|error| {
            let error = self.error(error);
            self.note_failure(&error);
            error
        })?;
        Ok(removed)
    }

    /// Applies `ops` inside `transaction`, keeping a table open across consecutive ops on it:
    /// redb allows one open handle per table, and reopening costs a lookup in its table tree.
    fn apply(&self, transaction: &WriteTransaction, ops: &[MetaOp]) -> Result<()> {
        let mut open: Option<(&'static str, WritableByteTable<'_>)> = None;
        for op in ops {
            let (MetaOp::Put { table, .. } | MetaOp::Delete { table, .. }) = op;
            let reuse = matches!(&open, Some((name, _)) if name == table);
            if !reuse {
                // Replacing the handle drops the previous one, so a later op may reopen it.
                let byte_table = transaction
                    .open_table(self.definition(table)?)
                    .map_err(|error| self.error(error))?;
                open = Some((table, byte_table));
            }
            let Some((_, byte_table)) = open.as_mut() else {
                unreachable!("a table handle was opened just above");
            };
            match op {
                MetaOp::Put { key, value, .. } => {
                    byte_table
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(|error| self.error(error))?;
                }
                MetaOp::Delete { key, .. } => {
                    byte_table
                        .remove(key.as_slice())
                        .map_err(|error| self.error(error))?;
                }
            }
        }
        Ok(())
    }

    /// Up to `limit` entries of `table` between `lower` and `upper`, from one read snapshot.
    fn collect(
        &self,
        table: &'static str,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.visit(table, lower, upper, limit, |key, value| {
            (key.to_vec(), value.to_vec())
        })
    }

    /// `map` of up to `limit` entries of `table` between `lower` and `upper`, in key order,
    /// from one read snapshot.
    fn visit<T>(
        &self,
        table: &'static str,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        limit: usize,
        mut map: impl FnMut(&[u8], &[u8]) -> T,
    ) -> Result<Vec<T>> {
        let definition = self.definition(table)?;
        if limit == 0 || is_empty_range(lower, upper) {
            return Ok(Vec::new());
        }
        let database = self.database()?;
        let transaction = database.begin_read().map_err(|error| self.error(error))?;
        let byte_table = match transaction.open_table(definition) {
            Ok(byte_table) => byte_table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(self.error(error)),
        };
        let range = byte_table
            .range::<&[u8]>((lower, upper))
            .map_err(|error| self.error(error))?;
        let mut entries = Vec::new();
        for entry in range.take(limit) {
            let (key, value) = entry.map_err(|error| self.error(error))?;
            entries.push(map(key.value(), value.value()));
        }
        Ok(entries)
    }

    /// The redb definition of `table`; redb panics on an empty name, so refuse it here.
    fn definition(&self, table: &'static str) -> Result<ByteTable<'static>> {
        if table.is_empty() {
            return Err(Error::Meta(format!(
                "{}: empty table name",
                self.path.display()
            )));
        }
        Ok(TableDefinition::new(table))
    }

    fn error(&self, error: impl Into<redb::Error>) -> Error {
        match map_error(&self.path, error) {
            // redb's "an earlier commit failed": when that was a full disk, say so.
            Error::Poisoned
                if self
                    .full_since
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_some() =>
            {
                Error::StorageFull {
                    path: self.path.clone(),
                }
            }
            error => error,
        }
    }
}

impl std::fmt::Debug for MetaStore {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("MetaStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// redb's storage over one file of the I/O seam. Our errors travel through redb as
/// `std::io::Error`: a full disk as `StorageFull` (so [`map_error`] maps it back), the rest with
/// their OS error or message.
#[derive(Debug)]
struct SeamBackend {
    file: Arc<dyn File>,
}

fn to_io_error(error: Error) -> std::io::Error {
    match error {
        Error::StorageFull { .. } => std::io::Error::from(std::io::ErrorKind::StorageFull),
        Error::Io { source, .. } => source,
        other => std::io::Error::other(other.to_string()),
    }
}

impl StorageBackend for SeamBackend {
    fn len(&self) -> std::result::Result<u64, std::io::Error> {
        self.file.len().map_err(to_io_error)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), std::io::Error> {
        let read = self.file.read_at(offset, out).map_err(to_io_error)?;
        if read < out.len() {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> std::result::Result<(), std::io::Error> {
        self.file.truncate(len).map_err(to_io_error)
    }

    fn sync_data(&self) -> std::result::Result<(), std::io::Error> {
        self.file.sync_data().map_err(to_io_error)
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), std::io::Error> {
        self.file.write_at(offset, data).map_err(to_io_error)
    }
}

/// Translates a redb error into the crate's: a full disk and plain I/O keep their types, an
/// earlier failed commit is the fail-stop [`Error::Poisoned`], and everything else (corruption,
/// the file already open, a value too large) is [`Error::Meta`] naming the file.
fn map_error(path: &Path, error: impl Into<redb::Error>) -> Error {
    match error.into() {
        redb::Error::Io(source) if is_storage_full(&source) => Error::StorageFull {
            path: path.to_path_buf(),
        },
        redb::Error::Io(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        redb::Error::PreviousIo => Error::Poisoned,
        other => Error::Meta(format!("{}: {other}", path.display())),
    }
}

fn open_database(path: &Path) -> Result<Database> {
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .create(path)
        .map_err(|error| map_error(path, error))
}

fn is_storage_full(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Fsyncs the directory holding `path`, so that a newly created file's name is durable.
fn sync_parent_directory(path: &Path) -> Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(|source| Error::Io {
            path: directory.to_path_buf(),
            source,
        })
}

/// The smallest key greater than every key starting with `prefix`, or `None` when there is none
/// (an empty prefix, or one of only `0xFF` bytes): the exclusive upper bound of a prefix scan.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut successor = prefix.to_vec();
    while let Some(last) = successor.pop() {
        if last != u8::MAX {
            successor.push(last + 1);
            return Some(successor);
        }
    }
    None
}

/// Whether no key lies between `lower` (inclusive) and `upper`. redb's B-tree range panics when
/// the start is past the end, as `BTreeMap::range` does, and `scan_range` takes both from callers.
fn is_empty_range(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(start), Bound::Excluded(end)) => start >= end,
        (Bound::Included(start), Bound::Included(end)) => start > end,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    const OFFSETS: &str = "test_offsets";
    const ACKS: &str = "test_acks";

    fn put(table: &'static str, key: &[u8], value: &[u8]) -> MetaOp {
        MetaOp::Put {
            table,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn delete(table: &'static str, key: &[u8]) -> MetaOp {
        MetaOp::Delete {
            table,
            key: key.to_vec(),
        }
    }

    fn open_temporary() -> (tempfile::TempDir, MetaStore) {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let store = MetaStore::open(&directory.path().join("meta.redb")).expect("open");
        (directory, store)
    }

    fn entry(key: &[u8], value: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (key.to_vec(), value.to_vec())
    }

    #[test]
    fn put_then_get_returns_the_value_and_delete_removes_it() {
        let (_directory, store) = open_temporary();
        store.write(&[put(OFFSETS, b"a", b"1")], true).unwrap();
        assert_eq!(store.get(OFFSETS, b"a").unwrap(), Some(b"1".to_vec()));

        store.write(&[put(OFFSETS, b"a", b"2")], true).unwrap();
        assert_eq!(store.get(OFFSETS, b"a").unwrap(), Some(b"2".to_vec()));

        store.write(&[delete(OFFSETS, b"a")], true).unwrap();
        assert_eq!(store.get(OFFSETS, b"a").unwrap(), None);
        // Deleting what is not there is not an error.
        store.write(&[delete(OFFSETS, b"a")], true).unwrap();
    }

    #[test]
    fn reading_an_absent_table_is_empty_not_an_error() {
        let (_directory, store) = open_temporary();
        assert_eq!(store.get("never_written", b"key").unwrap(), None);
        assert!(store.scan("never_written", b"").unwrap().is_empty());
        assert!(
            store
                .scan_range("never_written", b"", None, 10)
                .unwrap()
                .is_empty()
        );
        assert!(store.tables().unwrap().is_empty());
        assert_eq!(store.delete_prefix("never_written", b"", true).unwrap(), 0);
        assert!(store.tables().unwrap().is_empty());
    }

    #[test]
    fn tables_are_created_on_first_write_and_listed_by_name() {
        let (_directory, store) = open_temporary();
        store
            .write(&[put(OFFSETS, b"k", b"v"), put(ACKS, b"k", b"v")], false)
            .unwrap();
        assert_eq!(store.tables().unwrap(), vec![ACKS, OFFSETS]);
    }

    #[test]
    fn tables_are_separate_key_spaces() {
        let (_directory, store) = open_temporary();
        store
            .write(
                &[put(OFFSETS, b"k", b"offset"), put(ACKS, b"k", b"ack")],
                true,
            )
            .unwrap();
        assert_eq!(store.get(OFFSETS, b"k").unwrap(), Some(b"offset".to_vec()));
        assert_eq!(store.get(ACKS, b"k").unwrap(), Some(b"ack".to_vec()));
    }

    /// Scans must return exactly the keys under the prefix, in unsigned byte order, including the
    /// edge cases of the exclusive upper bound: bytes equal to 0xFF and the empty prefix.
    #[test]
    fn scan_by_prefix_returns_matching_keys_in_byte_order() {
        let (_directory, store) = open_temporary();
        let keys: [&[u8]; 9] = [
            b"",
            b"a",
            b"ab",
            b"a\x00",
            b"a\xff",
            b"a\xff\xff",
            b"b",
            b"\xff",
            b"\xff\x01",
        ];
        // Written out of order, so ordering comes from the store.
        let ops: Vec<MetaOp> = keys
            .iter()
            .rev()
            .map(|key| put(OFFSETS, key, key))
            .collect();
        store.write(&ops, true).unwrap();

        let scanned_keys = |prefix: &[u8]| -> Vec<Vec<u8>> {
            let entries = store.scan(OFFSETS, prefix).unwrap();
            for (key, value) in &entries {
                assert_eq!(key, value);
            }
            entries.into_iter().map(|(key, _)| key).collect()
        };
        let mut all: Vec<Vec<u8>> = keys.iter().map(|key| key.to_vec()).collect();
        all.sort();
        assert_eq!(scanned_keys(b""), all);
        assert_eq!(
            scanned_keys(b"a"),
            vec![
                b"a".to_vec(),
                b"a\x00".to_vec(),
                b"ab".to_vec(),
                b"a\xff".to_vec(),
                b"a\xff\xff".to_vec()
            ]
        );
        assert_eq!(
            scanned_keys(b"a\xff"),
            vec![b"a\xff".to_vec(), b"a\xff\xff".to_vec()]
        );
        assert_eq!(
            scanned_keys(b"\xff"),
            vec![b"\xff".to_vec(), b"\xff\x01".to_vec()]
        );
        assert!(scanned_keys(b"c").is_empty());
    }

    /// Big-endian integers sort numerically as bytes; this is the convention `weir-core` relies
    /// on for offset and time keys.
    #[test]
    fn big_endian_keys_scan_in_numeric_order() {
        let (_directory, store) = open_temporary();
        let numbers = [300_u64, 1, 256, 0, u64::MAX, 255];
        let ops: Vec<MetaOp> = numbers
            .iter()
            .map(|number| put(OFFSETS, &number.to_be_bytes(), b""))
            .collect();
        store.write(&ops, true).unwrap();
        let scanned: Vec<u64> = store
            .scan(OFFSETS, b"")
            .unwrap()
            .into_iter()
            .map(|(key, _)| u64::from_be_bytes(key.try_into().expect("an 8-byte key")))
            .collect();
        assert_eq!(scanned, vec![0, 1, 255, 256, 300, u64::MAX]);
    }

    #[test]
    fn get_many_answers_each_key_in_order_and_tolerates_an_absent_table() {
        let (_directory, store) = open_temporary();
        assert_eq!(store.get_many(OFFSETS, &[[1u8]]).unwrap(), vec![None]);
        store
            .write(
                &[put(OFFSETS, &[1], &[10]), put(OFFSETS, &[3], &[30])],
                true,
            )
            .unwrap();
        assert_eq!(
            store.get_many(OFFSETS, &[[3u8], [2], [1]]).unwrap(),
            vec![Some(vec![30]), None, Some(vec![10])]
        );
    }

    #[test]
    fn scan_range_respects_bounds_and_limit_and_pages_through_a_table() {
        let (_directory, store) = open_temporary();
        let ops: Vec<MetaOp> = (0_u8..10).map(|key| put(OFFSETS, &[key], &[key])).collect();
        store.write(&ops, true).unwrap();

        let keys = |entries: Vec<(Vec<u8>, Vec<u8>)>| -> Vec<u8> {
            entries.into_iter().map(|(key, _)| key[0]).collect()
        };
        assert_eq!(
            keys(store.scan_range(OFFSETS, &[3], Some(&[6]), 100).unwrap()),
            vec![3, 4, 5]
        );
        assert_eq!(
            keys(store.scan_range(OFFSETS, &[7], None, 100).unwrap()),
            vec![7, 8, 9]
        );
        assert_eq!(
            keys(store.scan_range(OFFSETS, &[], None, 2).unwrap()),
            vec![0, 1]
        );
        assert!(store.scan_range(OFFSETS, &[], None, 0).unwrap().is_empty());
        // A start past the end is an empty range, not a panic.
        assert!(
            store
                .scan_range(OFFSETS, &[6], Some(&[3]), 100)
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .scan_range(OFFSETS, &[3], Some(&[3]), 100)
                .unwrap()
                .is_empty()
        );

        let mut paged = Vec::new();
        let mut start = Vec::new();
        loop {
            let page = store.scan_range(OFFSETS, &start, None, 3).unwrap();
            let Some((last_key, _)) = page.last() else {
                break;
            };
            start = last_key.clone();
            start.push(0);
            paged.extend(keys(page));
        }
        assert_eq!(paged, (0_u8..10).collect::<Vec<_>>());
    }

    #[test]
    fn ops_in_one_write_apply_in_order() {
        let (_directory, store) = open_temporary();
        store
            .write(
                &[
                    put(OFFSETS, b"k", b"first"),
                    put(ACKS, b"k", b"other table"),
                    put(OFFSETS, b"k", b"second"),
                    delete(OFFSETS, b"gone"),
                    put(OFFSETS, b"gone", b"back"),
                    put(OFFSETS, b"deleted", b"x"),
                    delete(OFFSETS, b"deleted"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(store.get(OFFSETS, b"k").unwrap(), Some(b"second".to_vec()));
        assert_eq!(store.get(OFFSETS, b"gone").unwrap(), Some(b"back".to_vec()));
        assert_eq!(store.get(OFFSETS, b"deleted").unwrap(), None);
        assert_eq!(
            store.get(ACKS, b"k").unwrap(),
            Some(b"other table".to_vec())
        );
    }

    /// A write whose last op fails must leave no trace of its earlier ops. The failure is forced
    /// by a table created directly through redb with other key types, which redb refuses to open
    /// as a byte table.
    #[test]
    fn a_failing_op_leaves_nothing_of_its_write() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("meta.redb");
        {
            let database = Database::create(&path).unwrap();
            let transaction = database.begin_write().unwrap();
            transaction
                .open_table(TableDefinition::<u64, u64>::new("typed"))
                .unwrap()
                .insert(1, 1)
                .unwrap();
            transaction.commit().unwrap();
        }
        let store = MetaStore::open(&path).unwrap();
        store.write(&[put(OFFSETS, b"before", b"1")], true).unwrap();

        for durable in [true, false] {
            let result = store.write(
                &[
                    put(OFFSETS, b"before", b"changed"),
                    put(OFFSETS, b"new", b"1"),
                    delete(OFFSETS, b"before"),
                    put(ACKS, b"new", b"1"),
                    put("typed", b"bytes", b"1"),
                ],
                durable,
            );
            assert!(matches!(result, Err(Error::Meta(_))), "{result:?}");
            assert_eq!(store.get(OFFSETS, b"before").unwrap(), Some(b"1".to_vec()));
            assert_eq!(store.get(OFFSETS, b"new").unwrap(), None);
            assert_eq!(store.get(ACKS, b"new").unwrap(), None);
        }
        // The store is still usable after the aborted write.
        store.write(&[put(OFFSETS, b"after", b"1")], true).unwrap();
        assert_eq!(store.get(OFFSETS, b"after").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn an_empty_table_name_is_an_error_not_a_panic() {
        let (_directory, store) = open_temporary();
        assert!(matches!(store.get("", b"k"), Err(Error::Meta(_))));
        assert!(matches!(store.scan("", b""), Err(Error::Meta(_))));
        assert!(matches!(
            store.write(&[put("", b"k", b"v")], true),
            Err(Error::Meta(_))
        ));
    }

    #[test]
    fn delete_prefix_removes_only_matching_keys_and_counts_them() {
        let (_directory, store) = open_temporary();
        store
            .write(
                &[
                    put(OFFSETS, b"a", b""),
                    put(OFFSETS, b"ab", b""),
                    put(OFFSETS, b"a\xff", b""),
                    put(OFFSETS, b"b", b""),
                    put(ACKS, b"a", b""),
                ],
                true,
            )
            .unwrap();
        assert_eq!(store.delete_prefix(OFFSETS, b"a", true).unwrap(), 3);
        assert_eq!(store.scan(OFFSETS, b"").unwrap(), vec![entry(b"b", b"")]);
        assert_eq!(store.scan(ACKS, b"").unwrap(), vec![entry(b"a", b"")]);
        assert_eq!(store.delete_prefix(OFFSETS, b"a", false).unwrap(), 0);
        assert_eq!(store.delete_prefix(OFFSETS, b"", false).unwrap(), 1);
        assert!(store.scan(OFFSETS, b"").unwrap().is_empty());
    }

    #[test]
    fn non_durable_writes_are_visible_at_once() {
        let (_directory, store) = open_temporary();
        store.write(&[put(OFFSETS, b"k", b"v")], false).unwrap();
        assert_eq!(store.get(OFFSETS, b"k").unwrap(), Some(b"v".to_vec()));
        assert_eq!(store.scan(OFFSETS, b"k").unwrap(), vec![entry(b"k", b"v")]);
    }

    #[test]
    fn reopening_keeps_durable_writes_and_cleanly_closed_non_durable_ones() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("meta.redb");
        {
            let store = MetaStore::open(&path).unwrap();
            store
                .write(&[put(OFFSETS, b"durable", b"1")], true)
                .unwrap();
            store.write(&[put(OFFSETS, b"lazy", b"2")], false).unwrap();
            // Dropped cleanly: redb commits pending non-durable writes on close.
        }
        let store = MetaStore::open(&path).unwrap();
        assert_eq!(store.get(OFFSETS, b"durable").unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get(OFFSETS, b"lazy").unwrap(), Some(b"2".to_vec()));
    }

    #[test]
    fn a_second_open_of_the_same_file_is_refused() {
        let (directory, _store) = open_temporary();
        let second = MetaStore::open(&directory.path().join("meta.redb"));
        assert!(matches!(second, Err(Error::Meta(_))), "{second:?}");
    }

    #[test]
    fn opening_in_a_missing_directory_is_an_io_error() {
        let directory = tempfile::tempdir().unwrap();
        let result = MetaStore::open(&directory.path().join("missing").join("meta.redb"));
        assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    }

    /// Readers on other threads see each write whole: both keys of a write or neither, from a
    /// store shared through an `Arc`.
    #[test]
    fn concurrent_readers_see_whole_writes() {
        let (_directory, store) = open_temporary();
        let store = Arc::new(store);
        let writer = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for number in 0_u64..200 {
                    let key = number.to_be_bytes();
                    store
                        .write(&[put(OFFSETS, &key, b"x"), put(OFFSETS, &key, b"y")], false)
                        .unwrap();
                }
            })
        };
        let reader = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for _ in 0..200 {
                    for (_, value) in store.scan(OFFSETS, b"").unwrap() {
                        assert_eq!(value, b"y");
                    }
                }
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
        assert_eq!(store.scan(OFFSETS, b"").unwrap().len(), 200);
    }

    #[test]
    fn a_full_disk_maps_to_storage_full_and_a_latched_failure_to_poisoned() {
        let path = Path::new("meta.redb");
        for errno in [libc::ENOSPC, libc::EDQUOT] {
            let full = redb::StorageError::Io(std::io::Error::from_raw_os_error(errno));
            assert!(matches!(map_error(path, full), Error::StorageFull { .. }));
        }
        let other = redb::StorageError::Io(std::io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(map_error(path, other), Error::Io { .. }));
        assert!(matches!(
            map_error(path, redb::StorageError::PreviousIo),
            Error::Poisoned
        ));
        let corrupted = redb::StorageError::Corrupted("bad checksum".to_owned());
        let Error::Meta(message) = map_error(path, corrupted) else {
            panic!("corruption is a metadata error");
        };
        assert!(message.contains("meta.redb") && message.contains("bad checksum"));
    }

    /// On the seam, the store's crash and fault behaviour is the simulated directory's: durable
    /// writes survive a power loss, non-durable ones vanish whole, a failed fsync fails the
    /// commit (and latches), a torn tail falls back to the last durable commit.
    #[test]
    fn on_a_simulated_directory_crashes_and_faults_reach_the_store() {
        use crate::io::sim::{CrashMode, SimDirectory};
        for (seed, mode) in [
            (1, CrashMode::DropUnsynced),
            (2, CrashMode::TearUnsynced),
            (3, CrashMode::KeepWritten),
        ] {
            let directory = SimDirectory::new(seed);
            let store = MetaStore::open_in(directory.as_ref(), "meta.redb").unwrap();
            store.write(&[put(OFFSETS, b"kept", b"1")], true).unwrap();
            store.write(&[put(OFFSETS, b"lazy", b"2")], false).unwrap();
            directory.crash(mode);
            drop(store);
            let store = MetaStore::open_in(directory.as_ref(), "meta.redb").unwrap();
            assert_eq!(store.get(OFFSETS, b"kept").unwrap(), Some(b"1".to_vec()));
            assert_eq!(store.get(OFFSETS, b"lazy").unwrap(), None, "{mode:?}");

            let next = directory.operation_count();
            directory.fail_operation(next + 1);
            let failed = store.write(&[put(OFFSETS, b"failed", b"3")], true);
            assert!(failed.is_err(), "{mode:?}: {failed:?}");
            assert!(store.write(&[put(OFFSETS, b"x", b"4")], true).is_err());
            directory.crash(CrashMode::TearUnsynced);
            drop(store);
            let store = MetaStore::open_in(directory.as_ref(), "meta.redb").unwrap();
            assert_eq!(store.get(OFFSETS, b"kept").unwrap(), Some(b"1".to_vec()));
            assert_eq!(store.get(OFFSETS, b"x").unwrap(), None);
        }
    }

    #[test]
    fn a_full_simulated_disk_is_storage_full() {
        use crate::io::sim::SimDirectory;
        let directory = SimDirectory::new(7);
        let store = MetaStore::open_in(directory.as_ref(), "meta.redb").unwrap();
        directory.set_capacity(Some(directory.used_bytes()));
        let big = vec![7_u8; 1 << 20];
        let result = store.write(&[put(OFFSETS, b"big", &big)], true);
        assert!(
            matches!(result, Err(Error::StorageFull { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn prefix_successor_is_the_exclusive_upper_bound() {
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(prefix_successor(b"a"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"a\x00"), Some(b"a\x01".to_vec()));
    }
}
