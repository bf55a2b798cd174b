//! The seam under the log: a flat directory of files, each read and written at explicit
//! positions. The log does all of its I/O through [`Directory`] and [`File`], so a test can swap
//! the real file system ([`FsDirectory`]) for the fault-injecting [`sim::SimDirectory`], which
//! keeps written-but-unsynced bytes apart from durable ones and can crash, tear writes, fail an
//! operation or run out of space. This module knows nothing about segments or batches.
//!
//! Both traits take `&self` everywhere: one writer and many readers share a file through an
//! `Arc`, and positional I/O (`pread`/`pwrite`) needs no cursor, hence no lock.

use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Error, MetaStore, Result};

pub mod sim;

/// A directory of segment and index files. Names are plain file names, never paths.
pub trait Directory: Send + Sync + fmt::Debug {
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> Result<Vec<String>>;
    /// Opens an existing file for reading and writing.
    fn open(&self, name: &str) -> Result<Arc<dyn File>>;
    /// Creates a file, or truncates it to zero bytes if it exists. The new name is durable only
    /// after [`sync`](Self::sync).
    fn create(&self, name: &str) -> Result<Arc<dyn File>>;
    /// Removes a file. Durable only after [`sync`](Self::sync).
    fn remove(&self, name: &str) -> Result<()>;
    /// Renames a file, replacing `to` if it exists. Durable only after [`sync`](Self::sync).
    fn rename(&self, from: &str, to: &str) -> Result<()>;
    /// Makes the directory's entries (creations, removals, renames) durable.
    fn sync(&self) -> Result<()>;
    /// Where `name` lives, for error messages and logs.
    fn path(&self, name: &str) -> PathBuf;
}

/// One open file, read and written at explicit byte positions.
pub trait File: Send + Sync + fmt::Debug {
    /// Reads into `buf` from `position` until `buf` is full or the file ends; returns the number
    /// of bytes read (short only at the end of the file).
    fn read_at(&self, position: u64, buf: &mut [u8]) -> Result<usize>;
    /// Writes all of `data` at `position`, extending the file if needed. On error a prefix of
    /// `data` may have been written.
    fn write_at(&self, position: u64, data: &[u8]) -> Result<()>;
    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> Result<()>;
    /// The file's current size in bytes.
    fn len(&self) -> Result<u64>;
    /// Cuts (or extends with zeros) the file to `len` bytes.
    fn truncate(&self, len: u64) -> Result<()>;

    fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

/// Where a broker keeps its files: directories by path and the metadata store. The broker does
/// all of its storage I/O through one `Storage`, so a test can run a whole broker on
/// [`sim::SimStorage`] (simulated directories with crashes and faults) instead of
/// [`FsStorage`], the real file system.
pub trait Storage: Send + Sync + fmt::Debug {
    /// The directory at `path`, created (with its parents) if needed.
    fn directory(&self, path: &Path) -> Result<Arc<dyn Directory>>;
    /// Removes the directory at `path` with everything in it; an absent one is not an error.
    fn remove_directory(&self, path: &Path) -> Result<()>;
    /// Opens (or creates) the metadata store file at `path`.
    fn meta_store(&self, path: &Path) -> Result<MetaStore>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsStorage;

impl Storage for FsStorage {
    fn directory(&self, path: &Path) -> Result<Arc<dyn Directory>> {
        Ok(Arc::new(FsDirectory::open(path)?))
    }

    fn remove_directory(&self, path: &Path) -> Result<()> {
        match std::fs::remove_dir_all(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(map_io_error(path, error))
            }
            _ => Ok(()),
        }
    }

    fn meta_store(&self, path: &Path) -> Result<MetaStore> {
        // redb's own file backend: its file lock refuses a second broker on the same directory.
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|error| map_io_error(parent, error))?;
        }
        MetaStore::open(path)
    }
}

