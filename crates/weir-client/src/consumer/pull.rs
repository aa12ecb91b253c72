//! The pull consumer: a group member whose application calls [`PullConsumer::poll`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_proto::pb;

use crate::consumer::fetcher;
use crate::consumer::offset_store::QueueProgress;
use crate::consumer::rebalance::Group;
use crate::consumer::{ConsumerConfig, Fetched, PullResult, QueueKey, Sink};
use crate::error::{ClientError, Result};
use crate::message::ReceivedMessage;

/// Batches buffered between the fetch loops and `poll`.
const BUFFERED_BATCHES: usize = 8;

/// Consumes a topic by polling: the group machinery (heartbeats, assignment, long-poll fetch
/// loops) runs in the background and fills a small buffer that [`PullConsumer::poll`] drains.
///
/// As in Kafka, the messages a `poll` returned count as processed when the application polls
/// again (or calls [`PullConsumer::commit`] or [`PullConsumer::close`]): offsets are committed
/// every `commit_interval` and by those calls, and never cover a message the application may
/// still be working on.
pub struct PullConsumer {
    group: Arc<Group>,
    background: Option<JoinHandle<()>>,
    receiver: mpsc::Receiver<Fetched>,
    buffer: VecDeque<Fetched>,
    /// The last poll's messages, by queue: marked processed at the next poll, commit or close.
    polled: parking_lot::Mutex<Vec<Polled>>,
}

/// Messages of one queue returned by the last poll.
type Polled = (Arc<parking_lot::Mutex<QueueProgress>>, Vec<u64>);

impl std::fmt::Debug for PullConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullConsumer")
            .field("group", &self.group.config().group)
            .field("member_id", &self.group.member.member_id)
            .finish()
    }
}

impl PullConsumer {
    /// Messages the brokers skipped so far because they are damaged on disk (each is logged at
    /// ERROR with its offsets and reason; the queue moves on past them).
    pub fn damaged_skipped(&self) -> u64 {
        self.group
            .member
            .damaged_skipped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Joins the group and starts fetching in the background.
    pub async fn subscribe(config: ConsumerConfig) -> Result<PullConsumer> {
        let (sender, receiver) = mpsc::channel(BUFFERED_BATCHES);
        let group = Group::new(config, Sink::Pull(sender))?;
        let background = group.start().await?;
        Ok(PullConsumer {
            group,
            background: Some(background),
            receiver,
            buffer: VecDeque::new(),
            polled: parking_lot::Mutex::new(Vec::new()),
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

    /// Up to `max_poll_messages` messages: waits up to `timeout` for the first, then returns
    /// what is already there. An empty answer means nothing came in time.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ReceivedMessage>> {
        let max = self.group.config().max_poll_messages;
        self.poll_max(timeout, max).await
    }

    /// Like [`PullConsumer::poll`], returning at most `max` messages; the others stay
    /// buffered (and uncommitted) for the next poll.
    pub async fn poll_max(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<ReceivedMessage>> {
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        self.mark_polled();
        self.take_buffered(&mut out, max);
        if out.is_empty() {
            let deadline = tokio::time::Instant::now() + timeout;
            while out.is_empty() {
                match tokio::time::timeout_at(deadline, self.receiver.recv()).await {
                    Ok(Some(fetched)) => self.buffer.push_back(fetched),
                    Ok(None) => return Err(ClientError::Closed),
                    Err(_) => return Ok(out),
                }
                self.take_buffered(&mut out, max);
            }
        }
        while out.len() < max {
            match self.receiver.try_recv() {
                Ok(fetched) => self.buffer.push_back(fetched),
                Err(_) => break,
            }
            self.take_buffered(&mut out, max);
        }
        Ok(out)
    }

    /// Marks the last poll's messages processed.
    fn mark_polled(&self) {
        for (progress, offsets) in self.polled.lock().drain(..) {
            let mut progress = progress.lock();
            for offset in offsets {
                progress.processed(offset);
            }
        }
    }

    /// Moves up to `max - out.len()` messages of queues still held from the buffer to `out`,
    /// to be marked processed at the next poll; drops batches of queues released meanwhile.
    fn take_buffered(&mut self, out: &mut Vec<ReceivedMessage>, max: usize) {
        while out.len() < max {
            let Some(front) = self.buffer.front_mut() else {
                return;
            };
            let Some(progress) = self.group.progress(&front.key, front.epoch) else {
                self.buffer.pop_front();
                continue;
            };
            let take = (max - out.len()).min(front.messages.len());
            let rest = front.messages.split_off(take);
            let taken = std::mem::replace(&mut front.messages, rest);
            self.polled
                .lock()
                .push((progress, taken.iter().map(|m| m.queue_offset).collect()));
            out.extend(taken);
            if front.messages.is_empty() {
                self.buffer.pop_front();
            }
        }
    }

    /// Commits the offsets of everything polled so far.
    pub async fn commit(&self) -> Result<()> {
        self.mark_polled();
        self.group.commit().await
    }

    /// Reads up to `max` messages of queue `queue_id` of `topic` from `offset`, outside any
    /// group (no ownership check, nothing committed, no long polling). The broker answers
    /// whole batches; what is past the `max`-th message is left for the next pull
    /// (`next_offset` says where it starts).
    pub async fn pull(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
        max: u32,
    ) -> Result<PullResult> {
        let route = self.group.routes.get(topic).await?;
        let broker = route.named_broker_of(queue_id)?;
        let request = pb::PullRequest {
            topic: topic.to_owned(),
            queue_id,
            offset,
            max_messages: max,
            max_bytes: self.group.config().pull_max_bytes,
            tag_expression: self.group.config().tag_expression.clone(),
            ..Default::default()
        };
        let mut result = fetcher::pull_once(self.group.pool(), &broker, &request).await?;
        if result.messages.len() > max as usize {
            result.messages.truncate(max as usize);
            if let Some(last) = result.messages.last() {
                let next = last.queue_offset + 1;
                result.next_offset = next;
                result.skipped.retain(|r| r.from < next);
                for range in &mut result.skipped {
                    range.to = range.to.min(next);
                }
            }
        }
        Ok(result)
    }

    /// Stops fetching, commits what was polled, and leaves the group. Messages fetched but
    /// never polled are not committed: the group gets them again.
    pub async fn close(mut self) -> Result<()> {
        self.mark_polled();
        let background = self.background.take();
        // Release the fetch loops blocked on a full buffer before waiting for them.
        self.receiver.close();
        self.group.shutdown(background).await
    }
}

impl Drop for PullConsumer {
    fn drop(&mut self) {
        self.group.stop.cancel();
    }
}
