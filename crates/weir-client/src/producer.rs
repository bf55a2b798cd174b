//! [`Producer`]: batching, pipelined publishing with per-message confirms, and retry.
//!
//! `send` puts a message into its topic and partition's open batch (see `accumulator.rs`) and
//! returns a [`ConfirmFuture`] at once. A flusher task seals batches that are full or have
//! lingered, and queues them on the connection *in order*, without waiting for answers: many
//! batches are in flight together, which is what lets the broker's group commit serve many of
//! them with one fsync. Every message's confirm names where it is stored; a message the broker
//! already held (same message id within the dedup window, or a retried batch) is confirmed at
//! the stored copy, with [`Confirm::duplicate`](crate::Confirm::duplicate) set.
//!
//! # Idempotent producer (the default)
//!
//! With [`ProducerOptions::idempotent`], the producer has a random non-zero producer id, and
//! every batch is pinned to a partition (its key's, or, for messages without a key, one chosen
//! per batch in turn) and numbered with per-partition sequence numbers in its header
//! (`BatchBuilder::producer`). Each partition is a *lane* with a task of its own that keeps at
//! most [`LANE_IN_FLIGHT`] batches in flight — fewer than the broker remembers per producer —
//! and, when something fails, settles every batch in flight and sends the unconfirmed ones
//! again **one at a time, in sequence order**, on a new connection if the old one was lost. The
//! broker answers a batch it already stored with its original offsets and does not store it
//! again, and refuses a sequence number out of order, so a retry after a lost confirm or a
//! broker crash is stored exactly once and each partition keeps the order messages were sent
//! in. A batch the broker refuses fails its messages; the lane then continues under a fresh
//! producer id (the broker's numbering expected the refused batch), numbering the batches
//! after it again. It does the same after a confirm naming duplicates, which the broker does
//! not count in the producer's numbering when it deduplicated them by message id. A batch given up after `delivery_timeout` also fails, and may or may not
//! have been stored.
//!
//! Without it, delivery is **at least once**: a batch whose confirm did not arrive is sent
//! again after a backoff pause until `delivery_timeout`, and may then be stored twice (unless
//! its messages carry ids the broker deduplicates), and batches retried together may be stored
//! in another order than they were sent.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use weir_proto::ErrorCode;

use crate::accumulator::{Accumulator, Limits, Pushed, SealedBatch};
use crate::client::{Client, PendingPublish, publish_on};
use crate::confirm::{BatchMessages, ConfirmFuture, Placement, Position, place};
use crate::error::{Error, Result};
use crate::message::{Message, Published};
use crate::partitioner::partition_for_key;

/// Most batches of one idempotent lane (topic and partition) in flight at once. The broker
/// remembers a producer's last eight batches per partition, so a retry of any batch still in
/// flight is always recognised (Kafka allows five for the same reason).
pub const LANE_IN_FLIGHT: usize = 5;

/// How many times one batch is numbered again because a batch before it failed.
const RENUMBERS_MAX: u32 = 3;

/// How a producer batches and retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerOptions {
    /// How long a batch waits for more messages after its first. Longer means fuller batches
    /// under light load, at the cost of that much latency.
    pub linger: Duration,
    /// A batch is sent once it holds this many messages.
    pub max_batch_messages: usize,
    /// A batch is sent before it would grow past this many bytes (a single larger message
    /// is sent alone; the broker's frame limit still applies to it).
    pub max_batch_bytes: usize,
    /// Most batches buffered or awaiting their confirm at once. When all are taken, `send`
    /// waits: this is the producer's back-pressure.
    pub max_in_flight: usize,
    /// How long a batch is retried after connection failures before its messages fail.
    pub delivery_timeout: Duration,
    /// A producer id and per-partition sequence numbers, so that a batch sent again after a
    /// lost confirm is stored once and each partition keeps the order of sending (see the
    /// module documentation). Messages without a key are then placed by the producer, one
    /// partition per batch in turn, instead of by the broker. Batches for a topic whose
    /// partition count the producer could not learn (it did not exist yet when first used)
    /// are sent without, at least once, until it does.
    pub idempotent: bool,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            linger: Duration::from_millis(1),
            max_batch_messages: 1000,
            max_batch_bytes: 1 << 20,
            max_in_flight: 64,
            delivery_timeout: Duration::from_secs(60),
            idempotent: true,
        }
    }
}

type Permit = OwnedSemaphorePermit;

/// The channel to one lane's task.
type LaneSender = mpsc::UnboundedSender<SealedBatch<Permit>>;

struct Shared {
    client: Client,
    options: ProducerOptions,
    /// A std mutex: held for one push or one pass over the open batches, never across an
    /// await.
    accumulator: Mutex<Accumulator<Permit>>,
    /// One permit per batch that is open, sealed or in flight; a batch gives its permit back
    /// when answered. A semaphore rather than a counter because `send` must *wait* for room.
    permits: Arc<Semaphore>,
    /// Wakes the flusher: a batch was sealed or opened (a new linger deadline), or a flush or
    /// shutdown was asked for.
    wake: Notify,
    /// Set when the last `Producer` handle is dropped: the flusher sends what is left, then
    /// ends.
    closing: AtomicBool,
    /// Partition count per topic, for routing keyed messages here. `None` means the topic did
    /// not exist when asked: its messages go unrouted and the broker places them.
    partition_counts: Mutex<HashMap<String, Option<u32>>>,
    /// The first failure since the last `flush`, which `flush` reports.
    failure: Mutex<Option<Error>>,
    /// The id idempotent lanes start with.
    producer_id: u64,
    /// The task of each idempotent lane, by topic and partition. Emptied by the flusher when
    /// it ends, which lets the lanes end once their batches are answered.
    lanes: Mutex<HashMap<(String, u32), LaneSender>>,
    /// Per topic, the partition the next batch of messages without a key goes to.
    next_partition: Mutex<HashMap<String, u32>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent at each step; a panic in one
    // does not make the data unusable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Dropping the last handle tells the flusher to send what is buffered and stop.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake.notify_one();
    }
}

