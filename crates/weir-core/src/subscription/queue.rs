//! Queue subscriptions: RabbitMQ's competing consumers. Every message goes to one consumer at a
//! time; it stays in flight until acked, nacked, timed out or its consumer leaves, and is then
//! redelivered to any consumer with credit.
//!
//! Per partition: an [`AckState`] (what is done), the next never-delivered offset, the
//! in-flight deliveries with their deadlines, and the redeliveries waiting for their time.
//! Invariants: an offset is in at most one of {acked, in flight, waiting for redelivery};
//! everything in flight or waiting is below `next_fresh`; a consumer's credit use equals the
//! number of in-flight entries naming it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_batch::Record;
use weir_storage::MetaOp;

use super::{
    AckState, ConsumerId, Delivery, GroupPartitionInfo, MessageId, read_records, resolve_start,
};
use crate::catalog::{Catalog, SubscriptionRecord};
use crate::config::StartPosition;
use crate::error::Result;
use crate::topic::Topic;

/// What survives a restart of one partition's queue state. In-flight deliveries are not kept:
/// after a restart they are simply unacked, and are delivered again.
#[derive(Debug, Serialize, Deserialize)]
struct StoredPosition {
    acks: AckState,
    /// Delivery counts of messages delivered but not acked.
    delivery_counts: Vec<(u64, u32)>,
}

struct InFlight {
    consumer: ConsumerId,
    deadline_ms: i64,
}

struct QueuePartition {
    acks: AckState,
    /// Lowest offset never delivered.
    next_fresh: u64,
    in_flight: BTreeMap<u64, InFlight>,
    /// (ready at ms, offset) of messages waiting to be delivered again.
    redeliver: BTreeSet<(i64, u64)>,
    delivery_counts: HashMap<u64, u32>,
    dirty: bool,
}

impl QueuePartition {
    /// Puts `record` in flight with `consumer` and counts the delivery.
    fn hand_out(
        &mut self,
        record: Record,
        partition: u32,
        consumer: ConsumerId,
        deadline_ms: i64,
        deliveries: &mut Vec<Delivery>,
    ) {
        let delivery_count = self.delivery_counts.entry(record.offset).or_insert(0);
        *delivery_count += 1;
        let delivery_count = *delivery_count;
        self.in_flight.insert(
            record.offset,
            InFlight {
                consumer,
                deadline_ms,
            },
        );
        self.dirty = true;
        deliveries.push(Delivery {
            partition,
            delivery_count,
            record,
        });
    }
}

struct ConsumerSlot {
    prefetch: u32,
    in_flight: u32,
}

pub(super) struct QueueState {
    partitions: Vec<QueuePartition>,
    consumers: HashMap<ConsumerId, ConsumerSlot>,
    rotation: usize,
}

impl QueueState {
    pub fn open(topic: &Topic, record: &SubscriptionRecord, catalog: &Catalog) -> Result<Self> {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for partition in &topic.partitions {
            let stored: Option<StoredPosition> =
                catalog.position(&record.topic, &record.group, partition.id)?;
            let dirty = stored.is_none();
            let (mut acks, delivery_counts) = match stored {
                Some(stored) => (stored.acks, stored.delivery_counts.into_iter().collect()),
                None => (
                    AckState::new(resolve_start(&partition.reader, record.start)?),
                    HashMap::new(),
                ),
            };
            acks.raise_floor(partition.reader.start_offset());
            partitions.push(QueuePartition {
                next_fresh: acks.floor(),
                acks,
                in_flight: BTreeMap::new(),
                redeliver: BTreeSet::new(),
                delivery_counts,
                dirty,
            });
        }
        Ok(QueueState {
            partitions,
            consumers: HashMap::new(),
            rotation: 0,
        })
    }

    pub fn consumer_count(&self) -> u32 {
        self.consumers.len() as u32
    }

    pub fn join(&mut self, consumer: ConsumerId, prefetch: u32) {
        self.consumers.insert(
            consumer,
            ConsumerSlot {
                prefetch,
                in_flight: 0,
            },
        );
    }

