//! Per-message confirms from per-batch answers: [`ConfirmFuture`] and the batch outcome it
//! waits on.
//!
//! The broker confirms a batch, not a message. Giving every message its own channel would put
//! an allocation and a wake-up per message on the hot path, so all messages of a batch share
//! one [`BatchOutcome`] and each [`ConfirmFuture`] holds only that and its index in the batch.
//! When the batch's answer arrives the outcome is set once and every waiter is woken; each
//! future then computes its own partition and offset from the batch's placement. This module
//! also works out that placement from the broker's ranges, including a batch the broker split
//! over partitions by key, and messages the broker recognised as duplicates (confirmed at the
//! copy it already held).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use weir_proto::{Durability, MessageId, PublishedRange};

use crate::error::{Error, Result};
use crate::message::Confirm;
use crate::partitioner::partition_for_key;

/// Where one message of a batch ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub partition: u32,
    pub offset: u64,
    /// Not stored again: `offset` is the copy the broker already held.
    pub duplicate: bool,
}

/// Where a batch's messages ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// All stored in one partition, at consecutive offsets: message `i` is at
    /// `base_offset + i`.
    Contiguous { partition: u32, base_offset: u64 },
    /// Message `i` is at `positions[i]` (a batch the broker split by key, or one with
    /// duplicates).
    Listed(Vec<Position>),
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
    let position = match placement {
        Placement::Contiguous {
            partition,
            base_offset,
        } => Position {
            partition: *partition,
            offset: *base_offset + index as u64,
            duplicate: false,
        },
        Placement::Listed(positions) => *positions
            .get(index)
            .ok_or_else(|| Error::Protocol(format!("no confirmed position for message {index}")))?,
    };
    Ok(Confirm {
        partition: position.partition,
        offset: position.offset,
        durability,
        duplicate: position.duplicate,
    })
}

/// What the producer knows about a batch's messages, to match them with the broker's answer.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchMessages<'a> {
    /// Each message's routing key (its key, else its message id), in batch order, and the
    /// topic's partition count: needed only when the broker split the batch over partitions.
    pub routing: Option<(&'a [Option<Bytes>], u32)>,
    /// Each message's id (header `weir.id`), in batch order; empty when none has one.
    pub ids: &'a [Option<Bytes>],
}

fn range_length(range: &PublishedRange) -> Option<usize> {
    range
        .last_offset
        .checked_sub(range.base_offset)
        .and_then(|span| usize::try_from(span).ok())
        .and_then(|span| span.checked_add(1))
}

/// Where the `count` messages of a batch went, from the broker's stored ranges and the
/// copies of messages it did not store again (`duplicates`, in batch order).
///
/// One range covering exactly `count` offsets is the usual case. Several partitions mean the
/// broker split the batch by key: then each message's routing key and the topic's partition
/// count place it, with the broker's own routing — a message with a key (or, without one, a
/// message id) goes to its hash's partition, every other one to the single partition the
/// broker chose for them, and each partition keeps the batch's order.
///
/// Within a partition, duplicates are told apart as the broker decides them: a message whose
/// id repeats an earlier one of the batch duplicates that one; of the other messages with an
/// id, either none or all were already held (what a retry or a republish produces). When
/// only some were, the answer does not say which, and the placement is refused (the producer
/// then asks the broker, see `producer.rs`, `place_partly_held`). A partition
/// where nothing was stored holds only duplicates, in order (an idempotent producer's retry).
/// `None` whenever the answer does not add up, rather than guess.
pub(crate) fn place(
    count: usize,
    ranges: &[PublishedRange],
    duplicates: &[MessageId],
    messages: BatchMessages<'_>,
) -> Option<Placement> {
    if duplicates.is_empty()
        && let [range] = ranges
    {
        return (range_length(range)? == count).then_some(Placement::Contiguous {
            partition: range.partition,
            base_offset: range.base_offset,
        });
    }
    // How many messages each partition received, stored or recognised as duplicates.
    let mut received: BTreeMap<u32, usize> = BTreeMap::new();
    for range in ranges {
        *received.entry(range.partition).or_default() += range_length(range)?;
    }
    for duplicate in duplicates {
        *received.entry(duplicate.partition).or_default() += 1;
    }
    if received.values().sum::<usize>() != count {
        return None;
    }
    let partitions = assign_partitions(count, &received, messages.routing)?;
    let mut stored: HashMap<u32, (u64, u64)> = HashMap::new();
    for range in ranges {
        if stored
            .insert(range.partition, (range.base_offset, range.last_offset))
            .is_some()
        {
            return None;
        }
    }
    let mut held: HashMap<u32, VecDeque<u64>> = HashMap::new();
    for duplicate in duplicates {
        held.entry(duplicate.partition)
            .or_default()
            .push_back(duplicate.offset);
    }
    let mut positions: Vec<Option<Position>> = vec![None; count];
    for &partition in received.keys() {
        let indexes: Vec<usize> = (0..count)
            .filter(|index| partitions[*index] == partition)
            .collect();
        let mut copies = held.remove(&partition).unwrap_or_default();
        let placed = place_in_partition(
            partition,
            &indexes,
            stored.get(&partition).copied(),
            &mut copies,
            messages.ids,
        )?;
        for (index, position) in indexes.into_iter().zip(placed) {
            positions[index] = Some(position);
        }
    }
    positions
        .into_iter()
        .collect::<Option<Vec<Position>>>()
        .map(Placement::Listed)
}

