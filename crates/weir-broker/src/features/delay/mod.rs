//! Delayed messages: stored in the internal topic `%DELAY%` until due, then copied to their
//! real queue.
//!
//! * **Produce.** A batch whose envelope does not say "delayed" goes the normal way (one look
//!   at one byte per batch). One that does is split, every message into an entry of its own:
//!   each message with a future deliver-at (header `TIMER_DELIVER_MS`, or `TIMER_DELAY_SEC`
//!   from now) is re-encoded for topic `%DELAY%` (queue 0) with its real topic and queue in the
//!   headers `REAL_TOPIC` and `REAL_QUEUE`; the others go to their queue. The delayed entry's
//!   (deadline, commit-log offset) goes into the [`TimingWheel`]; its body stays in the log.
//!   Every `%DELAY%` entry holds one message.
//! * **Delivery** ([`delivery`]). A preparer thread keeps the wheel up to [`LEAD`] ahead of
//!   the clock: records coming due in that window are read by their commit-log offset,
//!   re-encoded for their real topic and queue (`deliver_at` kept, property `DELAY_ORIGIN_ID`
//!   = their `%DELAY%` message id, `REAL_*` dropped) and staged in memory by due millisecond.
//!   A task appends each staged millisecond when it comes, one append per queue, then marks
//!   the records delivered. So at the due time only the append is left to do.
//! * **Retention.** A record may not wait in the log longer than half the retention age: a
//!   timer fires at `min(deliver_at, stored + retention / 2)`; a record that is not yet due
//!   when it fires is appended again at the end of `%DELAY%` (and the old copy marked done).
//! * **Progress** ([`progress`]). `config/delay_progress.json` says which `%DELAY%` queue
//!   offsets are delivered. It is written at most every [`PERSIST_INTERVAL`] and on shutdown.
//!   At start the broker reads `%DELAY%` from the first undelivered offset to its end, skips
//!   what is delivered and puts the rest back into the wheel; what came due while it was down
//!   is delivered at once. A crash can repeat the deliveries of the last [`PERSIST_INTERVAL`]
//!   (at least once), never lose one; staged records are not delivered yet, so a restart
//!   simply stages them again.
//! * **Producer identity.** A `%DELAY%` record written for an idempotent producer keeps its
//!   producer id and sequence (the idempotence table finds it there after a restart); every
//!   copy the broker makes on its own — the delivered copy, a retry — carries none.

mod delivery;
mod progress;
pub(crate) mod timing_wheel;
pub(crate) mod upcoming;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use parking_lot::{Condvar, Mutex};
use weir_proto::ErrorCode;
use weir_proto::batch::{
    BatchBuilder, BatchOptions, Entries, Entry, HEADER_DELAY_SEC, HEADER_DELIVER_MS,
    MAX_UNCOMPRESSED_LEN, RecordView, envelope_flags,
};
use weir_store::{AppendResult, TagFilter};

use crate::core::identity::Identity;
use crate::core::message_log::MessageLog;
use crate::core::position::Produced;
use crate::core::topics::TopicTable;
use crate::error::{BrokerError, RequestError};
use crate::metrics_catalog::DELAYED_MESSAGES;
use timing_wheel::{Timer, TimingWheel};

pub(crate) use crate::core::clock::now_ms;
pub(crate) use delivery::run;
pub(crate) use progress::DelayProgress;
pub(crate) use weir_proto::names::{
    DELAY_TOPIC, PROP_DELAY_ORIGIN_ID, PROP_DELAY_REAL_QUEUE as PROP_REAL_QUEUE,
    PROP_DELAY_REAL_TOPIC as PROP_REAL_TOPIC,
};
/// Why the wheel could not be restored from `%DELAY%`.
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    #[error("reading {DELAY_TOPIC}: {0}")]
    Store(weir_store::StoreError),
    #[error("{DELAY_TOPIC}: {0}")]
    Batch(weir_proto::batch::BatchError),
}

/// Longest delay accepted.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(365 * 86_400);
/// How far ahead of the clock due records are read and re-encoded.
const LEAD: Duration = Duration::from_secs(1);
/// How often delivery progress is written when it changed.
const PERSIST_INTERVAL: Duration = Duration::from_millis(500);

