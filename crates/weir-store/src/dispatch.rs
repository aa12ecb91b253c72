//! The dispatcher: follows the commit log and builds the consume queues and the key index.
//!
//! It reads records between the dispatched and the written position, appends one 20-byte
//! entry per record to its queue (buffered per queue, one positional write per queue per
//! round), adds keyed records to the key index, then publishes the queues' new maxima and
//! tells the dispatch listener. Readers only ever see dispatched entries. Entries are written
//! at `queue_offset * 20`, so dispatching a range again after recovery is idempotent. Records
//! of a deleted topic stored before its deletion are skipped (see `tombstones.rs`), and so are
//! the damaged stretches recovery found between valid records (its *holes*): the queue
//! offsets whose records were lost there get *lost* entries (see `consume_queue.rs`), so a
//! read steps over them and says so instead of stopping.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use weir_proto::batch::{self, MAX_UNCOMPRESSED_LEN, tag_hash};

use crate::consume_queue::{ConsumeQueue, ENTRY_LEN, Entry};
use crate::damage::{DamageLocation, DamageReason, DamagedRange};
use crate::segment::{END_MARKER_LEN, is_end_marker};
use crate::store::Inner;
use crate::tombstones::Tombstones;

/// Most commit-log bytes handled in one round, so listeners hear about progress promptly.
const ROUND_BYTES: u64 = 8 << 20;
/// Most lost entries written for one gap in a queue's offsets; a larger gap is left empty
/// (reads report its entries as missing).
const MAX_LOST_ENTRIES: u64 = 1 << 20;

/// Entries of one queue gathered in a round.
#[derive(Debug)]
struct QueueBuf {
    topic: Arc<str>,
    queue_id: u32,
    cq: Option<Arc<ConsumeQueue>>,
    first: u64,
    next: u64,
    bytes: Vec<u8>,
    in_round: bool,
    /// Whether `next` is known (from the queue's entries or a dispatched record).
    known: bool,
    /// Bytes of this round's batches of the queue, all in segment `sized_segment` (see
    /// `topic_bytes.rs`).
    sized: u64,
    sized_segment: u64,
}

/// The dispatcher's position and reusable buffers, held under the dispatch lock.
#[derive(Debug)]
pub(crate) struct DispatchState {
    /// Commit-log offset dispatched up to.
    pub dispatched: u64,
    /// Deleted topics, whose older records are skipped.
    pub tombstones: Tombstones,
    /// Damaged stretches of the log, `from → to`, stepped over.
    holes: BTreeMap<u64, u64>,
    queues: HashMap<Arc<str>, HashMap<u32, QueueBuf>>,
    touched: Vec<(Arc<str>, u32)>,
}

impl DispatchState {
    /// A dispatcher starting at `dispatched`.
    pub fn new(dispatched: u64, tombstones: Tombstones, holes: &[(u64, u64)]) -> DispatchState {
        DispatchState {
            dispatched,
            tombstones,
            holes: holes.iter().copied().collect(),
            queues: HashMap::new(),
            touched: Vec::new(),
        }
    }

    fn buf(&mut self, topic: &str, queue_id: u32) -> &mut QueueBuf {
        let name: Arc<str> = match self.queues.get_key_value(topic) {
            Some((k, _)) => Arc::clone(k),
            None => {
                let k: Arc<str> = Arc::from(topic);
                self.queues.insert(Arc::clone(&k), HashMap::new());
                k
            }
        };
        self.queues
            .entry(Arc::clone(&name))
            .or_default()
            .entry(queue_id)
            .or_insert_with(|| QueueBuf {
                topic: name,
                queue_id,
                cq: None,
                first: 0,
                next: 0,
                bytes: Vec::new(),
                in_round: false,
                known: false,
                sized: 0,
                sized_segment: 0,
            })
    }

    /// Forgets a topic's buffers (its queues were deleted).
    pub fn forget_topic(&mut self, topic: &str) {
        self.queues.remove(topic);
    }

    /// The damaged stretches of the log stepped over, `from → to`.
    pub fn holes(&self) -> &BTreeMap<u64, u64> {
        &self.holes
    }
}

/// One update for the dispatch listener: (topic, queue, new max offset).
pub(crate) type Touched = Vec<(Arc<str>, u32, u64)>;

