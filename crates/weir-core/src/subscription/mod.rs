//! Subscriptions (consumer groups) and their consumers.
//!
//! A [`Subscription`] holds the delivery state of one group on one topic behind one mutex:
//! - `stream` ([`stream::StreamState`]): committed offsets, partitions shared among consumers;
//! - `queue` ([`queue::QueueState`]): per-message acks, competing consumers, redelivery.
//!
//! Decisions (what to deliver next, what an ack or a timeout changes) are plain methods on that
//! state; the only I/O under the lock is reading the partition log, which is served from the
//! page cache and never waits for the writer.

mod ack_state;
mod queue;
mod stream;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use weir_batch::{Batch, Record, Records};
use weir_storage::{LogReader, MetaOp};

pub use ack_state::AckState;
pub use queue::{DeadLetter, DeadLetterReason};

use crate::broker::PositionSync;
use crate::catalog::{Catalog, SubscriptionRecord};
use crate::clock::Clock;
use crate::config::{StartPosition, SubscriptionKind};
use crate::error::{Error, Result};
use crate::metrics::{ConsumerStats, SubscriptionStats};
use crate::topic::Topic;

/// Identifies a consumer within the broker's lifetime.
pub type ConsumerId = u64;

/// Names one message of a topic: the handle for acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    pub partition: u32,
    pub offset: u64,
}

/// One message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub partition: u32,
    /// 1 on the first delivery, more on redeliveries.
    pub delivery_count: u32,
    pub record: Record,
}

impl Delivery {
    pub fn id(&self) -> MessageId {
        MessageId {
            partition: self.partition,
            offset: self.record.offset,
        }
    }
}

/// What an ack or nack did to one delivery id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Settlement {
    /// Settled by this call.
    Settled,
    /// Settled before: acked, or (for a nack) no longer held — timed out or given back.
    AlreadySettled,
    /// Never delivered to this subscription: nothing was done.
    Unknown,
}

impl Settlement {
    pub fn as_str(self) -> &'static str {
        match self {
            Settlement::Settled => "settled",
            Settlement::AlreadySettled => "already_settled",
            Settlement::Unknown => "unknown",
        }
    }
}

/// One partition's progress as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupPartitionInfo {
    pub partition: u32,
    /// Stream: the committed offset (next to read). Queue: the ack floor.
    pub committed: u64,
    pub end_offset: u64,
    pub in_flight: u32,
    /// Messages not yet acknowledged (or, for streams, not yet committed).
    pub backlog: u64,
}

/// A subscription as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub topic: String,
    pub group: String,
    pub kind: SubscriptionKind,
    pub consumers: u32,
    pub ack_timeout_ms: u64,
    pub partitions: Vec<GroupPartitionInfo>,
    pub backlog: u64,
}

enum State {
    Stream(stream::StreamState),
    Queue(queue::QueueState),
}

pub(crate) struct Subscription {
    pub topic: Arc<Topic>,
    pub record: SubscriptionRecord,
    state: Mutex<State>,
    /// Woken when this subscription has something new for its consumers: redeliveries,
    /// freed credit, a rebalance, a reset, or closing.
    notify: Notify,
    closed: AtomicBool,
    clock: Arc<dyn Clock>,
}

/// Most bytes read from a log in one go while filling a fetch.
const READ_BYTES: usize = 1 << 20;
/// Fewest bytes asked of the log for a fetch.
const READ_BYTES_MIN: usize = 16 << 10;
/// What a record is assumed to take on disk when sizing the first read for `max` records.
/// Small messages are the common case; larger ones only cost another read.
const RECORD_BYTES_GUESS: usize = 256;