/// The delayed-message service: the wheel, the staged deliveries, the delivery progress, and
/// where it is kept; built from the write path (to park and deliver), the topic table (to find
/// a delivered message's queue) and the identity (to name a delivered message's origin).
#[derive(Debug)]
pub(crate) struct Delays {
    log: MessageLog,
    topics: Arc<TopicTable>,
    identity: Arc<Identity>,
    /// Largest record a producer may send, bytes.
    max_message_size: usize,
    /// Wall-clock ms of wheel tick 0.
    origin_ms: i64,
    wheel: Mutex<TimingWheel>,
    /// Timers found due when inserted (behind the wheel's lead, or at start), for the
    /// preparer's next pass; it waits on `ready_cv`.
    ready: Mutex<Vec<Timer>>,
    ready_cv: Condvar,
    /// Records read and re-encoded, waiting for their millisecond.
    stage: delivery::Stage,
    progress: Arc<DelayProgress>,
    /// In a broker group: delivered `%DELAY%` queue offsets not yet sent through the log.
    unreplicated: Mutex<Vec<u64>>,
    /// While the wheel is rebuilt from the log (a new leader): what produce scheduled
    /// meanwhile, (deliver-at, stored-at, commit-log offset), added once the scan is done.
    rebuilding: Mutex<Option<Vec<(i64, i64, u64)>>>,
    /// A record may wait in the log at most this long before it is copied forward, ms.
    max_park_ms: i64,
}

impl Delays {
    /// Rebuilds the wheel from the undelivered part of `%DELAY%` (`progress` says what is
    /// delivered).
    pub fn load(
        data_dir: &Path,
        log: MessageLog,
        topics: Arc<TopicTable>,
        identity: Arc<Identity>,
        max_message_size: usize,
        progress: Arc<DelayProgress>,
    ) -> Result<Delays, BrokerError> {
        let retention = log.config().retention_age;
        let delays = Delays {
            log,
            topics,
            identity,
            max_message_size,
            origin_ms: now_ms(),
            wheel: Mutex::new(TimingWheel::new()),
            ready: Mutex::new(Vec::new()),
            ready_cv: Condvar::new(),
            stage: delivery::Stage::default(),
            progress,
            unreplicated: Mutex::new(Vec::new()),
            rebuilding: Mutex::new(None),
            max_park_ms: i64::try_from(retention.as_millis() / 2)
                .unwrap_or(i64::MAX)
                .max(60_000),
        };
        let pending = delays.restore(&mut HashSet::new()).map_err(|e| match e {
            RestoreError::Store(e) => BrokerError::from_store(e, data_dir),
            RestoreError::Batch(e) => BrokerError::Config(format!("{DELAY_TOPIC}: {e}")),
        })?;
        tracing::info!(
            pending,
            due_now = delays.ready.lock().len(),
            "delayed messages restored"
        );
        metrics::gauge!(DELAYED_MESSAGES).set(pending as f64);
        Ok(delays)
    }

    /// Schedules every undelivered record of `%DELAY%`; answers how many. Their commit-log
    /// offsets go into `seen`.
    fn restore(&self, seen: &mut HashSet<u64>) -> Result<u64, RestoreError> {
        let bounds = self.log.queue_offsets(DELAY_TOPIC, 0);
        let mut offset = self.progress.lock().low().max(bounds.min);
        let mut pending = 0u64;
        while offset < bounds.max {
            let read = self
                .log
                .read(DELAY_TOPIC, 0, offset, 4096, 4 << 20, &TagFilter::All)
                .map_err(RestoreError::Store)?;
            for entry in Entries::new(&read.records) {
                let entry = entry.map_err(RestoreError::Batch)?;
                let stamp = entry.stamp();
                if stamp.base_offset < offset || self.progress.lock().is_done(stamp.base_offset) {
                    continue;
                }
                let records = entry
                    .records(MAX_UNCOMPRESSED_LEN)
                    .map_err(RestoreError::Batch)?;
                let Some(record) = records
                    .iter()
                    .next()
                    .transpose()
                    .map_err(RestoreError::Batch)?
                else {
                    continue;
                };
                self.insert(
                    record.deliver_at(),
                    stamp.store_timestamp,
                    stamp.commit_log_offset,
                );
                seen.insert(stamp.commit_log_offset);
                pending += 1;
            }
            if read.next_offset <= offset {
                break;
            }
            offset = read.next_offset;
        }
        Ok(pending)
    }

