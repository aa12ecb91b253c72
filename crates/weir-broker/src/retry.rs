//! Retry and dead letters: a consumer hands a failed message back (`SendBack`); the broker
//! stores a copy for the group, delayed by the group's next back-off step, in `%RETRY%<group>`
//! (through `%DELAY%`), or in `%DLQ%<group>` once it has failed `max_retries + 1` times.
//!
//! Both copies carry, besides the message's own key, tag, properties and body:
//!
//! ```text
//! ORIGIN_TOPIC     the topic the message was first produced to
//! ORIGIN_MSG_ID    its id there
//! RECONSUME_TIMES  failed deliveries so far
//! ```

use std::str::FromStr;
use std::time::Duration;

use bytes::BytesMut;
use weir_proto::record::Record;
use weir_proto::{ErrorCode, MessageId, pb};
use weir_store::AppendResult;

use crate::broker::BrokerState;
use crate::delay::{self, PROP_DELAY_ORIGIN_ID, own_addr};
use crate::error::RequestError;
use crate::handlers::Reply;

/// Prefix of a group's retry topic.
pub(crate) const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic.
pub(crate) const DLQ_PREFIX: &str = "%DLQ%";
/// Property: the topic the message was first produced to.
pub(crate) const PROP_ORIGIN_TOPIC: &str = "ORIGIN_TOPIC";
/// Property: the message's id in its first topic.
pub(crate) const PROP_ORIGIN_MSG_ID: &str = "ORIGIN_MSG_ID";
/// Property: failed deliveries so far.
pub(crate) const PROP_RECONSUME_TIMES: &str = "RECONSUME_TIMES";

/// Whether `topic` is a group's retry topic.
pub(crate) fn is_retry_topic(topic: &str) -> bool {
    topic.starts_with(RETRY_PREFIX) && topic.len() > RETRY_PREFIX.len()
}

/// Creates an internal topic of one queue if it does not exist; returns its queue count.
pub(crate) fn ensure_topic(state: &BrokerState, topic: &str) -> Result<u32, RequestError> {
    if let Some(config) = state.topics.get(topic) {
        return Ok(config.queues);
    }
    let config = state.topics.get_or_create(topic, 1)?;
    tracing::info!(topic, "internal topic created");
    state.registrar.topics_changed();
    Ok(config.queues)
}

/// The back-off before retry number `failures` (1-based): the configured steps, the last one
/// repeated.
pub(crate) fn backoff(steps: &[Duration], failures: u32) -> Duration {
    let i = (failures.max(1) - 1) as usize;
    steps
        .get(i)
        .or(steps.last())
        .copied()
        .unwrap_or(Duration::from_secs(10))
}

/// Properties a copy takes over from its original and sets itself (see the module docs).
const ORIGIN_PROPERTIES: [&str; 4] = [
    PROP_ORIGIN_TOPIC,
    PROP_ORIGIN_MSG_ID,
    PROP_RECONSUME_TIMES,
    PROP_DELAY_ORIGIN_ID,
];

/// Stores a copy of `record` in `%DLQ%<group>` (one queue, created on first use) with the
/// origin properties `origin` (`ORIGIN_TOPIC`, `ORIGIN_MSG_ID`, `RECONSUME_TIMES`). The one way
/// a message becomes a dead letter: push consumers' send-back, orderly consumers' last try and
/// shared groups' last attempt all end here, so `weir dlq` reads them alike.
pub(crate) async fn store_dead_letter(
    state: &BrokerState,
    group: &str,
    record: &Record<'_>,
    origin: [(String, String); 3],
) -> Result<AppendResult, RequestError> {
    let topic = format!("{DLQ_PREFIX}{group}");
    ensure_topic(state, &topic)?;
    let mut out = BytesMut::new();
    delay::reencode(record, &topic, 0, &ORIGIN_PROPERTIES, &origin, &mut out)?;
    let stored = state.store.append(&topic, 0, out).await?;
    metrics::counter!("weir_dlq_messages_total", "group" => group.to_owned()).increment(1);
    tracing::info!(group, failures = %origin[2].1, "message dead-lettered");
    Ok(stored)
}

