//! Which offsets of one partition a queue subscription has acknowledged: an ack floor plus the
//! acknowledged ranges above it. Pure data, persisted by the catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Invariant: ranges are non-empty, disjoint, non-adjacent, and start above `floor`
/// (`floor` itself is never acked, or it would have been folded into the floor).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckState {
    /// Every offset below the floor is acknowledged.
    floor: u64,
    /// start → end (exclusive) of acknowledged ranges above the floor.
    ranges: BTreeMap<u64, u64>,
}

impl AckState {
    pub fn new(floor: u64) -> AckState {
        AckState {
            floor,
            ranges: BTreeMap::new(),
        }
    }

    pub fn floor(&self) -> u64 {
        self.floor
    }

    pub fn is_acked(&self, offset: u64) -> bool {
        if offset < self.floor {
            return true;
        }
        self.ranges
            .range(..=offset)
            .next_back()
            .is_some_and(|(_, &end)| offset < end)
    }

    /// Marks `offset` acknowledged; returns false if it already was.
    pub fn ack(&mut self, offset: u64) -> bool {
        if self.is_acked(offset) {
            return false;
        }
        let mut start = offset;
        let mut end = offset + 1;
        // Merge with a range ending exactly at `offset`.
        if let Some((&previous_start, &previous_end)) = self.ranges.range(..offset).next_back()
            && previous_end == offset
        {
            start = previous_start;
            self.ranges.remove(&previous_start);
        }
        // Merge with a range starting right after.
        if let Some(next_end) = self.ranges.remove(&end) {
            end = next_end;
        }
        if start == self.floor {
            self.floor = end;
        } else {
            self.ranges.insert(start, end);
        }
        debug_assert!(
            self.ranges
                .keys()
                .all(|&range_start| range_start > self.floor)
        );
        true
    }

    /// Makes an acknowledged `offset` pending again (a dead letter redriven to the
    /// subscription it came from); returns false if it was not acknowledged.
    pub fn unack(&mut self, offset: u64) -> bool {
        if offset < self.floor {
            if offset + 1 < self.floor {
                self.ranges.insert(offset + 1, self.floor);
            }
            self.floor = offset;
            return true;
        }
        let Some((&start, &end)) = self.ranges.range(..=offset).next_back() else {
            return false;
        };
        if offset >= end {
            return false;
        }
        self.ranges.remove(&start);
        if start < offset {
            self.ranges.insert(start, offset);
        }
        if offset + 1 < end {
            self.ranges.insert(offset + 1, end);
        }
        true
    }

    /// Moves the floor to `offset` (a reset, or retention deleting older data): everything
    /// below is acknowledged, nothing at or above it is.
    pub fn reset(&mut self, offset: u64) {
        self.floor = offset;
        self.ranges.clear();
    }

    /// Acknowledges everything below `offset` and keeps what is above it.
    pub fn raise_floor(&mut self, offset: u64) {
        if offset <= self.floor {
            return;
        }
        self.floor = offset;
        let above: BTreeMap<u64, u64> = self
            .ranges
            .iter()
            .filter_map(|(&start, &end)| (end > offset).then_some((start.max(offset), end)))
            .collect();
        self.ranges = above;
        if let Some(end) = self.ranges.remove(&self.floor) {
            self.floor = end;
        }
    }

    /// How many offsets in `[floor, end)` are acknowledged.
    pub fn acked_between_floor_and(&self, end: u64) -> u64 {
        self.ranges
            .iter()
            .map(|(&start, &range_end)| range_end.min(end).saturating_sub(start))
            .sum()
    }

    /// The next offset at or after `from` that is not acknowledged.
    pub fn next_unacked(&self, from: u64) -> u64 {
        let mut offset = from.max(self.floor);
        while let Some((_, &end)) = self
            .ranges
            .range(..=offset)
            .next_back()
            .filter(|(_, end)| offset < **end)
        {
            offset = end;
        }
        offset
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        /// The ranges agree with a plain set of acked offsets after any sequence of acks,
        /// floor raises and queries.
        #[test]
        fn matches_a_set_of_acked_offsets(operations in proptest::collection::vec((0u8..5, 0u64..64), 1..200)) {
            let mut state = AckState::new(0);
            let mut model = BTreeSet::new();
            let mut model_floor = 0u64;
            for (operation, offset) in operations {
                match operation {
                    0 | 1 => {
                        let newly = state.ack(offset);
                        let expected = offset >= model_floor && model.insert(offset);
                        prop_assert_eq!(newly, expected);
                    }
                    2 => {
                        state.raise_floor(offset);
                        model_floor = model_floor.max(offset);
                    }
                    3 => {
                        let was_acked = offset < model_floor || model.contains(&offset);
                        prop_assert_eq!(state.unack(offset), was_acked);
                        if offset < model_floor {
                            model.extend(offset..model_floor);
                            model_floor = offset;
                        }
                        model.remove(&offset);
                    }
                    _ => {
                        let expected = (offset.max(model_floor)..).find(|o| !model.contains(o)).unwrap();
                        prop_assert_eq!(state.next_unacked(offset), expected);
                    }
                }
                while model.contains(&model_floor) {
                    model_floor += 1;
                }
                prop_assert_eq!(state.floor(), model_floor);
                for probe in 0..70 {
                    prop_assert_eq!(state.is_acked(probe), probe < model_floor || model.contains(&probe));
                }
                let above = model.range(model_floor..70).count() as u64;
                prop_assert_eq!(state.acked_between_floor_and(70), above);
            }
        }
    }

    #[test]
    fn acks_in_any_order_fold_into_the_floor() {
        let mut state = AckState::new(10);
        assert!(state.ack(12));
        assert!(state.ack(11));
        assert_eq!(state.floor(), 10);
        assert!(state.ack(10));
        assert_eq!(state.floor(), 13);
        assert!(!state.ack(11));
    }
}