/// The partition of each message: the only one if the answer names one; otherwise routed
/// messages by hash and the others to the one partition with messages left unexplained.
fn assign_partitions(
    count: usize,
    received: &BTreeMap<u32, usize>,
    routing: Option<(&[Option<Bytes>], u32)>,
) -> Option<Vec<u32>> {
    if let [(&partition, _)] = received.iter().collect::<Vec<_>>()[..] {
        return Some(vec![partition; count]);
    }
    let (keys, partition_count) = routing?;
    if keys.len() != count {
        return None;
    }
    let targets: Vec<Option<u32>> = keys
        .iter()
        .map(|key| {
            key.as_ref()
                .map(|key| partition_for_key(key, partition_count))
        })
        .collect();
    let mut unexplained = received.clone();
    for target in targets.iter().flatten() {
        let left = unexplained.get_mut(target)?;
        *left = left.checked_sub(1)?;
    }
    let unrouted = targets.iter().filter(|target| target.is_none()).count();
    let mut left = unexplained.iter().filter(|(_, left)| **left > 0);
    let unrouted_partition = match (left.next(), left.next()) {
        (None, _) => None,
        (Some((&partition, &left)), None) if left == unrouted => Some(partition),
        _ => return None,
    };
    targets
        .into_iter()
        .map(|target| target.or(unrouted_partition))
        .collect()
}

