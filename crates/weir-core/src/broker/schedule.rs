//! Delayed messages on the broker: schedule, list, inspect, cancel, reschedule, and hand over
//! to their topics when due.
//!
//! Three paths touch the schedule and none waits for another's disk write:
//! - writes (schedule, cancel, reschedule) commit durably on a blocking thread, one at a time;
//! - loads read the due times of the next bucket into the in-memory window ahead of time;
//! - hand-over takes due entries from the window, reads them from a snapshot, publishes them
//!   and marks them delivered in memory; once every entry of a bucket is delivered, the
//!   bucket is removed from the store in one range (not entry by entry, which would rewrite a
//!   page per entry).
//!
//! Exactly once across restarts and crashes, whatever the topics' dedup windows. The log and
//! the metadata store are two stores, so a hand-over (an append) and the removal of its entry
//! cannot be one write; instead the log is the record of what was handed over, and the store
//! says where to look in it. Each record appended for an entry carries a message id naming it:
//! its own, or `schedule-<entry id>-<index>`. Invariant: for every stored entry that may have
//! reached a topic's log, the store holds a *hand-over mark* for (its bucket, that topic)
//! giving offsets in each partition at or before its records. A mark is written durably before
//! the first entry of its bucket is handed over to its topic (once per bucket and topic, so
//! about one small write per 8 s), and removed in the write that removes its bucket.
//! On start, before anything is handed over, the log of each marked topic is read from its
//! mark to its end for the ids of the marked buckets' entries: an entry found whole is removed,
//! one found in part (its records went to several partitions and a crash came between them) is
//! stored again with only its missing records, keeping their ids; then the marks are deleted,
//! in one durable write. A clean shutdown with a bucket half delivered leaves the same state
//! as a crash and is settled the same way. The cost is reading, at start, what the marked topics
//! received since their marks: about the last bucket's worth (8–16 s) of traffic.
//!
//! A pass is never cut short: it runs as its own task, so an aborted caller (shutdown stops
//! the scheduler task) cannot leave entries taken from the window and neither delivered nor
//! put back, which the bucket removal would then delete unsent.
//!
//! An entry whose stored value does not decode is moved to a quarantine table when a load, a
//! pass or a removal meets it, counted in `BrokerStats::scheduled_quarantined` and logged once,
//! never retried.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use weir_batch::{Batch, BatchBuilder, MESSAGE_ID_HEADER, Record};

use super::{Broker, lock};
use crate::config::MAX_BUSINESS_KEY_BYTES;
use crate::error::{Error, Result};
use crate::schedule::store::{HandOverMark, Settled, bucket_of_key};
use crate::schedule::{self, Cancelled, LOOKAHEAD_MS, ScheduledEntry, Window, store};
use crate::topic::{Topic, wait_all};

/// The furthest ahead a message may be scheduled.
pub const MAX_DELAY: Duration = Duration::from_secs(366 * 24 * 3600);
/// Due entries handed over per pass.
const DUE_PER_PASS: usize = 2048;
/// Loading stops while this many entries wait in memory (after a long downtime, say).
const WINDOW_CAP: usize = 200_000;
/// The scheduler looks at the clock at least this often (a test may move it).
const MAX_SLEEP_MS: i64 = 100;

