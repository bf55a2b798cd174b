//! Transactional messages (RocketMQ's half messages with check-back).
//!
//! A producer begins a transaction in a producer group, sends half messages (stored durably in
//! the metadata store, invisible to every subscription), runs its local transaction, then
//! commits or rolls back. A transaction left undecided past its timeout is checked with a live
//! producer of the group (one that registered a [`TransactionChecker`]), every check interval,
//! up to `max_checks` times; then the configured outcome settles it, with a log line.
//!
//! Commit is crash-safe and applied once: the decision is stored durably first, with a *commit
//! mark* per target topic (the ends of its partitions then, before anything of the commit is
//! appended); then the messages are appended, each with a message id derived from the
//! transaction; then the transaction is forgotten. A commit redone (its append failed, or a
//! crash came first) reads each topic's log from its mark for those ids and appends only the
//! messages not found — whatever the topic's dedup window (an append that failed after it was
//! written is found once a restart recovers it). All half messages of
//! one partition are appended as one batch, so within a partition a consumer sees all of a
//! transaction or none of it; across partitions the parts are appended together in one commit
//! round (see docs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weir_batch::{Batch, BatchBuilder, MESSAGE_ID_HEADER};
use weir_storage::MetaOp;

use super::{Broker, Confirm, lock};
use crate::config::UnresolvedOutcome;
use crate::error::{Error, Result};
use crate::topic::wait_all;

const TRANSACTIONS: &str = "transactions";
const TRANSACTION_MESSAGES: &str = "transaction_messages";
/// Check requests queued per checker; a full queue skips that checker this round.
const CHECK_QUEUE: usize = 1024;

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionState {
    Open,
    /// Decided; the messages are being appended (redone after a crash).
    Committing,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct TransactionRecord {
    producer_group: String,
    state: TransactionState,
    created_ms: i64,
    timeout_ms: u64,
    checks: u32,
    last_check_ms: i64,
    parts: u32,
    /// Set with `Committing`: per target topic, the ends of its partitions before anything
    /// of the commit was appended (see the module documentation).
    #[serde(default)]
    commit_marks: BTreeMap<String, Vec<u64>>,
}

/// A transaction as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionInfo {
    pub id: u64,
    pub producer_group: String,
    pub state: TransactionState,
    pub created_ms: i64,
    /// Undecided this long, it is checked back.
    pub timeout_ms: u64,
    pub checks: u32,
    /// Number of half-message batches sent.
    pub parts: u32,
}

/// A producer's answer to a check, or an operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Commit,
    Rollback,
    /// Not known yet: ask again later.
    Unknown,
}

/// Receives the broker's questions about undecided transactions of one producer group.
/// Answer each with `Broker::commit_transaction` / `rollback_transaction` (or not at all, for
/// "unknown"). Dropping it unregisters the checker.
pub struct TransactionChecker {
    broker: Broker,
    group: String,
    id: u64,
    requests: mpsc::Receiver<u64>,
}

impl TransactionChecker {
    /// The next transaction id the broker asks about.
    pub async fn next(&mut self) -> Option<u64> {
        self.requests.recv().await
    }

    pub fn try_next(&mut self) -> Option<u64> {
        self.requests.try_recv().ok()
    }
}

impl Drop for TransactionChecker {
    fn drop(&mut self) {
        if let Some(checkers) = lock(&self.broker.inner.checkers).get_mut(&self.group) {
            checkers.retain(|(id, _)| *id != self.id);
        }
    }
}

/// The lock of each transaction someone is working on; an entry lives while it is held or
/// awaited.
#[derive(Default)]
pub(super) struct TransactionLocks(Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>);

/// Holds one transaction's lock; removes its entry when nobody else wants it.
struct TransactionGuard<'a> {
    locks: &'a TransactionLocks,
    id: u64,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl TransactionLocks {
    async fn lock(&self, id: u64) -> TransactionGuard<'_> {
        let mutex = Arc::clone(lock(&self.0).entry(id).or_default());
        TransactionGuard {
            locks: self,
            id,
            guard: Some(mutex.lock_owned().await),
        }
    }
}

impl Drop for TransactionGuard<'_> {
    fn drop(&mut self) {
        let mut locks = lock(&self.locks.0);
        self.guard = None;
        // Only the map holds it now: no one waits for this transaction.
        if locks
            .get(&self.id)
            .is_some_and(|mutex| Arc::strong_count(mutex) == 1)
        {
            locks.remove(&self.id);
        }
    }
}

