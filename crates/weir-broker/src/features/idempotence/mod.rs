//! The idempotent producer: per (producer id, topic, queue) the broker remembers the last
//! [`WINDOW`] batches it stored — their first and last sequence and the first record's
//! position — so a batch sent again (its acknowledgement was lost) is not stored twice but
//! answered with the original positions, and a batch that skips sequences is refused.
//!
//! A batch carries the producer id and the sequence of its first message in its header (Kafka's
//! producer id and base sequence, under the producer's CRC); its messages have consecutive
//! sequences. For a batch `first..=last` against a window whose newest batch
//! ends at `tail`:
//!
//! * inside a remembered batch → a duplicate: nothing is written, the answer is the original
//!   position of record `first`;
//! * `first == tail + 1`, or nothing remembered for the key → stored, and remembered;
//! * `first > tail + 1` → `out_of_order_sequence` (a batch in between is missing);
//! * otherwise (older than the window, or overlapping a remembered batch) →
//!   `duplicate_sequence`.
//!
//! The check and the append happen under one lock, so two copies of a batch racing each other
//! are still stored once. The table survives restarts through [`snapshot`].

pub(crate) mod producer_ids;
pub(crate) mod snapshot;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_proto::ErrorCode;
use weir_proto::batch::Entry;

use crate::core::message_log::MessageLog;
use crate::core::position::Produced;
use crate::error::RequestError;
use crate::features::delay::{self, Delays};

/// Batches remembered per (producer, topic, queue).
pub(crate) const WINDOW: usize = 5;

/// (producer id, topic, queue id).
pub(crate) type Key = (u64, String, u32);

/// One stored batch (or, after a restart, a run of batches stored back to back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BatchEntry {
    /// Sequence of the first record.
    pub first_seq: u32,
    /// Sequence of the last record.
    pub last_seq: u32,
    /// Queue offset of the first record.
    pub queue_offset: u64,
    /// Commit-log offset of the first record.
    pub commit_log_offset: u64,
    /// Commit-log offset just past the last record.
    pub end_offset: u64,
    /// Store timestamp of the first record.
    pub store_timestamp: i64,
}

impl BatchEntry {
    /// Batch `first..=last`, stored as one append.
    fn stored(first: u32, last: u32, stored: &weir_store::AppendResult) -> BatchEntry {
        BatchEntry {
            first_seq: first,
            last_seq: last,
            queue_offset: stored.queue_offset,
            commit_log_offset: stored.commit_log_offset,
            end_offset: stored.end_offset,
            store_timestamp: stored.store_timestamp,
        }
    }

    /// Batch `first..=last`, split between its queue and `%DELAY%`.
    fn split(first: u32, last: u32, written: &delay::Written) -> BatchEntry {
        let (queue_offset, commit_log_offset, store_timestamp) = written.first_position();
        BatchEntry {
            first_seq: first,
            last_seq: last,
            queue_offset,
            commit_log_offset,
            end_offset: written.end_offset(),
            store_timestamp,
        }
    }
}

/// What [`classify`] decided for a batch.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Store it.
    Fresh,
    /// Stored already, in this remembered batch.
    Duplicate(BatchEntry),
}

/// Decides what to do with the batch `first..=last` given the remembered `window`.
fn classify(
    window: Option<&VecDeque<BatchEntry>>,
    first: u32,
    last: u32,
) -> Result<Verdict, RequestError> {
    let Some(tail) = window.and_then(|w| w.back()) else {
        return Ok(Verdict::Fresh);
    };
    if let Some(entry) = window
        .into_iter()
        .flatten()
        .find(|e| e.first_seq <= first && last <= e.last_seq)
    {
        return Ok(Verdict::Duplicate(*entry));
    }
    let expected = u64::from(tail.last_seq) + 1;
    match u64::from(first).cmp(&expected) {
        std::cmp::Ordering::Equal => Ok(Verdict::Fresh),
        std::cmp::Ordering::Greater => Err(RequestError::new(
            ErrorCode::OutOfOrderSequence,
            format!("expected sequence {expected}, got {first}: a batch in between is missing"),
        )),
        std::cmp::Ordering::Less => Err(RequestError::new(
            ErrorCode::DuplicateSequence,
            format!(
                "sequences {first}..={last} were stored before (the broker remembers {}..={} only)",
                window
                    .and_then(|w| w.front())
                    .map_or(tail.first_seq, |e| e.first_seq),
                tail.last_seq
            ),
        )),
    }
}

