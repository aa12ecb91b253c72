//! A hierarchical timing wheel of delayed messages: (deliver-at, commit-log offset) pairs.
//!
//! Six levels of 64 slots; a slot of level `L` spans `64^L` ticks of one millisecond, so the
//! wheel reaches 64^6 ms (about 795 days) past its start. An entry sits in the level of the
//! highest 6-bit group in which its deadline differs from the wheel's current time, in the
//! slot named by that group of the deadline; all entries of a level share the current time's
//! bits above that group. Advancing the wheel empties the earliest occupied slot whose start
//! has come: a level-0 slot holds only due entries, a higher one is re-inserted and cascades
//! down. Finding that slot is a look at one 64-bit occupancy mask per level, so a poll costs
//! nothing per pending entry and the work per entry is at most one move per level.
//!
//! ```text
//! level 0: 64 slots x 1 ms        level 3: 64 slots x 262 s
//! level 1: 64 slots x 64 ms       level 4: 64 slots x 4.7 h
//! level 2: 64 slots x 4.1 s       level 5: 64 slots x 12.4 d
//! ```
//!
//! An entry is 16 bytes (its deadline and the commit-log offset of the record); message bodies
//! stay in the commit log.

/// Levels of the wheel.
const LEVELS: usize = 6;
/// Bits of a slot index.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Ticks the wheel reaches past its current time.
pub const RANGE_TICKS: u64 = 1 << (SLOT_BITS as usize * LEVELS);

/// One pending delayed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When it is due, in wheel ticks (ms since the wheel's origin).
    pub deadline: u64,
    /// Commit-log offset of the stored record.
    pub commit_log_offset: u64,
}

/// The wheel. Not synchronised; the owner wraps it in a lock.
#[derive(Debug)]
pub struct TimingWheel {
    levels: Vec<Vec<Vec<Timer>>>,
    occupied: [u64; LEVELS],
    elapsed: u64,
    len: usize,
}

impl Default for TimingWheel {
    fn default() -> Self {
        TimingWheel::new()
    }
}

impl TimingWheel {
    /// An empty wheel at tick 0.
    pub fn new() -> TimingWheel {
        TimingWheel {
            levels: (0..LEVELS)
                .map(|_| (0..SLOTS).map(|_| Vec::new()).collect())
                .collect(),
            occupied: [0; LEVELS],
            elapsed: 0,
            len: 0,
        }
    }

    /// An empty wheel at tick `elapsed` (entries due by then come back from `insert`).
    pub fn new_at(elapsed: u64) -> TimingWheel {
        TimingWheel {
            elapsed,
            ..TimingWheel::new()
        }
    }

    /// Pending entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is pending.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wheel's current tick.
    pub fn elapsed(&self) -> u64 {
        self.elapsed
    }

    /// Adds `timer`; returns it back if it is already due (its deadline is not after the
    /// current tick). Deadlines further than [`RANGE_TICKS`] ahead are pulled in to the edge
    /// of the wheel (the caller refuses such delays).
    pub fn insert(&mut self, mut timer: Timer) -> Option<Timer> {
        if timer.deadline <= self.elapsed {
            return Some(timer);
        }
        timer.deadline = timer.deadline.min(self.elapsed + RANGE_TICKS - 1);
        let (level, slot) = self.slot_for(timer.deadline);
        self.levels[level][slot].push(timer);
        self.occupied[level] |= 1 << slot;
        self.len += 1;
        None
    }

    fn slot_for(&self, deadline: u64) -> (usize, usize) {
        let masked = (self.elapsed ^ deadline) | (SLOTS as u64 - 1);
        let significant = 63 - masked.leading_zeros();
        let level = ((significant / SLOT_BITS) as usize).min(LEVELS - 1);
        let slot = ((deadline >> (level as u32 * SLOT_BITS)) as usize) & (SLOTS - 1);
        (level, slot)
    }

    /// The earliest occupied slot: (level, slot, its first tick).
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        for level in 0..LEVELS {
            let mask = self.occupied[level];
            if mask == 0 {
                continue;
            }
            let shift = level as u32 * SLOT_BITS;
            let current = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            // Entries of a level are never behind the current slot (see the module doc).
            let ahead = mask & (u64::MAX << current);
            let slot = ahead.trailing_zeros() as usize;
            if slot >= SLOTS {
                continue;
            }
            let level_span = 1u64 << (shift + SLOT_BITS);
            let base = self.elapsed & !(level_span - 1);
            return Some((level, slot, base + ((slot as u64) << shift)));
        }
        None
    }

    /// Moves the wheel to tick `now` and appends every entry due by then to `due`.
    pub fn advance(&mut self, now: u64, due: &mut Vec<Timer>) {
        while let Some((level, slot, start)) = self.next_slot() {
            if start > now {
                break;
            }
            self.elapsed = self.elapsed.max(start);
            let timers = std::mem::take(&mut self.levels[level][slot]);
            self.occupied[level] &= !(1 << slot);
            self.len -= timers.len();
            for timer in timers {
                if let Some(timer) = self.insert(timer) {
                    due.push(timer);
                }
            }
        }
        self.elapsed = self.elapsed.max(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(deadline: u64, commit_log_offset: u64) -> Timer {
        Timer {
            deadline,
            commit_log_offset,
        }
    }

    #[test]
    fn fires_each_entry_at_its_tick_not_before() {
        let mut wheel = TimingWheel::new();
        for (i, d) in [5u64, 64, 65, 4095, 4096, 300_000, 40 * 86_400_000]
            .into_iter()
            .enumerate()
        {
            assert_eq!(wheel.insert(t(d, i as u64)), None);
        }
        assert_eq!(wheel.len(), 7);
        let mut due = Vec::new();
        wheel.advance(4, &mut due);
        assert!(due.is_empty());
        wheel.advance(5, &mut due);
        assert_eq!(due, vec![t(5, 0)]);
        due.clear();
        wheel.advance(4095, &mut due);
        assert_eq!(due, vec![t(64, 1), t(65, 2), t(4095, 3)]);
        due.clear();
        wheel.advance(40 * 86_400_000 - 1, &mut due);
        assert_eq!(due, vec![t(4096, 4), t(300_000, 5)]);
        due.clear();
        wheel.advance(40 * 86_400_000, &mut due);
        assert_eq!(due, vec![t(40 * 86_400_000, 6)]);
        assert!(wheel.is_empty());
        assert_eq!(wheel.insert(t(3, 9)), Some(t(3, 9)));
    }

    proptest! {
        #[test]
        fn every_entry_fires_once_at_or_after_its_deadline(
            deadlines in proptest::collection::vec(1u64..10_000_000, 1..200),
            steps in proptest::collection::vec(1u64..3_000_000, 1..40),
        ) {
            let mut wheel = TimingWheel::new();
            for (i, d) in deadlines.iter().enumerate() {
                prop_assert_eq!(wheel.insert(t(*d, i as u64)), None);
            }
            let mut now = 0;
            let mut fired = vec![false; deadlines.len()];
            let mut due = Vec::new();
            for step in steps.iter().chain(std::iter::once(&10_000_000)) {
                now += step;
                due.clear();
                wheel.advance(now, &mut due);
                for timer in &due {
                    let i = timer.commit_log_offset as usize;
                    prop_assert!(!fired[i]);
                    prop_assert!(timer.deadline <= now);
                    fired[i] = true;
                }
                for (i, d) in deadlines.iter().enumerate() {
                    prop_assert_eq!(fired[i], *d <= now, "entry {} due {} at {}", i, d, now);
                }
            }
            prop_assert!(wheel.is_empty());
        }
    }
}
