//! Concurrent delivery to a push handler: a pulled batch goes to the handler (message by
//! message, or at once); a failure is handed back to the broker (`SendBack`), which redelivers
//! it through the group's retry topic, so the queue's other messages keep flowing. When the
//! broker cannot be told (and in broadcast mode) the handler gets it again locally after a
//! growing back-off, the queue waiting.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use weir_proto::{ApiKey, pb};

use crate::consumer::offset_store::QueueProgress;
use crate::consumer::{ConsumeMode, ConsumeResult, Handler, Member, run_handler};
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;

/// First wait before a message whose handler said [`ConsumeResult::Retry`] (and that could not
/// be sent back) is handed over again locally; doubles per try up to [`MAX_REDELIVERY_DELAY`].
const FIRST_REDELIVERY_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between redeliveries.
const MAX_REDELIVERY_DELAY: Duration = Duration::from_secs(30);

/// Where a failed message can be handed back: the member and the broker it was pulled from.
pub(crate) struct SendBackTo<'a> {
    /// The member (its pool, group name, mode, settings).
    pub member: &'a Member,
    /// The broker the messages were pulled from (it stored them).
    pub broker: &'a str,
}

/// Hands `messages` to `handler` and marks each processed message in `progress`. A failure is
/// sent back to the broker for a later retry; if that fails, the message is redelivered
/// locally. Returns `false` when cancelled during a local redelivery wait (the unprocessed
/// messages stay uncommitted, so another member gets them again).
pub(crate) async fn deliver(
    to: &SendBackTo<'_>,
    handler: &Handler,
    messages: &[ReceivedMessage],
    progress: &Mutex<QueueProgress>,
    cancel: &CancellationToken,
) -> bool {
    match handler {
        Handler::Each(f) => {
            for message in messages {
                let one = std::slice::from_ref(message);
                if !handle(to, one, cancel, || f(message)).await {
                    return false;
                }
                progress.lock().processed(message.queue_offset);
            }
        }
        Handler::Batch(f) => {
            if !handle(to, messages, cancel, || f(messages)).await {
                return false;
            }
            let mut progress = progress.lock();
            for message in messages {
                progress.processed(message.queue_offset);
            }
        }
    }
    true
}

/// One handler call: a panic or a call over `timeout` counts as [`ConsumeResult::Retry`].
fn call_guarded(timeout: Duration, call: &impl Fn() -> ConsumeResult) -> ConsumeResult {
    let started = Instant::now();
    let result = run_handler(|| std::panic::catch_unwind(AssertUnwindSafe(call)));
    match result {
        Err(_) => {
            error!("the message handler panicked; the message will be retried");
            ConsumeResult::Retry
        }
        Ok(_) if started.elapsed() > timeout => {
            warn!(
                took = ?started.elapsed(),
                ?timeout,
                "the message handler exceeded handler_timeout; the message will be retried"
            );
            ConsumeResult::Retry
        }
        Ok(result) => result,
    }
}

async fn handle(
    to: &SendBackTo<'_>,
    messages: &[ReceivedMessage],
    cancel: &CancellationToken,
    call: impl Fn() -> ConsumeResult,
) -> bool {
    let config = &to.member.config;
    if call_guarded(config.handler_timeout, &call) == ConsumeResult::Success {
        return true;
    }
    if config.mode == ConsumeMode::Clustering {
        match send_back(to, messages).await {
            Ok(()) => return true,
            Err(e) => warn!(error = %e, "send-back failed; redelivering locally"),
        }
    }
    with_redelivery(
        cancel,
        config.max_redeliveries,
        config.handler_timeout,
        call,
    )
    .await
}

/// Hands each message back to the broker that stored it, for the group's retry topic.
async fn send_back(to: &SendBackTo<'_>, messages: &[ReceivedMessage]) -> Result<()> {
    let conn = to.member.pool.get(to.broker).await?;
    for message in messages {
        let id = message.id.as_ref().ok_or_else(|| {
            ClientError::Protocol("a message without an id cannot be sent back".into())
        })?;
        let request = pb::SendBackRequest {
            group: to.member.config.group.clone(),
            message_id: id.to_string(),
            ..pb::SendBackRequest::default()
        };
        let (response, _) = conn
            .call::<_, pb::SendBackResponse>(ApiKey::SendBack, &request, Bytes::new(), None)
            .await?;
        debug!(
            id = %id,
            failures = response.failures,
            dead_lettered = response.dead_lettered,
            "message sent back"
        );
    }
    Ok(())
}

/// Local redelivery after a failed first call: waits, then calls again, up to
/// `max_redeliveries` times.
async fn with_redelivery(
    cancel: &CancellationToken,
    max_redeliveries: u32,
    timeout: Duration,
    call: impl Fn() -> ConsumeResult,
) -> bool {
    let mut delay = FIRST_REDELIVERY_DELAY;
    for _ in 0..max_redeliveries {
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        if call_guarded(timeout, &call) == ConsumeResult::Success {
            return true;
        }
        delay = (delay * 2).min(MAX_REDELIVERY_DELAY);
    }
    error!(
        max_redeliveries,
        "handler kept failing; skipping the message(s)"
    );
    true
}
