//! Recovery of the commit log at open.
//!
//! 1. List the segment files; each one's capacity is the distance to the next one (the last
//!    one's is the configured segment size, or its length if longer).
//! 2. Start at the checkpoint's `dispatched` offset (everything before it was durable and
//!    indexed when the checkpoint was written), or at the first segment if there is no valid
//!    checkpoint.
//! 3. Walk the records: a record whose layout, header CRC and body CRC are good and whose
//!    stamped commit-log offset is its own position continues the log; an end marker, or a
//!    tail too short for one, moves to the next segment; anything else — zeros, a bad magic, a
//!    bad checksum, a torn record — is the end of the log.
//!    A checkpoint written during a cut (`log_end` set) ends the log there as well.
//! 4. Cut there: the rest of that segment reads as zeros from then on and later segments are
//!    deleted, so no stale bytes past the end can ever be mistaken for records.
//!
//! The caller then trims the consume queues and the key index back to the start offset and
//! re-dispatches `[start, end)`. The work is proportional to the data written since the
//! checkpoint.

use std::path::Path;
use std::sync::Arc;

use weir_proto::record::Record;

use crate::StoreError;
use crate::checkpoint::Checkpoint;
use crate::segment::{self, END_MARKER_LEN, Segment, is_end_marker, list_numbered};

/// What recovery found.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The surviving segments, oldest first (at least one).
    pub segments: Vec<Arc<Segment>>,
    /// The checkpoint used, if any was valid.
    pub checkpoint: Option<Checkpoint>,
    /// Where verification (and re-dispatch) started.
    pub start: u64,
    /// The end of the log: the first byte past the last good record.
    pub end: u64,
    /// Records verified.
    pub records: u64,
    /// Largest store timestamp seen.
    pub last_store_ts: i64,
}

/// Opens and verifies the commit log in `dir`.
pub(crate) fn recover_log(
    dir: &Path,
    segment_size: u64,
    checkpoint: Option<Checkpoint>,
) -> Result<Recovered, StoreError> {
    std::fs::create_dir_all(dir)?;
    let files = list_numbered(dir)?;
    let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(files.len());
    for (i, (base, path)) in files.iter().enumerate() {
        let capacity = match files.get(i + 1) {
            Some((next, _)) => next - base,
            None => std::fs::metadata(path)?.len().max(segment_size),
        };
        segments.push(Arc::new(Segment::open(path.clone(), *base, capacity)?));
    }
    if segments.is_empty() {
        segments.push(Arc::new(
            Segment::create(dir, 0, segment_size).map_err(StoreError::from_io)?,
        ));
    }
    let first = segments[0].base;
    let last_end = segments.last().map_or(0, |s| s.end());
    let checkpoint = checkpoint.filter(|cp| cp.dispatched >= first && cp.dispatched <= last_end);
    let start = checkpoint.map_or(first, |cp| cp.dispatched);

    let mut i = segments
        .partition_point(|s| s.base <= start)
        .saturating_sub(1);
    let mut pos = start - segments[i].base;
    let mut records = 0u64;
    let mut last_store_ts = 0i64;
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
        let good = Record::parse(rest).ok().filter(|r| {
            r.verify_header().is_ok()
                && r.verify_body().is_ok()
                && r.stamp().commit_log_offset == seg.base + pos
        });
        match good {
            Some(r) => {
                pos += r.total_len() as u64;
                records += 1;
                last_store_ts = last_store_ts.max(r.stamp().store_timestamp);
            }
            None => break,
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
        removed_segments = removed.len(),
        from_checkpoint = checkpoint.is_some(),
        "commit log recovered"
    );
    Ok(Recovered {
        segments,
        checkpoint,
        start,
        end,
        records,
        last_store_ts,
    })
}
