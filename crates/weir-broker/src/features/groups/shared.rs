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
//! * `cursor` — the next offset never delivered yet; fresh deliveries take offsets from here.
//!   Every offset in `low_water..cursor` is either acked or in flight;
//! * `in_flight` — offset → (visible again at, attempt, token): delivered, not yet acked;
//! * `acked` — acked offsets at or above `low_water`; `low_water` moves up while the offset it
//!   names is acked, so everything below it is done.
//!
//! Per (group, topic) an index orders every in-flight delivery of every queue by the time it
//! becomes visible again: `(visible_at, queue, offset)`, kept in step with every change of an
//! entry's `visible_at` (reserve, unreserve, nack, change of invisibility, ack, retention). A
//! receive takes the timed-out deliveries from its front and stops at the first one still
//! hidden, and the next time anything becomes visible is its first key, so a receive costs
//! O(log n + delivered) whatever the size of the in-flight table.
//!
//! A delivery is named by its **receipt** `topic/queue/offset/attempt/token` (the group is in
//! every request). The token changes with every delivery, so an ack by a consumer whose
//! invisibility ran out (and whose message went to another) is rejected.
//!
//! Receivers take timed-out deliveries first, earliest first, then fresh messages from each
//! queue in turn, starting at a different queue each time (round-robin), so no queue starves
//! another. A message delivered `max_attempts` times that comes back once more (timed out or
//! nacked) is moved to the group's dead-letter topic `%DLQ%<group>` (see `dead_letter.rs`) and
//! counts as acked.
//!
//! **Persistence.** The whole state but the index goes to `config/shared_acks.json`, written
//! atomically at most every second when changed (a receive, ack, nack or change of
//! invisibility marks it changed) and at shutdown, like the offsets file:
//!
//! ```text
//! { "<group>": { "<topic>": { "<queue id>": {
//!     "low_water": 12,
//!     "acked": [14, 15],
//!     "cursor": 18,
//!     "in_flight": { "13": { "attempt": 2, "token": 1745912345678901234,
//!                            "visible_at_ms": 1745912399000 },
//!                    "16": { ... }, "17": { ... } } } } } }
//! ```
//!
//! * `low_water`, `acked` — as above;
//! * `cursor` — absent in files of older brokers: then `low_water`;
//! * `in_flight` — absent in files of older brokers: then empty, and every unacked offset from
//!   `low_water` on is delivered again at once at attempt 1, as those brokers did;
//! * `visible_at_ms` — wall-clock Unix time in ms at which the delivery is visible again. The
//!   running broker keeps monotonic instants; the file holds wall-clock times so that they mean
//!   something to the next process. On load a time in the past is "visible now". A wall-clock
//!   step between two runs shifts the restored times with it.
//!
//! After a restart a message keeps its attempt count (so `max_attempts` and the dead-letter
//! topic still apply), a nacked one keeps waiting for its back-off, one in flight stays hidden
//! until its invisibility runs out, and a receipt handed out before the restart still acks its
//! delivery (same token). What changed in the last second before a crash can be lost: an ack
//! (its message is delivered again when its invisibility runs out), a fresh delivery (delivered
//! again at attempt 1), a nack or a change of invisibility (the delivery keeps its earlier
//! visible-again time). Delivery is at least once.
//!
//! **In a broker group** only the leader serves shared groups, so only it changes them. It
//! notes which offsets of which queues changed, and every
//! [`PROGRESS_INTERVAL`](super::shared_progress::PROGRESS_INTERVAL) its leader work sends what
//! those queues hold now through the group's log
//! ([`StateChange::SharedProgress`](crate::core::state_change::StateChange)): per queue its
//! `low_water` and `cursor`, the changed offsets now acked (as runs) and those now in flight
//! (as runs of consecutive offsets and tokens with one attempt and visible-again time, so
//! the fresh messages of one receive are one run). Every other replica applies it to its own
//! state (and file); the leader skips its own. A new leader therefore starts from its
//! predecessor's acks, cursors and deliveries: receipts handed out before the failover still
//! ack, messages in flight stay hidden, and only what changed in the last interval before a
//! failover is lost, as in the last second before a crash.

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
use crate::core::state_change::{InFlightRun, SharedQueueProgress};
use crate::error::{BrokerError, RequestError};

/// How long a message out of attempts stays hidden while it is moved to the dead-letter topic;
/// if the move fails it is tried again when this runs out.
const MOVING_TO_DLQ: Duration = Duration::from_secs(30);

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
    /// Single messages delivered again, earliest timed out first.
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

/// What one receive asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveLimits {
    /// Most messages to deliver.
    pub max: usize,
    /// How long each delivered message stays hidden from other receivers.
    pub invisible: Duration,
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

/// A shared group's progress on one queue, for `DescribeGroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedQueueView {
    /// The topic.
    pub topic: String,
    /// The queue.
    pub queue_id: u32,
    /// The queue's readable range.
    pub offsets: QueueOffsets,
    /// Every offset below it is acked (or gone); at least the queue's minimum.
    pub low_water: u64,
    /// The next offset never delivered; at least `low_water`.
    pub cursor: u64,
    /// Deliveries not acked yet: hidden, waiting for a nack's back-off, or timed out and not
    /// received again yet.
    pub in_flight: u64,
    /// Acked offsets above `low_water` that are still readable.
    pub acked_above: u64,
    /// Messages not acked yet: `max − low_water − acked_above` (in flight or never delivered).
    pub unacked: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    visible_at: Instant,
    attempt: u32,
    token: u64,
}

#[derive(Debug, Default)]
struct QueueState {
    low_water: u64,
    acked: BTreeSet<u64>,
    cursor: u64,
    in_flight: BTreeMap<u64, InFlight>,
}

impl QueueState {
    /// Records an ack of `offset` (its in-flight entry is the caller's to remove).
    fn mark_acked(&mut self, offset: u64) {
        if offset >= self.low_water {
            self.acked.insert(offset);
            while self.acked.remove(&self.low_water) {
                self.low_water += 1;
            }
        }
    }
}

/// A key of [`TopicState::by_visibility`].
type VisibilityKey = (Instant, u32, u64);

/// What changed on one queue since the leader last sent its progress.
#[derive(Debug, Default)]
struct Touched {
    /// The group was reset on the queue.
    reset: bool,
    /// Offsets acked, delivered or whose delivery changed.
    offsets: BTreeSet<u64>,
}

#[derive(Debug, Default)]
struct TopicState {
    next_queue: u32,
    queues: BTreeMap<u32, QueueState>,
    /// `(visible_at, queue, offset)` of every in-flight entry of every queue, and nothing else.
    by_visibility: BTreeSet<VisibilityKey>,
    /// Whether changes are noted in `touched` (in a broker group; a standalone broker sends
    /// nothing and notes nothing).
    keep_changes: bool,
    /// Per queue, what changed since the last [`SharedGroups::take_progress`].
    touched: BTreeMap<u32, Touched>,
}