    /// A new leader of a broker group starts from the log: what the replicas applied says
    /// which `%DELAY%` records are delivered, and the rest is scheduled again (the wheel it
    /// had is stale: records written while it followed were never scheduled here). A record
    /// produced during the scan is scheduled once.
    pub(crate) fn rebuild(&self) {
        *self.rebuilding.lock() = Some(Vec::new());
        *self.wheel.lock() = TimingWheel::new_at(self.tick_now());
        self.ready.lock().clear();
        self.stage.clear();
        let mut seen = HashSet::new();
        let restored = self.restore(&mut seen);
        let deferred = self.rebuilding.lock().take().unwrap_or_default();
        for (deliver_at, stored_at, offset) in deferred {
            if !seen.contains(&offset) {
                self.insert(deliver_at, stored_at, offset);
            }
        }
        match restored {
            Ok(pending) => {
                tracing::info!(pending, "delayed messages rescheduled by the new leader");
                metrics::gauge!(DELAYED_MESSAGES).set(self.pending() as f64);
            }
            Err(e) => {
                tracing::error!(error = %e, "rescheduling delayed messages failed; they wait for a restart");
            }
        }
    }

    /// The wheel's tick for now.
    fn tick_now(&self) -> u64 {
        u64::try_from(now_ms().saturating_sub(self.origin_ms)).unwrap_or(0)
    }

    /// Delivered offsets not yet sent through the group's log, taken.
    pub(crate) fn take_unreplicated(&self) -> Vec<u64> {
        std::mem::take(&mut *self.unreplicated.lock())
    }

    /// Puts a stored `%DELAY%` record into the wheel (or, when the wheel has passed its time,
    /// hands it to the preparer at once); while the wheel is rebuilt, after the rebuild.
    fn schedule(&self, deliver_at: i64, stored_at: i64, commit_log_offset: u64) {
        if let Some(deferred) = &mut *self.rebuilding.lock() {
            deferred.push((deliver_at, stored_at, commit_log_offset));
            return;
        }
        self.insert(deliver_at, stored_at, commit_log_offset);
    }

    fn insert(&self, deliver_at: i64, stored_at: i64, commit_log_offset: u64) {
        let fire_at = deliver_at.min(stored_at.saturating_add(self.max_park_ms));
        let deadline = u64::try_from(fire_at.saturating_sub(self.origin_ms)).unwrap_or(0);
        let timer = Timer {
            deadline,
            commit_log_offset,
        };
        let due = self.wheel.lock().insert(timer);
        if let Some(due) = due {
            self.ready.lock().push(due);
            self.ready_cv.notify_one();
        }
    }

    /// Pending delayed messages: in the wheel, about to be read, or staged.
    pub fn pending(&self) -> usize {
        self.wheel.lock().len() + self.ready.lock().len() + self.stage.len()
    }

    fn mark_done(&self, queue_offsets: Vec<u64>) {
        if self.log.is_replicated() {
            self.unreplicated.lock().extend(&queue_offsets);
        }
        self.progress.mark_all(queue_offsets);
    }

    /// Writes the progress file if it changed.
    pub fn persist(&self) -> Result<(), BrokerError> {
        self.progress.persist()
    }
}

/// Whether a producer's batch (one entry) may hold delayed messages: its envelope says so
/// (one byte per batch; the producer's encoder sets it when a message has a deliver-at header).
pub(crate) fn has_delayed(batch: &[u8]) -> bool {
    Entry::parse(batch).is_ok_and(|e| e.envelope_flags() & envelope_flags::DELAYED != 0)
}

