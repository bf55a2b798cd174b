//! Weir's storage: the partition log and the metadata store. A plain synchronous library: no
//! runtime, no sockets, no idea what a subscription is. `weir-core` decides which thread runs it.
//!
//! - [`PartitionLog`]: one partition's segmented, append-only log of [`Batch`]es (the byte layout
//!   of `weir-batch`, documented in `docs/storage-format.md`). One writer appends and syncs;
//!   any number of [`LogReader`]s read concurrently and never block it.
//! - [`io`]: the small seam under the log (files in a directory), with a real file system
//!   implementation and a fault-injecting simulation for crash tests.
//! - [`MetaStore`]: a crash-safe key-value store (redb) for consumer offsets, ack state,
//!   schedules and transactions.

pub mod error;
pub mod io;
pub mod log;
pub mod meta;

pub use error::{Error, Result};
pub use log::{Appended, LogConfig, LogReader, PartitionLog, RecoveryReport, RetentionReport};
pub use meta::{MetaOp, MetaStore};
pub use weir_batch::{Batch, BatchBuilder, Record};
