//! The broker's recent history, kept for the dashboard's charts (no Prometheus needed): a ring
//! of one traffic sample per second for the last hour, each queue's message rate over the last
//! few seconds, and each consumer group's total lag every ten seconds for the last hour.
//!
//! [`run`] samples while the HTTP listener is open. Memory is bounded: 3,600 traffic samples,
//! one rate per queue, and 360 lag samples for at most [`MAX_GROUPS_TRACKED`] groups.
//!
//! ```text
//! traffic ring (1 s)   [t-3599] [t-3598] ... [t-1] [t]     msgs/s and bytes/s, in and out
//! queue rates (5 s)    (topic, queue) -> (max offset then, messages/s since)
//! group lag (10 s)     group -> [lag t-3590] ... [lag t]
//! ```

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use super::HttpShared;
use crate::core::traffic::TrafficTotals;
use crate::ops;
use crate::state::BrokerState;

/// Traffic samples kept: one per second for an hour.
pub(crate) const TRAFFIC_SAMPLES: usize = 3600;
/// How often each queue's rate is measured.
const QUEUE_RATE_EVERY: u64 = 5;
/// How often each group's lag is sampled, seconds.
const LAG_EVERY: u64 = 10;
/// Lag samples kept per group: an hour's worth.
const LAG_SAMPLES: usize = 360;
/// Groups whose lag is tracked (the first ones by name); a bound on memory and sampling work.
pub(crate) const MAX_GROUPS_TRACKED: usize = 1000;

/// One second of traffic: rates over the second before `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct TrafficSample {
    /// When it was taken, ms since the Unix epoch.
    pub at_ms: i64,
    /// Messages stored per second.
    pub messages_in: f64,
    /// Record bytes stored per second.
    pub bytes_in: f64,
    /// Messages sent to consumers per second.
    pub messages_out: f64,
    /// Record bytes sent to consumers per second.
    pub bytes_out: f64,
}

/// A queue's rate as last measured.
#[derive(Debug, Clone, Copy)]
struct QueueRate {
    max_offset: u64,
    per_second: f64,
}

/// The rings; see the module docs.
#[derive(Debug, Default)]
struct Rings {
    traffic: VecDeque<TrafficSample>,
    last: Option<(i64, TrafficTotals)>,
    queue_rates: HashMap<(String, u32), QueueRate>,
    /// Queue offsets were measured once: a queue seen later is new and counts from 0.
    queues_measured: bool,
    lag: BTreeMap<String, VecDeque<(i64, u64)>>,
}

/// The broker's recent history (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct History {
    rings: Mutex<Rings>,
}

impl History {
    /// Records the traffic totals read at `at_ms`: the rates since the previous reading become
    /// a sample. The first reading counts from zero over one second (the sampler reads within
    /// a second of the broker's start, when the totals started at zero).
    pub fn record_traffic(&self, at_ms: i64, totals: TrafficTotals) {
        let mut rings = self.rings.lock();
        let (then, before) = rings
            .last
            .unwrap_or((at_ms - 1000, TrafficTotals::default()));
        let seconds = (at_ms - then) as f64 / 1000.0;
        if seconds > 0.0 {
            let rate = |now: u64, before: u64| now.saturating_sub(before) as f64 / seconds;
            let sample = TrafficSample {
                at_ms,
                messages_in: rate(totals.messages_in, before.messages_in),
                bytes_in: rate(totals.bytes_in, before.bytes_in),
                messages_out: rate(totals.messages_out, before.messages_out),
                bytes_out: rate(totals.bytes_out, before.bytes_out),
            };
            if rings.traffic.len() == TRAFFIC_SAMPLES {
                rings.traffic.pop_front();
            }
            rings.traffic.push_back(sample);
        }
        rings.last = Some((at_ms, totals));
    }

    /// The traffic samples of the last `seconds`, oldest first.
    pub fn traffic(&self, seconds: usize) -> Vec<TrafficSample> {
        let rings = self.rings.lock();
        let skip = rings.traffic.len().saturating_sub(seconds);
        rings.traffic.iter().skip(skip).copied().collect()
    }

    /// Measures every queue's rate from its max offset now and `seconds` ago; queues of deleted
    /// topics are forgotten. The first measurement only sets the base; a queue that appears
    /// after it is new, and counts from offset 0.
    pub fn record_queue_offsets(&self, seconds: f64, offsets: Vec<((String, u32), u64)>) {
        let mut rings = self.rings.lock();
        let mut rates = HashMap::with_capacity(offsets.len());
        for (queue, max_offset) in offsets {
            let before = match rings.queue_rates.get(&queue) {
                Some(before) => Some(before.max_offset),
                None if rings.queues_measured => Some(0),
                None => None,
            };
            let per_second = match before {
                Some(before) if seconds > 0.0 => max_offset.saturating_sub(before) as f64 / seconds,
                _ => 0.0,
            };
            rates.insert(
                queue,
                QueueRate {
                    max_offset,
                    per_second,
                },
            );
        }
        rings.queue_rates = rates;
        rings.queues_measured = true;
    }

    /// A queue's messages per second as last measured (0 when not measured yet).
    pub fn queue_rate(&self, topic: &str, queue_id: u32) -> f64 {
        self.rings
            .lock()
            .queue_rates
            .get(&(topic.to_owned(), queue_id))
            .map_or(0.0, |r| r.per_second)
    }