/// Dispatches the log from `state.dispatched` towards `target`, at most `budget` bytes.
///
/// On error nothing is published and the position does not move: the next round redoes it.
pub(crate) fn dispatch_round(
    inner: &Inner,
    state: &mut DispatchState,
    target: u64,
    budget: u64,
) -> io::Result<Touched> {
    let result = round(inner, state, target, budget);
    if result.is_err() {
        state.touched.clear();
        for buf in state.queues.values_mut().flat_map(|qs| qs.values_mut()) {
            buf.bytes.clear();
            buf.in_round = false;
            buf.sized = 0;
        }
    }
    result
}

fn round(
    inner: &Inner,
    state: &mut DispatchState,
    target: u64,
    budget: u64,
) -> io::Result<Touched> {
    let start = state.dispatched;
    let limit = target.min(start.saturating_add(budget));
    let mut pos = start;
    // Batch bytes of queues whose round crossed into a new segment: (segment, topic, bytes).
    let mut sized_before: Vec<(u64, Arc<str>, u64)> = Vec::new();
    while pos < target {
        if pos >= limit {
            break;
        }
        if let Some(&to) = state.holes.get(&pos) {
            pos = to;
            continue;
        }
        let Some(seg) = inner.log.segment_for(pos) else {
            return Err(io::Error::other(format!(
                "dispatch position {pos} is in no segment"
            )));
        };
        let rel = pos - seg.base;
        let avail = (target - pos).min(seg.capacity - rel) as usize;
        let Some(rest) = seg.bytes(rel, avail) else {
            return Err(io::Error::other("dispatch read past a segment"));
        };
        if (rest.len() as u64) < END_MARKER_LEN || is_end_marker(rest) {
            pos = seg.end();
            continue;
        }
        let entry = batch::Entry::parse(rest)
            .map_err(|e| io::Error::other(format!("unreadable entry at {pos}: {e}")))?;
        let stamp = entry.stamp();
        let topic = entry.topic();
        let len = entry.len() as u64;
        if state.tombstones.covers(topic, pos) {
            // An entry of a deleted topic (re-dispatched by recovery): no queue gets it.
            pos += len;
            continue;
        }
        let records = entry
            .records(MAX_UNCOMPRESSED_LEN)
            .map_err(|e| io::Error::other(format!("unreadable records at {pos}: {e}")))?;
        let buf = state.buf(topic, stamp.queue_id);
        if !buf.known {
            buf.known = true;
            // A queue with entries continues at its end; a new (or rebuilt) one wherever its
            // first batch says.
            buf.next = inner
                .queues
                .get(topic, stamp.queue_id)
                .filter(|cq| cq.max() > cq.min())
                .map_or(stamp.base_offset, |cq| cq.max());
        }
        if stamp.base_offset > buf.next && stamp.base_offset - buf.next <= MAX_LOST_ENTRIES {
            // Messages of this queue were lost in a damaged stretch before this one.
            inner.damage.report(
                DamagedRange {
                    location: DamageLocation::Queue {
                        topic: topic.to_owned(),
                        queue_id: stamp.queue_id,
                    },
                    from: buf.next,
                    to: stamp.base_offset,
                    reason: DamageReason::LostInLog,
                },
                "the messages were in a damaged stretch of the commit log",
            );
            if buf.bytes.is_empty() {
                buf.first = buf.next;
            }
            let lost = Entry::lost(pos).encode();
            for _ in buf.next..stamp.base_offset {
                buf.bytes.extend_from_slice(&lost);
            }
            buf.next = stamp.base_offset;
        }
        if !buf.bytes.is_empty() && buf.next != stamp.base_offset {
            // Not contiguous with what is buffered (cannot happen with one writer, but a
            // positional write per run keeps it correct anyway).
            write_buf(inner, buf)?;
        }
        if buf.bytes.is_empty() {
            buf.first = stamp.base_offset;
        }
        // One consume-queue entry per message, all pointing at this batch; one key-index
        // entry per key (a run of one key makes one: lookups read the batch anyway).
        let mut last_key: Option<&[u8]> = None;
        buf.bytes
            .reserve((entry.record_count() as usize).min(entry.len()) * ENTRY_LEN as usize);
        for record in records.iter() {
            let record =
                record.map_err(|e| io::Error::other(format!("unreadable record at {pos}: {e}")))?;
            let cq_entry = Entry {
                offset: pos,
                size: len as u32,
                tag_hash: tag_hash(record.tag()),
            };
            buf.bytes.extend_from_slice(&cq_entry.encode());
            if let Some(key) = record.key.filter(|k| !k.is_empty())
                && last_key != Some(key)
            {
                inner.index.insert(topic, key, pos)?;
                last_key = Some(key);
            }
        }
        buf.next = stamp.base_offset + u64::from(entry.record_count());
        if buf.sized > 0 && buf.sized_segment != seg.base {
            sized_before.push((buf.sized_segment, Arc::clone(&buf.topic), buf.sized));
            buf.sized = 0;
        }
        buf.sized_segment = seg.base;
        buf.sized += len;
        if !buf.in_round {
            buf.in_round = true;
            let name = Arc::clone(&buf.topic);
            state.touched.push((name, stamp.queue_id));
        }
        pos += len;
    }
    let mut touched = Vec::with_capacity(state.touched.len());
    let names = std::mem::take(&mut state.touched);
    for (topic, queue_id) in &names {
        let buf = state.buf(topic, *queue_id);
        if !buf.bytes.is_empty() {
            write_buf(inner, buf)?;
        }
    }
    let mut topic_bytes = inner.topic_bytes.lock();
    for (segment, topic, bytes) in &sized_before {
        topic_bytes.add(*segment, topic, *bytes);
    }
    for (topic, queue_id) in names {
        let buf = state.buf(&topic, queue_id);
        buf.in_round = false;
        if buf.sized > 0 {
            topic_bytes.add(buf.sized_segment, &buf.topic, buf.sized);
            buf.sized = 0;
        }
        if let Some(cq) = &buf.cq
            && buf.next > cq.max()
        {
            cq.publish_max(buf.next);
        }
        touched.push((topic, queue_id, buf.next));
    }
    drop(topic_bytes);
    state.dispatched = pos;
    inner.dispatched.store(pos, Ordering::Release);
    Ok(touched)
}

