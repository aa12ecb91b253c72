//! Shared consumer groups (RocketMQ 5 POP, SQS, Kafka share groups): any member takes any
//! visible message of a topic; each delivery is acked on its own, hidden while in flight, and
//! delivered again when its invisibility runs out or after a nack's back-off.
//!
//! Per (group, topic, queue) the broker keeps:
//!
//! ```text
//!   offsets:   min ........ low_water ........................ cursor ........ max
//!                 acked, gone  | acked set + in-flight table   | never delivered
//! ```
//!
//! * `cursor` — the next offset never delivered yet; fresh deliveries take offsets from here;
//! * `in_flight` — offset → (visible again at, attempt, token): delivered, not yet acked;
//! * `acked` — acked offsets at or above `low_water`; `low_water` moves up while the offset it
//!   names is acked, so everything below it is done.
//!
//! A delivery is named by its **receipt** `topic/queue/offset/attempt/token` (the group is in
//! every request). The token changes with every delivery, so an ack by a consumer whose
//! invisibility ran out (and whose message went to another) is rejected.
//!
//! Receivers start at a different queue each time (round-robin), so no queue starves another.
//! A message delivered `max_attempts` times that comes back once more (timed out or nacked) is
//! moved to the group's dead-letter topic `%DLQ%<group>` (see `dead_letter.rs`) and counts as
//! acked.
//!
//! **Persistence.** `low_water` and the acked set go to `config/shared_acks.json`, written
//! atomically every second when changed and at shutdown, like the offsets file:
//!
//! ```text
//! { "<group>": { "<topic>": { "<queue id>": { "low_water": 12, "acked": [14, 15] } } } }
//! ```
//!
//! After a restart every offset from `low_water` on that is not in the acked set is delivered
//! again (at-least-once): the in-flight table, attempt counts and back-offs are not persisted.
//! An ack in the last second before a crash can so be lost, and its message redelivered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use weir_proto::ErrorCode;
use weir_store::QueueOffsets;

use crate::atomic_file;
use crate::error::{BrokerError, RequestError};

/// One delivery of a message: where it is and which delivery it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The topic.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// The message's queue offset.
    pub offset: u64,
    /// Deliveries so far, this one included.
    pub attempt: u32,
    /// Unique per delivery.
    pub token: u64,
}

impl Receipt {
    /// Parses `topic/queue/offset/attempt/token` (token in hex). Topic names cannot hold `/`.
    pub fn parse(text: &str) -> Result<Receipt, RequestError> {
        let bad = || {
            RequestError::new(
                ErrorCode::InvalidReceipt,
                format!("receipt {text:?} does not parse (topic/queue/offset/attempt/token)"),
            )
        };
        let mut parts = text.rsplitn(5, '/');
        let token = u64::from_str_radix(parts.next().ok_or_else(bad)?, 16).map_err(|_| bad())?;
        let attempt = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let offset = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let queue_id = parts.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        let topic = parts.next().filter(|t| !t.is_empty()).ok_or_else(bad)?;
        Ok(Receipt {
            topic: topic.to_owned(),
            queue_id,
            offset,
            attempt,
            token,
        })
    }
}

impl std::fmt::Display for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}/{:x}",
            self.topic, self.queue_id, self.offset, self.attempt, self.token
        )
    }
}

/// Deliveries reserved by one receive: fresh runs to read as ranges, redeliveries one by one,
/// and messages out of attempts for the dead-letter topic.
#[derive(Debug, Default)]
pub struct Reservation {
    /// `(queue, first offset, receipts)`: consecutive fresh offsets of one queue.
    pub runs: Vec<(u32, u64, Vec<Receipt>)>,
    /// Single messages delivered again.
    pub redeliveries: Vec<Receipt>,
    /// `(queue, offset, attempts)` to move to `%DLQ%<group>`, then [`SharedGroups::settle`].
    pub dead: Vec<(u32, u64, u32)>,
    /// When the earliest message still in flight becomes visible again.
    pub next_visible: Option<Instant>,
}

impl Reservation {
    /// Whether nothing is to be delivered.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.redeliveries.is_empty()
    }
}

/// What to do with a nacked delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum Nacked {
    /// Visible again after a back-off.
    Retry,
    /// Out of attempts: move it to the dead-letter topic, then settle it.
    Dead {
        /// Deliveries tried.
        attempts: u32,
    },
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    visible_at: Instant,
    attempt: u32,
    token: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct QueueState {
    low_water: u64,
    acked: BTreeSet<u64>,
    #[serde(skip)]
    cursor: u64,
    #[serde(skip)]
    in_flight: BTreeMap<u64, InFlight>,
}

