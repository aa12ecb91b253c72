//! The commit log: all topics' records in one sequence of segment files, and its single writer.
//!
//! Positions in the log ("commit-log offsets") are byte offsets: segment `base + position in
//! the file`. Segments are contiguous — each starts where the previous one's capacity ends — so
//! the unused tail of a segment is a gap in the offsets, skipped over by an end marker (see
//! [`crate::segment`]).
//!
//! Every append goes through one [`Writer`] held under one mutex: it assigns commit-log
//! offsets, queue offsets and the store timestamp, stamps the entries in place (envelope, base
//! offset, leader epoch: see `weir_proto::batch`), and writes them with one positional write
//! (two when it rolls to a new segment). Nothing is visible to readers until the dispatcher has
//! indexed it, which only happens below the published written position.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::RwLock;
use weir_proto::batch::{self, BatchError, Entry, Stamp};

use crate::StoreError;
use crate::segment::{self, END_MARKER_LEN, Segment};

/// The segments and the published written position.
#[derive(Debug)]
pub(crate) struct CommitLog {
    pub dir: PathBuf,
    pub segment_size: u64,
    segments: RwLock<Vec<Arc<Segment>>>,
    written: AtomicU64,
}

impl CommitLog {
    /// A log over `segments` (sorted, contiguous, at least one), written up to `written`.
    pub fn new(
        dir: PathBuf,
        segment_size: u64,
        segments: Vec<Arc<Segment>>,
        written: u64,
    ) -> CommitLog {
        CommitLog {
            dir,
            segment_size,
            segments: RwLock::new(segments),
            written: AtomicU64::new(written),
        }
    }

    /// The commit-log offset up to which records are fully written.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub(crate) fn publish_written(&self, offset: u64) {
        self.written.store(offset, Ordering::Release);
    }

    /// The oldest offset still on disk.
    pub fn min_offset(&self) -> u64 {
        self.segments.read().first().map_or(0, |s| s.base)
    }

    /// A snapshot of the segment list.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    /// The segment holding commit-log offset `offset`.
    pub fn segment_for(&self, offset: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let i = segments.partition_point(|s| s.base <= offset);
        let seg = segments.get(i.checked_sub(1)?)?;
        (offset < seg.end()).then(|| Arc::clone(seg))
    }

    /// Calls `f` with the `len` bytes at `offset`, if they are below the written position.
    pub fn with_bytes<T>(&self, offset: u64, len: usize, f: impl FnOnce(&[u8]) -> T) -> Option<T> {
        if offset.checked_add(len as u64)? > self.written() {
            return None;
        }
        let seg = self.segment_for(offset)?;
        seg.bytes(offset - seg.base, len).map(f)
    }

    /// Copies out the entry at `offset` after checking its layout and both checksums.
    pub fn read_entry(&self, offset: u64) -> Result<Bytes, StoreError> {
        let seg = self.segment_for(offset).ok_or(StoreError::NotFound)?;
        let written = self.written();
        if offset >= written {
            return Err(StoreError::NotFound);
        }
        let pos = offset - seg.base;
        let avail = (written - offset).min(seg.capacity - pos) as usize;
        let bytes = seg.bytes(pos, avail).ok_or(StoreError::NotFound)?;
        let entry = Entry::parse(bytes).map_err(|_| StoreError::InvalidPosition(offset))?;
        entry.verify_envelope()?;
        entry.verify_batch()?;
        if entry.stamp().commit_log_offset != offset {
            return Err(StoreError::InvalidPosition(offset));
        }
        Ok(Bytes::copy_from_slice(entry.as_bytes()))
    }

    /// Drops the oldest segment if it is not the last one; returns it.
    pub fn remove_oldest(&self) -> Option<Arc<Segment>> {
        let mut segments = self.segments.write();
        (segments.len() > 1).then(|| segments.remove(0))
    }

    /// Removes every segment after the one holding `offset`, returning them.
    pub fn remove_after(&self, offset: u64) -> Vec<Arc<Segment>> {
        let mut segments = self.segments.write();
        let keep = segments.partition_point(|s| s.base <= offset).max(1);
        segments.split_off(keep)
    }
}

/// How [`Writer::append`] treats the broker fields of the entries it is given.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StampMode<'a> {
    /// A producer's batch for one queue: assign and stamp positions.
    Fresh {
        /// The batch's topic.
        topic: &'a str,
        /// The batch's queue.
        queue_id: u32,
        /// The leader epoch (Raft term) to stamp; 0 on a standalone broker.
        leader_epoch: i32,
    },
    /// Entries already stamped by a leader: check they continue this log exactly.
    Replicated,
}

