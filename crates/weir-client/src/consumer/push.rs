//! The push consumer: a handler closure fed by the fetch loops of the queues this member owns.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use parking_lot::Mutex;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use weir_proto::{ApiKey, pb};

use crate::consumer::offset_store::QueueProgress;
use crate::consumer::rebalance::{Group, Sink};
use crate::consumer::{ConsumeMode, ConsumeResult, ConsumerConfig, QueueKey};
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;

type EachFn = dyn Fn(&ReceivedMessage) -> ConsumeResult + Send + Sync;
type BatchFn = dyn Fn(&[ReceivedMessage]) -> ConsumeResult + Send + Sync;

/// The user's handler: per message or per pulled batch.
#[derive(Clone)]
pub(crate) enum Handler {
    Each(Arc<EachFn>),
    Batch(Arc<BatchFn>),
}

/// First wait before a message whose handler said [`ConsumeResult::Retry`] (and that could not
/// be sent back) is handed over again locally; doubles per try up to [`MAX_REDELIVERY_DELAY`].
const FIRST_REDELIVERY_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between redeliveries.
const MAX_REDELIVERY_DELAY: Duration = Duration::from_secs(30);

/// Consumes a topic with a handler closure. Built by [`PushConsumer::start`] (one call per
/// message) or [`PushConsumer::start_batch`] (one call per pulled batch).
///
/// Handlers run on the Tokio runtime (in `block_in_place` on a multi-threaded runtime), one
/// batch at a time per queue, so messages of a queue are handled in order. Dropping the
/// consumer stops it without committing; call [`PushConsumer::shutdown`] to commit and leave.
pub struct PushConsumer {
    group: Arc<Group>,
    background: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PushConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushConsumer")
            .field("group", &self.group.config.group)
            .field("member_id", &self.group.member_id)
            .finish()
    }
}

impl PushConsumer {
    /// Joins the group and starts consuming, calling `handler` for each message.
    pub async fn start<F>(config: ConsumerConfig, handler: F) -> Result<PushConsumer>
    where
        F: Fn(&ReceivedMessage) -> ConsumeResult + Send + Sync + 'static,
    {
        PushConsumer::start_with(config, Handler::Each(Arc::new(handler))).await
    }

    /// Joins the group and starts consuming, calling `handler` once per pulled batch (at most
    /// `pull_batch` messages, all from one queue, in order).
    pub async fn start_batch<F>(config: ConsumerConfig, handler: F) -> Result<PushConsumer>
    where
        F: Fn(&[ReceivedMessage]) -> ConsumeResult + Send + Sync + 'static,
    {
        PushConsumer::start_with(config, Handler::Batch(Arc::new(handler))).await
    }

    async fn start_with(config: ConsumerConfig, handler: Handler) -> Result<PushConsumer> {
        let group = Group::new(config, Sink::Push(handler))?;
        let background = group.start().await?;
        Ok(PushConsumer {
            group,
            background: Some(background),
        })
    }

    /// This member's id in the group.
    pub fn member_id(&self) -> &str {
        &self.group.member_id
    }

    /// The queues this member holds now.
    pub fn assigned(&self) -> Vec<QueueKey> {
        self.group.held()
    }

    /// Commits the processed offsets now (they are also committed every `commit_interval`).
    pub async fn commit(&self) -> Result<()> {
        self.group.commit().await
    }

    /// Messages the brokers skipped so far because they are damaged on disk (each is logged at
    /// ERROR with its offsets and reason; the queue moves on past them).
    pub fn damaged_skipped(&self) -> u64 {
        self.group
            .damaged_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops pulling, lets the batches in process finish, commits, and leaves the group.
    pub async fn shutdown(mut self) -> Result<()> {
        let background = self.background.take();
        self.group.shutdown(background).await
    }
}

impl Drop for PushConsumer {
    fn drop(&mut self) {
        self.group.stop.cancel();
    }
}

/// Runs `f` where blocking is allowed: in `block_in_place` on a multi-threaded runtime.
pub(crate) fn run_handler<R>(f: impl FnOnce() -> R) -> R {
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Where a failed message can be handed back: the group and the broker it was pulled from.
pub(crate) struct SendBackTo<'a> {
    /// The group (its pool, name, mode, settings).
    pub group: &'a Group,
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
    let config = &to.group.config;
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
    let conn = to.group.pool().get(to.broker).await?;
    for message in messages {
        let id = message.id.ok_or_else(|| {
            ClientError::Protocol("a message without an id cannot be sent back".into())
        })?;
        let request = pb::SendBackRequest {
            group: to.group.config.group.clone(),
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
