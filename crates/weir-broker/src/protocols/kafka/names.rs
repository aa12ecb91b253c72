//! Kafka topic names ↔ Weir topic names.
//!
//! User topics keep their names. Weir's internal topics start with `%`, which Kafka does not
//! accept in a topic name; the ones a consumer has reason to read get Kafka names:
//!
//! ```text
//! Weir            Kafka
//! %RETRY%<group>  __weir_retry.<group>
//! %DLQ%<group>    __weir_dlq.<group>
//! %DELAY%, %HALF%, %HALF_OP%   not shown (the broker's own bookkeeping)
//! ```
//!
//! Weir reserves the `__weir_` prefix for these names (see `weir_proto::names::validate`).

use std::borrow::Cow;

use weir_proto::names;

/// Kafka name prefix of a group's retry topic.
pub(crate) const KAFKA_RETRY_PREFIX: &str = "__weir_retry.";
/// Kafka name prefix of a group's dead-letter topic.
pub(crate) const KAFKA_DLQ_PREFIX: &str = "__weir_dlq.";

/// The Weir topic a Kafka client means by `kafka_name`.
pub(crate) fn to_weir(kafka_name: &str) -> Cow<'_, str> {
    if let Some(group) = kafka_name.strip_prefix(KAFKA_RETRY_PREFIX) {
        Cow::Owned(names::retry_topic(group))
    } else if let Some(group) = kafka_name.strip_prefix(KAFKA_DLQ_PREFIX) {
        Cow::Owned(names::dlq_topic(group))
    } else {
        Cow::Borrowed(kafka_name)
    }
}

/// The name Kafka clients see for `weir_name`; `None` for internal topics they never see.
pub(crate) fn to_kafka(weir_name: &str) -> Option<Cow<'_, str>> {
    if names::is_retry_topic(weir_name) {
        Some(Cow::Owned(format!(
            "{KAFKA_RETRY_PREFIX}{}",
            &weir_name[names::RETRY_PREFIX.len()..]
        )))
    } else if names::is_dlq_topic(weir_name) {
        Some(Cow::Owned(format!(
            "{KAFKA_DLQ_PREFIX}{}",
            &weir_name[names::DLQ_PREFIX.len()..]
        )))
    } else if names::is_internal(weir_name) {
        None
    } else {
        Some(Cow::Borrowed(weir_name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_and_dead_letter_topics_round_trip() {
        for weir in ["orders", "%RETRY%billing", "%DLQ%billing"] {
            let kafka = to_kafka(weir).unwrap();
            assert!(!kafka.contains('%'), "{kafka}");
            assert_eq!(to_weir(&kafka), weir);
        }
        assert_eq!(to_kafka("%DELAY%"), None);
        assert_eq!(to_kafka("%HALF%"), None);
    }
}
