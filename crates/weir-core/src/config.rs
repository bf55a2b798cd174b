//! Configuration of the broker, its topics and subscriptions. Plain data with serde, so the
//! binary can read it from TOML and the catalog can persist it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weir_storage::io::{FsStorage, Storage};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// The longest duration the broker accepts from a client or a config (ack timeout, message
/// TTL, nack delay and retry backoff, idempotency-key TTL, transaction timeout, retention, dedup
/// window): 100 years, past any real use and far below where milliseconds stop fitting the
/// clock's `i64` (a larger value would wrap into a deadline in the past).
pub const MAX_DURATION_MS: u64 = 100 * 366 * 24 * 60 * 60 * 1000;

/// `duration` in milliseconds, refused (naming `what`) past [`MAX_DURATION_MS`]. Every
/// duration from outside passes through here or [`check_duration_ms`] before it meets the
/// clock.
pub fn duration_ms(what: &str, duration: Duration) -> Result<u64> {
    let ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    check_duration_ms(what, ms)
}

/// `ms`, refused (naming `what`) past [`MAX_DURATION_MS`]; see [`duration_ms`].
pub fn check_duration_ms(what: &str, ms: u64) -> Result<u64> {
    if ms > MAX_DURATION_MS {
        return Err(Error::InvalidArgument(format!(
            "{what} of {ms} ms is longer than the maximum of {MAX_DURATION_MS} ms (100 years)"
        )));
    }
    Ok(ms)
}

/// Largest business key a scheduled message may carry: a key names a message, it is not a
/// payload, and the schedule stores it in every index entry.
pub const MAX_BUSINESS_KEY_BYTES: usize = 1024;

/// Smallest `segment_bytes` a topic may have (one page): a segment of a few bytes would hold
/// one record per file. Open files stay bounded whatever the size (closed segments are opened
/// on demand), so this only refuses the absurd.
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// When a publish is confirmed, and what survives what.
///
/// - `Always`: confirm after fdatasync (group commit: one sync serves every batch queued
///   meanwhile). A confirmed message survives a process crash and a power loss.
/// - `IntervalMs(n)`: confirm after the write reaches the OS; fdatasync at most `n` ms later.
///   Survives a process crash; a power loss may lose the last `n` ms of confirms.
/// - `Os`: confirm after the write reaches the OS page cache; never forced. Survives a process
///   crash; a power loss may lose whatever the kernel had not written back yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    #[default]
    Always,
    IntervalMs(u32),
    Os,
}

/// What the confirm of a publish promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// In the OS page cache: survives a process crash.
    Os,
    /// fdatasync'd: survives a power loss.
    Fsynced,
}

/// A topic's layout and retention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicConfig {
    pub partitions: u32,
    pub fsync: FsyncPolicy,
    /// Delete closed segments older than this.
    pub retention_ms: Option<u64>,
    /// Keep each partition under about this many bytes (whole closed segments are deleted).
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    /// A message id (header `weir.id`) seen within this window is not stored again; also how
    /// long an idempotent producer's sequence state is kept.
    pub dedup_window_ms: u64,
}

impl TopicConfig {
    /// Refuses settings the broker cannot honour, with a message naming the setting.
    pub fn validate(&self) -> Result<()> {
        if self.partitions == 0 || self.partitions > 4096 {
            return Err(Error::InvalidArgument(format!(
                "a topic has 1 to 4096 partitions, not {}",
                self.partitions
            )));
        }
        if let FsyncPolicy::IntervalMs(0) = self.fsync {
            return Err(Error::InvalidArgument(
                "an fsync interval must be at least 1 ms".into(),
            ));
        }
        if self.segment_bytes < MIN_SEGMENT_BYTES {
            return Err(Error::InvalidArgument(format!(
                "segment_bytes must be at least {MIN_SEGMENT_BYTES} (one page), not {}",
                self.segment_bytes
            )));
        }
        if let Some(retention_ms) = self.retention_ms {
            check_duration_ms("retention_ms", retention_ms)?;
        }
        check_duration_ms("dedup_window_ms", self.dedup_window_ms)?;
        Ok(())
    }
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 1,
            fsync: FsyncPolicy::Always,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: 256 << 20,
            dedup_window_ms: 120_000,
        }
    }
}

/// The two kinds of subscription (consumer group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionKind {
    /// Kafka semantics: a committed offset per partition, partitions shared among consumers.
    Stream,
    /// RabbitMQ semantics: per-message ack, competing consumers, redelivery.
    Queue,
}

/// Where a new subscription starts, or where a reset moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartPosition {
    Earliest,
    Latest,
    Offset(u64),
    /// The first message at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// What a queue subscription does when its backlog reaches `max_backlog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Publishes to the topic fail with `BacklogFull` until consumers catch up.
    #[default]
    RejectPublish,
    /// The oldest waiting messages are moved to the dead-letter topic.
    DeadLetterOldest,
}

/// Delivery guarantees of a queue subscription, set when it is created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct QueueSettings {
    /// After this many deliveries without an ack, a message is dead-lettered.
    pub max_deliveries: Option<u32>,
    /// Where dead letters go; default `<topic>.<subscription>.dlq`.
    pub dead_letter_topic: Option<String>,
    /// Messages older than this (by publish time) are dead-lettered instead of delivered.
    pub message_ttl_ms: Option<u64>,
    /// Never two messages with the same key in flight: per-key order with many consumers.
    pub ordered_by_key: bool,
    /// Delays before redelivering a message nacked with requeue and no delay of its own:
    /// the n-th failure waits the n-th entry (the last one repeats), e.g. `[1000, 5000, 30000]`.
    pub retry_backoff_ms: Vec<u64>,
    /// Most messages waiting (not yet acked) before `overflow` applies.
    pub max_backlog: Option<u64>,
    pub overflow: Overflow,
}