/// The producer id and sequence range of a batch (one entry), from its header.
fn batch_sequences(payload: &[u8]) -> Result<(u64, u32, u32), RequestError> {
    let entry = Entry::parse(payload)
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
    let producer_id = u64::try_from(entry.producer_id()).map_err(|_| {
        RequestError::new(ErrorCode::InvalidArgument, "the batch has no producer id")
    })?;
    let first = u32::try_from(entry.base_sequence()).map_err(|_| {
        RequestError::new(
            ErrorCode::InvalidArgument,
            "an idempotent batch needs a base sequence of 0 or more",
        )
    })?;
    let last = first
        .checked_add(entry.record_count() - 1)
        .filter(|last| *last <= i32::MAX as u32)
        .ok_or_else(|| {
            RequestError::new(ErrorCode::InvalidArgument, "the batch's sequences overflow")
        })?;
    Ok((producer_id, first, last))
}

/// The idempotence table and the producer-id allocator, built from the write path (checked
/// batches are written under the table's lock) and the delay service (an idempotent batch
/// with delayed records is split as any other).
/// Longest a new leader waits for its log to be committed before it checks idempotent
/// batches.
const SYNC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Per (producer, topic, queue): the last batches stored.
pub(crate) type Table = HashMap<Key, VecDeque<BatchEntry>>;

#[derive(Debug)]
pub(crate) struct Idempotence {
    log: MessageLog,
    delays: Arc<Delays>,
    /// Hands out producer ids.
    pub ids: producer_ids::ProducerIds,
    table: Mutex<HashMap<Key, VecDeque<BatchEntry>>>,
    /// Changed since the last snapshot.
    dirty: AtomicBool,
    snapshot: snapshot::SnapshotFile,
    /// In a broker group: what keeps the table true to the group's log.
    group: GroupSync,
}

/// How the table follows a broker group's log: it is rebuilt from the log when this replica
/// becomes leader (a new term), and a batch is checked and appended under its producer and
/// queue's lock, because the position of a replicated write is known only once it is
/// committed.
#[derive(Debug, Default)]
pub(crate) struct GroupSync {
    /// The term the table was last rebuilt in.
    synced_term: Mutex<Option<u64>>,
    /// One lock per (producer, topic, queue) with a batch in flight.
    keys: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Batches appended but not yet remembered.
    in_flight: std::sync::atomic::AtomicUsize,
}

impl GroupSync {
    /// Whether a snapshot of the table may be written now: standalone always; in a broker
    /// group on a leader whose table is rebuilt for its term. Takes the term's lock: never
    /// call it holding the table's (the rebuild takes them in that order).
    fn snapshot_allowed(&self, log: &MessageLog) -> bool {
        if !log.is_replicated() {
            return true;
        }
        let synced = *self.synced_term.lock();
        synced.is_some() && log.leader_term().ok() == synced
    }

    /// Whether a batch is being appended and not yet remembered (check under the table's
    /// lock).
    fn appending(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) != 0
    }
}

impl Idempotence {
    /// Remembers a stored batch, forgetting the oldest beyond [`WINDOW`].
    fn remember(table: &mut HashMap<Key, VecDeque<BatchEntry>>, key: Key, entry: BatchEntry) {
        let window = table.entry(key).or_default();
        window.push_back(entry);
        while window.len() > WINDOW {
            window.pop_front();
        }
    }
}