impl TopicState {
    /// The in-flight entry a receipt names, if the receipt is its current delivery.
    fn current(&self, r: &Receipt) -> Option<InFlight> {
        self.queues
            .get(&r.queue_id)?
            .in_flight
            .get(&r.offset)
            .filter(|f| f.token == r.token)
            .copied()
    }

    /// Notes a change of a queue (its low water or cursor) and of `offset`, if any.
    fn touch(&mut self, queue_id: u32, offset: Option<u64>) {
        if self.keep_changes {
            let touched = self.touched.entry(queue_id).or_default();
            touched.offsets.extend(offset);
        }
    }

    /// Adds or replaces the in-flight entry of an offset, index included.
    fn put(&mut self, queue_id: u32, offset: u64, entry: InFlight) {
        self.touch(queue_id, Some(offset));
        let q = self.queues.entry(queue_id).or_default();
        if let Some(old) = q.in_flight.insert(offset, entry) {
            self.by_visibility
                .remove(&(old.visible_at, queue_id, offset));
        }
        self.by_visibility
            .insert((entry.visible_at, queue_id, offset));
    }

    /// Marks an offset acked, dropping its in-flight entry and index key. `false` when the
    /// queue has no state.
    fn ack(&mut self, queue_id: u32, offset: u64) -> bool {
        if !self.queues.contains_key(&queue_id) {
            return false;
        }
        self.touch(queue_id, Some(offset));
        let Some(q) = self.queues.get_mut(&queue_id) else {
            return false;
        };
        if let Some(old) = q.in_flight.remove(&offset) {
            self.by_visibility
                .remove(&(old.visible_at, queue_id, offset));
        }
        q.mark_acked(offset);
        true
    }

    /// Drops what lies below a queue's minimum (deleted by retention); `true` when anything
    /// changed.
    fn clamp(&mut self, queue_id: u32, min: u64) -> bool {
        let q = self.queues.entry(queue_id).or_default();
        let mut changed = false;
        if q.low_water < min {
            let kept = q.in_flight.split_off(&min);
            for (offset, gone) in std::mem::replace(&mut q.in_flight, kept) {
                self.by_visibility
                    .remove(&(gone.visible_at, queue_id, offset));
            }
            q.acked = q.acked.split_off(&min);
            q.low_water = min;
            while q.acked.remove(&q.low_water) {
                q.low_water += 1;
            }
            changed = true;
        }
        q.cursor = q.cursor.max(q.low_water);
        if changed {
            self.touch(queue_id, None);
        }
        changed
    }

    /// Removes the in-flight entries of a queue below `below` (all of them: `u64::MAX`),
    /// index keys included.
    fn drop_in_flight_below(&mut self, queue_id: u32, below: u64) {
        let Some(q) = self.queues.get_mut(&queue_id) else {
            return;
        };
        let kept = q.in_flight.split_off(&below);
        for (offset, gone) in std::mem::replace(&mut q.in_flight, kept) {
            self.by_visibility
                .remove(&(gone.visible_at, queue_id, offset));
        }
    }

    /// What a queue holds now for the offsets changed on it, for the other replicas.
    fn progress(
        &self,
        group: &str,
        topic: &str,
        queue_id: u32,
        touched: &Touched,
        now: Instant,
        now_ms: u64,
    ) -> SharedQueueProgress {
        let never_received = QueueState::default();
        let q = self.queues.get(&queue_id).unwrap_or(&never_received);
        let mut acked: Vec<(u64, u64)> = Vec::new();
        let mut in_flight: Vec<InFlightRun> = Vec::new();
        for &offset in touched.offsets.range(q.low_water..) {
            if let Some(f) = q.in_flight.get(&offset) {
                let visible_at_ms = to_unix_ms(f.visible_at, now, now_ms);
                match in_flight.last_mut() {
                    Some(run)
                        if run.offset + run.count == offset
                            && run.attempt == f.attempt
                            && run.token.wrapping_add(run.count) == f.token
                            && run.visible_at_ms == visible_at_ms =>
                    {
                        run.count += 1;
                    }
                    _ => in_flight.push(InFlightRun {
                        offset,
                        count: 1,
                        attempt: f.attempt,
                        token: f.token,
                        visible_at_ms,
                    }),
                }
            } else if q.acked.contains(&offset) {
                match acked.last_mut() {
                    Some((first, count)) if *first + *count == offset => *count += 1,
                    _ => acked.push((offset, 1)),
                }
            }
        }
        SharedQueueProgress {
            group: group.to_owned(),
            topic: topic.to_owned(),
            queue_id,
            reset: touched.reset,
            low_water: q.low_water,
            cursor: q.cursor,
            acked,
            in_flight,
        }
    }

    /// Makes a queue hold what the leader's progress says; returns the next token above every
    /// token it put.
    fn apply(&mut self, p: &SharedQueueProgress, now: Instant, now_ms: u64) -> u64 {
        let queue_id = p.queue_id;
        let below = if p.reset { u64::MAX } else { p.low_water };
        self.drop_in_flight_below(queue_id, below);
        let q = self.queues.entry(queue_id).or_default();
        if p.reset {
            q.acked.clear();
        }
        q.acked = q.acked.split_off(&p.low_water);
        q.low_water = p.low_water;
        q.cursor = p.cursor.max(p.low_water);
        for &(first, count) in &p.acked {
            for offset in first.max(p.low_water)..first.saturating_add(count) {
                self.ack(queue_id, offset);
            }
        }
        let mut next_token = 0;
        for run in &p.in_flight {
            let visible_at = from_unix_ms(run.visible_at_ms, now, now_ms);
            for i in 0..run.count {
                let token = run.token.wrapping_add(i);
                next_token = next_token.max(token.wrapping_add(1));
                let entry = InFlight {
                    visible_at,
                    attempt: run.attempt,
                    token,
                };
                self.put(queue_id, run.offset + i, entry);
            }
        }
        // Not a change of this replica's own.
        self.touched.remove(&queue_id);
        next_token
    }
}

/// A queue's state as `config/shared_acks.json` holds it (see the module doc).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct QueueFile {
    low_water: u64,
    #[serde(default)]
    acked: BTreeSet<u64>,
    #[serde(default)]
    cursor: Option<u64>,
    #[serde(default)]
    in_flight: BTreeMap<u64, InFlightFile>,
}

/// An in-flight entry in `config/shared_acks.json`.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct InFlightFile {
    attempt: u32,
    token: u64,
    /// Wall-clock Unix time in ms at which the delivery is visible again.
    visible_at_ms: u64,
}

