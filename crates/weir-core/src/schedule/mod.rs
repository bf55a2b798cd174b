//! The schedule: delayed messages, durable on disk until due, handed over from memory.
//!
//! - [`store`]: the durable layout in the metadata store. Entries are keyed by time bucket,
//!   then serial, so a call's inserts append at the end of the few buckets they fall in
//!   instead of landing on a page per due time, a bucket loads with one range scan, and a
//!   delivered bucket is removed as one range.
//! - [`window`]: the near-term window in memory: the `(due, id)` of every entry of the buckets
//!   loaded so far, in due order. Buckets are loaded a little ahead of time, so handing over
//!   touches memory and a read snapshot only, never the write lock of the store.

pub mod store;
pub mod window;

pub use store::ScheduledEntry;
pub use window::{Cancelled, Window};

/// Time covered by one bucket of the due index. Wider buckets cluster a call's inserts onto
/// fewer pages; narrower ones keep less in memory ahead of time.
pub const BUCKET_MS: i64 = 8_192;

/// How far ahead of its due time a bucket is loaded into memory: long enough for a load to
/// finish well before its first entry is due.
pub const LOOKAHEAD_MS: i64 = 2 * BUCKET_MS;

/// The bucket holding `due_ms` (times before the epoch count as the epoch).
#[must_use]
pub fn bucket_of(due_ms: i64) -> u64 {
    (due_ms.max(0) / BUCKET_MS) as u64
}

/// The first millisecond of `bucket`.
#[must_use]
pub fn bucket_start(bucket: u64) -> i64 {
    i64::try_from(bucket)
        .unwrap_or(i64::MAX)
        .saturating_mul(BUCKET_MS)
}
