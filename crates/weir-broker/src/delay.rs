//! Delayed messages: stored in the internal topic `%DELAY%` until due, then copied to their
//! real queue.
//!
//! * **Produce.** A batch whose records all have `deliver_at` in the past goes the normal way
//!   (the check reads one fixed field per record). A batch with a future `deliver_at` is split:
//!   each delayed record is re-encoded for topic `%DELAY%` (queue 0) with its real topic and
//!   queue in the properties `REAL_TOPIC` and `REAL_QUEUE`; the others are appended as they
//!   came. The delayed record's (deadline, commit-log offset) goes into the [`TimingWheel`]; its
//!   body stays in the log.
//! * **Delivery.** A task advances the wheel every [`TICK`]. A due record is read by its
//!   commit-log offset and re-encoded for its real topic and queue (`deliver_at` kept, property
//!   `DELAY_ORIGIN_ID` = its `%DELAY%` message id, `REAL_*` dropped), grouped into one append
//!   per queue, then marked delivered.
//! * **Retention.** A record may not wait in the log longer than half the retention age: a
//!   timer fires at `min(deliver_at, stored + retention / 2)`; a record that is not yet due
//!   when it fires is appended again at the end of `%DELAY%` (and the old copy marked done).
//! * **Progress.** `config/delay_progress.json` says which `%DELAY%` queue offsets are
//!   delivered: all below `low`, plus the ranges listed above it. It is written at most every
//!   [`PERSIST_INTERVAL`] and on shutdown. At start the broker reads `%DELAY%` from `low` to its
//!   end, skips what is delivered and puts the rest back into the wheel; what came due while it
//!   was down is delivered at once. A crash can repeat the deliveries of the last
//!   [`PERSIST_INTERVAL`] (at least once), never lose one.
//!
//! ```text
//! config/delay_progress.json: {"low": 1200, "done": [[1205, 1210], [1300, 1301]]}
//!                             (ranges are [start, end) queue offsets of %DELAY% queue 0)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_proto::record::{self, Record, RecordFields, Records};
use weir_proto::{ErrorCode, MessageId, pb};
use weir_store::{Store, TagFilter};

use crate::atomic_file;
use crate::broker::BrokerState;
use crate::error::{BrokerError, RequestError};
use crate::timing_wheel::{Timer, TimingWheel};

/// The internal topic holding delayed messages until they are due (one queue).
pub(crate) const DELAY_TOPIC: &str = "%DELAY%";
/// Property of a `%DELAY%` record: the topic it is delivered to.
pub(crate) const PROP_REAL_TOPIC: &str = "REAL_TOPIC";
/// Property of a `%DELAY%` record: the queue it is delivered to.
pub(crate) const PROP_REAL_QUEUE: &str = "REAL_QUEUE";
/// Property of a delivered record: the message id it had in `%DELAY%`.
pub(crate) const PROP_DELAY_ORIGIN_ID: &str = "DELAY_ORIGIN_ID";
/// Longest delay accepted.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(365 * 86_400);
/// How often the wheel is advanced; bounds the delivery lateness (plus the append).
const TICK: Duration = Duration::from_millis(10);
/// How often delivery progress is written when it changed.
const PERSIST_INTERVAL: Duration = Duration::from_millis(500);
/// Most records copied per append on delivery.
const DELIVERY_BATCH: usize = 1024;
/// Wait before a delivery that failed (disk full, storage error) is tried again.
const DELIVERY_RETRY: Duration = Duration::from_secs(1);

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Delivered `%DELAY%` queue offsets: all below `low`, and the `[start, end)` ranges in `done`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Progress {
    low: u64,
    done: BTreeMap<u64, u64>,
}

#[derive(Serialize, Deserialize)]
struct ProgressFile {
    low: u64,
    done: Vec<(u64, u64)>,
}

