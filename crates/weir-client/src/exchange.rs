//! Exchanges on [`Client`]: declaring them, binding topics, and publishing through one with a
//! routing key ([`Client::publish_to_exchange`]).
//!
//! An exchange routes each published batch to the topics its bindings match — `direct` (the
//! binding key is the routing key), `topic` (dot-separated words, `*` one word, `#` zero or
//! more), `fanout` (every binding) or `headers` (the message's headers) — and each topic gets
//! its own copy. What the broker does with a message nothing matches is the exchange's
//! alternate topic, else a refusal (`unroutable`) when the publisher asked for `mandatory`,
//! else a drop counted in [`Routed::dropped`].

use bytes::Bytes;
use weir_proto::{Binding, ExchangeInfo, ExchangeKind, Request, Response, TopicConfirm};

use crate::accumulator::encode_messages;
use crate::client::Client;
use crate::connection::unexpected;
use crate::error::{Error, Result};
use crate::message::Message;

/// The confirm of a publish through an exchange, once every copy is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Each topic written (the alternate topic included), with where the messages landed.
    pub targets: Vec<TopicConfirm>,
    /// Messages nothing matched that were dropped (not mandatory, no alternate topic).
    pub dropped: u32,
}

/// A binding of `topic` with a routing key (direct exchanges) or pattern (topic exchanges,
/// e.g. `order.vip.*` or `order.#`).
pub fn key_binding(topic: impl Into<String>, key: impl Into<String>) -> Binding {
    Binding {
        topic: topic.into(),
        key: key.into(),
        headers: Vec::new(),
        match_all: true,
    }
}

/// A binding of `topic` for a headers exchange: a message matches when every pair
/// (`match_all`) or any one of them is among its headers.
pub fn headers_binding(
    topic: impl Into<String>,
    headers: &[(&str, &str)],
    match_all: bool,
) -> Binding {
    Binding {
        topic: topic.into(),
        key: String::new(),
        headers: headers
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect(),
        match_all,
    }
}

impl Client {
    /// Declares an exchange. Declaring one that exists with the same kind and alternate topic
    /// changes nothing; with other settings it is `invalid_argument`.
    pub async fn create_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        alternate_topic: Option<&str>,
    ) -> Result<ExchangeInfo> {
        let request = Request::CreateExchange {
            name: name.to_owned(),
            kind,
            alternate_topic: alternate_topic.map(str::to_owned),
        };
        match self.request(&request).await? {
            Response::Exchange(exchange) => Ok(exchange),
            other => Err(unexpected("Exchange", &other)),
        }
    }

    /// Deletes an exchange and its bindings; the topics stay.
    pub async fn delete_exchange(&self, name: &str) -> Result<()> {
        self.request_ok(&Request::DeleteExchange {
            name: name.to_owned(),
        })
        .await
    }

    /// Every exchange with its bindings.
    pub async fn exchanges(&self) -> Result<Vec<ExchangeInfo>> {
        match self.request(&Request::ListExchanges).await? {
            Response::Exchanges(exchanges) => Ok(exchanges),
            other => Err(unexpected("Exchanges", &other)),
        }
    }

    /// Adds a binding (the same one twice is kept once) and returns the exchange after the
    /// change. See [`key_binding`] and [`headers_binding`].
    pub async fn bind(&self, exchange: &str, binding: Binding) -> Result<ExchangeInfo> {
        let request = Request::Bind {
            exchange: exchange.to_owned(),
            binding,
        };
        match self.request(&request).await? {
            Response::Exchange(exchange) => Ok(exchange),
            other => Err(unexpected("Exchange", &other)),
        }
    }

    /// Removes the exchange's bindings to `topic` (only those with `key`, if given) and
    /// returns the exchange after the change.
    pub async fn unbind(
        &self,
        exchange: &str,
        topic: &str,
        key: Option<&str>,
    ) -> Result<ExchangeInfo> {
        let request = Request::Unbind {
            exchange: exchange.to_owned(),
            topic: topic.to_owned(),
            key: key.map(str::to_owned),
        };
        match self.request(&request).await? {
            Response::Exchange(exchange) => Ok(exchange),
            other => Err(unexpected("Exchange", &other)),
        }
    }

    /// Publishes `messages` as one batch through `exchange` with `routing_key`, and waits
    /// until every routed copy is durable. With `mandatory`, a publish of which some message
    /// matches nothing (and the exchange has no alternate topic) is refused whole with
    /// `unroutable`; without, such messages are dropped and counted.
    ///
    /// ```no_run
    /// # async fn run(client: weir_client::Client) -> weir_client::Result<()> {
    /// use weir_client::{ExchangeKind, Message, key_binding};
    /// client.create_exchange("orders", ExchangeKind::Topic, None).await?;
    /// client.bind("orders", key_binding("vip-orders", "order.vip.*")).await?;
    /// let routed = client
    ///     .publish_to_exchange("orders", "order.vip.created", true, &[Message::new("order 7")])
    ///     .await?;
    /// assert_eq!(routed.targets[0].topic, "vip-orders");
    /// # Ok(()) }
    /// ```
    pub async fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        messages: &[Message],
    ) -> Result<Routed> {
        let batch = encode_messages(messages, crate::producer::now_ms())
            .ok_or_else(|| Error::InvalidArgument("no messages to publish".into()))?;
        self.publish_batch_to_exchange(exchange, routing_key, mandatory, batch)
            .await
    }

    /// [`Client::publish_to_exchange`] of a batch encoded with [`crate::BatchBuilder`].
    pub async fn publish_batch_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        batch: Bytes,
    ) -> Result<Routed> {
        let request = Request::PublishToExchange {
            exchange: exchange.to_owned(),
            routing_key: routing_key.to_owned(),
            mandatory,
            batch,
        };
        match self.request(&request).await? {
            Response::Routed { targets, dropped } => Ok(Routed { targets, dropped }),
            other => Err(unexpected("Routed", &other)),
        }
    }
}