/// When `record` asks to be delivered: header `TIMER_DELIVER_MS`, else `TIMER_DELAY_SEC`
/// seconds after `now`; 0 for at once.
pub(crate) fn deliver_at_of(record: &RecordView<'_>, now: i64) -> i64 {
    match record.deliver_at() {
        0 => record
            .header_str(HEADER_DELAY_SEC)
            .and_then(|s| s.trim().parse::<i64>().ok())
            .map_or(0, |secs| now.saturating_add(secs.saturating_mul(1000))),
        at => at,
    }
}

fn bad_input(e: weir_proto::batch::BatchError) -> RequestError {
    RequestError::new(ErrorCode::InvalidArgument, e.to_string())
}

/// Appends to `dst` an entry for `topic` holding a copy of `record` made with `options`,
/// without the headers named in `drop` (nor the deliver-at ones), with `add` appended.
fn copy_one(
    record: &RecordView<'_>,
    topic: &str,
    options: BatchOptions,
    drop: &[&str],
    add: &[(&str, &[u8])],
    dst: &mut BytesMut,
) -> Result<(), RequestError> {
    let mut dropped: Vec<&str> = Vec::with_capacity(drop.len() + 2);
    dropped.extend_from_slice(drop);
    dropped.extend([HEADER_DELIVER_MS, HEADER_DELAY_SEC]);
    let copy = BatchBuilder::copy_of(topic, options, record, &dropped, add).map_err(bad_input)?;
    dst.extend_from_slice(&copy);
    Ok(())
}

/// `(name, value)` header pairs as the builder takes them.
fn as_headers(pairs: &[(String, String)]) -> Vec<(&str, &[u8])> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect()
}

/// Appends to `dst` a copy of `record` the broker makes (no producer identity, delivered at
/// once) for `topic`, without the headers named in `drop`, with `add` appended.
pub(crate) fn reencode(
    record: &RecordView<'_>,
    topic: &str,
    drop: &[&str],
    add: &[(String, String)],
    dst: &mut BytesMut,
) -> Result<(), RequestError> {
    copy_one(
        record,
        topic,
        BatchOptions::default(),
        drop,
        &as_headers(add),
        dst,
    )
}

/// Headers a `%DELAY%` entry never takes over from its original: it sets them anew.
const DELAY_DROP: [&str; 2] = [PROP_REAL_TOPIC, PROP_REAL_QUEUE];

/// Appends to `dst` a `%DELAY%` entry, made by the broker (no producer identity), that delivers
/// `record` (re-encoded for `topic`, with `add` among its headers and without those in `drop`)
/// to `topic`/`queue_id` at `deliver_at`.
pub(crate) fn encode_delayed(
    record: &RecordView<'_>,
    topic: &str,
    queue_id: u32,
    deliver_at: i64,
    drop: &[&str],
    add: &[(String, String)],
    dst: &mut BytesMut,
) -> Result<(), RequestError> {
    let queue = queue_id.to_string();
    let mut added = as_headers(add);
    added.extend([
        (PROP_REAL_TOPIC, topic.as_bytes()),
        (PROP_REAL_QUEUE, queue.as_bytes()),
    ]);
    let mut dropped = drop.to_vec();
    dropped.extend(DELAY_DROP);
    rewrite_delayed(
        record,
        deliver_at,
        BatchOptions::default(),
        &dropped,
        &added,
        dst,
    )
}

/// Appends to `dst` `record` as a `%DELAY%` entry due at `deliver_at` made with `options`
/// (the producer's identity, or none); `drop` and `add` are the whole header changes, `REAL_*`
/// included.
fn rewrite_delayed(
    record: &RecordView<'_>,
    deliver_at: i64,
    options: BatchOptions,
    drop: &[&str],
    add: &[(&str, &[u8])],
    dst: &mut BytesMut,
) -> Result<(), RequestError> {
    let at = deliver_at.to_string();
    let mut added = add.to_vec();
    added.push((HEADER_DELIVER_MS, at.as_bytes()));
    copy_one(record, DELAY_TOPIC, options, drop, &added, dst)
}

