//! The entries of a transaction: a producer's half message re-encoded into `%HALF%` (a
//! transactional batch), restored into its real topic on commit, and the op records
//! (decisions, check-backs: control batches) written to `%HALF_OP%`.
//!
//! Moving a message between topics means encoding it again. That happens once per transactional message (store, commit), never
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
use weir_proto::batch::{
    BatchBuilder, BatchError, BatchOptions, Compression, Entry, RecordFields, RecordView,
    attributes,
};
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

fn too_large(e: BatchError) -> RequestError {
    RequestError::new(ErrorCode::MessageTooLarge, e.to_string())
}

/// One entry for `topic` with a copy of `record` (no producer identity), `flags` among its
/// attributes, the headers in `drop` left out and `add` appended.
fn copy(
    record: &RecordView<'_>,
    topic: &str,
    flags: u16,
    drop: &[&str],
    add: &[(&str, &[u8])],
) -> Result<BytesMut, RequestError> {
    let options = BatchOptions {
        flags,
        ..BatchOptions::default()
    };
    BatchBuilder::copy_of(topic, options, record, drop, add).map_err(too_large)
}

/// The `%HALF%` entry for a producer's half message (`record` of `entry`) bound for
/// `queue_id` of its topic, and what it says. The producer must have set the transaction id
/// and producer group headers.
pub(crate) fn to_half(
    entry: &Entry<'_>,
    record: &RecordView<'_>,
    queue_id: u32,
) -> Result<(BytesMut, HalfInfo), RequestError> {
    let missing = |name: &str| {
        RequestError::new(
            ErrorCode::InvalidArgument,
            format!("a half message needs the {name} property"),
        )
    };
    let transaction_id = record
        .header_str(PROP_TRANSACTION_ID)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing(PROP_TRANSACTION_ID))?;
    let producer_group = record
        .header_str(PROP_PRODUCER_GROUP)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| missing(PROP_PRODUCER_GROUP))?;
    let queue = queue_id.to_string();
    let bytes = copy(
        record,
        HALF_TOPIC,
        attributes::TRANSACTIONAL,
        &[PROP_REAL_TOPIC, PROP_REAL_QUEUE],
        &[
            (PROP_REAL_TOPIC, entry.topic().as_bytes()),
            (PROP_REAL_QUEUE, queue.as_bytes()),
        ],
    )?;
    let info = HalfInfo {
        transaction_id: transaction_id.to_owned(),
        producer_group: producer_group.to_owned(),
        topic: entry.topic().to_owned(),
        queue_id,
    };
    Ok((bytes, info))
}

/// What a stored `%HALF%` message (`record` of `entry`) says, or `None` when it is not one.
pub(crate) fn info(entry: &Entry<'_>, record: &RecordView<'_>) -> Option<HalfInfo> {
    if entry.topic() != HALF_TOPIC || !entry.is_transactional() {
        return None;
    }
    Some(HalfInfo {
        transaction_id: record.header_str(PROP_TRANSACTION_ID)?.to_owned(),
        producer_group: record.header_str(PROP_PRODUCER_GROUP)?.to_owned(),
        topic: record.header_str(PROP_REAL_TOPIC)?.to_owned(),
        queue_id: record.header_str(PROP_REAL_QUEUE)?.parse().ok()?,
    })
}

/// The message as the producer sent it (real topic, no broker headers, not transactional,
/// broker fields zero, no producer id or sequence): what a commit appends and what a
/// check-back shows the producer.
pub(crate) fn restore(half: &RecordView<'_>, info: &HalfInfo) -> Result<BytesMut, RequestError> {
    copy(
        half,
        &info.topic,
        0,
        &[PROP_REAL_TOPIC, PROP_REAL_QUEUE],
        &[],
    )
}

/// The `%HALF_OP%` entry saying `decision` for the half message at `half_offset`.
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

/// The `%HALF_OP%` entry saying the half message at `half_offset` was checked back for the
/// `attempt`-th time at `now_ms`.
pub(crate) fn check_record(
    half_offset: u64,
    transaction_id: &str,
    attempt: u32,
    now_ms: i64,
) -> Result<BytesMut, RequestError> {
    op_record(transaction_id, &encode_check(half_offset, attempt), now_ms)
}

/// A `%HALF_OP%` entry (a control batch) with `body`, keyed by the transaction id.
fn op_record(transaction_id: &str, body: &[u8], now_ms: i64) -> Result<BytesMut, RequestError> {
    let options = BatchOptions {
        flags: attributes::CONTROL,
        ..BatchOptions::default()
    };
    let mut builder = BatchBuilder::new(OP_TOPIC, options).map_err(too_large)?;
    builder
        .push(
            &RecordFields {
                timestamp: now_ms,
                key: Some(transaction_id.as_bytes()),
                value: Some(body),
            },
            std::iter::empty(),
        )
        .map_err(too_large)?;
    builder.finish(Compression::None).map_err(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_proto::batch::with_record;

    fn sent(headers: &[(&str, &[u8])]) -> BytesMut {
        let options = BatchOptions {
            producer_id: 77,
            producer_epoch: 0,
            base_sequence: 5,
            flags: attributes::TRANSACTIONAL,
        };
        let mut builder = BatchBuilder::new("orders", options).unwrap_or_else(|e| panic!("{e}"));
        builder
            .push(
                &RecordFields {
                    timestamp: 42,
                    key: Some(b"k"),
                    value: Some(b"hello"),
                },
                headers.iter().map(|(k, v)| (*k, Some(*v))),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        builder
            .finish(Compression::None)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_half_message_goes_to_half_and_comes_back_as_sent_without_a_producer_id() {
        let sent = sent(&[
            (PROP_TRANSACTION_ID, b"tx-1"),
            (PROP_PRODUCER_GROUP, b"pg"),
            ("user", b"v"),
        ]);
        let (half, info) = with_record(&sent, 0, |e, r| to_half(e, r, 3))
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(info.queue_id, 3);
        let back = with_record(&half, 0, |e, r| {
            assert!(e.verify_batch().is_ok());
            assert_eq!(e.topic(), HALF_TOPIC);
            assert!(e.is_transactional());
            assert_eq!(e.producer_id(), -1);
            assert_eq!(self::info(e, r), Some(info.clone()));
            restore(r, &info).unwrap_or_else(|e| panic!("{e}"))
        })
        .unwrap_or_else(|e| panic!("{e}"));
        with_record(&back, 0, |e, r| {
            assert_eq!(e.topic(), "orders");
            assert!(!e.is_transactional() && !e.is_control());
            assert_eq!(r.body(), b"hello");
            assert_eq!(r.timestamp, 42);
            // Broker-made copies carry no idempotence identity of the producer.
            assert_eq!((e.producer_id(), e.base_sequence()), (-1, -1));
            assert_eq!(r.header_str(PROP_TRANSACTION_ID), Some("tx-1"));
            assert_eq!(r.header_str(PROP_REAL_TOPIC), None);
            assert_eq!(r.header_str("user"), Some("v"));
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_half_message_without_a_transaction_id_is_refused() {
        let sent = sent(&[]);
        let refused = with_record(&sent, 0, |e, r| {
            to_half(e, r, 0).map(|_| ()).map_err(|e| e.code)
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(refused, Err(ErrorCode::InvalidArgument));
    }
}