/// Publishes messages in batches, with a confirm per message. Cheap to clone; clones share
/// the batches. Made by [`Client::producer`].
///
/// ```no_run
/// # async fn run(client: weir_client::Client) -> weir_client::Result<()> {
/// use weir_client::{Message, ProducerOptions};
/// let producer = client.producer(ProducerOptions::default());
/// // Returns as soon as the message is buffered...
/// let confirm = producer.send("orders", Message::new("order 1").with_key("customer-7")).await?;
/// // ...and the confirm arrives when its batch is stored.
/// let confirm = confirm.await?;
/// println!("stored at {}:{} ({:?})", confirm.partition, confirm.offset, confirm.durability);
/// # Ok(()) }
/// ```
///
/// Dropping every handle still sends what is buffered; call [`Producer::flush`] first to know
/// how it went.
#[derive(Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Producer")
            .field("options", &self.handle.shared.options)
            .field("producer_id", &self.handle.shared.producer_id)
            .finish_non_exhaustive()
    }
}

impl Producer {
    pub(crate) fn new(client: Client, mut options: ProducerOptions) -> Producer {
        // `flush` takes every permit in one `acquire_many`, which counts in `u32`.
        let permits_max = Semaphore::MAX_PERMITS.min(u32::MAX as usize);
        options.max_in_flight = options.max_in_flight.clamp(1, permits_max);
        options.max_batch_messages = options.max_batch_messages.max(1);
        let limits = Limits {
            linger: options.linger,
            max_batch_messages: options.max_batch_messages,
            max_batch_bytes: options.max_batch_bytes,
        };
        let shared = Arc::new(Shared {
            client,
            permits: Arc::new(Semaphore::new(options.max_in_flight)),
            options,
            accumulator: Mutex::new(Accumulator::new(limits)),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            partition_counts: Mutex::new(HashMap::new()),
            failure: Mutex::new(None),
            producer_id: random_producer_id(),
            lanes: Mutex::new(HashMap::new()),
            next_partition: Mutex::new(HashMap::new()),
        });
        tokio::spawn(run_flusher(shared.clone()));
        Producer {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// Buffers `message` for `topic` and returns the future of its confirm. Waits only when
    /// `max_in_flight` batches are already buffered or in flight.
    ///
    /// The partition is, in order: `message.partition`; the partition of the key, or of the
    /// message id for a message without a key (computed here as the broker does, from the
    /// topic's partition count, asked once per topic); or, for any other message, one chosen
    /// per batch — by this producer in turn when idempotent, else by the broker.
    pub async fn send(&self, topic: &str, message: Message) -> Result<ConfirmFuture> {
        let shared = &self.handle.shared;
        let partition = match (message.partition, message.routing_key()) {
            (Some(partition), _) => Some(partition),
            (None, Some(key)) => shared
                .partition_count(topic)
                .await
                .map(|count| partition_for_key(key, count)),
            (None, None) => {
                if shared.options.idempotent {
                    // Learn the count now: the batch is pinned to a partition when it is sent.
                    shared.partition_count(topic).await;
                }
                None
            }
        };
        let timestamp_ms = message.timestamp_ms.unwrap_or_else(now_ms);
        loop {
            let pushed =
                lock(&shared.accumulator).try_push(topic, partition, &message, timestamp_ms);
            match pushed {
                Pushed::Added { confirm, sealed } => {
                    if sealed {
                        shared.wake.notify_one();
                    }
                    return Ok(confirm);
                }
                Pushed::NeedsBatch { sealed } => {
                    if sealed {
                        shared.wake.notify_one();
                    }
                }
            }
            let permit = shared
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::Closed("the producer is closed".into()))?;
            let unused = lock(&shared.accumulator).open(topic, partition, permit, Instant::now());
            if unused.is_none() {
                // A new batch means a new linger deadline for the flusher to wait for.
                shared.wake.notify_one();
            }
        }
    }

    /// Sends `message` and waits for its confirm: [`Producer::send`] then the future.
    pub async fn send_confirmed(&self, topic: &str, message: Message) -> Result<crate::Confirm> {
        self.send(topic, message).await?.await
    }

    /// Sends every buffered message now and waits until every message sent before this call
    /// is confirmed or has failed. Fails with the first failure since the previous flush
    /// (each message's own future reports its own failure too).
    pub async fn flush(&self) -> Result<()> {
        let shared = &self.handle.shared;
        lock(&shared.accumulator).seal_all();
        shared.wake.notify_one();
        // Every batch holds a permit until answered, so holding all of them means every batch
        // sealed above has been answered. The semaphore is fair: later sends queue behind.
        let all = u32::try_from(shared.options.max_in_flight).unwrap_or(u32::MAX);
        let permits = shared
            .permits
            .acquire_many(all)
            .await
            .map_err(|_| Error::Closed("the producer is closed".into()))?;
        drop(permits);
        match lock(&shared.failure).take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// The options in force (after clamping to sane minimums).
    pub fn options(&self) -> &ProducerOptions {
        &self.handle.shared.options
    }

    /// The producer id idempotent batches start with (a lane whose batch was refused goes on
    /// under a fresh one).
    pub fn producer_id(&self) -> u64 {
        self.handle.shared.producer_id
    }
}

impl Shared {
    /// The topic's partition count, asked of the broker once per topic. `None` when the topic
    /// does not exist yet, or the broker could not be asked: then the broker routes.
    async fn partition_count(&self, topic: &str) -> Option<u32> {
        if let Some(known) = lock(&self.partition_counts).get(topic) {
            return *known;
        }
        let answer = self.client.topic(topic).await;
        let count = match &answer {
            Ok(info) => u32::try_from(info.partitions.len())
                .ok()
                .filter(|count| *count > 0),
            Err(_) => None,
        };
        // Remember definite answers only; a lost connection says nothing about the topic.
        let definite = answer.is_ok()
            || matches!(&answer, Err(error) if error.code() == Some(ErrorCode::UnknownTopic));
        if definite {
            lock(&self.partition_counts).insert(topic.to_owned(), count);
        }
        count
    }

    /// After a publish to `topic` succeeded: if the topic was unknown, it exists now (the
    /// broker creates topics on first use), so ask for its partitions again next time.
    fn topic_exists(&self, topic: &str) {
        let mut counts = lock(&self.partition_counts);
        if matches!(counts.get(topic), Some(None)) {
            counts.remove(topic);
        }
    }

    fn record_failure(&self, error: &Error) {
        lock(&self.failure).get_or_insert_with(|| error.clone());
    }

    /// The partition an idempotent lane sends `batch` to: its own, or for a batch of messages
    /// without a routing key, the topic's next one in turn. `None` when the producer cannot
    /// pin it (the partition count is unknown, or the broker is to route keys it cannot
    /// hash here): then it goes out unnumbered.
    fn lane_partition(&self, batch: &SealedBatch<Permit>) -> Option<u32> {
        if let Some(partition) = batch.partition {
            return Some(partition);
        }
        if batch.keys.iter().any(Option::is_some) {
            return None;
        }
        let count = (*lock(&self.partition_counts).get(&batch.topic)?)?;
        let mut next = lock(&self.next_partition);
        // Producers start at different partitions, as their ids differ.
        let partition = next
            .entry(batch.topic.clone())
            .or_insert_with(|| u32::try_from(self.producer_id % u64::from(count)).unwrap_or(0));
        let chosen = *partition % count;
        *partition = (chosen + 1) % count;
        Some(chosen)
    }

    /// Hands `batch` to its lane's task, starting the task on first use.
    fn to_lane(self: &Arc<Self>, batch: SealedBatch<Permit>, partition: u32) {
        let mut lanes = lock(&self.lanes);
        let key = (batch.topic.clone(), partition);
        let sender = lanes.entry(key).or_insert_with(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let lane = Lane {
                producer_id: self.producer_id,
                next_sequence: 0,
                epoch: 0,
            };
            tokio::spawn(run_lane(self.clone(), lane, receiver));
            sender
        });
        if let Err(unsent) = sender.send(batch) {
            // Lanes end only after the flusher, which is the one caller; answer anyway.
            unsent
                .0
                .outcome
                .resolve(Err(Error::Closed("the producer is closed".into())));
        }
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A random non-zero producer id: the standard library's randomly keyed hasher over the time,
/// the process id and a counter, so ids differ between producers, processes and machines
/// without a dependency on a random number crate.
fn random_producer_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        let nanoseconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        hasher.write_u128(nanoseconds);
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let id = hasher.finish();
        if id != 0 {
            return id;
        }
    }
}

/// Seals what is ready and queues it, until the producer is dropped and everything buffered
/// has been handed over.
async fn run_flusher(shared: Arc<Shared>) {
    loop {
        let closing = shared.closing.load(Ordering::Acquire);
        let (ready, deadline, empty) = {
            let mut accumulator = lock(&shared.accumulator);
            if closing {
                accumulator.seal_all();
            }
            let ready = accumulator.take_ready(Instant::now());
            (ready, accumulator.next_deadline(), accumulator.is_empty())
        };
        if !ready.is_empty() {
            dispatch(&shared, ready).await;
        }
        if closing && empty {
            // The lanes end once they have answered what they hold.
            lock(&shared.lanes).clear();
            return;
        }
        match deadline {
            Some(deadline) => {
                tokio::select! {
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep_until(deadline) => {}
                }
            }
            None => shared.wake.notified().await,
        }
    }
}

/// Hands idempotent batches to their lanes, and queues the others on the connection in order,
/// leaving each one's answer to a task of its own. Queuing here rather than in those tasks is
/// what keeps batches of one partition in the order they were sealed.
async fn dispatch(shared: &Arc<Shared>, batches: Vec<SealedBatch<Permit>>) {
    let mut connection = None;
    let mut connected = false;
    for mut batch in batches {
        if shared.options.idempotent
            && let Some(partition) = shared.lane_partition(&batch)
        {
            batch.partition = Some(partition);
            shared.to_lane(batch, partition);
            continue;
        }
        if !connected {
            connection = shared.client.connection().await.ok();
            connected = true;
        }
        let mut pending = None;
        if let Some(open) = &connection {
            match publish_on(
                &shared.client,
                open,
                &batch.topic,
                batch.partition,
                &batch.bytes,
            )
            .await
            {
                Ok(sent) => pending = Some(sent),
                Err(error) if error.is_retryable() => connection = None,
                Err(error) => {
                    shared.record_failure(&error);
                    batch.outcome.resolve(Err(error));
                    continue;
                }
            }
        }
        tokio::spawn(settle(shared.clone(), batch, pending));
    }
}

/// Waits for a batch's confirm, sending it again after retryable failures, then resolves
/// its messages' confirms and gives its permit back (by dropping the batch).
async fn settle(
    shared: Arc<Shared>,
    batch: SealedBatch<Permit>,
    mut pending: Option<PendingPublish>,
) {
    let give_up_at = Instant::now() + shared.options.delivery_timeout;
    let mut backoff = shared.client.options().backoff();
    let result = loop {
        let attempt = match pending.take() {
            Some(sent) => sent.wait().await,
            None => resend(&shared, &batch).await,
        };
        match attempt {
            Ok(published) => break Ok(published),
            Err(error) if error.is_retryable() && Instant::now() < give_up_at => {
                let delay = backoff.next_delay();
                tracing::debug!(topic = %batch.topic, %error, ?delay, "publish failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(error) => break Err(error),
        }
    };
    resolve(&shared, batch, result).await;
}

async fn resend(shared: &Shared, batch: &SealedBatch<Permit>) -> Result<Published> {
    let connection = shared.client.connection().await?;
    publish_on(
        &shared.client,
        &connection,
        &batch.topic,
        batch.partition,
        &batch.bytes,
    )
    .await?
    .wait()
    .await
}

/// Resolves the confirms of a batch's messages from its answer, and gives its permit back.
async fn resolve(shared: &Shared, batch: SealedBatch<Permit>, result: Result<Published>) {
    let outcome = match result {
        Ok(published) => {
            shared.topic_exists(&batch.topic);
            placement(shared, &batch, &published)
                .await
                .map(|placement| (placement, published.durability))
        }
        Err(error) => Err(error),
    };
    if let Err(error) = &outcome {
        tracing::warn!(topic = %batch.topic, messages = batch.count, %error, "publish failed");
        shared.record_failure(error);
    }
    batch.outcome.resolve(outcome);
}

/// Where the batch's messages went. Only a batch the broker routed and split by key needs the
/// topic's partition count, asked for then (the topic surely exists now).
async fn placement(
    shared: &Shared,
    batch: &SealedBatch<Permit>,
    published: &Published,
) -> Result<Placement> {
    let mut partitions = published
        .partitions
        .iter()
        .map(|range| range.partition)
        .chain(published.duplicates.iter().map(|id| id.partition));
    let first = partitions.next();
    let split = partitions.any(|partition| Some(partition) != first);
    let mut count = None;
    if split && batch.partition.is_none() {
        let known = u32::try_from(shared.client.topic(&batch.topic).await?.partitions.len())
            .unwrap_or(u32::MAX);
        lock(&shared.partition_counts).insert(batch.topic.clone(), Some(known));
        count = Some(known);
    }
    let messages = BatchMessages {
        routing: count.map(|count| (&batch.keys[..], count)),
        ids: &batch.ids,
    };
    let unmatched = || {
        Error::Protocol(format!(
            "the batch of {} messages to '{}' was stored, but its confirm (stored {:?}, \
             already held {:?}) cannot be matched to its messages",
            batch.count, batch.topic, published.partitions, published.duplicates
        ))
    };
    if let Some(placement) = place(
        batch.count,
        &published.partitions,
        &published.duplicates,
        messages,
    ) {
        return Ok(placement);
    }
    match (first, split) {
        // Some messages with ids were held already and others not, and the answer does not
        // say which: ask the broker.
        (Some(partition), false) if !published.duplicates.is_empty() && !batch.ids.is_empty() => {
            place_partly_held(shared, batch, published, partition)
                .await?
                .ok_or_else(unmatched)
        }
        _ => Err(unmatched()),
    }
}

/// Places a batch of which the broker held some messages with ids already and stored the
/// rest, when its answer alone cannot tell which (`confirm.rs`, `place`). Each such message
/// is published again alone, to the same partition: the broker holds it now either way, so it
/// answers with the copy's offset and stores nothing. A copy at or past the batch's first
/// stored offset was stored by this batch; one before it was held already. `None` if the
/// answers do not add up.
async fn place_partly_held(
    shared: &Shared,
    batch: &SealedBatch<Permit>,
    published: &Published,
    partition: u32,
) -> Result<Option<Placement>> {
    let Some(stored) = published
        .partitions
        .iter()
        .find(|range| range.partition == partition)
    else {
        return Ok(None);
    };
    let parsed = weir_batch::Batch::parse(batch.bytes.clone(), usize::MAX)
        .map_err(|error| Error::Protocol(format!("the producer's own batch: {error}")))?;
    let mut positions = Vec::with_capacity(batch.count);
    let mut first: HashMap<Bytes, Position> = HashMap::new();
    let mut next_offset = stored.base_offset;
    for (index, record) in parsed.records().enumerate() {
        let record = record
            .map_err(|error| Error::Protocol(format!("the producer's own batch: {error}")))?;
        let stored_here = |next_offset: &mut u64| {
            let offset = *next_offset;
            *next_offset += 1;
            Position {
                partition,
                offset,
                duplicate: false,
            }
        };
        let position = match batch.ids.get(index).and_then(Option::as_ref) {
            Some(id) => match first.get(id) {
                Some(earlier) => Position {
                    duplicate: true,
                    ..*earlier
                },
                None => {
                    let position = match held_copy(shared, batch, partition, &record).await? {
                        Some(offset) if offset >= stored.base_offset => {
                            if offset != next_offset {
                                return Ok(None);
                            }
                            stored_here(&mut next_offset)
                        }
                        Some(offset) => Position {
                            partition,
                            offset,
                            duplicate: true,
                        },
                        None => return Ok(None),
                    };
                    first.insert(id.clone(), position);
                    position
                }
            },
            None => stored_here(&mut next_offset),
        };
        positions.push(position);
    }
    let complete = positions.len() == batch.count && next_offset == stored.last_offset + 1;
    Ok(complete.then_some(Placement::Listed(positions)))
}

/// Where the broker holds `record` (which has a message id): it is published again alone and
/// answered as a duplicate. `None` if the broker stored it instead (its dedup window ended
/// in between).
async fn held_copy(
    shared: &Shared,
    batch: &SealedBatch<Permit>,
    partition: u32,
    record: &weir_batch::Record,
) -> Result<Option<u64>> {
    let mut builder = weir_batch::BatchBuilder::new();
    let headers: Vec<(&str, &[u8])> = record
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), &value[..]))
        .collect();
    builder.push(
        record.timestamp_ms,
        record.key.as_deref(),
        &headers,
        &record.value,
    );
    let answer = shared
        .client
        .publish(&batch.topic, Some(partition), builder.finish())
        .await?;
    Ok(
        match (answer.partitions.as_slice(), answer.duplicates.as_slice()) {
            ([], [held]) if held.partition == partition => Some(held.offset),
            _ => {
                tracing::warn!(topic = %batch.topic, "a message published again to learn its position was stored again");
                None
            }
        },
    )
}

