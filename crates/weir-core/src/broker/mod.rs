//! The [`Broker`]: the one API every front end (and every embedding program) talks to.
//! Topics, publishing and subscriptions live here; exchanges in [`exchanges`].

mod alerting;
mod background;
mod dead_letters;
mod exchanges;
mod idempotency;
mod positions;
mod schedule;
mod transactions;

pub use dead_letters::{DLQ_GROUP, DLQ_HEADER_PREFIX, DeadLetterQueueInfo};
pub use exchanges::RoutedConfirm;
pub use idempotency::Claim;
pub(crate) use positions::PositionSync;
pub use schedule::{MAX_DELAY, ScheduleRequest, ScheduledMessage};
pub use transactions::{Decision, TransactionChecker, TransactionInfo, TransactionState};

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use weir_batch::{Batch, BatchBuilder, Record};

use crate::alerts::{Alert, AlertBook, AlertRule};
use crate::catalog::{Catalog, SubscriptionRecord, valid_name};
use crate::config::{
    BrokerConfig, Durability, FsyncPolicy, StartPosition, SubscribeOptions, TopicConfig,
};
use crate::error::{Error, Result};
use crate::exchange::Exchange;
use crate::metrics::{BrokerMetrics, BrokerStats, PartitionStats, TopicStats};
use crate::partition::Confirmed;
use crate::subscription::{Consumer, GroupInfo, Subscription, read_records};
use crate::topic::{Topic, wait_all};

/// A message to publish, for callers that do not build batches themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub value: Bytes,
    /// Defaults to the broker's clock.
    pub timestamp_ms: Option<i64>,
}

impl Message {
    pub fn new(value: impl Into<Bytes>) -> Message {
        Message {
            value: value.into(),
            ..Message::default()
        }
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Message {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Message {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Offsets a published batch received in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedRange {
    pub partition: u32,
    pub base_offset: u64,
    pub last_offset: u64,
}

/// A message not stored again because an earlier copy is: where that copy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duplicate {
    pub partition: u32,
    pub offset: u64,
}

/// The answer to a publish: where the messages are and what survives what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirm {
    pub ranges: Vec<PublishedRange>,
    /// Messages recognised as duplicates (by message id or idempotent-producer sequence).
    pub duplicates: Vec<Duplicate>,
    /// The weakest durability among the partitions written.
    pub durability: Durability,
}

impl From<Vec<Confirmed>> for Confirm {
    fn from(confirms: Vec<Confirmed>) -> Confirm {
        let durability = if confirms
            .iter()
            .all(|confirm| confirm.durability == Durability::Fsynced)
        {
            Durability::Fsynced
        } else {
            Durability::Os
        };
        let mut ranges = Vec::new();
        let mut duplicates = Vec::new();
        for confirm in confirms {
            if let Some((base_offset, last_offset)) = confirm.appended {
                ranges.push(PublishedRange {
                    partition: confirm.partition,
                    base_offset,
                    last_offset,
                });
            }
            duplicates.extend(confirm.duplicates.iter().map(|&offset| Duplicate {
                partition: confirm.partition,
                offset,
            }));
        }
        Confirm {
            ranges,
            duplicates,
            durability,
        }
    }
}

/// One partition as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub start_offset: u64,
    /// One past the last visible offset.
    pub end_offset: u64,
    pub size_bytes: u64,
}

/// A topic as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionInfo>,
}

/// When background work last ran, in clock milliseconds.
#[derive(Default)]
struct Timers {
    positions_saved_ms: i64,
    retention_ms: i64,
    keys_expired_ms: i64,
    alerts_evaluated_ms: i64,
    interval_synced_ms: HashMap<String, i64>,
}

