//! Stable numeric error codes carried in the `error_code` field of response frames.
//!
//! The numbers never change meaning; new errors get new numbers. Clients decide whether to
//! retry from [`ErrorCode::is_retriable`].

/// An error a broker or name server answers a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// Success.
    None = 0,
    /// An unexpected failure inside the server.
    Internal = 1,
    /// The api key is not one the server knows.
    UnsupportedApi = 2,
    /// The api version is not one the server speaks.
    UnsupportedVersion = 3,
    /// The request body does not decode, or a field is out of range.
    MalformedRequest = 4,
    /// A request argument is invalid (a bad name, a zero count, ...).
    InvalidArgument = 5,
    /// The topic does not exist.
    TopicNotFound = 10,
    /// A topic of that name exists already.
    TopicAlreadyExists = 11,
    /// The topic name is not allowed (length or characters).
    InvalidTopicName = 12,
    /// The queue id is not one of the topic's queues.
    QueueNotFound = 13,
    /// A message is larger than the broker's limit.
    MessageTooLarge = 14,
    /// A record's checksum or layout is wrong.
    CorruptMessage = 15,
    /// The broker's disk is full.
    DiskFull = 16,
    /// The broker's storage failed.
    StorageError = 17,
    /// The offset is below the queue's minimum or above its maximum.
    OffsetOutOfRange = 18,
    /// The consumer does not own the queue it pulls from (clustering mode).
    NotQueueOwner = 19,
    /// The consumer group is unknown.
    GroupNotFound = 20,
    /// No message has that id or key.
    MessageNotFound = 22,
    /// The server is overloaded; retry later.
    Busy = 23,
    /// The server is shutting down.
    ShuttingDown = 24,
    /// The message was not made durable in time (sync flush).
    FlushTimeout = 25,
    /// A shared-group receipt does not parse, or its delivery is over (acked, or redelivered
    /// after its invisibility ran out).
    InvalidReceipt = 40,
    /// An idempotent producer's batch does not start right after its last stored sequence.
    OutOfOrderSequence = 50,
    /// An idempotent producer's batch repeats sequences older than the broker remembers.
    DuplicateSequence = 51,
    /// The consumer group is in use by members of the other protocol (a group name is used by
    /// native or by Kafka consumers, one protocol at a time).
    GroupInUseByOtherProtocol = 26,
    /// This replica does not lead its broker group: writes and group work go to the leader
    /// (the error's message names it when known: `leader=<host:port>`).
    NotLeader = 27,
}

impl ErrorCode {
    /// Every code, in number order.
    pub const ALL: [ErrorCode; 26] = [
        ErrorCode::None,
        ErrorCode::Internal,
        ErrorCode::UnsupportedApi,
        ErrorCode::UnsupportedVersion,
        ErrorCode::MalformedRequest,
        ErrorCode::InvalidArgument,
        ErrorCode::TopicNotFound,
        ErrorCode::TopicAlreadyExists,
        ErrorCode::InvalidTopicName,
        ErrorCode::QueueNotFound,
        ErrorCode::MessageTooLarge,
        ErrorCode::CorruptMessage,
        ErrorCode::DiskFull,
        ErrorCode::StorageError,
        ErrorCode::OffsetOutOfRange,
        ErrorCode::NotQueueOwner,
        ErrorCode::GroupNotFound,
        ErrorCode::MessageNotFound,
        ErrorCode::Busy,
        ErrorCode::ShuttingDown,
        ErrorCode::FlushTimeout,
        ErrorCode::GroupInUseByOtherProtocol,
        ErrorCode::NotLeader,
        ErrorCode::InvalidReceipt,
        ErrorCode::OutOfOrderSequence,
        ErrorCode::DuplicateSequence,
    ];

    /// The code for a number; unknown numbers map to [`ErrorCode::Internal`].
    pub fn from_u16(value: u16) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|c| *c as u16 == value)
            .unwrap_or(ErrorCode::Internal)
    }

    /// Whether the same request may succeed if sent again later (to this or another broker).
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::Busy
                | ErrorCode::ShuttingDown
                | ErrorCode::FlushTimeout
                | ErrorCode::StorageError
                | ErrorCode::DiskFull
                | ErrorCode::Internal
                | ErrorCode::NotLeader
        )
    }

    /// A short snake_case name, for logs, metrics and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "none",
            ErrorCode::Internal => "internal",
            ErrorCode::UnsupportedApi => "unsupported_api",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::MalformedRequest => "malformed_request",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::TopicNotFound => "topic_not_found",
            ErrorCode::TopicAlreadyExists => "topic_already_exists",
            ErrorCode::InvalidTopicName => "invalid_topic_name",
            ErrorCode::QueueNotFound => "queue_not_found",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::CorruptMessage => "corrupt_message",
            ErrorCode::DiskFull => "disk_full",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::OffsetOutOfRange => "offset_out_of_range",
            ErrorCode::NotQueueOwner => "not_queue_owner",
            ErrorCode::GroupNotFound => "group_not_found",
            ErrorCode::MessageNotFound => "message_not_found",
            ErrorCode::Busy => "busy",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::FlushTimeout => "flush_timeout",
            ErrorCode::InvalidReceipt => "invalid_receipt",
            ErrorCode::OutOfOrderSequence => "out_of_order_sequence",
            ErrorCode::DuplicateSequence => "duplicate_sequence",
            ErrorCode::GroupInUseByOtherProtocol => "group_in_use_by_other_protocol",
            ErrorCode::NotLeader => "not_leader",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), *self as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_is_internal() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(code as u16), code);
        }
        assert_eq!(ErrorCode::from_u16(60000), ErrorCode::Internal);
    }
}
