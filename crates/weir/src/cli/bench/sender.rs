//! One bench producer: a pacing thread that hands messages to the [`Producer`] on schedule,
//! and a task that awaits their acknowledgements in send order and records the latencies.
//!
//! The pacing runs on a blocking thread (not a Tokio timer, whose 1 ms granularity would add
//! up to 1 ms to every open-loop latency); sending never waits for acknowledgements except
//! through the in-flight window, so with `--rate` a slow broker shows up as latency, not as a
//! lower send rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use weir_client::{Message, Producer, SendHandle};

use super::stats::{Recorder, Stats};

/// What one sender sends, and when it stops.
pub struct Plan {
    /// The topic.
    pub topic: String,
    /// Body length, for the byte count.
    pub size: usize,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop scheduling messages at this time.
    pub until: Option<Instant>,
    /// Messages per second (open loop); `None` for as fast as the window allows.
    pub rate: Option<f64>,
    /// Most messages sent and not yet acknowledged.
    pub window: usize,
    /// After every this many messages, wait until all are acknowledged (`--flush-wait`).
    pub flush_every: Option<usize>,
    /// Keys `k0`..`k{n-1}` in turn, or no key.
    pub key_space: Option<u64>,
    /// Time zero of the schedule.
    pub start: Instant,
}

/// Builds the body of a message from its scheduled send time.
pub type BodyFn = Box<dyn FnMut(Instant) -> Bytes + Send>;

/// Starts a sender; the handle ends once every message is acknowledged (or failed), with
/// how many messages were sent.
pub fn start(
    producer: Producer,
    plan: Plan,
    mut body: BodyFn,
    stats: Arc<Stats>,
) -> JoinHandle<u64> {
    let window = plan.window.max(1);
    let permits = Arc::new(Semaphore::new(window));
    let (acks, mut pending) = mpsc::unbounded_channel::<(Instant, SendHandle, _)>();
    let size = plan.size as u64;
    let collector = tokio::spawn(async move {
        let mut recorder = Recorder::new(stats.clone());
        let mut reported = false;
        while let Some((scheduled, handle, permit)) = pending.recv().await {
            match handle.await {
                Ok(_) => recorder.record(size, scheduled.elapsed()),
                Err(e) => {
                    if !reported {
                        tracing::warn!(error = %e, "send failed");
                        reported = true;
                    }
                    stats.error();
                }
            }
            drop(permit);
        }
    });
    let window_permits = permits.clone();
    let pacer = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Handle::current();
        let mut sent = 0u64;
        while plan.count.is_none_or(|n| sent < n) {
            let scheduled = match plan.rate {
                Some(rate) => {
                    let at = plan.start + Duration::from_secs_f64(sent as f64 / rate);
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    at
                }
                None => Instant::now(),
            };
            if plan.until.is_some_and(|until| scheduled >= until) {
                break;
            }
            // Block (leaving this thread) only when the window is full.
            let permit = match permits.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => match runtime.block_on(permits.clone().acquire_owned()) {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let mut message = Message::new(plan.topic.clone(), body(scheduled));
            if let Some(keys) = plan.key_space {
                message = message.with_key(format!("k{}", sent % keys.max(1)));
            }
            // Blocking-pool threads are inside the runtime's context: this may spawn.
            let handle = producer.send_async(message);
            if acks.send((scheduled, handle, permit)).is_err() {
                break;
            }
            sent += 1;
            if plan
                .flush_every
                .is_some_and(|every| sent.is_multiple_of(every.max(1) as u64))
            {
                // Wait until the whole window is back, i.e. everything is acknowledged.
                let all = u32::try_from(window).unwrap_or(u32::MAX);
                drop(runtime.block_on(window_permits.acquire_many(all)));
            }
        }
        sent
    });
    tokio::spawn(async move {
        let sent = pacer.await.unwrap_or(0);
        let _ = collector.await;
        sent
    })
}