impl Progress {
    fn is_done(&self, offset: u64) -> bool {
        offset < self.low
            || self
                .done
                .range(..=offset)
                .next_back()
                .is_some_and(|(_, end)| offset < *end)
    }

    fn mark(&mut self, offset: u64) {
        if self.is_done(offset) {
            return;
        }
        let (mut start, mut end) = (offset, offset + 1);
        if let Some((&s, &e)) = self.done.range(..offset).next_back()
            && e == offset
        {
            self.done.remove(&s);
            start = s;
        }
        if let Some(e) = self.done.remove(&end) {
            end = e;
        }
        if start == self.low {
            self.low = end;
        } else {
            self.done.insert(start, end);
        }
    }

    fn load(path: &Path) -> Result<Progress, BrokerError> {
        let Some(bytes) = atomic_file::read_if_exists(path)
            .map_err(|e| BrokerError::io(format!("reading {}", path.display()), e))?
        else {
            return Ok(Progress::default());
        };
        let file: ProgressFile = serde_json::from_slice(&bytes)
            .map_err(|e| BrokerError::Config(format!("{}: {e}", path.display())))?;
        let mut progress = Progress {
            low: file.low,
            done: BTreeMap::new(),
        };
        progress.done.extend(
            file.done
                .into_iter()
                .filter(|(s, e)| s < e && *s > file.low),
        );
        Ok(progress)
    }

    fn to_json(&self) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&ProgressFile {
            low: self.low,
            done: self.done.iter().map(|(s, e)| (*s, *e)).collect(),
        })
    }
}

/// The delayed-message service: the wheel, the delivery progress, and where it is kept.
#[derive(Debug)]
pub(crate) struct Delays {
    /// Wall-clock ms of wheel tick 0.
    origin_ms: i64,
    wheel: Mutex<TimingWheel>,
    /// Timers found due when inserted (at start, after a restart), delivered on the next tick.
    ready: Mutex<Vec<Timer>>,
    progress: Mutex<Progress>,
    dirty: AtomicBool,
    path: PathBuf,
    /// A record may wait in the log at most this long before it is copied forward, ms.
    max_park_ms: i64,
}

