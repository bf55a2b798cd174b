//! A simulated, fault-injecting [`Directory`] for deterministic crash tests.
//!
//! Every file keeps two images: the *live* bytes that reads see, and the *durable* bytes that a
//! power loss leaves behind. Writes and truncations change the live image and are queued as
//! pending; [`File::sync_data`] makes the live image durable. The directory's names work the same
//! way: creations, removals and renames are live at once and durable after [`Directory::sync`].
//! [`SimDirectory::crash`] throws the live state away, optionally applying a random prefix of
//! each file's pending operations first (a torn write, the way a disk persists some pages and
//! not others), and invalidates every open handle. Faults: fail the Nth mutating operation with
//! an I/O error, answer a chosen write with "storage full", or cap the total bytes stored.
//!
//! Determinism: all randomness comes from the seed given to [`SimDirectory::new`], so a failing
//! test replays exactly.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Directory, File, Storage};
use crate::{Error, MetaStore, Result};

/// The simulated directory. Share it as `Arc<SimDirectory>`: give one clone to the log (as
/// `Arc<dyn Directory>`) and keep one to inject faults and crash.
#[derive(Debug)]
pub struct SimDirectory {
    state: Arc<Mutex<State>>,
}

/// What happens to unsynced state on [`SimDirectory::crash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// Only durable bytes and names survive.
    DropUnsynced,
    /// Each file keeps a random prefix of its pending operations, the last one of which may be a
    /// write cut at a random byte: a torn write.
    TearUnsynced,
    /// A process crash (`kill -9`): the OS keeps every write and name, synced or not; only the
    /// handles die.
    KeepWritten,
}

#[derive(Debug)]
struct State {
    /// Bumped by every crash; handles from an older generation fail.
    generation: u64,
    live_names: BTreeMap<String, u64>,
    durable_names: BTreeMap<String, u64>,
    files: HashMap<u64, FileData>,
    next_file_id: u64,
    /// Mutating operations performed so far (create, remove, rename, directory sync, write,
    /// file sync, truncate).
    operations: u64,
    writes: u64,
    fail_operation_at: Option<u64>,
    storage_full_at_write: Option<u64>,
    capacity_bytes: Option<u64>,
    /// The next directory sync fails with `TooManyOpenFiles`, as the real one does when it
    /// cannot open the directory.
    descriptors_exhausted_at_directory_sync: bool,
    rng: u64,
}

#[derive(Debug, Default, Clone)]
struct FileData {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Operations since the last sync, in order.
    pending: Vec<Pending>,
}

#[derive(Debug, Clone)]
enum Pending {
    Write { position: u64, data: Vec<u8> },
    Truncate { len: u64 },
}

fn apply(image: &mut Vec<u8>, operation: &Pending) {
    match operation {
        Pending::Write { position, data } => write_into(image, *position, data),
        Pending::Truncate { len } => image.resize(to_usize(*len), 0),
    }
}

fn write_into(image: &mut Vec<u8>, position: u64, data: &[u8]) {
    let start = to_usize(position);
    let end = start + data.len();
    if image.len() < end {
        image.resize(end, 0);
    }
    image[start..end].copy_from_slice(data);
}

fn to_usize(value: u64) -> usize {
    usize::try_from(value).expect("simulated files are held in memory, so they fit in usize")
}

impl State {
    fn next_random(&mut self) -> u64 {
        // splitmix64: tiny, good enough for choosing tear points, and keeps the library free
        // of a random-number dependency.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn random_below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_random() % bound
        }
    }

    /// Counts a mutating operation; fails it if it is the one chosen to fail.
    fn operation(&mut self, path: PathBuf) -> Result<()> {
        let index = self.operations;
        self.operations += 1;
        if self.fail_operation_at == Some(index) {
            self.fail_operation_at = None;
            return Err(Error::Io {
                path,
                source: std::io::Error::other("injected I/O failure"),
            });
        }
        Ok(())
    }

    fn used_bytes(&self) -> u64 {
        let mut seen = Vec::new();
        let mut used = 0;
        for id in self.live_names.values() {
            if !seen.contains(id) {
                seen.push(*id);
                used += self.files.get(id).map_or(0, |file| file.live.len() as u64);
            }
        }
        used
    }
}

