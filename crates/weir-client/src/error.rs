//! The one error type of the client, [`ClientError`], and whether an error is worth retrying.

use std::time::Duration;

use weir_proto::ErrorCode;
use weir_proto::batch::BatchError;

/// Everything that can go wrong talking to Weir.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A TCP connection to `addr` could not be opened.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        error: std::io::Error,
    },
    /// An open connection failed or was closed while requests were in flight.
    #[error("connection to {addr} lost: {reason}")]
    ConnectionLost {
        /// The peer's address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// No answer came in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for (an api name, "connect", ...).
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// The server answered with an error code.
    #[error("{message}")]
    Server {
        /// The stable error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server's answer did not follow the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message could not be encoded, or a received record did not decode.
    #[error("bad record: {0}")]
    Record(BatchError),
    /// The route of a topic has no queues.
    #[error("no route to topic '{0}'")]
    NoRoute(String),
    /// An argument given to the client is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client object was closed.
    #[error("client is closed")]
    Closed,
}

impl ClientError {
    /// Whether the same request may succeed if sent again later, to this or another broker.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::ConnectionLost { .. }
            | ClientError::Timeout { .. } => true,
            ClientError::Server { code, .. } => code.is_retriable(),
            ClientError::Protocol(_)
            | ClientError::Record(_)
            | ClientError::NoRoute(_)
            | ClientError::InvalidArgument(_)
            | ClientError::Closed => false,
        }
    }

    /// Whether a produce request that failed this way may have been stored anyway (so
    /// sending it again may store it twice): it timed out, its connection broke while it was
    /// out, or the broker failed after taking it. A refused connection or a `busy`,
    /// `shutting_down` or `disk_full` answer means it was not stored.
    pub fn may_have_been_stored(&self) -> bool {
        match self {
            ClientError::ConnectionLost { .. } | ClientError::Timeout { .. } => true,
            ClientError::Server { code, .. } => matches!(
                code,
                ErrorCode::FlushTimeout | ErrorCode::StorageError | ErrorCode::Internal
            ),
            _ => false,
        }
    }

    /// Whether the error is about what was sent (it could not be encoded, or was invalid),
    /// not about the route or the broker: sending elsewhere would not help.
    pub(crate) fn is_about_the_message(&self) -> bool {
        matches!(
            self,
            ClientError::Record(_) | ClientError::InvalidArgument(_)
        )
    }

    /// The server's error code, when the server answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// A server error from a code and message, falling back to the code's name when the
    /// message is empty.
    pub(crate) fn server(code: ErrorCode, message: String) -> ClientError {
        let message = if message.is_empty() {
            code.to_string()
        } else {
            message
        };
        ClientError::Server { code, message }
    }
}

impl From<BatchError> for ClientError {
    fn from(e: BatchError) -> Self {
        ClientError::Record(e)
    }
}

/// The client's result type.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    /// A copy of this error for each of several waiters that share one failure (the messages
    /// of one batch). I/O sources are copied as their kind and text.
    pub(crate) fn duplicate(&self) -> ClientError {
        match self {
            ClientError::Connect { addr, error } => ClientError::Connect {
                addr: addr.clone(),
                error: std::io::Error::new(error.kind(), error.to_string()),
            },
            ClientError::ConnectionLost { addr, reason } => ClientError::ConnectionLost {
                addr: addr.clone(),
                reason: reason.clone(),
            },
            ClientError::Timeout { what, after } => ClientError::Timeout {
                what: what.clone(),
                after: *after,
            },
            ClientError::Server { code, message } => ClientError::Server {
                code: *code,
                message: message.clone(),
            },
            ClientError::Protocol(m) => ClientError::Protocol(m.clone()),
            ClientError::Record(e) => ClientError::Record(e.clone()),
            ClientError::NoRoute(t) => ClientError::NoRoute(t.clone()),
            ClientError::InvalidArgument(m) => ClientError::InvalidArgument(m.clone()),
            ClientError::Closed => ClientError::Closed,
        }
    }
}
