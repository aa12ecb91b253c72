//! Flushing: making the commit log durable, with group commit.
//!
//! One flusher thread owns every fdatasync of the log. In `sync` mode it wakes whenever the
//! written position passes the flushed one, takes the written position as its target, syncs
//! every segment holding unflushed bytes, and publishes the new flushed position; appenders
//! wait for that position to pass their end offset. Appends that arrive while a sync runs are
//! covered by the next one, so under load one fdatasync serves many batches — never one per
//! message. In `async` mode it does the same every `flush_interval`, trading the last interval
//! of data on power loss for latency and throughput; a process crash loses nothing either way
//! because the data is already in the page cache.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::FlushMode;
use crate::metric_names;
use crate::page_cache;
use crate::store::Inner;

/// An fdatasync slower than this is logged.
const SLOW_SYNC: Duration = Duration::from_millis(100);
/// Sync mode: how long the flusher lets appends gather before an fdatasync, at most.
const GATHER_MAX: Duration = Duration::from_micros(400);
/// Sync mode: the flusher stops gathering once the log has not grown for this long.
const GATHER_QUIET: Duration = Duration::from_micros(40);

/// Makes the log durable up to at least `target`; returns once it is.
pub(crate) fn flush_to(inner: &Inner, target: u64) -> io::Result<()> {
    let _serial = inner.flush_lock.lock();
    let flushed = inner.flushed.load(Ordering::Acquire);
    if target <= flushed {
        return Ok(());
    }
    for seg in inner.log.segments() {
        if seg.end() <= flushed || seg.base >= target {
            continue;
        }
        let started = Instant::now();
        seg.sync()?;
        inner.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        let took = started.elapsed();
        metrics::counter!(metric_names::FSYNC_TOTAL).increment(1);
        metrics::histogram!(metric_names::FSYNC_DURATION_SECONDS).record(took);
        if took > SLOW_SYNC {
            tracing::warn!(segment = seg.base, ?took, "slow fdatasync");
        }
    }
    inner.set_flushed(target);
    Ok(())
}

/// The flusher thread.
pub(crate) fn run(inner: Arc<Inner>) {
    let interval = inner.config.flush_interval;
    loop {
        {
            let mut guard = inner.wake.lock();
            if !inner.stopping() {
                match inner.config.flush {
                    FlushMode::Sync => {
                        if inner.log.written() <= inner.flushed.load(Ordering::Acquire) {
                            inner.flush_cv.wait_for(&mut guard, interval);
                        }
                    }
                    FlushMode::Async => {
                        inner.flush_cv.wait_for(&mut guard, interval);
                    }
                }
            }
        }
        if inner.config.flush == FlushMode::Sync && !inner.stopping() {
            gather(&inner);
        }
        let target = inner.log.written();
        if let Err(e) = flush_to(&inner, target) {
            // Durability is not confirmed; the next round tries again and sync-mode appenders
            // keep waiting rather than being told their data is safe.
            tracing::error!(error = %e, "flush failed; retrying");
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        if let Some(window) = inner.config.page_cache_window {
            page_cache::release_behind(&inner, window);
        }
        if inner.stopping() && inner.log.written() <= inner.flushed.load(Ordering::Acquire) {
            return;
        }
    }
}

/// Lets concurrent appends gather before a sync-mode fdatasync.
///
/// The appenders released by one fdatasync usually append again within microseconds; starting
/// the next fdatasync on the first of them would leave the rest for the one after, so each sync
/// would cover only a handful of batches. Waiting while the log keeps growing — at most
/// [`GATHER_MAX`], far below an fdatasync's cost (~1–2.5 ms here) — lets one sync cover them
/// all. A lone appender pays [`GATHER_QUIET`] at most.
fn gather(inner: &Inner) {
    let started = Instant::now();
    let mut last = inner.log.written();
    while started.elapsed() < GATHER_MAX {
        std::thread::sleep(GATHER_QUIET);
        let now = inner.log.written();
        if now == last {
            return;
        }
        last = now;
    }
}
