//! Dead letters on [`Client`]: the dead-letter topics, their pending messages with the
//! `weir.dlq.*` headers that say why and from where, redriving them and purging them.
//!
//! A queue subscription dead-letters a message after `max_deliveries` deliveries without an
//! ack, when a consumer rejects it (nack without requeue), when it outlives the subscription's
//! message TTL, or when the backlog overflows with `dead-letter-oldest`. The dead-letter topic
//! is an ordinary topic (by default `<topic>.<group>.dlq`), so it can also be consumed.

use bytes::Bytes;
use weir_proto::{DeadLetterQueueInfo, Delivery, MessageId, Request, Response};

use crate::client::Client;
use crate::connection::unexpected;
use crate::error::Result;

/// Most dead letters one listing or redrive request handles (the broker's limit).
pub const DEAD_LETTERS_PER_REQUEST: u32 = 1000;

/// Why a message was dead-lettered: `max_deliveries`, `rejected`, `expired` or `overflow`.
pub const DEAD_LETTER_REASON_HEADER: &str = "weir.dlq.reason";
/// The consumer's last error text.
pub const DEAD_LETTER_ERROR_HEADER: &str = "weir.dlq.error";
/// The topic it came from.
pub const DEAD_LETTER_TOPIC_HEADER: &str = "weir.dlq.topic";
/// The subscription that dead-lettered it.
pub const DEAD_LETTER_SUBSCRIPTION_HEADER: &str = "weir.dlq.subscription";
/// Its partition in the original topic.
pub const DEAD_LETTER_PARTITION_HEADER: &str = "weir.dlq.partition";
/// Its offset in the original topic.
pub const DEAD_LETTER_OFFSET_HEADER: &str = "weir.dlq.offset";
/// How many times it was delivered.
pub const DEAD_LETTER_DELIVERY_COUNT_HEADER: &str = "weir.dlq.delivery_count";
/// Its first delivery, in milliseconds since the epoch.
pub const DEAD_LETTER_FIRST_DELIVERY_HEADER: &str = "weir.dlq.first_delivery_ms";
/// Its last delivery, in milliseconds since the epoch.
pub const DEAD_LETTER_LAST_DELIVERY_HEADER: &str = "weir.dlq.last_delivery_ms";

/// The value of a delivery's header `name` (the last one, if repeated).
pub fn delivery_header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a Bytes> {
    delivery
        .headers
        .iter()
        .rev()
        .find(|(header, _)| header == name)
        .map(|(_, value)| value)
}

impl Client {
    /// Every dead-letter topic and how many dead letters it still holds.
    pub async fn dead_letter_queues(&self) -> Result<Vec<DeadLetterQueueInfo>> {
        match self.request(&Request::ListDeadLetterQueues).await? {
            Response::DeadLetterQueues(queues) => Ok(queues),
            other => Err(unexpected("DeadLetterQueues", &other)),
        }
    }

    /// The oldest dead letters still pending in the dead-letter topic `topic`, up to `max`
    /// (1 to 1000; fewer if more would not fit in one frame). Each keeps its payload, key and
    /// headers, plus the `weir.dlq.*` headers (see [`DEAD_LETTER_REASON_HEADER`] and the
    /// others); its partition and offset are its place in the dead-letter topic, the id
    /// [`Client::redrive`] takes.
    pub async fn dead_letters(&self, topic: &str, max: u32) -> Result<Vec<Delivery>> {
        let request = Request::ListDeadLetters {
            topic: topic.to_owned(),
            max,
        };
        match self.request(&request).await? {
            Response::DeadLetters(letters) => Ok(letters),
            other => Err(unexpected("DeadLetters", &other)),
        }
    }

    /// Redrives dead letters and removes them from the dead-letter topic: those in `ids`, or
    /// all, up to `max` (1 to 1000). Without a `target` each goes back to the subscription it
    /// came from, and only there (the original message is delivered again at its partition
    /// and offset, with a fresh delivery count); with one, a copy without the `weir.dlq.*`
    /// headers is published to `target`. Returns how many were redriven.
    pub async fn redrive(
        &self,
        topic: &str,
        target: Option<&str>,
        ids: Option<&[MessageId]>,
        max: u32,
    ) -> Result<u64> {
        let request = Request::Redrive {
            topic: topic.to_owned(),
            target: target.map(str::to_owned),
            ids: ids.map(<[MessageId]>::to_vec),
            max,
        };
        count(self.request(&request).await?)
    }

    /// Redrives every dead letter pending in `topic`, a request of up to 1000 at a time until
    /// none is left. Returns how many were redriven.
    pub async fn redrive_all(&self, topic: &str, target: Option<&str>) -> Result<u64> {
        let mut total = 0;
        loop {
            let redriven = self
                .redrive(topic, target, None, DEAD_LETTERS_PER_REQUEST)
                .await?;
            if redriven == 0 {
                return Ok(total);
            }
            total += redriven;
        }
    }

    /// Drops every dead letter pending in `topic` now. Returns how many.
    pub async fn purge_dead_letters(&self, topic: &str) -> Result<u64> {
        let request = Request::PurgeDeadLetters {
            topic: topic.to_owned(),
        };
        count(self.request(&request).await?)
    }
}

pub(crate) fn count(response: Response) -> Result<u64> {
    match response {
        Response::Count { count } => Ok(count),
        other => Err(unexpected("Count", &other)),
    }
}
