//! Delayed messages on [`Client`]: publishing a batch that becomes visible later
//! ([`Client::publish_delayed`]), and listing, inspecting, cancelling (by id or by the business
//! key given at publish) and rescheduling what is pending.
//!
//! The broker stores a delayed batch durably before it answers, keeps it invisible to every
//! subscription until it is due, then appends it to its topic once. Times up to 366 days ahead
//! are accepted; later ones are refused with `invalid_argument`, never wrapped; a time in the
//! past means now.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use weir_proto::{Request, Response, ScheduleTime, ScheduledInfo, ScheduledSelector};

use crate::accumulator::encode_messages;
use crate::client::{Client, milliseconds};
use crate::connection::unexpected;
use crate::error::{Error, Result};
use crate::message::Message;

/// When a delayed batch becomes visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryTime {
    /// This long after the broker receives the request, by the broker's clock (so the
    /// producer's clock does not matter).
    After(Duration),
    /// At this instant; one in the past means now.
    At(SystemTime),
}

impl DeliveryTime {
    /// The protocol's form: milliseconds, saturating (an instant before 1970 is "now").
    pub fn to_schedule_time(self) -> ScheduleTime {
        match self {
            DeliveryTime::After(delay) => ScheduleTime::DelayMs(milliseconds(delay)),
            DeliveryTime::At(instant) => {
                ScheduleTime::AtMs(instant.duration_since(UNIX_EPOCH).map_or(0, |since| {
                    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
                }))
            }
        }
    }
}

/// A delayed batch the broker holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Scheduled {
    /// The broker's id for it: to show, cancel or reschedule it.
    pub id: u64,
    /// When it becomes visible, in milliseconds since the Unix epoch.
    pub deliver_at_ms: i64,
}

/// One scheduled batch and its messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledBatch {
    /// Where and when it goes.
    pub info: ScheduledInfo,
    /// Its messages, in order; fewer than `info.message_count` if they would not fit in one
    /// frame.
    pub messages: Vec<weir_proto::Message>,
}

/// The partition all of `messages` name, if they name one and the same.
pub(crate) fn common_partition(messages: &[Message]) -> Option<u32> {
    let first = messages.first()?.partition?;
    messages
        .iter()
        .all(|message| message.partition == Some(first))
        .then_some(first)
}

impl Client {
    /// Stores `messages` as one batch for `topic`, to become visible at `when`. With a
    /// `business_key` (unique among pending batches; an order number, say), it can be
    /// cancelled by that key. The messages go to the partition they all name, else the
    /// broker routes each by key when it delivers them.
    ///
    /// ```no_run
    /// # async fn run(client: weir_client::Client) -> weir_client::Result<()> {
    /// use std::time::Duration;
    /// use weir_client::{DeliveryTime, Message, ScheduledSelector};
    /// // Cancel order 42 in 30 minutes unless it is paid by then.
    /// let cancel = Message::new("cancel order 42");
    /// client
    ///     .publish_delayed("order-cancellations", &[cancel], DeliveryTime::After(Duration::from_secs(1800)), Some("order-42"))
    ///     .await?;
    /// // Paid: the cancellation is never delivered.
    /// client.cancel_scheduled(ScheduledSelector::BusinessKey("order-42".into())).await?;
    /// # Ok(()) }
    /// ```
    pub async fn publish_delayed(
        &self,
        topic: &str,
        messages: &[Message],
        when: DeliveryTime,
        business_key: Option<&str>,
    ) -> Result<Scheduled> {
        let batch = encode_messages(messages, crate::producer::now_ms())
            .ok_or_else(|| Error::InvalidArgument("no messages to publish".into()))?;
        self.publish_delayed_batch(topic, common_partition(messages), batch, when, business_key)
            .await
    }

    /// [`Client::publish_delayed`] of a batch encoded with [`crate::BatchBuilder`].
    pub async fn publish_delayed_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        when: DeliveryTime,
        business_key: Option<&str>,
    ) -> Result<Scheduled> {
        let request = Request::PublishDelayed {
            topic: topic.to_owned(),
            partition,
            when: when.to_schedule_time(),
            business_key: business_key.map(str::to_owned),
            batch,
        };
        scheduled(self.request(&request).await?)
    }

    /// Pending batches in due order, of one topic or of all: at most `limit` (1 to 1000),
    /// after the `(deliver_at_ms, id)` of the previous page's last entry.
    pub async fn scheduled(
        &self,
        topic: Option<&str>,
        after: Option<(i64, u64)>,
        limit: u32,
    ) -> Result<Vec<ScheduledInfo>> {
        let request = Request::ListScheduled {
            topic: topic.map(str::to_owned),
            after,
            limit,
        };
        match self.request(&request).await? {
            Response::ScheduledList(entries) => Ok(entries),
            other => Err(unexpected("ScheduledList", &other)),
        }
    }

    /// One pending batch with its messages. `not_found` once delivered or cancelled.
    pub async fn scheduled_batch(&self, id: u64) -> Result<ScheduledBatch> {
        match self.request(&Request::ShowScheduled { id }).await? {
            Response::ScheduledMessage { info, messages } => Ok(ScheduledBatch { info, messages }),
            other => Err(unexpected("ScheduledMessage", &other)),
        }
    }

    /// Cancels a pending batch, by id or by business key: once this returns, it will not be
    /// delivered. Returns what was cancelled; `not_found` for an unknown id or key (or one
    /// delivered already).
    pub async fn cancel_scheduled(&self, selector: ScheduledSelector) -> Result<ScheduledInfo> {
        match self.request(&Request::CancelScheduled { selector }).await? {
            Response::ScheduledList(entries) => entries
                .into_iter()
                .next()
                .ok_or_else(|| Error::Protocol("a cancel answer naming no batch".into())),
            other => Err(unexpected("ScheduledList", &other)),
        }
    }

    /// Moves a pending batch to another time.
    pub async fn reschedule(&self, id: u64, when: DeliveryTime) -> Result<Scheduled> {
        let request = Request::Reschedule {
            id,
            when: when.to_schedule_time(),
        };
        scheduled(self.request(&request).await?)
    }
}

fn scheduled(response: Response) -> Result<Scheduled> {
    match response {
        Response::Scheduled { id, deliver_at_ms } => Ok(Scheduled { id, deliver_at_ms }),
        other => Err(unexpected("Scheduled", &other)),
    }
}
