//! Leader epochs as Kafka clients see them: one number in Metadata, in the stored batches'
//! headers, in ListOffsets and in OffsetForLeaderEpoch, or clients loop on offset validation.
//!
//! A broker group's leader stamps each batch with its Raft term (the replication log store
//! writes it into the batch's `partition_leader_epoch`), so a partition's leader epoch is the
//! term of the group's leader ([`current`]); a standalone broker stamps 0 and is in epoch 0
//! forever.
//!
//! OffsetForLeaderEpoch needs where each epoch starts in a queue (Kafka keeps a leader-epoch
//! file per partition for it). Weir reads it from the batches themselves: epochs never go
//! down along a queue (terms only grow along the log, and a queue holds committed batches
//! only), so the first offset of the first epoch after `e` is found by a binary search over
//! the queue's offsets, each probe one consume-queue entry and one batch header
//! (`MessageLog::leader_epoch_at`). What was found is kept per queue ([`EpochHistory`], in
//! [`LeaderEpochs`]): afterwards a request reads one or two batch headers when the queue has
//! grown since, none when not, and a binary search only when a new epoch has begun.
//!
//! ```text
//! queue offsets   0 1 2 3 4 5 6 7 8 9        (max = 10; the leader is in term 7)
//! batch epochs    2 2 2 2 5 5 5 5 5 5
//! history         [(2, 0), (5, 4)], checked_to 10
//! end of epoch 2 → (2, 4)   end of 3 or 4 → (2, 4)   end of 5, 6 → (5, 10)   end of 7 → (7, 10)
//! end of 1       → (1, 0)   end of 8      → (-1, -1) (unknown: newer than the leader's)
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use weir_store::QueueOffsets;

use crate::state::BrokerState;

/// Kafka's "no epoch" and "no offset" in epoch answers.
pub(crate) const UNDEFINED: i32 = -1;

/// Most epochs kept per queue; the oldest go first (an older epoch is then answered with the
/// start of the oldest kept one, as Kafka answers an epoch older than its cache).
const MAX_EPOCHS_PER_QUEUE: usize = 256;

/// Most new epochs one update looks for (a binary search each); the rest wait for the next.
const MAX_NEW_EPOCHS_PER_UPDATE: usize = 16;

/// Most queues whose history is kept; past it the cache starts again (histories are rebuilt
/// from the batches on demand).
const MAX_QUEUES: usize = 65_536;

/// The leader epoch of every partition this broker serves now: the term of its broker group
/// as this replica knows it (0 standalone).
pub(crate) fn current(state: &BrokerState) -> i32 {
    if !state.log.is_replicated() {
        return 0;
    }
    i32::try_from(state.replica.borrow().term).unwrap_or(i32::MAX)
}

/// Kafka's check of the leader epoch a client believes current (`requested`) against the
/// broker's (`current`): a newer one is `UNKNOWN_LEADER_EPOCH` (this broker has not caught
/// up yet), an older one `FENCED_LEADER_EPOCH` (the client has not; it refreshes its
/// metadata), -1 is not checked.
pub(crate) fn check_current(requested: i32, current: i32) -> Result<(), ResponseError> {
    match requested {
        r if r < 0 || r == current => Ok(()),
        r if r > current => Err(ResponseError::UnknownLeaderEpoch),
        _ => Err(ResponseError::FencedLeaderEpoch),
    }
}

/// Where each leader epoch starts in one queue, for the queue offsets below `checked_to`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochHistory {
    /// (epoch, its first queue offset); both strictly increasing.
    starts: Vec<(i32, u64)>,
    /// Every readable offset below this is accounted for in `starts`.
    checked_to: u64,
}

impl EpochHistory {
    /// A queue whose batches all carry `epoch` (a standalone broker's: no reads needed).
    pub fn constant(epoch: i32, offsets: QueueOffsets) -> EpochHistory {
        let starts = if offsets.max > offsets.min {
            vec![(epoch, offsets.min)]
        } else {
            Vec::new()
        };
        EpochHistory {
            starts,
            checked_to: offsets.max,
        }
    }