impl QueueSettings {
    /// Refuses settings a queue on `topic` could not keep, before anything is stored: a
    /// dead-letter topic that is no valid topic name would fail every dead letter, one that is
    /// the topic itself would deliver its dead letters again, and `max_deliveries: 0` would
    /// dead-letter every message unread. Every front end creates subscriptions through here.
    pub fn validate(&self, topic: &str) -> crate::error::Result<()> {
        if self.max_deliveries == Some(0) {
            return Err(crate::error::Error::InvalidArgument(
                "max_deliveries must be at least 1 (leave it out for no limit)".into(),
            ));
        }
        if let Some(dead_letter_topic) = &self.dead_letter_topic {
            crate::catalog::valid_name("dead-letter topic", dead_letter_topic)?;
            if dead_letter_topic == topic {
                return Err(crate::error::Error::InvalidArgument(format!(
                    "the dead-letter topic cannot be '{topic}' itself: its dead letters would be delivered again"
                )));
            }
        }
        Ok(())
    }
}

/// Options of one `subscribe` call. `kind`, `start` and `ack_timeout` apply when the call
/// creates the subscription; joining an existing one keeps its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    pub kind: SubscriptionKind,
    pub start: StartPosition,
    /// Most unacked deliveries this consumer holds at once (queue subscriptions).
    pub prefetch: u32,
    /// Unacked deliveries are redelivered after this long (queue subscriptions).
    pub ack_timeout: Option<Duration>,
    /// Queue subscriptions only.
    pub queue: QueueSettings,
}

impl SubscribeOptions {
    /// Refuses options the broker cannot honour, with a message naming the option.
    pub fn validate(&self) -> Result<()> {
        if self.prefetch == 0 {
            return Err(Error::InvalidArgument(
                "prefetch must be at least 1: a consumer with prefetch 0 could never receive"
                    .into(),
            ));
        }
        if let Some(ack_timeout) = self.ack_timeout {
            duration_ms("ack_timeout", ack_timeout)?;
        }
        if let Some(ttl_ms) = self.queue.message_ttl_ms {
            check_duration_ms("message_ttl_ms", ttl_ms)?;
        }
        for &backoff_ms in &self.queue.retry_backoff_ms {
            check_duration_ms("retry_backoff_ms", backoff_ms)?;
        }
        Ok(())
    }
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            kind: SubscriptionKind::Queue,
            start: StartPosition::Earliest,
            prefetch: 1000,
            ack_timeout: None,
            queue: QueueSettings::default(),
        }
    }
}

/// How a transaction nobody decides is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UnresolvedOutcome {
    #[default]
    Rollback,
    Commit,
}

/// Transactional messages: when and how often the broker checks back with producers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransactionSettings {
    /// A transaction undecided this long is checked with a producer of its group.
    pub timeout_ms: u64,
    /// Time between two checks of one transaction.
    pub check_interval_ms: u64,
    /// After this many checks without an answer, `unresolved` decides.
    pub max_checks: u32,
    pub unresolved: UnresolvedOutcome,
}

impl Default for TransactionSettings {
    fn default() -> Self {
        TransactionSettings {
            timeout_ms: 6_000,
            check_interval_ms: 6_000,
            max_checks: 15,
            unresolved: UnresolvedOutcome::Rollback,
        }
    }
}

/// The whole broker's settings.
#[derive(Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    /// Create a topic with `default_topic` on the first publish or subscribe that names it.
    pub auto_create_topics: bool,
    pub default_topic: TopicConfig,
    /// Used when a queue subscription is created without its own.
    pub default_ack_timeout: Duration,
    /// Largest batch a publish may carry.
    pub max_batch_bytes: usize,
    pub transactions: TransactionSettings,
    /// Alert rules until an edit through the API replaces them (persisted).
    pub alert_rules: Vec<crate::alerts::AlertRule>,
    /// How often timers run (ack timeouts, delayed requeue, retention, ack-state flush).
    pub tick_interval: Duration,
    pub clock: Arc<dyn Clock>,
    /// Where files live: the real file system, or a simulated one for tests
    /// (`weir_storage::io::sim::SimStorage`), so faults reach the whole broker.
    pub storage: Arc<dyn Storage>,
    /// Run [`Broker::tick`](crate::Broker::tick) and the scheduler in background tasks. A test
    /// that drives time itself (a manual clock and `tick()`) turns this off, so that every step
    /// happens when the test says and a run replays exactly.
    pub background_timers: bool,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.into(),
            auto_create_topics: true,
            default_topic: TopicConfig::default(),
            default_ack_timeout: Duration::from_secs(30),
            max_batch_bytes: 8 << 20,
            transactions: TransactionSettings::default(),
            alert_rules: crate::alerts::AlertRule::defaults(),
            tick_interval: Duration::from_millis(10),
            clock: Arc::new(SystemClock),
            storage: Arc::new(FsStorage),
            background_timers: true,
        }
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BrokerConfig")
            .field("data_dir", &self.data_dir)
            .field("auto_create_topics", &self.auto_create_topics)
            .field("default_topic", &self.default_topic)
            .field("default_ack_timeout", &self.default_ack_timeout)
            .field("max_batch_bytes", &self.max_batch_bytes)
            .field("tick_interval", &self.tick_interval)
            .field("storage", &self.storage)
            .field("background_timers", &self.background_timers)
            .finish_non_exhaustive()
    }
}