impl Delays {
    /// Loads the progress and rebuilds the wheel from the undelivered part of `%DELAY%`.
    pub fn load(
        data_dir: &Path,
        store: &Store,
        retention: Duration,
    ) -> Result<Delays, BrokerError> {
        let path = data_dir.join("config").join("delay_progress.json");
        let progress = Progress::load(&path)?;
        let delays = Delays {
            origin_ms: now_ms(),
            wheel: Mutex::new(TimingWheel::new()),
            ready: Mutex::new(Vec::new()),
            progress: Mutex::new(progress),
            dirty: AtomicBool::new(false),
            path,
            max_park_ms: i64::try_from(retention.as_millis() / 2)
                .unwrap_or(i64::MAX)
                .max(60_000),
        };
        let bounds = store.queue_offsets(DELAY_TOPIC, 0);
        let mut offset = delays.progress.lock().low.max(bounds.min);
        let mut pending = 0u64;
        while offset < bounds.max {
            let read = store
                .read(DELAY_TOPIC, 0, offset, 4096, 4 << 20, &TagFilter::All)
                .map_err(|e| BrokerError::from_store(e, data_dir))?;
            for record in Records::new(&read.records) {
                let record = record.map_err(|e| BrokerError::Config(format!("%DELAY%: {e}")))?;
                let stamp = record.stamp();
                if delays.progress.lock().is_done(stamp.queue_offset) {
                    continue;
                }
                delays.schedule(
                    record.deliver_at(),
                    stamp.store_timestamp,
                    stamp.commit_log_offset,
                );
                pending += 1;
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        tracing::info!(
            pending,
            due_now = delays.ready.lock().len(),
            "delayed messages restored"
        );
        metrics::gauge!("weir_delayed_messages").set(pending as f64);
        Ok(delays)
    }

    /// Puts a stored `%DELAY%` record into the wheel.
    fn schedule(&self, deliver_at: i64, stored_at: i64, commit_log_offset: u64) {
        let fire_at = deliver_at.min(stored_at.saturating_add(self.max_park_ms));
        let deadline = u64::try_from(fire_at.saturating_sub(self.origin_ms)).unwrap_or(0);
        let timer = Timer {
            deadline,
            commit_log_offset,
        };
        if let Some(due) = self.wheel.lock().insert(timer) {
            self.ready.lock().push(due);
        }
    }

    /// Pending delayed messages.
    pub fn pending(&self) -> usize {
        self.wheel.lock().len() + self.ready.lock().len()
    }

    fn mark_done(&self, queue_offsets: impl IntoIterator<Item = u64>) {
        let mut progress = self.progress.lock();
        for offset in queue_offsets {
            progress.mark(offset);
        }
        self.dirty.store(true, Ordering::Release);
    }

    /// Writes the progress file if it changed.
    pub fn persist(&self) -> Result<(), BrokerError> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let json = self.progress.lock().to_json();
        let json = json.map_err(|e| BrokerError::Config(format!("delay progress: {e}")))?;
        atomic_file::write_atomic(&self.path, &json).map_err(|e| {
            self.dirty.store(true, Ordering::Release);
            BrokerError::io(format!("writing {}", self.path.display()), e)
        })
    }
}

/// Whether any record of a producer's batch asks for delivery after `now` (reads one fixed
/// field per record).
pub(crate) fn has_delayed(batch: &[u8], now: i64) -> bool {
    let mut at = 0;
    while at < batch.len() {
        let rest = &batch[at..];
        let (Some(len), Some(deliver_at)) =
            (record::peek_total_len(rest), record::peek_deliver_at(rest))
        else {
            return false;
        };
        if deliver_at > now {
            return true;
        }
        at += (len as usize).max(1);
    }
    false
}

/// Copies `record` re-encoded: for `topic`, with `deliver_at`, without the properties named
/// in `drop`, with `add` appended.
pub(crate) fn reencode(
    record: &Record<'_>,
    topic: &str,
    deliver_at: i64,
    drop: &[&str],
    add: &[(String, String)],
    dst: &mut BytesMut,
) -> Result<(), RequestError> {
    let mut properties = Vec::new();
    for property in record.properties() {
        let (k, v) =
            property.map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
        if !drop.contains(&k) {
            properties.push((k.to_owned(), v.to_owned()));
        }
    }
    properties.extend_from_slice(add);
    record::encode(
        &RecordFields {
            topic,
            key: record.key(),
            tag: record.tag(),
            properties: &properties,
            body: record.body(),
            born_timestamp: record.born_timestamp(),
            deliver_at,
            producer_id: record.producer_id(),
            sequence: record.sequence(),
            flags: record.flags(),
        },
        dst,
    )
    .map_err(|e| RequestError::new(ErrorCode::InvalidArgument, e.to_string()))
}

/// Encodes a `%DELAY%` record that delivers `record` (re-encoded for `topic`, with `add` among
/// its properties and without those in `drop`) to `topic`/`queue_id` at `deliver_at`.
pub(crate) fn encode_delayed(
    record: &Record<'_>,
    topic: &str,
    queue_id: u32,
    deliver_at: i64,
    drop: &[&str],
    add: &[(String, String)],
    dst: &mut BytesMut,
) -> Result<(), RequestError> {
    let mut add = add.to_vec();
    add.push((PROP_REAL_TOPIC.to_owned(), topic.to_owned()));
    add.push((PROP_REAL_QUEUE.to_owned(), queue_id.to_string()));
    let mut drop = drop.to_vec();
    drop.extend([PROP_REAL_TOPIC, PROP_REAL_QUEUE]);
    reencode(record, DELAY_TOPIC, deliver_at, &drop, &add, dst)
}

/// Appends a batch of `%DELAY%` records and puts them into the wheel; returns their commit-log
/// offsets.
pub(crate) async fn store_delayed(
    state: &BrokerState,
    batch: BytesMut,
) -> Result<Vec<u64>, RequestError> {
    let result = state.store.append(DELAY_TOPIC, 0, batch.clone()).await?;
    let mut offsets = Vec::new();
    let mut at = result.commit_log_offset;
    for record in Records::new(&batch) {
        let record = record.map_err(|e| RequestError::new(ErrorCode::Internal, e.to_string()))?;
        state
            .delays
            .schedule(record.deliver_at(), result.store_timestamp, at);
        offsets.push(at);
        at += record.total_len() as u64;
    }
    metrics::gauge!("weir_delayed_messages").set(state.delays.pending() as f64);
    Ok(offsets)
}

/// Produce of a batch with delayed records: the delayed ones to `%DELAY%`, the others to the
/// real queue; the answer lists every record's position.
pub(crate) async fn produce(
    state: &BrokerState,
    topic: &str,
    queue_id: u32,
    payload: BytesMut,
    now: i64,
) -> Result<pb::ProduceResponse, RequestError> {
    let max_size = usize::try_from(state.config.max_message_size).unwrap_or(usize::MAX);
    let latest = now.saturating_add(i64::try_from(MAX_DELAY.as_millis()).unwrap_or(i64::MAX));
    let mut plain = BytesMut::new();
    let mut delayed = BytesMut::new();
    // Per record: Some(index among the plain ones) or None (the next delayed one).
    let mut order = Vec::new();
    let mut plain_lens = Vec::new();
    for record in Records::new(&payload) {
        let record =
            record.map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
        record
            .verify_body()
            .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
        if record.total_len() > max_size {
            return Err(RequestError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "a record of {} bytes is over {max_size}",
                    record.total_len()
                ),
            ));
        }
        if record.topic() != topic {
            return Err(RequestError::new(
                ErrorCode::CorruptMessage,
                format!("a record for {:?} in a batch for {topic:?}", record.topic()),
            ));
        }
        if record.deliver_at() > latest {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "deliver_at is more than {} days ahead",
                    MAX_DELAY.as_secs() / 86_400
                ),
            ));
        }
        if record.deliver_at() > now {
            encode_delayed(
                &record,
                topic,
                queue_id,
                record.deliver_at(),
                &[],
                &[],
                &mut delayed,
            )?;
            order.push(None);
        } else {
            order.push(Some(plain_lens.len()));
            plain_lens.push(record.total_len() as u64);
            plain.extend_from_slice(record.as_bytes());
        }
    }
    let plain_result = if plain.is_empty() {
        None
    } else {
        Some(state.store.append(topic, queue_id, plain).await?)
    };
    let delayed_offsets = store_delayed(state, delayed).await?;
    let mut plain_offsets = Vec::with_capacity(plain_lens.len());
    if let Some(result) = &plain_result {
        let mut at = result.commit_log_offset;
        for len in &plain_lens {
            plain_offsets.push(at);
            at += len;
        }
    }
    let mut record_offsets = Vec::with_capacity(order.len());
    let mut record_queue_offsets = Vec::with_capacity(order.len());
    let mut next_delayed = delayed_offsets.iter();
    for slot in &order {
        match slot {
            Some(i) => {
                record_offsets.push(plain_offsets[*i]);
                let first = plain_result.as_ref().map_or(0, |r| r.queue_offset);
                record_queue_offsets.push(first + *i as u64);
            }
            None => {
                record_offsets.push(next_delayed.next().copied().unwrap_or(0));
                record_queue_offsets.push(0);
            }
        }
    }
    Ok(pb::ProduceResponse {
        queue_offset: plain_result.as_ref().map_or(0, |r| r.queue_offset),
        commit_log_offset: record_offsets.first().copied().unwrap_or(0),
        count: order.len() as u32,
        store_timestamp: plain_result.as_ref().map_or(now, |r| r.store_timestamp),
        broker_addr: state.advertised_addr.clone(),
        record_offsets,
        record_queue_offsets,
    })
}