/// A commit's messages per (topic, partition choice), each with its message id.
type CommitMessages = BTreeMap<(String, Option<u32>), Vec<(Bytes, weir_batch::Record)>>;

fn transaction_key(id: u64) -> Vec<u8> {
    id.to_be_bytes().to_vec()
}

fn part_key(id: u64, sequence: u32) -> Vec<u8> {
    let mut key = id.to_be_bytes().to_vec();
    key.extend_from_slice(&sequence.to_be_bytes());
    key
}

fn encode_part(topic: &str, partition: Option<u32>, batch: &[u8]) -> Vec<u8> {
    let mut value = BytesMut::with_capacity(6 + topic.len() + batch.len());
    value.put_u16_le(topic.len() as u16);
    value.put_slice(topic.as_bytes());
    value.put_u32_le(partition.unwrap_or(u32::MAX));
    value.put_slice(batch);
    value.to_vec()
}

fn decode_part(value: &[u8]) -> Result<(String, Option<u32>, Bytes)> {
    let corrupt = || Error::Storage("unreadable transaction message".into());
    let mut cursor = value;
    if cursor.len() < 2 {
        return Err(corrupt());
    }
    let length = cursor.get_u16_le() as usize;
    if cursor.len() < length + 4 {
        return Err(corrupt());
    }
    let topic = std::str::from_utf8(&cursor[..length])
        .map_err(|_| corrupt())?
        .to_owned();
    cursor.advance(length);
    let partition = Some(cursor.get_u32_le()).filter(|&partition| partition != u32::MAX);
    Ok((topic, partition, Bytes::copy_from_slice(cursor)))
}

fn decode_record(bytes: &[u8]) -> Result<TransactionRecord> {
    serde_json::from_slice(bytes)
        .map_err(|error| Error::Storage(format!("unreadable transaction: {error}")))
}

fn encode_record(record: &TransactionRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("a transaction record is plain data")
}

impl Broker {
    fn transaction_record(&self, id: u64) -> Result<TransactionRecord> {
        let bytes = self
            .inner
            .catalog
            .meta()
            .get(TRANSACTIONS, &transaction_key(id))?
            .ok_or_else(|| Error::NotFound(format!("no open transaction {id}")))?;
        decode_record(&bytes)
    }

    fn save_transaction(&self, id: u64, record: &TransactionRecord, durable: bool) -> Result<()> {
        let op = MetaOp::Put {
            table: TRANSACTIONS,
            key: transaction_key(id),
            value: encode_record(record),
        };
        Ok(self.inner.catalog.meta().write(&[op], durable)?)
    }

    /// A durable metadata write (an fsync), on a blocking thread.
    async fn write_durably(&self, ops: Vec<MetaOp>) -> Result<()> {
        self.run_blocking(move |broker| Ok(broker.inner.catalog.meta().write(&ops, true)?))
            .await
    }

    async fn save_transaction_durably(&self, id: u64, record: &TransactionRecord) -> Result<()> {
        let op = MetaOp::Put {
            table: TRANSACTIONS,
            key: transaction_key(id),
            value: encode_record(record),
        };
        self.write_durably(vec![op]).await
    }

    /// Starts a transaction of `producer_group`; `timeout` defaults to the broker's setting.
    pub fn begin_transaction(
        &self,
        producer_group: &str,
        timeout: Option<Duration>,
    ) -> Result<u64> {
        self.check_open()?;
        crate::catalog::valid_name("producer group", producer_group)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let record = TransactionRecord {
            producer_group: producer_group.to_owned(),
            state: TransactionState::Open,
            created_ms: self.inner.config.clock.now_ms(),
            timeout_ms: match timeout {
                Some(timeout) => crate::config::duration_ms("transaction timeout", timeout)?,
                None => self.inner.config.transactions.timeout_ms,
            },
            checks: 0,
            last_check_ms: 0,
            parts: 0,
            commit_marks: BTreeMap::new(),
        };
        self.save_transaction(id, &record, false)?;
        Ok(id)
    }

