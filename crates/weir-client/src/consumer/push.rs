//! The push consumer: a handler closure fed by the fetch loops of the queues this member owns.

use std::sync::Arc;

use tokio::task::JoinHandle;

use crate::consumer::rebalance::Group;
use crate::consumer::{ConsumeResult, ConsumerConfig, Handler, QueueKey, Sink};
use crate::error::Result;
use crate::message::ReceivedMessage;

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
            .field("group", &self.group.config().group)
            .field("member_id", &self.group.member.member_id)
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
        &self.group.member.member_id
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
            .member
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