/// Reads up to `max` records at offsets `>= from`; fewer at the end of the visible log.
///
/// The first read is sized for `max` records, not the largest read: every batch read is
/// CRC-checked and every record decoded costs reference counts, so a fetch of a few hundred
/// small messages (or of one, for a redelivery) must not read and decode a megabyte of them.
/// Decoding stops at the `max`-th record.
pub(crate) fn read_records(reader: &LogReader, from: u64, max: usize) -> Result<Vec<Record>> {
    read_records_at(reader, &mut None, from, max)
}

/// A place inside one batch of a partition: its records from `next` on. Kept between reads so
/// that reading on from the middle of a batch neither reads the batch again nor checks and
/// decodes it again from its start (a batch can hold a million records). It holds at most
/// twice the batch's bytes.
#[derive(Debug, Clone)]
pub(crate) struct BatchCursor {
    records: Records,
    /// Offset of the record `records` yields next.
    next: u64,
    /// First offset after the batch.
    end: u64,
}

impl BatchCursor {
    fn new(batch: &Batch) -> BatchCursor {
        BatchCursor {
            records: batch.records(),
            next: batch.base_offset(),
            end: batch.next_offset(),
        }
    }

    fn holds(&self, offset: u64) -> bool {
        self.next <= offset && offset < self.end
    }

    /// Moves on through the batch, adding its records at offsets `>= *next` to `records`
    /// until there are `max`.
    fn take(&mut self, records: &mut Vec<Record>, next: &mut u64, max: usize) -> Result<()> {
        while records.len() < max {
            let Some(record) = self.records.next() else {
                break;
            };
            let record = record?;
            self.next = record.offset + 1;
            if record.offset >= *next {
                *next = record.offset + 1;
                records.push(record);
            }
        }
        *next = (*next).max(self.next);
        Ok(())
    }

    /// This cursor, to be kept; on a copy of `batch` if `batch` is much smaller than the read
    /// it came in, so that the cursor does not keep the whole read alive.
    fn owned(self, batch: &Batch, read_len: usize) -> Result<BatchCursor> {
        if batch.len().saturating_mul(2) >= read_len {
            return Ok(self);
        }
        let copy = Batch::parse(Bytes::copy_from_slice(batch.as_bytes()), usize::MAX)?;
        let mut owned = BatchCursor::new(&copy);
        for _ in owned.next..self.next {
            owned.records.next().transpose()?;
        }
        owned.next = self.next;
        Ok(owned)
    }
}

/// [`read_records`] starting in `cursor`'s batch when it holds `from`, leaving `cursor` in the
/// batch of the last record returned if that batch has more (else `None`).
pub(crate) fn read_records_at(
    reader: &LogReader,
    cursor: &mut Option<BatchCursor>,
    from: u64,
    max: usize,
) -> Result<Vec<Record>> {
    let mut records = Vec::new();
    let mut next = from;
    if let Some(mut kept) = cursor.take().filter(|kept| kept.holds(from)) {
        kept.take(&mut records, &mut next, max)?;
        if records.len() >= max {
            if kept.next < kept.end {
                *cursor = Some(kept);
            }
            return Ok(records);
        }
    }
    let mut read_bytes = (max - records.len())
        .saturating_mul(RECORD_BYTES_GUESS)
        .clamp(READ_BYTES_MIN, READ_BYTES);
    while records.len() < max {
        let batches = reader.read(next, read_bytes)?;
        if batches.is_empty() {
            break;
        }
        let read_len: usize = batches.iter().map(Batch::len).sum();
        for batch in &batches {
            let mut place = BatchCursor::new(batch);
            place.take(&mut records, &mut next, max)?;
            if records.len() >= max {
                if place.next < place.end {
                    *cursor = Some(place.owned(batch, read_len)?);
                }
                break;
            }
        }
        // The guess was too small for these records: read in larger steps from now on.
        read_bytes = READ_BYTES;
    }
    Ok(records)
}