    /// Brings the history up to the queue's readable range now; `epoch_at` reads the epoch
    /// of the batch holding a queue offset (`None`: not readable).
    pub fn update(&mut self, offsets: QueueOffsets, mut epoch_at: impl FnMut(u64) -> Option<i32>) {
        let QueueOffsets { min, max } = offsets;
        if max < self.checked_to || self.checked_to < min {
            // Cut, replaced, or aged past what was known: found again from the batches.
            *self = EpochHistory::default();
        }
        self.forget_before(min);
        if max == self.checked_to {
            return;
        }
        // The last batch accounted for must still carry its epoch, else the queue was
        // replaced (a topic deleted and created again) since.
        if let Some(&(last, _)) = self.starts.last()
            && self.checked_to > min
            && epoch_at(self.checked_to - 1) != Some(last)
        {
            *self = EpochHistory::default();
        }
        let mut from = self.checked_to.max(min);
        if self.starts.is_empty() {
            let Some(first) = epoch_at(from) else {
                return;
            };
            self.starts.push((first, from));
            from += 1;
        }
        for _ in 0..MAX_NEW_EPOCHS_PER_UPDATE {
            let last = self.latest_stamped().unwrap_or(i32::MIN);
            let newest = match epoch_at(max - 1) {
                Some(e) if e > last && from < max => e,
                // Nothing newer (an unreadable batch counts as the same epoch).
                _ => {
                    self.checked_to = max;
                    return;
                }
            };
            // The first offset in [from, max) whose batch is newer than `last`.
            let (mut lo, mut hi, mut found) = (from, max - 1, newest);
            while lo < hi {
                let mid = lo + (hi - lo) / 2;
                match epoch_at(mid) {
                    Some(e) if e > last => {
                        hi = mid;
                        found = e;
                    }
                    _ => lo = mid + 1,
                }
            }
            self.push(found, lo);
            from = lo + 1;
            self.checked_to = from;
        }
    }

    /// Drops what lies below the queue's first readable offset; the epoch holding `min` then
    /// starts at `min` (as Kafka's cache does when a log's start moves up).
    fn forget_before(&mut self, min: u64) {
        let gone = self
            .starts
            .iter()
            .skip(1)
            .take_while(|s| s.1 <= min)
            .count();
        self.starts.drain(..gone);
        if let Some(first) = self.starts.first_mut() {
            first.1 = first.1.max(min);
        }
    }

    fn push(&mut self, epoch: i32, start: u64) {
        if self.starts.len() == MAX_EPOCHS_PER_QUEUE {
            self.starts.remove(0);
        }
        self.starts.push((epoch, start));
    }

    /// The newest epoch a batch of this queue carries, if any is known.
    fn latest_stamped(&self) -> Option<i32> {
        self.starts.last().map(|s| s.0)
    }

    /// OffsetForLeaderEpoch's answer for `requested`, Kafka's rules, with the leader in epoch
    /// `current` and the queue ending at `end`: (the largest epoch ≤ `requested`, the first
    /// offset of the next epoch, or `end` for the latest); an epoch older than any known is
    /// answered with itself and the first known start; an unknown one (newer than the
    /// leader's, or -1) with (-1, -1).
    pub fn end_of(&self, requested: i32, current: i32, end: u64) -> (i32, i64) {
        let latest = self.latest(current);
        if requested < 0 || requested > latest {
            return (UNDEFINED, i64::from(UNDEFINED));
        }
        if requested == latest {
            return (latest, end as i64);
        }
        let next_start = self
            .starts
            .iter()
            .find(|s| s.0 > requested)
            .map_or(end, |s| s.1);
        let epoch = self
            .starts
            .iter()
            .rev()
            .find(|s| s.0 <= requested)
            .map_or(requested, |s| s.0);
        (epoch, next_start as i64)
    }

    /// The epoch of the batch holding `offset` (for ListOffsets); -1 when not known.
    pub fn epoch_of(&self, offset: u64) -> i32 {
        if offset >= self.checked_to {
            return UNDEFINED;
        }
        self.starts
            .iter()
            .rev()
            .find(|s| s.1 <= offset)
            .map_or(UNDEFINED, |s| s.0)
    }

    /// The newest epoch of this queue: the leader's (`current`), or a batch's if newer.
    pub fn latest(&self, current: i32) -> i32 {
        self.latest_stamped().map_or(current, |e| e.max(current))
    }
}

/// Every queue's [`EpochHistory`], found lazily when a client asks (bounded: see
/// [`MAX_QUEUES`], [`MAX_EPOCHS_PER_QUEUE`]).
#[derive(Debug, Default)]
pub(crate) struct LeaderEpochs {
    queues: Mutex<HashMap<(String, u32), SharedHistory>>,
}

/// One queue's history, locked on its own while it is brought up to date.
type SharedHistory = Arc<Mutex<EpochHistory>>;

