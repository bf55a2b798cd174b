//! The async Rust client for Weir: publish with confirms, consume with ack and nack, and
//! administer topics and subscriptions over the native protocol.
//!
//! # Map
//!
//! - [`Client`] (`client.rs`): a cheap, cloneable handle on one shared connection. Admin calls
//!   ([`Client::create_topic`], [`Client::topics`], [`Client::groups`],
//!   [`Client::reset_group`], …), the raw [`Client::publish`] of an encoded batch, and the
//!   factory for the two below. Reconnects on demand, with backoff.
//! - [`Producer`] (`producer.rs`, batching rules in `accumulator.rs`): [`Producer::send`]
//!   buffers a message into its topic and partition's batch and returns a [`ConfirmFuture`];
//!   batches go out when full or after `linger`, many in flight at once, and every message's
//!   [`Confirm`] names its partition, offset and [`Durability`]. Idempotent by default: a
//!   producer id and per-partition sequence numbers make a batch retried after a lost confirm
//!   be stored once and keep each partition in send order; messages the broker already held
//!   are confirmed at the stored copy. Keyed messages are routed here with the broker's own
//!   hash ([`partition_for_key`]).
//! - [`Consumer`] (`consumer.rs`): [`Consumer::next`] yields a [`Delivery`]; [`Consumer::ack`]
//!   and [`Consumer::nack`] are coalesced and pipelined, their errors reported on the next
//!   call; [`Consumer::release`] gives messages back without counting a failure. Queue or
//!   stream mode, and a queue's dead-lettering, per-key order, backlog limit and retry backoff
//!   ([`SubscribeOptions`]). Reconnects and rejoins its group by
//!   itself; unacked messages are delivered again.
//! - [`Error`] (`error.rs`): the broker's [`ErrorCode`] and message for server errors, plus
//!   I/O, closed, protocol and timeout.
//! - `connection.rs`: one TCP connection — the handshake, a writer task that flushes once per
//!   burst, a reader task that matches answers to requests by correlation id and routes
//!   pushed deliveries to their consumer.
//!
//! Everything on the wire comes from `weir-proto`; this crate adds no wire format of its own.
//!
//! # Example
//!
//! ```no_run
//! use weir_client::{Client, Message, ProducerOptions, SubscribeOptions, TopicOptions};
//!
//! # async fn run() -> weir_client::Result<()> {
//! let client = Client::connect("127.0.0.1:5680").await?;
//! client.create_topic("orders", TopicOptions { partitions: 4, ..TopicOptions::default() }).await?;
//!
//! // Publish: `send` returns once buffered; its future resolves when the batch is stored.
//! let producer = client.producer(ProducerOptions::default());
//! let confirm = producer.send("orders", Message::new("order 42 created").with_key("42")).await?;
//! println!("stored at offset {}", confirm.await?.offset);
//!
//! // Consume as a work queue: each message to one consumer of the group "billing".
//! let mut consumer = client.subscribe("orders", "billing", SubscribeOptions::queue()).await?;
//! let delivery = consumer.next().await?;
//! println!("got {:?}", delivery.value);
//! consumer.ack_one(&delivery).await?;
//! consumer.close().await?;
//! # Ok(()) }
//! ```
//!
//! Runnable versions live in `examples/`: `user_registration`, `order_notification` and
//! `fanout`.

#![warn(missing_docs)]

mod accumulator;
mod client;
mod confirm;
mod connection;
mod consumer;
mod dead_letter;
mod error;
mod exchange;
mod idempotency;
mod message;
mod partitioner;
mod producer;
mod schedule;
#[cfg(test)]
mod scripted_server;
mod transaction;

pub use client::{Client, ClientOptions, TopicOptions};
pub use confirm::ConfirmFuture;
pub use consumer::{Consumer, Settlements, SubscribeOptions};
pub use dead_letter::{
    DEAD_LETTER_DELIVERY_COUNT_HEADER, DEAD_LETTER_ERROR_HEADER, DEAD_LETTER_FIRST_DELIVERY_HEADER,
    DEAD_LETTER_LAST_DELIVERY_HEADER, DEAD_LETTER_OFFSET_HEADER, DEAD_LETTER_PARTITION_HEADER,
    DEAD_LETTER_REASON_HEADER, DEAD_LETTER_SUBSCRIPTION_HEADER, DEAD_LETTER_TOPIC_HEADER,
    DEAD_LETTERS_PER_REQUEST, delivery_header,
};
pub use error::{Error, Result};
pub use exchange::{Routed, headers_binding, key_binding};
pub use message::{Confirm, Message, Published};
pub use partitioner::partition_for_key;
pub use producer::{LANE_IN_FLIGHT, Producer, ProducerOptions};
pub use schedule::{DeliveryTime, Scheduled, ScheduledBatch};
pub use transaction::{Transaction, TransactionCheck, TransactionChecker};

pub use weir_batch::{BatchBuilder, MESSAGE_ID_HEADER};
pub use weir_proto::{
    AlertInfo, AlertMetric, AlertState, Binding, BrokerStats, ClaimOutcome, ConsumerStats,
    DeadLetterQueueInfo, Decision, Delivery, Durability, ErrorCode, ExchangeInfo, ExchangeKind,
    Fsync, GroupInfo, GroupPartition, LatencySummary, MessageId, Overflow, PartitionInfo,
    PartitionStats, PublishedRange, QueueSettings, ScheduleTime, ScheduledInfo, ScheduledSelector,
    Start, SubscriptionCounters, SubscriptionMode, SubscriptionStats, TopicConfirm, TopicInfo,
    TopicStats, TransactionInfo, TransactionState,
};

/// The broker address examples and tools use by default: `WEIR_SERVER` if set, else the
/// native listener's default, `127.0.0.1:5680`.
pub fn default_server_address() -> String {
    std::env::var("WEIR_SERVER").unwrap_or_else(|_| "127.0.0.1:5680".to_owned())
}
