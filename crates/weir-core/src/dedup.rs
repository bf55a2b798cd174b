//! Deduplication in one partition: producer-supplied message ids seen within a window, and
//! idempotent producers' sequence numbers. Lives on the partition's writer thread, the one
//! place that orders appends, so a check and the append it guards cannot race.
//!
//! State is rebuilt on open from the log itself (the last window of it): the log is the only
//! record of what was stored, so dedup survives restarts without writes of its own.
//!
//! Dedup is atomic with the log's commit: what a group commit records stays provisional until
//! [`Dedup::commit`]; if the log's flush or sync fails, the log drops those batches and reuses
//! their offsets, so [`Dedup::rollback`] forgets them too (otherwise a retry would be confirmed
//! as a duplicate of messages never stored).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};

use weir_batch::{Batch, Record};

use crate::error::{Error, Result};

/// How many recent batches of each idempotent producer are remembered, so a retry of any of
/// them (not only the last) is answered with its original offsets.
const PRODUCER_BATCHES: usize = 8;

#[derive(Debug, Clone)]
struct ProducedBatch {
    base_sequence: u32,
    last_sequence: u32,
    /// Where each record of the batch is stored: usually contiguous from the batch's base
    /// offset; listed when some were earlier copies found by message id.
    offsets: StoredAt,
}

#[derive(Debug, Clone)]
enum StoredAt {
    Contiguous(u64),
    Listed(Vec<u64>),
}

#[derive(Debug, Default, Clone)]
struct ProducerState {
    /// Oldest first.
    batches: VecDeque<ProducedBatch>,
    last_seen_ms: i64,
}

/// What to do with a batch about to be appended.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append all of it.
    Append,
    /// Append only the records marked `true`; the others duplicate these stored offsets.
    Partial {
        keep: Vec<bool>,
        duplicates: Vec<u64>,
    },
    /// Store nothing: every record is already stored (by message id), at these offsets.
    Duplicate(Vec<u64>),
    /// Store nothing: an idempotent producer sent this batch before; here is where it went.
    Retry(Vec<u64>),
}

/// A message id as remembered: a 128-bit hash of it. Fixed-size keys cost no allocation per id,
/// keep a window of a million ids in tens of MiB, and make growing the map a move of 24-byte
/// entries (rehashing owned byte strings stalled the partition's writer for a tenth of a
/// second at a million ids). Two ids collide with probability about 2^-128 per pair.
type IdHash = u128;

fn id_hash(id: &[u8]) -> IdHash {
    // SipHash with fixed keys, twice with different prefixes; stable within one build, which
    // is all an in-memory filter rebuilt from the log at open needs.
    let half = |prefix: u8| {
        let mut hasher = std::hash::DefaultHasher::new();
        prefix.hash(&mut hasher);
        id.hash(&mut hasher);
        hasher.finish()
    };
    (u128::from(half(0)) << 64) | u128::from(half(1))
}

/// Hashes an [`IdHash`], which is a hash already, by taking its low bits.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

type IdMap = HashMap<IdHash, u64, BuildHasherDefault<Prehashed>>;

pub struct Dedup {
    window_ms: i64,
    /// Message id → offset.
    ids: IdMap,
    /// (stored at ms, id), oldest first, to expire `ids`.
    expiry: VecDeque<(i64, IdHash)>,
    producers: HashMap<u64, ProducerState>,
    uncommitted: Uncommitted,
}

/// What was recorded since the last [`Dedup::commit`], enough to undo it.
#[derive(Default)]
struct Uncommitted {
    /// Ids inserted, with the offset each replaced, in order.
    ids: Vec<(IdHash, Option<u64>)>,
    /// Entries at the back of `expiry` pushed since the last commit.
    expiry_entries: usize,
    /// Each producer touched, as it was at the last commit (`None`: it was unknown).
    producers: HashMap<u64, Option<ProducerState>>,
}

impl Dedup {
    pub fn new(window_ms: u64) -> Dedup {
        Dedup {
            window_ms: window_ms as i64,
            ids: IdMap::default(),
            expiry: VecDeque::new(),
            producers: HashMap::new(),
            uncommitted: Uncommitted::default(),
        }
    }

