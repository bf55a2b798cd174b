//! Storage errors: I/O, corruption, a full disk and a poisoned log are different outcomes.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The disk (or quota) is full; nothing already stored was harmed.
    #[error("storage full writing {path}")]
    StorageFull { path: PathBuf },
    /// The process or system ran out of file descriptors (EMFILE/ENFILE) opening `path`.
    /// Nothing was changed; retry once descriptors are free. Never poisons a log.
    #[error("too many open files opening {path}")]
    TooManyOpenFiles { path: PathBuf },
    /// Bytes on disk that do not decode: which file and where.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// An earlier sync failed; the log refuses writes until it is reopened (fail-stop).
    #[error("log poisoned by an earlier failed sync; reopen to recover")]
    Poisoned,
    /// A batch larger than the configured maximum.
    #[error("batch of {length} bytes exceeds the maximum of {limit}")]
    BatchTooLarge { length: usize, limit: usize },
    /// `truncate_from(offset)` where `offset` is not the base offset of a stored batch nor
    /// the log's next offset (inside a batch, below the start or past the end).
    #[error("offset {offset} is not a batch boundary of the log")]
    NotBatchBoundary { offset: u64 },
    /// A Raft term start that does not follow the last one (its term, first index and first
    /// offset must all be larger).
    #[error("Raft term {term} starting at index {first_index} does not follow the last term start")]
    TermOutOfOrder { term: u64, first_index: u64 },
    /// A Raft vote larger than the vote file takes (`raft::VOTE_MAX_BYTES`).
    #[error("vote of {length} bytes exceeds the maximum of {limit}")]
    VoteTooLarge { length: usize, limit: usize },
    #[error("metadata store: {0}")]
    Meta(String),
}
