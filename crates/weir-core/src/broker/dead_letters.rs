//! Dead letters: storing them in their dead-letter topic, and the operations on a DLQ —
//! list, browse, redrive, purge.
//!
//! A dead-letter topic is an ordinary topic. The broker keeps one internal queue subscription
//! on it, [`DLQ_GROUP`], whose unacked messages are "what is in the DLQ": redrive and purge ack
//! them there, so the log stays append-only and other subscriptions on the DLQ are unaffected.
//!
//! Exactly once, whatever the dedup window. Storing a letter (an append to the DLQ's log) and
//! settling its message in the queue (a metadata write) are two stores: a crash between them,
//! or an append that failed after it was written (a restart recovers it), would leave the
//! message unsettled and dead-letter it again. As with scheduled hand-overs, the log is the
//! record: each letter names its origin (`weir.dlq.topic`, `subscription`, `partition`,
//! `offset`), and the metadata store keeps per subscription a *dead-letter mark*, offsets of
//! the DLQ's partitions at or before every letter whose settlement may not be durable. The mark
//! is written durably before the subscription's first letter, and moved up only once the
//! letters stored since are settled in the stored queue state. On open, before any delivery,
//! the DLQ is read from each mark: a letter still in the DLQ (not redriven or purged) whose
//! message is unsettled settles it. The cost is reading, at start, the letters stored since
//! the last mark moved: about one round's worth. Known limit: a reset of the subscription
//! (replay) followed by a restart before the mark moves again leaves out of the replay the
//! messages whose letters were stored since the mark and are still in the DLQ.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use weir_batch::{BatchBuilder, MESSAGE_ID_HEADER};

use super::{Broker, read};
use crate::catalog::{Catalog, DeadLetterMark};
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

/// Per queue subscription (topic, group), where its dead letters stand (module documentation).
/// Behind a tokio mutex held across a round of storing letters, so rounds do not interleave.
pub(super) type DeadLetterMarks = tokio::sync::Mutex<HashMap<(String, String), MarkState>>;