    /// Makes everything recorded since the last commit permanent: the log made it durable.
    pub fn commit(&mut self) {
        self.uncommitted.ids.clear();
        self.uncommitted.expiry_entries = 0;
        self.uncommitted.producers.clear();
    }

    /// Forgets everything recorded since the last commit: the log failed to store it.
    pub fn rollback(&mut self) {
        let uncommitted = &mut self.uncommitted;
        for (id, previous) in uncommitted.ids.drain(..).rev() {
            match previous {
                Some(offset) => self.ids.insert(id, offset),
                None => self.ids.remove(&id),
            };
        }
        for _ in 0..uncommitted.expiry_entries {
            self.expiry.pop_back();
        }
        uncommitted.expiry_entries = 0;
        for (producer_id, before) in uncommitted.producers.drain() {
            match before {
                Some(state) => self.producers.insert(producer_id, state),
                None => self.producers.remove(&producer_id),
            };
        }
    }

    fn expire(&mut self, now_ms: i64) {
        let horizon = now_ms - self.window_ms;
        while let Some((stored_ms, _)) = self.expiry.front() {
            if *stored_ms >= horizon {
                break;
            }
            // Expiring into the uncommitted tail (a zero window) shrinks what a rollback pops.
            if self.expiry.len() <= self.uncommitted.expiry_entries {
                self.uncommitted.expiry_entries -= 1;
            }
            if let Some((_, id)) = self.expiry.pop_front() {
                self.ids.remove(&id);
            }
        }
        self.producers
            .retain(|_, producer| producer.last_seen_ms >= horizon);
    }

    /// Decides what of `batch` to store. `next_offset` is where it would start.
    pub fn check(&mut self, batch: &Batch, next_offset: u64, now_ms: i64) -> Result<Verdict> {
        self.expire(now_ms);
        if let Some((producer_id, base_sequence)) = batch.producer()
            && let Some(producer) = self.producers.get(&producer_id)
        {
            let count = batch.record_count();
            if let Some(previous) = producer
                .batches
                .iter()
                .find(|previous| previous.base_sequence == base_sequence)
            {
                let offsets = match &previous.offsets {
                    StoredAt::Contiguous(base_offset) => (0..u64::from(count))
                        .map(|index| base_offset + index)
                        .collect(),
                    StoredAt::Listed(offsets) => offsets.clone(),
                };
                return Ok(Verdict::Retry(offsets));
            }
            if let Some(last) = producer.batches.back() {
                let expected = last.last_sequence.wrapping_add(1);
                if base_sequence != expected {
                    return Err(Error::InvalidArgument(format!(
                        "producer {producer_id}: sequence {base_sequence} out of order, expected {expected}"
                    )));
                }
            }
        }
        if !batch.has_message_ids() {
            return Ok(Verdict::Append);
        }
        let mut keep = Vec::with_capacity(batch.record_count() as usize);
        let mut duplicates = Vec::new();
        // Ids within this batch count too: the second of two equal ids is a duplicate.
        let mut in_batch = IdMap::default();
        let mut next = next_offset;
        for record in batch.records() {
            let record = record?;
            match record.message_id().map(|id| id_hash(id)) {
                Some(id) => match self.ids.get(&id).or_else(|| in_batch.get(&id)) {
                    Some(&original) => {
                        duplicates.push(original);
                        keep.push(false);
                    }
                    None => {
                        in_batch.insert(id, next);
                        next += 1;
                        keep.push(true);
                    }
                },
                None => {
                    next += 1;
                    keep.push(true);
                }
            }
        }
        Ok(if duplicates.is_empty() {
            Verdict::Append
        } else if keep.iter().all(|kept| !kept) {
            Verdict::Duplicate(duplicates)
        } else {
            Verdict::Partial { keep, duplicates }
        })
    }

    /// Remembers a stored batch whose first record got `base_offset`.
    pub fn record(&mut self, batch: &Batch, base_offset: u64, now_ms: i64) {
        self.record_producer(batch, StoredAt::Contiguous(base_offset), now_ms);
        self.record_ids(batch, base_offset, now_ms);
    }

