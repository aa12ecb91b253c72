//! `weir bench produce`: send throughput and acknowledgement latency.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Args;
use weir_client::{Compression, Producer, ProducerConfig};

use super::batch_sender;
use super::bodies::{self, BodyKind};
use super::sender::{self, Plan};
use super::stats::{Progress, Stats};
use super::{Amount, Create, create_topic};

/// Produce messages and measure.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// The topic.
    #[arg(long)]
    topic: String,
    #[command(flatten)]
    amount: Amount,
    #[command(flatten)]
    create: Create,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// What bodies hold: `x` repeated, or varied JSON log lines (for --compression figures).
    #[arg(long, value_enum, default_value_t = BodyKind::X)]
    body: BodyKind,
    /// Concurrent producers (each its own client, connections and batches).
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Most messages per produce request.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// How long a batch may wait for more messages, in ms.
    #[arg(long, default_value_t = 5)]
    linger: u64,
    /// Total messages per second over all producers (open loop); default: as fast as
    /// possible.
    #[arg(long)]
    rate: Option<f64>,
    /// Give messages keys `k0`..`k{K-1}` in turn (key-hash queue choice, key index).
    #[arg(long)]
    key_space: Option<u64>,
    /// Most messages per producer sent and not yet acknowledged.
    #[arg(long, default_value_t = 16_384)]
    window: usize,
    /// Closed loop in steps: send --batch-size messages, wait until all are acknowledged,
    /// repeat (with --batch-size 1: one synchronous send at a time).
    #[arg(long)]
    flush_wait: bool,
    /// Idempotent producers: a resent batch is stored once.
    #[arg(long)]
    idempotent: bool,
    /// Compress each batch: none, gzip, snappy, lz4 or zstd.
    #[arg(long, default_value_t = Compression::None)]
    compression: Compression,
    /// Send whole batches of --batch-size messages with one call and one completion each
    /// (`Producer::send_batch`) instead of one `send_async` per message.
    #[arg(long, conflicts_with = "key_space")]
    send_batch: bool,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

/// How long after the last scheduled send the run waits for acknowledgements, beyond the
/// producers' delivery timeout, before it gives up and says so.
const DRAIN_GRACE: Duration = Duration::from_secs(30);

/// Runs `weir bench produce`.
pub async fn run(servers: Vec<String>, args: ProduceArgs) -> Result<()> {
    if args.producers == 0 || args.batch_size == 0 {
        bail!("--producers and --batch-size must be positive");
    }
    if args.rate.is_some_and(|r| r <= 0.0 || !r.is_finite()) {
        bail!("--rate must be a positive number");
    }
    if args.create.create {
        create_topic(&servers, &args.topic, args.create.queues).await?;
    }
    let mut producers = Vec::with_capacity(args.producers);
    for _ in 0..args.producers {
        let mut config = ProducerConfig::new(servers.iter().cloned());
        config.batch_max_messages = args.batch_size;
        config.batch_max_bytes = config
            .batch_max_bytes
            .max(args.batch_size * (args.size + 128));
        config.linger = Duration::from_millis(args.linger);
        config.idempotent = args.idempotent;
        config.compression = args.compression;
        let producer = Producer::new(config)?;
        // Learn the route before the clock starts.
        producer.route(&args.topic).await?;
        producers.push(producer);
    }
    let stats = Stats::new();
    let progress = Progress::start("produce", stats.clone());
    let start = Instant::now();
    let n = args.producers as u64;
    let mut senders = Vec::with_capacity(args.producers);
    for (i, producer) in producers.iter().enumerate() {
        let count = args
            .amount
            .messages
            .map(|total| total / n + u64::from((i as u64) < total % n));
        let plan = Plan {
            topic: args.topic.clone(),
            size: args.size,
            count,
            until: args.amount.duration.map(|d| start + d),
            rate: args.rate.map(|r| r / n as f64),
            window: if args.flush_wait {
                args.batch_size
            } else {
                args.window
            },
            flush_every: args.flush_wait.then_some(args.batch_size),
            key_space: args.key_space,
            start,
        };
        let (kind, size) = (args.body, args.size);
        senders.push(if args.send_batch {
            let bodies = (0..args.batch_size as u64)
                .map(|n| bodies::body(kind, n, size))
                .collect();
            batch_sender::start(producer.clone(), plan, bodies, stats.clone())
        } else {
            let fixed = bodies::body(kind, 0, size);
            let mut n = 0u64;
            let next: sender::BodyFn = match kind {
                BodyKind::X => Box::new(move |_| fixed.clone()),
                BodyKind::Json => Box::new(move |_| {
                    n += 1;
                    bodies::body(kind, n, size)
                }),
            };
            sender::start(producer.clone(), plan, next, stats.clone())
        });
    }
    // Every send ends within the delivery timeout (so a run of --messages ends too); a run
    // of --duration is also bounded here, in case one does not.
    let delivery_timeout = ProducerConfig::new(servers.iter().cloned()).delivery_timeout;
    let drain = args
        .amount
        .duration
        .map(|d| tokio::time::Instant::from(start + d + delivery_timeout + DRAIN_GRACE));
    let mut stuck = 0;
    for sender in senders {
        let joined = match drain {
            Some(at) => tokio::time::timeout_at(at, sender).await,
            None => Ok(sender.await),
        };
        match joined {
            Ok(joined) => {
                joined?;
            }
            Err(_) => stuck += 1,
        }
    }
    let elapsed = start.elapsed();
    progress.finish();
    let mut resent = 0;
    let mut wire_bytes = 0;
    for producer in producers {
        resent += producer.resent_maybe_stored();
        wire_bytes += producer.sent_bytes();
        if tokio::time::timeout(delivery_timeout, producer.close())
            .await
            .is_err()
        {
            stuck += 1;
        }
    }
    let mut summary = stats.summary("produce", elapsed);
    summary.resent_maybe_stored = resent;
    summary.wire_bytes = wire_bytes;
    summary.print(args.json)?;
    if stuck > 0 {
        bail!(
            "{stuck} producers still had unacknowledged messages {:?} after the run; giving up",
            delivery_timeout + DRAIN_GRACE
        );
    }
    if stats.errors() > 0 {
        bail!("{} sends failed", stats.errors());
    }
    Ok(())
}
