//! Delivery of due delayed messages, in two stages so that only the append is left for the
//! due time:
//!
//! ```text
//!  TimingWheel --(due within LEAD)--> preparer thread --(read, re-encode)--> Stage
//!                                                                            |
//!        store.append, one per queue  <--(due ms has come)-- appender task <--+
//!
//!  Stage: due ms -> Bucket { topic -> [(queue, QueueBatch)], repark: QueueBatch }
//!         QueueBatch = re-encoded entries laid end to end + their %DELAY% offsets and timers
//! ```
//!
//! * The **preparer** (a thread: reading and re-encoding is CPU work) advances the wheel to
//!   the clock, then further ahead, up to [`LEAD`], while the stage holds less than
//!   [`STAGE_BYTES`]. Records due now are prepared even over that budget, but in chunks of
//!   [`PREPARE_CHUNK`] that wait for the stage to drain, so memory stays bounded. A record the
//!   wheel gave early because it must leave the log's retention window (see the module doc of
//!   `delay`) is staged for re-parking at once.
//! * The **appender** (a task) sleeps until the earliest staged millisecond (or until the
//!   preparer stages an earlier one), takes every bucket that is due, appends each of its
//!   per-queue batches as staged, and marks the records delivered. A failed append puts its
//!   timers back into the wheel for [`DELIVERY_RETRY`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use weir_proto::batch::{BatchBuilder, BatchOptions, Entry, MAX_UNCOMPRESSED_LEN};
use weir_proto::{ErrorCode, MessageId, names};
use weir_store::StoreError;

use super::{
    Delays, LEAD, PERSIST_INTERVAL, PROP_DELAY_ORIGIN_ID, PROP_REAL_QUEUE, PROP_REAL_TOPIC, now_ms,
};
use crate::core::state_change::StateChange;
use crate::error::RequestError;
use crate::features::delay::timing_wheel::Timer;
use crate::metrics_catalog::{DELAY_LATENESS_SECONDS, DELAYED_DROPPED_TOTAL, DELAYED_MESSAGES};

/// Re-encoded bytes the stage may hold ahead of their time.
const STAGE_BYTES: usize = 32 << 20;
/// Timers prepared at a time.
const PREPARE_CHUNK: usize = 8192;
/// How far the wheel is moved per look at the stage's budget, ms.
const LOOKAHEAD_STEP: u64 = 8;
/// Longest wait of the preparer between passes when nothing wakes it.
const PREPARE_IDLE: Duration = Duration::from_millis(20);
/// Longest wait of the appender when nothing is staged.
const APPEND_IDLE: Duration = Duration::from_millis(50);
/// Wait before a delivery that failed (disk full, storage error) is tried again.
const DELIVERY_RETRY: Duration = Duration::from_secs(1);

/// Records bound for one queue: their bytes, their `%DELAY%` queue offsets (marked delivered
/// once appended) and their timers (put back if the append fails).
#[derive(Debug, Default)]
struct QueueBatch {
    records: BytesMut,
    done: Vec<u64>,
    timers: Vec<Timer>,
}

impl QueueBatch {
    fn push(&mut self, queue_offset: u64, timer: Timer) {
        self.done.push(queue_offset);
        self.timers.push(timer);
    }

    fn extend(&mut self, other: QueueBatch) {
        self.records.extend_from_slice(&other.records);
        self.done.extend(other.done);
        self.timers.extend(other.timers);
    }

    fn is_empty(&self) -> bool {
        self.done.is_empty()
    }
}

/// The records due in one millisecond.
#[derive(Debug, Default)]
struct Bucket {
    /// Topic name → index in `topics`.
    index: HashMap<String, usize>,
    /// Per topic, its queues' batches.
    topics: Vec<(String, Vec<(u32, QueueBatch)>)>,
    /// Records to append again at the end of `%DELAY%`.
    repark: QueueBatch,
    records: usize,
    bytes: usize,
}

impl Bucket {
    /// The batch of `topic`/`queue_id` (allocates the topic name once per bucket).
    fn batch(&mut self, topic: &str, queue_id: u32) -> &mut QueueBatch {
        let index = match self.index.get(topic) {
            Some(&index) => index,
            None => {
                self.index.insert(topic.to_owned(), self.topics.len());
                self.topics.push((topic.to_owned(), Vec::new()));
                self.topics.len() - 1
            }
        };
        let queues = &mut self.topics[index].1;
        let at = match queues.iter().position(|(q, _)| *q == queue_id) {
            Some(at) => at,
            None => {
                queues.push((queue_id, QueueBatch::default()));
                queues.len() - 1
            }
        };
        &mut queues[at].1
    }

