//! Lookups: a message by id, messages by key, a queue offset by time.

use bytes::BytesMut;
use weir_proto::pb;

use crate::error::RequestError;
use crate::ops;
use crate::protocols::native::handlers::Reply;
use crate::state::BrokerState;

/// The entry holding the message with a message id, read at its commit-log offset (the
/// client picks the message by the id's index).
#[tracing::instrument(level = "debug", skip_all, fields(id = %request.message_id))]
pub(crate) fn get_message(
    state: &BrokerState,
    request: pb::GetMessageRequest,
) -> Result<Reply, RequestError> {
    let found = ops::lookup::get_message(state, &request.message_id)?;
    Ok(Reply::with_payload(&pb::Empty {}, found.entry))
}

/// The entries of a topic holding messages with a key, oldest first (the client keeps the
/// messages with the key).
#[tracing::instrument(level = "debug", skip_all, fields(topic = %request.topic, key = %request.key))]
pub(crate) fn find_by_key(
    state: &BrokerState,
    request: pb::FindByKeyRequest,
) -> Result<Reply, RequestError> {
    let records = ops::lookup::find_by_key(state, &request.topic, &request.key, request.max)?;
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
            .log
            .offset_for_time(&request.topic, request.queue_id, request.timestamp_ms)?;
    Ok(Reply::meta(&pb::OffsetForTimeResponse { offset }))
}
