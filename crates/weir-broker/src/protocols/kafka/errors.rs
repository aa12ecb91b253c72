//! Weir's error codes as Kafka error codes: retriable conditions (busy, stopping, a full disk)
//! become errors Kafka clients retry, client mistakes become the matching non-retriable ones.

use kafka_protocol::ResponseError;
use weir_proto::ErrorCode;

use crate::error::RequestError;

/// The Kafka error code for a Weir error code.
pub(crate) fn kafka_code(code: ErrorCode) -> i16 {
    use ResponseError as K;
    let kafka = match code {
        ErrorCode::None => return 0,
        ErrorCode::TopicNotFound | ErrorCode::QueueNotFound => K::UnknownTopicOrPartition,
        ErrorCode::TopicAlreadyExists => K::TopicAlreadyExists,
        ErrorCode::InvalidTopicName => K::InvalidTopicException,
        ErrorCode::MessageTooLarge => K::MessageTooLarge,
        ErrorCode::CorruptMessage => K::CorruptMessage,
        ErrorCode::OffsetOutOfRange => K::OffsetOutOfRange,
        ErrorCode::GroupNotFound => K::GroupIdNotFound,
        ErrorCode::OutOfOrderSequence => K::OutOfOrderSequenceNumber,
        ErrorCode::DuplicateSequence => K::DuplicateSequenceNumber,
        ErrorCode::UnsupportedApi | ErrorCode::UnsupportedVersion => K::UnsupportedVersion,
        ErrorCode::MalformedRequest | ErrorCode::InvalidArgument => K::InvalidRequest,
        ErrorCode::DiskFull | ErrorCode::StorageError => K::KafkaStorageError,
        // Retried by the client after a back-off, as Kafka's own overload answers are.
        ErrorCode::Busy | ErrorCode::FlushTimeout => K::RequestTimedOut,
        ErrorCode::ShuttingDown | ErrorCode::NotLeader => K::NotLeaderOrFollower,
        _ => K::UnknownServerError,
    };
    kafka.code()
}

/// The Kafka error code and message of a failed request.
pub(crate) fn of(error: &RequestError) -> (i16, String) {
    (kafka_code(error.code), error.message.clone())
}