impl QueueState {
    /// Drops everything below the queue's minimum (deleted by retention).
    fn clamp(&mut self, min: u64) {
        if self.low_water < min {
            self.low_water = min;
            self.acked = self.acked.split_off(&min);
            self.in_flight = self.in_flight.split_off(&min);
            self.advance();
        }
        self.cursor = self.cursor.max(self.low_water);
    }

    fn ack(&mut self, offset: u64) {
        self.in_flight.remove(&offset);
        if offset >= self.low_water {
            self.acked.insert(offset);
            self.advance();
        }
    }

    fn advance(&mut self) {
        while self.acked.remove(&self.low_water) {
            self.low_water += 1;
        }
    }
}

#[derive(Debug, Default)]
struct TopicState {
    next_queue: u32,
    queues: BTreeMap<u32, QueueState>,
}

/// group → topic → queue id → persisted state.
type Persisted = BTreeMap<String, BTreeMap<String, BTreeMap<u32, QueueState>>>;

/// Tuning of shared groups.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// Back-off before a nacked message is visible again, by attempt (the last repeats).
    pub retry_delays: Vec<Duration>,
    /// Deliveries before a message goes to the dead-letter topic.
    pub max_attempts: u32,
}

/// The state of every shared group on this broker.
#[derive(Debug)]
pub struct SharedGroups {
    path: PathBuf,
    settings: SharedSettings,
    groups: Mutex<HashMap<(String, String), TopicState>>,
    /// Per topic, woken when a queue of it gets messages or a delivery's visibility changes.
    wakers: Mutex<HashMap<String, Arc<Notify>>>,
    next_token: AtomicU64,
    dirty: AtomicBool,
    /// Serialises file writes so an older snapshot never overwrites a newer one.
    write_lock: Mutex<()>,
}

