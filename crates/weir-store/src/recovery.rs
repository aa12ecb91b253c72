//! Recovery of the commit log at open.
//!
//! 1. List the segment files; each one's capacity is the distance to the next one (the last
//!    one's is the configured segment size, or its length if longer). A file shorter than its
//!    capacity was cut by something other than Weir (segments are preallocated): if the
//!    checkpoint lies past the cut, the checkpoint no longer describes what is on disk and is
//!    not used.
//! 2. Start at the checkpoint's `dispatched` offset (everything before it was durable and
//!    indexed when the checkpoint was written), or at the first segment if there is no valid
//!    checkpoint.
//! 3. Walk the entries: an entry whose layout, envelope CRC and batch CRC are good and whose
//!    stamped commit-log offset is its own position continues the log; an end marker, or a
//!    tail too short for one, moves to the next segment.
//! 4. Anything else — zeros, a bad magic, a bad checksum, a torn entry — is either damage in
//!    the middle or the torn tail. The rest of the log is searched for the next valid entry
//!    (one whose stamped commit-log offset is its own position, both CRCs good: stale or
//!    random bytes do not pass that). If there is one, the stretch before it is a *hole*:
//!    logged at ERROR, listed in `data_dir/damaged`, skipped by the dispatcher, and the walk
//!    goes on. If there is none, it is the torn tail. The search is made when the whole log
//!    is verified (no usable checkpoint); after a usable checkpoint a bad record is the torn
//!    tail of a crash (see `search_after_damage`).
//!    A checkpoint written during a cut (`log_end` set) ends the log there as well.
//! 5. Cut the tail: the rest of that segment reads as zeros from then on and later segments
//!    are deleted, so no stale bytes past the end can ever be mistaken for records.
//!
//! A log whose first entry is in the old one-record-per-message format (magic 0xA1) is
//! refused with [`StoreError::OldFormat`] before anything is touched.
//!
//! The caller then trims the consume queues and the key index back to the start offset and
//! re-dispatches `[start, end)`. The work is proportional to the data written since the
//! checkpoint; after a bad record, the rest of the log's *data* is searched too (holes are
//! skipped), which after a clean shutdown is nothing.

use std::path::Path;
use std::sync::Arc;

use weir_proto::batch::{self, BatchError, MAGIC};

use crate::StoreError;
use crate::checkpoint::Checkpoint;
use crate::segment::{self, END_MARKER_LEN, Segment, is_end_marker, list_numbered};

/// What recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The surviving segments, oldest first (at least one).
    pub segments: Vec<Arc<Segment>>,
    /// The checkpoint used, if any was valid and still matches the files.
    pub checkpoint: Option<Checkpoint>,
    /// Where verification (and re-dispatch) started.
    pub start: u64,
    /// The end of the log: the first byte past the last good record.
    pub end: u64,
    /// Damaged stretches `[from, to)` between valid records, found in `[start, end)`.
    pub holes: Vec<(u64, u64)>,
    /// Records verified.
    pub records: u64,
    /// Largest store timestamp seen.
    pub last_store_ts: i64,
}

