//! Queue subscriptions: RabbitMQ's competing consumers. Every message goes to one consumer at a
//! time; it stays in flight until acked, nacked, released, timed out or its consumer leaves,
//! and is then redelivered to any consumer with credit — or dead-lettered.
//!
//! Per partition: an [`AckState`] (what is done), the next never-delivered offset, in-flight
//! deliveries with their deadlines, redeliveries waiting for their time, delivery history, and
//! for `ordered_by_key` the key locks and the messages deferred behind them.
//!
//! Invariants: an offset is in at most one of {acked, in flight, waiting for redelivery,
//! deferred, being dead-lettered}; all of those except acked are below `next_fresh`; a
//! consumer's credit use equals the number of in-flight entries naming it; with
//! `ordered_by_key`, a key is locked by exactly the one offset that is in flight or waiting
//! for redelivery with it, so no two messages of a key are ever in flight together.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_batch::Record;

use super::{
    AckState, BatchCursor, ConsumerId, Delivery, GroupPartitionInfo, MessageId, Settlement, detach,
    read_records, read_records_at, resolve_start,
};
use crate::catalog::{Catalog, SubscriptionRecord};
use crate::config::{Overflow, QueueSettings, StartPosition};
use crate::error::Result;
use crate::metrics::SubscriptionMetrics;
use crate::topic::Topic;

/// Most messages held back behind busy keys per partition; past it, fresh reading pauses.
const DEFERRED_MAX: usize = 10_000;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadLetterReason {
    MaxDeliveries,
    Rejected,
    Expired,
    Overflow,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::MaxDeliveries => "max_deliveries",
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::Expired => "expired",
            DeadLetterReason::Overflow => "overflow",
        }
    }
}

/// A message on its way to the dead-letter topic. It is acked in the queue only once the
/// dead-letter topic has durably stored it, and it is saved with the positions (so a reject,
/// once answered, is not forgotten by a crash before the letter is stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub partition: u32,
    pub offset: u64,
    pub reason: DeadLetterReason,
    pub error: Option<String>,
    pub delivery_count: u32,
    pub first_delivery_ms: Option<i64>,
    pub last_delivery_ms: Option<i64>,
}

/// The delivery history of a message delivered and not yet acked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DeliveryRecord {
    count: u32,
    first_ms: i64,
    last_ms: i64,
    #[serde(default)]
    last_error: Option<String>,
}

/// What survives a restart of one partition's queue state. In-flight deliveries are not kept:
/// after a restart they are simply unacked, and are delivered again. Their delivery history
/// is kept (counted at hand-out, saved with the acks), so a delivery in flight at a restart or
/// crash still counts towards `max_deliveries`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct StoredPosition {
    acks: AckState,
    deliveries: Vec<(u64, DeliveryRecord)>,
    /// On their way to the dead-letter topic: stored there after a restart.
    #[serde(default)]
    dead_letters: Vec<DeadLetter>,
}

struct InFlight {
    consumer: ConsumerId,
    deadline_ms: i64,
    /// The message's publish time, for the publish → ack latency.
    published_ms: i64,
}

#[derive(Default)]
struct QueuePartition {
    acks: AckState,
    /// Lowest offset never looked at.
    next_fresh: u64,
    /// Where fresh reading left off inside a batch.
    fresh_cursor: Option<BatchCursor>,
    in_flight: BTreeMap<u64, InFlight>,
    /// (ready at ms, offset) of messages waiting to be delivered again.
    redeliver: BTreeSet<(i64, u64)>,
    deliveries: HashMap<u64, DeliveryRecord>,
    /// Ordered by key: messages never delivered because their key was busy, with their key.
    deferred: BTreeMap<u64, Bytes>,
    /// Ordered by key: key → the offset holding it; and back.
    key_holders: HashMap<Bytes, u64>,
    held_keys: HashMap<u64, Bytes>,
    /// Handed to the dead-letter outbox, not yet stored there.
    dead_lettering: BTreeMap<u64, DeadLetter>,
    dirty: bool,
}

