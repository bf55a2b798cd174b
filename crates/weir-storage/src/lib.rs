//! Weir's storage: the partition log and the metadata store. A plain synchronous library: no
//! runtime, no sockets, no idea what a subscription is. `weir-core` decides which thread runs it.
//!
//! - [`PartitionLog`]: one partition's segmented, append-only log of [`Batch`]es (the byte layout
//!   of `weir-batch`, documented in `docs/storage-format.md`). One writer appends and syncs;
//!   any number of [`LogReader`]s read concurrently and never block it.
//! - [`io`]: the small seam under the log (files in a directory), with a real file system
//!   implementation and a fault-injecting simulation for crash tests.
//! - [`raft`]: the small durable files a partition's Raft group keeps beside its log (vote,
//!   term starts); with [`PartitionLog::truncate_from`], the storage side of replication.
//! - [`MetaStore`]: a crash-safe key-value store (redb) for consumer offsets, ack state,
//!   schedules and transactions.
//!
//! ```
//! use weir_storage::io::sim::SimDirectory;
//! use weir_storage::{Batch, BatchBuilder, LogConfig, PartitionLog};
//!
//! // `PartitionLog::open_path(dir, config)` opens a real directory; tests use the simulation.
//! let (mut log, _report) = PartitionLog::open(SimDirectory::new(0), LogConfig::default())?;
//! let mut builder = BatchBuilder::new();
//! builder.push(1_700_000_000_000, Some(b"order-1"), &[], b"hello");
//! let batch = Batch::parse(builder.finish(), 1 << 20)?;
//! let appended = log.append(&batch, 0)?; // buffered in memory
//! log.sync()?; // one write and one fdatasync for everything appended (group commit)
//! let reader = log.reader(); // Clone + Send + Sync; never blocks the writer
//! let batches = reader.read(appended.base_offset, 1 << 20)?;
//! let record = batches[0].records().next().expect("one record")?;
//! assert_eq!(record.offset, appended.base_offset);
//! assert_eq!(&record.value[..], b"hello");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
pub mod io;
pub mod log;
pub mod meta;
pub mod raft;

pub use error::{Error, Result};
pub use log::{Appended, LogConfig, LogReader, PartitionLog, RecoveryReport, RetentionReport};
pub use meta::{MetaOp, MetaStore};
pub use weir_batch::{Batch, BatchBuilder, Record};