    /// The consumer is gone: its in-flight messages are redelivered now.
    pub fn leave(&mut self, consumer: ConsumerId, now_ms: i64) {
        self.consumers.remove(&consumer);
        for partition in &mut self.partitions {
            let held: Vec<u64> = partition
                .in_flight
                .iter()
                .filter(|(_, in_flight)| in_flight.consumer == consumer)
                .map(|(&offset, _)| offset)
                .collect();
            for offset in held {
                partition.in_flight.remove(&offset);
                partition.redeliver.insert((now_ms, offset));
            }
        }
    }

    pub fn fetch(
        &mut self,
        topic: &Topic,
        consumer: ConsumerId,
        max: usize,
        now_ms: i64,
        ack_timeout_ms: u64,
    ) -> Result<Vec<Delivery>> {
        let Some(slot) = self.consumers.get_mut(&consumer) else {
            return Ok(Vec::new());
        };
        let want = max.min(slot.prefetch.saturating_sub(slot.in_flight) as usize);
        let mut deliveries = Vec::new();
        if want == 0 {
            return Ok(deliveries);
        }
        let deadline_ms = now_ms.saturating_add(ack_timeout_ms as i64);
        let count = self.partitions.len();
        self.rotation = self.rotation.wrapping_add(1);
        for step in 0..count {
            if deliveries.len() >= want {
                break;
            }
            let index = (self.rotation + step) % count;
            let partition = &mut self.partitions[index];
            let reader = &topic.partitions[index].reader;
            // Redeliveries first: they have waited longest.
            while deliveries.len() < want {
                let Some(&(ready_ms, offset)) = partition.redeliver.first() else {
                    break;
                };
                if ready_ms > now_ms {
                    break;
                }
                partition.redeliver.pop_first();
                if partition.acks.is_acked(offset) {
                    continue;
                }
                match read_records(reader, offset, 1)?.pop() {
                    Some(record) if record.offset == offset => {
                        partition.hand_out(
                            record,
                            index as u32,
                            consumer,
                            deadline_ms,
                            &mut deliveries,
                        );
                    }
                    // Retention deleted it while it waited: nothing left to deliver.
                    _ => {
                        partition.delivery_counts.remove(&offset);
                        partition.acks.ack(offset);
                        partition.dirty = true;
                    }
                }
            }
            while deliveries.len() < want {
                partition.next_fresh = partition.acks.next_unacked(partition.next_fresh);
                let records = read_records(reader, partition.next_fresh, want - deliveries.len())?;
                if records.is_empty() {
                    break;
                }
                for record in records {
                    partition.next_fresh = record.offset + 1;
                    // Acked above the floor before a restart: skip.
                    if !partition.acks.is_acked(record.offset) {
                        partition.hand_out(
                            record,
                            index as u32,
                            consumer,
                            deadline_ms,
                            &mut deliveries,
                        );
                    }
                }
            }
        }
        if let Some(slot) = self.consumers.get_mut(&consumer) {
            slot.in_flight += deliveries.len() as u32;
        }
        Ok(deliveries)
    }

    fn release_credit(&mut self, consumer: ConsumerId) {
        if let Some(slot) = self.consumers.get_mut(&consumer) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }

    /// Marks messages done. Returns whether credit was freed (a consumer may fetch again).
    /// Acks for offsets never delivered are ignored.
    pub fn ack(&mut self, topic: &Topic, _consumer: ConsumerId, ids: &[MessageId]) -> Result<bool> {
        let mut freed = false;
        for id in ids {
            let index = topic.partition(id.partition)?.id as usize;
            let partition = &mut self.partitions[index];
            if id.offset >= partition.next_fresh {
                continue;
            }
            // A late ack from a consumer whose delivery timed out still counts: the work is done.
            if let Some(in_flight) = partition.in_flight.remove(&id.offset) {
                let holder = in_flight.consumer;
                self.release_credit(holder);
                freed = true;
            }
            let partition = &mut self.partitions[index];
            partition.delivery_counts.remove(&id.offset);
            if partition.acks.ack(id.offset) {
                partition.dirty = true;
            }
        }
        Ok(freed)
    }

