//! Stream subscriptions: Kafka's consumer group. Each partition belongs to one live consumer
//! at a time and is delivered in order from its position; acks commit offsets.
//!
//! Invariant: `positions[p] >= committed[p]` while `p` has an owner; a new owner starts at the
//! committed offset, so whatever the previous owner received but did not commit is delivered
//! again (at least once).

use std::collections::BTreeSet;

use weir_storage::MetaOp;

use super::{
    BatchCursor, ConsumerId, Delivery, GroupPartitionInfo, MessageId, Settlement, read_records_at,
    resolve_start,
};
use crate::catalog::{Catalog, SubscriptionRecord};
use crate::config::StartPosition;
use crate::error::Result;
use crate::metrics::SubscriptionMetrics;
use crate::topic::Topic;

pub(super) struct StreamState {
    /// Next offset to read after a restart or rebalance, per partition (persisted).
    committed: Vec<u64>,
    /// Next offset to deliver to the current owner, per partition.
    positions: Vec<u64>,
    /// Where reading left off inside a batch, per partition.
    cursors: Vec<Option<BatchCursor>>,
    /// Highest offset delivered + 1 in this broker's lifetime: below it, a delivery is a
    /// redelivery.
    delivered_end: Vec<u64>,
    owners: Vec<Option<ConsumerId>>,
    consumers: BTreeSet<ConsumerId>,
    dirty: Vec<bool>,
    /// Round-robin start among a consumer's partitions, for fairness.
    rotation: usize,
    pub metrics: SubscriptionMetrics,
    /// Deliveries per consumer.
    delivered_by: std::collections::HashMap<ConsumerId, u64>,
}

