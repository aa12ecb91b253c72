//! The fetch loop of one owned queue: long-poll pulls from the queue's broker, handing each
//! batch to the member's sink: orderly or concurrent delivery to the push handler, or the pull
//! consumer's buffer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};
use weir_proto::names::{self, PROP_ORIGIN_TOPIC};
use weir_proto::{ApiKey, ErrorCode, pb};

use crate::consumer::offset_store::QueueProgress;
use crate::consumer::orderly::Lease;
use crate::consumer::{
    Fetched, Member, PullResult, QueueKey, Sink, SkippedRange, concurrent, orderly,
};
use crate::entries::{self, TagFilter};
use crate::error::{ClientError, Result};
use crate::pool::Pool;
use crate::route::Broker;

/// Extra time a long-poll pull is given over its `max_wait` before it counts as timed out.
const PULL_GRACE: Duration = Duration::from_secs(10);
/// Longest pause between pulls after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Pulls refused as `busy` (the broker holds too many unsent answers) are sent again after
/// these waits; then the error is returned.
const BUSY_BACKOFF: [Duration; 6] = [
    Duration::from_millis(20),
    Duration::from_millis(50),
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
];

/// Sends one pull request to `broker` and decodes the answer (a `busy` answer is retried a
/// few times, with a growing wait). The answer's entries are whole: the messages kept are
/// those from the asked offset up to `next_offset` whose tag matches the request's filter.
pub(crate) async fn pull_once(
    pool: &Pool,
    broker: &Broker,
    request: &pb::PullRequest,
) -> Result<PullResult> {
    let timeout = Duration::from_millis(u64::from(request.max_wait_ms)) + PULL_GRACE;
    let mut waits = BUSY_BACKOFF.iter();
    let (response, payload) = loop {
        let conn = pool.get(&broker.addr).await?;
        match conn
            .call::<_, pb::PullResponse>(ApiKey::Pull, request, Bytes::new(), Some(timeout))
            .await
        {
            Err(e) if e.code() == Some(weir_proto::ErrorCode::Busy) => match waits.next() {
                Some(wait) => tokio::time::sleep(*wait).await,
                None => return Err(e),
            },
            answered => break answered?,
        }
    };
    let filter = TagFilter::parse(&request.tag_expression);
    let mut messages = entries::pulled(
        &payload,
        Some(&broker.name),
        request.offset,
        response.next_offset,
        &filter,
    )?;
    if names::is_retry_topic(&request.topic) {
        // A retry copy is shown under the topic it was produced to.
        for message in &mut messages {
            if let Some(origin) = message.property(PROP_ORIGIN_TOPIC) {
                message.topic = origin.to_owned();
            }
        }
    }
    Ok(PullResult {
        messages,
        next_offset: response.next_offset,
        min_offset: response.min_offset,
        max_offset: response.max_offset,
        skipped: response
            .skipped
            .into_iter()
            .map(|r| SkippedRange {
                from: r.from_offset,
                to: r.to_offset,
                reason: r.reason,
            })
            .collect(),
    })
}

