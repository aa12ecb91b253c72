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

/// Messages handed from the pacer to the collector at once: one channel message and one
/// window release per chunk, not per message.
const CHUNK: usize = 256;

/// Sent messages in send order: scheduled send time and the handle to await.
type Chunk = Vec<(Instant, SendHandle)>;

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
    // Window slots: the pacer takes one per message (and forgets it), the collector gives a
    // chunk's worth back once the chunk is acknowledged.
    let permits = Arc::new(Semaphore::new(window));
    let (acks, mut pending) = mpsc::unbounded_channel::<Chunk>();
    let size = plan.size as u64;
    let released = permits.clone();
    let collector = tokio::spawn(async move {
        let mut recorder = Recorder::new(stats.clone());
        let mut reported = false;
        while let Some(chunk) = pending.recv().await {
            let count = chunk.len();
            for (scheduled, handle) in chunk {
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
            }
            released.add_permits(count);
        }
    });
    let pacer = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Handle::current();
        let mut chunk: Chunk = Vec::with_capacity(CHUNK);
        // Hands the chunk to the collector; false once the collector is gone.
        let hand_over = |chunk: &mut Chunk| {
            chunk.is_empty()
                || acks
                    .send(std::mem::replace(chunk, Vec::with_capacity(CHUNK)))
                    .is_ok()
        };
        let mut sent = 0u64;
        while plan.count.is_none_or(|n| sent < n) {
            let scheduled = match plan.rate {
                Some(rate) => {
                    let at = plan.start + Duration::from_secs_f64(sent as f64 / rate);
                    let now = Instant::now();
                    if at > now {
                        // Nothing may wait in the chunk while this thread sleeps.
                        if !hand_over(&mut chunk) {
                            break;
                        }
                        std::thread::sleep(at - now);
                    }
                    at
                }
                None => Instant::now(),
            };
            if plan.until.is_some_and(|until| scheduled >= until) {
                break;
            }
            match permits.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(_) => {
                    // The window is full: hand over what is pending, then wait for room.
                    if !hand_over(&mut chunk) {
                        break;
                    }
                    match runtime.block_on(permits.acquire()) {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
            }
            let mut message = Message::new(plan.topic.clone(), body(scheduled));
            if let Some(keys) = plan.key_space {
                message = message.with_key(format!("k{}", sent % keys.max(1)));
            }
            // Blocking-pool threads are inside the runtime's context: this may spawn.
            chunk.push((scheduled, producer.send_async(message)));
            sent += 1;
            if chunk.len() >= CHUNK && !hand_over(&mut chunk) {
                break;
            }
            if plan
                .flush_every
                .is_some_and(|every| sent.is_multiple_of(every.max(1) as u64))
            {
                // Wait until the whole window is back, i.e. everything is acknowledged.
                if !hand_over(&mut chunk) {
                    break;
                }
                let all = u32::try_from(window).unwrap_or(u32::MAX);
                drop(runtime.block_on(permits.acquire_many(all)));
            }
        }
        hand_over(&mut chunk);
        sent
    });
    tokio::spawn(async move {
        let sent = pacer.await.unwrap_or(0);
        let _ = collector.await;
        sent
    })
}