/// This broker's address as put in message ids.
pub(crate) fn own_addr(state: &BrokerState) -> SocketAddr {
    state.advertised_addr.parse().unwrap_or(state.local_addr)
}

/// Advances the wheel every [`TICK`] and delivers what is due, until shutdown.
pub(crate) async fn run(state: Arc<BrokerState>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_persist = tokio::time::Instant::now();
    let mut due = Vec::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shutdown::requested(&mut shutdown) => break,
        }
        let delays = &state.delays;
        due.clear();
        due.append(&mut delays.ready.lock());
        let now = u64::try_from(now_ms().saturating_sub(delays.origin_ms)).unwrap_or(0);
        delays.wheel.lock().advance(now, &mut due);
        if !due.is_empty() {
            for chunk in due.chunks(DELIVERY_BATCH) {
                deliver(&state, chunk).await;
            }
            metrics::gauge!("weir_delayed_messages").set(delays.pending() as f64);
        }
        if last_persist.elapsed() >= PERSIST_INTERVAL {
            last_persist = tokio::time::Instant::now();
            persist_in_background(&state).await;
        }
    }
    persist_in_background(&state).await;
}

async fn persist_in_background(state: &Arc<BrokerState>) {
    let state = state.clone();
    let done = tokio::task::spawn_blocking(move || state.delays.persist()).await;
    match done {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "persisting delay progress failed"),
        Err(e) => tracing::error!(error = %e, "persisting delay progress failed"),
    }
}