/// The context of handing out messages from one partition in one fetch.
struct Fetch {
    partition: u32,
    consumer: ConsumerId,
    now_ms: i64,
    deadline_ms: i64,
    ordered_by_key: bool,
}

/// What to do with a message about to be delivered.
enum Decision {
    Deliver,
    Skip,
    Defer(Bytes),
    DeadLetter(DeadLetterReason),
}

impl QueuePartition {
    fn decide(&self, record: &Record, now_ms: i64, settings: &QueueSettings) -> Decision {
        let offset = record.offset;
        if self.acks.is_acked(offset) || self.dead_lettering.contains_key(&offset) {
            return Decision::Skip;
        }
        if let Some(ttl_ms) = settings.message_ttl_ms
            && now_ms.saturating_sub(record.timestamp_ms) > ttl_ms as i64
        {
            return Decision::DeadLetter(DeadLetterReason::Expired);
        }
        if self.exhausted(offset, settings.max_deliveries) {
            return Decision::DeadLetter(DeadLetterReason::MaxDeliveries);
        }
        if settings.ordered_by_key
            && let Some(key) = &record.key
            && self
                .key_holders
                .get(key)
                .is_some_and(|&holder| holder != offset)
        {
            return Decision::Defer(key.clone());
        }
        Decision::Deliver
    }

    /// Puts `record` in flight with `fetch.consumer` and counts the delivery.
    fn hand_out(&mut self, record: Record, fetch: &Fetch, deliveries: &mut Vec<Delivery>) {
        let offset = record.offset;
        let history = self.deliveries.entry(offset).or_insert(DeliveryRecord {
            count: 0,
            first_ms: fetch.now_ms,
            last_ms: fetch.now_ms,
            last_error: None,
        });
        history.count += 1;
        history.last_ms = fetch.now_ms;
        let delivery_count = history.count;
        if fetch.ordered_by_key
            && let Some(key) = &record.key
        {
            self.key_holders.insert(key.clone(), offset);
            self.held_keys.insert(offset, key.clone());
        }
        self.in_flight.insert(
            offset,
            InFlight {
                consumer: fetch.consumer,
                deadline_ms: fetch.deadline_ms,
                published_ms: record.timestamp_ms,
            },
        );
        self.dirty = true;
        deliveries.push(Delivery {
            partition: fetch.partition,
            delivery_count,
            record,
        });
    }

    fn unlock_key(&mut self, offset: u64) {
        if let Some(key) = self.held_keys.remove(&offset)
            && self.key_holders.get(&key) == Some(&offset)
        {
            self.key_holders.remove(&key);
        }
    }

    /// Starts moving `offset` to the dead-letter topic.
    fn dead_letter(
        &mut self,
        partition: u32,
        offset: u64,
        reason: DeadLetterReason,
        error: Option<String>,
        outbox: &mut Vec<DeadLetter>,
    ) {
        self.unlock_key(offset);
        self.deferred.remove(&offset);
        let history = self.deliveries.get(&offset);
        let letter = DeadLetter {
            partition,
            offset,
            reason,
            error: error.or_else(|| history.and_then(|history| history.last_error.clone())),
            delivery_count: history.map_or(0, |history| history.count),
            first_delivery_ms: history.map(|history| history.first_ms),
            last_delivery_ms: history.map(|history| history.last_ms),
        };
        self.dead_lettering.insert(offset, letter.clone());
        self.dirty = true;
        outbox.push(letter);
    }

    /// Whether `offset` has been delivered `max_deliveries` times.
    fn exhausted(&self, offset: u64, max_deliveries: Option<u32>) -> bool {
        max_deliveries.is_some_and(|max| {
            self.deliveries
                .get(&offset)
                .is_some_and(|history| history.count >= max)
        })
    }

    /// Marks `offset` done; false if it already was.
    fn complete(&mut self, offset: u64) -> bool {
        self.unlock_key(offset);
        self.deliveries.remove(&offset);
        let was_leaving = self.dead_lettering.remove(&offset).is_some();
        let newly = self.acks.ack(offset);
        self.dirty |= newly || was_leaving;
        newly
    }