/// `(deliver_at, length)` of each entry of a `%DELAY%` batch the broker built.
fn delayed_entries(batch: &[u8]) -> Result<Vec<(i64, u64)>, RequestError> {
    let internal =
        |e: weir_proto::batch::BatchError| RequestError::new(ErrorCode::Internal, e.to_string());
    let mut out = Vec::new();
    for entry in Entries::new(batch) {
        let entry = entry.map_err(internal)?;
        let records = entry.records(MAX_UNCOMPRESSED_LEN).map_err(internal)?;
        let deliver_at = records
            .iter()
            .next()
            .transpose()
            .map_err(internal)?
            .map_or(0, |r| r.deliver_at());
        out.push((deliver_at, entry.len() as u64));
    }
    Ok(out)
}

impl Delays {
    /// Appends `%DELAY%` entries (one message each) and puts them into the wheel; returns
    /// their commit-log offsets.
    pub async fn store_delayed(&self, batch: BytesMut) -> Result<Vec<u64>, RequestError> {
        let deliver_at = delayed_entries(&batch)?;
        let result = self.log.append(DELAY_TOPIC, 0, batch).await?;
        Ok(self.schedule_stored(&result, &deliver_at))
    }

    /// Puts the entries of an appended `%DELAY%` batch (`(deliver_at, length)` of each, in
    /// order) into the wheel; returns their commit-log offsets.
    fn schedule_stored(&self, result: &AppendResult, records: &[(i64, u64)]) -> Vec<u64> {
        let mut offsets = Vec::with_capacity(records.len());
        let mut at = result.commit_log_offset;
        for (deliver_at, len) in records {
            self.schedule(*deliver_at, result.store_timestamp, at);
            offsets.push(at);
            at += len;
        }
        metrics::gauge!(DELAYED_MESSAGES).set(self.pending() as f64);
        offsets
    }
}

/// A producer's batch with delayed messages, checked and split into one entry per message:
/// those due now for their queue, the delayed ones for `%DELAY%`.
#[derive(Debug)]
pub(crate) struct Split {
    plain: BytesMut,
    plain_lens: Vec<u64>,
    delayed: BytesMut,
    /// `(deliver_at, length)` of each delayed entry.
    delayed_records: Vec<(i64, u64)>,
    /// Per message of the batch: `true` when it is delayed.
    order: Vec<bool>,
}

/// The two appends of a [`Split`], written but maybe not yet readable.
#[derive(Debug)]
pub(crate) struct Written {
    split: Split,
    plain: Option<AppendResult>,
    delayed: Option<AppendResult>,
}

impl Written {
    /// Commit-log offset just past both appends.
    pub fn end_offset(&self) -> u64 {
        self.plain
            .iter()
            .chain(&self.delayed)
            .map(|r| r.end_offset)
            .max()
            .unwrap_or(0)
    }

    /// Queue offset (0 when delayed), commit-log offset and store time of the batch's first
    /// message.
    pub fn first_position(&self) -> (u64, u64, i64) {
        let first = match self.split.order.first() {
            Some(true) => self.delayed.as_ref().map(|r| (0, r)),
            _ => self.plain.as_ref().map(|r| (r.queue_offset, r)),
        };
        first.map_or((0, 0, 0), |(queue_offset, r)| {
            (queue_offset, r.commit_log_offset, r.store_timestamp)
        })
    }
}

