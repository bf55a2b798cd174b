//! Saving consumers' positions durably, in groups.
//!
//! An ack (and a nack, reject, release or stream commit) changes a subscription's state in
//! memory at once — the freed credit and the next delivery do not wait — and is *answered*
//! only once a save that started after the change has committed to the metadata store. Like
//! the partition writer's group commit, one save serves every settlement made before it
//! started: one write transaction, one fsync, for all subscriptions.
//!
//! Each settlement takes a ticket (a number that only grows) after changing its state. Saves
//! run one at a time under `saving`; a save covers every ticket taken before it started, since
//! it reads the dirty state of every subscription after those changes. A caller that gets the
//! lock finds its ticket covered by a save that ran while it waited, or runs the next save
//! itself, covering everyone who queued behind it meanwhile.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use super::{Broker, Inner, lock, read};
use crate::error::{Error, Result};
use crate::subscription::Subscription;
use weir_storage::MetaOp;

/// The tickets and what the saves so far made of them.
#[derive(Default)]
pub(super) struct PositionSaves {
    /// The last ticket taken.
    requested: AtomicU64,
    /// One save at a time; held across the save (a tokio mutex: its waiters are the
    /// settlements the next save serves).
    saving: tokio::sync::Mutex<Saved>,
}

#[derive(Default)]
struct Saved {
    /// Every ticket up to this one is durable.
    durable_through: u64,
    /// The last save failed, covering tickets up to this one (those above `durable_through`
    /// are not durable), with this error.
    failed: Option<(u64, Error)>,
}

impl Broker {
    /// Waits until every position change made before this call is durable. Fails if the save
    /// that covered them failed (a full disk: `StorageFull`); those positions are kept and
    /// written first by the next save, so a later success makes them durable after all.
    pub(crate) async fn sync_positions(&self) -> Result<()> {
        self.save_positions_covering(false).await
    }

    /// The last save, for `shutdown`: runs even though the broker is closed.
    pub(super) async fn save_positions_at_shutdown(&self) -> Result<()> {
        self.save_positions_covering(true).await
    }

    async fn save_positions_covering(&self, at_shutdown: bool) -> Result<()> {
        let saves = &self.inner.position_saves;
        // Taken after the caller's change to its subscription's state (in program order).
        let ticket = saves.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let mut saved = saves.saving.lock().await;
        if saved.durable_through >= ticket {
            return Ok(());
        }
        if let Some((failed_through, error)) = &saved.failed
            && *failed_through >= ticket
        {
            return Err(error.clone());
        }
        // Past the final save of `shutdown`, nothing would save what this covers later, and
        // the metadata store must be let go of: say so rather than save.
        if !at_shutdown && self.check_open().is_err() {
            return Err(Error::ShuttingDown);
        }
        // Read before the save takes the dirty state: it covers every ticket up to here.
        let covering = saves.requested.load(Ordering::SeqCst);
        let subscriptions: Vec<Arc<Subscription>> =
            read(&self.inner.subscriptions).values().cloned().collect();
        let result = self
            .run_blocking(move |broker| broker.write_positions(&subscriptions))
            .await;
        match &result {
            Ok(()) => {
                saved.durable_through = covering;
                saved.failed = None;
            }
            Err(error) => {
                tracing::error!(%error, "saving consumer positions failed; their settlements are answered with the error and the next save retries them");
                saved.failed = Some((covering, error.clone()));
            }
        }
        result
    }

    /// Writes every subscription's changed positions in one durable transaction. Blocking.
    /// Positions a failed write could not store are kept and written first the next time, so
    /// a full disk delays them but does not drop them.
    fn write_positions(&self, subscriptions: &[Arc<Subscription>]) -> Result<()> {
        let mut unsaved = lock(&self.inner.positions_unsaved);
        // Later ops on a key win, so the retried ones go first.
        unsaved.extend(
            subscriptions
                .iter()
                .flat_map(|subscription| subscription.take_dirty_positions()),
        );
        if unsaved.is_empty() {
            return Ok(());
        }
        // While saves fail (a full disk) every attempt adds the positions changed since;
        // only the newest op of a key is worth keeping, so the backlog stays one per key.
        keep_newest_per_key(&mut unsaved);
        self.inner.catalog.save_positions(&unsaved)?;
        unsaved.clear();
        Ok(())
    }
}

/// Drops every op that a later op on the same table and key replaces, keeping the order of
/// the rest.
fn keep_newest_per_key(ops: &mut Vec<MetaOp>) {
    let mut seen = HashSet::new();
    let mut newest: Vec<MetaOp> = ops
        .drain(..)
        .rev()
        .filter(|op| {
            let (table, key) = match op {
                MetaOp::Put { table, key, .. } | MetaOp::Delete { table, key } => (*table, key),
            };
            seen.insert((table, key.clone()))
        })
        .collect();
    newest.reverse();
    *ops = newest;
}

/// What a [`Consumer`](crate::Consumer) holds to wait for its settlements' save, without
/// keeping a stopped broker (and its files) alive.
#[derive(Clone)]
pub(crate) struct PositionSync(Weak<Inner>);

impl PositionSync {
    pub(crate) fn of(broker: &Broker) -> PositionSync {
        PositionSync(Arc::downgrade(&broker.inner))
    }

    /// [`Broker::sync_positions`]; `ShuttingDown` once the broker is gone.
    pub(crate) async fn wait(&self) -> Result<()> {
        let inner = self.0.upgrade().ok_or(Error::ShuttingDown)?;
        Broker { inner }.sync_positions().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> MetaOp {
        MetaOp::Put {
            table: "positions",
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    #[test]
    fn failed_saves_keep_one_op_per_key_the_newest() {
        let mut ops = vec![put(b"a", b"1"), put(b"b", b"1"), put(b"a", b"2")];
        ops.push(MetaOp::Delete {
            table: "positions",
            key: b"b".to_vec(),
        });
        ops.push(put(b"c", b"1"));
        keep_newest_per_key(&mut ops);
        assert_eq!(
            ops,
            vec![
                put(b"a", b"2"),
                MetaOp::Delete {
                    table: "positions",
                    key: b"b".to_vec()
                },
                put(b"c", b"1"),
            ]
        );
    }
}