    /// Remembers an idempotent producer's batch of which some or all records were earlier
    /// copies: `offsets` says where each record is, so its sequence numbers are counted and a
    /// retry is answered with the same places.
    pub fn record_listed(&mut self, batch: &Batch, offsets: Vec<u64>, now_ms: i64) {
        self.record_producer(batch, StoredAt::Listed(offsets), now_ms);
    }

    fn record_producer(&mut self, batch: &Batch, offsets: StoredAt, now_ms: i64) {
        if let Some((producer_id, base_sequence)) = batch.producer() {
            if !self.uncommitted.producers.contains_key(&producer_id) {
                let before = self.producers.get(&producer_id).cloned();
                self.uncommitted.producers.insert(producer_id, before);
            }
            let producer = self.producers.entry(producer_id).or_default();
            producer.last_seen_ms = now_ms;
            producer.batches.push_back(ProducedBatch {
                base_sequence,
                last_sequence: base_sequence.wrapping_add(batch.record_count() - 1),
                offsets,
            });
            if producer.batches.len() > PRODUCER_BATCHES {
                producer.batches.pop_front();
            }
        }
    }

    /// Remembers the message ids of a stored batch whose first record got `base_offset`.
    pub fn record_ids(&mut self, batch: &Batch, base_offset: u64, now_ms: i64) {
        if batch.has_message_ids() {
            let shift = base_offset.wrapping_sub(batch.base_offset());
            for record in batch.records().flatten() {
                self.remember(&record, record.offset.wrapping_add(shift), now_ms);
            }
        }
    }