/// What to do with one due `%DELAY%` record.
struct Due {
    queue_offset: u64,
    target: Option<(String, u32)>,
}

/// Due records bound for one queue: their re-encoded bytes, their `%DELAY%` queue offsets and
/// their timers (put back if the append fails).
#[derive(Default)]
struct QueueBatch {
    records: BytesMut,
    done: Vec<u64>,
    timers: Vec<Timer>,
}

/// Copies the due records to their queues (one append per queue), re-parks those not yet due,
/// and marks them delivered. A failed append puts its timers back for a later try.
async fn deliver(state: &Arc<BrokerState>, timers: &[Timer]) {
    let now = now_ms();
    let origin = MessageId {
        broker_addr: own_addr(state),
        commit_log_offset: 0,
    };
    let mut batches: HashMap<(String, u32), QueueBatch> = HashMap::new();
    let mut parked = BytesMut::new();
    let mut parked_done = Vec::new();
    let mut parked_timers = Vec::new();
    let mut dropped = Vec::new();
    for timer in timers {
        let bytes = match state.store.read_at(timer.commit_log_offset) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::error!(offset = timer.commit_log_offset, error = %e, "a delayed message cannot be read; dropped");
                continue;
            }
        };
        match prepare(state, &bytes, timer, now, origin) {
            Ok((due, encoded)) => match due.target {
                Some(target) => {
                    let batch = batches.entry(target).or_default();
                    batch.records.extend_from_slice(&encoded);
                    batch.done.push(due.queue_offset);
                    batch.timers.push(*timer);
                }
                None if encoded.is_empty() => dropped.push(due.queue_offset),
                None => {
                    parked.extend_from_slice(&encoded);
                    parked_done.push(due.queue_offset);
                    parked_timers.push(*timer);
                }
            },
            Err(e) => {
                tracing::error!(offset = timer.commit_log_offset, error = %e, "a delayed message cannot be delivered; dropped");
            }
        }
    }
    state.delays.mark_done(dropped);
    for ((topic, queue_id), batch) in batches {
        match state.store.append(&topic, queue_id, batch.records).await {
            Ok(_) => state.delays.mark_done(batch.done),
            Err(e) => {
                tracing::warn!(topic, queue_id, error = %e, "delivering delayed messages failed; will retry");
                retry_later(state, &batch.timers);
            }
        }
    }
    if !parked.is_empty() {
        match store_delayed(state, parked).await {
            Ok(_) => state.delays.mark_done(parked_done),
            Err(e) => {
                tracing::warn!(error = %e, "re-parking delayed messages failed; will retry");
                retry_later(state, &parked_timers);
            }
        }
    }
}

