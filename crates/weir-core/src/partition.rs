//! One partition: its log's single writer thread (group commit) and a reader for everyone else.
//!
//! Publishers hand batches to the writer over a bounded channel and await a confirm. The writer
//! drains every command queued so far, appends each batch, then flushes or syncs once for all of
//! them (one write and at most one fdatasync for many publishers), and only then completes their
//! confirms. A std thread, not a tokio task: the log is a synchronous library whose sync blocks
//! for a disk round trip, and a dedicated thread keeps that off the async workers.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::JoinHandle;

use tokio::sync::{Notify, mpsc, oneshot};
use weir_batch::{Batch, BatchBuilder};
use weir_storage::io::Directory;
use weir_storage::{LogConfig, LogReader, PartitionLog, RetentionReport};

use crate::clock::Clock;
use crate::config::{Durability, FsyncPolicy, TopicConfig};
use crate::dedup::{Dedup, Verdict};
use crate::error::{Error, Result};
use crate::metrics::{BrokerMetrics, PartitionCounters};

/// Commands queued to one partition's writer. Bounded so publishers feel back-pressure instead
/// of queueing unbounded memory in front of a slow disk.
const COMMAND_QUEUE: usize = 4096;
/// Stop draining the queue after this many bytes, so one group commit stays bounded.
const GROUP_COMMIT_BYTES: usize = 16 << 20;

/// Where a batch landed and what its confirm promises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    pub partition: u32,
    /// First and last offset of the records stored now; `None` if all were duplicates.
    pub appended: Option<(u64, u64)>,
    /// Offsets of earlier copies of the records that were duplicates and not stored again.
    pub duplicates: Vec<u64>,
    pub durability: Durability,
}

/// A queued batch's confirm.
pub struct PendingConfirm {
    confirm: oneshot::Receiver<Result<Confirmed>>,
    health: Arc<Health>,
}

impl PendingConfirm {
    pub async fn wait(self) -> Result<Confirmed> {
        self.confirm.await.map_err(|_| self.health.stopped())?
    }
}

/// Whether the partition's writer is alive. A panic on the writer thread (a bug, or a broken
/// invariant in storage) poisons the partition: from then on it answers every write with
/// [`Error::PartitionPoisoned`] (which clients do not retry) instead of looking shut down.
#[derive(Debug)]
pub(crate) struct Health {
    topic: String,
    partition: u32,
    /// What the panic said; set once.
    panic: OnceLock<String>,
}

impl Health {
    pub fn poisoned(&self) -> Option<Error> {
        self.panic.get().map(|reason| Error::PartitionPoisoned {
            topic: self.topic.clone(),
            partition: self.partition,
            reason: reason.clone(),
        })
    }

    pub fn is_poisoned(&self) -> bool {
        self.panic.get().is_some()
    }

    /// Why the writer no longer answers: poisoned, or closed.
    fn stopped(&self) -> Error {
        self.poisoned().unwrap_or(Error::ShuttingDown)
    }
}

enum Command {
    Append {
        batch: Batch,
        reply: oneshot::Sender<Result<Confirmed>>,
    },
    /// Force unsynced data to disk (the `interval` policy's timer).
    Sync,
    Retention {
        now_ms: i64,
        reply: oneshot::Sender<Result<RetentionReport>>,
    },
    /// Commit what is queued before it, then exit.
    Stop { done: oneshot::Sender<()> },
    /// Panics on the writer thread, for tests of what a panic does.
    #[cfg(test)]
    Panic,
    /// Blocks the writer until the sender is used or dropped, for tests of a stalled disk.
    #[cfg(test)]
    Stall(std::sync::mpsc::Receiver<()>),
}

