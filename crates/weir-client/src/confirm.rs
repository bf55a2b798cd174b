//! Per-message confirms from per-batch answers: [`ConfirmFuture`] and the batch outcome it
//! waits on.
//!
//! The broker confirms a batch, not a message. Giving every message its own channel would put
//! an allocation and a wake-up per message on the hot path, so all messages of a batch share
//! one [`BatchOutcome`] and each [`ConfirmFuture`] holds only that and its index in the batch.
//! When the batch's answer arrives the outcome is set once and every waiter is woken; each
//! future then computes its own partition and offset from the batch's placement. This module
//! also works out that placement from the broker's ranges, including a batch the broker split
//! over partitions by key.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use weir_proto::{Durability, PublishedRange};

use crate::error::{Error, Result};
use crate::message::Confirm;
use crate::partitioner::partition_for_key;

/// Where a batch's messages ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// All in one partition, at consecutive offsets: message `i` is at `base_offset + i`.
    Contiguous { partition: u32, base_offset: u64 },
    /// Message `i` is at `positions[i]` (a batch the broker split by key).
    Listed(Vec<(u32, u64)>),
}

/// A batch's answer, as every one of its messages sees it.
type Outcome = Result<(Placement, Durability)>;

#[derive(Default)]
struct SlotState {
    outcome: Option<Outcome>,
    wakers: Vec<Waker>,
}

/// The shared outcome of one batch, set once.
#[derive(Default)]
pub(crate) struct BatchOutcome {
    /// A std mutex: held only to read or set the outcome and to register a waker.
    state: Mutex<SlotState>,
}

impl std::fmt::Debug for BatchOutcome {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BatchOutcome")
            .field("resolved", &self.lock().outcome.is_some())
            .finish()
    }
}

