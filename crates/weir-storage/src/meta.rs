//! The metadata store: a crash-safe key-value store (redb) in tables. (API skeleton.)

use std::path::Path;

use crate::Result;

/// One change in a metadata write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOp {
    Put { table: &'static str, key: Vec<u8>, value: Vec<u8> },
    Delete { table: &'static str, key: Vec<u8> },
}

/// Offsets, ack state, schedules and transactions, keyed by table and byte key.
pub struct MetaStore {
    _private: (),
}

impl MetaStore {
    pub fn open(path: &Path) -> Result<MetaStore> {
        let _ = path;
        todo!()
    }

    pub fn get(&self, table: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let _ = (table, key);
        todo!()
    }

    /// Every entry of `table` whose key starts with `prefix`, in key order.
    pub fn scan(&self, table: &'static str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let _ = (table, prefix);
        todo!()
    }

    /// Applies `ops` atomically. With `durable`, returns after they are on stable storage;
    /// without, they survive a process crash once a later durable write commits.
    pub fn write(&self, ops: &[MetaOp], durable: bool) -> Result<()> {
        let _ = (ops, durable);
        todo!()
    }
}
