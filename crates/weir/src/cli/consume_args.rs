//! What `weir consume` is asked for (its arguments) and when a run stops, shared by the
//! group, orderly and shared consume loops.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, ValueEnum};
use tokio::time::Instant;

use super::ServerArgs;
use super::output::Format;

/// Where to start when the group has no offset.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum StartAt {
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
    pub(crate) offset: Option<u64>,
    /// The queue to replay (with --offset).
    #[arg(long, requires = "offset")]
    pub(crate) queue: Option<u32>,
    /// Where to start when the group has no committed offset.
    #[arg(long, value_enum, default_value = "latest")]
    pub(crate) from: StartAt,
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
    pub(crate) tag_filter: String,
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
