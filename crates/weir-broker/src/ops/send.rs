//! Produce one message given as fields (not as an encoded batch): what the HTTP API's
//! `POST /api/v1/topics/{name}/messages` and the dashboard's "send a test message" do, for
//! callers without a Weir client.
//!
//! The message is encoded as a one-message batch and stored through the protocol-neutral
//! produce ([`super::produce::produce`]), so it is checked, delayed, counted and auto-created
//! exactly like a batch from a client.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::BytesMut;
use weir_proto::batch::{
    BatchBuilder, BatchOptions, Compression, HEADER_DELIVER_MS, HEADER_TAGS, RecordFields,
};
use weir_proto::{ErrorCode, MessageId};

use crate::error::RequestError;
use crate::features::delay::{self, MAX_DELAY};
use crate::state::BrokerState;

/// A message to produce.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewMessage {
    /// The topic.
    pub topic: String,
    /// The queue; `None`: by the key's hash as clients do (XXH3), else round-robin.
    pub queue_id: Option<u32>,
    /// Optional key (indexed).
    pub key: String,
    /// Optional tag.
    pub tag: String,
    /// Properties, in order.
    pub properties: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Deliver this many ms from now; 0: at once.
    pub delay_ms: u64,
}

/// Where a sent message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Its id (for a delayed message: its place in `%DELAY%` until delivery).
    pub id: MessageId,
    /// The queue.
    pub queue_id: u32,
    /// Its queue offset; `None` for a delayed message (it gets one when delivered).
    pub queue_offset: Option<u64>,
    /// When it is delivered, ms since the Unix epoch; 0 for at once.
    pub deliver_at_ms: i64,
}

/// Round-robin position for messages without key or queue.
static NEXT_QUEUE: AtomicU32 = AtomicU32::new(0);

/// The queue (of `queues`) a key maps to: the same XXH3 mapping as the Rust client's
/// `queue_for_key`, so one key keeps one queue (and its order) whoever produces it.
fn queue_for_key(key: &str, queues: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % u64::from(queues.max(1))) as u32
}

/// Stores `message`; the errors are those of a native produce (`topic_not_found`,
/// `queue_not_found`, `message_too_large`, ...) plus `invalid_argument` for a delay above a
/// year.
pub(crate) async fn send(state: &BrokerState, message: NewMessage) -> Result<Sent, RequestError> {
    if message.delay_ms > MAX_DELAY.as_millis() as u64 {
        return Err(RequestError::new(
            ErrorCode::InvalidArgument,
            format!("a delay is at most {} s", MAX_DELAY.as_secs()),
        ));
    }
    let queues = state.queues_of(&message.topic).max(1);
    let queue_id = match message.queue_id {
        Some(q) => q,
        None if !message.key.is_empty() => queue_for_key(&message.key, queues),
        None => NEXT_QUEUE.fetch_add(1, Ordering::Relaxed) % queues,
    };
    let now = delay::now_ms();
    let deliver_at = match message.delay_ms {
        0 => 0,
        ms => now.saturating_add(i64::try_from(ms).unwrap_or(i64::MAX)),
    };
    let invalid = |e: weir_proto::batch::BatchError| {
        RequestError::new(ErrorCode::InvalidArgument, e.to_string())
    };
    let at = deliver_at.to_string();
    let tag = (!message.tag.is_empty()).then_some((HEADER_TAGS, Some(message.tag.as_bytes())));
    let delayed_header = (deliver_at != 0).then_some((HEADER_DELIVER_MS, Some(at.as_bytes())));
    let headers = message
        .properties
        .iter()
        .map(|(k, v)| (k.as_str(), Some(v.as_bytes())))
        .chain(tag)
        .chain(delayed_header);
    let mut builder =
        BatchBuilder::new(&message.topic, BatchOptions::default()).map_err(invalid)?;
    builder
        .push(
            &RecordFields {
                timestamp: now,
                key: (!message.key.is_empty()).then_some(message.key.as_bytes()),
                value: Some(&message.body),
            },
            headers,
        )
        .map_err(invalid)?;
    let batch: BytesMut = builder.finish(Compression::None).map_err(invalid)?;
    let response = super::produce::produce(state, &message.topic, queue_id, batch).await?;
    let commit_log_offset = response
        .record_offsets
        .first()
        .copied()
        .unwrap_or(response.commit_log_offset);
    let index = response.record_indexes.first().copied().unwrap_or(0);
    let delayed = deliver_at > now && !response.record_offsets.is_empty();
    Ok(Sent {
        id: state.identity.message_id(commit_log_offset, index),
        queue_id,
        queue_offset: (!delayed).then_some(response.queue_offset),
        deliver_at_ms: if delayed { deliver_at } else { 0 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_stable_queues() {
        for key in ["order-1", "user:42", ""] {
            let q = queue_for_key(key, 8);
            assert!(q < 8);
            assert_eq!(queue_for_key(key, 8), q);
        }
        assert_eq!(queue_for_key("x", 0), 0);
    }
}
