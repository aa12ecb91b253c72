//! The records of a transaction: a producer's half message re-encoded into `%HALF%`, restored
//! into its real topic on commit, and the op records (decisions, check-backs) written to
//! `%HALF_OP%`.
//!
//! The topic is covered by the producer's body checksum, so moving a record between topics
//! means encoding it again. That happens once per transactional message (store, commit), never
//! on the plain produce path.
//!
//! Neither copy keeps the producer's idempotence identity (producer id and sequence are
//! written as 0). A transaction is identified by its transaction id, not by a sequence: the
//! half message is stored without the idempotence check, and the idempotence table is rebuilt
//! at start from the records of user topics that carry a producer id. A committed copy that
//! kept an old sequence would look like a new run of its producer there, and the producer's
//! next batch would be refused as out of order.

use bytes::BytesMut;
use weir_proto::ErrorCode;
use weir_proto::record::{self, Record, RecordFields, flags};
use weir_proto::transaction::{
    Decision, HALF_TOPIC, OP_TOPIC, PROP_PRODUCER_GROUP, PROP_REAL_QUEUE, PROP_REAL_TOPIC,
    PROP_TRANSACTION_ID, encode_check, encode_decision,
};

use crate::error::RequestError;

/// What the broker needs to know of a half message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HalfInfo {
    /// The transaction id the producer chose.
    pub transaction_id: String,
    /// The producer group to ask back.
    pub producer_group: String,
    /// The topic it commits to.
    pub topic: String,
    /// The queue it commits to.
    pub queue_id: u32,
}

fn owned_properties(record: &Record<'_>) -> Result<Vec<(String, String)>, RequestError> {
    record
        .properties()
        .map(|p| p.map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect::<Result<_, _>>()
        .map_err(|e| RequestError::new(ErrorCode::CorruptMessage, e.to_string()))
}

fn encode(fields: &RecordFields<'_>) -> Result<BytesMut, RequestError> {
    let mut out = BytesMut::new();
    record::encode(fields, &mut out)
        .map_err(|e| RequestError::new(ErrorCode::MessageTooLarge, e.to_string()))?;
    Ok(out)
}

/// The `%HALF%` record for a producer's half message bound for `queue_id` of its topic, and
/// what it says. The producer must have set the transaction id and producer group properties.
pub(crate) fn to_half(
    record: &Record<'_>,
    queue_id: u32,
) -> Result<(BytesMut, HalfInfo), RequestError> {
    let missing = |name: &str| {
        RequestError::new(
            ErrorCode::InvalidArgument,
            format!("a half message needs the {name} property"),
        )
    };
    let transaction_id = record
        .property(PROP_TRANSACTION_ID)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing(PROP_TRANSACTION_ID))?;
    let producer_group = record
        .property(PROP_PRODUCER_GROUP)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing(PROP_PRODUCER_GROUP))?;
    let mut properties = owned_properties(record)?;
    properties.push((PROP_REAL_TOPIC.to_owned(), record.topic().to_owned()));
    properties.push((PROP_REAL_QUEUE.to_owned(), queue_id.to_string()));
    let bytes = encode(&RecordFields {
        topic: HALF_TOPIC,
        key: record.key(),
        tag: record.tag(),
        properties: &properties,
        body: record.body(),
        born_timestamp: record.born_timestamp(),
        deliver_at: record.deliver_at(),
        producer_id: 0,
        sequence: 0,
        flags: record.flags() | flags::TRANSACTION_HALF,
    })?;
    let info = HalfInfo {
        transaction_id: transaction_id.to_owned(),
        producer_group: producer_group.to_owned(),
        topic: record.topic().to_owned(),
        queue_id,
    };
    Ok((bytes, info))
}

/// What a stored `%HALF%` record says, or `None` when it is not one.
pub(crate) fn info(half: &Record<'_>) -> Option<HalfInfo> {
    if half.topic() != HALF_TOPIC || half.flags() & flags::TRANSACTION_HALF == 0 {
        return None;
    }
    Some(HalfInfo {
        transaction_id: half.property(PROP_TRANSACTION_ID)?.to_owned(),
        producer_group: half.property(PROP_PRODUCER_GROUP)?.to_owned(),
        topic: half.property(PROP_REAL_TOPIC)?.to_owned(),
        queue_id: half.property(PROP_REAL_QUEUE)?.parse().ok()?,
    })
}