    fn merge(&mut self, other: Bucket) {
        for (topic, queues) in other.topics {
            for (queue_id, batch) in queues {
                self.batch(&topic, queue_id).extend(batch);
            }
        }
        self.repark.extend(other.repark);
        self.records += other.records;
        self.bytes += other.bytes;
    }
}

/// Prepared records waiting for their millisecond.
#[derive(Debug, Default)]
pub(super) struct Stage {
    buckets: Mutex<BTreeMap<i64, Bucket>>,
    records: AtomicUsize,
    bytes: AtomicUsize,
    /// Wakes the appender: a bucket earlier than the ones it knew was staged.
    earlier: Notify,
    /// Wakes the preparer: the appender took buckets (room in the budget).
    drained: parking_lot::Condvar,
    drained_lock: Mutex<()>,
}

impl Stage {
    /// Staged records.
    pub(super) fn len(&self) -> usize {
        self.records.load(Ordering::Relaxed)
    }

    fn add(&self, prepared: BTreeMap<i64, Bucket>) {
        let mut buckets = self.buckets.lock();
        let first = buckets.keys().next().copied();
        let mut earlier = false;
        for (due, bucket) in prepared {
            earlier |= first.is_none_or(|f| due < f);
            self.records.fetch_add(bucket.records, Ordering::Relaxed);
            self.bytes.fetch_add(bucket.bytes, Ordering::Relaxed);
            match buckets.get_mut(&due) {
                Some(staged) => staged.merge(bucket),
                None => {
                    buckets.insert(due, bucket);
                }
            }
        }
        drop(buckets);
        if earlier {
            self.earlier.notify_one();
        }
    }

    /// Removes and returns every bucket due by `now`, with its millisecond.
    fn take_due(&self, now: i64) -> Vec<(i64, Bucket)> {
        let mut buckets = self.buckets.lock();
        let later = buckets.split_off(&(now + 1));
        let due = std::mem::replace(&mut *buckets, later);
        drop(buckets);
        let due: Vec<(i64, Bucket)> = due.into_iter().collect();
        for (_, bucket) in &due {
            self.records.fetch_sub(bucket.records, Ordering::Relaxed);
            self.bytes.fetch_sub(bucket.bytes, Ordering::Relaxed);
        }
        if !due.is_empty() {
            let _guard = self.drained_lock.lock();
            self.drained.notify_all();
        }
        due
    }

    /// Drops everything staged (a new leader schedules it again from the log).
    pub(super) fn clear(&self) {
        let dropped = std::mem::take(&mut *self.buckets.lock());
        for bucket in dropped.values() {
            self.records.fetch_sub(bucket.records, Ordering::Relaxed);
            self.bytes.fetch_sub(bucket.bytes, Ordering::Relaxed);
        }
        let _guard = self.drained_lock.lock();
        self.drained.notify_all();
    }

    /// The earliest staged millisecond.
    fn next_due(&self) -> Option<i64> {
        self.buckets.lock().keys().next().copied()
    }

    fn has_room(&self) -> bool {
        self.bytes.load(Ordering::Relaxed) < STAGE_BYTES
    }

    /// Waits (bounded) until the stage is under its budget.
    fn wait_for_room(&self, stop: &AtomicBool) {
        let mut guard = self.drained_lock.lock();
        while !self.has_room() && !stop.load(Ordering::Acquire) {
            self.drained.wait_for(&mut guard, Duration::from_millis(5));
        }
    }
}

