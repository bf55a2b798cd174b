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
//!   [`Confirm`] names its partition, offset and [`Durability`]. Retries after connection loss
//!   (at least once: duplicates are possible). Keyed messages are routed here with the
//!   broker's own hash ([`partition_for_key`]).
//! - [`Consumer`] (`consumer.rs`): [`Consumer::next`] yields a [`Delivery`]; [`Consumer::ack`]
//!   and [`Consumer::nack`] are coalesced and pipelined, their errors reported on the next
//!   call. Queue or stream mode ([`SubscribeOptions`]). Reconnects and rejoins its group by
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
mod error;
mod message;
mod partitioner;
mod producer;
#[cfg(test)]
mod scripted_server;

pub use client::{Client, ClientOptions, TopicOptions};
pub use confirm::ConfirmFuture;
pub use consumer::{Consumer, SubscribeOptions};
pub use error::{Error, Result};
pub use message::{Confirm, Message, Published};
pub use partitioner::partition_for_key;
pub use producer::{Producer, ProducerOptions};

pub use weir_batch::BatchBuilder;
pub use weir_proto::{
    Delivery, Durability, ErrorCode, Fsync, GroupInfo, GroupPartition, MessageId, PartitionInfo,
    PublishedRange, Start, SubscriptionMode, TopicInfo,
};

/// The broker address examples and tools use by default: `WEIR_SERVER` if set, else the
/// native listener's default, `127.0.0.1:5680`.
pub fn default_server_address() -> String {
    std::env::var("WEIR_SERVER").unwrap_or_else(|_| "127.0.0.1:5680".to_owned())
}