impl Delays {
    /// Checks a batch (one entry) for `topic`/`queue_id` that has delayed messages and splits
    /// it (see [`Split`]). Each message keeps the producer's identity: its own sequence
    /// becomes its entry's base sequence.
    pub fn split(
        &self,
        topic: &str,
        queue_id: u32,
        payload: &[u8],
        now: i64,
    ) -> Result<Split, RequestError> {
        let corrupt = |e: weir_proto::batch::BatchError| {
            RequestError::new(ErrorCode::CorruptMessage, e.to_string())
        };
        let max_size = self.max_message_size;
        let latest = now.saturating_add(i64::try_from(MAX_DELAY.as_millis()).unwrap_or(i64::MAX));
        let mut out = Split {
            plain: BytesMut::new(),
            plain_lens: Vec::new(),
            delayed: BytesMut::new(),
            delayed_records: Vec::new(),
            order: Vec::new(),
        };
        let entry = Entry::parse(payload).map_err(corrupt)?;
        entry.verify_batch().map_err(corrupt)?;
        if entry.len() > max_size {
            return Err(RequestError::new(
                ErrorCode::MessageTooLarge,
                format!("a batch of {} bytes is over {max_size}", entry.len()),
            ));
        }
        if entry.topic() != topic {
            return Err(RequestError::new(
                ErrorCode::CorruptMessage,
                format!("a batch for {:?} sent to {topic:?}", entry.topic()),
            ));
        }
        let records = entry.records(MAX_UNCOMPRESSED_LEN).map_err(corrupt)?;
        records.check().map_err(corrupt)?;
        let queue = queue_id.to_string();
        let real: [(&str, &[u8]); 2] = [
            (PROP_REAL_TOPIC, topic.as_bytes()),
            (PROP_REAL_QUEUE, queue.as_bytes()),
        ];
        for record in records.iter() {
            let record = record.map_err(corrupt)?;
            // The producer's own write: each part keeps its identity (see the module doc).
            let options = BatchOptions {
                producer_id: entry.producer_id(),
                producer_epoch: entry.producer_epoch(),
                base_sequence: if entry.base_sequence() < 0 {
                    entry.base_sequence()
                } else {
                    entry
                        .base_sequence()
                        .wrapping_add(record.offset_delta as i32)
                },
                flags: 0,
            };
            let deliver_at = deliver_at_of(&record, now);
            if deliver_at > latest {
                return Err(RequestError::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "deliver_at is more than {} days ahead",
                        MAX_DELAY.as_secs() / 86_400
                    ),
                ));
            }
            if deliver_at > now {
                self.check_deliverable(&record, topic, max_size)?;
                let before = out.delayed.len();
                rewrite_delayed(
                    &record,
                    deliver_at,
                    options,
                    &DELAY_DROP,
                    &real,
                    &mut out.delayed,
                )?;
                out.delayed_records
                    .push((deliver_at, (out.delayed.len() - before) as u64));
                out.order.push(true);
            } else {
                let before = out.plain.len();
                let copy =
                    BatchBuilder::copy_of(topic, options, &record, &[], &[]).map_err(bad_input)?;
                out.plain.extend_from_slice(&copy);
                out.plain_lens.push((out.plain.len() - before) as u64);
                out.order.push(false);
            }
        }
        Ok(out)
    }

    /// Refuses a delayed message whose delivered copy (one entry for `topic`, with the header
    /// `DELAY_ORIGIN_ID` added) would be over `max_size`: it could be parked but never
    /// delivered, so the producer hears it now instead of the message being dropped later.
    fn check_deliverable(
        &self,
        record: &RecordView<'_>,
        topic: &str,
        max_size: usize,
    ) -> Result<(), RequestError> {
        // An id's hex form: name length, name, commit-log offset, index.
        let id_len = 2 * (1 + self.identity.broker_name.len() + 8 + 4);
        let placeholder = vec![b'0'; id_len];
        let mut copy = BytesMut::new();
        copy_one(
            record,
            topic,
            BatchOptions::default(),
            &[PROP_REAL_TOPIC, PROP_REAL_QUEUE, PROP_DELAY_ORIGIN_ID],
            &[(PROP_DELAY_ORIGIN_ID, &placeholder)],
            &mut copy,
        )?;
        // The delivered copy keeps the deliver-at header `copy_one` leaves out.
        let delivered = copy.len() + HEADER_DELIVER_MS.len() + 24;
        if delivered > max_size {
            return Err(RequestError::new(
                ErrorCode::MessageTooLarge,
                format!(
                    "a delayed message would be {delivered} bytes when delivered (its delivery \
                     adds {PROP_DELAY_ORIGIN_ID}), over the limit of {max_size}"
                ),
            ));
        }
        Ok(())
    }

    /// Appends both parts of `split` (without waiting for them to be acknowledged: see
    /// [`Delays::finish`]).
    pub fn write_now(
        &self,
        topic: &str,
        queue_id: u32,
        mut split: Split,
    ) -> Result<Written, RequestError> {
        let plain = if split.plain.is_empty() {
            None
        } else {
            Some(self.log.write(topic, queue_id, &mut split.plain)?)
        };
        let delayed = if split.delayed.is_empty() {
            None
        } else {
            Some(self.log.write(DELAY_TOPIC, 0, &mut split.delayed)?)
        };
        Ok(Written {
            split,
            plain,
            delayed,
        })
    }

    /// Waits until `written` is acknowledged, then puts its delayed entries into the wheel.
    pub async fn finish(&self, written: &Written) -> Result<(), RequestError> {
        self.log.acknowledged(written.end_offset()).await?;
        if let Some(result) = &written.delayed {
            self.schedule_stored(result, &written.split.delayed_records);
        }
        Ok(())
    }

    /// Produce of a batch with delayed messages: the delayed ones to `%DELAY%`, the others to
    /// the real queue; the answer lists every message's position.
    pub async fn produce(
        &self,
        topic: &str,
        queue_id: u32,
        payload: BytesMut,
        now: i64,
    ) -> Result<Produced, RequestError> {
        let split = self.split(topic, queue_id, &payload, now)?;
        let written = if self.log.is_replicated() {
            self.append_split(topic, queue_id, split).await?
        } else {
            self.write_now(topic, queue_id, split)?
        };
        self.finish(&written).await?;
        Ok(written.produced(now))
    }

    /// [`Delays::write_now`] in a broker group, where a write's position is known once it is
    /// committed: the plain part, then the delayed part, each acknowledged in turn.
    pub async fn append_split(
        &self,
        topic: &str,
        queue_id: u32,
        mut split: Split,
    ) -> Result<Written, RequestError> {
        let plain = if split.plain.is_empty() {
            None
        } else {
            let batch = std::mem::take(&mut split.plain);
            Some(self.log.append(topic, queue_id, batch).await?)
        };
        let delayed = if split.delayed.is_empty() {
            None
        } else {
            let batch = std::mem::take(&mut split.delayed);
            Some(self.log.append(DELAY_TOPIC, 0, batch).await?)
        };
        Ok(Written {
            split,
            plain,
            delayed,
        })
    }
}