pub(crate) struct Partition {
    pub id: u32,
    pub reader: LogReader,
    commands: mpsc::Sender<Command>,
    /// Set by the writer when it flushed without syncing; cleared by a sync.
    unsynced: Arc<AtomicBool>,
    pub counters: Arc<PartitionCounters>,
    pub health: Arc<Health>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Partition {
    /// Opens the partition's log in `directory` and starts its writer. `visible` is notified each
    /// time new batches become readable.
    pub fn open(
        directory: Arc<dyn Directory>,
        id: u32,
        topic_name: &str,
        config: &TopicConfig,
        visible: Arc<Notify>,
        clock: Arc<dyn Clock>,
        metrics: Arc<BrokerMetrics>,
    ) -> Result<Partition> {
        let log_config = LogConfig {
            segment_bytes_max: config.segment_bytes,
            retention_age: config.retention_ms.map(std::time::Duration::from_millis),
            retention_bytes: config.retention_bytes,
            ..LogConfig::default()
        };
        let (log, report) = PartitionLog::open(directory, log_config)?;
        if report.truncated_bytes > 0 {
            tracing::warn!(
                topic = topic_name,
                partition = id,
                truncated_bytes = report.truncated_bytes,
                from_offset = ?report.truncated_from_offset,
                "recovery cut a damaged log tail"
            );
        }
        let reader = log.reader();
        let dedup = rebuild_dedup(&reader, config.dedup_window_ms, clock.now_ms())?;
        let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
        let unsynced = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(PartitionCounters::default());
        counters
            .size_bytes
            .store(log.size_bytes(), Ordering::Relaxed);
        let health = Arc::new(Health {
            topic: topic_name.to_owned(),
            partition: id,
            panic: OnceLock::new(),
        });
        let writer = Writer {
            health: health.clone(),
            counters: counters.clone(),
            metrics,
            pending_messages: 0,
            pending_bytes: 0,
            log,
            partition: id,
            dedup,
            policy: config.fsync,
            visible,
            clock,
            unsynced: unsynced.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("weir-writer-{topic_name}-{id}"))
            .spawn(move || writer.run(receiver))
            .map_err(|error| Error::Storage(format!("cannot start writer thread: {error}")))?;
        Ok(Partition {
            id,
            reader,
            commands,
            unsynced,
            counters,
            health,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `batch` for the writer. Waits only for room in the queue; the returned
    /// [`PendingConfirm`] resolves once the batch is durable under the topic's fsync policy.
    /// Submitting several batches before waiting lets one group commit serve them all.
    pub async fn submit(&self, batch: Batch) -> Result<PendingConfirm> {
        let (reply, confirm) = oneshot::channel();
        self.commands
            .send(Command::Append { batch, reply })
            .await
            .map_err(|_| self.health.stopped())?;
        Ok(PendingConfirm {
            confirm,
            health: self.health.clone(),
        })
    }

    /// Makes the writer thread panic (tests of poisoning).
    #[cfg(test)]
    pub async fn inject_panic(&self) {
        let _ = self.commands.send(Command::Panic).await;
    }

    /// Stalls the writer, as a disk that stopped answering would, until the returned sender
    /// is used or dropped.
    #[cfg(test)]
    pub async fn stall(&self) -> std::sync::mpsc::Sender<()> {
        let (release, stalled) = std::sync::mpsc::channel();
        let _ = self.commands.send(Command::Stall(stalled)).await;
        release
    }

    /// Asks the writer to sync if it holds unsynced data (for `interval` topics).
    pub fn sync_if_needed(&self) {
        if self.unsynced.load(Ordering::Relaxed) {
            // A full queue means the writer is busy and will get there; dropping is fine.
            let _ = self.commands.try_send(Command::Sync);
        }
    }

    pub async fn enforce_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let (reply, report) = oneshot::channel();
        self.commands
            .send(Command::Retention { now_ms, reply })
            .await
            .map_err(|_| self.health.stopped())?;
        report.await.map_err(|_| self.health.stopped())?
    }

    /// Stops the writer after it has committed everything queued before this call, and waits
    /// for it. Later appends fail with `ShuttingDown`.
    pub async fn close(&self) {
        // Clones of our sender may outlive this call (publishers mid-send), so the writer
        // cannot wait for the channel to close: tell it to stop instead.
        let (done, stopped) = oneshot::channel();
        if self.commands.send(Command::Stop { done }).await.is_ok() {
            let _ = stopped.await;
        }
        let thread = self
            .thread
            .lock()
            .expect("partition thread lock is never poisoned: no code panics while holding it")
            .take();
        if let Some(thread) = thread {
            // The writer has replied to Stop and is returning: this join does not block long.
            let _ = thread.join();
        }
    }
}

type Confirms = Vec<(Result<Confirmed>, oneshot::Sender<Result<Confirmed>>)>;

struct Writer {
    health: Arc<Health>,
    log: PartitionLog,
    partition: u32,
    dedup: Dedup,
    policy: FsyncPolicy,
    visible: Arc<Notify>,
    clock: Arc<dyn Clock>,
    unsynced: Arc<AtomicBool>,
    counters: Arc<PartitionCounters>,
    metrics: Arc<BrokerMetrics>,
    /// Appended since the last commit, counted once the commit succeeds.
    pending_messages: u64,
    pending_bytes: u64,
}

impl Writer {
    fn run(mut self, mut receiver: mpsc::Receiver<Command>) {
        let mut confirms = Confirms::new();
        let served = std::panic::catch_unwind(AssertUnwindSafe(|| {
            self.serve(&mut receiver, &mut confirms)
        }));
        let Err(panic) = served else { return };
        let reason = panic
            .downcast_ref::<&str>()
            .map(|text| (*text).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(
            topic = %self.health.topic,
            partition = self.partition,
            %reason,
            "partition writer panicked: the partition refuses writes until the broker restarts"
        );
        let _ = self.health.panic.set(reason);
        let error = self.health.stopped();
        // The log's state is unknown after a panic: nothing of this group commit is confirmed,
        // and every later command gets the partition's own error until it is closed.
        for (_, reply) in confirms.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
        while let Some(command) = receiver.blocking_recv() {
            match command {
                Command::Append { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Retention { reply, .. } => {
                    let _ = reply.send(Err(error.clone()));
                }
                Command::Stop { done } => {
                    let _ = done.send(());
                    return;
                }
                Command::Sync => {}
                #[cfg(test)]
                Command::Panic | Command::Stall(_) => {}
            }
        }
    }

    /// Serves commands until stopped, or until every sender is gone.
    fn serve(&mut self, receiver: &mut mpsc::Receiver<Command>, confirms: &mut Confirms) {
        while let Some(first) = receiver.blocking_recv() {
            let mut sync_requested = false;
            let mut stop = None;
            let mut queued_bytes = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { batch, reply } => {
                        queued_bytes += batch.len();
                        // Held before appending, so that a panic in `append` still answers it.
                        confirms.push((Err(Error::ShuttingDown), reply));
                        let result = self.append(batch);
                        if let Some((slot, _)) = confirms.last_mut() {
                            *slot = result;
                        }
                    }
                    #[cfg(test)]
                    Command::Panic => panic!("injected writer panic"),
                    #[cfg(test)]
                    Command::Stall(stalled) => {
                        let _ = stalled.recv();
                    }
                    Command::Sync => sync_requested = true,
                    Command::Stop { done } => {
                        stop = Some(done);
                        break;
                    }
                    Command::Retention { now_ms, reply } => {
                        let report = self.log.enforce_retention(now_ms).map_err(Error::from);
                        self.counters
                            .size_bytes
                            .store(self.log.size_bytes(), Ordering::Relaxed);
                        let _ = reply.send(report);
                    }
                }
                if queued_bytes < GROUP_COMMIT_BYTES {
                    next = receiver.try_recv().ok();
                }
            }
            let must_sync = sync_requested || stop.is_some() || self.policy == FsyncPolicy::Always;
            self.commit(confirms, must_sync);
            if let Some(done) = stop {
                let _ = done.send(());
                return;
            }
        }
        // Every sender dropped: the partition is gone. Make what was written durable.
        if let Err(error) = self.log.sync() {
            tracing::error!(partition = self.partition, %error, "final sync failed");
        }
    }

    /// Appends `batch` unless dedup says otherwise. Not yet flushed.
    fn append(&mut self, batch: Batch) -> Result<Confirmed> {
        let now_ms = self.clock.now_ms();
        let verdict = self.dedup.check(&batch, self.log.next_offset(), now_ms)?;
        // For a batch partly or wholly made of earlier copies: which records are new.
        let mut kept_records = None;
        let (stored, duplicates) = match verdict {
            Verdict::Append => (Some(batch.clone()), Vec::new()),
            Verdict::Retry(duplicates) => (None, duplicates),
            Verdict::Duplicate(duplicates) => {
                kept_records = Some(Vec::new());
                (None, duplicates)
            }
            Verdict::Partial { keep, duplicates } => {
                let mut builder = BatchBuilder::new();
                kept_records = Some(keep.clone());
                for (record, kept) in batch.records().zip(keep) {
                    let record = record?;
                    if kept {
                        let headers: Vec<(&str, &[u8])> = record
                            .headers
                            .iter()
                            .map(|(name, value)| (name.as_str(), &value[..]))
                            .collect();
                        builder.push(
                            record.timestamp_ms,
                            record.key.as_deref(),
                            &headers,
                            &record.value,
                        );
                    }
                }
                (
                    Some(Batch::parse(builder.finish(), usize::MAX)?),
                    duplicates,
                )
            }
        };
        let appended = match stored {
            Some(stored) => {
                let appended = self.log.append(&stored, now_ms)?;
                if kept_records.is_some() {
                    self.dedup.record_ids(&stored, appended.base_offset, now_ms);
                } else {
                    self.dedup.record(&stored, appended.base_offset, now_ms);
                }
                self.pending_messages += u64::from(stored.record_count());
                self.pending_bytes += stored.len() as u64;
                Some((appended.base_offset, appended.last_offset))
            }
            None => None,
        };
        if let Some(kept_records) = kept_records
            && batch.producer().is_some()
        {
            // Place every record of the producer's batch: new ones where they were just
            // stored, the others at their earlier copies, in the batch's order.
            let mut next_new = appended.map_or(0, |(base_offset, _)| base_offset);
            let mut earlier = duplicates.iter();
            let offsets = kept_records
                .iter()
                .map(|&kept| {
                    if kept {
                        next_new += 1;
                        next_new - 1
                    } else {
                        earlier.next().copied().unwrap_or(0)
                    }
                })
                .collect::<Vec<u64>>();
            let offsets = if kept_records.is_empty() {
                duplicates.clone()
            } else {
                offsets
            };
            self.dedup.record_listed(&batch, offsets, now_ms);
        }
        Ok(Confirmed {
            partition: self.partition,
            appended,
            duplicates,
            durability: Durability::Os,
        })
    }

    /// Flushes or syncs everything appended since the last commit, then completes confirms.
    fn commit(&mut self, confirms: &mut Confirms, sync: bool) {
        let appended = confirms.iter().any(|(result, _)| result.is_ok());
        let outcome = if sync {
            // Only a sync with something to write is timed: an idle pass (retention wakes the
            // writer every second) syncs nothing, and its ~1 µs would pass for the fsync
            // latency (issue 10, defect 10).
            let dirty = appended || self.unsynced.load(Ordering::Relaxed);
            let started = std::time::Instant::now();
            let synced = self.log.sync();
            if dirty {
                self.metrics
                    .record_fsync_us(started.elapsed().as_micros() as u64);
            }
            synced.map(|()| Durability::Fsynced)
        } else if appended {
            self.log.flush().map(|()| Durability::Os)
        } else {
            Ok(Durability::Os)
        };
        match outcome {
            Ok(durability) => {
                self.dedup.commit();
                self.counters
                    .add_published(self.pending_messages, self.pending_bytes);
                self.counters
                    .size_bytes
                    .store(self.log.size_bytes(), Ordering::Relaxed);
                // A sync leaves nothing unsynced; a flush leaves what it appended, and a pass
                // that appended nothing leaves earlier unsynced data waiting for its sync.
                match durability {
                    Durability::Fsynced => self.unsynced.store(false, Ordering::Relaxed),
                    Durability::Os if appended => self.unsynced.store(true, Ordering::Relaxed),
                    Durability::Os => {}
                }
                for (result, reply) in confirms.drain(..) {
                    let _ = reply.send(result.map(|confirmed| Confirmed {
                        durability,
                        ..confirmed
                    }));
                }
            }
            Err(error) => {
                tracing::error!(partition = self.partition, %error, "log commit failed");
                // The log dropped these batches and reuses their offsets: so does dedup.
                self.dedup.rollback();
                let error = Error::from(error);
                for (result, reply) in confirms.drain(..) {
                    let _ = reply.send(result.and(Err(error.clone())));
                }
            }
        }
        self.pending_messages = 0;
        self.pending_bytes = 0;
        if appended {
            self.visible.notify_waiters();
        }
    }
}

/// Replays the last `window_ms` of the log into a fresh dedup state.
fn rebuild_dedup(reader: &LogReader, window_ms: u64, now_ms: i64) -> Result<Dedup> {
    let mut dedup = Dedup::new(window_ms);
    let start = reader
        .offset_for_timestamp(now_ms.saturating_sub(window_ms as i64))?
        .unwrap_or_else(|| reader.end_offset());
    let mut next = start;
    loop {
        let batches = reader.read(next, 1 << 20)?;
        let Some(last) = batches.last() else { break };
        next = last.next_offset();
        for batch in &batches {
            dedup.record(batch, batch.base_offset(), batch.max_timestamp_ms());
        }
        // Read back from the log: stored already.
        dedup.commit();
    }
    Ok(dedup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use weir_storage::io::sim::SimDirectory;

    fn writer_on(directory: Arc<SimDirectory>) -> Writer {
        let (log, _) = PartitionLog::open(directory, LogConfig::default()).unwrap();
        Writer {
            health: Arc::new(Health {
                topic: "t".into(),
                partition: 0,
                panic: OnceLock::new(),
            }),
            dedup: Dedup::new(60_000),
            log,
            partition: 0,
            policy: FsyncPolicy::Always,
            visible: Arc::new(Notify::new()),
            clock: Arc::new(ManualClock::new(1_000)),
            unsynced: Arc::new(AtomicBool::new(false)),
            counters: Arc::new(PartitionCounters::default()),
            metrics: Arc::new(BrokerMetrics::default()),
            pending_messages: 0,
            pending_bytes: 0,
        }
    }

    fn with_id(id: &str, producer: Option<(u64, u32)>) -> Batch {
        let mut builder = BatchBuilder::new();
        if let Some((producer_id, sequence)) = producer {
            builder.producer(producer_id, sequence);
        }
        builder.push(1, None, &[("weir.id", id.as_bytes())], b"value");
        Batch::parse(builder.finish(), usize::MAX).unwrap()
    }

    /// Appends and commits `batches` as one group commit; the confirms as publishers see them.
    fn group_commit(writer: &mut Writer, batches: &[Batch]) -> Vec<Result<Confirmed>> {
        let mut confirms = Vec::new();
        let mut receivers = Vec::new();
        for batch in batches {
            let (reply, receiver) = oneshot::channel();
            confirms.push((writer.append(batch.clone()), reply));
            receivers.push(receiver);
        }
        writer.commit(&mut confirms, true);
        receivers
            .into_iter()
            .map(|mut receiver| receiver.try_recv().unwrap())
            .collect()
    }

    /// Issue 10 #11: a write that fails makes the log reuse the offsets; dedup must not
    /// remember the ids and sequences of the messages that were never stored, or their retry
    /// is "confirmed" as a duplicate of nothing.
    #[test]
    fn a_retry_after_a_failed_commit_is_stored_not_confirmed_as_a_duplicate() {
        let directory = SimDirectory::new(3);
        let mut writer = writer_on(directory.clone());
        let first = group_commit(&mut writer, &[with_id("m-0", Some((9, 0)))]);
        assert_eq!(first[0].as_ref().unwrap().appended, Some((0, 0)));

        directory.fail_write_with_storage_full(directory.write_count());
        let batches = [with_id("m-1", Some((9, 1))), with_id("m-2", None)];
        let failed = group_commit(&mut writer, &batches);
        assert!(
            failed
                .iter()
                .all(|confirm| matches!(confirm, Err(Error::StorageFull)))
        );

        let retried = group_commit(&mut writer, &batches);
        for (confirm, offset) in retried.iter().zip([1, 2]) {
            let confirm = confirm.as_ref().unwrap();
            assert_eq!(confirm.appended, Some((offset, offset)), "{confirm:?}");
            assert!(confirm.duplicates.is_empty());
        }
        // And what was committed before the failure is still recognised.
        let again = group_commit(&mut writer, &[with_id("m-0", None)]);
        assert_eq!(again[0].as_ref().unwrap().duplicates, vec![0]);
        let records = read_all(&writer.log.reader());
        assert_eq!(records, vec!["m-0", "m-1", "m-2"]);
    }

    /// The same when the failure is the fdatasync (the log is poisoned; a reopened log, like a
    /// restarted broker, rebuilds dedup from what is really stored).
    #[test]
    fn a_failed_sync_leaves_no_dedup_state_for_the_lost_batches() {
        let directory = SimDirectory::new(4);
        let mut writer = writer_on(directory.clone());
        group_commit(&mut writer, &[with_id("m-0", None)]);
        directory.fail_operation(directory.operation_count() + 1);
        let failed = group_commit(&mut writer, &[with_id("m-1", None)]);
        assert!(failed[0].is_err());
        assert!(
            matches!(
                writer.dedup.check(&with_id("m-1", None), 1, 1_000).unwrap(),
                crate::dedup::Verdict::Append
            ),
            "m-1 was not stored, so it is not a duplicate"
        );
    }

    /// Issue 10 #14: a panic on the writer thread must not look like a shutdown (which
    /// clients retry forever): the partition answers with its own, final error.
    #[tokio::test]
    async fn a_writer_panic_poisons_the_partition_with_its_own_error() {
        let partition = Partition::open(
            SimDirectory::new(5),
            2,
            "orders",
            &TopicConfig::default(),
            Arc::new(Notify::new()),
            Arc::new(ManualClock::new(0)),
            Arc::new(BrokerMetrics::default()),
        )
        .unwrap();
        let before = partition.submit(with_id("m-0", None)).await.unwrap();
        assert!(before.wait().await.is_ok());
        partition.inject_panic().await;
        for _ in 0..3 {
            let error = match partition.submit(with_id("m-1", None)).await {
                Ok(pending) => pending.wait().await.unwrap_err(),
                Err(error) => error,
            };
            assert!(
                matches!(
                    &error,
                    Error::PartitionPoisoned { topic, partition: 2, reason }
                        if topic == "orders" && reason.contains("injected writer panic")
                ),
                "{error:?}"
            );
        }
        assert!(partition.health.is_poisoned());
        assert!(matches!(
            partition.enforce_retention(0).await,
            Err(Error::PartitionPoisoned { .. })
        ));
        partition.close().await;
    }

    fn read_all(reader: &LogReader) -> Vec<String> {
        reader
            .read(0, usize::MAX)
            .unwrap()
            .iter()
            .flat_map(|batch| batch.records().map(|record| record.unwrap()))
            .map(|record| String::from_utf8(record.message_id().unwrap().to_vec()).unwrap())
            .collect()
    }
}