/// `record` in buffers of its own, so that keeping it (a redelivery waiting in a consumer's
/// queue) costs the message, not the batch it was read from.
pub(crate) fn detach(record: Record) -> Record {
    Record {
        key: record.key.as_deref().map(Bytes::copy_from_slice),
        headers: record
            .headers
            .into_iter()
            .map(|(name, value)| (name, Bytes::copy_from_slice(&value)))
            .collect(),
        value: Bytes::copy_from_slice(&record.value),
        ..record
    }
}

/// The offset of `position` in one partition.
pub(crate) fn resolve_start(reader: &LogReader, position: StartPosition) -> Result<u64> {
    let start = reader.start_offset();
    let end = reader.end_offset();
    Ok(match position {
        StartPosition::Earliest => start,
        StartPosition::Latest => end,
        StartPosition::Offset(offset) => offset.clamp(start, end),
        StartPosition::Timestamp(timestamp_ms) => reader
            .offset_for_timestamp(timestamp_ms)?
            .map_or(end, |offset| offset.clamp(start, end)),
    })
}

impl Subscription {
    /// Loads or creates the delivery state of `record` on `topic`.
    pub fn open(
        topic: Arc<Topic>,
        record: SubscriptionRecord,
        catalog: &Catalog,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let state = match record.kind {
            SubscriptionKind::Stream => {
                State::Stream(stream::StreamState::open(&topic, &record, catalog)?)
            }
            SubscriptionKind::Queue => {
                State::Queue(queue::QueueState::open(&topic, &record, catalog)?)
            }
        };
        Ok(Subscription {
            topic,
            record,
            state: Mutex::new(state),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            clock,
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock is a bug in pure state code; keep serving with the
        // state as it is rather than cascading the panic into every consumer.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn kind(&self) -> SubscriptionKind {
        self.record.kind
    }

    fn join(&self, consumer: ConsumerId, prefetch: u32) {
        match &mut *self.state() {
            State::Stream(stream) => stream.join(consumer),
            State::Queue(queue) => queue.join(consumer, prefetch),
        }
        self.notify.notify_waiters();
    }

    fn leave(&self, consumer: ConsumerId, now_ms: i64, counted: bool) {
        match &mut *self.state() {
            State::Stream(stream) => stream.leave(consumer),
            State::Queue(queue) => queue.leave(consumer, now_ms, counted),
        }
        self.notify.notify_waiters();
    }

    fn fetch(&self, consumer: ConsumerId, max: usize, now_ms: i64) -> Result<Vec<Delivery>> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        let topic = &self.topic;
        match &mut *self.state() {
            State::Stream(stream) => stream.fetch(topic, consumer, max),
            State::Queue(queue) => {
                queue.fetch(topic, consumer, max, now_ms, self.record.ack_timeout_ms)
            }
        }
    }

    pub fn ack(&self, ids: &[MessageId]) -> Result<Vec<Settlement>> {
        let (settlements, freed) = match &mut *self.state() {
            State::Stream(stream) => (stream.commit(&self.topic, ids)?, false),
            State::Queue(queue) => queue.ack(&self.topic, ids, self.clock.now_ms())?,
        };
        if freed {
            self.notify.notify_waiters();
        }
        Ok(settlements)
    }

    fn nack(
        &self,
        ids: &[MessageId],
        requeue: bool,
        delay: Duration,
        error: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<Settlement>> {
        crate::config::duration_ms("nack delay", delay)?;
        let settlements = match &mut *self.state() {
            State::Stream(stream) => stream.rewind(&self.topic, ids, requeue)?,
            State::Queue(queue) => queue.nack(&self.topic, ids, requeue, delay, error, now_ms)?,
        };
        self.notify.notify_waiters();
        Ok(settlements)
    }

    fn release_messages(&self, ids: &[MessageId], now_ms: i64) -> Result<()> {
        match &mut *self.state() {
            State::Stream(stream) => {
                stream.rewind(&self.topic, ids, true)?;
            }
            State::Queue(queue) => queue.release(&self.topic, ids, now_ms)?,
        }
        self.notify.notify_waiters();
        Ok(())
    }

    /// Removes messages from a queue subscription, delivered or not (operator action).
    pub fn discard(&self, ids: &[MessageId]) -> Result<()> {
        match &mut *self.state() {
            State::Stream(_) => Err(Error::InvalidArgument(
                "messages can be discarded only from queue subscriptions".into(),
            )),
            State::Queue(queue) => queue.discard(&self.topic, ids),
        }
    }

    /// Makes a settled message of a queue subscription pending again, with a fresh delivery
    /// count (a dead letter redriven to where it came from). False if the log no longer holds
    /// it.
    pub fn redeliver_settled(&self, id: MessageId) -> Result<bool> {
        let redelivered = match &mut *self.state() {
            State::Stream(_) => {
                return Err(Error::InvalidArgument(
                    "messages can be redelivered only to queue subscriptions".into(),
                ));
            }
            State::Queue(queue) => queue.redeliver_settled(&self.topic, id, self.clock.now_ms())?,
        };
        self.notify.notify_waiters();
        Ok(redelivered)
    }

    /// Dead letters ready to be stored in the dead-letter topic (queue subscriptions).
    pub fn take_dead_letters(&self) -> Vec<DeadLetter> {
        match &mut *self.state() {
            State::Stream(_) => Vec::new(),
            State::Queue(queue) => queue.take_dead_letters(),
        }
    }

    /// The dead-letter topic stored `letters` durably (`Ok`), or could not (`Err`: retry).
    pub fn dead_letters_done(&self, letters: Vec<DeadLetter>, stored: bool, now_ms: i64) {
        if let State::Queue(queue) = &mut *self.state() {
            if stored {
                queue.dead_letters_stored(&letters, now_ms);
            } else {
                queue.dead_letters_failed(letters);
            }
        }
    }

    /// A dead letter of `id` stored by an earlier run was found in the dead-letter topic: `id`
    /// is settled and not dead-lettered again (queue subscriptions).
    pub fn dead_letter_found(&self, id: MessageId) {
        if let State::Queue(queue) = &mut *self.state() {
            queue.dead_letter_found(id);
        }
    }

    /// Whether `id` is settled in this queue subscription.
    pub fn is_settled(&self, id: MessageId) -> bool {
        match &*self.state() {
            State::Stream(_) => false,
            State::Queue(queue) => queue.is_settled(id),
        }
    }

    /// Whether the stored state of this queue subscription has every one of `ids` settled, so
    /// a crash now would not bring them back.
    pub fn settled_in_store(&self, catalog: &Catalog, ids: &[MessageId]) -> Result<bool> {
        queue::QueueState::settled_in_store(catalog, &self.record, ids)
    }

    /// Messages not yet acked; `None` for stream subscriptions.
    pub fn backlog(&self) -> Option<u64> {
        match &*self.state() {
            State::Stream(_) => None,
            State::Queue(queue) => Some(queue.backlog(&self.topic)),
        }
    }

    /// Unacked messages from the start, for browsing (queue subscriptions).
    pub fn pending(&self, max: usize) -> Result<Vec<Delivery>> {
        match &*self.state() {
            State::Stream(_) => Ok(Vec::new()),
            State::Queue(queue) => queue.pending(&self.topic, max),
        }
    }

    /// Moves every partition to `to`.
    pub fn reset(&self, to: StartPosition) -> Result<()> {
        match &mut *self.state() {
            State::Stream(stream) => stream.reset(&self.topic, to)?,
            State::Queue(queue) => queue.reset(&self.topic, to)?,
        }
        self.notify.notify_waiters();
        Ok(())
    }

    /// Runs timers: ack timeouts and due redeliveries; keeps floors above retention.
    pub fn tick(&self, now_ms: i64) {
        let wake = match &mut *self.state() {
            State::Stream(stream) => stream.tick(&self.topic),
            State::Queue(queue) => queue.tick(&self.topic, now_ms),
        };
        if wake {
            self.notify.notify_waiters();
        }
    }

    /// Catalog writes for whatever changed since the last call.
    pub fn take_dirty_positions(&self) -> Vec<MetaOp> {
        let record = &self.record;
        let changed = match &mut *self.state() {
            State::Stream(stream) => return stream.take_dirty(&record.topic, &record.group),
            State::Queue(queue) => queue.take_dirty(),
        };
        changed
            .iter()
            .map(|(partition, stored)| {
                Catalog::position_op(&record.topic, &record.group, *partition, stored)
            })
            .collect()
    }

    pub fn info(&self) -> GroupInfo {
        let partitions = match &*self.state() {
            State::Stream(stream) => stream.info(&self.topic),
            State::Queue(queue) => queue.info(&self.topic),
        };
        let consumers = match &*self.state() {
            State::Stream(stream) => stream.consumer_count(),
            State::Queue(queue) => queue.consumer_count(),
        };
        GroupInfo {
            topic: self.record.topic.clone(),
            group: self.record.group.clone(),
            kind: self.record.kind,
            consumers,
            ack_timeout_ms: self.record.ack_timeout_ms,
            backlog: partitions.iter().map(|partition| partition.backlog).sum(),
            partitions,
        }
    }

    pub fn stats(&self, now_ms: i64) -> SubscriptionStats {
        let info = self.info();
        let (counters, success_rate, latency, consumers) = {
            let state = self.state();
            let (metrics, consumers) = match &*state {
                State::Stream(stream) => (&stream.metrics, stream.consumer_stats()),
                State::Queue(queue) => (&queue.metrics, queue.consumer_stats()),
            };
            (
                metrics.counters,
                metrics.success.rate(now_ms),
                metrics.latency.summary(),
                consumers,
            )
        };
        SubscriptionStats {
            topic: info.topic,
            group: info.group,
            kind: info.kind,
            backlog: info.backlog,
            in_flight: info
                .partitions
                .iter()
                .map(|partition| u64::from(partition.in_flight))
                .sum(),
            consumers: consumers
                .into_iter()
                .map(|(id, delivered, in_flight)| ConsumerStats {
                    id,
                    delivered,
                    in_flight,
                })
                .collect(),
            counters,
            success_rate,
            latency,
        }
    }

    /// Ends every consumer's wait with an error (topic deleted, broker shutting down).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// A consumer attached to a subscription. Dropping it releases its unacked deliveries for
/// redelivery to other consumers (and, for streams, its partitions).
pub struct Consumer {
    subscription: Arc<Subscription>,
    id: ConsumerId,
    clock: Arc<dyn Clock>,
    /// Settlements are answered once this says they are durable.
    positions: PositionSync,
}

impl Consumer {
    pub(crate) fn attach(
        subscription: Arc<Subscription>,
        id: ConsumerId,
        prefetch: u32,
        clock: Arc<dyn Clock>,
        positions: PositionSync,
    ) -> Consumer {
        subscription.join(id, prefetch.max(1));
        Consumer {
            subscription,
            id,
            clock,
            positions,
        }
    }

    pub fn id(&self) -> ConsumerId {
        self.id
    }
    pub fn topic(&self) -> &str {
        &self.subscription.record.topic
    }
    pub fn group(&self) -> &str {
        &self.subscription.record.group
    }
    pub fn kind(&self) -> SubscriptionKind {
        self.subscription.kind()
    }

    /// Up to `max` deliveries available now; empty if none (or no credit left).
    pub fn try_next(&self, max: usize) -> Result<Vec<Delivery>> {
        self.subscription.fetch(self.id, max, self.clock.now_ms())
    }

    /// Waits until at least one delivery is available, then returns up to `max`.
    pub async fn next(&self, max: usize) -> Result<Vec<Delivery>> {
        loop {
            let data = self.subscription.topic.data.notified();
            let own = self.subscription.notify.notified();
            tokio::pin!(data);
            tokio::pin!(own);
            // Register interest before looking, so a wake-up between look and wait is kept.
            data.as_mut().enable();
            own.as_mut().enable();
            let deliveries = self.try_next(max)?;
            if !deliveries.is_empty() {
                return Ok(deliveries);
            }
            tokio::select! {
                () = data => {}
                () = own => {}
            }
        }
    }

    /// Acknowledges deliveries. Queue: each message is done. Stream: commits the partition
    /// up to and including the highest offset given. Says per id what happened; an id never
    /// delivered changes nothing.
    ///
    /// The change takes effect at once (credit is freed, the message is not handed out
    /// again); the call returns once it is durable, sharing one save with every settlement
    /// made meanwhile. An error after the change (a full disk: `StorageFull`) means it is
    /// not durable yet: a crash may bring the messages back (the next save retries it).
    pub async fn ack(&self, ids: &[MessageId]) -> Result<Vec<Settlement>> {
        let settlements = self.subscription.ack(ids)?;
        self.positions.wait().await?;
        Ok(settlements)
    }

    /// Gives deliveries back as failed. Queue: `requeue` redelivers after `delay` (to any
    /// consumer) until `max_deliveries` is reached; without `requeue` the message is rejected
    /// and dead-lettered (it is settled in the queue once it is stored in the dead-letter
    /// topic). Stream: `requeue` rewinds the partition to the message, so it and everything
    /// after it is delivered again; without, it is skipped.
    /// Says per id what happened, and returns once durable, as `ack` does.
    pub async fn nack(
        &self,
        ids: &[MessageId],
        requeue: bool,
        delay: Duration,
    ) -> Result<Vec<Settlement>> {
        let settlements = self
            .subscription
            .nack(ids, requeue, delay, None, self.clock.now_ms())?;
        self.positions.wait().await?;
        Ok(settlements)
    }

    /// `nack` that records why processing failed; the text travels with the message if it is
    /// dead-lettered.
    pub async fn nack_with_error(
        &self,
        ids: &[MessageId],
        requeue: bool,
        delay: Duration,
        error: &str,
    ) -> Result<Vec<Settlement>> {
        let settlements =
            self.subscription
                .nack(ids, requeue, delay, Some(error), self.clock.now_ms())?;
        self.positions.wait().await?;
        Ok(settlements)
    }

    /// Gives deliveries back because this consumer is stopping, not because they failed: they
    /// are redelivered now and the delivery does not count towards `max_deliveries`. Returns
    /// once durable, as `ack` does.
    pub async fn release(&self, ids: &[MessageId]) -> Result<()> {
        self.subscription
            .release_messages(ids, self.clock.now_ms())?;
        self.positions.wait().await
    }
}

impl Consumer {
    /// Leaves the subscription cleanly (an explicit unsubscribe): what it holds unacked goes
    /// back without counting as a failed delivery, as with [`Consumer::release`]. Dropping a
    /// consumer instead (a crash or lost connection) counts those deliveries. Later fetches of
    /// a closed consumer return nothing.
    pub fn close(&self) {
        self.subscription.leave(self.id, self.clock.now_ms(), false);
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.subscription.leave(self.id, self.clock.now_ms(), true);
    }
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Consumer")
            .field("id", &self.id)
            .field("topic", &self.topic())
            .field("group", &self.group())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use weir_batch::{Batch, BatchBuilder};
    use weir_storage::{LogConfig, PartitionLog};

    use super::*;

    /// A log of `batches` batches of `per_batch` records each, `value_bytes` long.
    fn log_of(
        directory: &std::path::Path,
        batches: u64,
        per_batch: u64,
        value_bytes: usize,
    ) -> PartitionLog {
        let (mut log, _) =
            PartitionLog::open_path(directory, LogConfig::default()).expect("a log opens");
        let mut offset = 0u64;
        for _ in 0..batches {
            let mut builder = BatchBuilder::new();
            for _ in 0..per_batch {
                let mut value = offset.to_le_bytes().to_vec();
                value.resize(value_bytes.max(8), b'x');
                builder.push(1_700_000_000_000, None, &[], &value);
                offset += 1;
            }
            let batch = Batch::parse(builder.finish(), usize::MAX).expect("a valid batch");
            log.append(&batch, 1_700_000_000_000).expect("appended");
        }
        log.flush().expect("flushed");
        log
    }

    fn offsets(records: &[Record]) -> Vec<u64> {
        records.iter().map(|record| record.offset).collect()
    }

    /// Goal: a fetch gets exactly the records asked for, whatever the batch boundaries and
    /// record sizes, now that reads are sized by the request. Method: start mid-batch, ask
    /// for less than a batch, for several batches, past the end, and for records far larger
    /// than the size guess (one per read at first).
    #[test]
    fn read_records_returns_exactly_the_records_asked_for() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let log = log_of(directory.path(), 50, 100, 100);
        let reader = log.reader();
        assert_eq!(offsets(&read_records(&reader, 0, 1).unwrap()), [0]);
        assert_eq!(
            offsets(&read_records(&reader, 150, 20).unwrap()),
            (150..170).collect::<Vec<_>>()
        );
        assert_eq!(
            offsets(&read_records(&reader, 1234, 1500).unwrap()),
            (1234..2734).collect::<Vec<_>>()
        );
        assert_eq!(
            offsets(&read_records(&reader, 4990, 100).unwrap()),
            (4990..5000).collect::<Vec<_>>()
        );
        assert!(read_records(&reader, 5000, 10).unwrap().is_empty());
        for record in read_records(&reader, 4321, 3).unwrap() {
            assert_eq!(record.value[..8], record.offset.to_le_bytes());
        }

        let directory = tempfile::tempdir().expect("a temporary directory");
        let log = log_of(directory.path(), 30, 1, 100_000);
        let reader = log.reader();
        assert_eq!(
            offsets(&read_records(&reader, 3, 20).unwrap()),
            (3..23).collect::<Vec<_>>()
        );
    }

    /// Goal: reading on through a cursor gives the same records as reading afresh, wherever
    /// the next read starts: where the cursor stopped, further into its batch, before it
    /// (a reset), or in another batch. Method: compare with `read_records` for each.
    #[test]
    fn a_cursor_reads_on_where_it_stopped_and_falls_back_to_reading() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let log = log_of(directory.path(), 4, 1000, 20);
        let reader = log.reader();
        let mut cursor = None;
        let mut next = 0;
        while next < 4000 {
            let records = read_records_at(&reader, &mut cursor, next, 70).unwrap();
            assert_eq!(
                offsets(&records),
                (next..(next + 70).min(4000)).collect::<Vec<_>>()
            );
            next = records.last().unwrap().offset + 1;
        }
        assert!(cursor.is_none(), "nothing left in the last batch");
        for (from, max) in [(10, 5), (40, 3), (12, 4), (999, 2), (1500, 10), (1400, 3)] {
            let through_cursor = read_records_at(&reader, &mut cursor, from, max).unwrap();
            assert_eq!(through_cursor, read_records(&reader, from, max).unwrap());
        }
    }

    /// Goal: a redelivery kept waiting costs the message, not its batch. Method: detach a
    /// record of a large batch; its parts no longer point into the batch's buffer.
    #[test]
    fn a_detached_record_does_not_share_its_batch() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let log = log_of(directory.path(), 1, 1000, 1000);
        let reader = log.reader();
        let record = read_records(&reader, 500, 1).unwrap().pop().unwrap();
        let detached = detach(record.clone());
        assert_eq!(detached, record);
        assert_eq!(detached.value.len(), 1000);
        assert_ne!(record.value.as_ptr(), detached.value.as_ptr());
    }
}
