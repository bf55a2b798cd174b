//! Weir's core: the [`Broker`]. It knows no socket; every front end (the native protocol and
//! HTTP today; RESP is planned) is a thin adapter over this one API, and a Rust program can embed it directly on a
//! data directory, like SQLite for queues.
//!
//! - [`Broker`] owns topics and subscriptions. `publish` routes a batch to partitions and
//!   resolves with a [`Confirm`] once it is durable under the topic's [`FsyncPolicy`].
//! - Each partition has one writer thread doing group commit over `weir-storage`'s log.
//! - `subscribe` returns a [`Consumer`] of a `stream` or `queue` subscription; deliveries come
//!   from `Consumer::next`, and go back through `ack` / `nack`.
//! - Time comes from a [`Clock`]; [`Broker::tick`] runs the timers.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use weir_core::{Broker, BrokerConfig, Message, SubscribeOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let broker = Broker::open(BrokerConfig::new(dir.path())).await.unwrap();
//! let confirm = broker.publish_messages("orders", None, &[Message::new("order 1 created")]).await.unwrap();
//! assert_eq!(confirm.ranges[0].base_offset, 0);
//! let consumer = broker.subscribe("orders", "notifier", SubscribeOptions::default()).await.unwrap();
//! let deliveries = consumer.next(10).await.unwrap();
//! assert_eq!(&deliveries[0].record.value[..], b"order 1 created");
//! consumer.ack(&[deliveries[0].id()]).await.unwrap();
//! broker.shutdown().await;
//! # });
//! ```

pub mod alerts;
mod broker;
mod catalog;
pub mod clock;
pub mod config;
mod dedup;
pub mod error;
pub mod exchange;
pub mod metrics;
mod partition;
mod retry;
mod schedule;
mod subscription;
mod topic;

pub use alerts::{Alert, AlertMetric, AlertRule, AlertState, Comparison};
pub use broker::{
    Broker, Claim, Confirm, DLQ_GROUP, DLQ_HEADER_PREFIX, DeadLetterQueueInfo, Decision, Duplicate,
    MAX_DELAY, MAX_RECORD_HEADERS, Message, PartitionInfo, PublishedRange, RoutedConfirm,
    ScheduleRequest, ScheduledMessage, TopicInfo, TransactionChecker, TransactionInfo,
    TransactionState,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    BrokerConfig, Durability, FsyncPolicy, MAX_BUSINESS_KEY_BYTES, MAX_DURATION_MS,
    MIN_SEGMENT_BYTES, Overflow, QueueSettings, StartPosition, SubscribeOptions, SubscriptionKind,
    TopicConfig, TransactionSettings, UnresolvedOutcome,
};
pub use error::{Error, Result};
pub use exchange::{Binding, Exchange, ExchangeKind};
pub use metrics::{
    BrokerStats, ConsumerStats, LatencySummary, PartitionStats, SubscriptionCounters,
    SubscriptionStats, TopicStats,
};
pub use subscription::{
    AckState, Consumer, ConsumerId, DeadLetter, DeadLetterReason, Delivery, GroupInfo,
    GroupPartitionInfo, MessageId, Settlement,
};
pub use topic::partition_for_key;
pub use weir_batch::{Batch, BatchBuilder, Record};