fn retry_later(state: &BrokerState, timers: &[Timer]) {
    let delays = &state.delays;
    let mut wheel = delays.wheel.lock();
    let at = wheel.elapsed() + DELIVERY_RETRY.as_millis() as u64;
    for timer in timers {
        let _ = wheel.insert(Timer {
            deadline: at,
            commit_log_offset: timer.commit_log_offset,
        });
    }
}

/// Re-encodes one due `%DELAY%` record: for its real queue when due (`target` set), or again
/// for `%DELAY%` when it only left the log's retention window (`target` None, bytes set), or
/// nothing when its topic is gone (`target` None, no bytes).
fn prepare(
    state: &BrokerState,
    bytes: &Bytes,
    timer: &Timer,
    now: i64,
    mut origin: MessageId,
) -> Result<(Due, BytesMut), RequestError> {
    let record = Record::parse(bytes)
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
    let queue_offset = record.stamp().queue_offset;
    let mut out = BytesMut::new();
    if record.deliver_at() > now {
        out.extend_from_slice(record.as_bytes());
        return Ok((
            Due {
                queue_offset,
                target: None,
            },
            out,
        ));
    }
    let topic = record
        .property(PROP_REAL_TOPIC)
        .unwrap_or_default()
        .to_owned();
    let queue_id: u32 = record
        .property(PROP_REAL_QUEUE)
        .and_then(|q| q.parse().ok())
        .unwrap_or(0);
    let queues = match state.topics.get(&topic) {
        Some(config) => config.queues,
        None if crate::retry::is_retry_topic(&topic) => crate::retry::ensure_topic(state, &topic)?,
        None => {
            tracing::warn!(topic, "the topic of a delayed message is gone; dropped");
            return Ok((
                Due {
                    queue_offset,
                    target: None,
                },
                out,
            ));
        }
    };
    origin.commit_log_offset = timer.commit_log_offset;
    reencode(
        &record,
        &topic,
        record.deliver_at(),
        &[PROP_REAL_TOPIC, PROP_REAL_QUEUE, PROP_DELAY_ORIGIN_ID],
        &[(PROP_DELAY_ORIGIN_ID.to_owned(), origin.to_string())],
        &mut out,
    )?;
    Ok((
        Due {
            queue_offset,
            target: Some((topic, queue_id % queues.max(1))),
        },
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_merges_ranges_and_moves_low() {
        let mut p = Progress::default();
        for offset in [3, 1, 2, 7, 5] {
            p.mark(offset);
        }
        assert_eq!(p.low, 0);
        assert_eq!(
            p.done.iter().map(|(s, e)| (*s, *e)).collect::<Vec<_>>(),
            vec![(1, 4), (5, 6), (7, 8)]
        );
        p.mark(0);
        assert_eq!(p.low, 4);
        p.mark(4);
        p.mark(6);
        assert_eq!(p.low, 8);
        assert!(p.done.is_empty());
        assert!(p.is_done(7) && !p.is_done(8));
    }

    #[test]
    fn progress_round_trips_through_its_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("p.json");
        let mut p = Progress::default();
        for offset in [0, 1, 5, 6, 9] {
            p.mark(offset);
        }
        atomic_file::write_atomic(&path, &p.to_json()?)?;
        assert_eq!(Progress::load(&path)?, p);
        Ok(())
    }
}
