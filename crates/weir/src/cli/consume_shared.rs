//! `weir consume TOPIC --group G --mode shared`: a shared-group member that prints each message
//! it receives and then acks it.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use weir_client::{SharedConsumer, SharedConsumerConfig};

use super::consume_args::{ConsumeArgs, StopRule};
use super::output::write_consumed;

/// Receives, prints and acks until the count, the idle timeout or Ctrl-C.
pub async fn run(args: &ConsumeArgs, group: &str) -> Result<()> {
    let mut config = SharedConsumerConfig::new(args.server.servers(), group, args.topic.clone());
    config.max_wait = Duration::from_secs(1);
    let consumer = SharedConsumer::new(config)?;
    let stdout = std::io::stdout();
    let mut stop = StopRule::new(args);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    while !stop.done() {
        let max = u32::try_from(stop.remaining().min(64)).unwrap_or(64);
        let messages = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            got = consumer.receive(max, args.invisible_time) => got?,
        };
        if messages.is_empty() {
            continue;
        }
        {
            let mut out = stdout.lock();
            for m in &messages {
                write_consumed(&mut out, &m.message, args.format)?;
            }
            out.flush()?;
        }
        let rejected = consumer.ack(&messages).await?;
        if !rejected.is_empty() {
            tracing::warn!(
                count = rejected.len(),
                "acks came too late (invisibility ran out)"
            );
        }
        stop.printed(messages.len() as u64);
    }
    Ok(())
}
