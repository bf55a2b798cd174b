//! Dead letters: storing them in their dead-letter topic, and the operations on a DLQ —
//! list, browse, redrive, purge.
//!
//! A dead-letter topic is an ordinary topic. The broker keeps one internal queue subscription
//! on it, [`DLQ_GROUP`], whose unacked messages are "what is in the DLQ": redrive and purge ack
//! them there, so the log stays append-only and other subscriptions on the DLQ are unaffected.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use weir_batch::BatchBuilder;

use super::{Broker, read};
use crate::config::{StartPosition, SubscribeOptions, SubscriptionKind};
use crate::error::{Error, Result};
use crate::subscription::{
    BatchCursor, DeadLetter, Delivery, MessageId, Subscription, read_records_at,
};
use crate::topic::wait_all;

/// The internal subscription that tracks what is still in a dead-letter topic.
pub const DLQ_GROUP: &str = "weir-dlq";
/// Prefix of the headers a dead letter carries.
pub const DLQ_HEADER_PREFIX: &str = "weir.dlq.";

/// A dead-letter topic as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterQueueInfo {
    pub topic: String,
    /// Dead letters not yet redriven or purged.
    pub pending: u64,
}

impl Broker {
    /// Stores a subscription's pending dead letters in its dead-letter topic, then acks them
    /// in the subscription. Runs on the timer; after a failure it backs off (`background.rs`).
    pub(super) async fn store_dead_letters(&self, subscription: &Arc<Subscription>) {
        let now_ms = self.inner.config.clock.now_ms();
        let record = &subscription.record;
        let scope = || format!("{}/{}", record.topic, record.group);
        if !self.background_due("dead_letters", scope, now_ms) {
            return;
        }
        let letters = subscription.take_dead_letters();
        if letters.is_empty() {
            return;
        }
        let result = self.append_dead_letters(subscription, &letters).await;
        self.background_done(
            "dead_letters",
            scope,
            "storing dead letters",
            &result,
            now_ms,
        );
        let stored = result.is_ok();
        subscription.dead_letters_done(letters, stored, self.inner.config.clock.now_ms());
        if stored {
            // Settled in the queue durably now: saved on their way out, letters found unsettled
            // after a crash would be stored a second time. A failure is retried by the next
            // save (logged there); at shutdown the final save does it.
            let _ = self.sync_positions().await;
        }
    }

    async fn append_dead_letters(
        &self,
        subscription: &Subscription,
        letters: &[DeadLetter],
    ) -> Result<()> {
        let record = &subscription.record;
        let mut builder = BatchBuilder::new();
        // One cursor per partition: letters of a partition mostly come in offset order, so a
        // batch is read once for all of them.
        let mut places: BTreeMap<u32, Option<BatchCursor>> = BTreeMap::new();
        for letter in letters {
            let partition = subscription.topic.partition(letter.partition)?;
            let place = places.entry(letter.partition).or_default();
            let Some(original) = read_records_at(&partition.reader, place, letter.offset, 1)?
                .pop()
                .filter(|original| original.offset == letter.offset)
            else {
                continue; // Deleted by retention meanwhile: nothing to keep.
            };
            let optional =
                |value: Option<i64>| value.map(|value| value.to_string()).unwrap_or_default();
            let facts = [
                ("reason", letter.reason.as_str().to_owned()),
                ("error", letter.error.clone().unwrap_or_default()),
                ("topic", record.topic.clone()),
                ("subscription", record.group.clone()),
                ("partition", letter.partition.to_string()),
                ("offset", letter.offset.to_string()),
                ("delivery_count", letter.delivery_count.to_string()),
                ("first_delivery_ms", optional(letter.first_delivery_ms)),
                ("last_delivery_ms", optional(letter.last_delivery_ms)),
            ];
            let names: Vec<String> = facts
                .iter()
                .map(|(name, _)| format!("{DLQ_HEADER_PREFIX}{name}"))
                .collect();
            let mut headers: Vec<(&str, &[u8])> = original
                .headers
                .iter()
                .filter(|(name, _)| !name.starts_with(DLQ_HEADER_PREFIX))
                .map(|(name, value)| (name.as_str(), &value[..]))
                .collect();
            headers.extend(
                names
                    .iter()
                    .zip(&facts)
                    .map(|(name, (_, value))| (name.as_str(), value.as_bytes())),
            );
            builder.push(
                original.timestamp_ms,
                original.key.as_deref(),
                &headers,
                &original.value,
            );
        }
        if builder.is_empty() {
            return Ok(());
        }
        let dead_letter_topic = self.dead_letter_topic(&record.dead_letter_topic()).await?;
        let batch = weir_batch::Batch::parse(builder.finish(), usize::MAX)?;
        wait_all(dead_letter_topic.topic.submit(None, batch).await?).await?;
        Ok(())
    }

