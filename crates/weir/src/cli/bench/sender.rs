//! One bench producer: a pacing thread that hands messages to the [`Producer`] on schedule,
//! and a task that awaits their acknowledgements in send order and records the latencies.
//!
//! The pacing runs on a blocking thread (not a Tokio timer, whose 1 ms granularity would add
//! up to 1 ms to every open-loop latency); sending never waits for acknowledgements except
//! through the in-flight window, so with `--rate` a slow broker shows up as latency, not as a
//! lower send rate.
//!
//! The window follows acknowledgement latency (AIMD): `--window` is its most; it shrinks by a
//! quarter while chunks take over [`SHRINK_ABOVE`] to be acknowledged (a broker whose disk
//! cannot keep up gains nothing from more messages waiting, and their acknowledgements would
//! drift towards the producer's timeouts) and grows back a chunk at a time once they take
//! under [`GROW_BELOW`]. `--flush-wait` keeps it fixed.

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

/// A window whose chunk took longer than this to be acknowledged (from its hand-over to its
/// last acknowledgement) shrinks by a quarter: messages beyond what the broker can take only
/// wait in queues and push acknowledgements towards the producer's timeouts.
const SHRINK_ABOVE: Duration = Duration::from_millis(1000);
/// A window whose chunk was acknowledged faster than this grows back by a chunk, up to
/// `--window`.
const GROW_BELOW: Duration = Duration::from_millis(250);

/// The window after `count` messages sent together were acknowledged in `latency`: how many
/// permits to give back, and the window's new size (between one `step` — what is sent at
/// once — and `max`).
pub(super) fn adapt(
    current: usize,
    max: usize,
    step: usize,
    count: usize,
    latency: Duration,
) -> (usize, usize) {
    let floor = step.min(max);
    if latency > SHRINK_ABOVE && current > floor {
        let shrink = (current / 4).min(current - floor).min(count);
        (count - shrink, current - shrink)
    } else if latency < GROW_BELOW && current < max {
        let grow = step.min(max - current);
        (count + grow, current + grow)
    } else {
        (count, current)
    }
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
    // Window slots: the pacer takes one per message (and forgets it), the collector gives a
    // chunk's worth back once the chunk is acknowledged.
    let permits = Arc::new(Semaphore::new(window));
    // Each chunk with the time it was handed over.
    let (acks, mut pending) = mpsc::unbounded_channel::<(Instant, Chunk)>();
    // Steps that wait for the whole window back need it to keep its size.
    let adaptive = plan.flush_every.is_none();
    let size = plan.size as u64;
    let released = permits.clone();
    let collector = tokio::spawn(async move {
        let mut recorder = Recorder::new(stats.clone());
        let mut reported = false;
        let mut current = window;
        while let Some((handed, chunk)) = pending.recv().await {
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
            let give_back = if adaptive {
                let (give_back, next) = adapt(current, window, CHUNK, count, handed.elapsed());
                if next != current {
                    tracing::debug!(
                        window = next,
                        "in-flight window follows acknowledgement latency"
                    );
                }
                current = next;
                give_back
            } else {
                count
            };
            released.add_permits(give_back);
        }
    });
    let pacer = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Handle::current();
        let mut chunk: Chunk = Vec::with_capacity(CHUNK);
        // Hands the chunk to the collector; false once the collector is gone.
        let hand_over = |chunk: &mut Chunk| {
            chunk.is_empty()
                || acks
                    .send((
                        Instant::now(),
                        std::mem::replace(chunk, Vec::with_capacity(CHUNK)),
                    ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_shrinks_with_slow_acknowledgements_and_grows_back() {
        let max = 16_384;
        let slow = Duration::from_secs(2);
        let fast = Duration::from_millis(5);
        let mut current = max;
        for _ in 0..100 {
            let (give_back, next) = adapt(current, max, CHUNK, CHUNK, slow);
            assert_eq!(give_back, CHUNK - (current - next));
            current = next;
        }
        assert_eq!(current, CHUNK, "down to one chunk, never below");
        assert_eq!(
            adapt(current, max, CHUNK, CHUNK, Duration::from_millis(500)),
            (CHUNK, current)
        );
        for _ in 0..100 {
            let (give_back, next) = adapt(current, max, CHUNK, CHUNK, fast);
            assert_eq!(give_back, CHUNK + (next - current));
            current = next;
        }
        assert_eq!(current, max, "back to --window, never above");
        assert_eq!(
            adapt(100, 100, CHUNK, 100, slow),
            (100, 100),
            "a window under a chunk stays"
        );
    }
}
