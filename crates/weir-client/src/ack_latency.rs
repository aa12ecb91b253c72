//! How long a broker takes to acknowledge produce requests, smoothed, and the request timeout
//! that follows from it.
//!
//! A fixed timeout fires into a slow disk: under a `sync` flush flood the acknowledgements of
//! healthy requests take longer than any small constant, and a producer that gives up and
//! resends only adds to the load. So the timeout of a produce request is the configured one or
//! [`TIMEOUT_FACTOR`] times the smoothed latency, whichever is longer (a request that timed out
//! counts as having taken its whole timeout, so the next one waits longer).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The timeout is at least this many times the smoothed latency.
pub(crate) const TIMEOUT_FACTOR: u32 = 8;

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

    /// The timeout for the next request: `floor`, or longer when acknowledgements are slow.
    pub(crate) fn timeout(&self, floor: Duration) -> Duration {
        floor.max(self.smoothed().saturating_mul(TIMEOUT_FACTOR))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_grows_with_slow_acknowledgements_and_comes_back_down() {
        let latency = AckLatency::default();
        let floor = Duration::from_secs(3);
        assert_eq!(latency.timeout(floor), floor);
        latency.record(Duration::from_millis(2));
        assert_eq!(latency.timeout(floor), floor, "fast acks keep the floor");
        for _ in 0..40 {
            latency.record(Duration::from_secs(3));
        }
        assert!(latency.timeout(floor) > Duration::from_secs(20));
        for _ in 0..80 {
            latency.record(Duration::from_millis(5));
        }
        assert_eq!(latency.timeout(floor), floor);
    }
}
