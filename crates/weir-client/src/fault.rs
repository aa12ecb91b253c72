//! Latency fault avoidance (RocketMQ's `sendLatencyFaultEnable`): a broker that failed, or
//! answered slower than a threshold, is avoided by unkeyed sends for a while.
//!
//! | latency at least (ms) | 50 | 100 | 550 | 1000 | 2000 | 3000 | 15000 |
//! | --- | --- | --- | --- | --- | --- | --- | --- |
//! | avoided for (ms) | 0 | 0 | 30000 | 60000 | 120000 | 180000 | 600000 |
//!
//! A failure counts as a latency of [`FaultConfig::failure_latency`] (30 s, as in RocketMQ, so
//! 600 s of avoidance). When every candidate is avoided, the least bad one is used anyway: the
//! one that becomes available soonest.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Thresholds of the latency fault avoidance.
#[derive(Debug, Clone)]
pub struct FaultConfig {
    /// Whether slow or failed brokers are avoided at all.
    pub enabled: bool,
    /// Latency thresholds, ascending; paired with `not_available_for`.
    pub latency_thresholds: Vec<Duration>,
    /// How long a broker is avoided after a latency at or above the paired threshold.
    pub not_available_for: Vec<Duration>,
    /// The latency a failed request counts as.
    pub failure_latency: Duration,
}

impl Default for FaultConfig {
    fn default() -> Self {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect();
        FaultConfig {
            enabled: true,
            latency_thresholds: ms(&[50, 100, 550, 1000, 2000, 3000, 15000]),
            not_available_for: ms(&[0, 0, 30000, 60000, 120000, 180000, 600000]),
            failure_latency: Duration::from_secs(30),
        }
    }
}

impl FaultConfig {
    /// How long a broker that answered in `latency` is avoided.
    pub fn avoid_for(&self, latency: Duration) -> Duration {
        self.latency_thresholds
            .iter()
            .zip(&self.not_available_for)
            .rev()
            .find(|(threshold, _)| latency >= **threshold)
            .map(|(_, avoid)| *avoid)
            .unwrap_or(Duration::ZERO)
    }
}

#[derive(Debug, Clone, Copy)]
struct FaultItem {
    available_at: Instant,
}

/// The brokers to avoid, by address.
#[derive(Debug, Default)]
pub struct LatencyFaults {
    config: FaultConfig,
    items: Mutex<HashMap<String, FaultItem>>,
}

impl LatencyFaults {
    /// Avoidance with `config`.
    pub fn new(config: FaultConfig) -> LatencyFaults {
        LatencyFaults {
            config,
            items: Mutex::new(HashMap::new()),
        }
    }

    /// Records how a request to `broker` went: its latency, and whether it failed.
    pub fn record(&self, broker: &str, latency: Duration, failed: bool) {
        self.record_at(broker, latency, failed, Instant::now());
    }

    fn record_at(&self, broker: &str, latency: Duration, failed: bool, now: Instant) {
        if !self.config.enabled {
            return;
        }
        let latency = if failed {
            self.config.failure_latency
        } else {
            latency
        };
        let avoid = self.config.avoid_for(latency);
        let mut items = self.items.lock();
        if avoid.is_zero() {
            items.remove(broker);
        } else {
            items.insert(
                broker.to_owned(),
                FaultItem {
                    available_at: now + avoid,
                },
            );
        }
    }

    /// Whether `broker` may be used now.
    #[cfg(test)]
    fn is_available(&self, broker: &str) -> bool {
        self.is_available_at(broker, Instant::now())
    }

    #[cfg(test)]
    fn is_available_at(&self, broker: &str, now: Instant) -> bool {
        self.items
            .lock()
            .get(broker)
            .is_none_or(|item| item.available_at <= now)
    }

    /// Among `candidates` (indexes into something with a broker each, via `broker_of`), the
    /// first available one at or after `start` in round-robin order, or, when all are
    /// avoided, the one that becomes available soonest. `None` only when `candidates` is 0.
    pub fn choose<'a>(
        &self,
        candidates: usize,
        start: usize,
        broker_of: impl Fn(usize) -> &'a str,
    ) -> Option<usize> {
        if candidates > 0 && self.items.lock().is_empty() {
            // Nothing avoided (the usual case): skip the clock read on this per-message path.
            return Some(start % candidates);
        }
        self.choose_at(candidates, start, broker_of, Instant::now())
    }

    fn choose_at<'a>(
        &self,
        candidates: usize,
        start: usize,
        broker_of: impl Fn(usize) -> &'a str,
        now: Instant,
    ) -> Option<usize> {
        if candidates == 0 {
            return None;
        }
        let items = self.items.lock();
        let mut least_bad: Option<(usize, Instant)> = None;
        for i in 0..candidates {
            let index = (start + i) % candidates;
            match items.get(broker_of(index)) {
                None => return Some(index),
                Some(item) if item.available_at <= now => return Some(index),
                Some(item) => {
                    if least_bad.is_none_or(|(_, at)| item.available_at < at) {
                        least_bad = Some((index, item.available_at));
                    }
                }
            }
        }
        least_bad.map(|(index, _)| index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_rocketmq() {
        let c = FaultConfig::default();
        let ms = Duration::from_millis;
        assert_eq!(c.avoid_for(ms(10)), ms(0));
        assert_eq!(c.avoid_for(ms(120)), ms(0));
        assert_eq!(c.avoid_for(ms(550)), ms(30000));
        assert_eq!(c.avoid_for(ms(1500)), ms(60000));
        assert_eq!(c.avoid_for(ms(2500)), ms(120000));
        assert_eq!(c.avoid_for(ms(3000)), ms(180000));
        assert_eq!(c.avoid_for(ms(20000)), ms(600000));
    }

    #[test]
    fn slow_or_failed_brokers_are_skipped_then_forgiven() {
        let faults = LatencyFaults::new(FaultConfig::default());
        let now = Instant::now();
        let brokers = ["a", "b", "c"];
        faults.record_at("a", Duration::from_millis(700), false, now);
        faults.record_at("b", Duration::from_millis(1), true, now);
        assert!(!faults.is_available_at("a", now));
        assert!(!faults.is_available_at("b", now));
        assert!(faults.is_available_at("c", now));
        // Round-robin from "a" skips the avoided brokers.
        assert_eq!(faults.choose_at(3, 0, |i| brokers[i], now), Some(2));
        // After 30 s, "a" is usable again; "b" (a failure) is avoided for 600 s.
        let later = now + Duration::from_secs(31);
        assert_eq!(faults.choose_at(3, 0, |i| brokers[i], later), Some(0));
        assert_eq!(faults.choose_at(2, 1, |i| brokers[i], later), Some(0));
        // A fast answer clears the fault at once.
        faults.record_at("b", Duration::from_millis(5), false, now);
        assert!(faults.is_available_at("b", now));
    }

    #[test]
    fn when_all_are_avoided_the_least_bad_is_used() {
        let faults = LatencyFaults::new(FaultConfig::default());
        let now = Instant::now();
        let brokers = ["a", "b"];
        faults.record_at("a", Duration::from_millis(5000), false, now);
        faults.record_at("b", Duration::from_millis(600), false, now);
        assert_eq!(faults.choose_at(2, 0, |i| brokers[i], now), Some(1));
        assert_eq!(faults.choose_at(0, 0, |i| brokers[i], now), None);
    }

    #[test]
    fn disabled_avoids_nothing() {
        let faults = LatencyFaults::new(FaultConfig {
            enabled: false,
            ..FaultConfig::default()
        });
        faults.record("a", Duration::from_secs(20), true);
        assert!(faults.is_available("a"));
    }
}
