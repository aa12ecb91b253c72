//! The long-polling read, whatever the protocol: records of one queue from an offset, holding
//! the request while there are none.

use std::time::Duration;

use tokio::time::Instant;
use weir_store::{ReadResult, TagFilter};

use crate::error::RequestError;
use crate::metrics_catalog::{BYTES_OUT_TOTAL, LONG_POLL_WAITERS, MESSAGES_OUT_TOTAL};
use crate::state::BrokerState;

/// Messages per pull when the request says 0.
const DEFAULT_MAX_MESSAGES: u32 = 32;
/// Bytes per pull when the request says 0.
const DEFAULT_MAX_BYTES: u32 = 4 << 20;

/// What a consumer asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct PullRequest<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The queue.
    pub queue_id: u32,
    /// The consumer group (empty: no group, so no ownership check).
    pub group: &'a str,
    /// The member asking, when `group` is set.
    pub member_id: &'a str,
    /// Queue offset to read from.
    pub offset: u64,
    /// Tag expression (`*` or empty: every message).
    pub tag_expression: &'a str,
    /// Most messages to return (0: the default, 32).
    pub max_messages: u32,
    /// About the most bytes to return (0: the default, 4 MiB); at least one message.
    pub max_bytes: u32,
    /// How long to hold the request while there is nothing to return, ms.
    pub max_wait_ms: u32,
}

/// What a pull returns: the store's read, as it is (records, count, next offset, the queue's
/// bounds, damaged offsets passed over).
pub(crate) type Pulled = ReadResult;

/// Answers with the records from `offset` on; when there are none and `max_wait_ms > 0`,
/// waits until a message is dispatched to the queue or the wait (capped by
/// `long_poll_max_ms`) ends. A read that found no match but stepped over filtered messages
/// answers at once, with the offset past them. Dropping the future (the client went away)
/// stops the wait.
#[tracing::instrument(level = "debug", skip_all, fields(topic = %request.topic, queue = request.queue_id, offset = request.offset))]
pub(crate) async fn pull(
    state: &BrokerState,
    request: PullRequest<'_>,
) -> Result<Pulled, RequestError> {
    let topic = request.topic;
    let queue_id = request.queue_id;
    state.topics.check_queue(topic, queue_id)?;
    if !request.group.is_empty() {
        state
            .groups
            .check_pull(request.group, request.member_id, topic, queue_id)?;
    }
    let filter = TagFilter::parse(request.tag_expression);
    let max_messages = match request.max_messages {
        0 => DEFAULT_MAX_MESSAGES,
        n => n,
    };
    let max_bytes = match request.max_bytes {
        0 => DEFAULT_MAX_BYTES,
        n => n,
    }
    .min(state.config.max_pull_bytes());
    let wait =
        Duration::from_millis(u64::from(request.max_wait_ms).min(state.config.long_poll_max_ms));
    let deadline = Instant::now() + wait;
    let offset = request.offset;
    loop {
        // Registered before the read, so a message dispatched after the read still wakes us.
        let notify = (!wait.is_zero()).then(|| state.long_poll.waiter(topic, queue_id));
        let mut notified = notify.as_ref().map(|n| Box::pin(n.notified()));
        if let Some(n) = notified.as_mut() {
            n.as_mut().enable();
        }
        let read = state
            .log
            .read(topic, queue_id, offset, max_messages, max_bytes, &filter)
            .map_err(RequestError::from)?;
        // Messages the tag filter stepped over end the wait too (RocketMQ's "no matched
        // message"): the answer carries where the next pull starts, so the consumer can commit
        // past them instead of waiting out the long poll.
        let give_up = read.count > 0
            || !read.skipped.is_empty()
            || read.next_offset > offset
            || state.is_shutting_down()
            || Instant::now() >= deadline;
        let Some(notified) = notified.filter(|_| !give_up) else {
            if read.count > 0 {
                state
                    .traffic
                    .consumed(u64::from(read.count), read.records.len() as u64);
                metrics::counter!(MESSAGES_OUT_TOTAL, "topic" => topic.to_owned())
                    .increment(u64::from(read.count));
                metrics::counter!(BYTES_OUT_TOTAL, "topic" => topic.to_owned())
                    .increment(read.records.len() as u64);
            }
            return Ok(read);
        };
        // On timeout, read once more and answer whatever is there.
        let _waiting = WaiterGauge::enter();
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// Counts a pull in `weir_long_poll_waiters` while it waits; dropping it (the wait ended, or
/// the request was dropped with its connection) counts it out.
pub(crate) struct WaiterGauge;

impl WaiterGauge {
    /// Counts one waiter in until dropped.
    pub(crate) fn enter() -> WaiterGauge {
        metrics::gauge!(LONG_POLL_WAITERS).increment(1.0);
        WaiterGauge
    }
}

impl Drop for WaiterGauge {
    fn drop(&mut self) {
        metrics::gauge!(LONG_POLL_WAITERS).decrement(1.0);
    }
}
