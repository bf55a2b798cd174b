//! Transactional messages with check-back, RocketMQ style: [`Client::transaction`] begins a
//! [`Transaction`] in a producer group; [`Transaction::send`] stores half messages (durable,
//! invisible); then the producer runs its local transaction and calls
//! [`Transaction::commit`] (every half message becomes visible at once) or
//! [`Transaction::rollback`].
//!
//! If the producer dies in between, the broker asks a live producer of the same group: one
//! that called [`Client::register_checker`] with a callback that looks at the local
//! transaction (say, whether the order row with that transaction id exists) and answers
//! [`Decision::Commit`], [`Decision::Rollback`] or [`Decision::Unknown`] (ask again later).
//! The checker keeps a connection of its own, registered for the group, and registers again
//! after reconnecting; it answers each check with `ResolveTransaction` on the client's shared
//! connection, and never runs two checks of one transaction at once.
//!
//! Operators decide stuck transactions with [`Client::transactions`],
//! [`Client::commit_transaction`] and [`Client::rollback_transaction`].

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_proto::{Decision, Request, Response, TopicConfirm, TransactionInfo};

use crate::accumulator::encode_messages;
use crate::client::{Client, milliseconds};
use crate::connection::{CheckRequest, Connection, unexpected};
use crate::error::{Error, Result};
use crate::message::Message;
use crate::schedule::common_partition;

/// Check-backs waiting for the callback at most, per checker; the broker asks again for any
/// beyond.
const CHECKS_QUEUED_MAX: usize = 1024;

/// An open transaction: send half messages, then commit or roll back.
///
/// Dropping it without deciding leaves the transaction open on the broker, which checks back
/// with a registered checker of the producer group after the transaction's timeout (as if the
/// producer had died).
#[derive(Debug)]
pub struct Transaction {
    client: Client,
    id: u64,
    producer_group: String,
}

impl Transaction {
    /// The broker's id for it: what a check-back names, so keep it with the local
    /// transaction (in the same database row, say).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The producer group it belongs to.
    pub fn producer_group(&self) -> &str {
        &self.producer_group
    }

    /// Stores one half message for `topic`: durable when this returns, invisible until
    /// commit.
    pub async fn send(&self, topic: &str, message: Message) -> Result<()> {
        self.send_all(topic, std::slice::from_ref(&message)).await
    }

    /// Stores `messages` as half messages for `topic`, as one batch.
    pub async fn send_all(&self, topic: &str, messages: &[Message]) -> Result<()> {
        let batch = encode_messages(messages, crate::producer::now_ms())
            .ok_or_else(|| Error::InvalidArgument("no messages to send".into()))?;
        self.send_batch(topic, common_partition(messages), batch)
            .await
    }

    /// Stores a batch encoded with [`crate::BatchBuilder`] as half messages.
    pub async fn send_batch(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
    ) -> Result<()> {
        self.client
            .request_ok(&Request::SendHalf {
                transaction: self.id,
                topic: topic.to_owned(),
                partition,
                batch,
            })
            .await
    }

    /// Makes every half message visible, atomically: a consumer never sees part of the
    /// transaction. Returns where they landed, per topic.
    pub async fn commit(self) -> Result<Vec<TopicConfirm>> {
        self.client.commit_transaction(self.id).await
    }

    /// Discards every half message.
    pub async fn rollback(self) -> Result<()> {
        self.client.rollback_transaction(self.id).await
    }
}

/// A check-back: decide this transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionCheck {
    /// The transaction ([`Transaction::id`]).
    pub transaction: u64,
    /// Its producer group.
    pub producer_group: String,
}

/// A registered transaction checker. Dropping it (or [`TransactionChecker::close`]) ends the
/// registration: its connection closes and the broker stops asking it.
#[derive(Debug)]
pub struct TransactionChecker {
    producer_group: String,
    task: JoinHandle<()>,
}

impl TransactionChecker {
    /// The producer group it answers for.
    pub fn producer_group(&self) -> &str {
        &self.producer_group
    }

    /// Stops answering checks.
    pub fn close(self) {
        // Dropping aborts the task.
    }
}

