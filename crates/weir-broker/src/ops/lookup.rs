//! Message lookups: by id, and by key within a topic.

use bytes::Bytes;
use weir_proto::batch::{Entries, Message};
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

/// A message found by id: the stored entry holding it, and its index there.
#[derive(Debug, Clone)]
pub(crate) struct Located {
    /// The whole stored entry (what the native protocol answers).
    pub entry: Bytes,
    /// The message's index in the entry's batch.
    pub index: u32,
}

impl Located {
    /// The message, decoded.
    pub fn message(&self) -> Result<Message, RequestError> {
        Message::decode_entry(&self.entry)
            .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?
            .into_iter()
            .nth(self.index as usize)
            .ok_or_else(|| not_found(format!("the batch has no message {}", self.index)))
    }
}

/// The decoded messages of `entries` (laid end to end) whose key is `key`.
pub(crate) fn with_key(entries: &[Bytes], key: &str) -> Result<Vec<Message>, RequestError> {
    let mut out = Vec::new();
    for entry in entries {
        let messages = Message::decode_entry(entry)
            .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
        out.extend(messages.into_iter().filter(|m| m.key_str() == key));
    }
    Ok(out)
}

/// Decodes every message of `entries` (laid end to end, as a read returns them) with queue
/// offset in `[from, to)`.
pub(crate) fn decode_range(
    entries: &Bytes,
    from: u64,
    to: u64,
) -> Result<Vec<Message>, RequestError> {
    let corrupt = |e: weir_proto::batch::BatchError| {
        RequestError::new(ErrorCode::CorruptMessage, e.to_string())
    };
    let mut out = Vec::new();
    for entry in Entries::new(entries) {
        let entry = entry.map_err(corrupt)?;
        Message::decode_into(entries, &entry, &mut out).map_err(corrupt)?;
    }
    out.retain(|m| m.queue_offset >= from && m.queue_offset < to);
    Ok(out)
}

/// The stored entry holding the message with a message id, read at its commit-log offset.
pub(crate) fn get_message(state: &BrokerState, message_id: &str) -> Result<Located, RequestError> {
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
    let entry = state
        .log
        .read_at(id.commit_log_offset)
        .map_err(|e| not_found(format!("message {message_id}: {e}")))?;
    Ok(Located {
        entry,
        index: id.index,
    })
}

/// The stored entries of a topic holding a message with a key (maybe others too), oldest
/// first, at most `max` (0 = the default,
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
