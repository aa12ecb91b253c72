//! Why a classic-group request is refused. Each variant is one of Kafka's group error codes
//! (the Kafka edge maps them one to one); the texts are for logs and `error_message` fields.

/// A classic-group request's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassicError {
    /// The member id is not (or no longer) a member of the group.
    #[error("member {0:?} is not a member of the group")]
    UnknownMember(String),
    /// A first join (JoinGroup v4+) must be repeated with the member id given here.
    #[error("join again with the member id {0:?}")]
    MemberIdRequired(String),
    /// The request names another generation than the group's current one.
    #[error("generation {asked} is not the group's generation {current}")]
    IllegalGeneration {
        /// The generation the request named.
        asked: i32,
        /// The group's generation.
        current: i32,
    },
    /// The group is rebalancing: the member must join again.
    #[error("the group is rebalancing; join again")]
    RebalanceInProgress,
    /// Another member has taken this member's static instance id.
    #[error("instance {0:?} was taken over by a newer member")]
    FencedInstance(String),
    /// The member's protocol type or protocols do not fit the group's.
    #[error("{0}")]
    InconsistentProtocol(String),
    /// Members of Weir's native protocol use the group.
    #[error(
        "group {0:?} is in use by native Weir consumers; a group name is used by one protocol \
         at a time"
    )]
    InUseByNative(String),
    /// The group name is not a valid Weir group name.
    #[error("{0}")]
    InvalidGroupId(String),
    /// The session timeout is out of the broker's range.
    #[error("session timeout {asked_ms} ms is not within {min_ms}..={max_ms} ms")]
    InvalidSessionTimeout {
        /// What the member asked for.
        asked_ms: i64,
        /// The broker's minimum.
        min_ms: u64,
        /// The broker's maximum.
        max_ms: u64,
    },
    /// The group has as many members as the broker allows.
    #[error("the group has reached its limit of {0} members")]
    GroupFull(usize),
    /// The broker coordinates as many groups as it allows.
    #[error("the broker coordinates its limit of {0} groups; retry later")]
    TooManyGroups(usize),
    /// Protocol metadata or an assignment is larger than the broker keeps.
    #[error("{what} is {len} bytes, above the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
}
