//! Checking what a read serves, and rebuilding a consume-queue entry from the log.
//!
//! A consume-queue entry says "queue offset `n` of `topic`/`queue_id` is the `size`-byte
//! record at commit-log `offset`". Before a record is served, [`check_record`] makes sure the
//! bytes there are exactly that record: whole, both CRCs good, and stamped with this position,
//! topic, queue and queue offset. The cost is one CRC32C pass over the record (hardware
//! accelerated; see `docs/benchmarks.md`).
//!
//! When the entry is wrong but the log is fine (an index file damaged or replaced by a stale
//! copy), [`find_record`] walks the log between the records of the neighbouring entries and
//! finds the right one, so the entry can be rewritten instead of the message being skipped.

use weir_proto::record::{MAGIC_V1, Record};

use crate::commit_log::CommitLog;
use crate::consume_queue::Entry;
use crate::damage::DamageReason;
use crate::segment::{END_MARKER_LEN, is_end_marker};

/// Most commit-log bytes [`find_record`] walks for one entry.
pub(crate) const MAX_REPAIR_SCAN: u64 = 256 << 20;

/// What one queue offset should hold.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Expected<'a> {
    pub topic: &'a str,
    pub queue_id: u32,
    pub queue_offset: u64,
}

impl Expected<'_> {
    /// Whether a record whose header CRC holds is this one (its topic is checked separately,
    /// once the body CRC holds).
    fn stamped_for(&self, record: &Record<'_>) -> bool {
        let stamp = record.stamp();
        stamp.queue_id == self.queue_id && stamp.queue_offset == self.queue_offset
    }
}

/// Checks that `bytes` (the entry's `size` bytes at its `offset`) are the record `expected`
/// names, stored at `offset`. On failure, says whether the record itself is damaged
/// ([`DamageReason::CorruptRecord`]: the header names this position and queue offset but a
/// checksum fails) or the entry points at something else ([`DamageReason::IndexMismatch`]).
pub(crate) fn check_record<'a>(
    bytes: &'a [u8],
    offset: u64,
    expected: Expected<'_>,
) -> Result<Record<'a>, DamageReason> {
    let record = Record::parse(bytes).map_err(|_| DamageReason::IndexMismatch)?;
    if record.total_len() != bytes.len() || record.verify_header().is_err() {
        return Err(DamageReason::IndexMismatch);
    }
    if record.stamp().commit_log_offset != offset || !expected.stamped_for(&record) {
        return Err(DamageReason::IndexMismatch);
    }
    if record.verify_body().is_err() {
        return Err(DamageReason::CorruptRecord);
    }
    if record.topic() != expected.topic {
        return Err(DamageReason::IndexMismatch);
    }
    Ok(record)
}

/// Walks the records of `log` from `from` (a record boundary) up to `to` and returns the entry
/// of the record `expected` names, if it is there and passes [`check_record`]. Past bytes that
/// are no record (damage), it goes on at the next position holding a record stamped for that
/// very position with a good header CRC. Stops after [`MAX_REPAIR_SCAN`] bytes.
pub(crate) fn find_record(
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
        let Some(record) = Record::parse(rest)
            .ok()
            .filter(|r| r.verify_header().is_ok() && r.stamp().commit_log_offset == pos)
        else {
            pos = next_stamped(rest, pos)?;
            continue;
        };
        let len = record.total_len();
        if expected.stamped_for(&record)
            && let Ok(r) = check_record(record.as_bytes(), pos, expected)
        {
            return Some(Entry {
                offset: pos,
                size: len as u32,
                tag_hash: weir_proto::record::tag_hash(r.tag()),
            });
        }
        pos += len as u64;
    }
    None
}

/// The first position after `pos` in `rest` (the bytes from `pos` to the end of its segment's
/// written part) where a record stamped for that position starts, with a good header CRC; the
/// segment's end when there is none (the walk goes on in the next segment).
fn next_stamped(rest: &[u8], pos: u64) -> Option<u64> {
    const MAGIC_AT: usize = 4;
    let mut at = 1 + MAGIC_AT;
    while at < rest.len() {
        let Some(found) = memchr::memchr(MAGIC_V1, &rest[at..]).map(|f| at + f) else {
            break;
        };
        let candidate = found - MAGIC_AT;
        let offset = pos + candidate as u64;
        let ok = rest.get(candidate + 8..candidate + 16) == Some(&offset.to_le_bytes()[..])
            && Record::parse(&rest[candidate..]).is_ok_and(|r| r.verify_header().is_ok());
        if ok {
            return Some(offset);
        }
        at = found + 1;
    }
    // No record in the rest of this segment: the walk goes on at the next one, whose first
    // record starts at its base. `rest` ends at the segment's end or at the written end.
    Some(pos + rest.len() as u64)
}
