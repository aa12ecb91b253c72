//! How long a broker takes to acknowledge produce requests, smoothed, and the request timeout
//! that follows from it.
//!
//! A fixed timeout fires into a slow disk: under a `sync` flush flood the acknowledgements of
//! healthy requests take longer than any small constant, and a producer that gives up and
//! resends only adds to the load. So the timeout of a produce request is the configured one or
//! [`TIMEOUT_FACTOR`] times the smoothed latency, whichever is longer (a request that timed out
//! counts as having taken its whole timeout, so the next one waits longer), plus the time the
//! producer's bytes in flight take at [`SLOW_LINK_BYTES_PER_SEC`]: a request queued behind
//! many large batches on its connection waits for them before the broker sees it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The timeout is at least this many times the smoothed latency.
pub(crate) const TIMEOUT_FACTOR: u32 = 8;
/// The rate at which a request's timeout assumes the bytes in flight ahead of it move.
pub(crate) const SLOW_LINK_BYTES_PER_SEC: u64 = 8 << 20;

/// An exponentially weighted moving average of acknowledgement latency (weight 1/8 for each
/// new sample), in microseconds.
#[derive(Debug, Default)]
pub(crate) struct AckLatency {
    smoothed_us: AtomicU64,
}

impl AckLatency {
    /// Adds one observed latency.
    pub(crate) fn record(&self, latency: Duration) {
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Lost updates under contention only drop a sample: no loop needed.
        let old = self.smoothed_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old - old / 8 + sample / 8
        };
        self.smoothed_us.store(new, Ordering::Relaxed);
    }

    /// The smoothed latency.
    pub(crate) fn smoothed(&self) -> Duration {
        Duration::from_micros(self.smoothed_us.load(Ordering::Relaxed))
    }

    /// The timeout for the next request: `floor`, or longer when acknowledgements are slow,
    /// plus the time `in_flight_bytes` take on a slow link.
    pub(crate) fn timeout(&self, floor: Duration, in_flight_bytes: u64) -> Duration {
        floor.max(self.smoothed().saturating_mul(TIMEOUT_FACTOR))
            + Duration::from_secs_f64(in_flight_bytes as f64 / SLOW_LINK_BYTES_PER_SEC as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_grows_with_slow_acknowledgements_and_comes_back_down() {
        let latency = AckLatency::default();
        let floor = Duration::from_secs(3);
        assert_eq!(latency.timeout(floor, 0), floor);
        assert_eq!(
            latency.timeout(floor, 16 << 20),
            floor + Duration::from_secs(2),
            "bytes queued ahead add their time"
        );
        latency.record(Duration::from_millis(2));
        assert_eq!(latency.timeout(floor, 0), floor, "fast acks keep the floor");
        for _ in 0..40 {
            latency.record(Duration::from_secs(3));
        }
        assert!(latency.timeout(floor, 0) > Duration::from_secs(20));
        for _ in 0..80 {
            latency.record(Duration::from_millis(5));
        }
        assert_eq!(latency.timeout(floor, 0), floor);
    }
}
