//! Transactions on the wire and in the log: the property names a transactional producer sets,
//! the internal topics the broker keeps half messages and decisions in, and the body of a
//! decision record.
//!
//! A half message is a record with [`flags::TRANSACTION_HALF`](crate::record::flags) set and
//! the properties [`PROP_TRANSACTION_ID`] and [`PROP_PRODUCER_GROUP`]. The broker stores it in
//! [`HALF_TOPIC`] (queue 0), adding [`PROP_REAL_TOPIC`] and [`PROP_REAL_QUEUE`]. A decision is
//! a record in [`OP_TOPIC`] (queue 0) with
//! [`flags::TRANSACTION_DECISION`](crate::record::flags) set, the transaction id as its key and
//! this body (little-endian):
//!
//! ```text
//! offset  size  field
//!  0      8     half_offset u64   commit-log offset of the half message decided
//!  8      1     decision u8       1 = commit, 2 = rollback
//! ```

use thiserror::Error;

/// Internal topic holding half messages (queue 0).
pub const HALF_TOPIC: &str = "%HALF%";
/// Internal topic holding transaction decisions (queue 0).
pub const OP_TOPIC: &str = "%HALF_OP%";
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

/// What became of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The half message was made visible in its real topic.
    Commit = 1,
    /// The half message will never be visible.
    Rollback = 2,
}

/// A decision record's body is not one this version writes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("malformed transaction decision record")]
pub struct BadDecision;

/// The body of the decision record for the half message at `half_offset`.
pub fn encode_decision(half_offset: u64, decision: Decision) -> [u8; DECISION_BODY_LEN] {
    let mut body = [0u8; DECISION_BODY_LEN];
    body[..8].copy_from_slice(&half_offset.to_le_bytes());
    body[8] = decision as u8;
    body
}

/// The half offset and decision in a decision record's body.
pub fn decode_decision(body: &[u8]) -> Result<(u64, Decision), BadDecision> {
    if body.len() != DECISION_BODY_LEN {
        return Err(BadDecision);
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&body[..8]);
    let decision = match body[8] {
        1 => Decision::Commit,
        2 => Decision::Rollback,
        _ => return Err(BadDecision),
    };
    Ok((u64::from_le_bytes(offset), decision))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_round_trip_and_garbage_is_refused() {
        for (offset, decision) in [(0, Decision::Commit), (u64::MAX, Decision::Rollback)] {
            let body = encode_decision(offset, decision);
            assert_eq!(decode_decision(&body), Ok((offset, decision)));
        }
        assert_eq!(decode_decision(&[0; 8]), Err(BadDecision));
        let mut body = encode_decision(7, Decision::Commit);
        body[8] = 9;
        assert_eq!(decode_decision(&body), Err(BadDecision));
    }
}