/// What one append did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Appended {
    pub first_offset: u64,
    pub end_offset: u64,
    pub first_queue_offset: u64,
    pub count: u32,
    pub store_timestamp: i64,
}

/// The single writer: the active segment, the end of the log and every queue's next offset.
#[derive(Debug)]
pub(crate) struct Writer {
    active: Arc<Segment>,
    written: u64,
    queues: HashMap<String, HashMap<u32, u64>>,
    last_store_ts: i64,
}

/// One contiguous write planned by [`Writer::append`]: `batch[start..end]` at `offset`.
struct Piece {
    offset: u64,
    start: usize,
    end: usize,
}

impl Writer {
    /// A writer continuing at `written` in `active`.
    pub fn new(
        active: Arc<Segment>,
        written: u64,
        queues: HashMap<String, HashMap<u32, u64>>,
        last_store_ts: i64,
    ) -> Writer {
        Writer {
            active,
            written,
            queues,
            last_store_ts,
        }
    }

    /// The end of the log.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Next queue offset of every queue.
    pub fn queues_mut(&mut self) -> &mut HashMap<String, HashMap<u32, u64>> {
        &mut self.queues
    }

    /// Moves the end of the log back to `offset` (inside `active`) after a cut.
    pub fn reset(&mut self, active: Arc<Segment>, offset: u64) {
        self.active = active;
        self.written = offset;
    }

    /// The queue offset the next message appended to `topic`/`queue_id` gets.
    pub fn next_queue_offset(&self, topic: &str, queue_id: u32) -> u64 {
        match self.queues.get(topic) {
            Some(q) => q.get(&queue_id).copied().unwrap_or(0),
            None => 0,
        }
    }

    fn set_next_queue_offset(&mut self, topic: &str, queue_id: u32, next: u64) {
        if let Some(q) = self.queues.get_mut(topic) {
            q.insert(queue_id, next);
        } else {
            self.queues
                .entry(topic.to_owned())
                .or_default()
                .insert(queue_id, next);
        }
    }

