//! Produce: append a batch of records to one queue.

use std::time::Instant;

use bytes::BytesMut;
use weir_proto::{ErrorCode, pb};

use crate::broker::BrokerState;
use crate::delay;
use crate::error::RequestError;
use crate::handlers::Reply;
use crate::metrics_catalog::{BYTES_IN_TOTAL, MESSAGES_IN_TOTAL, PRODUCE_DURABLE_SECONDS};
use crate::topics;

/// Appends the batch as it came (the store checks every record) and answers with the first
/// record's position. With `flush = sync` the store returns only once the batch is durable.
#[tracing::instrument(level = "debug", skip_all, fields(topic = %request.topic, queue = request.queue_id, bytes = payload.len()))]
pub(crate) async fn produce(
    state: &BrokerState,
    request: pb::ProduceRequest,
    payload: BytesMut,
) -> Result<Reply, RequestError> {
    if request.topic.starts_with(topics::INTERNAL_PREFIX) {
        return Err(RequestError::new(
            ErrorCode::InvalidTopicName,
            format!(
                "topic {:?} is internal; clients cannot produce to it",
                request.topic
            ),
        ));
    }
    let started = Instant::now();
    let queues = match state.topics.get(&request.topic) {
        Some(config) => config.queues,
        None if state.config.auto_create_topics => {
            topics::validate_name(&request.topic)?;
            let config = state
                .topics
                .get_or_create(&request.topic, state.config.default_queues)?;
            tracing::info!(topic = %request.topic, queues = config.queues, "topic auto-created");
            state.registrar.topics_changed();
            config.queues
        }
        None => state.topics.queues(&request.topic)?,
    };
    if request.queue_id >= queues {
        return Err(RequestError::new(
            ErrorCode::QueueNotFound,
            format!(
                "topic {:?} has queues 0..{queues}, not {}",
                request.topic, request.queue_id
            ),
        ));
    }
    if payload.is_empty() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "a produce request needs at least one record",
        ));
    }
    let bytes = payload.len() as u64;
    let special = special_batch(&payload);
    if let Some(SpecialBatch::TransactionHalf) = special {
        // Not in the topic until committed, so not counted as messages in.
        let response = crate::transaction::store_half(state, &request, &payload).await?;
        return Ok(Reply::meta(&response));
    }
    let now = delay::now_ms();
    let response = match special {
        Some(_) => crate::idempotence::append(state, &request, payload, now).await?,
        None if delay::has_delayed(&payload, now) => {
            delay::produce(state, &request.topic, request.queue_id, payload, now).await?
        }
        None => {
            let result = state
                .store
                .append(&request.topic, request.queue_id, payload)
                .await?;
            pb::ProduceResponse {
                queue_offset: result.queue_offset,
                commit_log_offset: result.commit_log_offset,
                count: result.count,
                store_timestamp: result.store_timestamp,
                broker_addr: state.advertised_addr.clone(),
                ..pb::ProduceResponse::default()
            }
        }
    };
    metrics::histogram!(PRODUCE_DURABLE_SECONDS).record(started.elapsed());
    state.traffic.produced(u64::from(response.count), bytes);
    let topic = request.topic.clone();
    metrics::counter!(MESSAGES_IN_TOTAL, "topic" => topic.clone())
        .increment(u64::from(response.count));
    metrics::counter!(BYTES_IN_TOTAL, "topic" => topic).increment(bytes);
    Ok(Reply::meta(&response))
}

/// A batch that does not take the plain append path.
enum SpecialBatch {
    /// A transaction's half message (kept in `%HALF%` until decided).
    TransactionHalf,
    /// An idempotent producer's batch (checked against its sequences).
    Idempotent,
}

/// What kind of batch this is, from its first record (one look per batch).
fn special_batch(payload: &[u8]) -> Option<SpecialBatch> {
    let first = weir_proto::record::Record::parse(payload).ok()?;
    if first.flags() & weir_proto::record::flags::TRANSACTION_HALF != 0 {
        Some(SpecialBatch::TransactionHalf)
    } else if first.producer_id() != 0 {
        Some(SpecialBatch::Idempotent)
    } else {
        None
    }
}