fn write_buf(inner: &Inner, buf: &mut QueueBuf) -> io::Result<()> {
    let cq = match &buf.cq {
        Some(cq) => Arc::clone(cq),
        None => inner.queues.get_or_create(&buf.topic, buf.queue_id),
    };
    cq.write_entries(buf.first, &buf.bytes)?;
    buf.bytes.clear();
    buf.cq = Some(cq);
    Ok(())
}

/// Dispatches what is written, on the caller's thread, unless a dispatch is already running
/// (then that one, or the dispatcher thread, covers it). Appenders call this so that an
/// acknowledged batch is readable without waiting for the dispatcher thread to wake up.
pub(crate) fn try_dispatch_now(inner: &Inner) {
    let Some(mut state) = inner.dispatch.try_lock() else {
        return;
    };
    let target = inner.dispatch_target();
    if state.dispatched >= target {
        return;
    }
    match dispatch_round(inner, &mut state, target, ROUND_BYTES) {
        Ok(touched) => {
            drop(state);
            inner.notify_listener(&touched);
        }
        Err(e) => {
            drop(state);
            inner.dispatch_failed(&e);
            tracing::warn!(error = %e, "inline dispatch failed; the dispatcher retries");
        }
    }
}

/// The dispatcher thread: dispatch whenever the log grows, until shutdown.
pub(crate) fn run(inner: Arc<Inner>) {
    loop {
        {
            let mut guard = inner.wake.lock();
            while !inner.stopping()
                && inner.dispatch_target() <= inner.dispatched.load(Ordering::Acquire)
            {
                inner
                    .dispatch_cv
                    .wait_for(&mut guard, Duration::from_millis(200));
            }
        }
        if inner.stopping() && inner.dispatch_target() <= inner.dispatched.load(Ordering::Acquire) {
            return;
        }
        let result = {
            let mut state = inner.dispatch.lock();
            let target = inner.dispatch_target();
            dispatch_round(&inner, &mut state, target, ROUND_BYTES)
        };
        match result {
            Ok(touched) => inner.notify_listener(&touched),
            Err(e) => {
                inner.dispatch_failed(&e);
                tracing::error!(error = %e, "dispatch failed; retrying");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
