//! The HTTP face of an error: [`ApiError`], a public error code with a message and the HTTP
//! status chosen for it, answered as `{"code": N, "name": "unknown_topic", "message": "…"}`.
//!
//! The code for a core error comes from [`crate::error::public_error`], the one mapping shared
//! by every front end; this file only adds the HTTP status for each code, and the errors that
//! only HTTP has (a malformed JSON body, a bad query string, an unknown path). It must not pick
//! a different code than the other front ends would for the same core error.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use weir_core::Error;
use weir_proto::ErrorCode;

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The stable numeric code (the same as in the native protocol).
    #[schema(example = 100)]
    pub code: u16,
    /// The stable `snake_case` name of the code: what a program should branch on.
    #[schema(example = "unknown_topic")]
    pub name: String,
    /// What happened, naming the topic, subscription or limit involved.
    #[schema(example = "unknown topic 'orders'")]
    pub message: String,
}

/// An error answered to an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    /// An error with the status [`status_for`] gives `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status: status_for(code),
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }

    /// An object of this name exists already, for objects the public code table has no
    /// `*_exists` code for (exchanges with other settings, subscriptions): the code says the
    /// argument was refused and the status says why.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::CONFLICT,
            code: ErrorCode::InvalidArgument,
            message: message.into(),
        }
    }
}

/// The HTTP status of each public code. Codes an HTTP request cannot produce (handshake,
/// protocol version) still get a sensible status, so that a new mapping never panics.
pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedFrame | ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorCode::UnsupportedVersion | ErrorCode::HandshakeRequired => StatusCode::BAD_REQUEST,
        ErrorCode::UnsupportedRequest => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::NotFound | ErrorCode::UnknownTopic | ErrorCode::NoSuchSubscription => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::Unauthorised => StatusCode::UNAUTHORIZED,
        ErrorCode::TopicExists | ErrorCode::Duplicate => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        // The request was understood but nothing is bound to receive it.
        ErrorCode::Unroutable => StatusCode::UNPROCESSABLE_ENTITY,
        // Both say "slow down and retry", which is what 429 tells an HTTP client.
        ErrorCode::Quota | ErrorCode::BacklogFull => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        ErrorCode::ShuttingDown | ErrorCode::StoragePoisoned => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        // The table is non-exhaustive: a code added later is a server-side condition until it
        // is given its own status here.
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        let (code, message) = crate::error::public_error(&error);
        match error {
            // The code table has no `exchange_exists`: the code says the argument was refused,
            // and the status, as for a topic that exists, says why.
            Error::ExchangeExists(_) => ApiError {
                status: StatusCode::CONFLICT,
                code,
                message,
            },
            _ => ApiError::new(code, message),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, code = %self.code, message = %self.message, "http request failed");
        }
        let body = ErrorBody {
            code: self.code.code(),
            name: self.code.name().to_owned(),
            message: self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::PayloadTooLarge, rejection.body_text())
        } else {
            // The body could not be read (the client went away or sent a broken chunk).
            ApiError::new(ErrorCode::MalformedFrame, rejection.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::invalid_argument(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::invalid_argument(rejection.body_text())
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(error: serde_json::Error) -> ApiError {
        use serde_json::error::Category;
        match error.classify() {
            // Not JSON at all, or cut short.
            Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                ErrorCode::MalformedFrame,
                format!("the body is not valid JSON: {error}"),
            ),
            // JSON, but not the shape this endpoint takes (a wrong type, a missing field).
            Category::Data => {
                ApiError::invalid_argument(format!("the body does not fit this request: {error}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_code_has_a_status_and_only_internal_is_a_server_fault() {
        for &code in ErrorCode::ALL {
            let status = status_for(code);
            let server_side = matches!(
                code,
                ErrorCode::Internal
                    | ErrorCode::ShuttingDown
                    | ErrorCode::StoragePoisoned
                    | ErrorCode::StorageFull
            );
            assert_eq!(status.is_server_error(), server_side, "{code}");
        }
    }

    #[test]
    fn core_errors_the_shared_mapping_lacks_are_not_internal() {
        let unroutable = ApiError::from(Error::Unroutable {
            exchange: "orders".into(),
            routing_key: "x".into(),
        });
        assert_eq!(unroutable.code, ErrorCode::Unroutable);
        let backlog = ApiError::from(Error::BacklogFull {
            topic: "t".into(),
            group: "g".into(),
        });
        assert_eq!(backlog.status, StatusCode::TOO_MANY_REQUESTS);
        let unknown = ApiError::from(Error::UnknownExchange("e".into()));
        assert_eq!(unknown.status, StatusCode::NOT_FOUND);
        let scheduled = ApiError::from(Error::NotFound("no scheduled message 7".into()));
        assert_eq!(scheduled.code, ErrorCode::NotFound);
        let exists = ApiError::from(Error::ExchangeExists("e".into()));
        assert_eq!(exists.status, StatusCode::CONFLICT);
    }
}
