//! The broker's errors: [`BrokerError`] for starting and stopping, [`RequestError`] for the
//! answer to one request (an [`ErrorCode`] and a message).

use std::fmt::Display;

use weir_proto::{ErrorCode, GroupNameError};
use weir_store::StoreError;

/// Why the broker could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The data directory is held by another process.
    #[error(
        "the data directory {dir} is in use by another weir process (its LOCK file is held); \
         stop that process or choose another data_dir"
    )]
    DataDirLocked {
        /// The data directory.
        dir: String,
    },
    /// The storage engine failed to open or to shut down.
    #[error("storage: {0}")]
    Store(#[source] StoreError),
    /// The native listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Reading or writing the broker's own files failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The broker group's Raft node could not start.
    #[error("replication: {0}")]
    Replication(String),
}

impl BrokerError {
    /// Wraps a store error, recognising the data-directory lock.
    pub(crate) fn from_store(error: StoreError, data_dir: &std::path::Path) -> BrokerError {
        match error {
            StoreError::Locked { .. } => BrokerError::DataDirLocked {
                dir: data_dir.display().to_string(),
            },
            other => BrokerError::Store(other),
        }
    }

    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Display, source: std::io::Error) -> BrokerError {
        BrokerError::Io {
            context: context.to_string(),
            source,
        }
    }
}

/// The error answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RequestError {
    /// The code put in the response header.
    pub code: ErrorCode,
    /// The text put in `ErrorResponse.message`.
    pub message: String,
}

impl RequestError {
    /// An error answer with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> RequestError {
        RequestError {
            code,
            message: message.into(),
        }
    }
}

impl From<StoreError> for RequestError {
    fn from(error: StoreError) -> RequestError {
        let code = match &error {
            StoreError::DiskFull => ErrorCode::DiskFull,
            StoreError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            StoreError::CorruptRecord(_) | StoreError::TopicMismatch { .. } => {
                ErrorCode::CorruptMessage
            }
            StoreError::EmptyBatch => ErrorCode::InvalidArgument,
            StoreError::InvalidTopic(_) => ErrorCode::InvalidTopicName,
            StoreError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            StoreError::NotFound | StoreError::InvalidPosition(_) => ErrorCode::MessageNotFound,
            StoreError::Io(_) => ErrorCode::StorageError,
            StoreError::Closed => ErrorCode::ShuttingDown,
            StoreError::NotLeader { leader } => {
                let message = match leader {
                    Some(l) => format!("leader={l}"),
                    None => "no leader known yet".to_owned(),
                };
                return RequestError::new(ErrorCode::NotLeader, message);
            }
            StoreError::Refused { code, .. } => ErrorCode::from_u16(*code),
            StoreError::Replication(_) => ErrorCode::StorageError,
            StoreError::Locked { .. }
            | StoreError::InvalidConfig(_)
            | StoreError::OldFormat { .. }
            | StoreError::ReplicaMismatch(_) => ErrorCode::Internal,
        };
        RequestError::new(code, error.to_string())
    }
}

impl From<GroupNameError> for RequestError {
    fn from(error: GroupNameError) -> RequestError {
        RequestError::new(ErrorCode::InvalidArgument, error.to_string())
    }
}