/// Most headers one message may carry when published. Each header costs more in a delivery
/// than in the batch (lengths as `u32`s), so unbounded empty headers could make a delivery of
/// one message larger than a protocol frame; with this bound, a message of a batch within
/// `max_batch_bytes` always fits one.
pub const MAX_RECORD_HEADERS: u32 = 1024;
/// What changes without a settlement (delivery counts taken at hand-out, timeouts) is saved
/// this often; after a crash, at most this much of it is forgotten. Settlements are durable
/// before they are answered.
const SAVE_POSITIONS_MS: i64 = 100;
const RETENTION_MS: i64 = 1_000;
const EXPIRE_KEYS_MS: i64 = 60_000;
const EVALUATE_ALERTS_MS: i64 = 1_000;

struct Inner {
    config: BrokerConfig,
    catalog: Catalog,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    subscriptions: RwLock<BTreeMap<(String, String), Arc<Subscription>>>,
    /// Serialises creating and deleting topics and subscriptions, which touch the catalog,
    /// directories and the maps together. A tokio mutex: holders await partition shutdown.
    admin: tokio::sync::Mutex<()>,
    timers: Mutex<Timers>,
    exchanges: RwLock<BTreeMap<String, Arc<Exchange>>>,
    /// Delayed messages: the near-term window, the write and load locks, the hand-over.
    schedule: schedule::Scheduler,
    /// Ids of scheduled messages and transactions: unique and growing across restarts.
    next_id: AtomicU64,
    /// One lock per transaction being worked on: serialises the decisions on that transaction
    /// only, so one transaction's commit waiting for its partitions holds up no other.
    transaction_locks: transactions::TransactionLocks,
    /// The group commit of consumer positions (`positions.rs`).
    position_saves: positions::PositionSaves,
    /// Positions a failed save could not write, written first by the next. Its lock also
    /// serialises taking dirty positions with writing them, so an older save never lands
    /// after a newer one.
    positions_unsaved: Mutex<Vec<weir_storage::MetaOp>>,
    checkers: Mutex<transactions::Checkers>,
    /// Where each queue subscription's dead letters stand (`dead_letters.rs`).
    dead_letter_marks: dead_letters::DeadLetterMarks,
    /// Held across one subscription's round of storing its dead letters (take, append,
    /// settle), so a `tick` that finds the letters taken by a concurrent round returns only
    /// once that round is done.
    dead_letter_round: tokio::sync::Mutex<()>,
    metrics: Arc<BrokerMetrics>,
    /// Background steps failing now, backing off (`background.rs`).
    background: Mutex<background::Background>,
    alert_rules: RwLock<Vec<AlertRule>>,
    alert_book: Mutex<AlertBook>,
    /// Every alert that fires or resolves, for front ends (the webhook, the HTTP alert stream).
    alert_events: tokio::sync::broadcast::Sender<Alert>,
    /// The timer and scheduler tasks, stopped by `shutdown`.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Serialises read-modify-write of idempotency keys.
    idempotency: Mutex<()>,
    /// Messages an exchange dropped because nothing matched (and no alternate, not mandatory).
    unroutable_dropped: AtomicU64,
    next_consumer: AtomicU64,
    closed: AtomicBool,
}

