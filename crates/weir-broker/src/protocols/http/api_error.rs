//! Error answers of the HTTP API: the same stable [`ErrorCode`] the native protocol sends, with
//! the HTTP status that matches it, as
//!
//! ```json
//! {"code": 10, "error": "topic_not_found", "message": "topic 'orders' does not exist"}
//! ```

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use weir_proto::ErrorCode;

use crate::error::RequestError;

/// An HTTP API error: a code and a message; the status follows from the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// The stable error code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
}

/// The JSON body of an error answer.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    code: u16,
    error: &'static str,
    message: &'a str,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status for the code.
    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::TopicNotFound
            | ErrorCode::QueueNotFound
            | ErrorCode::GroupNotFound
            | ErrorCode::MessageNotFound
            | ErrorCode::UnsupportedApi => StatusCode::NOT_FOUND,
            ErrorCode::TopicAlreadyExists | ErrorCode::NotQueueOwner => StatusCode::CONFLICT,
            ErrorCode::InvalidArgument
            | ErrorCode::InvalidTopicName
            | ErrorCode::MalformedRequest
            | ErrorCode::UnsupportedVersion
            | ErrorCode::OffsetOutOfRange
            | ErrorCode::CorruptMessage => StatusCode::BAD_REQUEST,
            ErrorCode::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::DiskFull => StatusCode::INSUFFICIENT_STORAGE,
            ErrorCode::Busy | ErrorCode::ShuttingDown | ErrorCode::FlushTimeout => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // The body's message names the leader (`leader=<host:port>`).
            ErrorCode::NotLeader => StatusCode::MISDIRECTED_REQUEST,
            // `internal`, `storage_error`, and codes added later until they get a status here.
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> ApiError {
        ApiError::new(error.code, error.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            tracing::error!(code = %self.code, detail = %self.message, "HTTP API request failed");
        } else if matches!(
            status,
            StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
        ) {
            tracing::warn!(code = %self.code, detail = %self.message, "HTTP API request rejected");
        } else {
            tracing::debug!(code = %self.code, detail = %self.message, "HTTP API request rejected");
        }
        let body = ErrorBody {
            code: self.code as u16,
            error: self.code.name(),
            message: &self.message,
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_fitting_status() {
        let status = |code| ApiError::new(code, "").status();
        assert_eq!(status(ErrorCode::TopicNotFound), StatusCode::NOT_FOUND);
        assert_eq!(status(ErrorCode::TopicAlreadyExists), StatusCode::CONFLICT);
        assert_eq!(status(ErrorCode::InvalidTopicName), StatusCode::BAD_REQUEST);
        assert_eq!(status(ErrorCode::Busy), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            status(ErrorCode::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        for code in ErrorCode::ALL {
            assert!(status(code).is_client_error() || status(code).is_server_error());
        }
    }
}
