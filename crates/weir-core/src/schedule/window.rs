//! The near-term window: the `(due, id)` of every scheduled entry in the buckets loaded so
//! far, in due order. Pure bookkeeping (no I/O); the broker loads buckets from the store and
//! keeps this consistent with it under one mutex.
//!
//! Invariant: every entry on disk with `bucket(due) < loaded` is in `buckets`, or has been
//! taken for hand-over, or is stale (cancelled or rescheduled since: the hand-over checks the
//! store before delivering).
//!
//! Loading bucket `b` reads the store without holding the mutex, so entries written meanwhile
//! are caught around the read: [`Window::begin_load`] marks a load in progress, inserts of due
//! times not loaded yet during it are kept in `arrived`, and cancels of unloaded entries are
//! kept in `cancelled` until no load that could have read them before their delete is running.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::{bucket_of, bucket_start};

/// One scheduled entry in due order: `(due_ms, id)`.
pub type Due = (i64, u64);

/// Where a cancelled entry was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancelled {
    /// It was waiting in the window; it is gone from it now.
    FromWindow,
    /// Its bucket is not loaded: only the store holds it.
    NotLoaded,
    /// Its bucket is loaded but it is not in the window: it is being handed over (or was).
    TooLate,
}

#[derive(Debug, Default)]
pub struct Window {
    /// Loaded entries by bucket, each bucket in due order.
    buckets: BTreeMap<u64, BTreeSet<Due>>,
    len: usize,
    /// Every bucket below this is loaded.
    loaded: u64,
    /// Set while a load reads the store: the inserts of unloaded due times since it began.
    loading: Option<Vec<Due>>,
    /// Cancelled entries of unloaded buckets that a load might still read from the store.
    cancelled: HashSet<Due>,
}

impl Window {
    /// The first bucket not loaded.
    #[must_use]
    pub fn loaded(&self) -> u64 {
        self.loaded
    }

    /// Whether the next bucket should be loaded at `now_ms`: it starts within `lookahead_ms`,
    /// fewer than `cap` entries wait, and no load is running.
    #[must_use]
    pub fn wants_load(&self, now_ms: i64, lookahead_ms: i64, cap: usize) -> bool {
        self.loading.is_none()
            && self.len < cap
            && bucket_start(self.loaded) <= now_ms.saturating_add(lookahead_ms)
    }

    /// Marks a load as running and returns the first bucket it should read.
    pub fn begin_load(&mut self) -> u64 {
        self.loading = Some(Vec::new());
        self.loaded
    }

    /// Ends a load that read `entries` (all in one bucket in `loaded..until`, sorted outside
    /// the lock so holding it stays short) and found nothing else below `until`.
    pub fn finish_load(&mut self, until: u64, mut entries: BTreeSet<Due>) {
        let arrived = self.loading.take().unwrap_or_default();
        let from = self.loaded;
        let in_range = |due: &Due| (from..until).contains(&bucket_of(due.0));
        entries.retain(|due| in_range(due) && !self.cancelled.contains(due));
        let one_bucket = match (entries.first(), entries.last()) {
            (Some(first), Some(last)) => bucket_of(first.0) == bucket_of(last.0),
            _ => false,
        };
        if one_bucket {
            let bucket = self
                .buckets
                .entry(bucket_of(entries.first().map_or(0, |due| due.0)));
            let set = bucket.or_default();
            let before = set.len();
            set.append(&mut entries);
            self.len += set.len() - before;
        } else {
            for due in entries {
                self.insert(due);
            }
        }
        for due in arrived {
            if in_range(&due) && !self.cancelled.contains(&due) {
                self.insert(due);
            }
        }
        self.loaded = self.loaded.max(until);
        let loaded = self.loaded;
        self.cancelled
            .retain(|&(due_ms, _)| bucket_of(due_ms) >= loaded);
    }

    /// Ends a load that failed: nothing is loaded; what arrived meanwhile is on disk, where
    /// the next load will find it.
    pub fn abort_load(&mut self) {
        self.loading = None;
    }

    /// Records an entry just written to the store. Returns whether it waits in memory.
    pub fn add(&mut self, due: Due) -> bool {
        if bucket_of(due.0) < self.loaded {
            self.insert(due);
            true
        } else {
            if let Some(arrived) = &mut self.loading {
                arrived.push(due);
            }
            false
        }
    }

    /// Takes an entry out before its delete is written; see [`Cancelled`]. After the delete
    /// commits, call [`forget_cancel`](Self::forget_cancel) if it was `NotLoaded`.
    pub fn cancel(&mut self, due: Due) -> Cancelled {
        if bucket_of(due.0) >= self.loaded {
            self.cancelled.insert(due);
            return Cancelled::NotLoaded;
        }
        if self.remove(due) {
            Cancelled::FromWindow
        } else {
            Cancelled::TooLate
        }
    }

    /// The delete of a `NotLoaded` cancel has committed: loads starting from now cannot see
    /// the entry; a load running now may have, and forgets it when it finishes.
    pub fn forget_cancel(&mut self, due: Due) {
        if self.loading.is_none() {
            self.cancelled.remove(&due);
        }
    }