    /// Appends `batch` (validated entries laid end to end) at the end of the log; `count` of
    /// the returned [`Appended`] is the number of messages.
    ///
    /// Fresh batches are stamped in place; replicated ones must already carry exactly the
    /// positions this log would give them. The whole batch is written or nothing is: new
    /// segments are created (preallocated) before the first byte is written, and a failed
    /// write is zeroed again before the error is returned.
    pub fn append(
        &mut self,
        log: &CommitLog,
        batch: &mut [u8],
        mode: StampMode<'_>,
        now_ms: i64,
    ) -> Result<Appended, StoreError> {
        let store_ts = now_ms.max(self.last_store_ts);
        let first_queue_offset = match mode {
            StampMode::Fresh {
                topic, queue_id, ..
            } => self.next_queue_offset(topic, queue_id),
            StampMode::Replicated => 0,
        };
        // Plan: where each entry goes; where the log rolls to a new segment.
        let mut pieces: Vec<Piece> = Vec::with_capacity(1);
        let mut markers: Vec<(u64, u64)> = Vec::new();
        let mut new_bases: Vec<u64> = Vec::new();
        let mut seg_base = self.active.base;
        let mut cap = self.active.capacity;
        let mut pos = self.written - seg_base;
        let mut piece_start = 0usize;
        let mut piece_offset = self.written;
        let mut at = 0usize;
        let mut count = 0u32;
        let mut last_ts = store_ts;
        let mut replicated_next: Vec<(String, u32, u64)> = Vec::new();
        while at < batch.len() {
            let len = batch::peek_entry_len(&batch[at..]).unwrap_or(0) as usize;
            if len == 0 || at + len > batch.len() {
                return Err(StoreError::CorruptRecord(BatchError::Malformed(
                    "entry length prefix",
                )));
            }
            if pos + len as u64 > cap {
                if at > piece_start {
                    pieces.push(Piece {
                        offset: piece_offset,
                        start: piece_start,
                        end: at,
                    });
                }
                if cap - pos >= END_MARKER_LEN {
                    markers.push((seg_base + pos, cap - pos));
                }
                seg_base += cap;
                cap = log.segment_size;
                pos = 0;
                new_bases.push(seg_base);
                piece_start = at;
                piece_offset = seg_base;
                if len as u64 > cap {
                    return Err(StoreError::MessageTooLarge {
                        size: len,
                        max: cap.saturating_sub(END_MARKER_LEN) as usize,
                    });
                }
            }
            let offset = seg_base + pos;
            let bytes = &mut batch[at..at + len];
            let messages = Entry::parse(bytes)?.record_count();
            match mode {
                StampMode::Fresh {
                    queue_id,
                    leader_epoch,
                    ..
                } => batch::stamp(
                    bytes,
                    Stamp {
                        commit_log_offset: offset,
                        base_offset: first_queue_offset + count as u64,
                        store_timestamp: store_ts,
                        queue_id,
                        leader_epoch,
                    },
                ),
                StampMode::Replicated => {
                    let parsed = Entry::parse(bytes)?;
                    let st = parsed.stamp();
                    if st.commit_log_offset != offset {
                        return Err(StoreError::ReplicaMismatch(format!(
                            "entry at {} belongs at {offset}",
                            st.commit_log_offset
                        )));
                    }
                    let topic = parsed.topic();
                    let expected = replicated_next
                        .iter()
                        .rev()
                        .find(|(t, q, _)| t == topic && *q == st.queue_id)
                        .map(|(_, _, n)| *n)
                        .unwrap_or_else(|| self.next_queue_offset(topic, st.queue_id));
                    if st.base_offset != expected {
                        return Err(StoreError::ReplicaMismatch(format!(
                            "queue offset {} of {topic}/{} should be {expected}",
                            st.base_offset, st.queue_id
                        )));
                    }
                    replicated_next.push((
                        topic.to_owned(),
                        st.queue_id,
                        expected + u64::from(messages),
                    ));
                    last_ts = last_ts.max(st.store_timestamp);
                }
            }
            pos += len as u64;
            at += len;
            count += messages;
        }
        if count == 0 {
            return Err(StoreError::EmptyBatch);
        }
        pieces.push(Piece {
            offset: piece_offset,
            start: piece_start,
            end: at,
        });
        let end_offset = seg_base + pos;

        // Create the segments the batch rolls into before writing anything.
        let mut created: Vec<Arc<Segment>> = Vec::with_capacity(new_bases.len());
        for base in &new_bases {
            match Segment::create(&log.dir, *base, log.segment_size) {
                Ok(seg) => created.push(Arc::new(seg)),
                Err(e) => {
                    discard_segments(&created);
                    return Err(StoreError::from_io(e));
                }
            }
        }
        let segment_of = |offset: u64| -> &Arc<Segment> {
            created
                .iter()
                .rev()
                .find(|s| s.base <= offset)
                .unwrap_or(&self.active)
        };
        let mut result: io::Result<()> = Ok(());
        for piece in &pieces {
            let seg = segment_of(piece.offset);
            result = seg.write_at(piece.offset - seg.base, &batch[piece.start..piece.end]);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            for (offset, remaining) in &markers {
                let seg = segment_of(*offset);
                result = seg.write_at(offset - seg.base, &segment::end_marker(*remaining));
                if result.is_err() {
                    break;
                }
            }
        }
        if let Err(e) = result {
            // Leave the log as it was: nothing past the old end may look like a record.
            let pos = self.written - self.active.base;
            if let Err(zero_err) = self.active.zero_from(pos) {
                tracing::error!(error = %zero_err, "could not zero a failed write");
            }
            discard_segments(&created);
            return Err(StoreError::from_io(e));
        }

        if let Some(last) = created.last() {
            self.active = Arc::clone(last);
            log.segments.write().extend(created);
        }
        self.written = end_offset;
        self.last_store_ts = last_ts;
        match mode {
            StampMode::Fresh {
                topic, queue_id, ..
            } => self.set_next_queue_offset(topic, queue_id, first_queue_offset + count as u64),
            StampMode::Replicated => {
                for (topic, queue_id, next) in replicated_next {
                    self.set_next_queue_offset(&topic, queue_id, next);
                }
            }
        }
        log.publish_written(end_offset);
        Ok(Appended {
            first_offset: pieces.first().map_or(end_offset, |p| p.offset),
            end_offset,
            first_queue_offset,
            count,
            store_timestamp: store_ts,
        })
    }
}

fn discard_segments(segments: &[Arc<Segment>]) {
    for seg in segments {
        if let Err(e) = std::fs::remove_file(seg.path()) {
            tracing::warn!(error = %e, path = %seg.path().display(), "could not remove a segment");
        }
    }
}