impl Idempotence {
    /// Appends an idempotent batch (the first record has a producer id), or answers a duplicate
    /// with the original position. A batch with delayed records is split as [`Delays::produce`]
    /// does, under the same check.
    #[tracing::instrument(level = "debug", skip_all, fields(topic = %topic, queue = queue_id))]
    pub async fn append(
        &self,
        topic: &str,
        queue_id: u32,
        mut payload: BytesMut,
        now: i64,
    ) -> Result<Produced, RequestError> {
        let (producer_id, first, last) = batch_sequences(&payload)?;
        if self.log.is_replicated() {
            let key = (producer_id, topic.to_owned(), queue_id);
            return self.append_in_group(key, payload, now, first, last).await;
        }
        let split = if delay::has_delayed(&payload) {
            Some(self.delays.split(topic, queue_id, &payload, now)?)
        } else {
            None
        };
        let key = (producer_id, topic.to_owned(), queue_id);
        let (entry, outcome) = {
            let mut table = self.table.lock();
            let (entry, outcome) = match classify(table.get(&key), first, last)? {
                Verdict::Duplicate(entry) => (entry, Outcome::Duplicate),
                Verdict::Fresh => match split {
                    Some(split) => {
                        let written = self.delays.write_now(topic, queue_id, split)?;
                        let entry = BatchEntry::split(first, last, &written);
                        (entry, Outcome::Split(Box::new(written)))
                    }
                    None => {
                        let stored = self.log.write(topic, queue_id, &mut payload)?;
                        let entry = BatchEntry::stored(first, last, &stored);
                        (entry, Outcome::Stored)
                    }
                },
            };
            if !matches!(outcome, Outcome::Duplicate) {
                Idempotence::remember(&mut table, key, entry);
                self.dirty.store(true, Ordering::Release);
            }
            (entry, outcome)
        };
        if let Outcome::Split(written) = &outcome {
            self.delays.finish(written).await?;
            return Ok(written.produced(now));
        }
        // Answer once the batch (or the original) is acknowledged.
        self.log.acknowledged(entry.end_offset).await?;
        self.answer(
            &entry,
            producer_id,
            first,
            last,
            matches!(outcome, Outcome::Duplicate),
        )
    }

    /// The answer for batch `first..=last` of `producer_id`, stored as (or inside) `entry`.
    fn answer(
        &self,
        entry: &BatchEntry,
        producer_id: u64,
        first: u32,
        last: u32,
        duplicate: bool,
    ) -> Result<Produced, RequestError> {
        let position = if first == entry.first_seq {
            Position {
                queue_offset: entry.queue_offset,
                commit_log_offset: entry.commit_log_offset,
                index: 0,
                store_timestamp: entry.store_timestamp,
            }
        } else {
            position_of(&self.log, entry, producer_id, first)?
        };
        let Position {
            queue_offset,
            commit_log_offset,
            index,
            store_timestamp,
        } = position;
        if duplicate {
            tracing::info!(
                producer_id,
                first,
                last,
                commit_log_offset,
                "duplicate batch dropped; answering with the original position"
            );
        }
        let count = last - first + 1;
        let mut produced = Produced {
            queue_offset,
            commit_log_offset,
            count,
            store_timestamp,
            ..Produced::default()
        };
        if index != 0 {
            // The batch starts inside a stored entry (remembered as one run after a restart):
            // say where each message is.
            produced.record_offsets = vec![commit_log_offset; count as usize];
            produced.record_queue_offsets = (queue_offset..).take(count as usize).collect();
            produced.record_indexes = (index..).take(count as usize).collect();
        }
        Ok(produced)
    }
}

impl Idempotence {
    /// A producer id never handed out before (in a broker group: by any of its leaders).
    pub fn new_producer_id(&self) -> Result<u64, RequestError> {
        let id = if self.log.is_replicated() {
            let term = self.log.leader_term()?;
            self.ids.allocate_in_term(term)
        } else {
            self.ids.allocate()
        };
        id.map_err(|e| RequestError::new(ErrorCode::StorageError, e.to_string()))
    }