    /// The dead-letter topic `name` with its tracking subscription, created if needed (even
    /// when topics are not auto-created: a dead letter must never be lost for want of a topic).
    async fn dead_letter_topic(&self, name: &str) -> Result<Arc<Subscription>> {
        if let Ok(subscription) = self.find_subscription(name, DLQ_GROUP) {
            return Ok(subscription);
        }
        if self.find_topic(name).is_err() {
            match self
                .create_topic(name, self.inner.config.default_topic.clone())
                .await
            {
                Ok(_) | Err(Error::TopicExists(_)) => {}
                Err(error) => return Err(error),
            }
        }
        let options = SubscribeOptions {
            kind: SubscriptionKind::Queue,
            start: StartPosition::Earliest,
            ..SubscribeOptions::default()
        };
        // Creating the subscription through a consumer that leaves at once: nothing else
        // attaches to the internal group.
        drop(self.subscribe(name, DLQ_GROUP, options).await?);
        self.find_subscription(name, DLQ_GROUP)
    }

    /// Dead-letter topics and how many dead letters each still holds.
    pub fn dead_letter_queues(&self) -> Vec<DeadLetterQueueInfo> {
        read(&self.inner.subscriptions)
            .iter()
            .filter(|((_, group), _)| group == DLQ_GROUP)
            .map(|((topic, _), subscription)| DeadLetterQueueInfo {
                topic: topic.clone(),
                pending: subscription.backlog().unwrap_or(0),
            })
            .collect()
    }

    fn dlq(&self, topic: &str) -> Result<Arc<Subscription>> {
        self.find_subscription(topic, DLQ_GROUP)
            .map_err(|_| Error::InvalidArgument(format!("'{topic}' is not a dead-letter topic")))
    }

    /// Up to `max` dead letters still in `dlq_topic`, oldest first.
    pub fn dead_letters(&self, dlq_topic: &str, max: usize) -> Result<Vec<Delivery>> {
        self.dlq(dlq_topic)?.pending(max)
    }

    /// Redrives dead letters and removes them from the DLQ. `ids` selects some; `None` takes
    /// all (up to `max`). Returns how many were redriven.
    ///
    /// Without a `target`, each goes back to the queue subscription it was dead-lettered from,
    /// and only there: that subscription delivers the original message again at its own
    /// partition and offset (so with its key and order), with a fresh delivery count; other
    /// subscriptions of the topic do not see it again. With a `target`, a copy without the
    /// `weir.dlq.*` headers is published to that topic. A dead letter whose origin cannot take
    /// it back (the subscription was deleted, or retention deleted the message) fails the
    /// whole call before anything moves: redrive it to a target instead.
    pub async fn redrive(
        &self,
        dlq_topic: &str,
        target: Option<&str>,
        ids: Option<&[MessageId]>,
        max: usize,
    ) -> Result<u64> {
        let subscription = self.dlq(dlq_topic)?;
        let letters: Vec<Delivery> = subscription
            .pending(max)?
            .into_iter()
            .filter(|letter| ids.is_none_or(|ids| ids.contains(&letter.id())))
            .collect();
        let redriven: Vec<MessageId> = letters.iter().map(Delivery::id).collect();
        match target {
            Some(target) => self.republish(target, &letters).await?,
            None => self.return_to_origins(&letters).await?,
        }
        subscription.discard(&redriven)?;
        self.sync_positions().await?;
        Ok(redriven.len() as u64)
    }