/// One idempotent lane's numbering.
#[derive(Debug)]
struct Lane {
    producer_id: u64,
    next_sequence: u32,
    /// Counts the fresh producer ids taken after failures: a batch numbered in an earlier
    /// epoch that the broker refuses owes it to a failure before it, not to itself.
    epoch: u64,
}

/// The numbers a lane gave a batch.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    producer_id: u64,
    sequence: u32,
    epoch: u64,
}

impl Lane {
    /// Numbers `batch` next, writing the producer id and sequence into its header.
    fn stamp(&mut self, batch: &mut SealedBatch<Permit>) -> Stamp {
        let stamp = Stamp {
            producer_id: self.producer_id,
            sequence: self.next_sequence,
            epoch: self.epoch,
        };
        let count = u32::try_from(batch.count).unwrap_or(u32::MAX);
        self.next_sequence = self.next_sequence.wrapping_add(count);
        batch.bytes = stamp_batch(
            std::mem::take(&mut batch.bytes),
            stamp.producer_id,
            stamp.sequence,
        );
        stamp
    }

    /// After a confirm: a batch with messages the broker held already by message id does not
    /// move the broker's numbering of the producer on (it records the producer only with a
    /// batch it stores whole), so the batches after it would be refused as out of order; go on
    /// under a fresh producer id. (A retried batch answered with its original offsets renews
    /// too, needlessly but harmlessly: the answer does not tell the two apart.)
    fn answered(&mut self, published: &Published) {
        if !published.duplicates.is_empty() {
            self.renew();
        }
    }

