//! `weir consume TOPIC --group G`: print messages as they come, commit, leave.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use tokio::time::Instant;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeMode, PullConsumer, StartFrom};

use super::ServerArgs;
use super::output::{Format, write_message};

/// Where to start when the group has no offset.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StartAt {
    /// The oldest stored message.
    Earliest,
    /// Only messages stored from now on.
    Latest,
}

/// How the group shares messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Each queue goes to one member of the group.
    Clustering,
    /// Every member gets every message.
    Broadcast,
    /// Any member takes any message; each printed message is acked on its own.
    Shared,
}

/// Consume messages from a topic as a member of a consumer group.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub(crate) server: ServerArgs,
    /// The topic.
    pub(crate) topic: String,
    /// The consumer group.
    #[arg(long, short = 'g')]
    pub(crate) group: String,
    /// Where to start when the group has no committed offset.
    #[arg(long, value_enum, default_value = "latest")]
    from: StartAt,
    /// Clustering (share the queues) or broadcast (every member gets everything).
    #[arg(long, value_enum, default_value = "clustering")]
    pub(crate) mode: Mode,
    /// Stop after exactly this many messages.
    #[arg(long, short = 'n')]
    pub(crate) count: Option<u64>,
    /// Stop after this long without a message (e.g. 5s, 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub(crate) idle_timeout: Option<Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: Format,
    /// Orderly: each queue strictly in order, one message at a time, only while this member
    /// holds the queue's lock (clustering mode).
    #[arg(long)]
    pub(crate) orderly: bool,
    /// Shared mode: how long a received message stays hidden from other members unless acked.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub(crate) invisible_time: Duration,
    /// Broker-side tag filter: `*` or `TagA || TagB`.
    #[arg(long, default_value = "*")]
    tag_filter: String,
}

/// Runs `weir consume`.
pub async fn run(args: ConsumeArgs) -> Result<()> {
    if args.mode == Mode::Shared {
        anyhow::ensure!(!args.orderly, "--orderly needs clustering mode");
        return super::consume_shared::run(&args).await;
    }
    let mut config = ConsumerConfig::new(
        args.server.servers(),
        args.group.clone(),
        args.topic.clone(),
    );
    config.start_from = match args.from {
        StartAt::Earliest => StartFrom::Earliest,
        StartAt::Latest => StartFrom::Latest,
    };
    config.mode = match args.mode {
        Mode::Clustering | Mode::Shared => ConsumeMode::Clustering,
        Mode::Broadcast => ConsumeMode::Broadcast,
    };
    config.tag_expression = args.tag_filter.clone();
    if let Some(count) = args.count {
        config.pull_batch = u32::try_from(count.clamp(1, 256)).unwrap_or(256);
    }
    if args.orderly {
        anyhow::ensure!(
            args.mode == Mode::Clustering,
            "--orderly needs clustering mode"
        );
        config.orderly = true;
        return super::consume_orderly::run(config, &args).await;
    }
    let mut consumer = PullConsumer::subscribe(config).await?;
    let printed = consume(&mut consumer, &args).await;
    // Commit and leave whatever happened while printing.
    let closed = consumer.close().await;
    printed?;
    closed?;
    Ok(())
}

async fn consume(consumer: &mut PullConsumer, args: &ConsumeArgs) -> Result<()> {
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    let mut last_message = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let remaining = args.count.map(|n| n - printed);
        if remaining == Some(0) {
            return Ok(());
        }
        let wait = match args.idle_timeout {
            Some(idle) => {
                let left = idle.saturating_sub(last_message.elapsed());
                if left.is_zero() {
                    return Ok(());
                }
                left.min(Duration::from_secs(1))
            }
            None => Duration::from_secs(1),
        };
        let max = remaining.map_or(usize::MAX, |r| usize::try_from(r).unwrap_or(usize::MAX));
        let messages = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            polled = consumer.poll_max(wait, max.min(1024)) => polled?,
        };
        if messages.is_empty() {
            continue;
        }
        last_message = Instant::now();
        let mut out = stdout.lock();
        for message in &messages {
            write_message(&mut out, message, args.format)?;
        }
        out.flush()?;
        printed += messages.len() as u64;
    }
}