impl BatchOutcome {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sets the outcome and wakes every waiting message. Only the first call counts: a batch
    /// is answered once.
    pub(crate) fn resolve(&self, outcome: Outcome) {
        let wakers = {
            let mut state = self.lock();
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        for waker in wakers {
            waker.wake();
        }
    }

    /// Whether the batch has been answered.
    #[cfg(test)]
    pub(crate) fn is_resolved(&self) -> bool {
        self.lock().outcome.is_some()
    }

    /// The error the batch failed with, if it did.
    #[cfg(test)]
    pub(crate) fn error(&self) -> Option<Error> {
        match &self.lock().outcome {
            Some(Err(error)) => Some(error.clone()),
            _ => None,
        }
    }
}

/// Resolves to the [`Confirm`] of one message once its batch is answered, or to the error
/// the batch failed with.
///
/// Unlike most futures it is not lazy: the message is sent whether or not this is awaited,
/// and dropping it only means not hearing about the outcome (a later
/// [`Producer::flush`](crate::Producer::flush) still reports a failure).
#[derive(Debug)]
pub struct ConfirmFuture {
    outcome: Arc<BatchOutcome>,
    /// The message's index in its batch.
    index: usize,
    /// Where this future's waker sits in the outcome's list, once registered.
    waker_index: Option<usize>,
}

impl ConfirmFuture {
    pub(crate) fn new(outcome: Arc<BatchOutcome>, index: usize) -> ConfirmFuture {
        ConfirmFuture {
            outcome,
            index,
            waker_index: None,
        }
    }
}

impl Future for ConfirmFuture {
    type Output = Result<Confirm>;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut state = this.outcome.lock();
        match &state.outcome {
            Some(Ok((placement, durability))) => {
                Poll::Ready(confirm_of(placement, *durability, this.index))
            }
            Some(Err(error)) => Poll::Ready(Err(error.clone())),
            None => {
                // Register once, and replace the waker only if the task changed: repeated
                // polls must not grow the list.
                match this.waker_index {
                    Some(at) if at < state.wakers.len() => {
                        if !state.wakers[at].will_wake(context.waker()) {
                            state.wakers[at] = context.waker().clone();
                        }
                    }
                    _ => {
                        this.waker_index = Some(state.wakers.len());
                        state.wakers.push(context.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }
}

fn confirm_of(placement: &Placement, durability: Durability, index: usize) -> Result<Confirm> {
    let (partition, offset) = match placement {
        Placement::Contiguous {
            partition,
            base_offset,
        } => (*partition, *base_offset + index as u64),
        Placement::Listed(positions) => *positions
            .get(index)
            .ok_or_else(|| Error::Protocol(format!("no confirmed position for message {index}")))?,
    };
    Ok(Confirm {
        partition,
        offset,
        durability,
    })
}

/// Where the `count` messages of a batch went, from the broker's ranges.
///
/// One range covering exactly `count` offsets is the usual case. Several ranges mean the
/// broker split the batch by key: then `keys` (each message's key, in batch order) and the
/// topic's `partitions` count place each message, using the broker's own routing — a keyed
/// message goes to its key's partition, every unkeyed one to the single partition the broker
/// chose for them, and each partition keeps the batch's order. `None` if the ranges do not
/// add up to such a placement.
pub(crate) fn place(
    count: usize,
    ranges: &[PublishedRange],
    keys: Option<(&[Option<bytes::Bytes>], u32)>,
) -> Option<Placement> {
    let length = |range: &PublishedRange| {
        range
            .last_offset
            .checked_sub(range.base_offset)
            .and_then(|span| usize::try_from(span).ok())
            .map(|span| span + 1)
    };
    if let [range] = ranges {
        return (length(range)? == count).then_some(Placement::Contiguous {
            partition: range.partition,
            base_offset: range.base_offset,
        });
    }
    let (keys, partitions) = keys?;
    if keys.len() != count {
        return None;
    }
    let targets: Vec<Option<u32>> = keys
        .iter()
        .map(|key| key.as_ref().map(|key| partition_for_key(key, partitions)))
        .collect();
    let unkeyed = targets.iter().filter(|target| target.is_none()).count();
    // The unkeyed messages' partition is the one whose range holds more than its keyed ones.
    let keyed_in = |partition: u32| {
        targets
            .iter()
            .filter(|target| **target == Some(partition))
            .count()
    };
    let mut unkeyed_partition = None;
    for range in ranges {
        let extra = length(range)?.checked_sub(keyed_in(range.partition))?;
        if extra > 0 {
            if extra != unkeyed || unkeyed_partition.is_some() {
                return None;
            }
            unkeyed_partition = Some(range.partition);
        }
    }
    if unkeyed > 0 && unkeyed_partition.is_none() {
        return None;
    }
    let mut next: Vec<(u32, u64)> = ranges
        .iter()
        .map(|range| (range.partition, range.base_offset))
        .collect();
    let mut positions = Vec::with_capacity(count);
    for target in targets {
        let partition = target.or(unkeyed_partition)?;
        let slot = next
            .iter_mut()
            .find(|(candidate, _)| *candidate == partition)?;
        positions.push(*slot);
        slot.1 += 1;
    }
    Some(Placement::Listed(positions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn range(partition: u32, base_offset: u64, last_offset: u64) -> PublishedRange {
        PublishedRange {
            partition,
            base_offset,
            last_offset,
        }
    }

    /// Goal: every message of a batch sees the one answer, with its own offset. Method: three
    /// futures polled before and after the outcome is set, one of them twice (which must not
    /// register twice).
    #[tokio::test]
    async fn every_message_of_a_batch_gets_its_own_offset() {
        let outcome = Arc::new(BatchOutcome::default());
        let futures: Vec<ConfirmFuture> = (0..3)
            .map(|index| ConfirmFuture::new(outcome.clone(), index))
            .collect();
        let waiters: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
        tokio::task::yield_now().await;
        assert!(!outcome.is_resolved());
        outcome.resolve(Ok((
            Placement::Contiguous {
                partition: 2,
                base_offset: 40,
            },
            Durability::Fsynced,
        )));
        let mut offsets = Vec::new();
        for waiter in waiters {
            let confirm = waiter.await.unwrap().unwrap();
            assert_eq!(
                (confirm.partition, confirm.durability),
                (2, Durability::Fsynced)
            );
            offsets.push(confirm.offset);
        }
        assert_eq!(offsets, [40, 41, 42]);
        // A late future resolves at once.
        assert_eq!(ConfirmFuture::new(outcome, 1).await.unwrap().offset, 41);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_message_and_is_answered_once() {
        let outcome = Arc::new(BatchOutcome::default());
        outcome.resolve(Err(Error::Closed("gone".into())));
        outcome.resolve(Ok((
            Placement::Contiguous {
                partition: 0,
                base_offset: 0,
            },
            Durability::Os,
        )));
        assert!(matches!(
            ConfirmFuture::new(outcome.clone(), 0).await,
            Err(Error::Closed(_))
        ));
        assert!(outcome.error().is_some());
    }

    #[test]
    fn one_range_places_messages_at_consecutive_offsets() {
        assert_eq!(
            place(3, &[range(1, 10, 12)], None),
            Some(Placement::Contiguous {
                partition: 1,
                base_offset: 10
            })
        );
        assert_eq!(place(4, &[range(1, 10, 12)], None), None);
        assert_eq!(place(1, &[range(1, 12, 10)], None), None);
    }

    /// Goal: a batch the broker split by key is placed exactly as the broker routed it.
    /// Method: keys whose partitions are computed here, plus unkeyed messages that the
    /// broker sent together to one partition.
    #[test]
    fn a_split_batch_is_placed_by_key_hash() {
        let partitions = 4;
        let key_a = Bytes::from_static(b"key-1");
        let key_b = (0..100)
            .map(|index| Bytes::from(format!("key-{index}")))
            .find(|key| partition_for_key(key, partitions) != partition_for_key(&key_a, partitions))
            .unwrap();
        let partition_a = partition_for_key(&key_a, partitions);
        let partition_b = partition_for_key(&key_b, partitions);
        let keys = vec![
            Some(key_a.clone()),
            None,
            Some(key_b.clone()),
            Some(key_a.clone()),
            None,
        ];
        // The unkeyed pair went to partition_b, after its own keyed message.
        let ranges = [range(partition_a, 100, 101), range(partition_b, 7, 9)];
        let placement = place(5, &ranges, Some((&keys, partitions))).unwrap();
        assert_eq!(
            placement,
            Placement::Listed(vec![
                (partition_a, 100),
                (partition_b, 7),
                (partition_b, 8),
                (partition_a, 101),
                (partition_b, 9),
            ])
        );
        // Ranges that do not add up are refused rather than guessed.
        let wrong = [range(partition_a, 100, 100), range(partition_b, 7, 9)];
        assert_eq!(place(5, &wrong, Some((&keys, partitions))), None);
        assert_eq!(place(5, &ranges, None), None);
    }
}