    /// Goes on under a fresh producer id, numbering from 0: after a batch failed, the broker's
    /// numbering for the old id is at that batch (refused) or unknown (given up).
    fn renew(&mut self) {
        self.producer_id = random_producer_id();
        self.next_sequence = 0;
        self.epoch += 1;
    }
}

/// Where the idempotence fields and the CRC sit in a batch header (`docs/storage-format.md`).
const CRC_AT: usize = 12;
const CRC_COVERS_FROM: usize = 16;
const PRODUCER_ID_AT: usize = 40;
const BASE_SEQUENCE_AT: usize = 48;

/// `bytes` (an encoded batch) with the producer id and base sequence set and the CRC
/// recomputed. Reuses the buffer when nothing else holds it.
fn stamp_batch(bytes: Bytes, producer_id: u64, base_sequence: u32) -> Bytes {
    let mut stamped = bytes
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    if stamped.len() < weir_batch::HEADER_LEN {
        // Not a batch; the broker will refuse it as it is.
        return stamped.freeze();
    }
    stamped[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_le_bytes());
    stamped[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_le_bytes());
    let crc = crc32c::crc32c(&stamped[CRC_COVERS_FROM..]);
    stamped[CRC_AT..CRC_COVERS_FROM].copy_from_slice(&crc.to_le_bytes());
    stamped.freeze()
}

