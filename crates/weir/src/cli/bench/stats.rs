//! Counting and latency recording shared by the bench modes: a [`Recorder`] per worker task
//! merges into the run's [`Stats`] now and then, a [`Progress`] line reads them while the run
//! lasts, and [`Summary`] is what is printed at the end.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde::Serialize;

/// Largest latency the histograms hold, in microseconds (one hour); larger values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// A worker merges its local histogram into the shared one at least this often.
const MERGE_EVERY: Duration = Duration::from_millis(100);

fn new_histogram() -> Histogram<u64> {
    // Three significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).unwrap_or_else(|_| unreachable!())
}

/// The totals of a run, shared by its workers.
pub struct Stats {
    messages: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    latency: Mutex<Histogram<u64>>,
}

impl Stats {
    /// Empty totals.
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
        })
    }

    /// Messages counted so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// Failed sends so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Counts one failed send.
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The summary of the run so far, over `elapsed`.
    pub fn summary(&self, mode: &'static str, elapsed: Duration) -> Summary {
        let messages = self.messages();
        let bytes = self.bytes.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64().max(1e-9);
        let latency = self.latency.lock();
        Summary {
            mode,
            messages,
            bytes,
            errors: self.errors(),
            resent_maybe_stored: 0,
            wire_bytes: 0,
            elapsed_secs: elapsed.as_secs_f64(),
            msgs_per_sec: messages as f64 / secs,
            mb_per_sec: bytes as f64 / 1e6 / secs,
            latency_us: Latency::of(&latency),
        }
    }
}

/// One worker's counters: recorded locally, merged into [`Stats`] every [`MERGE_EVERY`] and
/// when dropped, so workers do not contend on every message.
pub struct Recorder {
    stats: Arc<Stats>,
    messages: u64,
    bytes: u64,
    latency: Histogram<u64>,
    merged: Instant,
}

impl Recorder {
    /// A recorder feeding `stats`.
    pub fn new(stats: Arc<Stats>) -> Recorder {
        Recorder {
            stats,
            messages: 0,
            bytes: 0,
            latency: new_histogram(),
            merged: Instant::now(),
        }
    }

    /// Counts one message of `bytes` body bytes that took `latency`.
    pub fn record(&mut self, bytes: u64, latency: Duration) {
        self.messages += 1;
        self.bytes += bytes;
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US);
        self.latency.saturating_record(us.clamp(1, MAX_LATENCY_US));
        if self.messages.is_multiple_of(1024) && self.merged.elapsed() >= MERGE_EVERY {
            self.merge();
        }
    }

    /// Counts `count` messages of `bytes` body bytes each that all took `latency` (the
    /// messages of one batch, acknowledged together).
    pub fn record_many(&mut self, count: u64, bytes: u64, latency: Duration) {
        self.messages += count;
        self.bytes += bytes * count;
        let us = u64::try_from(latency.as_micros()).unwrap_or(MAX_LATENCY_US);
        let _ = self.latency.record_n(us.clamp(1, MAX_LATENCY_US), count);
        if self.merged.elapsed() >= MERGE_EVERY {
            self.merge();
        }
    }

    /// Moves the local counts into the shared totals.
    pub fn merge(&mut self) {
        self.merged = Instant::now();
        if self.messages == 0 {
            return;
        }
        self.stats
            .messages
            .fetch_add(self.messages, Ordering::Relaxed);
        self.stats.bytes.fetch_add(self.bytes, Ordering::Relaxed);
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.stats.latency.lock().add(&self.latency);
        self.messages = 0;
        self.bytes = 0;
        self.latency.reset();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.merge();
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What a run measured; printed as text or, with `--json`, as one JSON object.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// `produce`, `consume` or `e2e`.
    pub mode: &'static str,
    /// Messages acknowledged (produce) or received (consume, e2e).
    pub messages: u64,
    /// Their body bytes.
    pub bytes: u64,
    /// Sends that failed.
    pub errors: u64,
    /// Produce: messages acknowledged after their batch was resent although an earlier
    /// attempt may have stored it (without `--idempotent`, each may be stored twice).
    pub resent_maybe_stored: u64,
    /// Produce: bytes of entries sent (as on the wire: compressed, envelopes and record
    /// framing included; 0 for the other modes).
    pub wire_bytes: u64,
    /// Wall time of the run.
    pub elapsed_secs: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Body megabytes (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Latency distribution, microseconds.
    pub latency_us: Latency,
}

impl Summary {
    /// Prints the summary to stdout, as JSON or as a few lines of text.
    pub fn print(&self, json: bool) -> anyhow::Result<()> {
        if json {
            println!("{}", serde_json::to_string(self)?);
        } else {
            let l = &self.latency_us;
            println!(
                "{}: {} messages, {} bytes in {:.3} s ({} errors)\n\
                 throughput: {:.0} msgs/s, {:.1} MB/s\n\
                 latency us: p50 {} p90 {} p99 {} p99.9 {} max {}",
                self.mode,
                self.messages,
                self.bytes,
                self.elapsed_secs,
                self.errors,
                self.msgs_per_sec,
                self.mb_per_sec,
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max
            );
            if self.wire_bytes > 0 {
                println!(
                    "sent: {} bytes of entries, {:.1} B per message",
                    self.wire_bytes,
                    self.wire_bytes as f64 / self.messages.max(1) as f64
                );
            }
            if self.resent_maybe_stored > 0 {
                println!(
                    "resent after an attempt that may have stored them (possibly stored twice): {}",
                    self.resent_maybe_stored
                );
            }
        }
        Ok(())
    }
}

/// The live progress line: shown only when stdout is a terminal, refreshed every 500 ms
/// from the shared totals.
pub struct Progress {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts the line for `stats` (nothing when stdout is not a terminal).
    pub fn start(mode: &'static str, stats: Arc<Stats>) -> Progress {
        if !std::io::stdout().is_terminal() {
            return Progress {
                bar: None,
                task: None,
            };
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {elapsed} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        let line = bar.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let s = stats.summary(mode, started.elapsed());
                line.set_message(format!(
                    "{mode}: {} msgs, {:.0} msgs/s, {:.1} MB/s, p99 {} us",
                    s.messages, s.msgs_per_sec, s.mb_per_sec, s.latency_us.p99
                ));
                line.tick();
            }
        });
        Progress {
            bar: Some(bar),
            task: Some(task),
        }
    }

    /// Stops and clears the line.
    pub fn finish(self) {
        if let Some(task) = self.task {
            task.abort();
        }
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
