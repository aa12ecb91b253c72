//! Transactions on the wire and in the log: the property names a transactional producer sets,
//! the internal topics the broker keeps half messages and their op records in, and the body of
//! an op record.
//!
//! A half message is a record with [`attributes::TRANSACTIONAL`](crate::batch::attributes) set and
//! the properties [`PROP_TRANSACTION_ID`] and [`PROP_PRODUCER_GROUP`]. The broker stores it in
//! [`HALF_TOPIC`] (queue 0), adding [`PROP_REAL_TOPIC`] and [`PROP_REAL_QUEUE`]. What happens to
//! it afterwards is written as op records in [`OP_TOPIC`] (queue 0): records with
//! [`attributes::CONTROL`](crate::batch::attributes) set, the transaction id as their key,
//! the time of the op as their born timestamp, and this body (little-endian):
//!
//! ```text
//! offset  size  field
//!  0      8     half_offset u64   commit-log offset of the half message
//!  8      1     kind u8           1 = commit, 2 = rollback, 3 = checked back
//!  9      4     attempt u32       kind 3 only: which check-back of the transaction, from 1
//! ```
//!
//! A decision (kind 1 or 2) is 9 bytes long, a check-back record (kind 3) 13.

use thiserror::Error;

pub use crate::names::{HALF_TOPIC, OP_TOPIC};
/// Property: the transaction id, set by the producer; kept on the committed message.
pub const PROP_TRANSACTION_ID: &str = "__TRANSACTION_ID";
/// Property: the producer group that may be asked about the transaction.
pub const PROP_PRODUCER_GROUP: &str = "__PRODUCER_GROUP";
/// Property added by the broker to a stored half message: the topic to commit it to.
pub const PROP_REAL_TOPIC: &str = "__REAL_TOPIC";
/// Property added by the broker to a stored half message: the queue to commit it to.
pub const PROP_REAL_QUEUE: &str = "__REAL_QUEUE";
/// Length of a decision record's body.
pub const DECISION_BODY_LEN: usize = 9;
/// Length of a check-back record's body.
pub const CHECK_BODY_LEN: usize = 13;

const KIND_COMMIT: u8 = 1;
const KIND_ROLLBACK: u8 = 2;
const KIND_CHECKED: u8 = 3;

/// What became of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The half message was made visible in its real topic.
    Commit = 1,
    /// The half message will never be visible.
    Rollback = 2,
}

/// What an op record says about its half message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfOp {
    /// The transaction was decided.
    Decided(Decision),
    /// The broker asked the producer group about the transaction, for the `attempt`-th time.
    Checked {
        /// Which check-back this was, counted from 1.
        attempt: u32,
    },
}

/// An op record's body is not one this version writes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed transaction op record")]
pub struct BadOpRecord;

/// The body of the decision record for the half message at `half_offset`.
pub fn encode_decision(half_offset: u64, decision: Decision) -> [u8; DECISION_BODY_LEN] {
    let mut body = [0u8; DECISION_BODY_LEN];
    body[..8].copy_from_slice(&half_offset.to_le_bytes());
    body[8] = match decision {
        Decision::Commit => KIND_COMMIT,
        Decision::Rollback => KIND_ROLLBACK,
    };
    body
}

/// The body of the record of the `attempt`-th check-back of the half message at
/// `half_offset`.
pub fn encode_check(half_offset: u64, attempt: u32) -> [u8; CHECK_BODY_LEN] {
    let mut body = [0u8; CHECK_BODY_LEN];
    body[..8].copy_from_slice(&half_offset.to_le_bytes());
    body[8] = KIND_CHECKED;
    body[9..].copy_from_slice(&attempt.to_le_bytes());
    body
}

/// The half offset and op in an op record's body.
pub fn decode_op(body: &[u8]) -> Result<(u64, HalfOp), BadOpRecord> {
    let (Some(offset), Some(&kind)) = (body.get(..8), body.get(8)) else {
        return Err(BadOpRecord);
    };
    let mut half_offset = [0u8; 8];
    half_offset.copy_from_slice(offset);
    let half_offset = u64::from_le_bytes(half_offset);
    let op = match (kind, body.len()) {
        (KIND_COMMIT, DECISION_BODY_LEN) => HalfOp::Decided(Decision::Commit),
        (KIND_ROLLBACK, DECISION_BODY_LEN) => HalfOp::Decided(Decision::Rollback),
        (KIND_CHECKED, CHECK_BODY_LEN) => {
            let mut attempt = [0u8; 4];
            attempt.copy_from_slice(&body[9..]);
            HalfOp::Checked {
                attempt: u32::from_le_bytes(attempt),
            }
        }
        _ => return Err(BadOpRecord),
    };
    Ok((half_offset, op))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_records_round_trip_and_garbage_is_refused() {
        for (offset, decision) in [(0, Decision::Commit), (u64::MAX, Decision::Rollback)] {
            let body = encode_decision(offset, decision);
            assert_eq!(decode_op(&body), Ok((offset, HalfOp::Decided(decision))));
        }
        for (offset, attempt) in [(7, 1), (u64::MAX, u32::MAX)] {
            let body = encode_check(offset, attempt);
            assert_eq!(decode_op(&body), Ok((offset, HalfOp::Checked { attempt })));
        }
        assert_eq!(decode_op(&[0; 8]), Err(BadOpRecord));
        let mut body = encode_decision(7, Decision::Commit);
        body[8] = 9;
        assert_eq!(decode_op(&body), Err(BadOpRecord));
        // A kind with the other kind's length.
        body[8] = KIND_CHECKED;
        assert_eq!(decode_op(&body), Err(BadOpRecord));
        let mut body = encode_check(7, 2);
        body[8] = KIND_COMMIT;
        assert_eq!(decode_op(&body), Err(BadOpRecord));
    }
}