#[derive(Default)]
pub(super) struct MarkState {
    /// A mark is durable in the metadata store.
    durable: bool,
    /// Letters stored since the mark, not yet known to be settled durably.
    unsettled: Vec<MessageId>,
    /// The DLQ's partition ends after the last of them: where the mark can move up to.
    ends_after: Vec<u64>,
}

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
        let _round = self.inner.dead_letter_round.lock().await;
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
            // A dead letter is a new message, not the original again: with the original's id
            // it would be deduplicated against an earlier dead letter of the same message (one
            // redriven and dead-lettered again) and lost. The id is kept as information.
            let message_id = original
                .header(MESSAGE_ID_HEADER)
                .map(|id| String::from_utf8_lossy(id).into_owned());
            let mut facts = vec![
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
            facts.extend(message_id.map(|id| ("message_id", id)));
            let names: Vec<String> = facts
                .iter()
                .map(|(name, _)| format!("{DLQ_HEADER_PREFIX}{name}"))
                .collect();
            let mut headers: Vec<(&str, &[u8])> = original
                .headers
                .iter()
                .filter(|(name, _)| {
                    !name.starts_with(DLQ_HEADER_PREFIX) && name != MESSAGE_ID_HEADER
                })
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
        let dlq = &dead_letter_topic.topic;
        let batch = weir_batch::Batch::parse(builder.finish(), usize::MAX)?;
        let mut marks = self.inner.dead_letter_marks.lock().await;
        let key = (record.topic.clone(), record.group.clone());
        let state = marks.entry(key).or_default();
        self.move_mark(subscription, dlq.ends(), state).await?;
        let appended = match dlq.submit(None, batch).await {
            Ok(pending) => wait_all(pending).await.map(|_| ()),
            Err(error) => Err(error),
        };
        // Stored or maybe stored (a failed append may have been written): after the mark.
        state
            .unsettled
            .extend(letters.iter().map(|letter| MessageId {
                partition: letter.partition,
                offset: letter.offset,
            }));
        state.ends_after = dlq.ends();
        appended
    }

    /// Makes sure a durable mark precedes the letters about to be stored: writes one if there
    /// is none (`ends`: the DLQ's ends now), or moves it up past the letters stored since once
    /// they are settled in the stored queue state. Fails only if there is no mark.
    async fn move_mark(
        &self,
        subscription: &Subscription,
        ends: Vec<u64>,
        state: &mut MarkState,
    ) -> Result<()> {
        // A failed read says nothing: the mark stays.
        let settled = || {
            subscription
                .settled_in_store(&self.inner.catalog, &state.unsettled)
                .unwrap_or(false)
        };
        let ends = if !state.durable {
            ends
        } else if !state.unsettled.is_empty() && settled() {
            state.ends_after.clone()
        } else {
            return Ok(());
        };
        let record = &subscription.record;
        let op = Catalog::dead_letter_mark_op(&DeadLetterMark {
            topic: record.topic.clone(),
            group: record.group.clone(),
            ends,
        });
        match self
            .run_blocking(move |broker| broker.inner.catalog.save_positions(&[op]))
            .await
        {
            Ok(()) => {
                if state.durable {
                    state.unsettled.clear();
                }
                state.durable = true;
                Ok(())
            }
            Err(error) if !state.durable => Err(error),
            // The mark in the store still precedes every letter whose settlement is in doubt.
            Err(_) => Ok(()),
        }
    }

    /// Settles the messages whose dead letters an earlier run stored without settling them
    /// durably (module documentation), then moves each mark to the end of its DLQ. Runs at
    /// open, before any delivery.
    pub(super) async fn settle_dead_letters(&self) -> Result<()> {
        let mut marks = self.inner.dead_letter_marks.lock().await;
        for mark in self.inner.catalog.dead_letter_marks()? {
            let Ok(origin) = self.find_subscription(&mark.topic, &mark.group) else {
                continue; // Deleted with its subscription.
            };
            let name = origin.record.dead_letter_topic();
            let (Ok(dlq), Ok(tracking)) = (
                self.find_topic(&name),
                self.find_subscription(&name, DLQ_GROUP),
            ) else {
                continue; // No letter was ever stored.
            };
            let mut found = Vec::new();
            for partition in &dlq.partitions {
                let reader = &partition.reader;
                let (start, end) = (reader.start_offset(), reader.end_offset());
                let from = mark.ends.get(partition.id as usize).copied().unwrap_or(0);
                // Past the end: the topic was made again since, so its whole log is new.
                let mut next = if from > end { start } else { from.max(start) };
                while next < end {
                    let records = crate::subscription::read_records(reader, next, 1000)?;
                    let Some(last) = records.last() else { break };
                    next = last.offset + 1;
                    for record in records {
                        let letter = Delivery {
                            partition: partition.id,
                            delivery_count: 0,
                            record,
                        };
                        // Redriven or purged since: no longer in the DLQ, so it settles nothing.
                        if tracking.is_settled(letter.id()) {
                            continue;
                        }
                        let Ok((from, id)) = self.origin(&letter) else {
                            continue;
                        };
                        if Arc::ptr_eq(&from, &origin) && !origin.is_settled(id) {
                            origin.dead_letter_found(id);
                            found.push(id);
                        }
                    }
                }
            }
            if !found.is_empty() {
                tracing::info!(
                    topic = %mark.topic,
                    group = %mark.group,
                    settled = found.len(),
                    "messages found in their dead-letter topic after a restart are not dead-lettered again"
                );
            }
            let ends = dlq.ends();
            let positions = origin.take_dirty_positions();
            let mut ops = positions.clone();
            ops.push(Catalog::dead_letter_mark_op(&DeadLetterMark {
                ends: ends.clone(),
                ..mark.clone()
            }));
            let state = match self.inner.catalog.save_positions(&ops) {
                Ok(()) => MarkState {
                    durable: true,
                    ..MarkState::default()
                },
                // The stored mark still precedes them; the positions go with the next save.
                Err(_) => {
                    super::lock(&self.inner.positions_unsaved).extend(positions);
                    MarkState {
                        durable: true,
                        unsettled: found,
                        ends_after: ends,
                    }
                }
            };
            marks.insert((mark.topic, mark.group), state);
        }
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