/// The message as the producer sent it (real topic, no broker properties, half flag cleared,
/// broker fields zero, no producer id or sequence): what a commit appends and what a
/// check-back shows the producer.
pub(crate) fn restore(half: &Record<'_>, info: &HalfInfo) -> Result<BytesMut, RequestError> {
    let properties: Vec<(String, String)> = owned_properties(half)?
        .into_iter()
        .filter(|(k, _)| k != PROP_REAL_TOPIC && k != PROP_REAL_QUEUE)
        .collect();
    encode(&RecordFields {
        topic: &info.topic,
        key: half.key(),
        tag: half.tag(),
        properties: &properties,
        body: half.body(),
        born_timestamp: half.born_timestamp(),
        deliver_at: half.deliver_at(),
        producer_id: 0,
        sequence: 0,
        flags: half.flags() & !flags::TRANSACTION_HALF,
    })
}

/// The `%HALF_OP%` record saying `decision` for the half message at `half_offset`.
pub(crate) fn decision_record(
    half_offset: u64,
    transaction_id: &str,
    decision: Decision,
    now_ms: i64,
) -> Result<BytesMut, RequestError> {
    op_record(
        transaction_id,
        &encode_decision(half_offset, decision),
        now_ms,
    )
}

/// The `%HALF_OP%` record saying the half message at `half_offset` was checked back for the
/// `attempt`-th time at `now_ms`.
pub(crate) fn check_record(
    half_offset: u64,
    transaction_id: &str,
    attempt: u32,
    now_ms: i64,
) -> Result<BytesMut, RequestError> {
    op_record(transaction_id, &encode_check(half_offset, attempt), now_ms)
}

/// A `%HALF_OP%` record with `body`, keyed by the transaction id.
fn op_record(transaction_id: &str, body: &[u8], now_ms: i64) -> Result<BytesMut, RequestError> {
    encode(&RecordFields {
        topic: OP_TOPIC,
        key: transaction_id,
        body,
        born_timestamp: now_ms,
        flags: flags::TRANSACTION_DECISION,
        ..RecordFields::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_message_goes_to_half_and_comes_back_as_sent_without_a_producer_id() {
        let props = vec![
            (PROP_TRANSACTION_ID.to_owned(), "tx-1".to_owned()),
            (PROP_PRODUCER_GROUP.to_owned(), "pg".to_owned()),
            ("user".to_owned(), "v".to_owned()),
        ];
        let mut sent = BytesMut::new();
        record::encode(
            &RecordFields {
                topic: "orders",
                key: "k",
                tag: "t",
                properties: &props,
                body: b"hello",
                born_timestamp: 42,
                producer_id: 77,
                sequence: 5,
                flags: flags::TRANSACTION_HALF,
                ..RecordFields::default()
            },
            &mut sent,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let parsed = Record::parse(&sent).unwrap_or_else(|e| panic!("{e}"));
        let (half, info) = to_half(&parsed, 3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.queue_id, 3);
        let half = Record::parse(&half).unwrap_or_else(|e| panic!("{e}"));
        assert!(half.verify_body().is_ok());
        assert_eq!(half.topic(), HALF_TOPIC);
        assert_eq!((half.producer_id(), half.sequence()), (0, 0));
        assert_eq!(self::info(&half), Some(info.clone()));
        let back = restore(&half, &info).unwrap_or_else(|e| panic!("{e}"));
        let back = Record::parse(&back).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.topic(), "orders");
        assert_eq!(back.flags(), 0);
        assert_eq!(back.body(), b"hello");
        assert_eq!(back.born_timestamp(), 42);
        // Broker-made copies carry no idempotence identity of the producer.
        assert_eq!((back.producer_id(), back.sequence()), (0, 0));
        assert_eq!(back.property(PROP_TRANSACTION_ID), Some("tx-1"));
        assert_eq!(back.property(PROP_REAL_TOPIC), None);
        assert_eq!(back.property("user"), Some("v"));
    }

    #[test]
    fn a_half_message_without_a_transaction_id_is_refused() {
        let mut sent = BytesMut::new();
        record::encode(
            &RecordFields {
                topic: "orders",
                body: b"x",
                flags: flags::TRANSACTION_HALF,
                ..RecordFields::default()
            },
            &mut sent,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let parsed = Record::parse(&sent).unwrap_or_else(|e| panic!("{e}"));
        let refused = to_half(&parsed, 0).map(|_| ()).map_err(|e| e.code);
        assert_eq!(refused, Err(ErrorCode::InvalidArgument));
    }
}