    /// Records each group's total lag at `at_ms`; groups no longer listed are forgotten.
    pub fn record_lag(&self, at_ms: i64, lags: Vec<(String, u64)>) {
        let mut rings = self.rings.lock();
        let mut kept = BTreeMap::new();
        for (group, lag) in lags.into_iter().take(MAX_GROUPS_TRACKED) {
            let mut ring = rings.lag.remove(&group).unwrap_or_default();
            if ring.len() == LAG_SAMPLES {
                ring.pop_front();
            }
            ring.push_back((at_ms, lag));
            kept.insert(group, ring);
        }
        rings.lag = kept;
    }

    /// A group's lag samples, oldest first (empty when not tracked).
    pub fn lag(&self, group: &str) -> Vec<(i64, u64)> {
        self.rings
            .lock()
            .lag
            .get(group)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Every user queue's max offset (internal `%…%` topics left out).
fn queue_offsets(state: &BrokerState) -> Vec<((String, u32), u64)> {
    let mut out = Vec::new();
    for (topic, config) in state.topics.list() {
        if weir_proto::names::is_internal(&topic) {
            continue;
        }
        for queue_id in 0..config.queues {
            let max = state.log.queue_offsets(&topic, queue_id).max;
            out.push(((topic.clone(), queue_id), max));
        }
    }
    out
}

/// Each group's total lag (the first [`MAX_GROUPS_TRACKED`] by name).
fn group_lags(state: &BrokerState) -> Vec<(String, u64)> {
    ops::group::list(state)
        .into_iter()
        .take(MAX_GROUPS_TRACKED)
        .filter_map(|listing| {
            let description = ops::group::describe(state, &listing.group).ok()?;
            Some((
                listing.group,
                description.queues.iter().map(|q| q.lag).sum(),
            ))
        })
        .collect()
}

/// Samples the broker once a second until `shutdown`; waits for the broker to start.
pub(crate) async fn run(shared: Arc<HttpShared>, mut shutdown: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick: u64 = 0;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::shutdown::requested(&mut shutdown) => return,
        }
        let Ok(state) = shared.broker() else {
            continue;
        };
        let now = crate::features::delay::now_ms();
        shared.history.record_traffic(now, state.traffic.totals());
        if tick.is_multiple_of(QUEUE_RATE_EVERY) || tick.is_multiple_of(LAG_EVERY) {
            let state = state.clone();
            let shared = shared.clone();
            let sample_lag = tick.is_multiple_of(LAG_EVERY);
            // Walks every queue (and group): off the async workers.
            let done = tokio::task::spawn_blocking(move || {
                shared
                    .history
                    .record_queue_offsets(QUEUE_RATE_EVERY as f64, queue_offsets(&state));
                if sample_lag {
                    shared.history.record_lag(now, group_lags(&state));
                }
            })
            .await;
            if let Err(e) = done {
                tracing::warn!(error = %e, "sampling the dashboard's history failed");
            }
        }
        tick += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(messages_in: u64, bytes_in: u64) -> TrafficTotals {
        TrafficTotals {
            messages_in,
            bytes_in,
            ..TrafficTotals::default()
        }
    }

    #[test]
    fn traffic_samples_are_rates_and_the_ring_is_bounded() {
        let history = History::default();
        history.record_traffic(0, totals(10, 100));
        assert_eq!(history.traffic(10)[0].messages_in, 10.0, "from zero");
        history.record_traffic(2000, totals(110, 5100));
        let samples = history.traffic(10);
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].messages_in, 50.0);
        assert_eq!(samples[1].bytes_in, 2500.0);
        for i in 0..(TRAFFIC_SAMPLES as i64 + 10) {
            history.record_traffic(3000 + i * 1000, totals(100, 5000));
        }
        assert_eq!(history.traffic(usize::MAX).len(), TRAFFIC_SAMPLES);
        assert_eq!(history.traffic(5).len(), 5);
    }

    #[test]
    fn queue_rates_come_from_offset_deltas_and_forget_deleted_queues() {
        let history = History::default();
        let q = |t: &str, q: u32, max: u64| ((t.to_owned(), q), max);
        history.record_queue_offsets(5.0, vec![q("a", 0, 10), q("b", 0, 0)]);
        assert_eq!(history.queue_rate("a", 0), 0.0);
        history.record_queue_offsets(5.0, vec![q("a", 0, 60), q("c", 0, 25)]);
        assert_eq!(history.queue_rate("a", 0), 10.0);
        assert_eq!(history.queue_rate("b", 0), 0.0);
        assert_eq!(history.queue_rate("c", 0), 5.0, "a new queue counts from 0");
    }

    #[test]
    fn lag_rings_are_bounded_and_forget_gone_groups() {
        let history = History::default();
        for i in 0..(LAG_SAMPLES as i64 + 5) {
            history.record_lag(i, vec![("g".to_owned(), i as u64)]);
        }
        let lag = history.lag("g");
        assert_eq!(lag.len(), LAG_SAMPLES);
        assert_eq!(
            lag.last(),
            Some(&(LAG_SAMPLES as i64 + 4, LAG_SAMPLES as u64 + 4))
        );
        history.record_lag(1000, vec![]);
        assert!(history.lag("g").is_empty());
    }
}
