//! `weir bench consume`: read throughput of a consumer group.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use weir_client::consumer::ConsumerConfig;
use weir_client::{PullConsumer, StartFrom};

use super::stats::{Progress, Recorder, Stats};
use super::{Amount, Create, create_topic};

/// How long one poll waits before the stop conditions are checked again.
const POLL_WAIT: Duration = Duration::from_millis(200);
/// Most messages one poll takes.
const POLL_MAX: usize = 4096;

/// Consume a topic as a group and measure.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The topic.
    #[arg(long)]
    topic: String,
    /// The consumer group (starts from the earliest message when it has no offsets).
    #[arg(long, short = 'g')]
    group: String,
    #[command(flatten)]
    amount: Amount,
    #[command(flatten)]
    create: Create,
    /// Members of the group, each its own client.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Most messages per pull request.
    #[arg(long, default_value_t = 1024)]
    pull_batch: u32,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// Runs `weir bench consume`. Latency is each message's age at receipt (now minus its
/// producer-side birth time, millisecond resolution): for a backlog, how old it was.
pub async fn run(servers: Vec<String>, args: ConsumeArgs) -> Result<()> {
    if args.consumers == 0 {
        bail!("--consumers must be positive");
    }
    if args.create.create {
        create_topic(&servers, &args.topic, args.create.queues).await?;
    }
    let mut consumers = Vec::with_capacity(args.consumers);
    for _ in 0..args.consumers {
        let mut config = ConsumerConfig::new(servers.iter().cloned(), &args.group, &args.topic);
        config.start_from = StartFrom::Earliest;
        config.pull_batch = args.pull_batch.max(1);
        config.max_poll_messages = POLL_MAX;
        consumers.push(PullConsumer::subscribe(config).await?);
    }
    let stats = Stats::new();
    let progress = Progress::start("consume", stats.clone());
    let start = Instant::now();
    let until = args.amount.duration.map(|d| start + d);
    let remaining = Arc::new(AtomicU64::new(args.amount.messages.unwrap_or(u64::MAX)));
    let mut tasks = Vec::with_capacity(consumers.len());
    for mut consumer in consumers {
        let stats = stats.clone();
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let read = read(&mut consumer, &stats, &remaining, until).await;
            let closed = consumer.close().await;
            read.and(closed.map_err(anyhow::Error::from))
        }));
    }
    let mut failure = None;
    for task in tasks {
        if let Err(e) = task.await? {
            failure.get_or_insert(e);
        }
    }
    let elapsed = start.elapsed();
    progress.finish();
    stats.summary("consume", elapsed).print(args.json)?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Polls until `remaining` (shared by the group's members) reaches zero or time is up.
async fn read(
    consumer: &mut PullConsumer,
    stats: &Arc<Stats>,
    remaining: &AtomicU64,
    until: Option<Instant>,
) -> Result<()> {
    let mut recorder = Recorder::new(stats.clone());
    loop {
        if until.is_some_and(|u| Instant::now() >= u) {
            return Ok(());
        }
        if remaining.load(Ordering::Acquire) == 0 {
            return Ok(());
        }
        let messages = consumer.poll_max(POLL_WAIT, POLL_MAX).await?;
        // Count only up to what is left, so the members together stop exactly at N (the few
        // extra messages a last poll may bring are not counted).
        let counted = remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                Some(left - left.min(messages.len() as u64))
            })
            .map_or(0, |left| left.min(messages.len() as u64)) as usize;
        let now_ms = weir_now_ms();
        for message in &messages[..counted] {
            let age_ms = u64::try_from(now_ms - message.born_timestamp).unwrap_or(0);
            recorder.record(message.body.len() as u64, Duration::from_millis(age_ms));
        }
    }
}

/// Milliseconds since the Unix epoch.
fn weir_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
