//! `weir produce TOPIC`: send one message (`--body`) or one message per stdin line; with
//! `--transaction`, one message in a transaction ([`super::txn_cmd`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, BufReader};
use weir_client::{Compression, Message, Producer, ProducerConfig, SendHandle};

use super::ServerArgs;
use super::txn_cmd::{self, Decide};

/// Most sends in flight at once while streaming stdin.
const MAX_IN_FLIGHT: usize = 20_000;

/// Send messages to a topic.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The topic.
    topic: String,
    /// Message key (indexed; messages with one key go to one queue, in order).
    #[arg(long, short = 'k')]
    key: Option<String>,
    /// Message tag (for consumers' tag filters).
    #[arg(long, short = 't')]
    tag: Option<String>,
    /// A property, NAME=VALUE; repeatable.
    #[arg(long = "property", short = 'p', value_parser = parse_property)]
    properties: Vec<(String, String)>,
    /// The body of one message; without it, each line of stdin is one message.
    #[arg(long, short = 'b')]
    body: Option<String>,
    /// Print each message's id to stdout, in input order (always done with --body).
    #[arg(long)]
    print_ids: bool,
    /// Deliver the message(s) this long after sending (e.g. 30s, 5m, 2days).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with_all = ["deliver_at", "delay_level"])]
    delay: Option<Duration>,
    /// Deliver the message(s) at this time (RFC 3339, e.g. 2030-01-01T08:00:00Z).
    #[arg(long, value_parser = humantime::parse_rfc3339_weak, conflicts_with = "delay_level")]
    deliver_at: Option<SystemTime>,
    /// Deliver after one of RocketMQ's delay levels, 1 (1s) to 18 (2h).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=18))]
    delay_level: Option<u8>,
    /// Compress each batch: none, gzip, snappy, lz4 or zstd (the broker stores it as sent;
    /// consumers decompress).
    #[arg(long, default_value_t = Compression::None)]
    compression: Compression,
    /// Send the --body message in a transaction of producer group --group: stored invisible
    /// first, then decided as --decide says. Prints one JSON line per step.
    #[arg(
        long,
        requires_all = ["group", "body"],
        conflicts_with_all = ["delay", "deliver_at", "delay_level", "print_ids"]
    )]
    transaction: bool,
    /// The producer group of the transaction (the broker asks its members about it).
    #[arg(long, short = 'g', requires = "transaction")]
    group: Option<String>,
    /// How the transaction ends: commit (default), rollback, unknown (exit undecided: the
    /// broker checks back with the group) or never (stay connected undecided until killed).
    #[arg(long, value_enum, requires = "transaction")]
    decide: Option<Decide>,
    /// Most messages per batch (one batch is one stored entry, checked by one CRC: a damaged
    /// byte on disk costs its whole batch).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    batch_messages: u32,
}

fn parse_property(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))
}

impl ProduceArgs {
    fn message(&self, body: String) -> Result<Message> {
        let mut message = Message::new(self.topic.clone(), body);
        if let Some(delay) = self.delay {
            message = message.with_delay(delay);
        }
        if let Some(at) = self.deliver_at {
            message = message.with_deliver_at(at);
        }
        if let Some(level) = self.delay_level {
            message = message.with_delay_level(level)?;
        }
        if let Some(key) = &self.key {
            message = message.with_key(key.clone());
        }
        if let Some(tag) = &self.tag {
            message = message.with_tag(tag.clone());
        }
        for (k, v) in &self.properties {
            message = message.with_property(k.clone(), v.clone());
        }
        Ok(message)
    }
}

/// Runs `weir produce`.
pub async fn run(args: ProduceArgs) -> Result<()> {
    if let (true, Some(group), Some(body)) = (args.transaction, &args.group, &args.body) {
        let message = args.message(body.clone())?;
        let decide = args.decide.unwrap_or(Decide::Commit);
        return txn_cmd::produce(
            args.server.servers(),
            group.clone(),
            message,
            decide,
            args.compression,
        )
        .await;
    }
    let mut config = ProducerConfig::new(args.server.servers()).with_compression(args.compression);
    config.batch_max_messages = args.batch_messages as usize;
    let producer = Producer::new(config)?;
    // Learn the route first: a missing topic fails here, and stdin lines keep their order.
    producer.route(&args.topic).await?;
    let started = Instant::now();
    let mut sent = 0u64;
    if let Some(body) = &args.body {
        let result = producer.send(args.message(body.clone())?).await?;
        println!("{}", result.message_id);
        sent = 1;
    } else {
        let mut in_flight: VecDeque<SendHandle> = VecDeque::new();
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await.context("reading stdin")? {
            in_flight.push_back(producer.send_async(args.message(line)?));
            if in_flight.len() >= MAX_IN_FLIGHT
                && let Some(oldest) = in_flight.pop_front()
            {
                acknowledge(oldest, args.print_ids).await?;
                sent += 1;
            }
        }
        while let Some(handle) = in_flight.pop_front() {
            acknowledge(handle, args.print_ids).await?;
            sent += 1;
        }
    }
    let resent = producer.resent_maybe_stored();
    producer.close().await;
    eprintln!(
        "sent {sent} messages to {} in {} ms",
        args.topic,
        started.elapsed().as_millis()
    );
    if resent > 0 {
        eprintln!(
            "warning: {resent} messages were resent after an attempt that may have stored them; they may be stored twice"
        );
    }
    Ok(())
}

async fn acknowledge(handle: SendHandle, print_id: bool) -> Result<()> {
    match handle.await {
        Ok(result) => {
            if print_id {
                println!("{}", result.message_id);
            }
            Ok(())
        }
        Err(e) => bail!(e),
    }
}