/// The broker's schedule state; see the module documentation.
#[derive(Default)]
pub(super) struct Scheduler {
    window: Mutex<Window>,
    /// Serialises durable writes: a business-key check and the write it guards.
    writes: Mutex<()>,
    /// Serialises loads, so `deliver_due` can wait for one running in the background.
    loads: Mutex<()>,
    load_running: AtomicBool,
    /// Storage keys of handed-over entries not removed from the store yet, and the first
    /// bucket not removed.
    delivered: Mutex<Delivered>,
    cleanup_running: AtomicBool,
    /// The background loads and removals, awaited on shutdown: each holds the broker.
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Every serial (see `store::storage_key`) handed out so far is below this.
    next_serial: AtomicU64,
    /// One hand-over pass at a time: `deliver_due` returns only after a running pass is done.
    handing_over: tokio::sync::Mutex<()>,
    /// Held (shared) by every running pass task until it has dropped its broker, so shutdown
    /// can wait until no pass holds the broker's files.
    passes: Arc<tokio::sync::RwLock<()>>,
    /// Wakes the scheduler task when something may be due earlier than it planned.
    changed: Arc<tokio::sync::Notify>,
    /// The (bucket → topics) whose hand-over marks are durable.
    marked: Mutex<HashMap<u64, HashSet<String>>>,
    /// Storage keys of entries whose hand-over failed and is retried: the failed append may
    /// have been written (a restart then finds it in the log), so they can no longer be
    /// cancelled or moved — only delivered. Taken after `window` when both are held.
    in_doubt: Mutex<HashSet<u64>>,
}

#[derive(Default)]
struct Delivered {
    keys: HashSet<u64>,
    /// No bucket below this holds a delivered entry (a hand-over into an older bucket, of a
    /// message scheduled for the past or the next moment, lowers it).
    removed_below: u64,
}

impl Scheduler {
    /// Opens the schedule, first settling the hand-overs an earlier run left unsettled (see
    /// the module documentation). Runs before any hand-over.
    pub(super) fn open(
        meta: &weir_storage::MetaStore,
        topics: &HashMap<String, Arc<Topic>>,
    ) -> Result<Scheduler> {
        settle_hand_overs(meta, topics)?;
        let scheduler = Scheduler::default();
        scheduler
            .next_serial
            .store(store::serial_limit(meta)?, Ordering::Relaxed);
        Ok(scheduler)
    }

    fn next_key(&self, due_ms: i64) -> u64 {
        store::storage_key(due_ms, self.next_serial.fetch_add(1, Ordering::Relaxed))
    }

    fn serial_limit(&self) -> u64 {
        self.next_serial.load(Ordering::Relaxed)
    }

    /// Takes a due entry out of the window to cancel or move it; too late while it is being
    /// handed over, or once a hand-over of it failed in doubt.
    fn take_from_window(&self, due: schedule::window::Due) -> Cancelled {
        let mut window = lock(&self.window);
        if lock(&self.in_doubt).contains(&due.1) {
            return Cancelled::TooLate;
        }
        window.cancel(due)
    }

    fn is_delivered(&self, key: u64) -> bool {
        lock(&self.delivered).keys.contains(&key)
    }

    fn spawn_background(&self, work: impl FnOnce() + Send + 'static) {
        let mut background = lock(&self.background);
        background.retain(|task| !task.is_finished());
        background.push(tokio::task::spawn_blocking(work));
    }

    pub(super) fn changed(&self) -> Arc<tokio::sync::Notify> {
        self.changed.clone()
    }

    /// Whether something is due at `now_ms`, a bucket should be loaded, or a hand-over is
    /// running (whose entries are no longer in the window).
    pub(super) fn has_work(&self, now_ms: i64) -> bool {
        let window = lock(&self.window);
        window.next_due().is_some_and(|due_ms| due_ms <= now_ms)
            || window.wants_load(now_ms, LOOKAHEAD_MS, WINDOW_CAP)
            || self.handing_over.try_lock().is_err()
    }
}

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

