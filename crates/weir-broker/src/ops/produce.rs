//! Produce, whatever the protocol: what kind of batch this is and which path it takes.
//!
//! ```text
//! internal topic?            refused
//! unknown topic              created when auto_create_topics, else topic_not_found
//! not exactly one entry      refused (a produce carries one batch)
//! transactional batch        transactions: a half message, kept in %HALF% until decided
//! has a producer id          idempotence: sequence-checked, then as below
//! has a future deliver_at    delay: split between the queue and %DELAY%
//! otherwise                  the write path, as it came
//! ```
//!
//! Every path answers once the batch is acknowledged (see `core::message_log`).

use std::time::Instant;

use bytes::BytesMut;
use weir_proto::ErrorCode;
use weir_proto::batch::Entry;
use weir_proto::names;

use crate::core::clock::now_ms;
use crate::core::position::Produced;
use crate::error::RequestError;
use crate::features::delay;
use crate::metrics_catalog::{BYTES_IN_TOTAL, MESSAGES_IN_TOTAL, PRODUCE_DURABLE_SECONDS};
use crate::state::BrokerState;

/// Stores a producer's batch (one entry, checked by the path it takes) in
/// `topic`/`queue_id`; answers where it went once it is acknowledged.
#[tracing::instrument(level = "debug", skip_all, fields(topic = %topic, queue = queue_id, bytes = payload.len()))]
pub(crate) async fn produce(
    state: &BrokerState,
    topic: &str,
    queue_id: u32,
    payload: BytesMut,
) -> Result<Produced, RequestError> {
    if names::is_internal(topic) {
        return Err(RequestError::new(
            ErrorCode::InvalidTopicName,
            format!("topic {topic:?} is internal; clients cannot produce to it"),
        ));
    }
    let started = Instant::now();
    let queues = match state.topics.get(topic) {
        Some(config) => config.queues,
        None if state.config.auto_create_topics => {
            crate::ops::topic::get_or_create(state, topic).await?.queues
        }
        None => state.topics.queues(topic)?,
    };
    if queue_id >= queues {
        return Err(RequestError::new(
            ErrorCode::QueueNotFound,
            format!("topic {topic:?} has queues 0..{queues}, not {queue_id}"),
        ));
    }
    if payload.is_empty() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "a produce request needs a batch of at least one message",
        ));
    }
    let bytes = payload.len() as u64;
    let kind = BatchKind::of(&payload)?;
    if kind == BatchKind::TransactionHalf {
        // Not in the topic until committed, so not counted as messages in.
        let stored = state
            .transactions
            .store_half(topic, queue_id, &payload)
            .await?;
        return Ok(Produced::contiguous(&stored));
    }
    let now = now_ms();
    let produced = match kind {
        BatchKind::Idempotent => {
            state
                .idempotence
                .append(topic, queue_id, payload, now)
                .await?
        }
        _ if delay::has_delayed(&payload) => {
            state.delays.produce(topic, queue_id, payload, now).await?
        }
        _ => Produced::contiguous(&state.log.append(topic, queue_id, payload).await?),
    };
    metrics::histogram!(PRODUCE_DURABLE_SECONDS).record(started.elapsed());
    state.traffic.produced(u64::from(produced.count), bytes);
    metrics::counter!(MESSAGES_IN_TOTAL, "topic" => topic.to_owned())
        .increment(u64::from(produced.count));
    metrics::counter!(BYTES_IN_TOTAL, "topic" => topic.to_owned()).increment(bytes);
    Ok(produced)
}

/// Which path a batch takes, from its header (one look per batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchKind {
    /// A transaction's half message (kept in `%HALF%` until decided).
    TransactionHalf,
    /// An idempotent producer's batch (checked against its sequences).
    Idempotent,
    /// Anything else (delayed records are found by the delay check).
    Plain,
}

impl BatchKind {
    /// The kind of the one entry in `payload`; a payload that is not exactly one entry is
    /// refused here (a bad CRC or record is found by the path the batch takes).
    fn of(payload: &[u8]) -> Result<BatchKind, RequestError> {
        let entry = Entry::parse(payload)
            .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
        if entry.len() != payload.len() {
            return Err(RequestError::new(
                ErrorCode::InvalidArgument,
                "a produce request carries exactly one batch",
            ));
        }
        Ok(if entry.is_transactional() {
            BatchKind::TransactionHalf
        } else if entry.is_idempotent() {
            BatchKind::Idempotent
        } else {
            BatchKind::Plain
        })
    }
}
