//! The seam under the log: a directory of files. (API skeleton.)

/// A directory of segment and index files.
pub trait Directory: Send + Sync {}