/// SendBack: stores the message again for the group, delayed, or dead-letters it.
#[tracing::instrument(level = "debug", skip_all, fields(group = %request.group, id = %request.message_id))]
pub(crate) async fn send_back(
    state: &BrokerState,
    request: pb::SendBackRequest,
) -> Result<Reply, RequestError> {
    let group = request.group.as_str();
    weir_proto::validate_group_name(group)?;
    let id = MessageId::from_str(&request.message_id)
        .map_err(|e| RequestError::new(ErrorCode::InvalidArgument, e.to_string()))?;
    if !state.is_own_addr(id.broker_addr) {
        return Err(RequestError::new(
            ErrorCode::MessageNotFound,
            format!("message {id} is stored by another broker"),
        ));
    }
    let bytes = state.store.read_at(id.commit_log_offset)?;
    let record = Record::parse(&bytes)
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
    let origin_topic = record
        .property(PROP_ORIGIN_TOPIC)
        .unwrap_or(record.topic())
        .to_owned();
    let origin_id = record
        .property(PROP_ORIGIN_MSG_ID)
        .map_or_else(|| id.to_string(), str::to_owned);
    let failures = if request.resend {
        0
    } else {
        record
            .property(PROP_RECONSUME_TIMES)
            .and_then(|t| t.parse::<u32>().ok())
            .unwrap_or(0)
            .saturating_add(1)
            .saturating_add(request.reconsume_times)
    };
    let add = [
        (PROP_ORIGIN_TOPIC.to_owned(), origin_topic),
        (PROP_ORIGIN_MSG_ID.to_owned(), origin_id),
        (PROP_RECONSUME_TIMES.to_owned(), failures.to_string()),
    ];
    let drop = ORIGIN_PROPERTIES;
    let mut out = BytesMut::new();
    if !request.resend && request.dead_letter || failures > state.config.max_retries {
        let stored = store_dead_letter(state, group, &record, add).await?;
        let stored_id = MessageId {
            broker_addr: own_addr(state),
            commit_log_offset: stored.commit_log_offset,
        };
        return Ok(Reply::meta(&pb::SendBackResponse {
            failures,
            dead_lettered: true,
            deliver_at: 0,
            stored_id: stored_id.to_string(),
        }));
    }
    let topic = format!("{RETRY_PREFIX}{group}");
    ensure_topic(state, &topic)?;
    if request.resend {
        delay::reencode(&record, &topic, 0, &drop, &add, &mut out)?;
        let stored = state.store.append(&topic, 0, out).await?;
        tracing::info!(group, id = %id, "dead letter resent");
        let stored_id = MessageId {
            broker_addr: own_addr(state),
            commit_log_offset: stored.commit_log_offset,
        };
        return Ok(Reply::meta(&pb::SendBackResponse {
            failures,
            dead_lettered: false,
            deliver_at: 0,
            stored_id: stored_id.to_string(),
        }));
    }
    let steps = state
        .config
        .retry_backoff()
        .map_err(|e| RequestError::new(ErrorCode::Internal, e.to_string()))?;
    let wait = backoff(&steps, failures);
    let deliver_at = delay::now_ms()
        .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
        .max(1);
    delay::encode_delayed(&record, &topic, 0, deliver_at, &drop, &add, &mut out)?;
    let offsets = delay::store_delayed(state, out).await?;
    metrics::counter!("weir_retry_messages_total", "group" => group.to_owned()).increment(1);
    let stored_id = MessageId {
        broker_addr: own_addr(state),
        commit_log_offset: offsets.first().copied().unwrap_or(0),
    };
    Ok(Reply::meta(&pb::SendBackResponse {
        failures,
        dead_lettered: false,
        deliver_at,
        stored_id: stored_id.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_the_last_step() {
        let steps = [Duration::from_secs(1), Duration::from_secs(2)];
        assert_eq!(backoff(&steps, 1), Duration::from_secs(1));
        assert_eq!(backoff(&steps, 2), Duration::from_secs(2));
        assert_eq!(backoff(&steps, 9), Duration::from_secs(2));
        assert!(is_retry_topic("%RETRY%g") && !is_retry_topic("%RETRY%") && !is_retry_topic("g"));
    }
}
