//! Names the broker and its clients must agree on: internal topics, the properties the broker
//! sets on the copies it makes, and the rules for names users choose.
//!
//! Internal topics start with [`INTERNAL_PREFIX`], which no user topic may:
//!
//! ```text
//! %DELAY%          delayed messages until they are due (one queue)
//! %HALF%           transactions' half messages (one queue)
//! %HALF_OP%        decisions and check-backs about half messages (one queue)
//! %RETRY%<group>   a consumer group's messages waiting to be consumed again (one queue)
//! %DLQ%<group>     a consumer group's dead letters (one queue)
//! ```

/// First character of every internal topic's name; user topics may not start with it.
pub const INTERNAL_PREFIX: char = '%';
/// Delayed messages wait here until they are due.
pub const DELAY_TOPIC: &str = "%DELAY%";
/// Transactions' half messages.
pub const HALF_TOPIC: &str = "%HALF%";
/// Op records of half messages: decisions and check-backs.
pub const OP_TOPIC: &str = "%HALF_OP%";
/// Prefix of a group's retry topic.
pub const RETRY_PREFIX: &str = "%RETRY%";
/// Prefix of a group's dead-letter topic.
pub const DLQ_PREFIX: &str = "%DLQ%";

/// Prefix of the names Kafka clients see for internal topics (`__weir_retry.<group>`,
/// `__weir_dlq.<group>`); user topics may not start with it either.
pub const KAFKA_RESERVED_PREFIX: &str = "__weir_";

/// Longest topic or group name, in bytes.
pub const MAX_NAME_LEN: usize = 127;

/// Property of a retried or dead-lettered copy: the topic the message was first produced to.
pub const PROP_ORIGIN_TOPIC: &str = "ORIGIN_TOPIC";
/// Property of a retried or dead-lettered copy: the message's id in its first topic.
pub const PROP_ORIGIN_MSG_ID: &str = "ORIGIN_MSG_ID";
/// Property of a retried or dead-lettered copy: failed deliveries so far.
pub const PROP_RECONSUME_TIMES: &str = "RECONSUME_TIMES";
/// Property of a `%DELAY%` record: the topic it is delivered to.
pub const PROP_DELAY_REAL_TOPIC: &str = "REAL_TOPIC";
/// Property of a `%DELAY%` record: the queue it is delivered to.
pub const PROP_DELAY_REAL_QUEUE: &str = "REAL_QUEUE";
/// Property of a delivered delayed record: the message id it had in `%DELAY%`.
pub const PROP_DELAY_ORIGIN_ID: &str = "DELAY_ORIGIN_ID";

/// The retry topic of `group`.
pub fn retry_topic(group: &str) -> String {
    format!("{RETRY_PREFIX}{group}")
}

/// The dead-letter topic of `group`.
pub fn dlq_topic(group: &str) -> String {
    format!("{DLQ_PREFIX}{group}")
}

/// Whether `topic` is some group's retry topic (`%RETRY%` followed by a group name).
pub fn is_retry_topic(topic: &str) -> bool {
    topic.len() > RETRY_PREFIX.len() && topic.starts_with(RETRY_PREFIX)
}

/// Whether `topic` is some group's dead-letter topic (`%DLQ%` followed by a group name).
pub fn is_dlq_topic(topic: &str) -> bool {
    topic.len() > DLQ_PREFIX.len() && topic.starts_with(DLQ_PREFIX)
}

/// Whether `topic` is internal (kept by the broker; clients may not produce to it).
pub fn is_internal(topic: &str) -> bool {
    topic.starts_with(INTERNAL_PREFIX)
}

/// Why a name a user chose cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// Empty or longer than [`MAX_NAME_LEN`].
    #[error("must be 1 to 127 characters")]
    Length,
    /// Starts with [`INTERNAL_PREFIX`].
    #[error("names starting with '%' or '__weir_' are reserved for internal topics")]
    Reserved,
    /// Has a character outside `A-Z a-z 0-9 . _ -`.
    #[error("only A-Z a-z 0-9 . _ - are allowed")]
    Character,
}

/// Checks a topic name a user chose: 1 to 127 characters from `A-Z a-z 0-9 . _ -`, not
/// starting with `%`. Group names follow the same rule, shorter
/// ([`crate::group_name::validate_group_name`]), so the topics derived from a group
/// (`%RETRY%<group>`, `%DLQ%<group>`) have valid names.
pub fn validate(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(InvalidName::Length);
    }
    if name.starts_with(INTERNAL_PREFIX) || name.starts_with(KAFKA_RESERVED_PREFIX) {
        return Err(InvalidName::Reserved);
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(InvalidName::Character);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_and_their_predicates_agree() {
        assert!(is_retry_topic(&retry_topic("g")));
        assert!(is_dlq_topic(&dlq_topic("g")));
        assert!(!is_retry_topic(RETRY_PREFIX) && !is_dlq_topic(DLQ_PREFIX));
        assert!(!is_retry_topic("g") && !is_dlq_topic(&retry_topic("g")));
        for topic in [
            DELAY_TOPIC,
            HALF_TOPIC,
            OP_TOPIC,
            &retry_topic("g"),
            &dlq_topic("g"),
        ] {
            assert!(is_internal(topic), "{topic}");
            assert_eq!(validate(topic), Err(InvalidName::Reserved));
        }
    }

    #[test]
    fn user_names_follow_one_rule() {
        assert_eq!(validate("orders.v2_a-b"), Ok(()));
        assert_eq!(validate(&"a".repeat(MAX_NAME_LEN)), Ok(()));
        assert_eq!(validate(""), Err(InvalidName::Length));
        assert_eq!(
            validate(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(InvalidName::Length)
        );
        for bad in ["a b", "ü", "a/b", "team/a"] {
            assert_eq!(validate(bad), Err(InvalidName::Character), "{bad}");
        }
    }
}