impl Written {
    /// Where a split batch went: every message's position (a delayed message's is its entry
    /// in `%DELAY%`, queue offset 0); every message is alone in its entry (index 0).
    pub fn produced(&self, now: i64) -> Produced {
        let mut plain_at = self.plain.as_ref().map(|r| r.commit_log_offset);
        let mut plain_queue = self.plain.as_ref().map_or(0, |r| r.queue_offset);
        let mut delayed_at = self.delayed.as_ref().map(|r| r.commit_log_offset);
        let mut plain_lens = self.split.plain_lens.iter();
        let mut delayed_lens = self.split.delayed_records.iter();
        let mut record_offsets = Vec::with_capacity(self.split.order.len());
        let mut record_queue_offsets = Vec::with_capacity(self.split.order.len());
        for delayed in &self.split.order {
            if *delayed {
                record_offsets.push(delayed_at.unwrap_or(0));
                record_queue_offsets.push(0);
                let len = delayed_lens.next().map_or(0, |(_, len)| *len);
                delayed_at = delayed_at.map(|at| at + len);
            } else {
                record_offsets.push(plain_at.unwrap_or(0));
                record_queue_offsets.push(plain_queue);
                plain_queue += 1;
                let len = plain_lens.next().copied().unwrap_or(0);
                plain_at = plain_at.map(|at| at + len);
            }
        }
        Produced {
            queue_offset: self.plain.as_ref().map_or(0, |r| r.queue_offset),
            commit_log_offset: record_offsets.first().copied().unwrap_or(0),
            count: self.split.order.len() as u32,
            store_timestamp: self.plain.as_ref().map_or(now, |r| r.store_timestamp),
            record_indexes: vec![0; record_offsets.len()],
            record_offsets,
            record_queue_offsets,
        }
    }
}
