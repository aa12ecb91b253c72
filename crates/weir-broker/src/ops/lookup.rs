//! Message lookups: by id, and by key within a topic.

use bytes::Bytes;
use weir_proto::{ErrorCode, MessageId};

use crate::error::RequestError;
use crate::state::BrokerState;

/// Matches per key lookup when the caller says 0.
pub(crate) const DEFAULT_FIND_MAX: u32 = 64;
/// Most matches one key lookup returns.
pub(crate) const MAX_FIND_MAX: u32 = 1024;

fn not_found(what: String) -> RequestError {
    RequestError::new(ErrorCode::MessageNotFound, what)
}

/// The stored record with a message id, read at its commit-log offset.
pub(crate) fn get_message(state: &BrokerState, message_id: &str) -> Result<Bytes, RequestError> {
    let id: MessageId =
        message_id
            .parse()
            .map_err(|e: weir_proto::message_id::InvalidMessageId| {
                RequestError::new(ErrorCode::InvalidArgument, e.to_string())
            })?;
    if !state.identity.owns(&id) {
        return Err(not_found(format!(
            "message {message_id} was stored by broker group {}, not by this one",
            id.broker
        )));
    }
    state
        .log
        .read_at(id.commit_log_offset)
        .map_err(|e| not_found(format!("message {message_id}: {e}")))
}

/// The stored records of a topic with a key, oldest first, at most `max` (0 = the default,
/// capped at [`MAX_FIND_MAX`]); `message_not_found` when there are none.
pub(crate) fn find_by_key(
    state: &BrokerState,
    topic: &str,
    key: &str,
    max: u32,
) -> Result<Vec<Bytes>, RequestError> {
    state.topics.queues(topic)?;
    if key.is_empty() {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            "key must be set",
        ));
    }
    let max = match max {
        0 => DEFAULT_FIND_MAX,
        n => n.min(MAX_FIND_MAX),
    };
    let records = state.log.find_by_key(topic, key, max as usize)?;
    if records.is_empty() {
        return Err(not_found(format!(
            "no message of topic {topic:?} has key {key:?}"
        )));
    }
    Ok(records)
}
