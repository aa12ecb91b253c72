//! `weir consume TOPIC --group G`: print messages as they come, commit, leave.
//! `weir consume TOPIC --queue Q --offset N`: print one queue's messages from an offset, with
//! no group (replay).

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use tokio::time::Instant;
use weir_client::consumer::ConsumerConfig;
use weir_client::{Admin, ConsumeMode, PullConsumer, StartFrom};

use super::ServerArgs;
use super::output::{Format, write_consumed};

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
    /// The consumer group (not needed with --offset).
    #[arg(long, short = 'g', required_unless_present = "offset")]
    pub(crate) group: Option<String>,
    /// Replay: read queue --queue from this offset, outside any group (nothing committed).
    #[arg(long, requires = "queue", conflicts_with = "group")]
    offset: Option<u64>,
    /// The queue to replay (with --offset).
    #[arg(long, requires = "offset")]
    queue: Option<u32>,
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
    let (Some(group), None) = (&args.group, args.offset) else {
        return replay(&args).await;
    };
    if args.mode == Mode::Shared {
        anyhow::ensure!(!args.orderly, "--orderly needs clustering mode");
        return super::consume_shared::run(&args, group).await;
    }
    let mut config = ConsumerConfig::new(args.server.servers(), group.clone(), args.topic.clone());
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
    let damaged = consumer.damaged_skipped();
    // Commit and leave whatever happened while printing.
    let closed = consumer.close().await;
    printed?;
    closed?;
    damaged_error(damaged)
}

/// The error a run ends with when the broker skipped damaged messages: everything else was
/// printed (and committed), but the user must learn that some messages cannot be delivered.
pub(crate) fn damaged_error(damaged: u64) -> Result<()> {
    anyhow::ensure!(
        damaged == 0,
        "{damaged} message(s) were skipped because they are damaged on the broker's disk \
         (listed by `weir damaged`)"
    );
    Ok(())
}

/// Prints queue `--queue` from `--offset` on (every message: the tag filter applies to group
/// consumption), until `--count` messages or the queue's end (waiting `--idle-timeout` there
/// for more, default: not at all).
async fn replay(args: &ConsumeArgs) -> Result<()> {
    let (Some(queue), Some(mut offset)) = (args.queue, args.offset) else {
        anyhow::bail!("--offset and --queue go together");
    };
    let admin = Admin::new(args.server.servers())?;
    let stdout = std::io::stdout();
    let mut printed = 0u64;
    let mut damaged = 0u64;
    let mut last_message = Instant::now();
    loop {
        let remaining = args.count.map_or(u64::MAX, |n| n - printed);
        if remaining == 0 {
            return damaged_error(damaged);
        }
        let page = admin
            .pull(
                &args.topic,
                queue,
                offset,
                u32::try_from(remaining.min(256)).unwrap_or(256),
            )
            .await?;
        offset = page.next_offset.max(offset);
        for range in &page.skipped {
            eprintln!(
                "warning: offsets {}..{} of {}:{queue} skipped: damaged on the broker's disk ({})",
                range.from, range.to, args.topic, range.reason
            );
            damaged += range.len();
        }
        let mut out = stdout.lock();
        for message in &page.messages {
            if printed == args.count.unwrap_or(u64::MAX) {
                break;
            }
            write_consumed(&mut out, message, args.format)?;
            printed += 1;
        }
        out.flush()?;
        drop(out);
        if page.messages.is_empty() {
            let idle = args.idle_timeout.unwrap_or_default();
            if offset >= page.max_offset && last_message.elapsed() >= idle {
                return damaged_error(damaged);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            last_message = Instant::now();
        }
    }
}

/// When a `weir consume` run stops: after `--count` messages, or after `--idle-timeout`
/// without one.
pub(crate) struct StopRule {
    count: Option<u64>,
    idle_timeout: Option<Duration>,
    printed: u64,
    last_message: Instant,
}

impl StopRule {
    /// The rule for `args`, starting now.
    pub(crate) fn new(args: &ConsumeArgs) -> StopRule {
        StopRule {
            count: args.count,
            idle_timeout: args.idle_timeout,
            printed: 0,
            last_message: Instant::now(),
        }
    }

    /// Messages still wanted (`u64::MAX` without `--count`).
    pub(crate) fn remaining(&self) -> u64 {
        self.count.map_or(u64::MAX, |n| n - self.printed)
    }

    /// How long to wait for the next message before the idle timeout (`None`: no timeout).
    pub(crate) fn idle_left(&self) -> Option<Duration> {
        self.idle_timeout
            .map(|idle| idle.saturating_sub(self.last_message.elapsed()))
    }

    /// Whether the run is over.
    pub(crate) fn done(&self) -> bool {
        self.remaining() == 0 || self.idle_left().is_some_and(|left| left.is_zero())
    }

    /// Counts `n` more printed messages.
    pub(crate) fn printed(&mut self, n: u64) {
        self.printed += n;
        self.last_message = Instant::now();
    }
}

async fn consume(consumer: &mut PullConsumer, args: &ConsumeArgs) -> Result<()> {
    let stdout = std::io::stdout();
    let mut stop = StopRule::new(args);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while !stop.done() {
        let wait = stop.idle_left().map_or(Duration::from_secs(1), |left| {
            left.min(Duration::from_secs(1))
        });
        let max = usize::try_from(stop.remaining().min(1024)).unwrap_or(1024);
        let messages = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            polled = consumer.poll_max(wait, max) => polled?,
        };
        if messages.is_empty() {
            continue;
        }
        let mut out = stdout.lock();
        for message in &messages {
            write_consumed(&mut out, message, args.format)?;
        }
        out.flush()?;
        stop.printed(messages.len() as u64);
    }
    Ok(())
}
