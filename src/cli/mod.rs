//! The verbs of the `weir` command line, one module each. A verb owns its `clap` arguments and
//! an async `run` returning `anyhow::Result`; `main.rs` dispatches to it.

pub mod serve;