    /// Stores half messages: durable when this returns, invisible until commit.
    pub async fn send_half(
        &self,
        transaction: u64,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
    ) -> Result<()> {
        self.check_open()?;
        self.parse_published(batch.clone())?;
        let target = self.topic_or_create(topic).await?;
        if let Some(partition) = partition {
            target.partition(partition)?;
        }
        let _serial = self.inner.transaction_locks.lock(transaction).await;
        let mut record = self.transaction_record(transaction)?;
        if record.state != TransactionState::Open {
            return Err(Error::InvalidArgument(format!(
                "transaction {transaction} is already decided"
            )));
        }
        let ops = vec![
            MetaOp::Put {
                table: TRANSACTION_MESSAGES,
                key: part_key(transaction, record.parts),
                value: encode_part(topic, partition, &batch),
            },
            MetaOp::Put {
                table: TRANSACTIONS,
                key: transaction_key(transaction),
                value: encode_record(&TransactionRecord {
                    parts: record.parts + 1,
                    ..record.clone()
                }),
            },
        ];
        self.write_durably(ops).await?;
        record.parts += 1;
        Ok(())
    }

    /// Makes every half message visible. Returns where they landed, per topic.
    pub async fn commit_transaction(&self, transaction: u64) -> Result<Vec<(String, Confirm)>> {
        let _serial = self.inner.transaction_locks.lock(transaction).await;
        let mut record = self.transaction_record(transaction)?;
        let redo = record.state == TransactionState::Committing;
        if !redo {
            self.decide_commit(transaction, &mut record).await?;
        }
        self.finish_commit(transaction, &record, redo).await
    }

    /// Stores the decision to commit durably, with the commit marks of its target topics.
    /// Called with the lock held.
    async fn decide_commit(&self, transaction: u64, record: &mut TransactionRecord) -> Result<()> {
        let mut marks = BTreeMap::new();
        for (topic_name, _, _) in self.transaction_parts(transaction)? {
            if let std::collections::btree_map::Entry::Vacant(mark) = marks.entry(topic_name) {
                let topic = self.topic_or_create(mark.key()).await?;
                mark.insert(topic.ends());
            }
        }
        record.state = TransactionState::Committing;
        record.commit_marks = marks;
        self.save_transaction_durably(transaction, record).await
    }

    /// The half messages of a transaction: (topic, partition choice, batch), in sending order.
    fn transaction_parts(&self, transaction: u64) -> Result<Vec<(String, Option<u32>, Bytes)>> {
        let meta = self.inner.catalog.meta();
        meta.scan(TRANSACTION_MESSAGES, &transaction_key(transaction))?
            .iter()
            .map(|(_, value)| decode_part(value))
            .collect()
    }

    /// Appends a decided transaction's messages and forgets it. Called with the lock held.
    /// `redo`: an earlier try may have appended some of them; those are not appended again.
    async fn finish_commit(
        &self,
        transaction: u64,
        record: &TransactionRecord,
        redo: bool,
    ) -> Result<Vec<(String, Confirm)>> {
        let parts = self.transaction_parts(transaction)?;
        // Per (topic, partition choice), each message with its id.
        let mut messages: CommitMessages = BTreeMap::new();
        for (sequence, (topic, partition, bytes)) in parts.iter().enumerate() {
            let batch = Batch::parse(bytes.clone(), usize::MAX)?;
            let target = messages.entry((topic.clone(), *partition)).or_default();
            for (index, record) in batch.records().enumerate() {
                let record = record?;
                let id = record.message_id().cloned().unwrap_or_else(|| {
                    Bytes::from(format!("transaction-{transaction}-{sequence}-{index}"))
                });
                target.push((id, record));
            }
        }
        let appended = if redo {
            self.appended_before(record, &messages).await?
        } else {
            HashMap::new()
        };
        let mut pending = Vec::new();
        for ((topic_name, partition), records) in messages {
            // One batch per (topic, partition choice): a partition sees the transaction at once.
            let mut builder = BatchBuilder::new();
            let found = appended.get(&topic_name);
            for (id, record) in &records {
                if found.is_some_and(|found| found.contains(id)) {
                    continue;
                }
                let mut headers: Vec<(&str, &[u8])> = record
                    .headers
                    .iter()
                    .map(|(name, value)| (name.as_str(), &value[..]))
                    .collect();
                if record.message_id().is_none() {
                    headers.push((MESSAGE_ID_HEADER, &id[..]));
                }
                builder.push(
                    record.timestamp_ms,
                    record.key.as_deref(),
                    &headers,
                    &record.value,
                );
            }
            if builder.is_empty() {
                continue;
            }
            let topic = self.topic_or_create(&topic_name).await?;
            let batch = Batch::parse(builder.finish(), usize::MAX)?;
            pending.push((topic_name, topic.submit(partition, batch).await?));
        }
        let mut confirms = Vec::new();
        for (topic_name, parts) in pending {
            confirms.push((topic_name, wait_all(parts).await?.into()));
        }
        self.forget_transaction(transaction, parts.len()).await?;
        tracing::info!(transaction, "transaction committed");
        Ok(confirms)
    }

