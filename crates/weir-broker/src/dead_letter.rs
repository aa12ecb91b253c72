//! Dead letters: a copy of a message whose handler gave up goes to its group's topic
//! `%DLQ%<group>` (one queue, created on first use), with where it came from in properties:
//!
//! | property | value |
//! | --- | --- |
//! | `DLQ_ORIGIN_TOPIC` | the original topic |
//! | `DLQ_ORIGIN_QUEUE` | its queue id |
//! | `DLQ_ORIGIN_OFFSET` | its queue offset |
//! | `DLQ_ATTEMPTS` | deliveries tried |
//!
//! Key, tag, body, born timestamp and the original properties are kept. The record is
//! re-encoded (its topic is inside the producer's checksum), once per dead letter — not a hot
//! path. Used by shared groups (out of attempts) and by the `DeadLetter` request of orderly
//! push consumers.

use bytes::BytesMut;
use weir_proto::ErrorCode;
use weir_proto::record::{self, Record, RecordFields};
use weir_store::TagFilter;

use crate::broker::BrokerState;
use crate::error::RequestError;
use crate::topics;

/// Prefix of dead-letter topics.
pub const DLQ_PREFIX: &str = "%DLQ%";

/// The dead-letter topic of a group.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// Copies the message at `topic`/`queue_id`/`offset` to `%DLQ%<group>`; returns its queue id
/// and queue offset there.
pub(crate) async fn dead_letter(
    state: &BrokerState,
    group: &str,
    topic: &str,
    queue_id: u32,
    offset: u64,
    attempts: u32,
) -> Result<(u32, u64), RequestError> {
    topics::validate_name(group).map_err(|e| {
        RequestError::new(
            ErrorCode::InvalidArgument,
            format!("group name: {}", e.message),
        )
    })?;
    state.topics.check_queue(topic, queue_id)?;
    let read = state.store.read(
        topic,
        queue_id,
        offset,
        1,
        state.config.max_pull_bytes(),
        &TagFilter::All,
    )?;
    let not_found = || {
        RequestError::new(
            ErrorCode::MessageNotFound,
            format!("no message at {topic}:{queue_id}:{offset}"),
        )
    };
    if read.count == 0 {
        return Err(not_found());
    }
    let original = Record::parse(&read.records)
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
    if original.stamp().queue_offset != offset {
        return Err(not_found());
    }
    let mut properties = Vec::new();
    for item in original.properties() {
        let (k, v) =
            item.map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))?;
        properties.push((k.to_owned(), v.to_owned()));
    }
    properties.extend([
        ("DLQ_ORIGIN_TOPIC".to_owned(), topic.to_owned()),
        ("DLQ_ORIGIN_QUEUE".to_owned(), queue_id.to_string()),
        ("DLQ_ORIGIN_OFFSET".to_owned(), offset.to_string()),
        ("DLQ_ATTEMPTS".to_owned(), attempts.to_string()),
    ]);
    let dlq = dlq_topic(group);
    let mut batch = BytesMut::new();
    record::encode(
        &RecordFields {
            topic: &dlq,
            key: original.key(),
            tag: original.tag(),
            properties: &properties,
            body: original.body(),
            born_timestamp: original.born_timestamp(),
            ..RecordFields::default()
        },
        &mut batch,
    )
    .map_err(|e| RequestError::new(ErrorCode::MessageTooLarge, e.to_string()))?;
    if state.topics.get(&dlq).is_none() {
        state.topics.get_or_create(&dlq, 1)?;
        tracing::info!(topic = %dlq, "dead-letter topic created");
        state.registrar.topics_changed();
    }
    let stored = state.store.append(&dlq, 0, batch).await?;
    tracing::info!(
        group,
        topic,
        queue_id,
        offset,
        attempts,
        "message moved to the dead-letter topic"
    );
    Ok((0, stored.queue_offset))
}
