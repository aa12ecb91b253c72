//! Produce: append a batch of records to one queue.

use bytes::BytesMut;
use weir_proto::{ErrorCode, pb};

use crate::broker::BrokerState;
use crate::delay;
use crate::error::RequestError;
use crate::handlers::Reply;
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
    let now = delay::now_ms();
    if delay::has_delayed(&payload, now) {
        let response =
            delay::produce(state, &request.topic, request.queue_id, payload, now).await?;
        return Ok(Reply::meta(&response));
    }
    let result = state
        .store
        .append(&request.topic, request.queue_id, payload)
        .await?;
    Ok(Reply::meta(&pb::ProduceResponse {
        queue_offset: result.queue_offset,
        commit_log_offset: result.commit_log_offset,
        count: result.count,
        store_timestamp: result.store_timestamp,
        broker_addr: state.advertised_addr.clone(),
        ..pb::ProduceResponse::default()
    }))
}
