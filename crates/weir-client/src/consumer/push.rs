//! The push consumer: a handler closure fed by the fetch loops of the queues this member owns.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::consumer::offset_store::QueueProgress;
use crate::consumer::rebalance::{Group, Sink};
use crate::consumer::{ConsumeResult, ConsumerConfig, QueueKey};
use crate::error::Result;
use crate::message::ReceivedMessage;

type EachFn = dyn Fn(&ReceivedMessage) -> ConsumeResult + Send + Sync;
type BatchFn = dyn Fn(&[ReceivedMessage]) -> ConsumeResult + Send + Sync;

/// The user's handler: per message or per pulled batch.
#[derive(Clone)]
pub(crate) enum Handler {
    Each(Arc<EachFn>),
    Batch(Arc<BatchFn>),
}

/// First wait before a message whose handler said [`ConsumeResult::Retry`] is handed over
/// again; doubles per try up to [`MAX_REDELIVERY_DELAY`].
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

/// Hands `messages` to `handler`, redelivering on [`ConsumeResult::Retry`], and marks each
/// processed message in `progress`. Returns `false` when cancelled during a redelivery wait
/// (the unprocessed messages stay uncommitted, so another member gets them again).
pub(crate) async fn deliver(
    handler: &Handler,
    messages: &[ReceivedMessage],
    progress: &Mutex<QueueProgress>,
    cancel: &CancellationToken,
    max_redeliveries: u32,
) -> bool {
    match handler {
        Handler::Each(f) => {
            for message in messages {
                if !with_redelivery(cancel, max_redeliveries, || f(message)).await {
                    return false;
                }
                progress.lock().processed(message.queue_offset);
            }
        }
        Handler::Batch(f) => {
            if !with_redelivery(cancel, max_redeliveries, || f(messages)).await {
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

async fn with_redelivery(
    cancel: &CancellationToken,
    max_redeliveries: u32,
    call: impl Fn() -> ConsumeResult,
) -> bool {
    let mut delay = FIRST_REDELIVERY_DELAY;
    for attempt in 0..=max_redeliveries {
        if run_handler(&call) == ConsumeResult::Success {
            return true;
        }
        if attempt == max_redeliveries {
            break;
        }
        tokio::select! {
            _ = cancel.cancelled() => return false,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_REDELIVERY_DELAY);
    }
    error!(
        max_redeliveries,
        "handler kept failing; skipping the message(s)"
    );
    true
}
