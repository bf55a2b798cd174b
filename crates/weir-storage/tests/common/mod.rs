//! Helpers shared by the integration tests: building batches whose payloads can be checked.
#![allow(dead_code)]

use weir_storage::{Batch, BatchBuilder};

/// A batch of `records` records, each `value_len` bytes, timestamps from `timestamp_ms` on.
pub fn batch(records: usize, timestamp_ms: i64, value_len: usize) -> Batch {
    let mut builder = BatchBuilder::new();
    for index in 0..records {
        let value: Vec<u8> = (0..value_len).map(|byte| (byte + index) as u8).collect();
        builder.push(timestamp_ms + index as i64, None, &[], &value);
    }
    Batch::parse(builder.finish(), usize::MAX).expect("a freshly built batch parses")
}

/// A batch with explicit record timestamps.
pub fn batch_with_timestamps(timestamps: &[i64], value_len: usize, seed: u8) -> Batch {
    let mut builder = BatchBuilder::new();
    for (index, timestamp) in timestamps.iter().enumerate() {
        let value = vec![seed.wrapping_add(index as u8); value_len];
        builder.push(*timestamp, Some(b"key"), &[], &value);
    }
    Batch::parse(builder.finish(), usize::MAX).expect("a freshly built batch parses")
}

/// The bytes `batch` has once stored at `base_offset`.
pub fn stored_bytes(batch: &Batch, base_offset: u64) -> Vec<u8> {
    let mut bytes = batch.as_bytes().to_vec();
    Batch::set_base_offset(&mut bytes, base_offset);
    bytes
}
