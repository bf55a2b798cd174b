//! Where each message of a publish ended up, from the broker's confirm: the HTTP publish
//! answers with one position per message, in request order, while the core confirms per
//! partition (a range of stored offsets, plus the earlier offsets of messages it recognised as
//! duplicates by message id).
//!
//! This is bookkeeping over the confirm, not a second opinion on routing or dedup: it follows
//! the rules the core applies (keys hash to partitions, unkeyed messages of one batch go to one
//! partition, messages keep their order within a partition, the second of two equal ids in a
//! batch is a duplicate of the first) and gives up — `None` — whenever the confirm does not fit
//! them exactly, rather than guess.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde::Serialize;
use utoipa::ToSchema;
use weir_core::{Confirm, Message};

use super::model::MESSAGE_ID_HEADER;

/// Where one published message is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct PositionView {
    pub partition: u32,
    pub offset: u64,
    /// True when the broker already held a message with this id: `partition` and `offset` are
    /// the earlier copy's, and nothing was stored again.
    pub duplicate: bool,
}

fn message_id(message: &Message) -> Option<&Bytes> {
    message
        .headers
        .iter()
        .find(|(name, _)| name == MESSAGE_ID_HEADER)
        .map(|(_, value)| value)
}

/// Each message's position, in request order.
///
/// `partition_count` is asked only when the confirm spans several partitions (to hash keys);
/// `stored_id` reads the message id stored at a partition's offset, asked only to tell which
/// message a duplicate of an earlier publish was.
pub fn place_messages(
    messages: &[Message],
    confirm: &Confirm,
    partition_count: impl FnOnce() -> Option<u32>,
    mut stored_id: impl FnMut(u32, u64) -> Option<Bytes>,
) -> Option<Vec<PositionView>> {
    // How many of the messages each partition received, stored or recognised as duplicates.
    let mut received: BTreeMap<u32, u64> = BTreeMap::new();
    for range in &confirm.ranges {
        *received.entry(range.partition).or_default() +=
            range.last_offset.checked_sub(range.base_offset)? + 1;
    }
    for duplicate in &confirm.duplicates {
        *received.entry(duplicate.partition).or_default() += 1;
    }
    if received.values().sum::<u64>() != messages.len() as u64 {
        return None;
    }
    let partitions = assign_partitions(messages, &received, partition_count)?;

    let mut next_stored: HashMap<u32, u64> = confirm
        .ranges
        .iter()
        .map(|range| (range.partition, range.base_offset))
        .collect();
    let mut duplicates: HashMap<u32, std::collections::VecDeque<u64>> = HashMap::new();
    for duplicate in &confirm.duplicates {
        duplicates
            .entry(duplicate.partition)
            .or_default()
            .push_back(duplicate.offset);
    }
    // Ids stored by this very publish, per partition: a later equal id duplicates them.
    let mut stored_now: HashMap<(u32, Bytes), u64> = HashMap::new();
    let mut positions = Vec::with_capacity(messages.len());
    for (message, &partition) in messages.iter().zip(&partitions) {
        let id = message_id(message);
        let earlier = id.and_then(|id| stored_now.get(&(partition, id.clone())).copied());
        let position = match earlier {
            Some(offset) => {
                let queue = duplicates.get_mut(&partition)?;
                if queue.pop_front()? != offset {
                    return None;
                }
                PositionView {
                    partition,
                    offset,
                    duplicate: true,
                }
            }
            None => {
                let first_stored = confirm
                    .ranges
                    .iter()
                    .find(|range| range.partition == partition)
                    .map(|range| range.base_offset);
                // A duplicate of an earlier publish points below what this publish stored.
                let old_copy = match (id, duplicates.get(&partition).and_then(|q| q.front())) {
                    (Some(id), Some(&offset))
                        if first_stored.is_none_or(|first| offset < first)
                            && stored_id(partition, offset).as_ref() == Some(id) =>
                    {
                        Some(offset)
                    }
                    _ => None,
                };
                match old_copy {
                    Some(offset) => {
                        duplicates.get_mut(&partition)?.pop_front();
                        PositionView {
                            partition,
                            offset,
                            duplicate: true,
                        }
                    }
                    None => {
                        let next = next_stored.get_mut(&partition)?;
                        let offset = *next;
                        *next += 1;
                        if let Some(id) = id {
                            stored_now.insert((partition, id.clone()), offset);
                        }
                        PositionView {
                            partition,
                            offset,
                            duplicate: false,
                        }
                    }
                }
            }
        };
        positions.push(position);
    }
    // Every stored offset and every duplicate must have been accounted for.
    let stored_all = confirm
        .ranges
        .iter()
        .all(|range| next_stored.get(&range.partition) == Some(&(range.last_offset + 1)));
    let duplicates_all = duplicates.values().all(|queue| queue.is_empty());
    (stored_all && duplicates_all).then_some(positions)
}