/// Runs delivery until shutdown: starts the preparer thread, appends staged records on time
/// and persists the progress.
pub(crate) async fn run(delays: Arc<Delays>, mut shutdown: watch::Receiver<bool>) {
    if delays.log.is_replicated() {
        // Leading from now on: start from what the group's log says.
        let rebuilt = delays.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || rebuilt.rebuild()).await {
            tracing::error!(error = %e, "rescheduling delayed messages failed");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let preparer = {
        let delays = delays.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("weir-delay".into())
            .spawn(move || prepare_loop(&delays, &stop))
    };
    if let Err(e) = &preparer {
        tracing::error!(error = %e, "the delayed-message preparer did not start; delayed messages wait until a restart");
    }
    let stage = &delays.stage;
    let mut last_persist = tokio::time::Instant::now();
    loop {
        let wait = stage.next_due().map_or(APPEND_IDLE, |due| {
            Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)).min(APPEND_IDLE)
        });
        if !wait.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = stage.earlier.notified() => {}
                _ = crate::shutdown::requested(&mut shutdown) => break,
            }
        }
        let due = stage.take_due(now_ms());
        if !due.is_empty() {
            append_due(&delays, due).await;
            metrics::gauge!(DELAYED_MESSAGES).set(delays.pending() as f64);
        }
        if last_persist.elapsed() >= PERSIST_INTERVAL {
            last_persist = tokio::time::Instant::now();
            replicate_progress(&delays).await;
            persist_in_background(&delays).await;
        }
    }
    stop.store(true, Ordering::Release);
    delays.ready_cv.notify_all();
    if let Ok(handle) = preparer {
        let _ = tokio::task::spawn_blocking(move || handle.join()).await;
    }
    persist_in_background(&delays).await;
}

/// In a broker group, sends what was delivered since the last call through the log, so that
/// a new leader does not deliver it again (a failover repeats at most the last
/// [`PERSIST_INTERVAL`] of deliveries, as a crash does).
async fn replicate_progress(delays: &Delays) {
    let delivered = delays.take_unreplicated();
    if delivered.is_empty() {
        return;
    }
    let change = StateChange::DelaysDelivered { offsets: delivered };
    if let Err(e) = delays.log.propose(change).await {
        tracing::debug!(error = %e, "delay progress not replicated; a new leader delivers those again");
    }
}

async fn persist_in_background(delays: &Arc<Delays>) {
    let delays = delays.clone();
    let done = tokio::task::spawn_blocking(move || delays.persist()).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "persisting delay progress failed"),
        Err(e) => tracing::error!(error = %e, "persisting delay progress failed"),
    }
}

/// Appends the due buckets, one append per queue and bucket (a bucket's batch goes to the
/// store as it was staged, without another copy), and records each append's lateness.
async fn append_due(delays: &Delays, due: Vec<(i64, Bucket)>) {
    let mut repark = QueueBatch::default();
    for (due_ms, bucket) in due {
        for (topic, queues) in bucket.topics {
            for (queue_id, batch) in queues {
                match delays.log.append(&topic, queue_id, batch.records).await {
                    Ok(stored) => {
                        let lateness = (stored.store_timestamp - due_ms).max(0);
                        metrics::histogram!(DELAY_LATENESS_SECONDS)
                            .record(lateness as f64 / 1000.0);
                        delays.mark_done(batch.done);
                    }
                    // Storing again cannot help (a topic name the store refuses, a record
                    // over the limit): reported once and dropped, never retried in a loop.
                    Err(e) if is_permanent(&e) => {
                        tracing::error!(topic, queue_id, messages = batch.timers.len(), error = %e, "delayed messages can never be stored; dropped");
                        metrics::counter!(DELAYED_DROPPED_TOTAL)
                            .increment(batch.timers.len() as u64);
                        delays.mark_done(batch.done);
                    }
                    Err(e) => {
                        tracing::warn!(topic, queue_id, error = %e, "delivering delayed messages failed; will retry");
                        retry_later(delays, &batch.timers);
                    }
                }
            }
        }
        repark.extend(bucket.repark);
    }
    if !repark.is_empty() {
        match delays.store_delayed(repark.records).await {
            Ok(_) => delays.mark_done(repark.done),
            Err(e) => {
                tracing::warn!(error = %e, "re-parking delayed messages failed; will retry");
                retry_later(delays, &repark.timers);
            }
        }
    }
}

/// Whether an append failed for a reason that storing the same records again cannot fix.
fn is_permanent(error: &StoreError) -> bool {
    matches!(
        error,
        StoreError::InvalidTopic(_)
            | StoreError::MessageTooLarge { .. }
            | StoreError::CorruptRecord(_)
            | StoreError::TopicMismatch { .. }
            | StoreError::EmptyBatch
    )
}

