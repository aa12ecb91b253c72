//! One bench producer on the batch-level path (`--send-batch`): whole batches of
//! `--batch-size` messages handed to [`Producer::send_batch`], one call and one completion per
//! batch, each batch encoded straight into the entry that goes to the socket.
//!
//! The messages are built once and sent again and again, so the bench itself allocates
//! nothing per message. Pacing and the in-flight window work as in [`super::sender`], counted
//! in messages (the window shrinks and grows a batch at a time, never below one batch); a
//! batch's messages share its acknowledgement latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use weir_client::{BatchSendHandle, Message, Producer};

use super::sender::{Plan, adapt};
use super::stats::{Recorder, Stats};

/// A batch in flight: its scheduled send time, when it was sent, its handle, its message
/// count.
type InFlight = (Instant, Instant, BatchSendHandle, usize);

/// Starts a batch sender: each call sends a batch of messages carrying `bodies` (one message
/// per body); the handle ends once every batch is acknowledged (or failed), with how many
/// messages were sent.
pub fn start(
    producer: Producer,
    plan: Plan,
    bodies: Vec<Bytes>,
    stats: Arc<Stats>,
) -> JoinHandle<u64> {
    let batch = bodies.len().max(1);
    let window = plan.window.max(batch);
    let permits = Arc::new(Semaphore::new(window));
    let (acks, mut pending) = mpsc::unbounded_channel::<InFlight>();
    let size = plan.size as u64;
    let released = permits.clone();
    // Steps that wait for the whole window back need it to keep its size.
    let adaptive = plan.flush_every.is_none();
    let collector = tokio::spawn(async move {
        let mut recorder = Recorder::new(stats.clone());
        let mut reported = false;
        let mut current = window;
        while let Some((scheduled, sent_at, handle, count)) = pending.recv().await {
            match handle.await {
                Ok(_) => recorder.record_many(count as u64, size, scheduled.elapsed()),
                Err(e) => {
                    if !reported {
                        tracing::warn!(error = %e, "batch send failed");
                        reported = true;
                    }
                    for _ in 0..count {
                        stats.error();
                    }
                }
            }
            let give_back = if adaptive {
                let (give_back, next) = adapt(current, window, batch, count, sent_at.elapsed());
                current = next;
                give_back
            } else {
                count
            };
            released.add_permits(give_back);
        }
    });
    let messages: Vec<Message> = bodies
        .into_iter()
        .map(|body| Message::new(plan.topic.clone(), body))
        .collect();
    let pacer = tokio::task::spawn_blocking(move || {
        let runtime = tokio::runtime::Handle::current();
        let mut sent = 0u64;
        while plan.count.is_none_or(|n| sent < n) {
            let count = plan.count.map_or(batch, |n| batch.min((n - sent) as usize));
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
            let want = u32::try_from(count).unwrap_or(u32::MAX);
            match runtime.block_on(permits.acquire_many(want)) {
                Ok(permit) => permit.forget(),
                Err(_) => break,
            }
            // Blocking-pool threads are inside the runtime's context: this may spawn.
            let handle = producer.send_batch(&messages[..count]);
            if acks
                .send((scheduled, Instant::now(), handle, count))
                .is_err()
            {
                break;
            }
            sent += count as u64;
            if plan
                .flush_every
                .is_some_and(|every| sent.is_multiple_of(every.max(1) as u64))
            {
                // Wait until the whole window is back, i.e. everything is acknowledged.
                let all = u32::try_from(window).unwrap_or(u32::MAX);
                drop(runtime.block_on(permits.acquire_many(all)));
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