    /// Returns in-flight messages: requeued after `delay`, or discarded (rejected).
    pub fn nack(
        &mut self,
        topic: &Topic,
        ids: &[MessageId],
        requeue: bool,
        delay: Duration,
        now_ms: i64,
    ) -> Result<()> {
        let ready_ms = now_ms.saturating_add(delay.as_millis() as i64);
        for id in ids {
            let index = topic.partition(id.partition)?.id as usize;
            let Some(in_flight) = self.partitions[index].in_flight.remove(&id.offset) else {
                continue;
            };
            self.release_credit(in_flight.consumer);
            let partition = &mut self.partitions[index];
            if requeue {
                partition.redeliver.insert((ready_ms, id.offset));
            } else {
                partition.delivery_counts.remove(&id.offset);
                partition.acks.ack(id.offset);
                partition.dirty = true;
            }
        }
        Ok(())
    }

    pub fn reset(&mut self, topic: &Topic, to: StartPosition) -> Result<()> {
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            let offset = resolve_start(&topic.partitions[index].reader, to)?;
            partition.acks.reset(offset);
            partition.next_fresh = offset;
            partition.in_flight.clear();
            partition.redeliver.clear();
            partition.delivery_counts.clear();
            partition.dirty = true;
        }
        for slot in self.consumers.values_mut() {
            slot.in_flight = 0;
        }
        Ok(())
    }

    /// Ack timeouts and due redeliveries; follows retention. Returns whether consumers should
    /// look again.
    pub fn tick(&mut self, topic: &Topic, now_ms: i64) -> bool {
        let mut wake = false;
        let mut expired_holders = Vec::new();
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            let expired: Vec<(u64, ConsumerId)> = partition
                .in_flight
                .iter()
                .filter(|(_, in_flight)| in_flight.deadline_ms <= now_ms)
                .map(|(&offset, in_flight)| (offset, in_flight.consumer))
                .collect();
            for (offset, consumer) in expired {
                partition.in_flight.remove(&offset);
                partition.redeliver.insert((now_ms, offset));
                expired_holders.push(consumer);
            }
            wake |= partition
                .redeliver
                .first()
                .is_some_and(|&(ready_ms, _)| ready_ms <= now_ms);
            let start = topic.partitions[index].reader.start_offset();
            if partition.acks.floor() < start {
                partition.acks.raise_floor(start);
                partition.next_fresh = partition.next_fresh.max(start);
                partition.in_flight.retain(|&offset, _| offset >= start);
                partition.redeliver.retain(|&(_, offset)| offset >= start);
                partition
                    .delivery_counts
                    .retain(|&offset, _| offset >= start);
                partition.dirty = true;
                wake = true;
            }
        }
        for consumer in expired_holders {
            self.release_credit(consumer);
        }
        wake
    }

    pub fn take_dirty(&mut self, topic: &str, group: &str) -> Vec<MetaOp> {
        let mut ops = Vec::new();
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            if std::mem::take(&mut partition.dirty) {
                let stored = StoredPosition {
                    acks: partition.acks.clone(),
                    delivery_counts: partition
                        .delivery_counts
                        .iter()
                        .map(|(&offset, &count)| (offset, count))
                        .collect(),
                };
                ops.push(Catalog::position_op(topic, group, index as u32, &stored));
            }
        }
        ops
    }

    pub fn info(&self, topic: &Topic) -> Vec<GroupPartitionInfo> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| {
                let end_offset = topic.partitions[index].reader.end_offset();
                let floor = partition.acks.floor();
                GroupPartitionInfo {
                    partition: index as u32,
                    committed: floor,
                    end_offset,
                    in_flight: partition.in_flight.len() as u32,
                    backlog: end_offset
                        .saturating_sub(floor)
                        .saturating_sub(partition.acks.acked_between_floor_and(end_offset)),
                }
            })
            .collect()
    }
}
