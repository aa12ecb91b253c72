//! Letting the page cache go of the commit log far behind the flushed position.
//!
//! By default the kernel keeps every written page of the log cached until memory runs short,
//! and then reclaims. Where reclaim is dear (a virtual machine whose host takes freed memory
//! back, see docs/benchmarks.md), a sustained write load larger than memory slows to the speed
//! of that reclaim. With [`crate::StoreConfig::page_cache_window`] set (by default to a quarter
//! of the machine's memory), the flusher lets go of the log's pages that lie more than the
//! window behind both the flushed and the dispatched position, in steps of at least [`STEP`]
//! bytes; `Inner::cache_released` says how far it has gone:
//!
//! ```text
//! commit-log offsets ──────────────────────────────────────────────────────────────▶
//! | released earlier | released now (≥ STEP) |    window (stays cached)    | newest |
//!                    ^ released              ^ min(flushed, dispatched) − window
//! ```
//!
//! Only clean, already indexed bytes are let go; a reader that needs them again faults them
//! back in from the disk. Letting go is advice: a failure is logged and the log goes on.

use std::sync::atomic::Ordering;

use crate::store::Inner;

/// The default window: a quarter of the machine's memory (`MemTotal` in `/proc/meminfo`), so
/// the log never makes the kernel reclaim while consumers that lag by less than that still
/// read from memory; `None` where memory cannot be read.
pub(crate) fn default_window() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib.saturating_mul(1024) / 4)
}

/// Least span let go at once: one pair of system calls per segment per this many bytes.
pub(crate) const STEP: u64 = 64 << 20;

/// After a flush: lets go of what now lies more than `window` bytes behind the flushed and
/// the dispatched positions, if that is at least [`STEP`] past what was let go before.
pub(crate) fn release_behind(inner: &Inner, window: u64) {
    let released = inner.cache_released.load(Ordering::Acquire);
    let settled = inner
        .flushed
        .load(Ordering::Acquire)
        .min(inner.dispatched.load(Ordering::Acquire));
    let upto = settled.saturating_sub(window);
    if upto < released.saturating_add(STEP) {
        return;
    }
    for seg in inner.log.segments() {
        if seg.end() <= released || seg.base >= upto {
            continue;
        }
        let from = released.max(seg.base) - seg.base;
        let to = upto.min(seg.end()) - seg.base;
        if let Err(e) = seg.release_cache(from, to) {
            tracing::warn!(segment = seg.base, error = %e, "could not let the page cache go of flushed log bytes");
        }
    }
    inner.cache_released.store(upto, Ordering::Release);
}
