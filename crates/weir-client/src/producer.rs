//! [`Producer`]: batching, pipelined publishing with per-message confirms, and retry.
//!
//! `send` puts a message into its topic and partition's open batch (see `accumulator.rs`) and
//! returns a [`ConfirmFuture`] at once. A flusher task seals batches that are full or have
//! lingered, and queues them on the connection *in order*, without waiting for answers: up to
//! `max_in_flight` batches are in flight together, which is what lets the broker's group
//! commit serve many of them with one fsync. Each batch's answer is awaited by a task of its
//! own, which resolves the confirms of all its messages.
//!
//! Delivery is **at least once**. When the connection is lost, or the broker is restarting, a
//! batch whose confirm did not arrive is sent again on a new connection, after a backoff pause,
//! until `delivery_timeout`. The first attempt may have been stored, so a retried batch can be
//! stored twice, and batches retried together may be stored in a different order than they
//! were sent. An idempotent producer (producer id and sequence numbers, which the batch format
//! already carries) will remove both; until then, consumers should tolerate duplicates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use weir_proto::ErrorCode;

use crate::accumulator::{Accumulator, Limits, Pushed, SealedBatch};
use crate::client::{Client, PendingPublish, publish_on};
use crate::confirm::{ConfirmFuture, Placement, place};
use crate::error::{Error, Result};
use crate::message::{Message, Published};
use crate::partitioner::partition_for_key;

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
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            linger: Duration::from_millis(1),
            max_batch_messages: 1000,
            max_batch_bytes: 1 << 20,
            max_in_flight: 64,
            delivery_timeout: Duration::from_secs(60),
        }
    }
}

type Permit = OwnedSemaphorePermit;

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
        });
        tokio::spawn(run_flusher(shared.clone()));
        Producer {
            handle: Arc::new(Handle { shared }),
        }
    }

    /// Buffers `message` for `topic` and returns the future of its confirm. Waits only when
    /// `max_in_flight` batches are already buffered or in flight.
    ///
    /// The partition is, in order: `message.partition`; the key's partition (computed here
    /// as the broker does, from the topic's partition count, asked once per topic); or, for
    /// a message without a key, whichever partition the broker picks for the batch.
    pub async fn send(&self, topic: &str, message: Message) -> Result<ConfirmFuture> {
        let shared = &self.handle.shared;
        let partition = match (message.partition, &message.key) {
            (Some(partition), _) => Some(partition),
            (None, Some(key)) => shared
                .partition_count(topic)
                .await
                .map(|count| partition_for_key(key, count)),
            (None, None) => None,
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

    fn record_failure(&self, error: &Error) {
        lock(&self.failure).get_or_insert_with(|| error.clone());
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
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

/// Queues `batches` on the connection in order, then leaves each one's answer to a task of its
/// own. Queuing here rather than in those tasks is what keeps batches of one partition in the
/// order they were sealed.
async fn dispatch(shared: &Arc<Shared>, batches: Vec<SealedBatch<Permit>>) {
    let mut connection = shared.client.connection().await.ok();
    for batch in batches {
        let mut pending = None;
        if let Some(open) = &connection {
            match publish_on(open, &batch.topic, batch.partition, &batch.bytes).await {
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
    let outcome = match result {
        Ok(published) => placement(&shared, &batch, &published)
            .await
            .map(|placement| (placement, published.durability)),
        Err(error) => Err(error),
    };
    if let Err(error) = &outcome {
        tracing::warn!(topic = %batch.topic, messages = batch.count, %error, "publish failed");
        shared.record_failure(error);
    }
    batch.outcome.resolve(outcome);
}

async fn resend(shared: &Shared, batch: &SealedBatch<Permit>) -> Result<Published> {
    let connection = shared.client.connection().await?;
    publish_on(&connection, &batch.topic, batch.partition, &batch.bytes)
        .await?
        .wait()
        .await
}

/// Where the batch's messages went. Only a batch the broker routed and split by key needs the
/// topic's partition count, asked for then (the topic surely exists now).
async fn placement(
    shared: &Shared,
    batch: &SealedBatch<Permit>,
    published: &Published,
) -> Result<Placement> {
    let mut keys = None;
    if published.partitions.len() > 1 && batch.partition.is_none() {
        let count = u32::try_from(shared.client.topic(&batch.topic).await?.partitions.len())
            .unwrap_or(u32::MAX);
        lock(&shared.partition_counts).insert(batch.topic.clone(), Some(count));
        keys = Some((&batch.keys[..], count));
    }
    place(batch.count, &published.partitions, keys).ok_or_else(|| {
        Error::Protocol(format!(
            "the batch of {} messages to '{}' was stored, but its confirm ({:?}) cannot be matched to its messages",
            batch.count, batch.topic, published.partitions
        ))
    })
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
            let Request::Publish { batch, .. } = request else {
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
            let Request::Publish { batch, .. } = request else {
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
}