/// An answer to wait for.
type Answer = Pin<Box<dyn Future<Output = Result<Published>> + Send>>;

/// A batch of a lane, numbered.
struct LaneBatch {
    batch: SealedBatch<Permit>,
    stamp: Stamp,
    give_up_at: Instant,
    renumbered: u32,
}

/// Sends `batch` on the client's connection (reconnecting if need be) and returns its answer
/// to wait for.
async fn send_numbered(shared: &Shared, batch: &SealedBatch<Permit>) -> Answer {
    let sent = async {
        let connection = shared.client.connection().await?;
        publish_on(
            &shared.client,
            &connection,
            &batch.topic,
            batch.partition,
            &batch.bytes,
        )
        .await
    }
    .await;
    match sent {
        Ok(pending) => Box::pin(pending.wait()),
        Err(error) => Box::pin(std::future::ready(Err(error))),
    }
}

/// The answer to the oldest batch in flight (pends while there is none).
async fn first_answer(in_flight: &mut VecDeque<(LaneBatch, Answer)>) -> Result<Published> {
    match in_flight.front_mut() {
        Some((_, answer)) => answer.as_mut().await,
        None => std::future::pending().await,
    }
}

/// One lane's task: numbers and sends its batches in order, at most [`LANE_IN_FLIGHT`] at
/// once, and recovers in order when one fails. Ends when the flusher drops the sender and
/// every batch is answered.
async fn run_lane(
    shared: Arc<Shared>,
    mut lane: Lane,
    mut incoming: mpsc::UnboundedReceiver<SealedBatch<Permit>>,
) {
    let mut in_flight: VecDeque<(LaneBatch, Answer)> = VecDeque::new();
    let mut open = true;
    loop {
        tokio::select! {
            biased;
            answer = first_answer(&mut in_flight), if !in_flight.is_empty() => {
                let Some((numbered, _)) = in_flight.pop_front() else {
                    continue;
                };
                match answer {
                    Ok(published) => {
                        lane.answered(&published);
                        resolve(&shared, numbered.batch, Ok(published)).await;
                    }
                    Err(error) => {
                        // Settle everything in flight, then go through the failures in
                        // order: nothing newer is sent before they are resolved.
                        let mut answered = vec![(numbered, Err(error))];
                        while let Some((numbered, answer)) = in_flight.pop_front() {
                            answered.push((numbered, answer.await));
                        }
                        recover(&shared, &mut lane, answered).await;
                    }
                }
            }
            received = incoming.recv(), if open && in_flight.len() < LANE_IN_FLIGHT => {
                match received {
                    Some(mut batch) => {
                        let stamp = lane.stamp(&mut batch);
                        let answer = send_numbered(&shared, &batch).await;
                        let numbered = LaneBatch {
                            batch,
                            stamp,
                            give_up_at: Instant::now() + shared.options.delivery_timeout,
                            renumbered: 0,
                        };
                        in_flight.push_back((numbered, answer));
                    }
                    None => open = false,
                }
            }
            else => break,
        }
    }
}