/// Runs until `cancel` fires (after the batch in process is done), or until the queue is
/// lost (not the owner any more, topic or queue gone).
pub(crate) async fn run(
    member: Arc<Member>,
    key: QueueKey,
    broker: Broker,
    epoch: u64,
    progress: Arc<Mutex<QueueProgress>>,
    lease: Arc<Lease>,
    cancel: CancellationToken,
) {
    let config = &member.config;
    let mut backoff = Duration::from_millis(100);
    let max_wait_ms = u32::try_from(config.max_wait.as_millis()).unwrap_or(u32::MAX);
    while !cancel.is_cancelled() {
        let offset = progress.lock().next_fetch();
        let request = pb::PullRequest {
            topic: key.topic.clone(),
            queue_id: key.queue_id,
            offset,
            max_messages: config.pull_batch,
            max_bytes: config.pull_max_bytes,
            max_wait_ms,
            group: config.group.clone(),
            member_id: member.member_id.clone(),
            tag_expression: config.tag_expression.clone(),
        };
        let pulled = tokio::select! {
            _ = cancel.cancelled() => return,
            pulled = pull_once(&member.pool, &broker, &request) => pulled,
        };
        match pulled {
            Ok(result) => {
                backoff = Duration::from_millis(100);
                for range in &result.skipped {
                    error!(
                        queue = %key,
                        from = range.from,
                        to = range.to,
                        reason = %range.reason,
                        "the broker skipped damaged messages; they will not be delivered"
                    );
                    member
                        .damaged_skipped
                        .fetch_add(range.len(), std::sync::atomic::Ordering::Relaxed);
                }
                progress.lock().fetched(
                    result.messages.iter().map(|m| m.queue_offset),
                    result.next_offset,
                );
                if result.messages.is_empty() {
                    continue;
                }
                match &member.sink {
                    Sink::Push(handler) if config.orderly => {
                        let queue = orderly::QueueLoop {
                            member: &member,
                            key: &key,
                            broker: &broker.addr,
                            progress: &progress,
                            lease: &lease,
                            cancel: &cancel,
                        };
                        let done = orderly::deliver(&queue, handler, &result.messages).await;
                        if !done {
                            return;
                        }
                    }
                    Sink::Push(handler) => {
                        let to = concurrent::SendBackTo {
                            member: &member,
                            broker: &broker.addr,
                        };
                        let done =
                            concurrent::deliver(&to, handler, &result.messages, &progress, &cancel)
                                .await;
                        if !done {
                            return;
                        }
                    }
                    Sink::Pull(buffer) => {
                        let fetched = Fetched {
                            key: key.clone(),
                            epoch,
                            messages: result.messages,
                        };
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            sent = buffer.send(fetched) => if sent.is_err() { return },
                        }
                    }
                }
            }
            Err(ClientError::Server { code, message }) => match code {
                ErrorCode::NotQueueOwner | ErrorCode::TopicNotFound | ErrorCode::QueueNotFound => {
                    debug!(queue = %key, %message, "queue lost");
                    return;
                }
                ErrorCode::OffsetOutOfRange => {
                    match describe_bounds(&member.pool, &broker.addr, &key).await {
                        Ok((min, max)) => {
                            let to = offset.clamp(min, max);
                            warn!(queue = %key, offset, to, "offset out of range; jumping");
                            progress.lock().reset(to);
                        }
                        Err(e) => {
                            warn!(queue = %key, error = %e, "cannot describe the topic");
                            pause(&cancel, &mut backoff).await;
                        }
                    }
                }
                _ => {
                    warn!(queue = %key, %code, %message, "pull failed");
                    pause(&cancel, &mut backoff).await;
                }
            },
            Err(e @ ClientError::Record(_)) => {
                error!(queue = %key, offset, error = %e, "corrupt records in a pull answer");
                pause(&cancel, &mut backoff).await;
            }
            Err(e) => {
                debug!(queue = %key, error = %e, "pull failed");
                // The connection may be gone, and with it (on the broker) the queue's lock.
                lease.expire();
                pause(&cancel, &mut backoff).await;
            }
        }
    }
}

async fn pause(cancel: &CancellationToken, backoff: &mut Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(*backoff) => {}
    }
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
}

/// The minimum and maximum offsets of `key`, from its broker.
async fn describe_bounds(pool: &Pool, broker: &str, key: &QueueKey) -> Result<(u64, u64)> {
    let request = pb::DescribeTopicRequest {
        name: key.topic.clone(),
    };
    let conn = pool.get(broker).await?;
    let (info, _) = conn
        .call::<_, pb::TopicInfo>(ApiKey::DescribeTopic, &request, Bytes::new(), None)
        .await?;
    info.queues
        .iter()
        .find(|q| q.queue_id == key.queue_id)
        .map(|q| (q.min_offset, q.max_offset))
        .ok_or_else(|| ClientError::Protocol(format!("queue {key} missing from DescribeTopic")))
}