impl SharedGroups {
    /// Loads `config/shared_acks.json` under `data_dir` (empty when absent).
    pub fn load(data_dir: &Path, settings: SharedSettings) -> Result<SharedGroups, BrokerError> {
        let path = data_dir.join("config").join("shared_acks.json");
        let persisted: Persisted = match atomic_file::read_if_exists(&path)
            .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?
        {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?,
            None => Persisted::new(),
        };
        let mut groups = HashMap::new();
        for (group, topics) in persisted {
            for (topic, queues) in topics {
                let queues = queues
                    .into_iter()
                    .map(|(q, mut s)| {
                        s.cursor = s.low_water;
                        (q, s)
                    })
                    .collect();
                groups.insert(
                    (group.clone(), topic),
                    TopicState {
                        next_queue: 0,
                        queues,
                    },
                );
            }
        }
        // Tokens only need to differ from those of earlier runs' receipts still around.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Ok(SharedGroups {
            path,
            settings,
            groups: Mutex::new(groups),
            wakers: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(seed),
            dirty: AtomicBool::new(false),
            write_lock: Mutex::new(()),
        })
    }

    /// The notifier of a topic: create its `notified()` future and `enable()` it before
    /// [`SharedGroups::reserve`], then await it.
    pub fn waker(&self, topic: &str) -> Arc<Notify> {
        self.wakers
            .lock()
            .entry(topic.to_owned())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Wakes receivers waiting on a topic (called by the store's dispatcher: no I/O).
    pub fn wake(&self, topic: &str) {
        if let Some(notify) = self.wakers.lock().get(topic) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiting receiver (shutdown).
    pub fn wake_all(&self) {
        for notify in self.wakers.lock().values() {
            notify.notify_waiters();
        }
    }

    /// Reserves up to `max` deliveries of `topic` (of `queues` queues) for `group`: first
    /// in-flight messages whose invisibility ran out, then fresh ones, each queue in turn from
    /// a rotating start. Every reserved message is hidden until `now + invisible`.
    /// `offsets(queue)` is the queue's readable range.
    pub fn reserve(
        &self,
        group: &str,
        topic: &str,
        queues: u32,
        max: usize,
        invisible: Duration,
        offsets: &dyn Fn(u32) -> QueueOffsets,
    ) -> Reservation {
        let now = Instant::now();
        let mut out = Reservation::default();
        if queues == 0 || max == 0 {
            return out;
        }
        let mut groups = self.groups.lock();
        let state = groups
            .entry((group.to_owned(), topic.to_owned()))
            .or_default();
        let start = state.next_queue % queues;
        state.next_queue = state.next_queue.wrapping_add(1);
        let order: Vec<u32> = (0..queues).map(|i| (start + i) % queues).collect();
        let mut room = max;
        let mut dirty = false;
        for &queue_id in &order {
            let q = state.queues.entry(queue_id).or_default();
            for (&offset, f) in q.in_flight.iter_mut() {
                if f.visible_at > now {
                    continue;
                }
                if f.attempt >= self.settings.max_attempts {
                    out.dead.push((queue_id, offset, f.attempt));
                    // Hidden while it is moved; settled once it is in the dead-letter topic.
                    f.visible_at = now + invisible;
                    continue;
                }
                if room == 0 {
                    continue;
                }
                room -= 1;
                f.attempt += 1;
                f.token = self.next_token.fetch_add(1, Ordering::Relaxed);
                f.visible_at = now + invisible;
                out.redeliveries.push(Receipt {
                    topic: topic.to_owned(),
                    queue_id,
                    offset,
                    attempt: f.attempt,
                    token: f.token,
                });
            }
        }
        for &queue_id in &order {
            if room == 0 {
                break;
            }
            let q = state.queues.entry(queue_id).or_default();
            let range = offsets(queue_id);
            let before = q.low_water;
            q.clamp(range.min);
            dirty |= q.low_water != before;
            let mut run: Option<(u64, Vec<Receipt>)> = None;
            while q.cursor < range.max && room > 0 {
                let offset = q.cursor;
                q.cursor += 1;
                if q.acked.contains(&offset) || q.in_flight.contains_key(&offset) {
                    // Acked before a restart: a hole in the run.
                    if let Some((first, receipts)) = run.take() {
                        out.runs.push((queue_id, first, receipts));
                    }
                    continue;
                }
                room -= 1;
                let token = self.next_token.fetch_add(1, Ordering::Relaxed);
                q.in_flight.insert(
                    offset,
                    InFlight {
                        visible_at: now + invisible,
                        attempt: 1,
                        token,
                    },
                );
                let receipt = Receipt {
                    topic: topic.to_owned(),
                    queue_id,
                    offset,
                    attempt: 1,
                    token,
                };
                run.get_or_insert_with(|| (offset, Vec::new()))
                    .1
                    .push(receipt);
            }
            if let Some((first, receipts)) = run {
                out.runs.push((queue_id, first, receipts));
            }
        }
        out.next_visible = state
            .queues
            .values()
            .flat_map(|q| q.in_flight.values().map(|f| f.visible_at))
            .min();
        if dirty {
            self.dirty.store(true, Ordering::Release);
        }
        out
    }

    /// Gives back reservations that could not be read (frame full, read failed): they are
    /// visible again at once, as if never delivered.
    pub fn unreserve(&self, group: &str, receipts: &[Receipt]) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for r in receipts {
            if let Some(f) = in_flight_of(&mut groups, group, r) {
                f.visible_at = now;
                f.attempt -= 1;
            }
        }
    }

    /// Marks a message done without a delivery to match (moved to the dead-letter topic, or
    /// deleted by retention before it could be read).
    pub fn settle(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let mut groups = self.groups.lock();
        if let Some(q) = groups
            .get_mut(&(group.to_owned(), topic.to_owned()))
            .and_then(|t| t.queues.get_mut(&queue_id))
        {
            q.ack(offset);
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Acks a delivery; `false` when the receipt is stale or unknown.
    pub fn ack(&self, group: &str, receipt: &Receipt) -> bool {
        let mut groups = self.groups.lock();
        if in_flight_of(&mut groups, group, receipt).is_none() {
            return false;
        }
        if let Some(q) = groups
            .get_mut(&(group.to_owned(), receipt.topic.clone()))
            .and_then(|t| t.queues.get_mut(&receipt.queue_id))
        {
            q.ack(receipt.offset);
        }
        self.dirty.store(true, Ordering::Release);
        true
    }

    /// Nacks a delivery: visible again after the back-off of its attempt, or, out of attempts,
    /// to be dead-lettered. `None` when the receipt is stale or unknown.
    pub fn nack(&self, group: &str, receipt: &Receipt) -> Option<Nacked> {
        let mut groups = self.groups.lock();
        let f = in_flight_of(&mut groups, group, receipt)?;
        if f.attempt >= self.settings.max_attempts {
            // Hidden while it is moved.
            f.visible_at = Instant::now() + Duration::from_secs(30);
            return Some(Nacked::Dead {
                attempts: f.attempt,
            });
        }
        let delays = &self.settings.retry_delays;
        let index = (f.attempt as usize)
            .saturating_sub(1)
            .min(delays.len().saturating_sub(1));
        f.visible_at = Instant::now() + delays.get(index).copied().unwrap_or_default();
        drop(groups);
        self.wake(&receipt.topic);
        Some(Nacked::Retry)
    }

    /// Hides a delivery for `invisible` from now; `false` when the receipt is stale or unknown.
    pub fn change_invisibility(&self, group: &str, receipt: &Receipt, invisible: Duration) -> bool {
        let mut groups = self.groups.lock();
        let Some(f) = in_flight_of(&mut groups, group, receipt) else {
            return false;
        };
        f.visible_at = Instant::now() + invisible;
        drop(groups);
        self.wake(&receipt.topic);
        true
    }

    /// Forgets every group's state on a topic (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        self.groups.lock().retain(|(_, t), _| t != topic);
        self.dirty.store(true, Ordering::Release);
        self.wake(topic);
    }

    /// Writes the acked state to disk if it changed since the last write.
    pub fn persist(&self) -> Result<(), BrokerError> {
        let _serial = self.write_lock.lock();
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let json = {
            let groups = self.groups.lock();
            let mut out: BTreeMap<&str, BTreeMap<&str, BTreeMap<u32, &QueueState>>> =
                BTreeMap::new();
            for ((group, topic), state) in groups.iter() {
                out.entry(group)
                    .or_default()
                    .insert(topic, state.queues.iter().map(|(q, s)| (*q, s)).collect());
            }
            serde_json::to_vec(&out)
                .map_err(|e| BrokerError::Config(format!("encoding shared acks: {e}")))?
        };
        atomic_file::write_atomic(&self.path, &json).map_err(|e| {
            // Try again on the next tick.
            self.dirty.store(true, Ordering::Release);
            BrokerError::io(format!("writing {}", self.path.display()), e)
        })
    }
}

/// The in-flight entry a receipt names, if the receipt is its current delivery.
fn in_flight_of<'a>(
    groups: &'a mut HashMap<(String, String), TopicState>,
    group: &str,
    r: &Receipt,
) -> Option<&'a mut InFlight> {
    groups
        .get_mut(&(group.to_owned(), r.topic.clone()))?
        .queues
        .get_mut(&r.queue_id)?
        .in_flight
        .get_mut(&r.offset)
        .filter(|f| f.token == r.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> SharedSettings {
        SharedSettings {
            retry_delays: vec![Duration::ZERO],
            max_attempts: 2,
        }
    }

    fn range(max: u64) -> impl Fn(u32) -> QueueOffsets {
        move |_| QueueOffsets { min: 0, max }
    }

    fn receipts(r: &Reservation) -> Vec<Receipt> {
        r.runs
            .iter()
            .flat_map(|(_, _, rs)| rs.iter().cloned())
            .chain(r.redeliveries.iter().cloned())
            .collect()
    }

    #[test]
    fn receipts_round_trip() -> Result<(), RequestError> {
        let r = Receipt {
            topic: "a.b-c".into(),
            queue_id: 3,
            offset: 99,
            attempt: 2,
            token: 0xabc,
        };
        assert_eq!(Receipt::parse(&r.to_string())?, r);
        assert!(Receipt::parse("x/1/2").is_err());
        assert!(Receipt::parse("/1/2/3/4").is_err());
        Ok(())
    }

    #[test]
    fn ack_nack_redeliver_dead_letter_and_persist() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir().map_err(|e| BrokerError::io("tempdir", e))?;
        let shared = SharedGroups::load(dir.path(), settings())?;
        let long = Duration::from_secs(60);
        let first = shared.reserve("g", "t", 1, 3, long, &range(4));
        let got = receipts(&first);
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(shared.ack("g", &got[0]));
        assert!(!shared.ack("g", &got[0]), "acked twice");
        assert!(shared.ack("g", &got[2]));
        assert_eq!(shared.nack("g", &got[1]), Some(Nacked::Retry));
        // Offset 1 is visible again (zero back-off), offset 3 is fresh.
        let second = receipts(&shared.reserve("g", "t", 1, 10, long, &range(4)));
        assert_eq!(
            second
                .iter()
                .map(|r| (r.offset, r.attempt))
                .collect::<Vec<_>>(),
            [(3, 1), (1, 2)]
        );
        assert!(!shared.ack("g", &got[1]), "stale receipt");
        assert_eq!(
            shared.nack("g", &second[1]),
            Some(Nacked::Dead { attempts: 2 })
        );
        shared.settle("g", "t", 0, 1);
        shared.persist()?;
        // After a restart 3 (unacked) comes again; 0, 1, 2 do not.
        let again = SharedGroups::load(dir.path(), settings())?;
        let third = receipts(&again.reserve("g", "t", 1, 10, long, &range(4)));
        assert_eq!(third.iter().map(|r| r.offset).collect::<Vec<_>>(), [3]);
        Ok(())
    }
}