    /// Per topic, the ids of `messages` an earlier try of the commit appended: read from its
    /// commit mark on, off the async workers. A topic without a mark (a commit decided by an
    /// older version) is not read; its dedup window is all there is.
    async fn appended_before(
        &self,
        record: &TransactionRecord,
        messages: &CommitMessages,
    ) -> Result<HashMap<String, HashSet<Bytes>>> {
        let mut wanted: HashMap<String, HashSet<Bytes>> = HashMap::new();
        for ((topic_name, _), records) in messages {
            if record.commit_marks.contains_key(topic_name) {
                let ids = records.iter().map(|(id, _)| id.clone());
                wanted.entry(topic_name.clone()).or_default().extend(ids);
            }
        }
        let mut searches = Vec::with_capacity(wanted.len());
        for (topic_name, ids) in wanted {
            // A topic deleted since has nothing of the commit that could repeat.
            if let Ok(topic) = self.find_topic(&topic_name) {
                let marks = record.commit_marks[&topic_name].clone();
                searches.push((topic_name, topic, marks, ids));
            }
        }
        self.run_blocking(move |_| {
            searches
                .into_iter()
                .map(|(topic_name, topic, marks, ids)| {
                    Ok((topic_name, topic.find_message_ids(&marks, &ids)?))
                })
                .collect()
        })
        .await
    }

    async fn forget_transaction(&self, transaction: u64, parts: usize) -> Result<()> {
        let mut ops = vec![MetaOp::Delete {
            table: TRANSACTIONS,
            key: transaction_key(transaction),
        }];
        ops.extend((0..parts as u32).map(|sequence| MetaOp::Delete {
            table: TRANSACTION_MESSAGES,
            key: part_key(transaction, sequence),
        }));
        self.write_durably(ops).await
    }

    /// Discards every half message of the transaction.
    pub async fn rollback_transaction(&self, transaction: u64) -> Result<()> {
        let _serial = self.inner.transaction_locks.lock(transaction).await;
        let record = self.transaction_record(transaction)?;
        if record.state == TransactionState::Committing {
            return Err(Error::InvalidArgument(format!(
                "transaction {transaction} is already committed"
            )));
        }
        self.forget_transaction(transaction, record.parts as usize)
            .await?;
        tracing::info!(transaction, "transaction rolled back");
        Ok(())
    }

    /// Applies a producer's answer to a check (or an operator's decision).
    pub async fn resolve_transaction(&self, transaction: u64, decision: Decision) -> Result<()> {
        match decision {
            Decision::Commit => self.commit_transaction(transaction).await.map(|_| ()),
            Decision::Rollback => self.rollback_transaction(transaction).await,
            Decision::Unknown => Ok(()),
        }
    }

    /// Undecided transactions, oldest first.
    pub fn transactions(&self) -> Result<Vec<TransactionInfo>> {
        self.inner
            .catalog
            .meta()
            .scan(TRANSACTIONS, b"")?
            .into_iter()
            .map(|(key, value)| {
                let id = u64::from_be_bytes(
                    key.try_into()
                        .map_err(|_| Error::Storage("bad transaction key".into()))?,
                );
                let record = decode_record(&value)?;
                Ok(TransactionInfo {
                    id,
                    producer_group: record.producer_group,
                    state: record.state,
                    created_ms: record.created_ms,
                    timeout_ms: record.timeout_ms,
                    checks: record.checks,
                    parts: record.parts,
                })
            })
            .collect()
    }