impl LeaderEpochs {
    /// The history of `topic`/`queue_id`, up to date with its readable range (also given).
    /// Standalone, every batch carries epoch 0 and nothing is read or kept.
    pub fn history(
        &self,
        state: &BrokerState,
        topic: &str,
        queue_id: u32,
    ) -> (EpochHistory, QueueOffsets) {
        let offsets = state.log.queue_offsets(topic, queue_id);
        if !state.log.is_replicated() {
            return (EpochHistory::constant(0, offsets), offsets);
        }
        let entry = {
            let mut queues = self.queues.lock();
            if queues.len() >= MAX_QUEUES && !queues.contains_key(&(topic.to_owned(), queue_id)) {
                queues.clear();
            }
            queues
                .entry((topic.to_owned(), queue_id))
                .or_default()
                .clone()
        };
        let mut history = entry.lock();
        history.update(offsets, |offset| {
            state.log.leader_epoch_at(topic, queue_id, offset)
        });
        (history.clone(), offsets)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use proptest::prelude::*;

    use super::*;

    fn range(min: u64, max: u64) -> QueueOffsets {
        QueueOffsets { min, max }
    }

    /// A queue whose offset `i` is in epoch `epochs[i]` (offsets below `min` are gone);
    /// counts the reads.
    struct Queue {
        epochs: Vec<i32>,
        min: u64,
        reads: Cell<u64>,
    }

    impl Queue {
        fn new(epochs: &[i32]) -> Queue {
            Queue {
                epochs: epochs.to_vec(),
                min: 0,
                reads: Cell::new(0),
            }
        }

        fn offsets(&self) -> QueueOffsets {
            range(self.min, self.epochs.len() as u64)
        }

        fn epoch_at(&self, offset: u64) -> Option<i32> {
            self.reads.set(self.reads.get() + 1);
            if offset < self.min {
                return None;
            }
            self.epochs.get(offset as usize).copied()
        }

        fn update(&self, history: &mut EpochHistory) {
            history.update(self.offsets(), |o| self.epoch_at(o));
        }
    }

    #[test]
    fn the_worked_example_of_the_module_doc() {
        let q = Queue::new(&[2, 2, 2, 2, 5, 5, 5, 5, 5, 5]);
        let mut h = EpochHistory::default();
        q.update(&mut h);
        assert_eq!(h.starts, vec![(2, 0), (5, 4)]);
        let ends: Vec<(i32, i64)> = (-1..=8).map(|e| h.end_of(e, 7, 10)).collect();
        assert_eq!(
            ends,
            vec![
                (-1, -1),
                (0, 0),
                (1, 0),
                (2, 4),
                (2, 4),
                (2, 4),
                (5, 10),
                (5, 10),
                (7, 10),
                (-1, -1),
            ]
        );
        assert_eq!(h.epoch_of(3), 2);
        assert_eq!(h.epoch_of(4), 5);
        assert_eq!(h.epoch_of(10), -1);
        assert_eq!(h.latest(7), 7);
    }

    #[test]
    fn the_latest_stamped_epoch_ends_at_the_log_end_while_the_leader_is_in_it() {
        let q = Queue::new(&[0, 0, 3, 3]);
        let mut h = EpochHistory::default();
        q.update(&mut h);
        assert_eq!(h.end_of(3, 3, 4), (3, 4));
        assert_eq!(h.end_of(0, 3, 4), (0, 2));
        assert_eq!(h.end_of(4, 3, 4), (-1, -1), "newer than the leader's");
    }

    #[test]
    fn an_empty_queue_knows_only_the_leaders_epoch() {
        let mut h = EpochHistory::default();
        h.update(range(0, 0), |_| panic!("nothing to read"));
        assert_eq!(h.end_of(4, 4, 0), (4, 0));
        assert_eq!(h.end_of(2, 4, 0), (2, 0));
        assert_eq!(h.latest(4), 4);
    }

    #[test]
    fn a_grown_queue_in_the_same_epoch_costs_two_reads_and_an_unchanged_one_none() {
        let mut q = Queue::new(&[1; 1000]);
        let mut h = EpochHistory::default();
        q.update(&mut h);
        q.reads.set(0);
        q.update(&mut h);
        assert_eq!(q.reads.get(), 0, "unchanged");
        q.epochs.extend([1; 500]);
        q.update(&mut h);
        assert_eq!(
            q.reads.get(),
            2,
            "the last known batch and the new last one"
        );
        assert_eq!(h.starts, vec![(1, 0)]);
    }

    #[test]
    fn a_new_epoch_is_found_by_a_binary_search() {
        let mut epochs = vec![1; 100_000];
        epochs.extend(vec![4; 30_000]);
        let q = Queue::new(&epochs);
        let mut h = EpochHistory::default();
        q.update(&mut h);
        assert_eq!(h.starts, vec![(1, 0), (4, 100_000)]);
        assert!(q.reads.get() < 40, "{} reads", q.reads.get());
    }

    #[test]
    fn retention_moves_the_first_epoch_up_and_drops_older_ones() {
        let mut q = Queue::new(&[1, 1, 2, 2, 3, 3]);
        let mut h = EpochHistory::default();
        q.update(&mut h);
        q.min = 3;
        q.update(&mut h);
        assert_eq!(h.starts, vec![(2, 3), (3, 4)]);
        assert_eq!(h.end_of(1, 3, 6), (1, 3), "older than any known");
    }

    #[test]
    fn a_replaced_queue_is_found_again() {
        let mut q = Queue::new(&[1, 1, 2, 2]);
        let mut h = EpochHistory::default();
        q.update(&mut h);
        // Deleted and made again, in later terms: shorter, then as long and longer.
        q.epochs = vec![5];
        q.update(&mut h);
        assert_eq!(h.starts, vec![(5, 0)]);
        q.epochs = vec![5, 6, 6, 6, 6];
        let other = Queue::new(&[7, 7, 7, 7, 7, 7]);
        q.update(&mut h);
        assert_eq!(h.starts, vec![(5, 0), (6, 1)]);
        other.update(&mut h);
        assert_eq!(h.starts, vec![(7, 0)], "the last known batch changed epoch");
    }

    #[test]
    fn unreadable_batches_never_loop() {
        let mut h = EpochHistory::default();
        h.update(range(0, 50), |_| None);
        assert_eq!(h, EpochHistory::default(), "tried again next time");
        h.update(range(0, 50), |o| (o == 0).then_some(1));
        assert_eq!(h.starts, vec![(1, 0)]);
        assert_eq!(h.checked_to, 50);
    }

    #[test]
    fn the_fencing_rules_of_kafka() {
        assert_eq!(check_current(-1, 5), Ok(()));
        assert_eq!(check_current(5, 5), Ok(()));
        assert_eq!(check_current(6, 5), Err(ResponseError::UnknownLeaderEpoch));
        assert_eq!(check_current(4, 5), Err(ResponseError::FencedLeaderEpoch));
    }

    #[test]
    fn the_history_is_bounded() {
        let epochs: Vec<i32> = (0..(MAX_EPOCHS_PER_QUEUE as i32 + 40))
            .flat_map(|e| [e, e])
            .collect();
        let q = Queue::new(&epochs);
        let mut h = EpochHistory::default();
        for _ in 0..100 {
            q.update(&mut h);
        }
        assert_eq!(h.starts.len(), MAX_EPOCHS_PER_QUEUE);
        assert_eq!(h.checked_to, epochs.len() as u64);
        let last = *epochs.last().unwrap_or(&0);
        assert_eq!(h.end_of(last - 1, last, 999), (last - 1, 2 * last as i64));
    }

    proptest! {
        /// Against the definition, over any queue whose epochs never go down, found in any
        /// number of growth steps, with its start moved up by retention.
        #[test]
        fn answers_match_a_scan_of_every_batch(
            runs in proptest::collection::vec((1u8..4, 1usize..40), 0..12),
            steps in proptest::collection::vec(0usize..200, 1..5),
            min in 0u64..20,
            current_extra in 0i32..3,
        ) {
            let mut epochs = Vec::new();
            let mut epoch = 0i32;
            for (gap, len) in runs {
                epoch += i32::from(gap);
                epochs.extend(std::iter::repeat_n(epoch, len));
            }
            let mut h = EpochHistory::default();
            let mut grown = 0usize;
            for step in steps {
                grown = (grown + step).min(epochs.len());
                let q = Queue { epochs: epochs[..grown].to_vec(), min: 0, reads: Cell::new(0) };
                q.update(&mut h);
            }
            let q = Queue {
                epochs: epochs.clone(),
                // Some batches stay (an emptied queue: see the retention test above).
                min: min % (epochs.len() as u64).max(1),
                reads: Cell::new(0),
            };
            for _ in 0..epochs.len() + 1 {
                q.update(&mut h);
            }
            let end = epochs.len() as u64;
            let live = &epochs[q.min as usize..];
            // The leader's term is never older than a batch it holds.
            let current = epochs.last().copied().unwrap_or(0) + current_extra;
            for requested in -1..=current + 1 {
                let want = if requested < 0 || requested > current {
                    (-1, -1)
                } else if requested == current {
                    (current, end as i64)
                } else {
                    let next = live
                        .iter()
                        .position(|e| *e > requested)
                        .map_or(end, |i| q.min + i as u64);
                    let floor = live.iter().rev().find(|e| **e <= requested).copied();
                    (floor.unwrap_or(requested), next as i64)
                };
                prop_assert_eq!(h.end_of(requested, current, end), want, "epoch {}", requested);
            }
            for (i, e) in live.iter().enumerate() {
                prop_assert_eq!(h.epoch_of(q.min + i as u64), *e);
            }
        }
    }
}