impl StreamState {
    pub fn open(topic: &Topic, record: &SubscriptionRecord, catalog: &Catalog) -> Result<Self> {
        let mut committed = Vec::with_capacity(topic.partitions.len());
        let mut dirty = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let stored: Option<u64> =
                catalog.position(&record.topic, &record.group, partition.id)?;
            // A stored offset below the start was deleted by retention: continue at the start.
            let offset = match stored {
                Some(offset) => offset.max(partition.reader.start_offset()),
                None => resolve_start(&partition.reader, record.start)?,
            };
            dirty.push(stored != Some(offset));
            committed.push(offset);
        }
        let count = committed.len();
        Ok(StreamState {
            positions: committed.clone(),
            cursors: vec![None; count],
            delivered_end: committed.clone(),
            committed,
            owners: vec![None; count],
            consumers: BTreeSet::new(),
            dirty,
            rotation: 0,
            metrics: SubscriptionMetrics::default(),
            delivered_by: std::collections::HashMap::new(),
        })
    }

    pub fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    pub fn join(&mut self, consumer: ConsumerId) {
        self.consumers.insert(consumer);
        self.rebalance();
    }

    pub fn leave(&mut self, consumer: ConsumerId) {
        self.consumers.remove(&consumer);
        self.delivered_by.remove(&consumer);
        self.rebalance();
    }

    /// Partition `p` goes to the `p mod n`-th consumer in id order: deterministic, even, and
    /// it moves only the partitions whose owner changes.
    fn rebalance(&mut self) {
        let consumers: Vec<ConsumerId> = self.consumers.iter().copied().collect();
        for partition in 0..self.owners.len() {
            let owner = (!consumers.is_empty()).then(|| consumers[partition % consumers.len()]);
            if self.owners[partition] != owner {
                self.owners[partition] = owner;
                self.positions[partition] = self.committed[partition];
            }
        }
    }

    pub fn fetch(
        &mut self,
        topic: &Topic,
        consumer: ConsumerId,
        max: usize,
    ) -> Result<Vec<Delivery>> {
        let count = self.owners.len();
        let mut deliveries = Vec::new();
        self.rotation = self.rotation.wrapping_add(1);
        for step in 0..count {
            let partition = (self.rotation + step) % count;
            if self.owners[partition] != Some(consumer) || deliveries.len() >= max {
                continue;
            }
            let reader = &topic.partitions[partition].reader;
            let records = read_records_at(
                reader,
                &mut self.cursors[partition],
                self.positions[partition],
                max - deliveries.len(),
            )?;
            for record in records {
                self.positions[partition] = record.offset + 1;
                let delivery_count = if record.offset < self.delivered_end[partition] {
                    2
                } else {
                    1
                };
                self.delivered_end[partition] =
                    self.delivered_end[partition].max(record.offset + 1);
                deliveries.push(Delivery {
                    partition: partition as u32,
                    delivery_count,
                    record,
                });
            }
        }
        self.metrics.counters.delivered += deliveries.len() as u64;
        self.metrics.counters.redelivered += deliveries
            .iter()
            .filter(|delivery| delivery.delivery_count > 1)
            .count() as u64;
        *self.delivered_by.entry(consumer).or_default() += deliveries.len() as u64;
        Ok(deliveries)
    }

    /// Commits each partition up to and including the highest acked offset; says per id what
    /// happened. An offset not delivered yet commits nothing (that would skip messages nobody
    /// received).
    pub fn commit(&mut self, topic: &Topic, ids: &[MessageId]) -> Result<Vec<Settlement>> {
        let committed_before = self.committed.clone();
        let mut settlements = Vec::with_capacity(ids.len());
        for id in ids {
            let partition = topic.partition(id.partition)?.id as usize;
            if id.offset >= self.delivered_end[partition] {
                settlements.push(Settlement::Unknown);
                continue;
            }
            if id.offset < committed_before[partition] {
                settlements.push(Settlement::AlreadySettled);
                continue;
            }
            settlements.push(Settlement::Settled);
            self.metrics.counters.acked += 1;
            let offset = id.offset + 1;
            if offset > self.committed[partition] {
                self.committed[partition] = offset;
                self.dirty[partition] = true;
            }
        }
        Ok(settlements)
    }

    /// A nack with requeue moves the partition back to the message (stream order is kept, so
    /// everything after it comes again too); without requeue the message is skipped (committed).
    pub fn rewind(
        &mut self,
        topic: &Topic,
        ids: &[MessageId],
        requeue: bool,
    ) -> Result<Vec<Settlement>> {
        if !requeue {
            return self.commit(topic, ids);
        }
        let mut settlements = Vec::with_capacity(ids.len());
        for id in ids {
            let partition = topic.partition(id.partition)?.id as usize;
            settlements.push(if id.offset >= self.delivered_end[partition] {
                Settlement::Unknown
            } else if id.offset < self.committed[partition] {
                Settlement::AlreadySettled
            } else {
                Settlement::Settled
            });
            if id.offset < self.positions[partition] {
                self.positions[partition] = id.offset.max(self.committed[partition]);
            }
        }
        Ok(settlements)
    }

    pub fn reset(&mut self, topic: &Topic, to: StartPosition) -> Result<()> {
        for partition in &topic.partitions {
            let offset = resolve_start(&partition.reader, to)?;
            let index = partition.id as usize;
            self.committed[index] = offset;
            self.positions[index] = offset;
            self.dirty[index] = true;
        }
        Ok(())
    }

    /// Retention may delete what a position points at: move it to the start of the log.
    pub fn tick(&mut self, topic: &Topic) -> bool {
        let mut moved = false;
        for partition in &topic.partitions {
            let start = partition.reader.start_offset();
            let index = partition.id as usize;
            if self.committed[index] < start {
                self.committed[index] = start;
                self.dirty[index] = true;
                moved = true;
            }
            if self.positions[index] < start {
                self.positions[index] = start;
            }
        }
        moved
    }

    /// Per consumer: (id, delivered, in flight = delivered beyond the committed offsets).
    pub fn consumer_stats(&self) -> Vec<(ConsumerId, u64, u32)> {
        self.consumers
            .iter()
            .map(|&consumer| {
                let in_flight: u64 = (0..self.owners.len())
                    .filter(|&partition| self.owners[partition] == Some(consumer))
                    .map(|partition| {
                        self.positions[partition].saturating_sub(self.committed[partition])
                    })
                    .sum();
                (
                    consumer,
                    self.delivered_by.get(&consumer).copied().unwrap_or(0),
                    in_flight as u32,
                )
            })
            .collect()
    }

    pub fn take_dirty(&mut self, topic: &str, group: &str) -> Vec<MetaOp> {
        let mut ops = Vec::new();
        for (partition, dirty) in self.dirty.iter_mut().enumerate() {
            if std::mem::take(dirty) {
                ops.push(Catalog::position_op(
                    topic,
                    group,
                    partition as u32,
                    &self.committed[partition],
                ));
            }
        }
        ops
    }

    pub fn info(&self, topic: &Topic) -> Vec<GroupPartitionInfo> {
        topic
            .partitions
            .iter()
            .map(|partition| {
                let index = partition.id as usize;
                let end_offset = partition.reader.end_offset();
                GroupPartitionInfo {
                    partition: partition.id,
                    committed: self.committed[index],
                    end_offset,
                    in_flight: self.positions[index].saturating_sub(self.committed[index]) as u32,
                    backlog: end_offset.saturating_sub(self.committed[index]),
                }
            })
            .collect()
    }
}
