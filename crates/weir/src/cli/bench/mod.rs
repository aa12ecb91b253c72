//! `weir bench`: load generator and latency meter on the client crate.
//!
//! * `weir bench produce` — `--producers` producers send `--size`-byte messages, as fast as
//!   the in-flight window allows (closed loop) or at `--rate` messages per second (open
//!   loop: latency counts from each message's *scheduled* send time, so a stalled broker
//!   cannot hide its latency by slowing the sender down).
//! * `weir bench consume` — `--consumers` members of one group read the topic.
//! * `weir bench e2e` — one open-loop producer and one consumer: latency from scheduled send
//!   to receipt, carried in the message body.
//!
//! Every mode ends with a summary (messages, bytes, elapsed, msgs/s, MB/s, latency
//! p50/p90/p99/p99.9/max from an HDR histogram), one JSON object with `--json`; a live
//! progress line is drawn only when stdout is a terminal.

mod batch_sender;
mod bodies;
mod consume;
mod e2e;
mod produce;
mod sender;
mod stats;

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use weir_client::{Admin, ClientError, ErrorCode};

use super::ServerArgs;

/// Load-test a server and measure throughput and latency.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Produce messages and measure send throughput and acknowledgement latency.
    Produce(produce::ProduceArgs),
    /// Consume a topic as a group and measure read throughput.
    Consume(consume::ConsumeArgs),
    /// Produce at a fixed rate and consume at once: end-to-end latency.
    E2e(e2e::E2eArgs),
}

/// How long a run lasts: a number of messages or a wall time.
#[derive(Debug, Clone, Copy, Args)]
#[group(required = true, multiple = false)]
struct Amount {
    /// Stop after this many messages in total.
    #[arg(long, short = 'n')]
    messages: Option<u64>,
    /// Stop after this long (e.g. 10s, 1m).
    #[arg(long, short = 'd', value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
}

/// Creating the topic before the run.
#[derive(Debug, Clone, Copy, Args)]
struct Create {
    /// Create the topic first (an existing topic is fine).
    #[arg(long)]
    create: bool,
    /// Queues of a topic created with --create.
    #[arg(long, default_value_t = 8)]
    queues: u32,
}

/// Runs `weir bench`.
pub async fn run(args: BenchArgs) -> Result<()> {
    let servers = args.server.servers();
    match args.command {
        BenchCommand::Produce(a) => produce::run(servers, a).await,
        BenchCommand::Consume(a) => consume::run(servers, a).await,
        BenchCommand::E2e(a) => e2e::run(servers, a).await,
    }
}

/// Creates `topic` with `queues` queues unless it exists.
async fn create_topic(servers: &[String], topic: &str, queues: u32) -> Result<()> {
    let admin = Admin::new(servers.iter().cloned())?;
    match admin.create_topic(topic, queues).await {
        Ok(_) => Ok(()),
        Err(ClientError::Server {
            code: ErrorCode::TopicAlreadyExists,
            ..
        }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