/// Puts `timers` back into the wheel, due after [`DELIVERY_RETRY`].
fn retry_later(delays: &Delays, timers: &[Timer]) {
    let at =
        u64::try_from(now_ms() - delays.origin_ms).unwrap_or(0) + DELIVERY_RETRY.as_millis() as u64;
    let mut wheel = delays.wheel.lock();
    for timer in timers {
        let timer = Timer {
            deadline: at,
            commit_log_offset: timer.commit_log_offset,
        };
        if let Some(due) = wheel.insert(timer) {
            delays.ready.lock().push(due);
        }
    }
}

/// The preparer: moves the wheel up to [`LEAD`] ahead and stages what it gives.
fn prepare_loop(delays: &Delays, stop: &AtomicBool) {
    let lead = LEAD.as_millis() as u64;
    let mut due: Vec<Timer> = Vec::new();
    let mut busy = false;
    while !stop.load(Ordering::Acquire) {
        {
            let mut ready = delays.ready.lock();
            if ready.is_empty() && !busy {
                delays.ready_cv.wait_for(&mut ready, PREPARE_IDLE);
            }
            due.append(&mut ready);
        }
        let now = now_ms();
        let now_tick = u64::try_from(now - delays.origin_ms).unwrap_or(0);
        {
            let mut wheel = delays.wheel.lock();
            wheel.advance(now_tick, &mut due);
            while due.len() < PREPARE_CHUNK
                && wheel.elapsed() < now_tick + lead
                && delays.stage.has_room()
            {
                let step = (wheel.elapsed() + LOOKAHEAD_STEP).min(now_tick + lead);
                wheel.advance(step, &mut due);
            }
            busy = due.len() >= PREPARE_CHUNK
                || (wheel.elapsed() < now_tick + lead && delays.stage.has_room());
        }
        for chunk in due.chunks(PREPARE_CHUNK) {
            delays.stage.wait_for_room(stop);
            let prepared = prepare(delays, chunk, now);
            delays.stage.add(prepared);
        }
        due.clear();
    }
}

/// Reads and re-encodes due timers into buckets by due millisecond. Records whose topic is
/// gone are marked delivered; unreadable ones are dropped (logged); ones not dispatched yet
/// are tried again later.
fn prepare(delays: &Delays, timers: &[Timer], now: i64) -> BTreeMap<i64, Bucket> {
    let mut buckets: BTreeMap<i64, Bucket> = BTreeMap::new();
    let mut origin_id = String::new();
    let mut gone = Vec::new();
    let mut later = Vec::new();
    let horizon = now + LEAD.as_millis() as i64;
    // One id, its offset changed per record: naming the origin allocates nothing.
    let mut origin = delays.identity.message_id(0, 0);
    for timer in timers {
        let bytes = match delays.log.read_at(timer.commit_log_offset) {
            Ok(bytes) => bytes,
            Err(StoreError::NotFound) => {
                later.push(*timer);
                continue;
            }
            Err(e) => {
                tracing::error!(offset = timer.commit_log_offset, error = %e, "a delayed message cannot be read; dropped");
                continue;
            }
        };
        origin.commit_log_offset = timer.commit_log_offset;
        let staged = stage_one(
            delays,
            &bytes,
            *timer,
            horizon,
            &origin,
            &mut origin_id,
            &mut buckets,
        );
        match staged {
            Ok(Staged::Yes) => {}
            Ok(Staged::TopicGone(queue_offset)) => gone.push(queue_offset),
            Err(e) => {
                tracing::error!(offset = timer.commit_log_offset, error = %e, "a delayed message cannot be delivered; dropped");
                metrics::counter!(DELAYED_DROPPED_TOTAL).increment(1);
                // Done with: reported once, not again after every restart.
                if let Ok(entry) = Entry::parse(&bytes) {
                    gone.push(entry.stamp().base_offset);
                }
            }
        }
    }
    if !gone.is_empty() {
        delays.mark_done(gone);
    }
    if !later.is_empty() {
        retry_later(delays, &later);
    }
    buckets
}

/// What became of a due `%DELAY%` record.
enum Staged {
    /// Staged, for delivery or re-parking.
    Yes,
    /// Its topic is gone: nothing to deliver (its `%DELAY%` queue offset).
    TopicGone(u64),
}