    fn remember(&mut self, record: &Record, offset: u64, now_ms: i64) {
        if let Some(id) = record.message_id() {
            // A hash, not a slice: a slice would keep the whole batch in memory for the window.
            let id = id_hash(id);
            let previous = self.ids.insert(id, offset);
            self.uncommitted.ids.push((id, previous));
            self.expiry.push_back((now_ms, id));
            self.uncommitted.expiry_entries += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use weir_batch::BatchBuilder;

    fn batch(ids: &[Option<&str>], producer: Option<(u64, u32)>, base_offset: u64) -> Batch {
        let mut builder = BatchBuilder::new();
        if let Some((producer_id, sequence)) = producer {
            builder.producer(producer_id, sequence);
        }
        for id in ids {
            match id {
                Some(id) => builder.push(1, None, &[("weir.id", id.as_bytes())], b"v"),
                None => builder.push(1, None, &[], b"v"),
            };
        }
        let mut bytes = builder.finish().to_vec();
        Batch::set_base_offset(&mut bytes, base_offset);
        Batch::parse(bytes.into(), usize::MAX).unwrap()
    }

    #[test]
    fn a_message_id_is_stored_once_within_the_window_and_again_after() {
        let mut dedup = Dedup::new(1_000);
        let first = batch(&[Some("m-1"), None], None, 0);
        assert_eq!(dedup.check(&first, 0, 0).unwrap(), Verdict::Append);
        dedup.record(&first, 0, 0);
        let again = batch(&[Some("m-1")], None, 2);
        assert_eq!(
            dedup.check(&again, 2, 999).unwrap(),
            Verdict::Duplicate(vec![0])
        );
        let mixed = batch(&[Some("m-2"), Some("m-1"), Some("m-2")], None, 2);
        assert_eq!(
            dedup.check(&mixed, 2, 999).unwrap(),
            Verdict::Partial {
                keep: vec![true, false, false],
                duplicates: vec![0, 2]
            }
        );
        assert_eq!(
            dedup.check(&again, 2, 1_001).unwrap(),
            Verdict::Append,
            "window passed"
        );
    }

    /// Remembered ids must not pin the batch they came in (1 MiB batches held for the whole
    /// window would cost the memory the scheduler's hand-over ids once did).
    #[test]
    fn remembered_ids_do_not_keep_their_batch_alive() {
        let mut dedup = Dedup::new(60_000);
        let mut builder = BatchBuilder::new();
        builder.push(1, None, &[("weir.id", b"m-1")], &[7; 4096]);
        let bytes = builder.finish();
        let batch = Batch::parse(bytes.clone(), usize::MAX).unwrap();
        dedup.record(&batch, 0, 0);
        drop(batch);
        assert!(
            bytes.is_unique(),
            "the dedup filter holds no slice of the batch"
        );
        let again = batch_of(&bytes);
        assert_eq!(
            dedup.check(&again, 1, 1).unwrap(),
            Verdict::Duplicate(vec![0])
        );
    }

    /// A failed log commit reuses the offsets it had given: dedup must forget those ids and
    /// sequences, and keep what was committed before.
    #[test]
    fn a_rollback_forgets_exactly_what_the_failed_commit_recorded() {
        let mut dedup = Dedup::new(60_000);
        let committed = batch(&[Some("a")], Some((7, 0)), 0);
        dedup.record(&committed, 0, 0);
        dedup.commit();
        let failed = batch(&[Some("b"), Some("c")], Some((7, 1)), 1);
        assert_eq!(dedup.check(&failed, 1, 0).unwrap(), Verdict::Append);
        dedup.record(&failed, 1, 0);
        let stranger = batch(&[Some("d")], Some((8, 0)), 3);
        dedup.record(&stranger, 3, 0);
        dedup.rollback();
        assert_eq!(
            dedup.check(&failed, 1, 0).unwrap(),
            Verdict::Append,
            "the retry is stored, not answered as a duplicate"
        );
        assert_eq!(dedup.check(&stranger, 1, 0).unwrap(), Verdict::Append);
        assert_eq!(
            dedup.check(&committed, 1, 0).unwrap(),
            Verdict::Retry(vec![0])
        );
        let again = batch(&[Some("a")], None, 1);
        assert_eq!(
            dedup.check(&again, 1, 0).unwrap(),
            Verdict::Duplicate(vec![0])
        );
        assert_eq!(dedup.expiry.len(), 1);
    }

    fn batch_of(bytes: &Bytes) -> Batch {
        Batch::parse(bytes.clone(), usize::MAX).unwrap()
    }

    /// A producer's batch whose records were all earlier copies by id still counts in its
    /// numbering, and its retry is answered with those copies' places.
    #[test]
    fn a_producer_batch_of_duplicates_advances_its_sequence() {
        let mut dedup = Dedup::new(60_000);
        let original = batch(&[Some("a"), Some("b")], None, 0);
        dedup.record(&original, 0, 0);
        let again = batch(&[Some("b"), Some("a")], Some((5, 0)), 2);
        let Verdict::Duplicate(offsets) = dedup.check(&again, 2, 0).unwrap() else {
            panic!("all duplicates")
        };
        assert_eq!(offsets, vec![1, 0]);
        dedup.record_listed(&again, offsets, 0);
        assert_eq!(
            dedup.check(&again, 2, 0).unwrap(),
            Verdict::Retry(vec![1, 0])
        );
        let next = batch(&[None], Some((5, 2)), 2);
        assert_eq!(dedup.check(&next, 2, 0).unwrap(), Verdict::Append);
    }

    #[test]
    fn an_idempotent_producers_retry_gets_the_original_offsets() {
        let mut dedup = Dedup::new(60_000);
        let first = batch(&[None, None], Some((7, 0)), 10);
        assert_eq!(dedup.check(&first, 10, 0).unwrap(), Verdict::Append);
        dedup.record(&first, 10, 0);
        let second = batch(&[None], Some((7, 2)), 12);
        assert_eq!(dedup.check(&second, 12, 0).unwrap(), Verdict::Append);
        dedup.record(&second, 12, 0);
        assert_eq!(
            dedup.check(&first, 13, 0).unwrap(),
            Verdict::Retry(vec![10, 11])
        );
        let gap = batch(&[None], Some((7, 9)), 13);
        assert!(dedup.check(&gap, 13, 0).is_err());
        let stranger = batch(&[None], Some((8, 5)), 13);
        assert_eq!(
            dedup.check(&stranger, 13, 0).unwrap(),
            Verdict::Append,
            "unknown producers start anywhere"
        );
    }
}
