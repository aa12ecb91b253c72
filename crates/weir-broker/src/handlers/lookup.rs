//! Lookups: a message by id, messages by key, a queue offset by time.

use bytes::BytesMut;
use weir_proto::{ErrorCode, MessageId, pb};

use crate::broker::BrokerState;
use crate::error::RequestError;
use crate::handlers::Reply;

/// Matches per `FindByKey` when the request says 0.
const DEFAULT_FIND_MAX: u32 = 64;
/// Most matches one `FindByKey` returns.
const MAX_FIND_MAX: u32 = 1024;

fn not_found(what: String) -> RequestError {
    RequestError::new(ErrorCode::MessageNotFound, what)
}

/// The record with a message id, read at its commit-log offset.
#[tracing::instrument(level = "debug", skip_all, fields(id = %request.message_id))]
pub(crate) fn get_message(
    state: &BrokerState,
    request: pb::GetMessageRequest,
) -> Result<Reply, RequestError> {
    let id: MessageId =
        request
            .message_id
            .parse()
            .map_err(|e: weir_proto::message_id::InvalidMessageId| {
                RequestError::new(ErrorCode::InvalidArgument, e.to_string())
            })?;
    if !state.is_own_addr(id.broker_addr) {
        return Err(not_found(format!(
            "message {} was stored by {}, not by this broker",
            request.message_id, id.broker_addr
        )));
    }
    let record = state
        .store
        .read_at(id.commit_log_offset)
        .map_err(|e| not_found(format!("message {}: {e}", request.message_id)))?;
    Ok(Reply::with_payload(&pb::Empty {}, record))
}

/// The records of a topic stored with a key, oldest first.
#[tracing::instrument(level = "debug", skip_all, fields(topic = %request.topic, key = %request.key))]
pub(crate) fn find_by_key(
    state: &BrokerState,
    request: pb::FindByKeyRequest,
) -> Result<Reply, RequestError> {
    state.topics.queues(&request.topic)?;
    if request.key.is_empty() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "key must be set",
        ));
    }
    let max = match request.max {
        0 => DEFAULT_FIND_MAX,
        n => n.min(MAX_FIND_MAX),
    };
    let records = state
        .store
        .find_by_key(&request.topic, &request.key, max as usize)?;
    if records.is_empty() {
        return Err(not_found(format!(
            "no message of topic {:?} has key {:?}",
            request.topic, request.key
        )));
    }
    // Stay inside one frame: drop the newest matches if they would not fit.
    let limit = state.config.max_pull_bytes() as usize;
    let mut payload = BytesMut::new();
    for record in records {
        if !payload.is_empty() && payload.len() + record.len() > limit {
            break;
        }
        payload.extend_from_slice(&record);
    }
    Ok(Reply::with_payload(&pb::Empty {}, payload.freeze()))
}

/// The first queue offset stored at or after a time.
pub(crate) fn offset_for_time(
    state: &BrokerState,
    request: pb::OffsetForTimeRequest,
) -> Result<Reply, RequestError> {
    state.topics.check_queue(&request.topic, request.queue_id)?;
    let offset =
        state
            .store
            .offset_for_time(&request.topic, request.queue_id, request.timestamp_ms)?;
    Ok(Reply::meta(&pb::OffsetForTimeResponse { offset }))
}