/// The broker. Cheap to clone; all clones share one broker.
///
/// Must be opened inside a tokio runtime: it runs a background timer task.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Broker {
    /// Opens the broker on `config.data_dir`, recovering topics and subscriptions.
    pub async fn open(config: BrokerConfig) -> Result<Broker> {
        let topics_dir = config.data_dir.join("topics");
        let storage = config.storage.as_ref();
        storage.directory(&topics_dir)?;
        let meta = storage.meta_store(&config.data_dir.join("meta.redb"))?;
        let metrics = Arc::new(BrokerMetrics::default());
        let catalog = Catalog::new(meta);
        let mut topics = HashMap::new();
        for (name, topic_config) in catalog.topics()? {
            let topic = Topic::open(
                storage,
                &topics_dir,
                &name,
                topic_config,
                &config.clock,
                &metrics,
            )?;
            topics.insert(name, Arc::new(topic));
        }
        let mut subscriptions = BTreeMap::new();
        for record in catalog.subscriptions()? {
            let Some(topic) = topics.get(&record.topic) else {
                tracing::warn!(topic = %record.topic, group = %record.group, "subscription of a missing topic ignored");
                continue;
            };
            let key = (record.topic.clone(), record.group.clone());
            let subscription =
                Subscription::open(topic.clone(), record, &catalog, config.clock.clone())?;
            subscriptions.insert(key, Arc::new(subscription));
        }
        tracing::info!(
            data_dir = %config.data_dir.display(),
            topics = topics.len(),
            subscriptions = subscriptions.len(),
            "broker opened"
        );
        let exchanges = catalog
            .exchanges()?
            .into_iter()
            .map(|exchange| (exchange.name.clone(), Arc::new(exchange)))
            .collect();
        let alert_rules = catalog
            .alert_rules()?
            .unwrap_or_else(|| config.alert_rules.clone());
        let schedule = schedule::Scheduler::open(catalog.meta(), &topics)?;
        let config_now_ms = config.clock.now_ms();
        let tick_interval = config.tick_interval;
        let background_timers = config.background_timers;
        let broker = Broker {
            inner: Arc::new(Inner {
                config,
                catalog,
                topics: RwLock::new(topics),
                subscriptions: RwLock::new(subscriptions),
                admin: tokio::sync::Mutex::new(()),
                timers: Mutex::new(Timers::default()),
                exchanges: RwLock::new(exchanges),
                unroutable_dropped: AtomicU64::new(0),
                idempotency: Mutex::new(()),
                schedule,
                // Start above any earlier run's ids (clock ms × 2^20).
                next_id: AtomicU64::new((config_now_ms.max(0) as u64) << 20),
                tasks: Mutex::new(Vec::new()),
                metrics,
                background: Mutex::new(background::Background::default()),
                alert_rules: RwLock::new(alert_rules),
                alert_book: Mutex::new(AlertBook::default()),
                alert_events: tokio::sync::broadcast::channel(256).0,
                transaction_locks: transactions::TransactionLocks::default(),
                position_saves: positions::PositionSaves::default(),
                positions_unsaved: Mutex::new(Vec::new()),
                checkers: Mutex::new(HashMap::new()),
                dead_letter_marks: Default::default(),
                dead_letter_round: tokio::sync::Mutex::new(()),
                next_consumer: AtomicU64::new(1),
                closed: AtomicBool::new(false),
            }),
        };
        broker.settle_dead_letters().await?;
        if !background_timers {
            return Ok(broker);
        }
        let weak = Arc::downgrade(&broker.inner);
        let ticker = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick_interval);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                if inner.closed.load(Ordering::Acquire) {
                    break;
                }
                Broker { inner }.tick().await;
            }
        });
        let scheduler = broker.spawn_scheduler();
        lock(&broker.inner.tasks).extend([ticker, scheduler]);
        Ok(broker)
    }

    /// Runs a task that sleeps until the earliest scheduled message is due and hands it over,
    /// so delays are kept to the millisecond rather than to the tick.
    fn spawn_scheduler(&self) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(&self.inner);
        let changed = self.inner.schedule.changed();
        tokio::spawn(async move {
            loop {
                // Hold the broker only while working, never while waiting: a stopped broker
                // must be able to drop (and release its files) while this task sleeps.
                let wait = {
                    let Some(inner) = weak.upgrade() else { break };
                    if inner.closed.load(Ordering::Acquire) {
                        break;
                    }
                    Broker { inner }.schedule_step().await
                };
                if wait.is_zero() {
                    continue;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = changed.notified() => {}
                }
            }
        })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.inner.config
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }

    fn find_topic(&self, name: &str) -> Result<Arc<Topic>> {
        read(&self.inner.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))
    }

    /// The topic, created with the default config if allowed.
    async fn topic_or_create(&self, name: &str) -> Result<Arc<Topic>> {
        match self.find_topic(name) {
            Err(Error::UnknownTopic(_)) if self.inner.config.auto_create_topics => {
                match self
                    .create_topic(name, self.inner.config.default_topic.clone())
                    .await
                {
                    Ok(_) | Err(Error::TopicExists(_)) => self.find_topic(name),
                    Err(error) => Err(error),
                }
            }
            other => other,
        }
    }

    /// Creates a topic. Fails with `TopicExists` if there is one by that name.
    pub async fn create_topic(&self, name: &str, config: TopicConfig) -> Result<TopicInfo> {
        self.check_open()?;
        valid_name("topic", name)?;
        config.validate()?;
        let _admin = self.inner.admin.lock().await;
        if self.find_topic(name).is_ok() {
            return Err(Error::TopicExists(name.to_owned()));
        }
        let topics_dir = self.inner.config.data_dir.join("topics");
        // The catalog is the list of topics: a directory of a topic it does not name is left
        // over (a failed create or delete) and must not come back as the new topic's data.
        self.remove_topic_dir(&topics_dir.join(name), name)?;
        let topic = match Topic::open(
            self.inner.config.storage.as_ref(),
            &topics_dir,
            name,
            config,
            &self.inner.config.clock,
            &self.inner.metrics,
        ) {
            Ok(topic) => topic,
            Err(error) => {
                tracing::warn!(topic = name, %error, "creating the topic failed; removing what it created");
                // Partitions opened so far stopped when `Topic::open` dropped them.
                let _ = self.remove_topic_dir(&topics_dir.join(name), name);
                return Err(error);
            }
        };
        if let Err(error) = self.inner.catalog.save_topic(name, &topic.config) {
            topic.close().await;
            let _ = self.remove_topic_dir(&topic.dir, name);
            return Err(error);
        }
        let topic = Arc::new(topic);
        write(&self.inner.topics).insert(name.to_owned(), topic.clone());
        tracing::info!(
            topic = name,
            partitions = topic.partitions.len(),
            "topic created"
        );
        Ok(describe(&topic))
    }

    /// Deletes a topic, its data and its subscriptions. Their consumers get an error.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.check_open()?;
        let _admin = self.inner.admin.lock().await;
        let topic = write(&self.inner.topics)
            .remove(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_owned()))?;
        let removed: Vec<Arc<Subscription>> = {
            let mut subscriptions = write(&self.inner.subscriptions);
            let keys: Vec<_> = subscriptions
                .keys()
                .filter(|(topic_name, _)| topic_name == name)
                .cloned()
                .collect();
            keys.iter()
                .filter_map(|key| subscriptions.remove(key))
                .collect()
        };
        for subscription in removed {
            subscription.close();
        }
        self.inner
            .dead_letter_marks
            .lock()
            .await
            .retain(|(topic_name, _), _| topic_name != name);
        topic.close().await;
        self.inner.catalog.delete_topic(name)?;
        if let Err(error) = self.inner.config.storage.remove_directory(&topic.dir) {
            tracing::warn!(topic = name, %error, "could not remove the topic's directory");
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    pub fn topics(&self) -> Vec<TopicInfo> {
        let mut topics: Vec<TopicInfo> = read(&self.inner.topics)
            .values()
            .map(|topic| describe(topic))
            .collect();
        topics.sort_by(|left, right| left.name.cmp(&right.name));
        topics
    }

    pub fn topic(&self, name: &str) -> Result<TopicInfo> {
        Ok(describe(&*self.find_topic(name)?))
    }

    /// Publishes one encoded batch (see `weir-batch`) to `partition`, or routed by key.
    /// Resolves once every part is durable under the topic's fsync policy.
    pub async fn publish(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
    ) -> Result<Confirm> {
        self.check_open()?;
        let batch = self.parse_published(batch)?;
        let topic = self.topic_or_create(topic).await?;
        self.check_backlog(&topic.name, u64::from(batch.record_count()))?;
        let pending = topic.submit(partition, batch).await?;
        Ok(wait_all(pending).await?.into())
    }

    /// Checks a batch a client publishes (directly, through an exchange, delayed or in a
    /// transaction): its size, CRC and records, and the per-record limits.
    pub(super) fn parse_published(&self, bytes: Bytes) -> Result<Batch> {
        let batch = parse_client_batch(bytes, self.inner.config.max_batch_bytes)?;
        if batch.max_record_headers() > MAX_RECORD_HEADERS {
            return Err(Error::InvalidArgument(format!(
                "a message has {} headers; at most {MAX_RECORD_HEADERS} are allowed",
                batch.max_record_headers()
            )));
        }
        Ok(batch)
    }

    /// Publishes messages as one batch.
    pub async fn publish_messages(
        &self,
        topic: &str,
        partition: Option<u32>,
        messages: &[Message],
    ) -> Result<Confirm> {
        if messages.is_empty() {
            return Err(Error::InvalidArgument("nothing to publish".into()));
        }
        let now_ms = self.inner.config.clock.now_ms();
        let mut builder = BatchBuilder::new();
        for message in messages {
            let headers: Vec<(&str, &[u8])> = message
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), &value[..]))
                .collect();
            builder.push(
                message.timestamp_ms.unwrap_or(now_ms),
                message.key.as_deref(),
                &headers,
                &message.value,
            );
        }
        self.publish(topic, partition, builder.finish()).await
    }

    /// Attaches a consumer to the subscription `group` on `topic`, creating it (with
    /// `options.kind`, `start` and `ack_timeout`) if it does not exist.
    pub async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Consumer> {
        self.check_open()?;
        valid_name("subscription", group)?;
        // Before the topic is auto-created: a refused subscribe leaves nothing behind.
        options.validate()?;
        options.queue.validate(topic)?;
        let topic = self.topic_or_create(topic).await?;
        let key = (topic.name.clone(), group.to_owned());
        let existing = read(&self.inner.subscriptions).get(&key).cloned();
        let subscription = match existing {
            Some(subscription) => subscription,
            None => {
                let _admin = self.inner.admin.lock().await;
                let again = read(&self.inner.subscriptions).get(&key).cloned();
                match again {
                    Some(subscription) => subscription,
                    None => self.create_subscription(topic, group, &options)?,
                }
            }
        };
        if subscription.kind() != options.kind {
            return Err(Error::InvalidArgument(format!(
                "subscription '{group}' on '{}' is a {:?} subscription, not {:?}",
                subscription.record.topic,
                subscription.kind(),
                options.kind
            )));
        }
        let id = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        Ok(Consumer::attach(
            subscription,
            id,
            options.prefetch,
            self.inner.config.clock.clone(),
            PositionSync::of(self),
        ))
    }

    /// Called with the admin lock held.
    fn create_subscription(
        &self,
        topic: Arc<Topic>,
        group: &str,
        options: &SubscribeOptions,
    ) -> Result<Arc<Subscription>> {
        let ack_timeout = options
            .ack_timeout
            .unwrap_or(self.inner.config.default_ack_timeout);
        let record = SubscriptionRecord {
            topic: topic.name.clone(),
            group: group.to_owned(),
            kind: options.kind,
            start: options.start,
            ack_timeout_ms: ack_timeout.as_millis().max(1) as u64,
            queue: options.queue.clone(),
        };
        let subscription = Subscription::open(
            topic,
            record.clone(),
            &self.inner.catalog,
            self.inner.config.clock.clone(),
        )?;
        self.inner.catalog.save_subscription(&record)?;
        // Pin the resolved start (e.g. "latest") now, so a restart does not move it.
        self.inner
            .catalog
            .save_positions(&subscription.take_dirty_positions())?;
        let subscription = Arc::new(subscription);
        write(&self.inner.subscriptions).insert(
            (record.topic.clone(), record.group.clone()),
            subscription.clone(),
        );
        tracing::info!(topic = %record.topic, group, kind = ?record.kind, "subscription created");
        Ok(subscription)
    }

    fn find_subscription(&self, topic: &str, group: &str) -> Result<Arc<Subscription>> {
        read(&self.inner.subscriptions)
            .get(&(topic.to_owned(), group.to_owned()))
            .cloned()
            .ok_or_else(|| Error::NoSuchSubscription {
                topic: topic.to_owned(),
                group: group.to_owned(),
            })
    }

    /// Subscriptions, of one topic or all.
    pub fn groups(&self, topic: Option<&str>) -> Vec<GroupInfo> {
        read(&self.inner.subscriptions)
            .iter()
            .filter(|((topic_name, _), _)| topic.is_none_or(|wanted| wanted == topic_name))
            .map(|(_, subscription)| subscription.info())
            .collect()
    }

    pub fn group(&self, topic: &str, group: &str) -> Result<GroupInfo> {
        Ok(self.find_subscription(topic, group)?.info())
    }

    /// Moves a subscription to `to` while it runs (replay, or skip ahead). Returns once the
    /// new position is durable.
    pub async fn reset_group(&self, topic: &str, group: &str, to: StartPosition) -> Result<()> {
        let subscription = self.find_subscription(topic, group)?;
        subscription.reset(to)?;
        self.sync_positions().await
    }

    /// Deletes a subscription; its consumers get an error.
    pub async fn delete_group(&self, topic: &str, group: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        let subscription = write(&self.inner.subscriptions)
            .remove(&(topic.to_owned(), group.to_owned()))
            .ok_or_else(|| Error::NoSuchSubscription {
                topic: topic.to_owned(),
                group: group.to_owned(),
            })?;
        subscription.close();
        self.inner
            .dead_letter_marks
            .lock()
            .await
            .remove(&(topic.to_owned(), group.to_owned()));
        self.inner.catalog.delete_subscription(topic, group)
    }

    /// Reads up to `max` messages of one partition from `offset` (browsing; no delivery state).
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max: usize,
    ) -> Result<Vec<Record>> {
        let topic = self.find_topic(topic)?;
        read_records(&topic.partition(partition)?.reader, offset, max)
    }

    /// Reads up to `max` messages of one partition from `from`, clamped to what the partition
    /// retains, with no delivery state (a reader outside any group). Returns them and the
    /// offset where the next read continues: one past the last, or the resolved start.
    pub fn read_from(
        &self,
        topic: &str,
        partition: u32,
        from: StartPosition,
        max: usize,
    ) -> Result<(Vec<Record>, u64)> {
        let topic = self.find_topic(topic)?;
        let reader = &topic.partition(partition)?.reader;
        let start = crate::subscription::resolve_start(reader, from)?;
        let records = read_records(reader, start, max)?;
        let next_offset = records.last().map_or(start, |record| record.offset + 1);
        Ok((records, next_offset))
    }

    /// The first offset of each partition at or after `timestamp_ms` (end offset if none).
    pub fn offsets_for_time(&self, topic: &str, timestamp_ms: i64) -> Result<Vec<u64>> {
        let topic = self.find_topic(topic)?;
        topic
            .partitions
            .iter()
            .map(|partition| {
                crate::subscription::resolve_start(
                    &partition.reader,
                    StartPosition::Timestamp(timestamp_ms),
                )
            })
            .collect()
    }

    /// A snapshot of everything the core measures.
    pub fn stats(&self) -> BrokerStats {
        let now_ms = self.inner.config.clock.now_ms();
        let mut topics: Vec<TopicStats> = read(&self.inner.topics)
            .values()
            .map(|topic| TopicStats {
                name: topic.name.clone(),
                partitions: topic
                    .partitions
                    .iter()
                    .map(|partition| PartitionStats {
                        partition: partition.id,
                        start_offset: partition.reader.start_offset(),
                        end_offset: partition.reader.end_offset(),
                        size_bytes: partition.counters.size_bytes.load(Ordering::Relaxed),
                        published_messages: partition
                            .counters
                            .published_messages
                            .load(Ordering::Relaxed),
                        published_bytes: partition.counters.published_bytes.load(Ordering::Relaxed),
                        poisoned: partition.health.is_poisoned(),
                    })
                    .collect(),
            })
            .collect();
        topics.sort_by(|left, right| left.name.cmp(&right.name));
        let subscriptions: Vec<Arc<Subscription>> =
            read(&self.inner.subscriptions).values().cloned().collect();
        let fsync = self
            .inner
            .metrics
            .fsync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .summary();
        BrokerStats {
            now_ms,
            disk_bytes: topics
                .iter()
                .flat_map(|topic| &topic.partitions)
                .map(|partition| partition.size_bytes)
                .sum(),
            topics,
            subscriptions: subscriptions
                .iter()
                .map(|subscription| subscription.stats(now_ms))
                .collect(),
            fsync,
            scheduled: self.scheduled_count().unwrap_or(0),
            scheduled_quarantined: self.scheduled_quarantined().unwrap_or(0),
            transactions: self
                .transactions()
                .map_or(0, |transactions| transactions.len() as u64),
            unroutable_dropped: self.unroutable_dropped(),
            background_failures: self.background_failures(),
        }
    }

    /// Runs the timers once: ack timeouts and redeliveries, interval syncs, saving consumer
    /// progress, retention. The background task calls this every `tick_interval`; tests with a
    /// manual clock call it after moving the clock.
    pub async fn tick(&self) {
        let now_ms = self.inner.config.clock.now_ms();
        let subscriptions: Vec<Arc<Subscription>> =
            read(&self.inner.subscriptions).values().cloned().collect();
        for subscription in &subscriptions {
            subscription.tick(now_ms);
            self.store_dead_letters(subscription).await;
        }
        if self.inner.schedule.has_work(now_ms)
            && self.background_due("schedule", String::new, now_ms)
        {
            let result = self.deliver_due().await;
            self.background_done(
                "schedule",
                String::new,
                "delivering scheduled messages",
                &result,
                now_ms,
            );
        }
        let topics: Vec<Arc<Topic>> = read(&self.inner.topics).values().cloned().collect();
        let (save_positions, run_retention, expire_keys, evaluate_alerts) = {
            let mut timers = lock(&self.inner.timers);
            for topic in &topics {
                if let FsyncPolicy::IntervalMs(interval_ms) = topic.config.fsync {
                    let last = timers
                        .interval_synced_ms
                        .entry(topic.name.clone())
                        .or_insert(0);
                    if now_ms - *last >= i64::from(interval_ms) {
                        *last = now_ms;
                        for partition in &topic.partitions {
                            partition.sync_if_needed();
                        }
                    }
                }
            }
            let save = now_ms - timers.positions_saved_ms >= SAVE_POSITIONS_MS;
            if save {
                timers.positions_saved_ms = now_ms;
            }
            let retention = now_ms - timers.retention_ms >= RETENTION_MS;
            if retention {
                timers.retention_ms = now_ms;
            }
            let expire_keys = now_ms - timers.keys_expired_ms >= EXPIRE_KEYS_MS;
            if expire_keys {
                timers.keys_expired_ms = now_ms;
            }
            let evaluate_alerts = now_ms - timers.alerts_evaluated_ms >= EVALUATE_ALERTS_MS;
            if evaluate_alerts {
                timers.alerts_evaluated_ms = now_ms;
            }
            (save, retention, expire_keys, evaluate_alerts)
        };
        if evaluate_alerts {
            self.evaluate_alerts();
        }
        if save_positions {
            // Settlements save their own changes before they are answered; this saves what
            // changes unasked: delivery counts taken at hand-out, ack timeouts, dead letters
            // due, floors raised by retention. A failure is logged by the save and retried.
            let _ = self.sync_positions().await;
        }
        if self.background_due("transactions", String::new, now_ms) {
            let result = self.check_transactions(now_ms).await;
            self.background_done(
                "transactions",
                String::new,
                "checking transactions",
                &result,
                now_ms,
            );
        }
        if expire_keys && self.background_due("idempotency_keys", String::new, now_ms) {
            let result = self.expire_keys(now_ms);
            self.background_done(
                "idempotency_keys",
                String::new,
                "expiring idempotency keys",
                &result,
                now_ms,
            );
        }
        if run_retention {
            for topic in &topics {
                if topic.config.retention_ms.is_none() && topic.config.retention_bytes.is_none() {
                    continue;
                }
                for partition in &topic.partitions {
                    let scope = || format!("{}/{}", topic.name, partition.id);
                    if !self.background_due("retention", scope, now_ms) {
                        continue;
                    }
                    let result = partition.enforce_retention(now_ms).await;
                    if let Ok(report) = &result
                        && report.segments_deleted > 0
                    {
                        tracing::info!(
                            topic = %topic.name,
                            partition = partition.id,
                            segments = report.segments_deleted,
                            bytes = report.bytes_deleted,
                            start_offset = report.new_start_offset,
                            "retention deleted segments"
                        );
                    }
                    self.background_done("retention", scope, "retention", &result, now_ms);
                }
            }
        }
    }

    async fn store_all_dead_letters(&self) {
        let subscriptions: Vec<Arc<Subscription>> =
            read(&self.inner.subscriptions).values().cloned().collect();
        for subscription in &subscriptions {
            self.store_dead_letters(subscription).await;
        }
    }

    /// Removes a topic's directory if it exists.
    fn remove_topic_dir(&self, dir: &std::path::Path, topic: &str) -> Result<()> {
        self.inner
            .config
            .storage
            .remove_directory(dir)
            .map_err(|error| {
                tracing::warn!(topic, dir = %dir.display(), %error, "cannot remove a topic directory");
                Error::Storage(format!(
                    "cannot remove the leftover directory {}: {error}",
                    dir.display()
                ))
            })
    }

    /// Runs blocking work (a durable metadata write: an fsync) off the async workers.
    pub(crate) async fn run_blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Broker) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let broker = self.clone();
        tokio::task::spawn_blocking(move || work(&broker))
            .await
            .map_err(|error| Error::Storage(format!("a blocking task failed: {error}")))?
    }

    /// Stops accepting work, ends consumers' waits, saves their progress, and commits every
    /// queued publish before returning.
    pub async fn shutdown(&self) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        // Rejected and exhausted messages wait in memory for the timer: store them now, or a
        // settled message would come back after the restart. First while the broker is open,
        // since a first dead letter creates its topic; again below for any settled meanwhile.
        self.store_all_dead_letters().await;
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        // Stop the background tasks first, so none holds the broker once this returns.
        let tasks: Vec<_> = lock(&self.inner.tasks).drain(..).collect();
        for task in tasks {
            task.abort();
            let _ = task.await;
        }
        let subscriptions: Vec<Arc<Subscription>> =
            read(&self.inner.subscriptions).values().cloned().collect();
        for subscription in &subscriptions {
            subscription.close();
        }
        self.store_all_dead_letters().await;
        // Logged by the save if it fails: the settlements it covers are answered with its
        // error, and nothing else is lost that a crash would not lose.
        let _ = self.save_positions_at_shutdown().await;
        self.finish_schedule().await;
        let topics: Vec<Arc<Topic>> = read(&self.inner.topics).values().cloned().collect();
        for topic in topics {
            topic.close().await;
        }
        tracing::info!("broker stopped");
    }
}

/// Parses a batch from a client. Its base offset is the client's to set (the broker rewrites
/// it), but record offsets are computed from it, so it must leave room for every record.
pub(crate) fn parse_client_batch(bytes: Bytes, max_batch_bytes: usize) -> Result<Batch> {
    let batch = Batch::parse(bytes, max_batch_bytes)?;
    if batch
        .base_offset()
        .checked_add(u64::from(batch.record_count()))
        .is_none()
    {
        return Err(Error::InvalidArgument(format!(
            "a batch's base offset {} leaves no room for its {} records (clients send 0)",
            batch.base_offset(),
            batch.record_count()
        )));
    }
    Ok(batch)
}

fn describe(topic: &Topic) -> TopicInfo {
    TopicInfo {
        name: topic.name.clone(),
        config: topic.config.clone(),
        partitions: topic
            .partitions
            .iter()
            .map(|partition| PartitionInfo {
                partition: partition.id,
                start_offset: partition.reader.start_offset(),
                end_offset: partition.reader.end_offset(),
                size_bytes: partition.counters.size_bytes.load(Ordering::Relaxed),
            })
            .collect(),
    }
}
