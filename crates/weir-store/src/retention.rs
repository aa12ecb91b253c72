//! Retention: deleting the oldest segments by age and by disk use.
//!
//! A segment is deleted, oldest first, when its file was last written more than
//! `retention_age` ago, or while the filesystem holding the data directory is fuller than
//! `retention_disk_ratio`. The active (last) segment is never deleted, nor one the dispatcher
//! has not finished, nor (in a broker group) one ending past the retention floor: the Raft
//! log must let go of a segment's entries before its bytes go (see `log_copy.rs`). Afterwards each consume queue's minimum moves up to its first entry whose
//! record still exists, consume-queue files wholly below it are deleted, and so are key-index
//! files whose entries all point before the new start of the log. A read below a queue's
//! minimum gets [`crate::StoreError::OffsetOutOfRange`] carrying the new minimum. The deleted
//! segments' bytes leave their topics' sizes (see `topic_bytes.rs`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use crate::StoreError;
use crate::store::Inner;

/// The filesystem's (used fraction, free bytes, total bytes) for `path`.
pub(crate) fn disk_usage(path: &std::path::Path) -> Result<(f64, u64, u64), StoreError> {
    let st = rustix::fs::statvfs(path)?;
    let block = st.f_frsize.max(1);
    let total = st.f_blocks * block;
    let free = st.f_bavail * block;
    // What this process can still write is `f_bavail`, not `f_bfree`: blocks reserved for root
    // or held back by a quota count as used, or the disk fills before the ratio is reached.
    let used = total.saturating_sub(free);
    let ratio = if total == 0 {
        0.0
    } else {
        used as f64 / total as f64
    };
    Ok((ratio, free, total))
}

/// Whether retention wants `seg` gone now: (expired, disk full).
fn wanted(inner: &Inner, seg: &crate::segment::Segment) -> Result<(bool, bool), StoreError> {
    let age = seg
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    let expired = age > inner.config.retention_age;
    let full = disk_usage(&inner.config.data_dir)?.0 > inner.config.retention_disk_ratio;
    Ok((expired, full))
}

/// Where the log would start if retention could delete every segment it wants gone now,
/// ignoring the floor: the end of the last such segment, or `None` when it wants none. A full
/// disk wants one segment at a time (what deleting it frees is seen on the next run).
pub(crate) fn wanted_end(inner: &Inner) -> Result<Option<u64>, StoreError> {
    let segments = inner.log.segments();
    let dispatched = inner.dispatched.load(Ordering::Acquire);
    let mut end = None;
    // Never the active (last) segment.
    for seg in segments.iter().take(segments.len().saturating_sub(1)) {
        if dispatched < seg.end() {
            break;
        }
        let (expired, full) = wanted(inner, seg)?;
        if !expired && !full {
            break;
        }
        end = Some(seg.end());
        if !expired {
            break;
        }
    }
    Ok(end)
}

/// Runs retention once; returns how many segments were deleted.
pub(crate) fn run_once(inner: &Inner) -> Result<usize, StoreError> {
    let _serial = inner.retention_lock.lock();
    let mut deleted = 0;
    loop {
        let segments = inner.log.segments();
        let [oldest, _, ..] = segments.as_slice() else {
            break;
        };
        if inner.dispatched.load(Ordering::Acquire) < oldest.end()
            || inner.retention_floor.load(Ordering::Acquire) < oldest.end()
        {
            break;
        }
        let (expired, full) = wanted(inner, oldest)?;
        if !expired && !full {
            break;
        }
        let Some(seg) = inner.log.remove_oldest() else {
            break;
        };
        std::fs::remove_file(seg.path())?;
        inner.topic_bytes.lock().remove_segment(seg.base);
        tracing::info!(
            segment = seg.base,
            expired,
            full,
            "retention deleted a segment"
        );
        deleted += 1;
    }
    if deleted > 0 {
        let log_min = inner.log.min_offset();
        for (_, _, cq) in inner.queues.all() {
            cq.advance_min(log_min)?;
        }
        inner.index.retain_from(log_min)?;
    }
    Ok(deleted)
}

/// The retention thread.
pub(crate) fn run(inner: Arc<Inner>) {
    loop {
        {
            let mut guard = inner.wake.lock();
            if !inner.stopping() {
                inner
                    .stop_cv
                    .wait_for(&mut guard, inner.config.retention_check_interval);
            }
        }
        if inner.stopping() {
            return;
        }
        if let Err(e) = run_once(&inner) {
            tracing::error!(error = %e, "retention failed");
        }
    }
}
