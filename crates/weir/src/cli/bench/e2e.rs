//! `weir bench e2e`: one open-loop producer and one consumer; latency from each message's
//! scheduled send time to its receipt.
//!
//! Body layout (little-endian), the rest zero:
//!
//! ```text
//! 0        8        16          size
//! +--------+--------+-- ... ----+
//! | sched  | run id | padding   |
//! +--------+--------+-- ... ----+
//! sched: scheduled send time, ns since the run's start (one process, one clock)
//! run id: random per run; messages of other runs are skipped
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Args;
use weir_client::consumer::ConsumerConfig;
use weir_client::{Message, Producer, ProducerConfig, PullConsumer, StartFrom};

use super::create_topic;
use super::sender::{self, Plan};
use super::stats::{Progress, Recorder, Stats};

/// Smallest body: the scheduled time and the run id.
const HEADER: usize = 16;
/// How long the consumer waits for stragglers after the producer is done.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the consumer to be given its queues.
const ASSIGN_TIMEOUT: Duration = Duration::from_secs(10);

/// Produce at a fixed rate and consume at once.
#[derive(Debug, Args)]
pub struct E2eArgs {
    /// The topic (created if missing).
    #[arg(long, default_value = "bench-e2e")]
    topic: String,
    /// Queues of the topic if it is created.
    #[arg(long, default_value_t = 8)]
    queues: u32,
    /// Body size in bytes (at least 16).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages per second.
    #[arg(long)]
    rate: f64,
    /// How long to produce (e.g. 10s).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long a producer batch may wait for more messages, in ms.
    #[arg(long, default_value_t = 0)]
    linger: u64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `weir bench e2e`.
pub async fn run(servers: Vec<String>, args: E2eArgs) -> Result<()> {
    if args.size < HEADER {
        bail!("--size must be at least {HEADER} for the timestamp and run id");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number");
    }
    create_topic(&servers, &args.topic, args.queues).await?;
    let run_id: u64 = rand::random();

    let mut config = ConsumerConfig::new(
        servers.iter().cloned(),
        format!("bench-e2e-{run_id:016x}"),
        &args.topic,
    );
    config.start_from = StartFrom::Latest;
    config.pull_batch = 256;
    config.max_poll_messages = 4096;
    let mut consumer = PullConsumer::subscribe(config).await?;
    let assigned_by = Instant::now() + ASSIGN_TIMEOUT;
    while consumer.assigned().is_empty() {
        if Instant::now() >= assigned_by {
            bail!("the consumer was given no queues within {ASSIGN_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut producer_config = ProducerConfig::new(servers.iter().cloned());
    producer_config.linger = Duration::from_millis(args.linger);
    let producer = Producer::new(producer_config)?;
    producer.route(&args.topic).await?;
    // Warm-up, outside the figures: the first sends open the producer's connection and each
    // queue's first consume-queue file. The receiver skips these (another run id).
    let mut warm_up = BytesMut::with_capacity(args.size);
    warm_up.put_u64_le(0);
    warm_up.put_u64_le(!run_id);
    warm_up.resize(args.size, 0);
    let warm_up = warm_up.freeze();
    for _ in 0..args.queues {
        producer
            .send(Message::new(args.topic.clone(), warm_up.clone()))
            .await?;
    }

    let stats = Stats::new();
    let acks = Stats::new();
    let progress = Progress::start("e2e", stats.clone());
    let start = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let sending_done = Arc::new(AtomicBool::new(false));
    let size = args.size;
    let body = move |scheduled: Instant| {
        let mut body = BytesMut::with_capacity(size);
        let ns = u64::try_from(scheduled.duration_since(start).as_nanos()).unwrap_or(u64::MAX);
        body.put_u64_le(ns);
        body.put_u64_le(run_id);
        body.resize(size, 0);
        body.freeze()
    };
    let plan = Plan {
        topic: args.topic.clone(),
        size,
        count: None,
        until: Some(start + args.duration),
        rate: Some(args.rate),
        window: usize::MAX >> 4,
        flush_every: None,
        key_space: None,
        start,
    };
    let sender = sender::start(producer.clone(), plan, Box::new(body), acks.clone());
    let producing = {
        let sent = sent.clone();
        let done = sending_done.clone();
        tokio::spawn(async move {
            let count = sender.await.unwrap_or(0);
            sent.store(count, Ordering::Release);
            done.store(true, Ordering::Release);
        })
    };

    let received = receive(&mut consumer, &stats, start, run_id, &sent, &sending_done).await;
    producing.await?;
    let elapsed = start.elapsed();
    progress.finish();
    producer.close().await;
    let closed = consumer.close().await;
    stats.summary("e2e", elapsed).print(args.json)?;
    received?;
    closed?;
    let sent = sent.load(Ordering::Acquire);
    if acks.errors() > 0 {
        bail!("{} of {sent} sends failed", acks.errors());
    }
    if stats.messages() != sent {
        bail!("received {} of {sent} messages", stats.messages());
    }
    Ok(())
}

/// Receives this run's messages until all that were sent are in, or [`DRAIN_TIMEOUT`] after
/// sending ended.
async fn receive(
    consumer: &mut PullConsumer,
    stats: &Arc<Stats>,
    start: Instant,
    run_id: u64,
    sent: &AtomicU64,
    sending_done: &AtomicBool,
) -> Result<()> {
    let mut recorder = Recorder::new(stats.clone());
    let mut received = 0u64;
    let mut done_at: Option<Instant> = None;
    loop {
        if sending_done.load(Ordering::Acquire) {
            if received >= sent.load(Ordering::Acquire) {
                return Ok(());
            }
            let at = *done_at.get_or_insert_with(Instant::now);
            if at.elapsed() >= DRAIN_TIMEOUT {
                return Ok(());
            }
        }
        let messages = consumer.poll_max(Duration::from_millis(50), 4096).await?;
        let now = start.elapsed();
        for message in &messages {
            let body = &message.body;
            let (Some(sched), Some(id)) = (le_u64(body, 0), le_u64(body, 8)) else {
                continue;
            };
            if id != run_id {
                continue;
            }
            received += 1;
            recorder.record(
                body.len() as u64,
                now.saturating_sub(Duration::from_nanos(sched)),
            );
        }
    }
}

/// The little-endian u64 at `at` in `bytes`, if there is one.
fn le_u64(bytes: &Bytes, at: usize) -> Option<u64> {
    let raw = bytes.get(at..at + 8)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}