impl SimDirectory {
    /// An empty directory whose random choices (tear points) follow `seed`.
    pub fn new(seed: u64) -> Arc<SimDirectory> {
        Arc::new(SimDirectory {
            state: Arc::new(Mutex::new(State {
                generation: 0,
                live_names: BTreeMap::new(),
                durable_names: BTreeMap::new(),
                files: HashMap::new(),
                next_file_id: 0,
                operations: 0,
                writes: 0,
                fail_operation_at: None,
                storage_full_at_write: None,
                capacity_bytes: None,
                descriptors_exhausted_at_directory_sync: false,
                rng: seed,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Loses everything not yet durable, as a power loss would, and invalidates every open
    /// handle. Faults stay armed.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.lock();
        let state = &mut *state;
        state.generation += 1;
        if mode == CrashMode::KeepWritten {
            return;
        }
        state.live_names = state.durable_names.clone();
        let survivors: Vec<u64> = state.durable_names.values().copied().collect();
        let mut files = HashMap::new();
        for id in survivors {
            let Some(mut file) = state.files.remove(&id) else {
                continue;
            };
            let mut image = std::mem::take(&mut file.durable);
            if mode == CrashMode::TearUnsynced && !file.pending.is_empty() {
                let kept = to_usize(state.random_below(file.pending.len() as u64 + 1));
                for operation in &file.pending[..kept] {
                    apply(&mut image, operation);
                }
                if let Some(Pending::Write { position, data }) = file.pending.get(kept) {
                    let prefix = to_usize(state.random_below(data.len() as u64 + 1));
                    write_into(&mut image, *position, &data[..prefix]);
                }
            }
            files.insert(
                id,
                FileData {
                    live: image.clone(),
                    durable: image,
                    pending: Vec::new(),
                },
            );
        }
        state.files = files;
    }

    /// Number of mutating operations so far; with [`fail_operation`](Self::fail_operation) a
    /// test can sweep a failure over every operation of a workload.
    pub fn operation_count(&self) -> u64 {
        self.lock().operations
    }

    /// The mutating operation with index `index` (as counted by
    /// [`operation_count`](Self::operation_count)) fails once with an I/O error. A failed write
    /// leaves a random prefix of its data; a failed sync makes nothing durable.
    pub fn fail_operation(&self, index: u64) {
        self.lock().fail_operation_at = Some(index);
    }

    /// Number of file writes so far.
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    /// The write with index `index` (as counted by [`write_count`](Self::write_count)) fails once
    /// with `StorageFull`, after writing a random prefix of its data.
    pub fn fail_write_with_storage_full(&self, index: u64) {
        self.lock().storage_full_at_write = Some(index);
    }

    /// The next directory sync fails with `TooManyOpenFiles` (EMFILE) and makes nothing durable.
    pub fn exhaust_descriptors_at_next_directory_sync(&self) {
        self.lock().descriptors_exhausted_at_directory_sync = true;
    }

    /// Caps the live bytes of all files; a write that would exceed it writes what fits and
    /// fails with `StorageFull`. `None` removes the cap ("space returns").
    pub fn set_capacity(&self, capacity_bytes: Option<u64>) {
        self.lock().capacity_bytes = capacity_bytes;
    }

    /// Live bytes of all named files.
    pub fn used_bytes(&self) -> u64 {
        self.lock().used_bytes()
    }

    /// Disarms every injected fault and the capacity cap.
    pub fn clear_faults(&self) {
        let mut state = self.lock();
        state.fail_operation_at = None;
        state.storage_full_at_write = None;
        state.capacity_bytes = None;
        state.descriptors_exhausted_at_directory_sync = false;
    }

    /// Live names, sorted.
    pub fn file_names(&self) -> Vec<String> {
        self.lock().live_names.keys().cloned().collect()
    }

    /// The live bytes of `name`.
    pub fn file_bytes(&self, name: &str) -> Option<Vec<u8>> {
        let state = self.lock();
        let id = state.live_names.get(name)?;
        state.files.get(id).map(|file| file.live.clone())
    }

    /// Replaces the bytes of `name`, live and durable at once, as corruption on disk would.
    /// Creates the file (durably) if needed. Not counted as an operation.
    pub fn set_file_bytes(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.lock();
        let id = match state.live_names.get(name) {
            Some(id) => *id,
            None => {
                let id = state.next_file_id;
                state.next_file_id += 1;
                state.live_names.insert(name.to_owned(), id);
                state.durable_names.insert(name.to_owned(), id);
                id
            }
        };
        state.files.insert(
            id,
            FileData {
                live: bytes.clone(),
                durable: bytes,
                pending: Vec::new(),
            },
        );
    }

    /// Removes `name`, live and durable at once. Not counted as an operation.
    pub fn delete_file(&self, name: &str) {
        let mut state = self.lock();
        state.live_names.remove(name);
        state.durable_names.remove(name);
    }

    fn handle(&self, name: &str, id: u64, generation: u64) -> Arc<dyn File> {
        Arc::new(SimFile {
            state: Arc::clone(&self.state),
            id,
            generation,
            path: self.path(name),
        })
    }
}

/// A simulated machine's storage: one [`SimDirectory`] per path, each with its own seed (so
/// one directory's writer thread sees the same choices whatever other threads do), and the
/// metadata store on the seam. Crashing it crashes every directory at once.
#[derive(Debug)]
pub struct SimStorage {
    seed: u64,
    directories: Mutex<BTreeMap<PathBuf, Arc<SimDirectory>>>,
}

impl SimStorage {
    pub fn new(seed: u64) -> Arc<SimStorage> {
        Arc::new(SimStorage {
            seed,
            directories: Mutex::new(BTreeMap::new()),
        })
    }

    /// Every directory so far, by path (in path order, so choices over them replay).
    pub fn directories(&self) -> Vec<(PathBuf, Arc<SimDirectory>)> {
        self.directories_lock()
            .iter()
            .map(|(path, directory)| (path.clone(), Arc::clone(directory)))
            .collect()
    }

    /// Crashes every directory (see [`SimDirectory::crash`]).
    pub fn crash(&self, mode: CrashMode) {
        for (_, directory) in self.directories() {
            directory.crash(mode);
        }
    }

    /// Disarms every fault of every directory.
    pub fn clear_faults(&self) {
        for (_, directory) in self.directories() {
            directory.clear_faults();
        }
    }

    fn directories_lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Arc<SimDirectory>>> {
        self.directories
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sim_directory(&self, path: &Path) -> Arc<SimDirectory> {
        let mut directories = self.directories_lock();
        let directory = directories.entry(path.to_path_buf()).or_insert_with(|| {
            // FNV-1a of the path: a stable per-directory seed.
            let mut hash = 0xcbf2_9ce4_8422_2325_u64 ^ self.seed;
            for byte in path.as_os_str().as_encoded_bytes() {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
            }
            SimDirectory::new(hash)
        });
        Arc::clone(directory)
    }
}

impl Storage for SimStorage {
    fn directory(&self, path: &Path) -> Result<Arc<dyn Directory>> {
        Ok(self.sim_directory(path))
    }

    fn remove_directory(&self, path: &Path) -> Result<()> {
        // Immediately and durably, with every directory below it.
        self.directories_lock()
            .retain(|existing, _| !existing.starts_with(path));
        Ok(())
    }

    fn meta_store(&self, path: &Path) -> Result<MetaStore> {
        let parent = path.parent().unwrap_or(Path::new(""));
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| not_found(path.to_path_buf()))?;
        MetaStore::open_in(self.sim_directory(parent).as_ref(), name)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock can only come from a test assertion elsewhere; the state
    // itself is updated in steps that leave it consistent, so carrying on is sound.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn not_found(path: PathBuf) -> Error {
    Error::Io {
        path,
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    }
}

impl Directory for SimDirectory {
    fn list(&self) -> Result<Vec<String>> {
        Ok(self.file_names())
    }

    fn open(&self, name: &str) -> Result<Arc<dyn File>> {
        let state = self.lock();
        let id = *state
            .live_names
            .get(name)
            .ok_or_else(|| not_found(self.path(name)))?;
        let generation = state.generation;
        drop(state);
        Ok(self.handle(name, id, generation))
    }

    fn create(&self, name: &str) -> Result<Arc<dyn File>> {
        let mut state = self.lock();
        state.operation(self.path(name))?;
        let existing = state.live_names.get(name).copied();
        let id = match existing {
            Some(id) => {
                // Truncating an existing file is a pending data operation like any other.
                let file = state.files.entry(id).or_default();
                file.live.clear();
                file.pending.push(Pending::Truncate { len: 0 });
                id
            }
            None => {
                let id = state.next_file_id;
                state.next_file_id += 1;
                state.files.insert(id, FileData::default());
                state.live_names.insert(name.to_owned(), id);
                id
            }
        };
        let generation = state.generation;
        drop(state);
        Ok(self.handle(name, id, generation))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let mut state = self.lock();
        state.operation(self.path(name))?;
        match state.live_names.remove(name) {
            Some(_) => Ok(()),
            None => Err(not_found(self.path(name))),
        }
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let mut state = self.lock();
        state.operation(self.path(from))?;
        let id = state
            .live_names
            .remove(from)
            .ok_or_else(|| not_found(self.path(from)))?;
        state.live_names.insert(to.to_owned(), id);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut state = self.lock();
        if std::mem::take(&mut state.descriptors_exhausted_at_directory_sync) {
            return Err(Error::TooManyOpenFiles {
                path: self.path(""),
            });
        }
        state.operation(self.path(""))?;
        state.durable_names = state.live_names.clone();
        Ok(())
    }

    fn path(&self, name: &str) -> PathBuf {
        PathBuf::from("sim").join(name)
    }
}

/// A handle on a simulated file; dead after a crash.
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    id: u64,
    generation: u64,
    path: PathBuf,
}

impl SimFile {
    fn with_file<T>(&self, operation: impl FnOnce(&mut State, u64) -> Result<T>) -> Result<T> {
        let mut state = lock(&self.state);
        if state.generation != self.generation || !state.files.contains_key(&self.id) {
            return Err(Error::Io {
                path: self.path.clone(),
                source: std::io::Error::other("stale handle: the simulated machine crashed"),
            });
        }
        operation(&mut state, self.id)
    }
}

impl File for SimFile {
    fn read_at(&self, position: u64, buf: &mut [u8]) -> Result<usize> {
        self.with_file(|state, id| {
            let live = &state.files[&id].live;
            let start = to_usize(position).min(live.len());
            let count = buf.len().min(live.len() - start);
            buf[..count].copy_from_slice(&live[start..start + count]);
            Ok(count)
        })
    }

    fn write_at(&self, position: u64, data: &[u8]) -> Result<()> {
        self.with_file(|state, id| {
            let write_index = state.writes;
            state.writes += 1;
            let failed = state.operation(self.path.clone()).err();
            let mut allowed = data.len();
            let mut error = None;
            if let Some(failure) = failed {
                allowed = to_usize(state.random_below(data.len() as u64 + 1));
                error = Some(failure);
            } else if state.storage_full_at_write == Some(write_index) {
                state.storage_full_at_write = None;
                allowed = to_usize(state.random_below(data.len() as u64 + 1));
                error = Some(Error::StorageFull {
                    path: self.path.clone(),
                });
            } else if let Some(capacity) = state.capacity_bytes {
                let current = state.files[&id].live.len() as u64;
                let available = capacity.saturating_sub(state.used_bytes());
                let growth = (position + data.len() as u64).saturating_sub(current);
                if growth > available {
                    // Bytes up to the old end overwrite in place; beyond it only what fits.
                    allowed =
                        to_usize((current + available).saturating_sub(position)).min(data.len());
                    error = Some(Error::StorageFull {
                        path: self.path.clone(),
                    });
                }
            }
            if allowed > 0 {
                let file = state.files.get_mut(&id).expect("checked by with_file");
                write_into(&mut file.live, position, &data[..allowed]);
                file.pending.push(Pending::Write {
                    position,
                    data: data[..allowed].to_vec(),
                });
            }
            match error {
                Some(error) => Err(error),
                None => Ok(()),
            }
        })
    }

    fn sync_data(&self) -> Result<()> {
        self.with_file(|state, id| {
            state.operation(self.path.clone())?;
            let file = state.files.get_mut(&id).expect("checked by with_file");
            file.durable = file.live.clone();
            file.pending.clear();
            Ok(())
        })
    }

    fn len(&self) -> Result<u64> {
        self.with_file(|state, id| Ok(state.files[&id].live.len() as u64))
    }

    fn truncate(&self, len: u64) -> Result<()> {
        self.with_file(|state, id| {
            state.operation(self.path.clone())?;
            // Extending counts against the capacity too: a sparse file's holes need space once
            // written, and redb grows its file this way before writing into it.
            if let Some(capacity) = state.capacity_bytes {
                let growth = len.saturating_sub(state.files[&id].live.len() as u64);
                if growth > capacity.saturating_sub(state.used_bytes()) {
                    return Err(Error::StorageFull {
                        path: self.path.clone(),
                    });
                }
            }
            let file = state.files.get_mut(&id).expect("checked by with_file");
            file.live.resize(to_usize(len), 0);
            file.pending.push(Pending::Truncate { len });
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsynced_writes_vanish_on_crash_and_synced_ones_stay() {
        let directory = SimDirectory::new(1);
        let file = directory.create("a").unwrap();
        file.write_at(0, b"durable").unwrap();
        file.sync_data().unwrap();
        directory.sync().unwrap();
        file.write_at(7, b" and not").unwrap();
        assert_eq!(directory.file_bytes("a").unwrap(), b"durable and not");
        directory.crash(CrashMode::DropUnsynced);
        assert_eq!(directory.file_bytes("a").unwrap(), b"durable");
        assert!(file.len().is_err(), "handles die with the crash");
    }

    #[test]
    fn names_need_a_directory_sync_to_survive() {
        let directory = SimDirectory::new(1);
        let file = directory.create("a").unwrap();
        file.sync_data().unwrap();
        directory.crash(CrashMode::DropUnsynced);
        assert!(directory.file_names().is_empty());
    }

    #[test]
    fn torn_crashes_keep_a_prefix_of_the_pending_writes() {
        for seed in 0..50 {
            let directory = SimDirectory::new(seed);
            let file = directory.create("a").unwrap();
            directory.sync().unwrap();
            file.write_at(0, b"0123456789").unwrap();
            directory.crash(CrashMode::TearUnsynced);
            let bytes = directory.file_bytes("a").unwrap();
            assert!(b"0123456789".starts_with(&bytes), "{bytes:?}");
        }
    }

    #[test]
    fn the_chosen_operation_fails_once() {
        let directory = SimDirectory::new(1);
        let file = directory.create("a").unwrap();
        let next = directory.operation_count();
        directory.fail_operation(next + 1);
        file.write_at(0, b"x").unwrap();
        assert!(file.sync_data().is_err());
        file.sync_data().unwrap();
    }

    #[test]
    fn capacity_caps_growth_and_returns_storage_full() {
        let directory = SimDirectory::new(1);
        let file = directory.create("a").unwrap();
        directory.set_capacity(Some(10));
        file.write_at(0, b"12345678").unwrap();
        let error = file.write_at(8, b"abcd").unwrap_err();
        assert!(matches!(error, Error::StorageFull { .. }));
        assert_eq!(directory.file_bytes("a").unwrap(), b"12345678ab");
        directory.set_capacity(None);
        file.write_at(10, b"cd").unwrap();
    }
}