    /// Takes up to `limit` entries due at or before `now_ms`, earliest first.
    pub fn take_due(&mut self, now_ms: i64, limit: usize) -> Vec<Due> {
        let mut taken = Vec::new();
        while taken.len() < limit {
            let Some(mut first) = self.buckets.first_entry() else {
                break;
            };
            let set = first.get_mut();
            while taken.len() < limit {
                match set.first() {
                    Some(&due) if due.0 <= now_ms => {
                        set.pop_first();
                        taken.push(due);
                    }
                    _ => break,
                }
            }
            if !set.is_empty() {
                break;
            }
            first.remove();
        }
        self.len -= taken.len();
        taken
    }

    /// Puts back entries taken for a hand-over that failed.
    pub fn restore(&mut self, entries: impl IntoIterator<Item = Due>) {
        for due in entries {
            self.insert(due);
        }
    }

    /// The first bucket that may still hold entries waiting in memory: everything below it
    /// is loaded and taken.
    #[must_use]
    pub fn taken_below(&self) -> u64 {
        self.buckets
            .first_key_value()
            .map_or(self.loaded, |(&bucket, _)| bucket.min(self.loaded))
    }

    /// The earliest due time waiting in memory.
    #[must_use]
    pub fn next_due(&self) -> Option<i64> {
        self.buckets
            .first_key_value()
            .and_then(|(_, set)| set.first())
            .map(|&(due_ms, _)| due_ms)
    }

    fn insert(&mut self, due: Due) {
        if self
            .buckets
            .entry(bucket_of(due.0))
            .or_default()
            .insert(due)
        {
            self.len += 1;
        }
    }

    fn remove(&mut self, due: Due) -> bool {
        let bucket = bucket_of(due.0);
        let Some(set) = self.buckets.get_mut(&bucket) else {
            return false;
        };
        let removed = set.remove(&due);
        if set.is_empty() {
            self.buckets.remove(&bucket);
        }
        if removed {
            self.len -= 1;
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::BUCKET_MS;

    #[test]
    fn entries_come_due_in_order_across_buckets() {
        let mut window = Window::default();
        assert!(window.wants_load(0, 0, 10));
        assert_eq!(window.begin_load(), 0);
        assert!(!window.wants_load(0, 0, 10), "one load at a time");
        window.finish_load(2, [(BUCKET_MS + 5, 1), (7, 2), (7, 0)].into());
        assert_eq!(window.loaded(), 2);
        assert!(window.add((3, 9)), "a loaded bucket takes new entries");
        assert!(!window.add((2 * BUCKET_MS, 8)), "an unloaded one does not");
        assert_eq!(window.len, 4);
        assert_eq!(window.next_due(), Some(3));
        assert_eq!(window.take_due(7, 2), vec![(3, 9), (7, 0)]);
        assert_eq!(
            window.take_due(BUCKET_MS + 5, 10),
            vec![(7, 2), (BUCKET_MS + 5, 1)]
        );
        assert!((window.len == 0));
        window.restore([(7, 2)]);
        assert_eq!(window.take_due(i64::MAX, 10), vec![(7, 2)]);
    }

    /// The races a load must survive: an insert and a cancel while it reads the store.
    #[test]
    fn a_load_keeps_inserts_and_cancels_that_happen_while_it_reads() {
        let mut window = Window::default();
        let from = window.begin_load();
        // Written after the load's read began: the read may not have seen it.
        assert!(!window.add((100, 1)));
        // Cancelled after the read: the read may have seen it.
        assert_eq!(window.cancel((200, 2)), Cancelled::NotLoaded);
        window.forget_cancel((200, 2));
        assert_eq!(from, 0);
        window.finish_load(1, [(200, 2), (300, 3)].into());
        assert_eq!(window.take_due(i64::MAX, 10), vec![(100, 1), (300, 3)]);

        // With no load running, a committed cancel is forgotten at once.
        assert_eq!(window.cancel((BUCKET_MS, 4)), Cancelled::NotLoaded);
        window.forget_cancel((BUCKET_MS, 4));
        window.begin_load();
        window.finish_load(2, BTreeSet::new());
        assert!((window.len == 0));
        assert!(window.cancelled.is_empty());
    }

    #[test]
    fn cancel_tells_waiting_from_taken() {
        let mut window = Window::default();
        window.begin_load();
        window.finish_load(1, [(10, 1), (20, 2)].into());
        assert_eq!(window.taken_below(), 0);
        assert_eq!(window.take_due(10, 10), vec![(10, 1)]);
        assert_eq!(window.cancel((10, 1)), Cancelled::TooLate);
        assert_eq!(window.cancel((20, 2)), Cancelled::FromWindow);
        assert!((window.len == 0));
        assert_eq!(window.next_due(), None);
    }

    #[test]
    fn an_aborted_load_loads_nothing() {
        let mut window = Window::default();
        window.begin_load();
        assert!(!window.add((5, 1)));
        window.abort_load();
        assert_eq!(window.loaded(), 0);
        assert!((window.len == 0));
        assert!(window.wants_load(0, 0, 1));
    }
}