/// Resolves a lane's answered batches in sequence order, sending each unconfirmed one again
/// and waiting for its answer before the next: a retried batch the broker stored already is
/// answered with its original offsets, and no batch overtakes an earlier one.
async fn recover(shared: &Shared, lane: &mut Lane, answered: Vec<(LaneBatch, Result<Published>)>) {
    let mut backoff = shared.client.options().backoff();
    for (mut numbered, mut answer) in answered {
        loop {
            let error = match answer {
                Ok(published) => {
                    lane.answered(&published);
                    resolve(shared, numbered.batch, Ok(published)).await;
                    break;
                }
                Err(error) => error,
            };
            if error.is_retryable() && Instant::now() < numbered.give_up_at {
                let delay = backoff.next_delay();
                tracing::debug!(
                    topic = %numbered.batch.topic,
                    partition = ?numbered.batch.partition,
                    sequence = numbered.stamp.sequence,
                    %error,
                    ?delay,
                    "publish failed; sending again in order"
                );
                tokio::time::sleep(delay).await;
            } else if numbered.stamp.epoch != lane.epoch
                && error.code() == Some(ErrorCode::InvalidArgument)
                && numbered.renumbered < RENUMBERS_MAX
            {
                // Refused as out of order because a batch before it failed: number it after
                // the batches the lane has numbered since.
                tracing::debug!(
                    topic = %numbered.batch.topic,
                    partition = ?numbered.batch.partition,
                    "numbering a batch again after an earlier one failed"
                );
                numbered.stamp = lane.stamp(&mut numbered.batch);
                numbered.renumbered += 1;
            } else {
                lane.renew();
                resolve(shared, numbered.batch, Err(error)).await;
                break;
            }
            answer = send_numbered(shared, &numbered.batch).await.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use weir_proto::{Durability, Fsync, PartitionInfo, PublishedRange, Request, Response};

    use super::*;
    use crate::ClientOptions;
    use crate::scripted_server::scripted_server;

    const PATIENCE: Duration = Duration::from_secs(10);

    #[test]
    fn handles_can_be_shared_between_tasks() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Client>();
        shareable::<Producer>();
        shareable::<ConfirmFuture>();
        shareable::<crate::Consumer>();
    }

    fn records_in(batch: &bytes::Bytes) -> u64 {
        u64::from(
            weir_batch::Batch::parse(batch.clone(), usize::MAX)
                .expect("the producer sends valid batches")
                .record_count(),
        )
    }

    fn published(partition: u32, base_offset: u64, count: u64) -> Response {
        Response::Published {
            partitions: vec![PublishedRange {
                partition,
                base_offset,
                last_offset: base_offset + count - 1,
            }],
            durability: Durability::Fsynced,
        }
    }

    async fn client(address: &str) -> Client {
        let options = ClientOptions {
            reconnect_delay_min: Duration::from_millis(5),
            reconnect_delay_max: Duration::from_millis(20),
            ..ClientOptions::default()
        };
        Client::connect_with(address, options).await.unwrap()
    }

    /// Goal: the producer keeps many batches in flight on one connection instead of waiting
    /// for each confirm, and each message's confirm names its own offset. Method: a server
    /// that answers no publish until it holds five of them; 50 messages in batches of 10.
    #[tokio::test]
    async fn many_batches_are_in_flight_at_once_and_each_message_gets_its_offset() {
        let mut held = Vec::new();
        let mut next_offset = 0;
        let address = scripted_server(move |_, correlation_id, request| {
            let (Request::Publish { batch, .. }
            | Request::PublishReportingDuplicates { batch, .. }) = request
            else {
                panic!("unexpected {request:?}")
            };
            let count = records_in(&batch);
            held.push((correlation_id, published(0, next_offset, count)));
            next_offset += count;
            if held.len() < 5 {
                return Some(Vec::new());
            }
            Some(std::mem::take(&mut held))
        })
        .await;
        let producer = client(&address).await.producer(ProducerOptions {
            max_batch_messages: 10,
            ..ProducerOptions::default()
        });
        let mut confirms = Vec::new();
        for index in 0..50 {
            let message = Message::new(format!("m{index}")).with_partition(0);
            confirms.push(producer.send("t", message).await.unwrap());
        }
        for (index, confirm) in confirms.into_iter().enumerate() {
            let confirm = tokio::time::timeout(PATIENCE, confirm)
                .await
                .expect("confirmed without waiting per batch")
                .unwrap();
            assert_eq!((confirm.partition, confirm.offset), (0, index as u64));
            assert_eq!(confirm.durability, Durability::Fsynced);
        }
        producer.flush().await.unwrap();
    }

    /// Goal: a batch whose confirm was lost with the connection is sent again on a new one
    /// (at least once). Method: the first connection closes on the first publish; the next
    /// one answers.
    #[tokio::test]
    async fn a_batch_is_sent_again_after_the_connection_is_lost() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = attempts.clone();
        let address = scripted_server(move |connection, correlation_id, request| {
            let (Request::Publish { batch, .. }
            | Request::PublishReportingDuplicates { batch, .. }) = request
            else {
                panic!("unexpected {request:?}")
            };
            counted.fetch_add(1, Ordering::SeqCst);
            if connection == 0 {
                return None;
            }
            Some(vec![(correlation_id, published(0, 7, records_in(&batch)))])
        })
        .await;
        let producer = client(&address).await.producer(ProducerOptions::default());
        let confirm = tokio::time::timeout(
            PATIENCE,
            producer.send_confirmed("t", Message::new("once").with_partition(0)),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(confirm.offset, 7);
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        producer.flush().await.unwrap();
    }

    /// Goal: a batch the broker refuses fails each of its messages and the next flush, and
    /// is not retried. Method: a server that refuses every publish as too large.
    #[tokio::test]
    async fn a_refused_batch_fails_its_messages_and_the_next_flush() {
        let address = scripted_server(|_, correlation_id, _| {
            Some(vec![(
                correlation_id,
                Response::error(ErrorCode::PayloadTooLarge),
            )])
        })
        .await;
        let producer = client(&address).await.producer(ProducerOptions::default());
        let first = producer
            .send("t", Message::new("a").with_partition(0))
            .await
            .unwrap();
        let second = producer
            .send("t", Message::new("b").with_partition(0))
            .await
            .unwrap();
        let flushed = producer.flush().await.unwrap_err();
        assert_eq!(flushed.code(), Some(ErrorCode::PayloadTooLarge));
        for confirm in [first, second] {
            assert_eq!(
                confirm.await.unwrap_err().code(),
                Some(ErrorCode::PayloadTooLarge)
            );
        }
        // Reported once: the next flush starts clean.
        producer.flush().await.unwrap();
    }

    /// Goal: a keyed message goes to its key's partition, computed from the topic's partition
    /// count, which is asked once. Method: a 4-partition topic and two keyed sends.
    #[tokio::test]
    async fn a_keyed_message_is_sent_to_its_keys_partition() {
        let describes = Arc::new(AtomicUsize::new(0));
        let counted = describes.clone();
        let address = scripted_server(move |_, correlation_id, request| match request {
            Request::DescribeTopic { name } => {
                counted.fetch_add(1, Ordering::SeqCst);
                let partitions = (0..4)
                    .map(|partition| PartitionInfo {
                        partition,
                        start_offset: 0,
                        end_offset: 0,
                        size_bytes: 0,
                    })
                    .collect();
                Some(vec![(
                    correlation_id,
                    Response::Topic(weir_proto::TopicInfo {
                        name,
                        partitions,
                        fsync: Fsync::Always,
                        retention_ms: None,
                        retention_bytes: None,
                    }),
                )])
            }
            Request::Publish {
                partition, batch, ..
            }
            | Request::PublishReportingDuplicates {
                partition, batch, ..
            } => {
                let partition = partition.expect("the producer routed the key itself");
                Some(vec![(
                    correlation_id,
                    published(partition, 0, records_in(&batch)),
                )])
            }
            other => panic!("unexpected {other:?}"),
        })
        .await;
        let producer = client(&address).await.producer(ProducerOptions::default());
        for key in ["customer-1", "customer-2"] {
            let confirm = producer
                .send_confirmed("orders", Message::new("x").with_key(key))
                .await
                .unwrap();
            assert_eq!(confirm.partition, partition_for_key(key.as_bytes(), 4));
        }
        assert_eq!(describes.load(Ordering::SeqCst), 1);
    }

    /// The broker's idempotence rules for one partition, as `weir-core`'s dedup applies them:
    /// a producer's batch numbered like one it stored is answered with the stored offsets; an
    /// unknown producer may start anywhere; a known one must continue where it stopped.
    #[derive(Default)]
    struct IdempotentPartition {
        /// (producer id, base sequence, count, base offset) of each stored batch, in order.
        stored: Vec<(u64, u32, u32, u64)>,
        /// Values stored, in offset order.
        values: Vec<String>,
        /// Publishes to refuse with `backlog_full`, by value of their first message.
        refuse: Vec<String>,
    }

    impl IdempotentPartition {
        fn publish(&mut self, batch: &bytes::Bytes) -> Response {
            let parsed = weir_batch::Batch::parse(batch.clone(), usize::MAX).unwrap();
            let values: Vec<String> = parsed
                .records()
                .map(|record| String::from_utf8(record.unwrap().value.to_vec()).unwrap())
                .collect();
            if let Some(at) = self.refuse.iter().position(|value| *value == values[0]) {
                self.refuse.remove(at);
                return Response::error(ErrorCode::BacklogFull);
            }
            let (producer_id, sequence) = parsed.producer().expect("an idempotent batch");
            let count = parsed.record_count();
            if let Some(&(_, _, _, base_offset)) = self
                .stored
                .iter()
                .find(|stored| (stored.0, stored.1) == (producer_id, sequence))
            {
                return Response::PublishedWithDuplicates {
                    partitions: Vec::new(),
                    duplicates: (0..u64::from(count))
                        .map(|index| weir_proto::MessageId {
                            partition: 0,
                            offset: base_offset + index,
                        })
                        .collect(),
                    durability: Durability::Fsynced,
                };
            }
            if let Some(last) = self
                .stored
                .iter()
                .rev()
                .find(|stored| stored.0 == producer_id)
                && sequence != last.1 + last.2
            {
                return Response::error_with(ErrorCode::InvalidArgument, "out of order");
            }
            let base_offset = self.values.len() as u64;
            self.stored
                .push((producer_id, sequence, count, base_offset));
            self.values.extend(values);
            Response::PublishedWithDuplicates {
                partitions: vec![PublishedRange {
                    partition: 0,
                    base_offset,
                    last_offset: base_offset + u64::from(count) - 1,
                }],
                duplicates: Vec::new(),
                durability: Durability::Fsynced,
            }
        }
    }

    /// Goal: after the connection is lost with batches in flight, the unconfirmed batches are
    /// sent again in sequence order with their original numbers, so those the broker stored
    /// are confirmed at their original offsets and none is stored twice. Method: a server
    /// that stores the first two batches of the first connection without answering and drops
    /// the connection on the third; the next connection answers by the broker's rules.
    #[tokio::test]
    async fn batches_in_flight_when_the_connection_is_lost_are_stored_once_in_order() {
        let partition = Arc::new(Mutex::new(IdempotentPartition::default()));
        let broker = partition.clone();
        let address = scripted_server(move |connection, correlation_id, request| {
            let Request::PublishReportingDuplicates { batch, .. } = request else {
                panic!("unexpected {request:?}")
            };
            let mut broker = broker.lock().unwrap();
            if connection == 0 {
                if broker.stored.len() == 2 {
                    return None;
                }
                broker.publish(&batch);
                return Some(Vec::new());
            }
            Some(vec![(correlation_id, broker.publish(&batch))])
        })
        .await;
        let producer = client(&address).await.producer(ProducerOptions {
            max_batch_messages: 2,
            ..ProducerOptions::default()
        });
        let mut confirms = Vec::new();
        for index in 0..8 {
            let message = Message::new(format!("m{index}")).with_partition(0);
            confirms.push(producer.send("t", message).await.unwrap());
        }
        let mut offsets = Vec::new();
        for confirm in confirms {
            let confirm = tokio::time::timeout(PATIENCE, confirm)
                .await
                .expect("confirmed")
                .unwrap();
            offsets.push(confirm.offset);
        }
        assert_eq!(offsets, (0..8).collect::<Vec<u64>>());
        let partition = partition.lock().unwrap();
        let expected: Vec<String> = (0..8).map(|index| format!("m{index}")).collect();
        assert_eq!(
            partition.values, expected,
            "each message stored once, in order"
        );
        assert!(
            partition
                .stored
                .iter()
                .all(|stored| stored.0 == producer.producer_id()),
            "one producer id throughout: {:?}",
            partition.stored
        );
    }

    /// Goal: a batch the broker refuses fails its own messages only; the batches after it go
    /// through, in order, under a fresh producer id. Method: a producer the broker knows
    /// (one batch stored), then three single-message batches sent together of which the
    /// broker refuses the first with `backlog_full` (and so the others as out of order).
    #[tokio::test]
    async fn a_refused_batch_fails_alone_and_later_batches_are_numbered_again() {
        let partition = Arc::new(Mutex::new(IdempotentPartition {
            refuse: vec!["b".into()],
            ..IdempotentPartition::default()
        }));
        let broker = partition.clone();
        let address = scripted_server(move |_, correlation_id, request| {
            let Request::PublishReportingDuplicates { batch, .. } = request else {
                panic!("unexpected {request:?}")
            };
            Some(vec![(
                correlation_id,
                broker.lock().unwrap().publish(&batch),
            )])
        })
        .await;
        let producer = client(&address).await.producer(ProducerOptions {
            max_batch_messages: 1,
            ..ProducerOptions::default()
        });
        let first = producer
            .send_confirmed("t", Message::new("a").with_partition(0))
            .await
            .unwrap();
        assert_eq!(first.offset, 0);
        let mut confirms = Vec::new();
        for value in ["b", "c", "d"] {
            let message = Message::new(value).with_partition(0);
            confirms.push(producer.send("t", message).await.unwrap());
        }
        let mut outcomes = Vec::new();
        for confirm in confirms {
            let outcome = tokio::time::timeout(PATIENCE, confirm)
                .await
                .expect("answered");
            outcomes.push(
                outcome
                    .map(|confirm| confirm.offset)
                    .map_err(|error| error.code()),
            );
        }
        assert_eq!(
            outcomes,
            [Err(Some(ErrorCode::BacklogFull)), Ok(1), Ok(2)],
            "the refused message fails, the others are stored after it in order"
        );
        assert_eq!(partition.lock().unwrap().values, ["a", "c", "d"]);
        assert_eq!(
            producer.flush().await.unwrap_err().code(),
            Some(ErrorCode::BacklogFull)
        );
    }

    #[test]
    fn stamping_a_batch_sets_its_producer_fields_and_keeps_it_valid() {
        let mut builder = weir_batch::BatchBuilder::new();
        builder.push(1, None, &[], b"x");
        builder.push(2, Some(b"k"), &[("h", b"v")], b"y");
        let stamped = stamp_batch(builder.finish(), 77, 1_000);
        let batch = weir_batch::Batch::parse(stamped, usize::MAX).expect("a valid CRC");
        assert_eq!(batch.producer(), Some((77, 1_000)));
        assert_eq!(batch.record_count(), 2);
    }
}