/// Stages one `%DELAY%` record: re-encoded for its real queue under its due millisecond, or as
/// it is for re-parking when it came early (beyond `horizon`).
fn stage_one(
    delays: &Delays,
    bytes: &[u8],
    timer: Timer,
    horizon: i64,
    origin: &MessageId,
    origin_id: &mut String,
    buckets: &mut BTreeMap<i64, Bucket>,
) -> Result<Staged, RequestError> {
    use std::fmt::Write;
    let invalid = |e: weir_proto::batch::BatchError| {
        RequestError::new(ErrorCode::CorruptMessage, e.to_string())
    };
    let entry = Entry::parse(bytes).map_err(invalid)?;
    let queue_offset = entry.stamp().base_offset;
    let records = entry.records(MAX_UNCOMPRESSED_LEN).map_err(invalid)?;
    let record = records
        .iter()
        .next()
        .transpose()
        .map_err(invalid)?
        .ok_or_else(|| RequestError::new(ErrorCode::CorruptMessage, "an empty delayed entry"))?;
    let deliver_at = record.deliver_at();
    if deliver_at > horizon {
        let bucket = buckets.entry(now_ms()).or_default();
        bucket.repark.records.extend_from_slice(entry.as_bytes());
        bucket.repark.push(queue_offset, timer);
        bucket.records += 1;
        bucket.bytes += entry.len();
        return Ok(Staged::Yes);
    }
    let topic = record.header_str(PROP_REAL_TOPIC).unwrap_or_default();
    let queue_id: u32 = record
        .header_str(PROP_REAL_QUEUE)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    let queues = match delays.topics.get(topic) {
        Some(config) => config.queues,
        None if names::is_retry_topic(topic) => delays.topics.ensure_internal(topic)?,
        None => {
            tracing::warn!(topic, "the topic of a delayed message is gone; dropped");
            return Ok(Staged::TopicGone(queue_offset));
        }
    };
    origin_id.clear();
    let _ = write!(origin_id, "{origin}");
    let bad = |e: weir_proto::batch::BatchError| {
        RequestError::new(ErrorCode::InvalidArgument, e.to_string())
    };
    // A copy the broker makes: no producer identity; the deliver-at header is kept.
    let copy = BatchBuilder::copy_of(
        topic,
        BatchOptions::default(),
        &record,
        &[PROP_REAL_TOPIC, PROP_REAL_QUEUE, PROP_DELAY_ORIGIN_ID],
        &[(PROP_DELAY_ORIGIN_ID, origin_id.as_bytes())],
    )
    .map_err(bad)?;
    let bucket = buckets.entry(deliver_at).or_default();
    let batch = bucket.batch(topic, queue_id % queues.max(1));
    batch.records.extend_from_slice(&copy);
    batch.push(queue_offset, timer);
    bucket.records += 1;
    bucket.bytes += copy.len();
    Ok(Staged::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket_with(records: usize) -> Bucket {
        let mut bucket = Bucket::default();
        for i in 0..records {
            let timer = Timer {
                deadline: i as u64,
                commit_log_offset: i as u64,
            };
            bucket.batch("t", (i % 2) as u32).push(i as u64, timer);
        }
        bucket.records = records;
        bucket.bytes = records * 100;
        bucket
    }

    #[test]
    fn the_stage_gives_buckets_when_due_and_keeps_its_counts() {
        let stage = Stage::default();
        let mut prepared = BTreeMap::new();
        prepared.insert(10, bucket_with(3));
        prepared.insert(20, bucket_with(2));
        stage.add(prepared);
        let mut more = BTreeMap::new();
        more.insert(10, bucket_with(1));
        stage.add(more);
        assert_eq!(stage.len(), 6);
        assert_eq!(stage.next_due(), Some(10));
        assert!(stage.take_due(9).is_empty());
        let due = stage.take_due(15);
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0, due[0].1.records), (10, 4));
        let batches = &due[0].1.topics[0].1;
        assert_eq!(batches.iter().map(|(_, b)| b.done.len()).sum::<usize>(), 4);
        assert_eq!(stage.len(), 2);
        assert_eq!(stage.take_due(20).len(), 1);
        assert_eq!((stage.len(), stage.next_due()), (0, None));
        assert!(stage.has_room());
    }
}
