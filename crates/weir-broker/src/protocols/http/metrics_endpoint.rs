//! `GET /metrics`: the Prometheus text exposition of every metric in
//! [`metrics_catalog`](crate::metrics_catalog).
//!
//! Event metrics go through one process-wide `metrics-exporter-prometheus` recorder, installed
//! by the first broker that opens an HTTP listener (several brokers in one process, as in
//! tests, share it). Snapshot gauges are computed from the broker's state on each scrape and
//! appended after the recorder's output.

use std::fmt::Write as _;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::metrics_catalog::{
    self as catalog, COMMIT_LOG_BYTES, COMMIT_LOG_SEGMENT_BYTES, COMMIT_LOG_SEGMENTS,
    DISK_FREE_BYTES, DISK_TOTAL_BYTES, DISPATCH_LAG_BYTES, GROUP_COMMITTED_OFFSET, GROUP_LAG,
    Snapshot, TOPICS, UNFLUSHED_BYTES, UPTIME_SECONDS,
};
use crate::ops;
use crate::state::BrokerState;

/// Upper bounds of every histogram's buckets, seconds: 100 µs to 30 s.
const BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

/// The process's recorder, or `None` when another global recorder was installed first (an
/// embedding application's): then only the snapshot gauges are served.
static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder and describes the event metrics, once per process.
pub(crate) fn recorder() -> Option<&'static PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets(&BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    catalog::describe();
                    // Up/down gauges render from the start, not only after their first event.
                    metrics::gauge!(catalog::CONNECTIONS).increment(0.0);
                    metrics::gauge!(catalog::LONG_POLL_WAITERS).increment(0.0);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot install the Prometheus recorder; /metrics serves only snapshot gauges");
                    None
                }
            }
        })
        .as_ref()
}

/// Drains the recorder's histogram buffers so they stay small between scrapes (called by the
/// broker's housekeeping every second).
pub(crate) fn upkeep() {
    if let Some(Some(handle)) = RECORDER.get() {
        handle.run_upkeep();
    }
}

/// The page: the recorder's metrics, then the snapshot gauges of `broker` (none before it has
/// started).
pub(crate) fn render(broker: Option<&BrokerState>, uptime_seconds: f64) -> String {
    let mut out = recorder().map(PrometheusHandle::render).unwrap_or_default();
    if let Some(state) = broker {
        snapshots(state, uptime_seconds, &mut Exposition { out: &mut out });
    }
    out
}

/// Computes every snapshot gauge.
fn snapshots(state: &BrokerState, uptime_seconds: f64, page: &mut Exposition<'_>) {
    let stats = state.log.stats();
    let bytes = |v: u64| v as f64;
    page.gauge(
        &COMMIT_LOG_BYTES,
        bytes(stats.written_offset - stats.min_offset),
    );
    page.gauge(&COMMIT_LOG_SEGMENTS, stats.segment_count as f64);
    page.gauge(&COMMIT_LOG_SEGMENT_BYTES, bytes(stats.segment_bytes));
    page.gauge(
        &UNFLUSHED_BYTES,
        bytes(stats.written_offset.saturating_sub(stats.flushed_offset)),
    );
    page.gauge(
        &DISPATCH_LAG_BYTES,
        bytes(stats.written_offset.saturating_sub(stats.dispatched_offset)),
    );
    page.gauge(&DISK_FREE_BYTES, bytes(stats.disk_free));
    page.gauge(&DISK_TOTAL_BYTES, bytes(stats.disk_total));
    page.gauge(&TOPICS, state.topics.list().len() as f64);
    page.gauge(&UPTIME_SECONDS, uptime_seconds);

    let mut positions = Vec::new();
    for group in state.offsets.groups() {
        for (topic, queue_id, committed) in state.offsets.group_offsets(&group) {
            if queue_id < state.queues_of(&topic) {
                let offsets = state.log.queue_offsets(&topic, queue_id);
                let lag = ops::group::lag(offsets, Some(committed));
                positions.push((group.clone(), topic, queue_id.to_string(), committed, lag));
            }
        }
    }
    // Shared groups: the acked low-water mark stands for the committed offset, and the lag
    // counts the messages not acked yet (in flight or never delivered). A name used in both
    // modes on one queue shows its clustering offsets (one series per label set).
    let clustering: std::collections::HashSet<(String, String, String)> = positions
        .iter()
        .map(|(g, t, q, _, _)| (g.clone(), t.clone(), q.clone()))
        .collect();
    for group in state.shared.groups() {
        let queues = state.shared.describe(
            &group,
            &|topic| state.queues_of(topic),
            &|topic, queue_id| state.log.queue_offsets(topic, queue_id),
        );
        for q in queues.into_iter().flatten() {
            let key = (group.clone(), q.topic, q.queue_id.to_string());
            if !clustering.contains(&key) {
                positions.push((key.0, key.1, key.2, q.low_water, q.unacked));
            }
        }
    }
    for (family, lag) in [(&GROUP_COMMITTED_OFFSET, false), (&GROUP_LAG, true)] {
        page.family(family);
        for (group, topic, queue, committed, queue_lag) in &positions {
            let labels = [
                ("group", group.as_str()),
                ("topic", topic),
                ("queue", queue),
            ];
            let value = if lag { *queue_lag } else { *committed };
            page.sample(family.name, &labels, bytes(value));
        }
    }
}

/// Writes gauge families in the Prometheus text format (version 0.0.4).
struct Exposition<'a> {
    out: &'a mut String,
}

impl Exposition<'_> {
    /// A gauge without labels: its `# HELP` and `# TYPE` lines and its one sample.
    fn gauge(&mut self, gauge: &Snapshot, value: f64) {
        self.family(gauge);
        self.sample(gauge.name, &[], value);
    }

    /// The `# HELP` and `# TYPE` lines of a gauge (help texts hold no `\\` or newline).
    fn family(&mut self, gauge: &Snapshot) {
        let _ = writeln!(self.out, "# HELP {} {}", gauge.name, gauge.help);
        let _ = writeln!(self.out, "# TYPE {} gauge", gauge.name);
    }

    /// One sample line, label values escaped.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_label_values() {
        let mut out = String::new();
        let mut page = Exposition { out: &mut out };
        page.family(&GROUP_LAG);
        page.sample(
            GROUP_LAG.name,
            &[("group", "a\"b\\c\nd"), ("queue", "0")],
            5.0,
        );
        page.gauge(&TOPICS, 2.0);
        assert_eq!(
            out,
            "# HELP weir_group_lag Messages of a queue a consumer group has still to consume.\n\
             # TYPE weir_group_lag gauge\n\
             weir_group_lag{group=\"a\\\"b\\\\c\\nd\",queue=\"0\"} 5\n\
             # HELP weir_topics Topics on this broker.\n# TYPE weir_topics gauge\nweir_topics 2\n"
        );
    }
}