fn too_late(id: u64) -> Error {
    Error::NotFound(format!("scheduled message {id} is already being delivered"))
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
            if let Some(business_key) = &request.business_key
                && business_key.len() > MAX_BUSINESS_KEY_BYTES
            {
                return Err(Error::InvalidArgument(format!(
                    "a business key is at most {} bytes, not {}",
                    MAX_BUSINESS_KEY_BYTES,
                    business_key.len()
                )));
            }
            self.parse_published(request.batch.clone())?;
            let topic = self.topic_or_create(&request.topic).await?;
            if let Some(partition) = request.partition {
                topic.partition(partition)?;
            }
            let due_ms = request.deliver_at_ms.clamp(0, latest);
            let key = self.inner.schedule.next_key(due_ms);
            entries.push(ScheduledEntry {
                id: key,
                key,
                due_ms,
                topic: request.topic,
                partition: request.partition,
                business_key: request.business_key,
                batch: request.batch,
            });
        }
        self.run_blocking(move |broker| {
            broker.write_schedule(&entries)?;
            Ok(entries.iter().map(describe).collect())
        })
        .await
    }

    /// Writes `entries` durably, then shows the ones due soon to the window — before letting
    /// go of the write lock, so the bucket removal (which takes it) never sees an entry that
    /// is stored but in neither the window nor the store's unloaded buckets.
    fn write_schedule(&self, entries: &[ScheduledEntry]) -> Result<()> {
        let scheduler = &self.inner.schedule;
        let _writes = lock(&scheduler.writes);
        let meta = self.inner.catalog.meta();
        // A business key stays stored until its delivered entry's bucket is removed; it is
        // free for a new message as soon as that entry is delivered.
        let delivered = |id| {
            store::get(meta, id)
                .ok()
                .flatten()
                .is_none_or(|entry| scheduler.is_delivered(entry.key))
        };
        store::write(
            meta,
            entries,
            &[],
            delivered,
            scheduler.serial_limit(),
            true,
        )?;
        let mut window = lock(&scheduler.window);
        let mut soon = false;
        for entry in entries {
            soon |= window.add((entry.due_ms, entry.key));
        }
        drop(window);
        if soon {
            scheduler.changed.notify_one();
        }
        Ok(())
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
        // A copy: listing reads the store, and hand-over must not wait for it.
        let delivered = lock(&self.inner.schedule.delivered).keys.clone();
        let hidden = |key| delivered.contains(&key);
        Ok(
            store::list(self.inner.catalog.meta(), topic, after, limit, hidden)?
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
        store::get(self.inner.catalog.meta(), id)?
            .filter(|entry| !self.inner.schedule.is_delivered(entry.key))
            .ok_or_else(|| Error::NotFound(format!("no scheduled message {id}")))
    }

    /// The id scheduled under `business_key`.
    pub fn scheduled_id(&self, business_key: &str) -> Result<u64> {
        store::id_for_business_key(self.inner.catalog.meta(), business_key)?
            .filter(|&id| self.scheduled_entry(id).is_ok())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no scheduled message with business key '{business_key}'"
                ))
            })
    }

    /// Cancels a scheduled batch. Once this returns, it will not be delivered; if it is being
    /// handed over already, or a failed hand-over of it is being retried (the failed append
    /// may have stored it), this fails with `NotFound`: it will be delivered.
    pub async fn cancel_scheduled(&self, id: u64) -> Result<ScheduledMessage> {
        let entry = self.scheduled_entry(id)?;
        let due = (entry.due_ms, entry.key);
        let scheduler = &self.inner.schedule;
        let cancelled = scheduler.take_from_window(due);
        if cancelled == Cancelled::TooLate {
            return Err(too_late(id));
        }
        let removal = entry.removal();
        let written = self
            .run_blocking(move |broker| {
                let scheduler = &broker.inner.schedule;
                let _writes = lock(&scheduler.writes);
                let meta = broker.inner.catalog.meta();
                store::write(
                    meta,
                    &[],
                    &[removal],
                    |_| false,
                    scheduler.serial_limit(),
                    true,
                )
            })
            .await;
        let mut window = lock(&scheduler.window);
        match (cancelled, &written) {
            (Cancelled::NotLoaded, _) => window.forget_cancel(due),
            (Cancelled::FromWindow, Err(_)) => window.restore([due]),
            _ => {}
        }
        drop(window);
        written?;
        Ok(describe(&entry))
    }

    /// Moves a scheduled batch to `deliver_at_ms`; fails with `NotFound` if it is being handed
    /// over already.
    pub async fn reschedule(&self, id: u64, deliver_at_ms: i64) -> Result<ScheduledMessage> {
        let now_ms = self.inner.config.clock.now_ms();
        let latest = now_ms.saturating_add(MAX_DELAY.as_millis() as i64);
        if deliver_at_ms > latest {
            return Err(Error::InvalidArgument("too far ahead".into()));
        }
        let entry = self.scheduled_entry(id)?;
        let old = (entry.due_ms, entry.key);
        let scheduler = &self.inner.schedule;
        let cancelled = scheduler.take_from_window(old);
        if cancelled == Cancelled::TooLate {
            return Err(too_late(id));
        }
        let due_ms = deliver_at_ms.max(0);
        let key = scheduler.next_key(due_ms);
        let moved = self
            .run_blocking(move |broker| {
                let scheduler = &broker.inner.schedule;
                let _writes = lock(&scheduler.writes);
                let meta = broker.inner.catalog.meta();
                let moved = store::reschedule(meta, &entry, due_ms, key, scheduler.serial_limit());
                let mut window = lock(&scheduler.window);
                if cancelled == Cancelled::NotLoaded {
                    window.forget_cancel(old);
                }
                match &moved {
                    Ok(moved) => {
                        window.add((moved.due_ms, moved.key));
                    }
                    Err(_) if cancelled == Cancelled::FromWindow => window.restore([old]),
                    Err(_) => {}
                }
                moved
            })
            .await?;
        scheduler.changed.notify_one();
        Ok(describe(&moved))
    }

    /// Scheduled batches not handed over yet.
    pub fn scheduled_count(&self) -> Result<u64> {
        let stored = store::count(self.inner.catalog.meta())?;
        let delivered = lock(&self.inner.schedule.delivered).keys.len() as u64;
        Ok(stored.saturating_sub(delivered))
    }

    /// Publishes every batch due by now to its topic and removes it from the store. Returns
    /// how many batches were handed over. The scheduler task does the same continuously; this
    /// waits for its running pass, so when it returns everything due by now is delivered.
    pub async fn deliver_due(&self) -> Result<usize> {
        let now_ms = self.inner.config.clock.now_ms();
        let mut delivered = 0;
        loop {
            self.run_blocking(move |broker| broker.load_buckets(now_ms))
                .await?;
            let (taken, failed) = self.pass(now_ms).await?;
            delivered += taken - failed;
            if failed > 0 || taken == 0 {
                break;
            }
        }
        self.run_blocking(|broker| broker.remove_delivered(true))
            .await?;
        Ok(delivered)
    }

    /// One step of the scheduler task: starts a load if one is wanted, hands over what is due,
    /// starts writing removals. Returns how long to sleep unless woken.
    pub(super) async fn schedule_step(&self) -> Duration {
        let scheduler = &self.inner.schedule;
        let now_ms = self.inner.config.clock.now_ms();
        let wants_load = lock(&scheduler.window).wants_load(now_ms, LOOKAHEAD_MS, WINDOW_CAP);
        if wants_load && !scheduler.load_running.swap(true, Ordering::AcqRel) {
            let broker = self.clone();
            scheduler.spawn_background(move || {
                if let Err(error) = broker.load_buckets(now_ms) {
                    tracing::warn!(%error, "loading scheduled messages failed; will retry");
                }
                broker
                    .inner
                    .schedule
                    .load_running
                    .store(false, Ordering::Release);
                broker.inner.schedule.changed.notify_one();
            });
        }
        let passed = self.pass(now_ms).await;
        let taken_below = lock(&scheduler.window).taken_below();
        if taken_below > lock(&scheduler.delivered).removed_below
            && !scheduler.cleanup_running.swap(true, Ordering::AcqRel)
        {
            let broker = self.clone();
            scheduler.spawn_background(move || {
                if let Err(error) = broker.remove_delivered(false) {
                    tracing::warn!(%error, "removing delivered scheduled messages failed; will retry");
                }
                broker
                    .inner
                    .schedule
                    .cleanup_running
                    .store(false, Ordering::Release);
            });
        }
        match passed {
            Ok((taken, 0)) if taken >= DUE_PER_PASS => return Duration::ZERO,
            Ok((_, 0)) => {}
            Ok(_) => return Duration::from_millis(MAX_SLEEP_MS as u64),
            Err(error) => {
                tracing::warn!(%error, "delivering scheduled messages failed; will retry");
                return Duration::from_millis(MAX_SLEEP_MS as u64);
            }
        }
        let window = lock(&scheduler.window);
        let load_at = schedule::bucket_start(window.loaded()).saturating_sub(LOOKAHEAD_MS);
        let wake_ms = window
            .next_due()
            .map_or(load_at, |due_ms| due_ms.min(load_at));
        Duration::from_millis(wake_ms.saturating_sub(now_ms).clamp(1, MAX_SLEEP_MS) as u64)
    }

    /// One hand-over pass, run as its own task so that it ends as it would have even if the
    /// caller is aborted (entries taken from the window must be delivered or put back).
    async fn pass(&self, now_ms: i64) -> Result<(usize, usize)> {
        let broker = self.clone();
        let running = self.inner.schedule.passes.clone().read_owned().await;
        tokio::spawn(async move {
            let handed_over = {
                let _pass = broker.inner.schedule.handing_over.lock().await;
                broker.hand_over_due(now_ms).await
            };
            drop(broker);
            drop(running);
            handed_over
        })
        .await
        .map_err(|error| Error::Storage(format!("a hand-over pass failed: {error}")))?
    }

    /// Loads buckets into the window while one is wanted at `now_ms` (blocking).
    fn load_buckets(&self, now_ms: i64) -> Result<()> {
        let scheduler = &self.inner.schedule;
        let _loads = lock(&scheduler.loads);
        loop {
            let from = {
                let mut window = lock(&scheduler.window);
                if !window.wants_load(now_ms, LOOKAHEAD_MS, WINDOW_CAP) {
                    return Ok(());
                }
                window.begin_load()
            };
            let horizon = schedule::bucket_of(now_ms.saturating_add(LOOKAHEAD_MS));
            let (until, entries) = match store::next_bucket(self.inner.catalog.meta(), from) {
                Err(error) => {
                    lock(&scheduler.window).abort_load();
                    return Err(error);
                }
                // Nothing scheduled from `from` on: everything up to the horizon is loaded.
                Ok(None) => (horizon.max(from) + 1, Vec::new()),
                // Nothing before `bucket`, which is beyond the horizon: load up to it only.
                Ok(Some(found)) if found.bucket > horizon => (found.bucket, Vec::new()),
                Ok(Some(found)) => {
                    if !found.undecodable.is_empty()
                        && let Err(error) = self.quarantine(&found.undecodable)
                    {
                        lock(&scheduler.window).abort_load();
                        return Err(error);
                    }
                    (found.bucket + 1, found.due)
                }
            };
            let soon = !entries.is_empty();
            let entries: BTreeSet<schedule::window::Due> = entries.into_iter().collect();
            lock(&scheduler.window).finish_load(until, entries);
            if soon {
                scheduler.changed.notify_one();
            }
        }
    }

    /// Removes the buckets whose entries are all handed over and forgets their delivered
    /// marks (blocking). A running pass has entries out of the window, so this looks between
    /// passes: with `wait`, it waits for a running one to end; without, it leaves the work to
    /// the next call. Passes go on while it writes.
    fn remove_delivered(&self, wait: bool) -> Result<()> {
        let scheduler = &self.inner.schedule;
        let _writes = lock(&scheduler.writes);
        let pass = if wait {
            scheduler.handing_over.blocking_lock()
        } else {
            match scheduler.handing_over.try_lock() {
                Ok(pass) => pass,
                Err(_) => return Ok(()),
            }
        };
        let until = lock(&scheduler.window).taken_below();
        let from = lock(&scheduler.delivered).removed_below;
        // Later passes take only entries at or past `until` (nothing enters the window below
        // it while the write lock is held), so they leave `removed_below` alone until below.
        drop(pass);
        if until <= from {
            return Ok(());
        }
        let meta = self.inner.catalog.meta();
        // Every entry of these buckets was loaded and handed over (or cancelled, and is gone):
        // the window and the write lock held here guarantee it. Their hand-over marks go in
        // the same durable write as the last of them.
        let removed = store::remove_buckets(meta, from, until, true)?;
        lock(&scheduler.marked).retain(|&bucket, _| bucket >= until);
        let mut delivered = lock(&scheduler.delivered);
        for key in removed {
            delivered.keys.remove(&key);
        }
        delivered.removed_below = until;
        Ok(())
    }

    /// Sets aside entries that do not decode (blocking); see the module documentation.
    fn quarantine(&self, keys: &[u64]) -> Result<()> {
        let moved = store::quarantine(self.inner.catalog.meta(), keys)?;
        if moved > 0 {
            tracing::error!(
                entries = moved,
                "scheduled messages that cannot be decoded were set aside in the \
                 schedule_quarantine table and will not be delivered"
            );
        }
        Ok(())
    }

    /// Scheduled entries set aside because they could not be decoded.
    pub fn scheduled_quarantined(&self) -> Result<u64> {
        store::quarantined(self.inner.catalog.meta())
    }

    /// Waits for background loads and removals, then removes the delivered buckets it can;
    /// called on shutdown, after the scheduler task stopped.
    pub(super) async fn finish_schedule(&self) {
        let background: Vec<_> = lock(&self.inner.schedule.background).drain(..).collect();
        for task in background {
            let _ = task.await;
        }
        // A pass of an aborted caller runs to its end and lets go of the broker.
        drop(self.inner.schedule.passes.clone().write_owned().await);
        let broker = self.clone();
        let removed = tokio::task::spawn_blocking(move || broker.remove_delivered(false)).await;
        if let Ok(Err(error)) = removed {
            tracing::warn!(%error, "removing delivered scheduled messages failed; the next start settles them from the logs");
        }
    }

    /// Hands over up to `DUE_PER_PASS` entries due by `now_ms`. Returns how many were taken
    /// and how many of those failed (they go back to the window, to be retried).
    async fn hand_over_due(&self, now_ms: i64) -> Result<(usize, usize)> {
        let scheduler = &self.inner.schedule;
        let due = lock(&scheduler.window).take_due(now_ms, DUE_PER_PASS);
        if due.is_empty() {
            return Ok((0, 0));
        }
        let keys: Vec<u64> = due.iter().map(|&(_, key)| key).collect();
        let entries = match store::get_many(self.inner.catalog.meta(), &keys) {
            Ok(entries) => entries,
            Err(error) => {
                lock(&scheduler.window).restore(due);
                return Err(error);
            }
        };
        let mut found = Vec::with_capacity(due.len());
        let mut undecodable = Vec::new();
        for (due_key, entry) in due.iter().zip(entries) {
            match entry.map(|entry| {
                entry.and_then(|entry| {
                    let batch = Batch::parse(entry.batch.clone(), usize::MAX)?;
                    Ok((entry, batch))
                })
            }) {
                // Gone since it was loaded: cancelled, nothing to deliver.
                None => {}
                Some(Ok((entry, batch))) => found.push((*due_key, entry, batch)),
                Some(Err(_)) => undecodable.push(due_key.1),
            }
        }
        let prepared = if undecodable.is_empty() {
            Ok(())
        } else {
            self.run_blocking(move |broker| broker.quarantine(&undecodable))
                .await
        };
        let prepared = match prepared {
            Ok(()) => self.mark_hand_overs(&found).await,
            Err(error) => Err(error),
        };
        if let Err(error) = prepared {
            lock(&scheduler.window).restore(found.into_iter().map(|(due_key, ..)| due_key));
            return Err(error);
        }
        let mut failed = Vec::new();
        let mut submitted = Vec::with_capacity(found.len());
        for (due_key, entry, batch) in found {
            // Never appended without its durable mark (see the module documentation).
            let handed = if self.is_marked(&entry) {
                self.hand_over(&entry, &batch).await
            } else {
                self.topic_or_create(&entry.topic)
                    .await
                    .and(Err(Error::Storage("no hand-over mark".into())))
            };
            match handed {
                Ok(confirms) => submitted.push((due_key, confirms)),
                Err(error) => {
                    tracing::warn!(id = entry.id, topic = %entry.topic, %error, "scheduled message not delivered; will retry");
                    failed.push(due_key);
                }
            }
        }
        let mut delivered = Vec::with_capacity(submitted.len());
        for (due_key, confirms) in submitted {
            match wait_all(confirms).await {
                Ok(_) => delivered.push(due_key.1),
                Err(error) => {
                    tracing::warn!(key = due_key.1, %error, "scheduled message not confirmed; will retry");
                    failed.push(due_key);
                }
            }
        }
        {
            let mut in_doubt = lock(&scheduler.in_doubt);
            for key in &delivered {
                in_doubt.remove(key);
            }
        }
        {
            let mut marks = lock(&scheduler.delivered);
            if let Some(lowest) = delivered.iter().map(|&key| bucket_of_key(key)).min() {
                marks.removed_below = marks.removed_below.min(lowest);
            }
            marks.keys.extend(delivered);
        }
        let failures = failed.len();
        if failures > 0 {
            // In doubt before they are back in the window, where a cancel could find them.
            let mut window = lock(&scheduler.window);
            lock(&scheduler.in_doubt).extend(failed.iter().map(|&(_, key)| key));
            window.restore(failed);
        }
        Ok((due.len(), failures))
    }

    fn is_marked(&self, entry: &ScheduledEntry) -> bool {
        lock(&self.inner.schedule.marked)
            .get(&bucket_of_key(entry.key))
            .is_some_and(|topics| topics.contains(&entry.topic))
    }

    /// Writes durably the hand-over marks `entries` need and do not have yet: for each (bucket,
    /// topic), the ends of the topic's partitions now, before anything of them is appended. A
    /// topic that cannot be found or created gets no mark (its entries cannot be handed over).
    async fn mark_hand_overs(
        &self,
        entries: &[(schedule::window::Due, ScheduledEntry, Batch)],
    ) -> Result<()> {
        let missing: BTreeSet<(u64, &str)> = entries
            .iter()
            .map(|(_, entry, _)| (bucket_of_key(entry.key), entry.topic.as_str()))
            .filter(|&(bucket, topic)| {
                !lock(&self.inner.schedule.marked)
                    .get(&bucket)
                    .is_some_and(|topics| topics.contains(topic))
            })
            .collect();
        let mut marks = Vec::with_capacity(missing.len());
        for (bucket, topic) in missing {
            if let Ok(found) = self.topic_or_create(topic).await {
                marks.push(HandOverMark {
                    bucket,
                    topic: topic.to_owned(),
                    ends: found.ends(),
                });
            }
        }
        if marks.is_empty() {
            return Ok(());
        }
        let marks = self
            .run_blocking(move |broker| {
                store::put_marks(broker.inner.catalog.meta(), &marks)?;
                Ok(marks)
            })
            .await?;
        let mut marked = lock(&self.inner.schedule.marked);
        for mark in marks {
            marked.entry(mark.bucket).or_default().insert(mark.topic);
        }
        Ok(())
    }

    async fn hand_over(
        &self,
        entry: &ScheduledEntry,
        batch: &Batch,
    ) -> Result<Vec<crate::partition::PendingConfirm>> {
        let mut builder = BatchBuilder::with_capacity(batch.len() + 64);
        for (index, record) in batch.records().enumerate() {
            let record = record?;
            let mut headers: Vec<(&str, &[u8])> = record
                .headers
                .iter()
                .map(|(name, value)| (name.as_str(), &value[..]))
                .collect();
            let id;
            if record.message_id().is_none() {
                id = derived_id(entry.id, index);
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

/// The message id a hand-over gives the `index`-th record of entry `id` when it has none.
fn derived_id(id: u64, index: usize) -> String {
    format!("schedule-{id}-{index}")
}

/// Settles what an earlier run handed over without removing (see the module documentation):
/// reads each marked topic's log from its marks for the ids of the marked buckets' entries.
fn settle_hand_overs(
    meta: &weir_storage::MetaStore,
    topics: &HashMap<String, Arc<Topic>>,
) -> Result<()> {
    let marks = store::marks(meta)?;
    if marks.is_empty() {
        return Ok(());
    }
    let mut by_bucket: BTreeMap<u64, Vec<HandOverMark>> = BTreeMap::new();
    for mark in marks {
        by_bucket.entry(mark.bucket).or_default().push(mark);
    }
    let mut settled = Settled::default();
    for (bucket, marks) in by_bucket {
        let entries = store::bucket_entries(meta, bucket)?;
        for mark in marks {
            // A topic that is gone took nothing of this bucket with it that could repeat.
            if let Some(topic) = topics.get(&mark.topic) {
                let candidates = entries.iter().filter(|entry| entry.topic == mark.topic);
                settle_topic(topic, &mark.ends, candidates, &mut settled)?;
            }
        }
    }
    let (delivered, partly) = (settled.delivered.len(), settled.partly_delivered.len());
    store::settle(meta, settled)?;
    if delivered + partly > 0 {
        tracing::info!(
            delivered,
            partly_delivered = partly,
            "scheduled messages found in their topics after a restart are not handed over again"
        );
    }
    Ok(())
}

/// Finds which records of `entries` (all for `topic`) are in its log from `ends` on, and adds
/// the entries found whole or in part to `settled`.
fn settle_topic<'a>(
    topic: &Topic,
    ends: &[u64],
    entries: impl Iterator<Item = &'a ScheduledEntry>,
    settled: &mut Settled,
) -> Result<()> {
    let mut candidates: Vec<(&ScheduledEntry, Vec<Record>)> = Vec::new();
    // Message id → (candidate, record index).
    let mut wanted: HashMap<Bytes, Vec<(usize, usize)>> = HashMap::new();
    for entry in entries {
        let Ok(batch) = Batch::parse(entry.batch.clone(), usize::MAX) else {
            continue;
        };
        let records = batch
            .records()
            .collect::<std::result::Result<Vec<_>, _>>()?;
        for (index, record) in records.iter().enumerate() {
            let id = record
                .message_id()
                .cloned()
                .unwrap_or_else(|| Bytes::from(derived_id(entry.id, index)));
            wanted
                .entry(id)
                .or_default()
                .push((candidates.len(), index));
        }
        candidates.push((entry, records));
    }
    if candidates.is_empty() {
        return Ok(());
    }
    let mut found: Vec<Vec<bool>> = candidates
        .iter()
        .map(|(_, records)| vec![false; records.len()])
        .collect();
    let ids: HashSet<Bytes> = wanted.keys().cloned().collect();
    for id in topic.find_message_ids(ends, &ids)? {
        for &(candidate, index) in &wanted[&id] {
            found[candidate][index] = true;
        }
    }
    for ((entry, records), found) in candidates.into_iter().zip(found) {
        if found.iter().all(|&found| found) {
            settled.delivered.push(entry.removal());
        } else if found.iter().any(|&found| found) {
            let mut builder = BatchBuilder::new();
            for (index, record) in records.iter().enumerate() {
                if found[index] {
                    continue;
                }
                let mut headers: Vec<(&str, &[u8])> = record
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), &value[..]))
                    .collect();
                // Keeps the id its first hand-over gave it, whatever its new index.
                let id = derived_id(entry.id, index);
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
            settled.partly_delivered.push(ScheduledEntry {
                batch: builder.finish(),
                ..entry.clone()
            });
        }
    }
    Ok(())
}