    fn backlog(&self, end_offset: u64) -> u64 {
        let floor = self.acks.floor();
        end_offset
            .saturating_sub(floor)
            .saturating_sub(self.acks.acked_between_floor_and(end_offset))
    }
}

struct ConsumerSlot {
    prefetch: u32,
    in_flight: u32,
    delivered: u64,
}

pub(super) struct QueueState {
    partitions: Vec<QueuePartition>,
    consumers: HashMap<ConsumerId, ConsumerSlot>,
    settings: QueueSettings,
    outbox: Vec<DeadLetter>,
    rotation: usize,
    pub metrics: SubscriptionMetrics,
}

impl QueueState {
    pub fn open(topic: &Topic, record: &SubscriptionRecord, catalog: &Catalog) -> Result<Self> {
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        let mut outbox = Vec::new();
        for partition in &topic.partitions {
            let stored: Option<StoredPosition> =
                catalog.position(&record.topic, &record.group, partition.id)?;
            let dirty = stored.is_none();
            let (mut acks, deliveries, dead_letters) = match stored {
                Some(stored) => (
                    stored.acks,
                    stored.deliveries.into_iter().collect(),
                    stored.dead_letters,
                ),
                None => (
                    AckState::new(resolve_start(&partition.reader, record.start)?),
                    HashMap::new(),
                    Vec::new(),
                ),
            };
            acks.raise_floor(partition.reader.start_offset());
            // Letters saved on their way out go out again (stored once: the outbox acks them).
            let dead_lettering: BTreeMap<u64, DeadLetter> = dead_letters
                .into_iter()
                .filter(|letter| !acks.is_acked(letter.offset))
                .map(|letter| (letter.offset, letter))
                .collect();
            outbox.extend(dead_lettering.values().cloned());
            partitions.push(QueuePartition {
                next_fresh: acks.floor(),
                acks,
                deliveries,
                dead_lettering,
                dirty,
                ..QueuePartition::default()
            });
        }
        Ok(QueueState {
            partitions,
            consumers: HashMap::new(),
            settings: record.queue.clone(),
            outbox,
            rotation: 0,
            metrics: SubscriptionMetrics::default(),
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
                delivered: 0,
            },
        );
    }