/// Opens and verifies the commit log in `dir`, from `checkpoint` on (or the whole log
/// without one). `whole_log`: the checkpoint is one made up to verify the whole log from its
/// first record (an index rebuild), so damage is searched past as with no checkpoint.
pub(crate) fn recover_log(
    dir: &Path,
    segment_size: u64,
    checkpoint: Option<Checkpoint>,
    whole_log: bool,
) -> Result<Recovered, StoreError> {
    std::fs::create_dir_all(dir)?;
    let files = list_numbered(dir)?;
    if let Some((_, first)) = files.first() {
        refuse_old_format(first)?;
    }
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(files.len());
    // The first commit-log offset each shortened file no longer holds.
    let mut cut_at: Option<u64> = None;
    for (i, (base, path)) in files.iter().enumerate() {
        let len = std::fs::metadata(path)?.len();
        let capacity = match files.get(i + 1) {
            Some((next, _)) => next - base,
            None => len.max(segment_size),
        };
        if len < capacity {
            tracing::error!(
                segment = %path.display(),
                len,
                capacity,
                "commit-log segment is shorter than it was created; the missing bytes read as zeros"
            );
            cut_at.get_or_insert(base + len);
        }
        segments.push(Arc::new(Segment::open(path.clone(), *base, capacity)?));
    }
    // A log created by this open holds nothing to verify or search.
    let created = segments.is_empty();
    if created {
        segments.push(Arc::new(
            Segment::create(dir, 0, segment_size).map_err(StoreError::from_io)?,
        ));
    }
    let first = segments[0].base;
    let last_end = segments.last().map_or(0, |s| s.end());
    let checkpoint = checkpoint.filter(|cp| {
        let inside = cp.dispatched >= first && cp.dispatched <= last_end;
        let on_disk = cut_at.is_none_or(|cut| cp.dispatched <= cut);
        if inside && !on_disk {
            tracing::error!(
                checkpoint = cp.dispatched,
                "the checkpoint lies past the end of a shortened segment; verifying the whole \
                 log and rebuilding its indexes"
            );
        }
        inside && on_disk
    });
    let start = checkpoint.map_or(first, |cp| cp.dispatched);
    // Where a bad record may have valid records after it that must be kept: anywhere when the
    // whole log is verified (no usable checkpoint). After a usable checkpoint, a bad record is
    // a torn tail: what was written after it was never durable before it (an fsync covers
    // everything before it, so a later record cannot be durable while an earlier one is torn),
    // so it was never acknowledged as durable. Searching there would read the unwritten tail
    // of the active segment on every start, which some file systems report as data. A log
    // created by this open holds nothing to search either.
    let search_after_damage = (checkpoint.is_none() || whole_log) && !created;

    let mut i = segments
        .partition_point(|s| s.base <= start)
        .saturating_sub(1);
    let mut pos = start - segments[i].base;
    let mut records = 0u64;
    let mut last_store_ts = 0i64;
    let mut holes = Vec::new();
    let log_end = checkpoint.and_then(|cp| cp.log_end).unwrap_or(u64::MAX);
    loop {
        let seg = &segments[i];
        if seg.base + pos >= log_end {
            // A cut was in progress: nothing from here on is part of the log.
            break;
        }
        let rest = seg.bytes_from(pos);
        if (rest.len() as u64) < END_MARKER_LEN || is_end_marker(rest) {
            if i + 1 < segments.len() {
                i += 1;
                pos = 0;
                continue;
            }
            break;
        }
        if let Some(r) = verified_at(seg, pos) {
            pos += r.len() as u64;
            records += 1;
            last_store_ts = last_store_ts.max(r.stamp().store_timestamp);
            continue;
        }
        let bad = seg.base + pos;
        let next = if search_after_damage {
            next_valid(&segments, i, pos)
        } else {
            None
        };
        match next {
            Some((j, p)) if segments[j].base + p < log_end => {
                let resume = segments[j].base + p;
                tracing::error!(
                    from = bad,
                    to = resume,
                    "damaged commit-log bytes with valid records after them: isolated, the \
                     records after them are kept"
                );
                holes.push((bad, resume));
                i = j;
                pos = p;
            }
            _ => break,
        }
    }
    let end = segments[i].base + pos;
    segments[i].zero_from(pos)?;
    segments[i].sync()?;
    let removed = segments.split_off(i + 1);
    for seg in &removed {
        std::fs::remove_file(seg.path())?;
    }
    if !removed.is_empty() {
        segment::sync_dir(dir)?;
    }
    tracing::info!(
        start,
        end,
        records,
        holes = holes.len(),
        removed_segments = removed.len(),
        from_checkpoint = checkpoint.is_some(),
        "commit log recovered"
    );
    Ok(Recovered {
        segments,
        checkpoint,
        start,
        end,
        holes,
        records,
        last_store_ts,
    })
}

/// The entry at `pos` of `seg` if it is whole, both CRCs hold and it was stamped for exactly
/// this position.
fn verified_at(seg: &Segment, pos: u64) -> Option<batch::Entry<'_>> {
    let rest = seg.bytes_from(pos);
    // Cheap test first: the stamped commit-log offset (bytes 8..16) is the position.
    if rest.get(8..16)? != (seg.base + pos).to_be_bytes() {
        return None;
    }
    batch::Entry::parse(rest)
        .ok()
        .filter(|e| e.verify_envelope().is_ok() && e.verify_batch().is_ok())
}

/// Refuses a log whose first segment file (`path`) starts with an entry of the old,
/// one-record-per-message format: it would otherwise look like a log that is damaged from its
/// first byte. Reads the file's head only, before anything is opened or changed.
fn refuse_old_format(path: &Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut head = [0u8; batch::ENVELOPE_LEN];
    let mut file = std::fs::File::open(path)?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    match batch::Entry::parse(&head[..filled]) {
        Err(BatchError::LegacyFormat) => Err(StoreError::OldFormat {
            segment: path.display().to_string(),
        }),
        _ => Ok(()),
    }
}

/// The next valid record after a bad one at `pos` of `segments[i]`: (segment index, position).
///
/// Only the stretches of the files that hold data are read (holes — the unwritten tail of a
/// preallocated segment — are skipped with `SEEK_DATA`, so telling a torn tail from damage
/// costs next to nothing after a clean shutdown); in them, candidates are found by their magic
/// byte (`memchr`) and must pass [`verified_at`].
fn next_valid(segments: &[Arc<Segment>], i: usize, pos: u64) -> Option<(usize, u64)> {
    const MAGIC_AT: u64 = 4;
    for (j, seg) in segments.iter().enumerate().skip(i) {
        let bytes = seg.bytes_from(0);
        let mut from = if j == i { pos + 1 } else { 0 };
        while let Some((start, end)) = seg.next_data(from) {
            let mut at = (start.max(from) + MAGIC_AT) as usize;
            let end = end as usize;
            while at < end {
                let Some(found) = memchr::memchr(MAGIC, &bytes[at..end]).map(|f| at + f) else {
                    break;
                };
                let candidate = found as u64 - MAGIC_AT;
                if verified_at(seg, candidate).is_some() {
                    return Some((j, candidate));
                }
                at = found + 1;
            }
            from = end as u64;
        }
    }
    None
}
