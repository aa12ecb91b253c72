//! `weir consume TOPIC --group G --orderly`: an orderly push consumer that prints each message
//! as its handler, so the output of each queue is in queue order.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Result;
use tokio::time::Instant;
use weir_client::consumer::ConsumerConfig;
use weir_client::{ConsumeResult, PushConsumer};

use super::consume_args::{ConsumeArgs, damaged_error};
use super::output::write_consumed;

/// How often the stop conditions (count, idle timeout) are looked at.
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// Consumes with an orderly push consumer until the count, the idle timeout or Ctrl-C.
pub async fn run(config: ConsumerConfig, args: &ConsumeArgs) -> Result<()> {
    let printed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // Milliseconds from `started` to the last message printed.
    let last_message = Arc::new(AtomicU64::new(0));
    let format = args.format;
    let limit = args.count;
    let consumer = {
        let printed = printed.clone();
        let last_message = last_message.clone();
        PushConsumer::start(config, move |message| {
            // Past the count, leave the rest to other members (not processed, not committed).
            if limit.is_some_and(|n| printed.load(Ordering::Acquire) >= n) {
                return ConsumeResult::Retry;
            }
            let mut out = std::io::stdout().lock();
            if write_consumed(&mut out, message, format)
                .and_then(|()| out.flush())
                .is_err()
            {
                return ConsumeResult::Retry;
            }
            printed.fetch_add(1, Ordering::AcqRel);
            let now = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            last_message.store(now, Ordering::Release);
            ConsumeResult::Success
        })
        .await?
    };
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if limit.is_some_and(|n| printed.load(Ordering::Acquire) >= n) {
            break;
        }
        let idle_for = started
            .elapsed()
            .saturating_sub(Duration::from_millis(last_message.load(Ordering::Acquire)));
        if args.idle_timeout.is_some_and(|idle| idle_for >= idle) {
            break;
        }
    }
    let damaged = consumer.damaged_skipped();
    consumer.shutdown().await?;
    damaged_error(damaged)
}
