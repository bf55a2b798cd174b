//! Delayed messages on the broker: schedule, list, inspect, cancel, reschedule, and hand over
//! to their topics when due.
//!
//! Hand-over is idempotent: each message is appended with a message id derived from its
//! schedule id (unless it has its own), so if the broker dies after appending and before
//! removing the entry, the second hand-over is caught by the topic's dedup window.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use weir_batch::{Batch, BatchBuilder, MESSAGE_ID_HEADER, Record};

use super::Broker;
use crate::error::{Error, Result};
use crate::schedule::{self, ScheduledEntry};
use crate::topic::wait_all;

/// The furthest ahead a message may be scheduled.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Due entries handed over per pass.
const DUE_PER_PASS: usize = 2048;

/// A batch to deliver later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRequest {
    pub topic: String,
    pub partition: Option<u32>,
    /// An encoded batch (see `weir-batch`).
    pub batch: Bytes,
    /// When to deliver, in ms since the epoch; a time in the past means now.
    pub deliver_at_ms: i64,
    /// A key to cancel it by (unique among scheduled messages), e.g. an order number.
    pub business_key: Option<String>,
}

/// A scheduled batch as shown to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledMessage {
    pub id: u64,
    pub topic: String,
    pub partition: Option<u32>,
    pub deliver_at_ms: i64,
    pub business_key: Option<String>,
    pub message_count: u32,
}

fn describe(entry: &ScheduledEntry) -> ScheduledMessage {
    let message_count =
        weir_batch::BatchHeader::read(&entry.batch).map_or(0, |header| header.record_count);
    ScheduledMessage {
        id: entry.id,
        topic: entry.topic.clone(),
        partition: entry.partition,
        deliver_at_ms: entry.due_ms,
        business_key: entry.business_key.clone(),
        message_count,
    }
}

impl Broker {
    /// Stores batches durably to be published at their times. Returns once they are durable.
    pub async fn schedule(&self, requests: Vec<ScheduleRequest>) -> Result<Vec<ScheduledMessage>> {
        self.check_open()?;
        let now_ms = self.inner.config.clock.now_ms();
        let latest = now_ms.saturating_add(MAX_DELAY.as_millis() as i64);
        let mut entries = Vec::with_capacity(requests.len());
        for request in requests {
            if request.deliver_at_ms > latest {
                return Err(Error::InvalidArgument(format!(
                    "a message can be scheduled at most {} days ahead",
                    MAX_DELAY.as_secs() / 86_400
                )));
            }
            Batch::parse(request.batch.clone(), self.inner.config.max_batch_bytes)?;
            let topic = self.topic_or_create(&request.topic).await?;
            if let Some(partition) = request.partition {
                topic.partition(partition)?;
            }
            entries.push(ScheduledEntry {
                id: self.inner.next_schedule_id.fetch_add(1, Ordering::Relaxed),
                due_ms: request.deliver_at_ms.clamp(0, latest),
                topic: request.topic,
                partition: request.partition,
                business_key: request.business_key,
                batch: request.batch,
            });
        }
        {
            let _scheduling = self.inner.scheduling.lock().await;
            schedule::insert(self.inner.catalog.meta(), &entries)?;
        }
        if let Some(earliest) = entries.iter().map(|entry| entry.due_ms).min() {
            self.inner.next_due_ms.fetch_min(earliest, Ordering::AcqRel);
            self.inner.schedule_changed.notify_one();
        }
        Ok(entries.iter().map(describe).collect())
    }

    /// Schedules one batch `delay` from now.
    pub async fn publish_delayed(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
        delay: Duration,
        business_key: Option<String>,
    ) -> Result<ScheduledMessage> {
        if delay > MAX_DELAY {
            return Err(Error::InvalidArgument(format!(
                "a delay is at most {} days",
                MAX_DELAY.as_secs() / 86_400
            )));
        }
        let deliver_at_ms = self
            .inner
            .config
            .clock
            .now_ms()
            .saturating_add(delay.as_millis() as i64);
        let request = ScheduleRequest {
            topic: topic.to_owned(),
            partition,
            batch,
            deliver_at_ms,
            business_key,
        };
        self.schedule(vec![request])
            .await?
            .pop()
            .ok_or_else(|| Error::Storage("scheduling returned nothing".into()))
    }

