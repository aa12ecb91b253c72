//! The rule for consumer group names, shared by the broker (which refuses a bad name where a
//! group enters: heartbeat, commit, send-back, receive, dead letter) and the client (which
//! refuses it before connecting).
//!
//! A group name also names internal topics, `%RETRY%<group>` and `%DLQ%<group>`, so the rule
//! makes every such derived name a valid topic name: 1 to [`MAX_GROUP_NAME_LEN`] characters
//! from `A-Z a-z 0-9 . _ -` (the topic-name alphabet), not starting with `%`. The longest
//! prefix, `%RETRY%` (7 bytes), plus 120 bytes stays within the 127-byte topic-name limit.

use thiserror::Error;

use crate::names::{self, InvalidName};

/// Longest group name, in bytes: the 127-byte topic-name limit minus `%RETRY%`.
pub const MAX_GROUP_NAME_LEN: usize = 120;

/// Why a group name is refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid group name {name:?}: {reason}")]
pub struct GroupNameError {
    /// The refused name.
    pub name: String,
    /// Which rule it breaks.
    pub reason: &'static str,
}

/// Checks a consumer group name (see the module docs for the rule).
pub fn validate_group_name(name: &str) -> Result<(), GroupNameError> {
    let bad = |reason| {
        Err(GroupNameError {
            name: name.to_owned(),
            reason,
        })
    };
    if name.len() > MAX_GROUP_NAME_LEN {
        return bad("must be 1 to 120 characters");
    }
    // The topic-name rule, so the derived topics' names are valid.
    match names::validate(name) {
        Ok(()) => Ok(()),
        Err(InvalidName::Length) => bad("must be 1 to 120 characters"),
        Err(InvalidName::Reserved) => bad("names starting with '%' or '__weir_' are reserved"),
        Err(InvalidName::Character) => bad("only A-Z a-z 0-9 . _ - are allowed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_whose_internal_topics_could_not_exist_are_refused() {
        for good in ["g", "team-a", "billing.v2", "A_1", &"x".repeat(120)] {
            assert_eq!(validate_group_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "team/a",
            "%RETRY%g",
            "a b",
            "..\0",
            "é",
            &"x".repeat(121),
        ] {
            assert!(validate_group_name(bad).is_err(), "{bad:?}");
        }
    }
}