impl Drop for TransactionChecker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    /// Begins a transaction in `producer_group`, checked back after the broker's default
    /// timeout if left undecided.
    ///
    /// ```no_run
    /// # async fn run(client: weir_client::Client) -> weir_client::Result<()> {
    /// use weir_client::Message;
    /// let transaction = client.transaction("orders").await?;
    /// transaction.send("order-events", Message::new("order 42 created")).await?;
    /// // … write order 42 and `transaction.id()` to the local database …
    /// transaction.commit().await?;
    /// # Ok(()) }
    /// ```
    pub async fn transaction(&self, producer_group: &str) -> Result<Transaction> {
        self.begin_transaction(producer_group, None).await
    }

    /// [`Client::transaction`] with its own check-back timeout.
    pub async fn transaction_with_timeout(
        &self,
        producer_group: &str,
        timeout: Duration,
    ) -> Result<Transaction> {
        self.begin_transaction(producer_group, Some(timeout)).await
    }

    async fn begin_transaction(
        &self,
        producer_group: &str,
        timeout: Option<Duration>,
    ) -> Result<Transaction> {
        let request = Request::BeginTransaction {
            producer_group: producer_group.to_owned(),
            timeout_ms: timeout.map(milliseconds),
        };
        match self.request(&request).await? {
            Response::TransactionBegun { transaction } => Ok(Transaction {
                client: self.clone(),
                id: transaction,
                producer_group: producer_group.to_owned(),
            }),
            other => Err(unexpected("TransactionBegun", &other)),
        }
    }

    /// Commits a transaction by id (an operator's decision, or a producer's that kept only
    /// the id). `not_found` if it is unknown or decided already.
    pub async fn commit_transaction(&self, transaction: u64) -> Result<Vec<TopicConfirm>> {
        match self
            .request(&Request::CommitTransaction { transaction })
            .await?
        {
            Response::TransactionCommitted { targets } => Ok(targets),
            other => Err(unexpected("TransactionCommitted", &other)),
        }
    }

    /// Rolls a transaction back by id. `not_found` if it is unknown or decided already.
    pub async fn rollback_transaction(&self, transaction: u64) -> Result<()> {
        self.request_ok(&Request::RollbackTransaction { transaction })
            .await
    }

    /// Answers a check-back (what a registered checker does by itself). `Unknown` changes
    /// nothing: the broker asks again later.
    pub async fn resolve_transaction(&self, transaction: u64, decision: Decision) -> Result<()> {
        self.request_ok(&Request::ResolveTransaction {
            transaction,
            decision,
        })
        .await
    }

    /// Undecided transactions, oldest first.
    pub async fn transactions(&self) -> Result<Vec<TransactionInfo>> {
        match self.request(&Request::ListTransactions).await? {
            Response::Transactions(transactions) => Ok(transactions),
            other => Err(unexpected("Transactions", &other)),
        }
    }

    /// Registers `check` to answer the broker's check-backs for `producer_group`'s
    /// undecided transactions, until the returned checker is dropped. Fails if the first
    /// registration fails; later connection losses are repaired by registering again.
    ///
    /// ```no_run
    /// # async fn run(client: weir_client::Client) -> weir_client::Result<()> {
    /// use weir_client::Decision;
    /// let checker = client
    ///     .register_checker("orders", |check| async move {
    ///         // Look the transaction up in the local database.
    ///         if check.transaction % 2 == 0 { Decision::Commit } else { Decision::Unknown }
    ///     })
    ///     .await?;
    /// # drop(checker);
    /// # Ok(()) }
    /// ```
    pub async fn register_checker<Check, Decided>(
        &self,
        producer_group: &str,
        check: Check,
    ) -> Result<TransactionChecker>
    where
        Check: Fn(TransactionCheck) -> Decided + Send + Sync + 'static,
        Decided: Future<Output = Decision> + Send + 'static,
    {
        let (connection, checks) = register(self, producer_group).await?;
        let task = tokio::spawn(run_checker(
            self.clone(),
            producer_group.to_owned(),
            Arc::new(check),
            connection,
            checks,
        ));
        Ok(TransactionChecker {
            producer_group: producer_group.to_owned(),
            task,
        })
    }
}

/// Opens a connection of the checker's own and registers it for the group.
async fn register(
    client: &Client,
    producer_group: &str,
) -> Result<(Connection, mpsc::Receiver<CheckRequest>)> {
    let connection = client.open_connection().await?;
    // Route before registering, so that no check sent right after the answer is missed.
    let checks = connection.route_checks(CHECKS_QUEUED_MAX);
    let request = Request::RegisterTransactionChecker {
        producer_group: producer_group.to_owned(),
    };
    match connection.request(&request).await? {
        Response::Ok => Ok((connection, checks)),
        other => Err(unexpected("Ok", &other)),
    }
}

/// Tells the checker a check has finished, even if the callback panicked.
struct Finished {
    transaction: u64,
    done: mpsc::UnboundedSender<u64>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let _ = self.done.send(self.transaction);
    }
}

async fn run_checker<Check, Decided>(
    client: Client,
    producer_group: String,
    check: Arc<Check>,
    mut connection: Connection,
    mut checks: mpsc::Receiver<CheckRequest>,
) where
    Check: Fn(TransactionCheck) -> Decided + Send + Sync + 'static,
    Decided: Future<Output = Decision> + Send + 'static,
{
    let (done, mut finished) = mpsc::unbounded_channel::<u64>();
    // Transactions whose check is running: the broker may ask again meanwhile.
    let mut running: HashSet<u64> = HashSet::new();
    loop {
        tokio::select! {
            Some(transaction) = finished.recv() => {
                running.remove(&transaction);
            }
            received = checks.recv() => match received {
                Some((transaction, group)) => {
                    if !running.insert(transaction) {
                        continue;
                    }
                    let guard = Finished { transaction, done: done.clone() };
                    let decided = check(TransactionCheck { transaction, producer_group: group });
                    let client = client.clone();
                    tokio::spawn(async move {
                        let _guard = guard;
                        let decision = decided.await;
                        if decision == Decision::Unknown {
                            return;
                        }
                        match client.resolve_transaction(transaction, decision).await {
                            Ok(()) => tracing::debug!(transaction, ?decision, "transaction resolved on check-back"),
                            // Decided meanwhile (by its producer or an operator), say.
                            Err(error) => tracing::debug!(transaction, %error, "answering a check-back failed"),
                        }
                    });
                }
                None => {
                    drop(connection);
                    tracing::warn!(group = %producer_group, "transaction checker connection lost; registering again");
                    let mut backoff = client.options().backoff();
                    loop {
                        match register(&client, &producer_group).await {
                            Ok((reopened, routed)) => {
                                connection = reopened;
                                checks = routed;
                                break;
                            }
                            Err(error) => {
                                let delay = backoff.next_delay();
                                tracing::debug!(%error, ?delay, "registering the transaction checker failed; retrying");
                                tokio::time::sleep(delay).await;
                            }
                        }
                    }
                }
            },
        }
    }
}
