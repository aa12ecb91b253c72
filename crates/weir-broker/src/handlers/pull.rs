//! Pull: read records from one queue, holding the request (long polling) while there are none.

use std::time::Duration;

use tokio::time::Instant;
use weir_proto::pb;
use weir_store::TagFilter;

use crate::broker::BrokerState;
use crate::error::RequestError;
use crate::handlers::Reply;
use crate::metrics_catalog::{BYTES_OUT_TOTAL, LONG_POLL_WAITERS, MESSAGES_OUT_TOTAL};

/// Messages per pull when the request says 0.
const DEFAULT_MAX_MESSAGES: u32 = 32;
/// Bytes per pull when the request says 0.
const DEFAULT_MAX_BYTES: u32 = 4 << 20;

/// Answers with the records from `offset` on; when there are none and `max_wait_ms > 0`,
/// waits until a message is dispatched to the queue or the wait (capped by
/// `long_poll_max_ms`) ends.
#[tracing::instrument(level = "debug", skip_all, fields(topic = %request.topic, queue = request.queue_id, offset = request.offset))]
pub(crate) async fn pull(
    state: &BrokerState,
    request: pb::PullRequest,
) -> Result<Reply, RequestError> {
    let topic = request.topic.as_str();
    let queue_id = request.queue_id;
    state.topics.check_queue(topic, queue_id)?;
    if !request.group.is_empty() {
        state
            .groups
            .check_pull(&request.group, &request.member_id, topic, queue_id)?;
    }
    let filter = TagFilter::parse(&request.tag_expression);
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
    let mut offset = request.offset;
    loop {
        // Registered before the read, so a message dispatched after the read still wakes us.
        let notify = (!wait.is_zero()).then(|| state.long_poll.waiter(topic, queue_id));
        let mut notified = notify.as_ref().map(|n| Box::pin(n.notified()));
        if let Some(n) = notified.as_mut() {
            n.as_mut().enable();
        }
        let read = state
            .store
            .read(topic, queue_id, offset, max_messages, max_bytes, &filter)
            .map_err(RequestError::from)?;
        let give_up = read.count > 0 || state.is_shutting_down() || Instant::now() >= deadline;
        let Some(notified) = notified.filter(|_| !give_up) else {
            let status = if read.count > 0 {
                state
                    .traffic
                    .consumed(u64::from(read.count), read.records.len() as u64);
                let topic = topic.to_owned();
                metrics::counter!(MESSAGES_OUT_TOTAL, "topic" => topic.clone())
                    .increment(u64::from(read.count));
                metrics::counter!(BYTES_OUT_TOTAL, "topic" => topic)
                    .increment(read.records.len() as u64);
                pb::PullStatus::Found
            } else {
                pb::PullStatus::NoNewMessages
            };
            let response = pb::PullResponse {
                status: status as i32,
                next_offset: read.next_offset,
                min_offset: read.min_offset,
                max_offset: read.max_offset,
                count: read.count,
            };
            return Ok(Reply::with_payload(&response, read.records));
        };
        // Messages skipped by the tag filter are not read again.
        offset = read.next_offset.max(offset);
        // On timeout, read once more and answer whatever is there.
        let _waiting = WaiterGauge::enter();
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

/// Counts a pull in `weir_long_poll_waiters` while it waits; dropping it (the wait ended, or
/// the request was dropped with its connection) counts it out.
struct WaiterGauge;

impl WaiterGauge {
    fn enter() -> WaiterGauge {
        metrics::gauge!(LONG_POLL_WAITERS).increment(1.0);
        WaiterGauge
    }
}

impl Drop for WaiterGauge {
    fn drop(&mut self) {
        metrics::gauge!(LONG_POLL_WAITERS).decrement(1.0);
    }
}