    /// Scheduled batches in due order, optionally of one topic, after `after` (a page cursor:
    /// the last `(deliver_at_ms, id)` seen).
    pub fn scheduled(
        &self,
        topic: Option<&str>,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<ScheduledMessage>> {
        Ok(
            schedule::list(self.inner.catalog.meta(), topic, after, limit)?
                .iter()
                .map(describe)
                .collect(),
        )
    }

    /// One scheduled batch with its messages.
    pub fn scheduled_message(&self, id: u64) -> Result<(ScheduledMessage, Vec<Record>)> {
        let entry = self.scheduled_entry(id)?;
        let batch = Batch::parse(entry.batch.clone(), usize::MAX)?;
        let records = batch
            .records()
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok((describe(&entry), records))
    }

    fn scheduled_entry(&self, id: u64) -> Result<ScheduledEntry> {
        schedule::get(self.inner.catalog.meta(), id)?
            .ok_or_else(|| Error::NotFound(format!("no scheduled message {id}")))
    }

    /// The id scheduled under `business_key`.
    pub fn scheduled_id(&self, business_key: &str) -> Result<u64> {
        schedule::id_for_business_key(self.inner.catalog.meta(), business_key)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no scheduled message with business key '{business_key}'"
            ))
        })
    }

    /// Cancels a scheduled batch. Once this returns, it will not be delivered.
    pub async fn cancel_scheduled(&self, id: u64) -> Result<ScheduledMessage> {
        let _scheduling = self.inner.scheduling.lock().await;
        let entry = self.scheduled_entry(id)?;
        self.inner
            .catalog
            .meta()
            .write(&schedule::remove_ops(&entry), true)?;
        Ok(describe(&entry))
    }

    /// Moves a scheduled batch to `deliver_at_ms`.
    pub async fn reschedule(&self, id: u64, deliver_at_ms: i64) -> Result<ScheduledMessage> {
        let now_ms = self.inner.config.clock.now_ms();
        let latest = now_ms.saturating_add(MAX_DELAY.as_millis() as i64);
        if deliver_at_ms > latest {
            return Err(Error::InvalidArgument("too far ahead".into()));
        }
        let moved = {
            let _scheduling = self.inner.scheduling.lock().await;
            let entry = self.scheduled_entry(id)?;
            schedule::reschedule(self.inner.catalog.meta(), &entry, deliver_at_ms.max(0))?
        };
        self.inner
            .next_due_ms
            .fetch_min(moved.due_ms, Ordering::AcqRel);
        self.inner.schedule_changed.notify_one();
        Ok(describe(&moved))
    }

    pub fn scheduled_count(&self) -> Result<u64> {
        schedule::count(self.inner.catalog.meta())
    }

    /// Publishes every batch due by now to its topic, then forgets it. Returns how many
    /// batches were handed over.
    pub async fn deliver_due(&self) -> Result<usize> {
        let _scheduling = self.inner.scheduling.lock().await;
        let meta = self.inner.catalog.meta();
        let mut delivered = 0;
        loop {
            let now_ms = self.inner.config.clock.now_ms();
            let entries = schedule::due(meta, now_ms, DUE_PER_PASS)?;
            if entries.is_empty() {
                break;
            }
            let mut pending = Vec::with_capacity(entries.len());
            for entry in &entries {
                match self.hand_over(entry).await {
                    Ok(confirms) => pending.push((entry, confirms)),
                    Err(error) => {
                        tracing::warn!(id = entry.id, topic = %entry.topic, %error, "scheduled message not delivered; will retry")
                    }
                }
            }
            let mut done = Vec::new();
            for (entry, confirms) in pending {
                match wait_all(confirms).await {
                    Ok(_) => done.extend(schedule::remove_ops(entry)),
                    Err(error) => {
                        tracing::warn!(id = entry.id, %error, "scheduled message not confirmed; will retry")
                    }
                }
            }
            let handed_over = done.len();
            // Not durable on its own: if lost in a crash, the entry is handed over again and
            // the topic's dedup window drops the copy.
            meta.write(&done, false)?;
            delivered += entries.len();
            if handed_over == 0 || entries.len() < DUE_PER_PASS {
                break;
            }
        }
        let earliest = schedule::earliest(meta)?.unwrap_or(i64::MAX);
        self.inner.next_due_ms.store(earliest, Ordering::Release);
        Ok(delivered)
    }

    async fn hand_over(
        &self,
        entry: &ScheduledEntry,
    ) -> Result<Vec<crate::partition::PendingConfirm>> {
        let batch = Batch::parse(entry.batch.clone(), usize::MAX)?;
        let mut builder = BatchBuilder::with_capacity(batch.len() + 64);
        for (index, record) in batch.records().enumerate() {
            let record = record?;
            let mut headers: Vec<(&str, &[u8])> = record
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), &value[..]))
                .collect();
            let id = format!("schedule-{}-{index}", entry.id);
            if record.message_id().is_none() {
                headers.push((MESSAGE_ID_HEADER, id.as_bytes()));
            }
            builder.push(
                record.timestamp_ms,
                record.key.as_deref(),
                &headers,
                &record.value,
            );
        }
        let topic = self.topic_or_create(&entry.topic).await?;
        let batch = Batch::parse(builder.finish(), usize::MAX)?;
        topic.submit(entry.partition, batch).await
    }
}