    /// The consumer is gone holding messages it did not ack: they are redelivered now. When
    /// it was lost (crashed, disconnected, dropped) the delivery counts — a poison message
    /// that kills its consumer must still reach `max_deliveries`; when it said goodbye
    /// (`counted` false: an explicit unsubscribe) they are given back like `release`, since a
    /// client closing cleanly cannot tell which pushed deliveries its application saw.
    pub fn leave(&mut self, consumer: ConsumerId, now_ms: i64, counted: bool) {
        self.consumers.remove(&consumer);
        let max_deliveries = self.settings.max_deliveries;
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            let held: Vec<u64> = partition
                .in_flight
                .iter()
                .filter(|(_, in_flight)| in_flight.consumer == consumer)
                .map(|(&offset, _)| offset)
                .collect();
            for offset in held {
                partition.in_flight.remove(&offset);
                if !counted {
                    self.metrics.counters.released += 1;
                    uncount_delivery(partition, offset);
                    partition.redeliver.insert((now_ms, offset));
                } else if partition.exhausted(offset, max_deliveries) {
                    partition.dead_letter(
                        index as u32,
                        offset,
                        DeadLetterReason::MaxDeliveries,
                        Some("consumer lost".into()),
                        &mut self.outbox,
                    );
                } else {
                    partition.redeliver.insert((now_ms, offset));
                }
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
        let settings = &self.settings;
        let ordered = settings.ordered_by_key;
        let count = self.partitions.len();
        self.rotation = self.rotation.wrapping_add(1);
        for step in 0..count {
            if deliveries.len() >= want {
                break;
            }
            let index = (self.rotation + step) % count;
            let partition = &mut self.partitions[index];
            let reader = &topic.partitions[index].reader;
            let partition_id = index as u32;
            let fetch = Fetch {
                partition: partition_id,
                consumer,
                now_ms,
                deadline_ms,
                ordered_by_key: ordered,
            };
            let take = |partition: &mut QueuePartition,
                        record: Record,
                        deliveries: &mut Vec<Delivery>,
                        outbox: &mut Vec<DeadLetter>| {
                match partition.decide(&record, now_ms, settings) {
                    Decision::Deliver => partition.hand_out(record, &fetch, deliveries),
                    Decision::Skip => {}
                    Decision::Defer(key) => {
                        partition.deferred.insert(record.offset, key);
                    }
                    Decision::DeadLetter(reason) => {
                        partition.dead_letter(partition_id, record.offset, reason, None, outbox);
                    }
                }
            };
            // Redeliveries and deferred messages are read through one cursor per fetch (they
            // mostly come in offset order, so a batch is read once, not once per message) and
            // copied out of their batch: waiting in a consumer's queue, each costs its own size.
            let mut place = None;
            let mut read_one = |offset: u64| -> Result<Option<Record>> {
                Ok(read_records_at(reader, &mut place, offset, 1)?
                    .pop()
                    .filter(|record| record.offset == offset)
                    .map(detach))
            };
            // Redeliveries first: they have waited longest.
            while deliveries.len() < want {
                let Some(&(ready_ms, offset)) = partition.redeliver.first() else {
                    break;
                };
                if ready_ms > now_ms {
                    break;
                }
                partition.redeliver.pop_first();
                match read_one(offset)? {
                    Some(record) => take(partition, record, &mut deliveries, &mut self.outbox),
                    // Retention deleted it while it waited: nothing left to deliver.
                    None => {
                        partition.complete(offset);
                    }
                }
            }
            // Then messages deferred behind keys that are free now, oldest first.
            if ordered && deliveries.len() < want {
                let free: Vec<u64> = partition
                    .deferred
                    .iter()
                    .filter(|(_, key)| !partition.key_holders.contains_key(*key))
                    .map(|(&offset, _)| offset)
                    .collect();
                for offset in free {
                    if deliveries.len() >= want {
                        break;
                    }
                    // A key can appear twice in `free`; the first delivery locks it again.
                    let Some(key) = partition.deferred.get(&offset) else {
                        continue;
                    };
                    if partition.key_holders.contains_key(key) {
                        continue;
                    }
                    partition.deferred.remove(&offset);
                    match read_one(offset)? {
                        Some(record) => take(partition, record, &mut deliveries, &mut self.outbox),
                        None => {
                            partition.complete(offset);
                        }
                    }
                }
            }
            while deliveries.len() < want && partition.deferred.len() < DEFERRED_MAX {
                partition.next_fresh = partition.acks.next_unacked(partition.next_fresh);
                let records = read_records_at(
                    reader,
                    &mut partition.fresh_cursor,
                    partition.next_fresh,
                    want - deliveries.len(),
                )?;
                if records.is_empty() {
                    break;
                }
                for record in records {
                    partition.next_fresh = record.offset + 1;
                    take(partition, record, &mut deliveries, &mut self.outbox);
                }
            }
        }
        if let Some(slot) = self.consumers.get_mut(&consumer) {
            slot.in_flight += deliveries.len() as u32;
            slot.delivered += deliveries.len() as u64;
        }
        let counters = &mut self.metrics.counters;
        counters.delivered += deliveries.len() as u64;
        counters.redelivered += deliveries
            .iter()
            .filter(|delivery| delivery.delivery_count > 1)
            .count() as u64;
        Ok(deliveries)
    }

    fn release_credit(&mut self, consumer: ConsumerId) {
        if let Some(slot) = self.consumers.get_mut(&consumer) {
            slot.in_flight = slot.in_flight.saturating_sub(1);
        }
    }

    /// Takes `offset` out of flight, returning credit to its holder.
    fn take_in_flight(&mut self, index: usize, offset: u64) -> Option<InFlight> {
        let in_flight = self.partitions[index].in_flight.remove(&offset)?;
        self.release_credit(in_flight.consumer);
        Some(in_flight)
    }

    /// Whether `offset` was never handed out here (so an ack or nack of it names nothing).
    fn never_delivered(&self, index: usize, offset: u64) -> bool {
        let partition = &self.partitions[index];
        offset >= partition.next_fresh || partition.deferred.contains_key(&offset)
    }

    /// Marks messages done; says per id what happened, and whether credit was freed (a
    /// consumer may fetch again). Offsets never delivered are left alone.
    pub fn ack(
        &mut self,
        topic: &Topic,
        ids: &[MessageId],
        now_ms: i64,
    ) -> Result<(Vec<Settlement>, bool)> {
        let mut freed = false;
        let mut settlements = Vec::with_capacity(ids.len());
        for id in ids {
            let index = topic.partition(id.partition)?.id as usize;
            if self.never_delivered(index, id.offset) {
                settlements.push(Settlement::Unknown);
                continue;
            }
            // A late ack from a consumer whose delivery timed out still counts: the work is done.
            let in_flight = self.take_in_flight(index, id.offset);
            freed |= in_flight.is_some();
            // A copy waiting in `redeliver` is skipped when it comes up: it is acked now.
            if self.partitions[index].complete(id.offset) {
                let published_ms = in_flight.map_or(now_ms, |in_flight| in_flight.published_ms);
                self.metrics.acked(now_ms, published_ms);
                settlements.push(Settlement::Settled);
            } else {
                settlements.push(Settlement::AlreadySettled);
            }
        }
        Ok((settlements, freed))
    }

    /// Removes messages whether or not they were delivered (an operator's action, such as
    /// redriving dead letters): they count as done.
    pub fn discard(&mut self, topic: &Topic, ids: &[MessageId]) -> Result<()> {
        for id in ids {
            let index = topic.partition(id.partition)?.id as usize;
            if id.offset >= topic.partitions[index].reader.end_offset() {
                continue;
            }
            self.take_in_flight(index, id.offset);
            let partition = &mut self.partitions[index];
            partition.deferred.remove(&id.offset);
            partition.complete(id.offset);
        }
        Ok(())
    }

    /// Makes a settled message pending again with a fresh delivery history, to be delivered
    /// at once at its own offset (so with its key, partition and place in order): a dead letter
    /// redriven to this subscription. False if the log no longer holds it.
    pub fn redeliver_settled(&mut self, topic: &Topic, id: MessageId, now_ms: i64) -> Result<bool> {
        let index = topic.partition(id.partition)?.id as usize;
        let reader = &topic.partitions[index].reader;
        if id.offset < reader.start_offset() || id.offset >= reader.end_offset() {
            return Ok(false);
        }
        let partition = &mut self.partitions[index];
        // Not settled (still on its way to the dead-letter topic, or pending again after a
        // reset): it is delivered anyway.
        if partition.dead_lettering.contains_key(&id.offset) || !partition.acks.unack(id.offset) {
            return Ok(true);
        }
        partition.deliveries.remove(&id.offset);
        // Below `next_fresh` only a redelivery reaches it; above, fresh reading does. After a
        // restart the saved ack state alone brings it back.
        if id.offset < partition.next_fresh {
            partition.redeliver.insert((now_ms, id.offset));
        }
        partition.dirty = true;
        Ok(true)
    }

    /// Returns in-flight messages. `requeue`: delivered again after `delay`, unless they
    /// reached `max_deliveries` (then dead-lettered). Otherwise rejected: dead-lettered now.
    pub fn nack(
        &mut self,
        topic: &Topic,
        ids: &[MessageId],
        requeue: bool,
        delay: Duration,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<Settlement>> {
        let mut settlements = Vec::with_capacity(ids.len());
        for id in ids {
            let index = topic.partition(id.partition)?.id as usize;
            if self.take_in_flight(index, id.offset).is_none() {
                // Not in flight: never delivered, or settled already (acked, timed out, given
                // back).
                settlements.push(if self.never_delivered(index, id.offset) {
                    Settlement::Unknown
                } else {
                    Settlement::AlreadySettled
                });
                continue;
            }
            settlements.push(Settlement::Settled);
            if requeue {
                self.metrics.counters.nacked += 1;
            } else {
                self.metrics.counters.rejected += 1;
            }
            self.metrics.failed(now_ms);
            let failures = self.partitions[index]
                .deliveries
                .get(&id.offset)
                .map_or(1, |history| history.count.max(1));
            let backoff = &self.settings.retry_backoff_ms;
            let delay_ms = if delay.is_zero() && !backoff.is_empty() {
                backoff[(failures as usize - 1).min(backoff.len() - 1)]
            } else {
                delay.as_millis() as u64
            };
            let ready_ms = now_ms.saturating_add(delay_ms as i64);
            let max_deliveries = self.settings.max_deliveries;
            let partition = &mut self.partitions[index];
            if let (Some(error), Some(history)) = (error, partition.deliveries.get_mut(&id.offset))
            {
                history.last_error = Some(error.to_owned());
                partition.dirty = true;
            }
            let reason = if !requeue {
                Some(DeadLetterReason::Rejected)
            } else if partition.exhausted(id.offset, max_deliveries) {
                Some(DeadLetterReason::MaxDeliveries)
            } else {
                None
            };
            match reason {
                Some(reason) => partition.dead_letter(
                    id.partition,
                    id.offset,
                    reason,
                    error.map(str::to_owned),
                    &mut self.outbox,
                ),
                None => {
                    partition.redeliver.insert((ready_ms, id.offset));
                }
            }
        }
        Ok(settlements)
    }

    /// Gives in-flight messages back without counting the delivery as a failure (a consumer
    /// shutting down): they are delivered again now.
    pub fn release(&mut self, topic: &Topic, ids: &[MessageId], now_ms: i64) -> Result<()> {
        for id in ids {
            let index = topic.partition(id.partition)?.id as usize;
            if self.take_in_flight(index, id.offset).is_some() {
                self.metrics.counters.released += 1;
                let partition = &mut self.partitions[index];
                uncount_delivery(partition, id.offset);
                partition.redeliver.insert((now_ms, id.offset));
            }
        }
        Ok(())
    }

    pub fn reset(&mut self, topic: &Topic, to: StartPosition) -> Result<()> {
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            let offset = resolve_start(&topic.partitions[index].reader, to)?;
            let dead_lettering = std::mem::take(&mut partition.dead_lettering);
            *partition = QueuePartition {
                acks: AckState::new(offset),
                next_fresh: offset,
                // Dead letters on their way out finish their trip; the ack is then a no-op.
                dead_lettering,
                dirty: true,
                ..QueuePartition::default()
            };
        }
        for slot in self.consumers.values_mut() {
            slot.in_flight = 0;
        }
        Ok(())
    }

    /// Ack timeouts, due redeliveries, backlog overflow; follows retention. Returns whether
    /// consumers should look again.
    pub fn tick(&mut self, topic: &Topic, now_ms: i64) -> bool {
        let mut wake = false;
        let mut expired_holders = Vec::new();
        let max_deliveries = self.settings.max_deliveries;
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            let expired: Vec<(u64, ConsumerId)> = partition
                .in_flight
                .iter()
                .filter(|(_, in_flight)| in_flight.deadline_ms <= now_ms)
                .map(|(&offset, in_flight)| (offset, in_flight.consumer))
                .collect();
            for (offset, consumer) in expired {
                partition.in_flight.remove(&offset);
                expired_holders.push(consumer);
                self.metrics.counters.timed_out += 1;
                self.metrics.failed(now_ms);
                if partition.exhausted(offset, max_deliveries) {
                    partition.dead_letter(
                        index as u32,
                        offset,
                        DeadLetterReason::MaxDeliveries,
                        Some("ack timeout".into()),
                        &mut self.outbox,
                    );
                } else {
                    partition.redeliver.insert((now_ms, offset));
                }
            }
            wake |= partition
                .redeliver
                .first()
                .is_some_and(|&(ready_ms, _)| ready_ms <= now_ms);
            let reader = &topic.partitions[index].reader;
            let start = reader.start_offset();
            if partition.acks.floor() < start {
                partition.acks.raise_floor(start);
                partition.next_fresh = partition.next_fresh.max(start);
                partition.in_flight.retain(|&offset, _| offset >= start);
                partition.redeliver.retain(|&(_, offset)| offset >= start);
                partition.deliveries.retain(|&offset, _| offset >= start);
                partition.deferred.retain(|&offset, _| offset >= start);
                let released: Vec<u64> = partition
                    .held_keys
                    .keys()
                    .copied()
                    .filter(|&offset| offset < start)
                    .collect();
                for offset in released {
                    partition.unlock_key(offset);
                }
                partition.dirty = true;
                wake = true;
            }
        }
        for consumer in expired_holders {
            self.release_credit(consumer);
        }
        if self.settings.overflow == Overflow::DeadLetterOldest
            && let Some(max_backlog) = self.settings.max_backlog
        {
            wake |= self.dead_letter_overflow(topic, max_backlog);
        }
        wake
    }