/// The partition of each message: the only one if the confirm names one; otherwise keyed
/// messages by key hash and unkeyed ones to the partition with messages left unexplained.
fn assign_partitions(
    messages: &[Message],
    received: &BTreeMap<u32, u64>,
    partition_count: impl FnOnce() -> Option<u32>,
) -> Option<Vec<u32>> {
    if let [(&partition, _)] = received.iter().collect::<Vec<_>>()[..] {
        return Some(vec![partition; messages.len()]);
    }
    let partition_count = partition_count()?;
    let keyed: Vec<Option<u32>> = messages
        .iter()
        .map(|message| {
            message
                .key
                .as_ref()
                .map(|key| weir_core::partition_for_key(key, partition_count))
        })
        .collect();
    let mut unexplained = received.clone();
    for partition in keyed.iter().flatten() {
        let count = unexplained.get_mut(partition)?;
        *count = count.checked_sub(1)?;
    }
    let mut left = unexplained.iter().filter(|(_, count)| **count > 0);
    let unkeyed = left.next().map(|(&partition, _)| partition);
    if left.next().is_some() {
        return None;
    }
    keyed
        .into_iter()
        .map(|partition| partition.or(unkeyed))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::{Duplicate, Durability, PublishedRange};

    fn confirm(ranges: &[(u32, u64, u64)], duplicates: &[(u32, u64)]) -> Confirm {
        Confirm {
            ranges: ranges
                .iter()
                .map(|&(partition, base_offset, last_offset)| PublishedRange {
                    partition,
                    base_offset,
                    last_offset,
                })
                .collect(),
            duplicates: duplicates
                .iter()
                .map(|&(partition, offset)| Duplicate { partition, offset })
                .collect(),
            durability: Durability::Fsynced,
        }
    }

    fn at(partition: u32, offset: u64) -> PositionView {
        PositionView {
            partition,
            offset,
            duplicate: false,
        }
    }

    fn duplicate_at(partition: u32, offset: u64) -> PositionView {
        PositionView {
            partition,
            offset,
            duplicate: true,
        }
    }

    fn with_id(value: &str, id: &str) -> Message {
        Message::new(value.to_owned()).with_header(MESSAGE_ID_HEADER, id.to_owned())
    }

    fn no_reads(_: u32, _: u64) -> Option<Bytes> {
        panic!("no stored id is needed")
    }

    #[test]
    fn one_range_numbers_messages_in_order() {
        let messages = vec![Message::new("a"), Message::new("b")];
        let positions = place_messages(&messages, &confirm(&[(2, 10, 11)], &[]), || None, no_reads);
        assert_eq!(positions, Some(vec![at(2, 10), at(2, 11)]));
    }

    #[test]
    fn keyed_and_unkeyed_messages_are_placed_by_key_hash_and_leftover_room() {
        let count = 4;
        let key_partition = weir_core::partition_for_key(b"k", count);
        let unkeyed_partition = (key_partition + 1) % count;
        let messages = vec![
            Message::new("x"),
            Message::new("y").with_key("k"),
            Message::new("z"),
        ];
        let mut ranges = vec![(key_partition, 5, 5), (unkeyed_partition, 7, 8)];
        ranges.sort_unstable();
        let positions = place_messages(&messages, &confirm(&ranges, &[]), || Some(count), no_reads);
        assert_eq!(
            positions,
            Some(vec![
                at(unkeyed_partition, 7),
                at(key_partition, 5),
                at(unkeyed_partition, 8),
            ])
        );
    }

    #[test]
    fn a_repeated_id_within_the_batch_points_at_its_first_copy() {
        let messages = vec![
            with_id("a", "m-1"),
            with_id("b", "m-2"),
            with_id("a", "m-1"),
        ];
        let positions = place_messages(
            &messages,
            &confirm(&[(0, 3, 4)], &[(0, 3)]),
            || None,
            no_reads,
        );
        assert_eq!(
            positions,
            Some(vec![at(0, 3), at(0, 4), duplicate_at(0, 3)])
        );
    }

    #[test]
    fn a_duplicate_of_an_earlier_publish_is_told_apart_by_the_stored_id() {
        let messages = vec![with_id("new", "m-2"), with_id("old", "m-1")];
        let stored = |partition: u32, offset: u64| {
            assert_eq!((partition, offset), (0, 0));
            Some(Bytes::from("m-1"))
        };
        let positions = place_messages(
            &messages,
            &confirm(&[(0, 7, 7)], &[(0, 0)]),
            || None,
            stored,
        );
        assert_eq!(positions, Some(vec![at(0, 7), duplicate_at(0, 0)]));
        let all_old = place_messages(
            &[with_id("old", "m-1")],
            &confirm(&[], &[(0, 0)]),
            || None,
            stored,
        );
        assert_eq!(all_old, Some(vec![duplicate_at(0, 0)]));
    }

    #[test]
    fn a_confirm_that_does_not_fit_the_messages_gives_no_positions() {
        let messages = vec![Message::new("a"), Message::new("b")];
        assert_eq!(
            place_messages(&messages, &confirm(&[(0, 0, 0)], &[]), || Some(1), no_reads),
            None
        );
        let unexplained_duplicate = vec![Message::new("a"), Message::new("b")];
        assert_eq!(
            place_messages(
                &unexplained_duplicate,
                &confirm(&[(0, 5, 5)], &[(0, 1)]),
                || None,
                no_reads
            ),
            None
        );
    }
}
