//! `weir consume TOPIC --group G`: print messages as they come, commit, leave.
//! `weir consume TOPIC --queue Q --offset N`: print one queue's messages from an offset, with
//! no group (replay).

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;
use weir_client::consumer::ConsumerConfig;
use weir_client::{Admin, ConsumeMode, PullConsumer, StartFrom};

use super::consume_args::{ConsumeArgs, Mode, StartAt, StopRule, damaged_error};
use super::output::write_consumed;

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