/// Maps an OS error to the storage error: a full disk or quota is `StorageFull`, so callers can
/// tell "try later" from "something is broken".
pub fn map_io_error(path: &Path, source: std::io::Error) -> Error {
    match source.raw_os_error() {
        Some(code) if code == libc::ENOSPC || code == libc::EDQUOT => Error::StorageFull {
            path: path.to_path_buf(),
        },
        Some(code) if code == libc::EMFILE || code == libc::ENFILE => Error::TooManyOpenFiles {
            path: path.to_path_buf(),
        },
        _ => Error::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

/// The real file system: one OS directory.
#[derive(Debug, Clone)]
pub struct FsDirectory {
    root: PathBuf,
}

impl FsDirectory {
    /// Uses the directory at `root`, creating it (and its parents) if needed.
    pub fn open(root: &Path) -> Result<FsDirectory> {
        std::fs::create_dir_all(root).map_err(|error| map_io_error(root, error))?;
        Ok(FsDirectory {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl Directory for FsDirectory {
    fn list(&self) -> Result<Vec<String>> {
        let entries =
            std::fs::read_dir(&self.root).map_err(|error| map_io_error(&self.root, error))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|error| map_io_error(&self.root, error))?;
            // A name that is not UTF-8 is not one of ours; the log ignores unknown names anyway.
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> Result<Arc<dyn File>> {
        let path = self.path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|error| map_io_error(&path, error))?;
        Ok(Arc::new(FsFile { file, path }))
    }

    fn create(&self, name: &str) -> Result<Arc<dyn File>> {
        let path = self.path(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|error| map_io_error(&path, error))?;
        Ok(Arc::new(FsFile { file, path }))
    }

    fn remove(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        std::fs::remove_file(&path).map_err(|error| map_io_error(&path, error))
    }

    fn rename(&self, from: &str, to: &str) -> Result<()> {
        let path = self.path(from);
        std::fs::rename(&path, self.path(to)).map_err(|error| map_io_error(&path, error))
    }

    fn sync(&self) -> Result<()> {
        // fsync on a directory handle makes its entries durable (POSIX leaves this to the file
        // system; Linux file systems honour it).
        let directory =
            std::fs::File::open(&self.root).map_err(|error| map_io_error(&self.root, error))?;
        directory
            .sync_all()
            .map_err(|error| map_io_error(&self.root, error))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// A file of an [`FsDirectory`].
#[derive(Debug)]
pub struct FsFile {
    file: std::fs::File,
    path: PathBuf,
}

impl File for FsFile {
    fn read_at(&self, position: u64, buf: &mut [u8]) -> Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self
                .file
                .read_at(&mut buf[filled..], position + filled as u64)
            {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => return Err(map_io_error(&self.path, error)),
            }
        }
        Ok(filled)
    }

    fn write_at(&self, position: u64, data: &[u8]) -> Result<()> {
        self.file
            .write_all_at(data, position)
            .map_err(|error| map_io_error(&self.path, error))
    }

    fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|error| map_io_error(&self.path, error))
    }

    fn len(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|metadata| metadata.len())
            .map_err(|error| map_io_error(&self.path, error))
    }

    fn truncate(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|error| map_io_error(&self.path, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_files_read_back_what_was_written_at_positions() {
        let temporary = tempfile::tempdir().unwrap();
        let directory = FsDirectory::open(temporary.path()).unwrap();
        let file = directory.create("a.log").unwrap();
        file.write_at(0, b"hello").unwrap();
        file.write_at(5, b" world").unwrap();
        let mut buf = [0u8; 32];
        let read = file.read_at(0, &mut buf).unwrap();
        assert_eq!(&buf[..read], b"hello world");
        file.truncate(5).unwrap();
        assert_eq!(file.len().unwrap(), 5);
        file.sync_data().unwrap();
        directory.sync().unwrap();
        directory.rename("a.log", "b.log").unwrap();
        assert_eq!(directory.list().unwrap(), vec!["b.log".to_owned()]);
        directory.remove("b.log").unwrap();
        assert!(directory.list().unwrap().is_empty());
        assert!(matches!(directory.open("missing"), Err(Error::Io { .. })));
    }

    #[test]
    fn enospc_maps_to_storage_full() {
        let error = map_io_error(
            Path::new("x"),
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        );
        assert!(matches!(error, Error::StorageFull { .. }));
        let error = map_io_error(
            Path::new("x"),
            std::io::Error::from_raw_os_error(libc::EMFILE),
        );
        assert!(matches!(error, Error::TooManyOpenFiles { .. }));
        let error = map_io_error(Path::new("x"), std::io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(error, Error::Io { .. }));
    }
}