/// group → topic → queue id → persisted state.
type Persisted = BTreeMap<String, BTreeMap<String, BTreeMap<u32, QueueFile>>>;

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
    /// Whether this broker is a replica of a broker group: its changes are kept until its
    /// leader work sends them to the others.
    in_group: AtomicBool,
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
        Ok(SharedGroups::from_persisted(
            path,
            settings,
            persisted,
            Instant::now(),
            unix_ms_now(),
        ))
    }

    /// The state a file holds, read when `now` is wall-clock `now_ms`.
    fn from_persisted(
        path: PathBuf,
        settings: SharedSettings,
        persisted: Persisted,
        now: Instant,
        now_ms: u64,
    ) -> SharedGroups {
        // Tokens only need to differ from those of earlier runs' receipts still around.
        let mut next_token = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        let mut groups = HashMap::new();
        let mut restored = 0usize;
        for (group, topics) in persisted {
            for (topic, queues) in topics {
                let mut state = TopicState::default();
                for (queue_id, file) in queues {
                    let q = state.queues.entry(queue_id).or_default();
                    q.low_water = file.low_water;
                    q.acked = file.acked;
                    q.acked = q.acked.split_off(&q.low_water);
                    q.cursor = file.cursor.unwrap_or(file.low_water).max(q.low_water);
                    for (offset, f) in file.in_flight.range(q.low_water..) {
                        next_token = next_token.max(f.token.wrapping_add(1));
                        restored += 1;
                        state.put(
                            queue_id,
                            *offset,
                            InFlight {
                                visible_at: from_unix_ms(f.visible_at_ms, now, now_ms),
                                attempt: f.attempt,
                                token: f.token,
                            },
                        );
                    }
                }
                groups.insert((group.clone(), topic), state);
            }
        }
        if restored > 0 {
            tracing::info!(
                deliveries = restored,
                "shared groups: in-flight deliveries restored"
            );
        }
        SharedGroups {
            path,
            settings,
            groups: Mutex::new(groups),
            wakers: Mutex::new(HashMap::new()),
            next_token: AtomicU64::new(next_token),
            dirty: AtomicBool::new(false),
            in_group: AtomicBool::new(false),
            write_lock: Mutex::new(()),
        }
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

    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn new_token(&self) -> u64 {
        self.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Reserves up to `limits.max` deliveries of `topic` (of `queues` queues) for `group`:
    /// first in-flight messages whose invisibility ran out, earliest first, then fresh ones,
    /// each queue in turn from a rotating start. Every reserved message is hidden until
    /// `now + limits.invisible`. `offsets(queue)` is the queue's readable range.
    pub fn reserve(
        &self,
        group: &str,
        topic: &str,
        queues: u32,
        limits: ReceiveLimits,
        offsets: &dyn Fn(u32) -> QueueOffsets,
    ) -> Reservation {
        self.reserve_at(Instant::now(), group, topic, queues, limits, offsets)
    }

    fn reserve_at(
        &self,
        now: Instant,
        group: &str,
        topic: &str,
        queues: u32,
        ReceiveLimits { max, invisible }: ReceiveLimits,
        offsets: &dyn Fn(u32) -> QueueOffsets,
    ) -> Reservation {
        let mut out = Reservation::default();
        if queues == 0 || max == 0 {
            return out;
        }
        let hidden_until = now + invisible;
        let mut groups = self.groups.lock();
        let state = groups
            .entry((group.to_owned(), topic.to_owned()))
            .or_insert_with(|| self.new_state());
        let mut room = max;
        let mut changed = false;

        // Timed out, earliest first: the index's front up to `now`. Messages out of attempts
        // do not take room, so the walk stops after `room` redeliveries, not `room` entries.
        let mut due: Vec<(u32, u64, InFlight)> = Vec::new();
        let mut redeliveries = 0;
        for &(_, queue_id, offset) in state.by_visibility.range(..=(now, u32::MAX, u64::MAX)) {
            if redeliveries == room {
                break;
            }
            let Some(f) = state
                .queues
                .get(&queue_id)
                .and_then(|q| q.in_flight.get(&offset))
            else {
                continue;
            };
            if f.attempt < self.settings.max_attempts {
                redeliveries += 1;
            }
            due.push((queue_id, offset, *f));
        }
        for (queue_id, offset, f) in due {
            changed = true;
            if f.attempt >= self.settings.max_attempts {
                out.dead.push((queue_id, offset, f.attempt));
                // Hidden while it is moved; settled once it is in the dead-letter topic.
                let moving = InFlight {
                    visible_at: now + MOVING_TO_DLQ,
                    ..f
                };
                state.put(queue_id, offset, moving);
                continue;
            }
            room -= 1;
            let again = InFlight {
                visible_at: hidden_until,
                attempt: f.attempt + 1,
                token: self.new_token(),
            };
            state.put(queue_id, offset, again);
            out.redeliveries.push(Receipt {
                topic: topic.to_owned(),
                queue_id,
                offset,
                attempt: again.attempt,
                token: again.token,
            });
        }

        // Fresh messages, each queue in turn from a rotating start.
        let start = state.next_queue % queues;
        state.next_queue = state.next_queue.wrapping_add(1);
        for queue_id in (0..queues).map(|i| (start + i) % queues) {
            if room == 0 {
                break;
            }
            let range = offsets(queue_id);
            changed |= state.clamp(queue_id, range.min);
            let mut run: Option<(u64, Vec<Receipt>)> = None;
            let cursor_before = state.queues.get(&queue_id).map(|q| q.cursor);
            loop {
                let q = state.queues.entry(queue_id).or_default();
                if q.cursor >= range.max || room == 0 {
                    break;
                }
                let offset = q.cursor;
                q.cursor += 1;
                changed = true;
                if q.acked.contains(&offset) || q.in_flight.contains_key(&offset) {
                    // Acked before a restart with a file that kept no cursor (an older
                    // broker's): a hole in the run.
                    if let Some((first, receipts)) = run.take() {
                        out.runs.push((queue_id, first, receipts));
                    }
                    continue;
                }
                room -= 1;
                let entry = InFlight {
                    visible_at: hidden_until,
                    attempt: 1,
                    token: self.new_token(),
                };
                state.put(queue_id, offset, entry);
                let receipt = Receipt {
                    topic: topic.to_owned(),
                    queue_id,
                    offset,
                    attempt: 1,
                    token: entry.token,
                };
                run.get_or_insert_with(|| (offset, Vec::new()))
                    .1
                    .push(receipt);
            }
            if let Some((first, receipts)) = run {
                out.runs.push((queue_id, first, receipts));
            }
            if state.queues.get(&queue_id).map(|q| q.cursor) != cursor_before {
                state.touch(queue_id, None);
            }
        }
        out.next_visible = state.by_visibility.first().map(|&(at, _, _)| at);
        if changed {
            self.mark_dirty();
        }
        out
    }

    /// Gives back reservations that could not be read (frame full, read failed): they are
    /// visible again at once, as if never delivered.
    pub fn unreserve(&self, group: &str, receipts: &[Receipt]) {
        self.unreserve_at(Instant::now(), group, receipts);
    }

    fn unreserve_at(&self, now: Instant, group: &str, receipts: &[Receipt]) {
        if receipts.is_empty() {
            return;
        }
        let mut groups = self.groups.lock();
        for r in receipts {
            let Some(state) = groups.get_mut(&(group.to_owned(), r.topic.clone())) else {
                continue;
            };
            if let Some(f) = state.current(r) {
                let back = InFlight {
                    visible_at: now,
                    attempt: f.attempt.saturating_sub(1),
                    token: f.token,
                };
                state.put(r.queue_id, r.offset, back);
            }
        }
        self.mark_dirty();
    }

    /// Marks a message done without a delivery to match (moved to the dead-letter topic, or
    /// deleted by retention before it could be read).
    pub fn settle(&self, group: &str, topic: &str, queue_id: u32, offset: u64) {
        let mut groups = self.groups.lock();
        if let Some(state) = groups.get_mut(&(group.to_owned(), topic.to_owned()))
            && state.ack(queue_id, offset)
        {
            self.mark_dirty();
        }
    }

    /// Acks a delivery; `false` when the receipt is stale or unknown.
    pub fn ack(&self, group: &str, receipt: &Receipt) -> bool {
        let mut groups = self.groups.lock();
        let Some(state) = groups.get_mut(&(group.to_owned(), receipt.topic.clone())) else {
            return false;
        };
        if state.current(receipt).is_none() {
            return false;
        }
        state.ack(receipt.queue_id, receipt.offset);
        self.mark_dirty();
        true
    }

    /// Nacks a delivery: visible again after the back-off of its attempt, or, out of attempts,
    /// to be dead-lettered. `None` when the receipt is stale or unknown.
    pub fn nack(&self, group: &str, receipt: &Receipt) -> Option<Nacked> {
        self.nack_at(Instant::now(), group, receipt)
    }

    fn nack_at(&self, now: Instant, group: &str, receipt: &Receipt) -> Option<Nacked> {
        let mut groups = self.groups.lock();
        let state = groups.get_mut(&(group.to_owned(), receipt.topic.clone()))?;
        let f = state.current(receipt)?;
        self.mark_dirty();
        if f.attempt >= self.settings.max_attempts {
            // Hidden while it is moved.
            let moving = InFlight {
                visible_at: now + MOVING_TO_DLQ,
                ..f
            };
            state.put(receipt.queue_id, receipt.offset, moving);
            return Some(Nacked::Dead {
                attempts: f.attempt,
            });
        }
        let delays = &self.settings.retry_delays;
        let index = (f.attempt as usize)
            .saturating_sub(1)
            .min(delays.len().saturating_sub(1));
        let backing_off = InFlight {
            visible_at: now + delays.get(index).copied().unwrap_or_default(),
            ..f
        };
        state.put(receipt.queue_id, receipt.offset, backing_off);
        drop(groups);
        self.wake(&receipt.topic);
        Some(Nacked::Retry)
    }

    /// Hides a delivery for `invisible` from now; `false` when the receipt is stale or unknown.
    pub fn change_invisibility(&self, group: &str, receipt: &Receipt, invisible: Duration) -> bool {
        self.change_invisibility_at(Instant::now(), group, receipt, invisible)
    }

    fn change_invisibility_at(
        &self,
        now: Instant,
        group: &str,
        receipt: &Receipt,
        invisible: Duration,
    ) -> bool {
        let mut groups = self.groups.lock();
        let Some(state) = groups.get_mut(&(group.to_owned(), receipt.topic.clone())) else {
            return false;
        };
        let Some(f) = state.current(receipt) else {
            return false;
        };
        let hidden = InFlight {
            visible_at: now + invisible,
            ..f
        };
        state.put(receipt.queue_id, receipt.offset, hidden);
        drop(groups);
        self.mark_dirty();
        self.wake(&receipt.topic);
        true
    }

    /// Whether `group` has received from `topic` as a shared group.
    pub fn has(&self, group: &str, topic: &str) -> bool {
        self.groups
            .lock()
            .contains_key(&(group.to_owned(), topic.to_owned()))
    }

    /// Moves `group` on `topic` to `offsets` (queue id → offset): everything below an offset
    /// counts as acked, everything from it on as never delivered. Deliveries in flight are
    /// forgotten (their receipts no longer ack).
    pub fn reset(&self, group: &str, topic: &str, offsets: &[(u32, u64)]) {
        let mut groups = self.groups.lock();
        let state = groups
            .entry((group.to_owned(), topic.to_owned()))
            .or_insert_with(|| self.new_state());
        for &(queue_id, offset) in offsets {
            if state.keep_changes {
                let reset = Touched {
                    reset: true,
                    offsets: BTreeSet::new(),
                };
                state.touched.insert(queue_id, reset);
            }
            let q = state.queues.entry(queue_id).or_default();
            for (at, gone) in std::mem::take(&mut q.in_flight) {
                state.by_visibility.remove(&(gone.visible_at, queue_id, at));
            }
            q.acked.clear();
            q.low_water = offset;
            q.cursor = offset;
        }
        drop(groups);
        self.mark_dirty();
        self.wake(topic);
    }

    /// Forgets every group's state on a topic (the topic was deleted).
    pub fn remove_topic(&self, topic: &str) {
        self.groups.lock().retain(|(_, t), _| t != topic);
        self.mark_dirty();
        self.wake(topic);
    }

    /// Groups with state on any topic (they received at least once), sorted.
    pub fn groups(&self) -> Vec<String> {
        let names: BTreeSet<String> = self
            .groups
            .lock()
            .keys()
            .map(|(group, _)| group.clone())
            .collect();
        names.into_iter().collect()
    }

    /// A group's progress on every queue of every topic it received from, by topic and queue;
    /// `None` when it never received. `queues_of(topic)` is the topic's queue count, `offsets`
    /// a queue's readable range.
    pub fn describe(
        &self,
        group: &str,
        queues_of: &dyn Fn(&str) -> u32,
        offsets: &dyn Fn(&str, u32) -> QueueOffsets,
    ) -> Option<Vec<SharedQueueView>> {
        let groups = self.groups.lock();
        let mut topics: Vec<(&String, &TopicState)> = groups
            .iter()
            .filter(|((g, _), _)| g == group)
            .map(|((_, topic), state)| (topic, state))
            .collect();
        if topics.is_empty() {
            return None;
        }
        topics.sort_by_key(|(topic, _)| *topic);
        let never_received = QueueState::default();
        let mut out = Vec::new();
        for (topic, state) in topics {
            for queue_id in 0..queues_of(topic) {
                let range = offsets(topic, queue_id);
                let q = state.queues.get(&queue_id).unwrap_or(&never_received);
                // Below the queue's minimum everything is gone, whether acked or not.
                let low_water = q.low_water.max(range.min);
                let readable = low_water..range.max.max(low_water);
                let acked_above = q.acked.range(readable.clone()).count() as u64;
                out.push(SharedQueueView {
                    topic: topic.clone(),
                    queue_id,
                    offsets: range,
                    low_water,
                    cursor: q.cursor.max(low_water),
                    in_flight: q.in_flight.range(readable).count() as u64,
                    acked_above,
                    unacked: range
                        .max
                        .saturating_sub(low_water)
                        .saturating_sub(acked_above),
                });
            }
        }
        Some(out)
    }

    /// This broker is a replica of a broker group: what changes is kept for
    /// [`SharedGroups::take_progress`]. Only a serving leader changes anything (a follower's
    /// [`SharedGroups::apply_progress`] is not a change to send), so what a leader changed
    /// before its leader work started is sent too.
    pub(crate) fn keep_changes(&self) {
        let mut groups = self.groups.lock();
        self.in_group.store(true, Ordering::Release);
        for state in groups.values_mut() {
            state.keep_changes = true;
        }
    }

    /// The state of a group on a topic it never received from.
    fn new_state(&self) -> TopicState {
        TopicState {
            keep_changes: self.in_group.load(Ordering::Acquire),
            ..TopicState::default()
        }
    }

    /// What every queue changed since the last call holds now, for the other replicas.
    pub(crate) fn take_progress(&self) -> Vec<SharedQueueProgress> {
        self.take_progress_at(Instant::now(), unix_ms_now())
    }

    fn take_progress_at(&self, now: Instant, now_ms: u64) -> Vec<SharedQueueProgress> {
        let mut groups = self.groups.lock();
        let mut out = Vec::new();
        for ((group, topic), state) in groups.iter_mut() {
            for (queue_id, touched) in std::mem::take(&mut state.touched) {
                out.push(state.progress(group, topic, queue_id, &touched, now, now_ms));
            }
        }
        out
    }

    /// Notes again what [`SharedGroups::take_progress`] returned but could not be sent, so the
    /// next call sends it (as it is then).
    pub(crate) fn retake(&self, progress: &[SharedQueueProgress]) {
        let mut groups = self.groups.lock();
        for p in progress {
            let Some(state) = groups.get_mut(&(p.group.clone(), p.topic.clone())) else {
                continue;
            };
            let touched = state.touched.entry(p.queue_id).or_default();
            touched.reset |= p.reset;
            for &(first, count) in &p.acked {
                touched.offsets.extend(first..first.saturating_add(count));
            }
            for run in &p.in_flight {
                touched
                    .offsets
                    .extend(run.offset..run.offset.saturating_add(run.count));
            }
        }
    }

    /// Applies the leader's progress (another replica's [`SharedGroups::take_progress`]) on the
    /// topics `live` says still exist.
    pub(crate) fn apply_progress(
        &self,
        progress: &[SharedQueueProgress],
        live: impl Fn(&str) -> bool,
    ) {
        let progress = progress.iter().filter(|p| live(&p.topic));
        self.apply_progress_at(Instant::now(), unix_ms_now(), progress);
    }

    fn apply_progress_at<'a>(
        &self,
        now: Instant,
        now_ms: u64,
        progress: impl IntoIterator<Item = &'a SharedQueueProgress>,
    ) {
        let mut groups = self.groups.lock();
        for p in progress {
            let state = groups
                .entry((p.group.clone(), p.topic.clone()))
                .or_insert_with(|| self.new_state());
            let next_token = state.apply(p, now, now_ms);
            self.next_token.fetch_max(next_token, Ordering::Relaxed);
        }
        drop(groups);
        self.mark_dirty();
    }

    /// Writes the state to disk if it changed since the last write.
    pub fn persist(&self) -> Result<(), BrokerError> {
        let _serial = self.write_lock.lock();
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        // Copied under the lock, encoded after it, so receivers wait for the copy only.
        let snapshot = self.snapshot(Instant::now(), unix_ms_now());
        let json = serde_json::to_vec(&snapshot)
            .map_err(|e| BrokerError::Config(format!("encoding shared acks: {e}")))?;
        atomic_file::write_atomic(&self.path, &json).map_err(|e| {
            // Try again on the next tick.
            self.mark_dirty();
            BrokerError::io(format!("writing {}", self.path.display()), e)
        })
    }

    /// The state as the file holds it, times as wall-clock ms (`now` is `now_ms`).
    fn snapshot(&self, now: Instant, now_ms: u64) -> Persisted {
        let groups = self.groups.lock();
        let mut out = Persisted::new();
        for ((group, topic), state) in groups.iter() {
            let queues = state
                .queues
                .iter()
                .map(|(queue_id, q)| {
                    let in_flight = q
                        .in_flight
                        .iter()
                        .map(|(offset, f)| {
                            let file = InFlightFile {
                                attempt: f.attempt,
                                token: f.token,
                                visible_at_ms: to_unix_ms(f.visible_at, now, now_ms),
                            };
                            (*offset, file)
                        })
                        .collect();
                    let file = QueueFile {
                        low_water: q.low_water,
                        acked: q.acked.clone(),
                        cursor: Some(q.cursor),
                        in_flight,
                    };
                    (*queue_id, file)
                })
                .collect();
            out.entry(group.clone())
                .or_default()
                .insert(topic.clone(), queues);
        }
        out
    }
}

