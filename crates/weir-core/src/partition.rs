//! One partition: its log's single writer thread (group commit) and a reader for everyone else.
//!
//! Publishers hand batches to the writer over a bounded channel and await a confirm. The writer
//! drains every command queued so far, appends each batch, then flushes or syncs once for all of
//! them (one write and at most one fdatasync for many publishers), and only then completes their
//! confirms. A std thread, not a tokio task: the log is a synchronous library whose sync blocks
//! for a disk round trip, and a dedicated thread keeps that off the async workers.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
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
pub struct PendingConfirm(oneshot::Receiver<Result<Confirmed>>);

impl PendingConfirm {
    pub async fn wait(self) -> Result<Confirmed> {
        self.0.await.map_err(|_| Error::ShuttingDown)?
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
}

pub(crate) struct Partition {
    pub id: u32,
    pub reader: LogReader,
    commands: mpsc::Sender<Command>,
    /// Set by the writer when it flushed without syncing; cleared by a sync.
    unsynced: Arc<AtomicBool>,
    pub counters: Arc<PartitionCounters>,
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
        let writer = Writer {
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
            .map_err(|_| Error::ShuttingDown)?;
        Ok(PendingConfirm(confirm))
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
            .map_err(|_| Error::ShuttingDown)?;
        report.await.map_err(|_| Error::ShuttingDown)?
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

struct Writer {
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
        let mut confirms: Vec<(Result<Confirmed>, oneshot::Sender<Result<Confirmed>>)> = Vec::new();
        while let Some(first) = receiver.blocking_recv() {
            let mut sync_requested = false;
            let mut stop = None;
            let mut queued_bytes = 0;
            let mut next = Some(first);
            while let Some(command) = next.take() {
                match command {
                    Command::Append { batch, reply } => {
                        queued_bytes += batch.len();
                        let result = self.append(batch);
                        confirms.push((result, reply));
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
            self.commit(&mut confirms, must_sync);
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
    fn commit(
        &mut self,
        confirms: &mut Vec<(Result<Confirmed>, oneshot::Sender<Result<Confirmed>>)>,
        sync: bool,
    ) {
        let appended = confirms.iter().any(|(result, _)| result.is_ok());
        let outcome = if sync {
            let started = std::time::Instant::now();
            let synced = self.log.sync();
            self.metrics
                .record_fsync_us(started.elapsed().as_micros() as u64);
            synced.map(|()| Durability::Fsynced)
        } else if appended {
            self.log.flush().map(|()| Durability::Os)
        } else {
            Ok(Durability::Os)
        };
        match outcome {
            Ok(durability) => {
                self.counters
                    .add_published(self.pending_messages, self.pending_bytes);
                self.counters
                    .size_bytes
                    .store(self.log.size_bytes(), Ordering::Relaxed);
                self.unsynced
                    .store(durability == Durability::Os && appended, Ordering::Relaxed);
                for (result, reply) in confirms.drain(..) {
                    let _ = reply.send(result.map(|confirmed| Confirmed {
                        durability,
                        ..confirmed
                    }));
                }
            }
            Err(error) => {
                tracing::error!(partition = self.partition, %error, "log commit failed");
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
    }
    Ok(dedup)
}