    /// Publishes copies of `letters` to `target`, without their `weir.dlq.*` headers.
    async fn republish(&self, target: &str, letters: &[Delivery]) -> Result<()> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut builder = BatchBuilder::new();
        for letter in letters {
            let record = &letter.record;
            let headers: Vec<(&str, &[u8])> = record
                .headers
                .iter()
                .filter(|(name, _)| !name.starts_with(DLQ_HEADER_PREFIX))
                .map(|(name, value)| (name.as_str(), &value[..]))
                .collect();
            builder.push(
                record.timestamp_ms,
                record.key.as_deref(),
                &headers,
                &record.value,
            );
        }
        let batch: Bytes = builder.finish();
        self.publish(target, None, batch).await?;
        Ok(())
    }

    /// Makes each letter's original message pending again in the subscription it came from,
    /// durably. Checks every letter first, so an unreachable origin moves nothing.
    async fn return_to_origins(&self, letters: &[Delivery]) -> Result<()> {
        let mut origins = Vec::with_capacity(letters.len());
        for letter in letters {
            let (subscription, id) = self.origin(letter)?;
            let partition = subscription.topic.partition(id.partition)?;
            if id.offset < partition.reader.start_offset() {
                return Err(Error::InvalidArgument(format!(
                    "the message of dead letter {}:{} was deleted from '{}' by retention; \
                     give a target topic to publish the dead letter's copy",
                    letter.partition, letter.record.offset, subscription.record.topic
                )));
            }
            origins.push((subscription, id));
        }
        for (subscription, id) in origins {
            // Checked above; retention racing this call can only make it a no-op.
            subscription.redeliver_settled(id)?;
        }
        // Durable in the origin before the letters leave the DLQ: a crash in between leaves a
        // message in both (delivered again), never in neither.
        self.sync_positions().await
    }

    /// The queue subscription and message a dead letter came from, from its `weir.dlq.*`
    /// headers.
    fn origin(&self, letter: &Delivery) -> Result<(Arc<Subscription>, MessageId)> {
        let record = &letter.record;
        let header = |name: &str| {
            record
                .header(&format!("{DLQ_HEADER_PREFIX}{name}"))
                .and_then(|value| std::str::from_utf8(value).ok())
        };
        let unknown = || {
            Error::InvalidArgument(format!(
                "dead letter {}:{} does not say where it came from; give a target topic",
                letter.partition, record.offset
            ))
        };
        let (Some(topic), Some(group)) = (header("topic"), header("subscription")) else {
            return Err(unknown());
        };
        let partition = header("partition").and_then(|value| value.parse().ok());
        let offset = header("offset").and_then(|value| value.parse().ok());
        let (Some(partition), Some(offset)) = (partition, offset) else {
            return Err(unknown());
        };
        let subscription = self.find_subscription(topic, group).map_err(|_| {
            Error::InvalidArgument(format!(
                "dead letter {}:{} came from subscription '{group}' on '{topic}', which no \
                 longer exists; give a target topic",
                letter.partition, record.offset
            ))
        })?;
        Ok((subscription, MessageId { partition, offset }))
    }

    /// Empties a DLQ: every dead letter in it now is dropped. Returns how many.
    pub async fn purge_dead_letters(&self, dlq_topic: &str) -> Result<u64> {
        let subscription = self.dlq(dlq_topic)?;
        let pending = subscription.backlog().unwrap_or(0);
        subscription.reset(StartPosition::Latest)?;
        self.sync_positions().await?;
        Ok(pending)
    }

    /// Refuses a publish of `incoming` messages to `topic` if a queue subscription with the
    /// `reject-publish` overflow policy would exceed its `max_backlog`.
    pub(super) fn check_backlog(&self, topic: &str, incoming: u64) -> Result<()> {
        let subscriptions = read(&self.inner.subscriptions);
        let on_topic = subscriptions
            .range((topic.to_owned(), String::new())..)
            .take_while(|((name, _), _)| name == topic);
        for ((_, group), subscription) in on_topic {
            let settings = &subscription.record.queue;
            let Some(max_backlog) = settings.max_backlog else {
                continue;
            };
            if settings.overflow != crate::config::Overflow::RejectPublish {
                continue;
            }
            if let Some(backlog) = subscription.backlog()
                && backlog + incoming > max_backlog
            {
                return Err(Error::BacklogFull {
                    topic: topic.to_owned(),
                    group: group.clone(),
                });
            }
        }
        Ok(())
    }
}