    /// Registers a producer of `producer_group` that answers check-backs.
    pub fn register_transaction_checker(&self, producer_group: &str) -> TransactionChecker {
        let (sender, requests) = mpsc::channel(CHECK_QUEUE);
        let id = self.inner.next_consumer.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.checkers)
            .entry(producer_group.to_owned())
            .or_default()
            .push((id, sender));
        TransactionChecker {
            broker: self.clone(),
            group: producer_group.to_owned(),
            id,
            requests,
        }
    }

    /// Finishes interrupted commits, checks back on overdue transactions, and settles those
    /// checked too often. Runs on the timer.
    pub(super) async fn check_transactions(&self, now_ms: i64) -> Result<()> {
        // Runs on every tick: skip the scan when nothing is open (the common case).
        if self.inner.catalog.meta().count(TRANSACTIONS)? == 0 {
            return Ok(());
        }
        let settings = self.inner.config.transactions.clone();
        let overdue: Vec<TransactionInfo> = self
            .transactions()?
            .into_iter()
            .filter(|info| {
                info.state == TransactionState::Committing
                    || info.created_ms.saturating_add(info.timeout_ms as i64) <= now_ms
            })
            .collect();
        for info in overdue {
            let _serial = self.inner.transaction_locks.lock(info.id).await;
            let Ok(mut record) = self.transaction_record(info.id) else {
                continue; // Decided meanwhile.
            };
            if record.state == TransactionState::Committing {
                self.finish_commit(info.id, &record, true).await?;
                continue;
            }
            if record.created_ms.saturating_add(record.timeout_ms as i64) > now_ms
                || (record.checks > 0
                    && record
                        .last_check_ms
                        .saturating_add(settings.check_interval_ms as i64)
                        > now_ms)
            {
                continue;
            }
            if record.checks >= settings.max_checks {
                tracing::warn!(
                    transaction = info.id,
                    group = %record.producer_group,
                    checks = record.checks,
                    outcome = ?settings.unresolved,
                    "transaction undecided after every check; settling it"
                );
                match settings.unresolved {
                    UnresolvedOutcome::Rollback => {
                        self.forget_transaction(info.id, record.parts as usize)
                            .await?;
                    }
                    UnresolvedOutcome::Commit => {
                        self.decide_commit(info.id, &mut record).await?;
                        self.finish_commit(info.id, &record, false).await?;
                    }
                }
                continue;
            }
            self.ask_checker(&record.producer_group, info.id);
            record.checks += 1;
            record.last_check_ms = now_ms;
            // Durable: progress of checks survives a restart even when the checks fail.
            self.save_transaction_durably(info.id, &record).await?;
        }
        Ok(())
    }

    /// Asks one live checker of the group (round robin); false if none could take it.
    fn ask_checker(&self, group: &str, transaction: u64) -> bool {
        let mut checkers = lock(&self.inner.checkers);
        let Some(group_checkers) = checkers.get_mut(group) else {
            return false;
        };
        group_checkers.retain(|(_, sender)| !sender.is_closed());
        if group_checkers.is_empty() {
            return false;
        }
        group_checkers.rotate_left(1);
        group_checkers
            .iter()
            .any(|(_, sender)| sender.try_send(transaction).is_ok())
    }
}

/// Checkers per producer group: (checker id, where to send transaction ids).
pub(super) type Checkers = HashMap<String, Vec<(u64, mpsc::Sender<u64>)>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::{BrokerConfig, TopicConfig};

    fn batch(value: &str) -> Bytes {
        let mut builder = BatchBuilder::new();
        builder.push(1, None, &[], value.as_bytes());
        builder.finish()
    }

    /// Issue 10 #13: one lock for every transaction, held while a commit waited for its
    /// partitions, made a stalled partition stop every transaction in the broker.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_commit_does_not_hold_up_other_transactions() {
        let directory = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::new(directory.path());
        config.clock = Arc::new(ManualClock::new(1_000));
        config.tick_interval = Duration::from_secs(3600);
        let broker = Broker::open(config).await.unwrap();
        for topic in ["slow", "fast"] {
            broker
                .create_topic(topic, TopicConfig::default())
                .await
                .unwrap();
        }
        let slow = broker.begin_transaction("producers", None).unwrap();
        broker
            .send_half(slow, "slow", None, batch("s"))
            .await
            .unwrap();
        let fast = broker.begin_transaction("producers", None).unwrap();
        broker
            .send_half(fast, "fast", None, batch("f"))
            .await
            .unwrap();

        let release = broker.find_topic("slow").unwrap().partitions[0]
            .stall()
            .await;
        let slow_commit = tokio::spawn({
            let broker = broker.clone();
            async move { broker.commit_transaction(slow).await }
        });
        // The slow commit has decided (durably) and now waits for its stalled partition.
        while broker.transaction_record(slow).unwrap().state != TransactionState::Committing {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let committed =
            tokio::time::timeout(Duration::from_secs(30), broker.commit_transaction(fast))
                .await
                .expect("another transaction commits while one commit is stalled")
                .unwrap();
        assert_eq!(committed[0].0, "fast");
        assert!(!slow_commit.is_finished());
        release.send(()).unwrap();
        let slow_committed = slow_commit.await.unwrap().unwrap();
        assert_eq!(slow_committed[0].0, "slow");
        assert!(broker.transactions().unwrap().is_empty());
        assert!(lock(&broker.inner.transaction_locks.0).is_empty());
        broker.shutdown().await;
    }
}