    /// Moves the oldest waiting messages (never those in flight) to the dead-letter topic
    /// until the backlog is back at `max_backlog`.
    fn dead_letter_overflow(&mut self, topic: &Topic, max_backlog: u64) -> bool {
        let backlog = self.backlog(topic);
        let leaving: u64 = self
            .partitions
            .iter()
            .map(|partition| partition.dead_lettering.len() as u64)
            .sum();
        let mut excess = backlog.saturating_sub(max_backlog + leaving);
        let mut moved = false;
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            let end = topic.partitions[index].reader.end_offset();
            let mut offset = partition.acks.floor();
            while excess > 0 && offset < end {
                offset = partition.acks.next_unacked(offset);
                if offset >= end {
                    break;
                }
                if !partition.in_flight.contains_key(&offset)
                    && !partition.dead_lettering.contains_key(&offset)
                {
                    partition
                        .redeliver
                        .retain(|&(_, waiting)| waiting != offset);
                    partition.dead_letter(
                        index as u32,
                        offset,
                        DeadLetterReason::Overflow,
                        None,
                        &mut self.outbox,
                    );
                    partition.next_fresh = partition.next_fresh.max(offset + 1);
                    excess -= 1;
                    moved = true;
                }
                offset += 1;
            }
        }
        moved
    }

    /// Messages published and not yet acked (including in flight).
    pub fn backlog(&self, topic: &Topic) -> u64 {
        self.partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| {
                partition.backlog(topic.partitions[index].reader.end_offset())
            })
            .sum()
    }

    pub fn take_dead_letters(&mut self) -> Vec<DeadLetter> {
        std::mem::take(&mut self.outbox)
    }

    /// Per consumer: (id, delivered, in flight).
    pub fn consumer_stats(&self) -> Vec<(ConsumerId, u64, u32)> {
        let mut stats: Vec<_> = self
            .consumers
            .iter()
            .map(|(&id, slot)| (id, slot.delivered, slot.in_flight))
            .collect();
        stats.sort_unstable();
        stats
    }

    /// The dead-letter topic stored `letters`: they are done here.
    pub fn dead_letters_stored(&mut self, letters: &[DeadLetter], now_ms: i64) {
        for letter in letters {
            self.metrics.counters.dead_lettered += 1;
            if letter.reason == DeadLetterReason::Expired {
                self.metrics.counters.expired += 1;
                self.metrics.failed(now_ms);
            }
            if let Some(partition) = self.partitions.get_mut(letter.partition as usize) {
                partition.complete(letter.offset);
            }
        }
    }

    /// Storing `letters` failed: try again later.
    pub fn dead_letters_failed(&mut self, letters: Vec<DeadLetter>) {
        self.outbox.extend(letters);
    }

    /// The dead-letter topic holds `id`'s letter, stored by an earlier run whose settlement
    /// here was lost: it is done, and not dead-lettered again. Called at open, before any
    /// delivery.
    pub fn dead_letter_found(&mut self, id: MessageId) {
        self.outbox
            .retain(|letter| (letter.partition, letter.offset) != (id.partition, id.offset));
        if let Some(partition) = self.partitions.get_mut(id.partition as usize) {
            partition.complete(id.offset);
        }
    }

    /// Whether `id` is settled (acked, dead-lettered, redriven or purged).
    pub fn is_settled(&self, id: MessageId) -> bool {
        self.partitions
            .get(id.partition as usize)
            .is_some_and(|partition| partition.acks.is_acked(id.offset))
    }

    /// Whether the stored (durable) state of this subscription has every one of `ids`
    /// settled.
    pub fn settled_in_store(
        catalog: &Catalog,
        record: &SubscriptionRecord,
        ids: &[MessageId],
    ) -> Result<bool> {
        let mut stored: HashMap<u32, Option<StoredPosition>> = HashMap::new();
        for id in ids {
            let position = match stored.entry(id.partition) {
                std::collections::hash_map::Entry::Occupied(position) => position.into_mut(),
                std::collections::hash_map::Entry::Vacant(position) => {
                    position.insert(catalog.position(&record.topic, &record.group, id.partition)?)
                }
            };
            let settled = position
                .as_ref()
                .is_some_and(|position| position.acks.is_acked(id.offset));
            if !settled {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Unacked messages from the start of the queue, up to `max` (for browsing a DLQ).
    pub fn pending(&self, topic: &Topic, max: usize) -> Result<Vec<Delivery>> {
        let mut pending = Vec::new();
        for (index, partition) in self.partitions.iter().enumerate() {
            let reader = &topic.partitions[index].reader;
            let mut offset = partition.acks.floor();
            while pending.len() < max {
                offset = partition.acks.next_unacked(offset);
                let records = read_records(reader, offset, max - pending.len())?;
                if records.is_empty() {
                    break;
                }
                for record in records {
                    offset = record.offset + 1;
                    if !partition.acks.is_acked(record.offset) {
                        pending.push(Delivery {
                            partition: index as u32,
                            delivery_count: partition
                                .deliveries
                                .get(&record.offset)
                                .map_or(0, |history| history.count),
                            record,
                        });
                    }
                }
            }
        }
        Ok(pending)
    }

    /// The stored form of each partition changed since the last call. Only copies: the
    /// caller encodes them after letting go of the subscription's lock, which every fetch and
    /// ack of the subscription needs meanwhile.
    pub fn take_dirty(&mut self) -> Vec<(u32, StoredPosition)> {
        let mut changed = Vec::new();
        for (index, partition) in self.partitions.iter_mut().enumerate() {
            if std::mem::take(&mut partition.dirty) {
                let stored = StoredPosition {
                    acks: partition.acks.clone(),
                    deliveries: partition
                        .deliveries
                        .iter()
                        .map(|(&offset, history)| (offset, history.clone()))
                        .collect(),
                    dead_letters: partition.dead_lettering.values().cloned().collect(),
                };
                changed.push((index as u32, stored));
            }
        }
        changed
    }

    pub fn info(&self, topic: &Topic) -> Vec<GroupPartitionInfo> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(index, partition)| {
                let end_offset = topic.partitions[index].reader.end_offset();
                GroupPartitionInfo {
                    partition: index as u32,
                    committed: partition.acks.floor(),
                    end_offset,
                    in_flight: partition.in_flight.len() as u32,
                    backlog: partition.backlog(end_offset),
                }
            })
            .collect()
    }
}

/// A released delivery does not count: undo its increment.
fn uncount_delivery(partition: &mut QueuePartition, offset: u64) {
    if let Some(history) = partition.deliveries.get_mut(&offset) {
        history.count = history.count.saturating_sub(1);
        if history.count == 0 {
            partition.deliveries.remove(&offset);
        }
        partition.dirty = true;
    }
}
