//! Checking what a read serves, and rebuilding a consume-queue entry from the log.
//!
//! A consume-queue entry says "queue offset `n` of `topic`/`queue_id` is in the `size`-byte
//! entry (envelope + batch) at commit-log `offset`". Before a batch is served,
//! [`check_entry`] makes sure the bytes there are exactly such an entry: whole, both CRCs good,
//! stamped with this position, topic and queue, and its batch covering queue offset `n`. The
//! cost is one CRC32C pass over the batch, once per batch (hardware accelerated; see
//! `docs/benchmarks.md`).
//!
//! When the entry is wrong but the log is fine (an index file damaged or replaced by a stale
//! copy), [`find_entry`] walks the log between the batches of the neighbouring entries and
//! finds the right one, so the entry can be rewritten instead of the message being skipped.

use weir_proto::batch::{self, MAGIC, MAX_UNCOMPRESSED_LEN};

use crate::commit_log::CommitLog;
use crate::consume_queue::Entry;
use crate::damage::DamageReason;
use crate::segment::{END_MARKER_LEN, is_end_marker};

/// Most commit-log bytes [`find_entry`] walks for one entry.
pub(crate) const MAX_REPAIR_SCAN: u64 = 256 << 20;

/// What one queue offset should hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub queue_offset: u64,
}

impl Expected<'_> {
    /// Whether a log entry whose envelope CRC holds covers this queue offset (its topic is
    /// checked separately, once the batch CRC holds).
    fn stamped_for(&self, entry: &batch::Entry<'_>) -> bool {
        let stamp = entry.stamp();
        stamp.queue_id == self.queue_id
            && stamp.base_offset <= self.queue_offset
            && self.queue_offset - stamp.base_offset < u64::from(entry.record_count())
    }
}

/// Checks that `bytes` (the consume-queue entry's `size` bytes at its `offset`) are the log
/// entry holding the message `expected` names, stored at `offset`. On failure, says whether
/// the batch itself is damaged ([`DamageReason::CorruptRecord`]: the envelope names this
/// position and queue offset but the batch CRC fails) or the consume-queue entry points at
/// something else ([`DamageReason::IndexMismatch`]).
pub(crate) fn check_entry<'a>(
    bytes: &'a [u8],
    offset: u64,
    expected: Expected<'_>,
) -> Result<batch::Entry<'a>, DamageReason> {
    let entry = batch::Entry::parse(bytes).map_err(|_| DamageReason::IndexMismatch)?;
    if entry.len() != bytes.len() || entry.verify_envelope().is_err() {
        return Err(DamageReason::IndexMismatch);
    }
    if entry.stamp().commit_log_offset != offset || !expected.stamped_for(&entry) {
        return Err(DamageReason::IndexMismatch);
    }
    if entry.verify_batch().is_err() {
        return Err(DamageReason::CorruptRecord);
    }
    if entry.topic() != expected.topic {
        return Err(DamageReason::IndexMismatch);
    }
    Ok(entry)
}

/// The tag hash of message `index` of `entry`, if its records can be walked.
fn tag_hash_of(entry: &batch::Entry<'_>, index: u64) -> Option<u64> {
    let records = entry.records(MAX_UNCOMPRESSED_LEN).ok()?;
    let record = records.iter().nth(usize::try_from(index).ok()?)?.ok()?;
    Some(batch::tag_hash(record.tag()))
}

/// Walks the entries of `log` from `from` (an entry boundary) up to `to` and returns the
/// consume-queue entry for the message `expected` names, if its batch is there and passes
/// [`check_entry`]. Past bytes that are no entry (damage), it goes on at the next position
/// holding an entry stamped for that very position with a good envelope CRC. Stops after
/// [`MAX_REPAIR_SCAN`] bytes.
pub(crate) fn find_entry(
    log: &CommitLog,
    from: u64,
    to: u64,
    expected: Expected<'_>,
) -> Option<Entry> {
    let to = to.min(from.saturating_add(MAX_REPAIR_SCAN));
    let mut pos = from;
    while pos < to {
        let seg = log.segment_for(pos)?;
        let rel = pos - seg.base;
        let avail = (log.written().checked_sub(pos)?).min(seg.capacity - rel) as usize;
        let rest = seg.bytes(rel, avail)?;
        if (rest.len() as u64) < END_MARKER_LEN || is_end_marker(rest) {
            pos = seg.end();
            continue;
        }
        let Some(entry) = batch::Entry::parse(rest)
            .ok()
            .filter(|e| e.verify_envelope().is_ok() && e.stamp().commit_log_offset == pos)
        else {
            pos = next_stamped(rest, pos)?;
            continue;
        };
        let len = entry.len();
        if expected.stamped_for(&entry)
            && let Ok(e) = check_entry(entry.as_bytes(), pos, expected)
        {
            let index = expected.queue_offset - e.stamp().base_offset;
            return Some(Entry {
                offset: pos,
                size: len as u32,
                tag_hash: tag_hash_of(&e, index)?,
            });
        }
        pos += len as u64;
    }
    None
}

/// The first position after `pos` in `rest` (the bytes from `pos` to the end of its segment's
/// written part) where an entry stamped for that position starts, with a good envelope CRC;
/// the segment's end when there is none (the walk goes on in the next segment).
pub(crate) fn next_stamped(rest: &[u8], pos: u64) -> Option<u64> {
    const MAGIC_AT: usize = 4;
    let mut at = 1 + MAGIC_AT;
    while at < rest.len() {
        let Some(found) = memchr::memchr(MAGIC, &rest[at..]).map(|f| at + f) else {
            break;
        };
        let candidate = found - MAGIC_AT;
        let offset = pos + candidate as u64;
        let ok = rest.get(candidate + 8..candidate + 16) == Some(&offset.to_be_bytes()[..])
            && batch::Entry::parse(&rest[candidate..]).is_ok_and(|e| e.verify_envelope().is_ok());
        if ok {
            return Some(offset);
        }
        at = found + 1;
    }
    // No entry in the rest of this segment: the walk goes on at the next one, whose first
    // entry starts at its base. `rest` ends at the segment's end or at the written end.
    Some(pos + rest.len() as u64)
}