/// Wall-clock Unix time in ms (0 for a clock set before 1970).
fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `at` as wall-clock Unix ms, given that `now` is `now_ms`; a time ahead is rounded up, so a
/// restored delivery never becomes visible early.
fn to_unix_ms(at: Instant, now: Instant, now_ms: u64) -> u64 {
    let ms = |d: Duration| u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    if at >= now {
        now_ms.saturating_add(ms(at - now))
    } else {
        now_ms.saturating_sub(ms(now - at))
    }
}

/// Wall-clock Unix `ms` as an instant, given that `now` is `now_ms`; a time past (or too far
/// ahead to represent) is `now`.
fn from_unix_ms(ms: u64, now: Instant, now_ms: u64) -> Instant {
    now.checked_add(Duration::from_millis(ms.saturating_sub(now_ms)))
        .unwrap_or(now)
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

    fn limits(max: usize, invisible: Duration) -> ReceiveLimits {
        ReceiveLimits { max, invisible }
    }

    fn receipts(r: &Reservation) -> Vec<Receipt> {
        r.runs
            .iter()
            .flat_map(|(_, _, rs)| rs.iter().cloned())
            .chain(r.redeliveries.iter().cloned())
            .collect()
    }

    fn offsets_and_attempts(r: &Reservation) -> Vec<(u64, u32)> {
        receipts(r).iter().map(|r| (r.offset, r.attempt)).collect()
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
        let first = shared.reserve("g", "t", 1, limits(3, long), &range(4));
        let got = receipts(&first);
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(shared.ack("g", &got[0]));
        assert!(!shared.ack("g", &got[0]), "acked twice");
        assert!(shared.ack("g", &got[2]));
        assert_eq!(shared.nack("g", &got[1]), Some(Nacked::Retry));
        // Offset 1 is visible again (zero back-off) and comes first, then 3, fresh.
        let second = receipts(&shared.reserve("g", "t", 1, limits(10, long), &range(4)));
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
        // 3 was handed out and is hidden for a minute: it is not delivered again after a
        // restart either, and its receipt still acks it.
        shared.persist()?;
        let again = SharedGroups::load(dir.path(), settings())?;
        let third = again.reserve("g", "t", 1, limits(10, long), &range(4));
        assert!(third.is_empty(), "{third:?}");
        assert!(third.next_visible.is_some_and(|at| at > Instant::now()));
        assert!(again.ack("g", &second[0]));
        again.persist()?;
        let last = SharedGroups::load(dir.path(), settings())?;
        assert!(
            last.reserve("g", "t", 1, limits(10, long), &range(4))
                .is_empty()
        );
        Ok(())
    }

    #[test]
    fn attempts_back_offs_and_invisibility_survive_a_restart() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir().map_err(|e| BrokerError::io("tempdir", e))?;
        let settings = SharedSettings {
            retry_delays: vec![Duration::ZERO, Duration::from_secs(3600)],
            max_attempts: 3,
        };
        let shared = SharedGroups::load(dir.path(), settings.clone())?;
        let long = Duration::from_secs(3600);
        let at_once = |r: &Receipt| shared.change_invisibility("g", r, Duration::ZERO);
        let next = |n| receipts(&shared.reserve("g", "t", 1, limits(n, long), &range(4)));
        let first = next(4);
        // Offset 0: nacked twice, now backing off for an hour.
        assert_eq!(shared.nack("g", &first[0]), Some(Nacked::Retry));
        let again = next(1);
        assert_eq!((again[0].offset, again[0].attempt), (0, 2));
        assert_eq!(shared.nack("g", &again[0]), Some(Nacked::Retry));
        // Offset 1: delivered three times, the last one timed out.
        assert!(at_once(&first[1]));
        let again = next(1);
        assert!(at_once(&again[0]));
        let again = next(1);
        assert_eq!((again[0].offset, again[0].attempt), (1, 3));
        assert!(shared.change_invisibility("g", &again[0], Duration::from_millis(1)));
        // Offset 2: in flight for an hour. Offset 3: timed out at its first delivery.
        assert!(shared.change_invisibility("g", &first[3], Duration::from_millis(1)));
        std::thread::sleep(Duration::from_millis(5));
        shared.persist()?;

        let again = SharedGroups::load(dir.path(), settings)?;
        let after = again.reserve("g", "t", 1, limits(10, long), &range(4));
        // 1 goes to the dead-letter topic with its count; 3 comes again at its second
        // attempt; 0 backs off, 2 stays hidden.
        assert_eq!(after.dead, [(0, 1, 3)]);
        assert_eq!(offsets_and_attempts(&after), [(3, 2)]);
        // A receipt from before the restart still works.
        assert!(again.ack("g", &first[2]));
        assert!(!again.ack("g", &first[3]), "redelivered since");
        again.settle("g", "t", 0, 1);
        let view = again.describe("g", &|_| 1, &|_, _| QueueOffsets { min: 0, max: 4 });
        assert_eq!(
            view.as_deref(),
            Some(
                &[SharedQueueView {
                    topic: "t".into(),
                    queue_id: 0,
                    offsets: QueueOffsets { min: 0, max: 4 },
                    low_water: 0,
                    cursor: 4,
                    in_flight: 2,
                    acked_above: 2,
                    unacked: 2,
                }][..]
            )
        );
        assert!(
            again
                .describe("other", &|_| 1, &|_, _| QueueOffsets::default())
                .is_none()
        );
        Ok(())
    }

    #[test]
    fn a_follower_takes_the_leaders_progress_a_reset_included() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir().map_err(|e| BrokerError::io("tempdir", e))?;
        let leader = SharedGroups::load(&dir.path().join("leader"), settings())?;
        let follower = SharedGroups::load(&dir.path().join("follower"), settings())?;
        let long = Duration::from_secs(60);
        leader.keep_changes();
        let got = receipts(&leader.reserve("g", "t", 1, limits(4, long), &range(8)));
        assert!(leader.ack("g", &got[0]));
        assert!(leader.ack("g", &got[2]));
        let progress = leader.take_progress();
        assert_eq!(progress.len(), 1);
        assert_eq!(progress[0].acked, [(2, 1)], "below low water: implied");
        assert_eq!(
            progress[0]
                .in_flight
                .iter()
                .map(|r| (r.offset, r.count))
                .collect::<Vec<_>>(),
            [(1, 1), (3, 1)]
        );
        follower.apply_progress(&progress, |_| true);
        assert!(follower.ack("g", &got[1]), "the leader's receipt acks here");
        assert!(!follower.ack("g", &got[0]), "acked already");
        // A reset forgets acks and deliveries on the follower too.
        leader.reset("g", "t", &[(0, 6)]);
        follower.apply_progress(&leader.take_progress(), |_| true);
        assert!(!follower.ack("g", &got[3]), "forgotten by the reset");
        let next = receipts(&follower.reserve("g", "t", 1, limits(4, long), &range(8)));
        assert_eq!(next.iter().map(|r| r.offset).collect::<Vec<_>>(), [6, 7]);
        assert!(leader.take_progress().is_empty(), "nothing changed since");
        Ok(())
    }

    #[test]
    fn files_of_older_brokers_load() -> Result<(), BrokerError> {
        let dir = tempfile::tempdir().map_err(|e| BrokerError::io("tempdir", e))?;
        let path = dir.path().join("config").join("shared_acks.json");
        atomic_file::write_atomic(
            &path,
            br#"{"g": {"t": {"0": {"low_water": 2, "acked": [4]}}}}"#,
        )
        .map_err(|e| BrokerError::io("write", e))?;
        let shared = SharedGroups::load(dir.path(), settings())?;
        let got = shared.reserve("g", "t", 1, limits(10, Duration::from_secs(60)), &range(6));
        assert_eq!(offsets_and_attempts(&got), [(2, 1), (3, 1), (5, 1)]);
        assert_eq!(shared.groups(), ["g"]);
        Ok(())
    }

    #[test]
    fn wall_clock_conversion_rounds_towards_later() {
        let now = Instant::now();
        let now_ms = 1_000_000;
        let ahead = now + Duration::from_micros(1500);
        assert_eq!(to_unix_ms(ahead, now, now_ms), 1_000_002);
        assert_eq!(to_unix_ms(now, now, now_ms), now_ms);
        assert_eq!(
            from_unix_ms(1_000_250, now, now_ms),
            now + Duration::from_millis(250)
        );
        assert_eq!(from_unix_ms(5, now, now_ms), now, "past: visible now");
        assert!(from_unix_ms(u64::MAX, now, now_ms) >= now);
    }

    /// Property test: the visibility index against a naive model that scans everything.
    mod model {
        use proptest::prelude::*;

        use super::super::*;
        use super::{limits, receipts};

        const MAX_ATTEMPTS: u32 = 3;
        const DELAYS_MS: [u64; 2] = [5, 20];
        /// The wall clock the model pretends `base` is, for restarts.
        const BASE_MS: u64 = 1_000_000;

        #[derive(Debug, Clone)]
        enum Op {
            Advance(u64),
            Reserve { max: usize, invisible: u64 },
            Ack(usize),
            Nack(usize),
            Change(usize, u64),
            Unreserve(usize),
            Settle(usize),
            Produce(u32),
            Retain(u32, u64),
            Restart,
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                3 => (0u64..40).prop_map(Op::Advance),
                4 => (1usize..5, 0u64..60)
                    .prop_map(|(max, invisible)| Op::Reserve { max, invisible }),
                2 => any::<usize>().prop_map(Op::Ack),
                2 => any::<usize>().prop_map(Op::Nack),
                1 => (any::<usize>(), 0u64..60).prop_map(|(i, ms)| Op::Change(i, ms)),
                1 => any::<usize>().prop_map(Op::Unreserve),
                1 => any::<usize>().prop_map(Op::Settle),
                1 => (0u32..2).prop_map(Op::Produce),
                1 => (0u32..2, 0u64..3).prop_map(|(q, n)| Op::Retain(q, n)),
                1 => Just(Op::Restart),
            ]
        }

        #[derive(Debug, Default, Clone, PartialEq)]
        struct ModelQueue {
            low_water: u64,
            acked: BTreeSet<u64>,
            cursor: u64,
            in_flight: BTreeMap<u64, InFlight>,
        }

        impl ModelQueue {
            fn ack(&mut self, offset: u64) {
                self.in_flight.remove(&offset);
                if offset >= self.low_water {
                    self.acked.insert(offset);
                }
                while self.acked.remove(&self.low_water) {
                    self.low_water += 1;
                }
            }
        }

        #[derive(Debug, Default)]
        struct Model {
            next_queue: u32,
            queues: BTreeMap<u32, ModelQueue>,
        }

        impl Model {
            fn current(&self, r: &Receipt) -> Option<InFlight> {
                self.queues
                    .get(&r.queue_id)?
                    .in_flight
                    .get(&r.offset)
                    .filter(|f| f.token == r.token)
                    .copied()
            }

            fn set(&mut self, r: &Receipt, f: InFlight) {
                if let Some(q) = self.queues.get_mut(&r.queue_id) {
                    q.in_flight.insert(r.offset, f);
                }
            }

            /// Expected `(dead, redelivered, fresh)` as (queue, offset, attempt); applies
            /// the reservation, tokens taken from the real one.
            fn reserve(
                &mut self,
                now: Instant,
                queues: u32,
                max: usize,
                invisible: Duration,
                ranges: &[QueueOffsets],
            ) -> Vec<(u32, u64, u32)> {
                let mut all: Vec<(Instant, u32, u64, u32)> = self
                    .queues
                    .iter()
                    .flat_map(|(q, s)| {
                        s.in_flight
                            .iter()
                            .map(move |(o, f)| (f.visible_at, *q, *o, f.attempt))
                    })
                    .filter(|e| e.0 <= now)
                    .collect();
                all.sort();
                let mut room = max;
                let mut expected = Vec::new();
                for (_, q, o, attempt) in all {
                    if room == 0 {
                        break;
                    }
                    let f = self
                        .queues
                        .get_mut(&q)
                        .and_then(|s| s.in_flight.get_mut(&o))
                        .expect("in flight");
                    if attempt >= MAX_ATTEMPTS {
                        f.visible_at = now + MOVING_TO_DLQ;
                        expected.push((q, o, 0));
                    } else {
                        room -= 1;
                        f.attempt += 1;
                        f.visible_at = now + invisible;
                        expected.push((q, o, f.attempt));
                    }
                }
                let start = self.next_queue % queues;
                self.next_queue = self.next_queue.wrapping_add(1);
                for q in (0..queues).map(|i| (start + i) % queues) {
                    if room == 0 {
                        break;
                    }
                    let range = ranges[q as usize];
                    let s = self.queues.entry(q).or_default();
                    if s.low_water < range.min {
                        s.in_flight.retain(|o, _| *o >= range.min);
                        s.acked.retain(|o| *o >= range.min);
                        s.low_water = range.min;
                        while s.acked.remove(&s.low_water) {
                            s.low_water += 1;
                        }
                    }
                    s.cursor = s.cursor.max(s.low_water);
                    while s.cursor < range.max && room > 0 {
                        let o = s.cursor;
                        s.cursor += 1;
                        if s.acked.contains(&o) || s.in_flight.contains_key(&o) {
                            continue;
                        }
                        room -= 1;
                        s.in_flight.insert(
                            o,
                            InFlight {
                                visible_at: now + invisible,
                                attempt: 1,
                                token: 0,
                            },
                        );
                        expected.push((q, o, 1));
                    }
                }
                expected
            }

            fn next_visible(&self) -> Option<Instant> {
                self.queues
                    .values()
                    .flat_map(|q| q.in_flight.values().map(|f| f.visible_at))
                    .min()
            }
        }

        /// The real state matches the model, and the index holds exactly the in-flight keys.
        fn check(shared: &SharedGroups, model: &Model) -> Result<(), TestCaseError> {
            let groups = shared.groups.lock();
            let Some(state) = groups.get(&("g".to_owned(), "t".to_owned())) else {
                prop_assert!(model.queues.is_empty());
                return Ok(());
            };
            let keys: BTreeSet<VisibilityKey> = state
                .queues
                .iter()
                .flat_map(|(q, s)| s.in_flight.iter().map(|(o, f)| (f.visible_at, *q, *o)))
                .collect();
            prop_assert_eq!(&keys, &state.by_visibility);
            for (q, m) in &model.queues {
                let s = state.queues.get(q);
                prop_assert!(s.is_some(), "queue {} missing", q);
                let s = s.expect("checked");
                prop_assert_eq!(s.low_water, m.low_water);
                prop_assert_eq!(&s.acked, &m.acked);
                prop_assert_eq!(s.cursor, m.cursor);
                prop_assert_eq!(&s.in_flight, &m.in_flight);
            }
            prop_assert_eq!(state.next_queue, model.next_queue);
            Ok(())
        }

        fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
            let dir = tempfile::tempdir().expect("tempdir");
            let settings = SharedSettings {
                retry_delays: DELAYS_MS
                    .iter()
                    .map(|ms| Duration::from_millis(*ms))
                    .collect(),
                max_attempts: MAX_ATTEMPTS,
            };
            let base = Instant::now();
            let mut clock = 0u64;
            let mut shared = SharedGroups::load(dir.path(), settings.clone()).expect("load");
            shared.keep_changes();
            // Another replica of a broker group, applying what the leader sends.
            let follower =
                SharedGroups::load(&dir.path().join("follower"), settings.clone()).expect("load");
            let mut model = Model::default();
            let mut ranges = vec![
                QueueOffsets { min: 0, max: 6 },
                QueueOffsets { min: 0, max: 3 },
            ];
            let mut handed: Vec<Receipt> = Vec::new();
            for op in ops {
                let now = base + Duration::from_millis(clock);
                let pick = |i: usize| handed.get(i % handed.len().max(1)).cloned();
                match op {
                    Op::Advance(ms) => clock += ms,
                    Op::Reserve { max, invisible } => {
                        let invisible = Duration::from_millis(invisible);
                        let r = ranges.clone();
                        let got = shared.reserve_at(
                            now,
                            "g",
                            "t",
                            2,
                            limits(max, invisible),
                            &move |q| r[q as usize],
                        );
                        let expected = model.reserve(now, 2, max, invisible, &ranges);
                        let mut actual: Vec<(u32, u64, u32)> =
                            got.dead.iter().map(|&(q, o, _)| (q, o, 0)).collect();
                        actual.extend(
                            got.redeliveries
                                .iter()
                                .map(|r| (r.queue_id, r.offset, r.attempt)),
                        );
                        let fresh = receipts(&Reservation {
                            runs: got.runs.clone(),
                            ..Reservation::default()
                        });
                        actual.extend(fresh.iter().map(|r| (r.queue_id, r.offset, r.attempt)));
                        let mut sorted_expected = expected.clone();
                        // The real one lists dead letters apart; order within each kind kept.
                        sorted_expected.sort_by_key(|e| e.2 != 0);
                        prop_assert_eq!(actual, sorted_expected);
                        for &(q, o, attempts) in &got.dead {
                            prop_assert!(attempts >= MAX_ATTEMPTS, "{} {}", q, o);
                        }
                        for r in got.redeliveries.iter().chain(fresh.iter()) {
                            // A redelivery below a queue's new minimum is dropped by the
                            // retention clamp of the same receive (in both).
                            if let Some(f) = model
                                .queues
                                .get_mut(&r.queue_id)
                                .and_then(|q| q.in_flight.get_mut(&r.offset))
                            {
                                f.token = r.token;
                            }
                            handed.push(r.clone());
                        }
                        prop_assert_eq!(got.next_visible, model.next_visible());
                    }
                    Op::Ack(i) => {
                        if let Some(r) = pick(i) {
                            let expected = model.current(&r).is_some();
                            if expected {
                                model
                                    .queues
                                    .get_mut(&r.queue_id)
                                    .expect("queue")
                                    .ack(r.offset);
                            }
                            prop_assert_eq!(shared.ack("g", &r), expected);
                        }
                    }
                    Op::Nack(i) => {
                        if let Some(r) = pick(i) {
                            let expected = model.current(&r).map(|f| {
                                if f.attempt >= MAX_ATTEMPTS {
                                    model.set(
                                        &r,
                                        InFlight {
                                            visible_at: now + MOVING_TO_DLQ,
                                            ..f
                                        },
                                    );
                                    Nacked::Dead {
                                        attempts: f.attempt,
                                    }
                                } else {
                                    let delay =
                                        DELAYS_MS[(f.attempt as usize).saturating_sub(1).min(1)];
                                    model.set(
                                        &r,
                                        InFlight {
                                            visible_at: now + Duration::from_millis(delay),
                                            ..f
                                        },
                                    );
                                    Nacked::Retry
                                }
                            });
                            prop_assert_eq!(shared.nack_at(now, "g", &r), expected);
                        }
                    }
                    Op::Change(i, ms) => {
                        if let Some(r) = pick(i) {
                            let invisible = Duration::from_millis(ms);
                            let expected = model.current(&r).map(|f| {
                                model.set(
                                    &r,
                                    InFlight {
                                        visible_at: now + invisible,
                                        ..f
                                    },
                                );
                            });
                            prop_assert_eq!(
                                shared.change_invisibility_at(now, "g", &r, invisible),
                                expected.is_some()
                            );
                        }
                    }
                    Op::Unreserve(i) => {
                        if let Some(r) = pick(i) {
                            if let Some(f) = model.current(&r) {
                                model.set(
                                    &r,
                                    InFlight {
                                        visible_at: now,
                                        attempt: f.attempt.saturating_sub(1),
                                        ..f
                                    },
                                );
                            }
                            shared.unreserve_at(now, "g", std::slice::from_ref(&r));
                        }
                    }
                    Op::Settle(i) => {
                        if let Some(r) = pick(i) {
                            if let Some(q) = model.queues.get_mut(&r.queue_id) {
                                q.ack(r.offset);
                            }
                            shared.settle("g", "t", r.queue_id, r.offset);
                        }
                    }
                    Op::Produce(q) => ranges[q as usize].max += 1,
                    Op::Retain(q, n) => {
                        let range = &mut ranges[q as usize];
                        range.min = (range.min + n).min(range.max);
                    }
                    Op::Restart => {
                        let snapshot = shared.snapshot(now, BASE_MS + clock);
                        shared = SharedGroups::from_persisted(
                            dir.path().join("unused"),
                            settings.clone(),
                            snapshot,
                            now,
                            BASE_MS + clock,
                        );
                        shared.keep_changes();
                        model.next_queue = 0;
                        for q in model.queues.values_mut() {
                            for f in q.in_flight.values_mut() {
                                f.visible_at = f.visible_at.max(now);
                            }
                        }
                    }
                }
                check(&shared, &model)?;
                let now_ms = BASE_MS + clock;
                let progress = shared.take_progress_at(now, now_ms);
                follower.apply_progress_at(now, now_ms, &progress);
                prop_assert_eq!(
                    comparable(shared.snapshot(now, now_ms), now_ms),
                    comparable(follower.snapshot(now, now_ms), now_ms),
                    "the follower holds what the leader holds"
                );
            }
            Ok(())
        }

        /// A snapshot with what means the same written the same: past visible-again times
        /// as `now_ms` (visible now), and no queues or topics that hold nothing.
        fn comparable(mut persisted: Persisted, now_ms: u64) -> Persisted {
            for topics in persisted.values_mut() {
                for queues in topics.values_mut() {
                    queues.retain(|_, q| {
                        q.low_water != 0
                            || q.cursor.unwrap_or(0) != 0
                            || !q.acked.is_empty()
                            || !q.in_flight.is_empty()
                    });
                    for q in queues.values_mut() {
                        for f in q.in_flight.values_mut() {
                            f.visible_at_ms = f.visible_at_ms.max(now_ms);
                        }
                    }
                }
                topics.retain(|_, queues| !queues.is_empty());
            }
            persisted.retain(|_, topics| !topics.is_empty());
            persisted
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            #[test]
            fn visibility_index_matches_a_naive_model(ops in proptest::collection::vec(op(), 1..120)) {
                run(ops)?;
            }
        }
    }
}
