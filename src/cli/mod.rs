//! The verbs of the `weir` command line, one module each. A verb owns its `clap` arguments and
//! an async `run` returning `anyhow::Result`; `main.rs` dispatches to it.

pub mod bench;
pub mod connection;
pub mod dlq;
pub mod duration;
pub mod exchange;
pub mod group;
pub mod output;
pub mod position;
pub mod publish;
pub mod schedule;
pub mod serve;
pub mod stats;
pub mod subscribe;
pub mod top;
pub mod topic;
pub mod transaction;