/// The positions of one partition's messages (`indexes`, in batch order), given the range
/// stored there (`stored`, inclusive) and the held copies of its duplicates (`copies`, in
/// batch order).
fn place_in_partition(
    partition: u32,
    indexes: &[usize],
    stored: Option<(u64, u64)>,
    copies: &mut VecDeque<u64>,
    ids: &[Option<Bytes>],
) -> Option<Vec<Position>> {
    let duplicate_at = |offset| Position {
        partition,
        offset,
        duplicate: true,
    };
    let Some((base_offset, last_offset)) = stored else {
        // Nothing stored: every message was already held, in order.
        if copies.len() != indexes.len() {
            return None;
        }
        return Some(copies.drain(..).map(duplicate_at).collect());
    };
    let id_of = |index: usize| ids.get(index).and_then(Option::as_ref);
    // Messages whose id repeats an earlier one of the batch are duplicates of it whatever
    // else happened; of the rest with an id, none or all must have been held already.
    let mut seen: HashSet<&Bytes> = HashSet::new();
    let mut repeats = 0;
    let mut candidates = 0;
    for &index in indexes {
        if let Some(id) = id_of(index) {
            if seen.insert(id) {
                candidates += 1;
            } else {
                repeats += 1;
            }
        }
    }
    let held_before = copies.len().checked_sub(repeats)?;
    let all_held = match held_before {
        0 => false,
        held if held == candidates => true,
        _ => return None,
    };
    let mut next_offset = base_offset;
    let mut first: HashMap<&Bytes, u64> = HashMap::new();
    let mut positions = Vec::with_capacity(indexes.len());
    for &index in indexes {
        let id = id_of(index);
        let earlier = id.and_then(|id| first.get(id).copied());
        let position = match (id, earlier) {
            (Some(_), Some(earlier)) => {
                if copies.pop_front()? != earlier {
                    return None;
                }
                duplicate_at(earlier)
            }
            (Some(id), None) if all_held => {
                let offset = copies.pop_front()?;
                first.insert(id, offset);
                duplicate_at(offset)
            }
            _ => {
                if next_offset > last_offset {
                    return None;
                }
                let offset = next_offset;
                next_offset += 1;
                if let Some(id) = id {
                    first.insert(id, offset);
                }
                Position {
                    partition,
                    offset,
                    duplicate: false,
                }
            }
        };
        positions.push(position);
    }
    (copies.is_empty() && next_offset == last_offset.checked_add(1)?).then_some(positions)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let none = BatchMessages::default();
        assert_eq!(
            place(3, &[range(1, 10, 12)], &[], none),
            Some(Placement::Contiguous {
                partition: 1,
                base_offset: 10
            })
        );
        assert_eq!(place(4, &[range(1, 10, 12)], &[], none), None);
        assert_eq!(place(1, &[range(1, 12, 10)], &[], none), None);
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
        let routed = BatchMessages {
            routing: Some((&keys, partitions)),
            ids: &[],
        };
        let placement = place(5, &ranges, &[], routed).unwrap();
        assert_eq!(
            placement,
            Placement::Listed(vec![
                stored(partition_a, 100),
                stored(partition_b, 7),
                stored(partition_b, 8),
                stored(partition_a, 101),
                stored(partition_b, 9),
            ])
        );
        // Ranges that do not add up are refused rather than guessed.
        let wrong = [range(partition_a, 100, 100), range(partition_b, 7, 9)];
        assert_eq!(place(5, &wrong, &[], routed), None);
        assert_eq!(place(5, &ranges, &[], BatchMessages::default()), None);
    }

    fn stored(partition: u32, offset: u64) -> Position {
        Position {
            partition,
            offset,
            duplicate: false,
        }
    }

    fn held(partition: u32, offset: u64) -> Position {
        Position {
            partition,
            offset,
            duplicate: true,
        }
    }

    fn id(partition: u32, offset: u64) -> MessageId {
        MessageId { partition, offset }
    }

    fn ids(ids: &[Option<&'static str>]) -> Vec<Option<Bytes>> {
        ids.iter()
            .map(|id| id.map(|id| Bytes::from_static(id.as_bytes())))
            .collect()
    }

    /// Goal: a batch the broker stored none of (a republish, or an idempotent producer's
    /// retry) is confirmed message by message at the copies it holds. Method: an answer with
    /// no range and one held copy per message.
    #[test]
    fn a_batch_held_already_is_confirmed_at_the_held_copies() {
        let messages = ids(&[Some("a"), Some("b")]);
        let batch = BatchMessages {
            routing: None,
            ids: &messages,
        };
        assert_eq!(
            place(2, &[], &[id(1, 40), id(1, 41)], batch),
            Some(Placement::Listed(vec![held(1, 40), held(1, 41)]))
        );
        // Without ids too: an idempotent retry is recognised by its sequence numbers.
        assert_eq!(
            place(2, &[], &[id(0, 7), id(0, 8)], BatchMessages::default()),
            Some(Placement::Listed(vec![held(0, 7), held(0, 8)]))
        );
        assert_eq!(place(3, &[], &[id(0, 7), id(0, 8)], batch), None);
    }

    /// Goal: a batch of which some messages were held already is placed exactly when the
    /// answer determines it, and refused when it does not. Method: an id repeated within the
    /// batch, a batch whose ids were all held, and one where only some were.
    #[test]
    fn a_partly_held_batch_is_placed_only_when_the_answer_determines_it() {
        // "a" twice: the second duplicates the first, which was stored at 10.
        let repeated = ids(&[Some("a"), None, Some("a")]);
        let batch = BatchMessages {
            routing: None,
            ids: &repeated,
        };
        assert_eq!(
            place(3, &[range(0, 10, 11)], &[id(0, 10)], batch),
            Some(Placement::Listed(vec![
                stored(0, 10),
                stored(0, 11),
                held(0, 10)
            ]))
        );
        // Every message with an id was held; the one without was stored.
        let all_held = ids(&[Some("x"), None, Some("y")]);
        let batch = BatchMessages {
            routing: None,
            ids: &all_held,
        };
        assert_eq!(
            place(3, &[range(0, 20, 20)], &[id(0, 3), id(0, 4)], batch),
            Some(Placement::Listed(vec![
                held(0, 3),
                stored(0, 20),
                held(0, 4)
            ]))
        );
        // One of "x" and "y" was held, which one the answer does not say.
        assert_eq!(place(3, &[range(0, 20, 21)], &[id(0, 3)], batch), None);
    }
}