    /// [`Idempotence::append`] in a broker group (see [`GroupSync`]).
    async fn append_in_group(
        &self,
        key: Key,
        payload: BytesMut,
        now: i64,
        first: u32,
        last: u32,
    ) -> Result<Produced, RequestError> {
        let term = self.log.leader_term()?;
        if *self.group.synced_term.lock() != Some(term) {
            // A new leader rebuilds the table from its whole log, so everything the log holds
            // must be committed and readable first (a new leader's log ends with entries of
            // earlier terms that its first commit commits).
            let end = self.log.stats().written_offset;
            tokio::time::timeout(SYNC_TIMEOUT, self.log.acknowledged(end))
                .await
                .map_err(|_| {
                    RequestError::new(
                        ErrorCode::StorageError,
                        "the new leader's log was not committed in time; retry",
                    )
                })??;
        }
        self.sync_with_term()?;
        let lock = self
            .group
            .keys
            .lock()
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = lock.lock().await;
        let result = self.check_and_append(&key, payload, now, first, last).await;
        drop(guard);
        let mut keys = self.group.keys.lock();
        if keys.get(&key).is_some_and(|l| Arc::strong_count(l) <= 2) {
            keys.remove(&key);
        }
        result
    }

    async fn check_and_append(
        &self,
        key: &Key,
        payload: BytesMut,
        now: i64,
        first: u32,
        last: u32,
    ) -> Result<Produced, RequestError> {
        let (producer_id, topic, queue_id) = (key.0, key.1.as_str(), key.2);
        let verdict = classify(self.table.lock().get(key), first, last)?;
        if let Verdict::Duplicate(entry) = verdict {
            return self.answer(&entry, producer_id, first, last, true);
        }
        self.group.in_flight.fetch_add(1, Ordering::AcqRel);
        let stored = self
            .store_fresh(topic, queue_id, payload, now, first, last)
            .await;
        let mut table = self.table.lock();
        if let Ok((entry, _)) = &stored {
            Idempotence::remember(&mut table, key.clone(), *entry);
            self.dirty.store(true, Ordering::Release);
        }
        self.group.in_flight.fetch_sub(1, Ordering::AcqRel);
        drop(table);
        let (entry, split) = stored?;
        match split {
            Some(produced) => Ok(produced),
            None => self.answer(&entry, producer_id, first, last, false),
        }
    }

    /// Appends a fresh batch through the group's log (split first when it holds delayed
    /// messages): what to remember, and the answer of a split batch.
    async fn store_fresh(
        &self,
        topic: &str,
        queue_id: u32,
        payload: BytesMut,
        now: i64,
        first: u32,
        last: u32,
    ) -> Result<(BatchEntry, Option<Produced>), RequestError> {
        if delay::has_delayed(&payload) {
            let split = self.delays.split(topic, queue_id, &payload, now)?;
            let written = self.delays.append_split(topic, queue_id, split).await?;
            self.delays.finish(&written).await?;
            let entry = BatchEntry::split(first, last, &written);
            return Ok((entry, Some(written.produced(now))));
        }
        let stored = self.log.append(topic, queue_id, payload).await?;
        let entry = BatchEntry::stored(first, last, &stored);
        Ok((entry, None))
    }

    /// Rebuilds the table from the snapshot and the whole log once per term this replica
    /// leads in: a new leader's log holds every batch the group acknowledged, and the
    /// leader never cuts its own log.
    fn sync_with_term(&self) -> Result<(), RequestError> {
        let term = self.log.leader_term()?;
        let mut synced = self.group.synced_term.lock();
        if *synced == Some(term) {
            return Ok(());
        }
        let mut table = self.table.lock();
        let (rebuilt, _, runs) = snapshot::read_table(&self.log, &self.snapshot.path)
            .map_err(|e| RequestError::new(ErrorCode::Internal, e.to_string()))?;
        *table = rebuilt;
        *synced = Some(term);
        tracing::info!(
            term,
            runs,
            "idempotent producer state rebuilt for a new term"
        );
        Ok(())
    }
}

/// Where a message is: its queue offset, its entry and its index there, its store time.
#[derive(Debug, Clone, Copy)]
struct Position {
    queue_offset: u64,
    commit_log_offset: u64,
    index: u32,
    store_timestamp: i64,
}

/// What an idempotent produce did.
enum Outcome {
    /// Nothing: the batch was stored before.
    Duplicate,
    /// Appended to its queue.
    Stored,
    /// Split between its queue and `%DELAY%`.
    Split(Box<delay::Written>),
}

/// The first entry at or after commit-log offset `offset` and below `written`, skipping a
/// segment's unused tail, with the offset just past it.
pub(crate) fn next_record_offset(
    log: &MessageLog,
    offset: u64,
    written: u64,
) -> Option<(bytes::Bytes, u64)> {
    let segment = log.config().segment_size.max(1);
    let mut at = offset;
    while at < written {
        if let Ok(bytes) = log.read_at(at) {
            let len = bytes.len() as u64;
            return Some((bytes, at + len));
        }
        // No entry here: the rest of this segment is its end marker or padding.
        at = (at / segment + 1) * segment;
    }
    None
}

/// Where the message of `producer_id` with sequence `seq` is inside the remembered run
/// `entry` (from its first entry to its end; a batch split by delay has other entries in
/// between).
fn position_of(
    log: &MessageLog,
    entry: &BatchEntry,
    producer_id: u64,
    seq: u32,
) -> Result<Position, RequestError> {
    let mut at = entry.commit_log_offset;
    while at < entry.end_offset {
        let Some((bytes, next)) = next_record_offset(log, at, entry.end_offset) else {
            break;
        };
        if let Ok(stored) = Entry::parse(&bytes)
            && u64::try_from(stored.producer_id()) == Ok(producer_id)
            && let Ok(base) = u32::try_from(stored.base_sequence())
            && base <= seq
            && seq - base < stored.record_count()
        {
            let stamp = stored.stamp();
            return Ok(Position {
                queue_offset: stamp.base_offset + u64::from(seq - base),
                commit_log_offset: stamp.commit_log_offset,
                index: seq - base,
                store_timestamp: stamp.store_timestamp,
            });
        }
        at = next;
    }
    Err(RequestError::new(
        ErrorCode::Internal,
        format!("sequence {seq} is remembered but its message was not found"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first_seq: u32, last_seq: u32) -> BatchEntry {
        BatchEntry {
            first_seq,
            last_seq,
            queue_offset: u64::from(first_seq),
            commit_log_offset: u64::from(first_seq) * 100,
            end_offset: u64::from(last_seq + 1) * 100,
            store_timestamp: 1,
        }
    }

    #[test]
    fn batches_are_fresh_duplicate_out_of_order_or_too_old() {
        assert_eq!(classify(None, 7, 9), Ok(Verdict::Fresh));
        let mut window: VecDeque<BatchEntry> = (0..WINDOW as u32)
            .map(|i| entry(10 + i * 2, 11 + i * 2))
            .collect();
        assert_eq!(classify(Some(&window), 20, 20), Ok(Verdict::Fresh));
        assert_eq!(
            classify(Some(&window), 12, 13),
            Ok(Verdict::Duplicate(entry(12, 13)))
        );
        assert_eq!(
            classify(Some(&window), 13, 13),
            Ok(Verdict::Duplicate(entry(12, 13)))
        );
        let code = |r: Result<Verdict, RequestError>| r.map_err(|e| e.code);
        assert_eq!(
            code(classify(Some(&window), 22, 23)),
            Err(ErrorCode::OutOfOrderSequence)
        );
        assert_eq!(
            code(classify(Some(&window), 2, 3)),
            Err(ErrorCode::DuplicateSequence)
        );
        window.clear();
        assert_eq!(classify(Some(&window), 5, 5), Ok(Verdict::Fresh));
    }
}
