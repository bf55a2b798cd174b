//! The client's one error type, [`Error`], and what a caller may do about each variant.
//!
//! Server errors keep the public code from `weir_proto::codes` and the server's message, so a
//! caller can match on [`ErrorCode`] exactly as the CLI and HTTP users do. Everything else is
//! about the connection (I/O, closed, timed out) or a peer that broke the protocol. `Error` is
//! `Clone` because one failure is often reported to many waiters: every message of a failed
//! batch, every request pending on a lost connection. This module decides nothing; it only
//! describes.

use std::sync::Arc;

use weir_proto::ErrorCode;

/// What went wrong with a client call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the request. `code` is `None` only for a code newer than this
    /// client; `raw_code` always holds the number.
    #[error("server error {}: {message}", code.map_or_else(|| raw_code.to_string(), |code| code.name().to_owned()))]
    Server {
        /// The public error code, if this build knows it.
        code: Option<ErrorCode>,
        /// The number on the wire.
        raw_code: u16,
        /// The server's explanation.
        message: String,
    },
    /// Connecting, reading or writing failed.
    #[error("i/o error: {0}")]
    Io(Arc<std::io::Error>),
    /// The connection closed before the request was answered, or the client is shut down.
    /// The request may or may not have been carried out.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The server sent something this client cannot understand or did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// No answer within the configured time. The request may still be carried out.
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// The request would not fit in one frame of the size the server accepts.
    #[error("request of {size} bytes exceeds the server's frame limit of {limit} bytes")]
    TooLarge {
        /// Bytes the frame would take.
        size: usize,
        /// The server's limit.
        limit: usize,
    },
    /// The caller passed something the client refuses before sending it.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The server's error code, if this is a server error with a known code.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Server { code, .. } => *code,
            _ => None,
        }
    }

    /// Whether trying again (on a new connection, after a pause) can succeed: the connection
    /// failed, or the server is restarting. Retrying a publish after such an error may
    /// duplicate it, since the first attempt may have been carried out.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io(_) | Error::Closed(_) | Error::Timeout(_) => true,
            Error::Server { code, .. } => *code == Some(ErrorCode::ShuttingDown),
            _ => false,
        }
    }

    /// A server error from the fields of a `Response::Error`.
    pub(crate) fn server(raw_code: u16, message: String) -> Error {
        Error::Server {
            code: ErrorCode::from_code(raw_code),
            raw_code,
            message,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Error {
        Error::Io(Arc::new(error))
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_error_shows_its_code_name_and_message() {
        let error = Error::server(ErrorCode::UnknownTopic.code(), "no topic 'x'".into());
        assert_eq!(error.code(), Some(ErrorCode::UnknownTopic));
        assert_eq!(
            error.to_string(),
            "server error unknown_topic: no topic 'x'"
        );
        assert!(!error.is_retryable());
    }

    #[test]
    fn a_code_newer_than_the_client_is_kept_as_a_number() {
        let error = Error::server(9999, "future".into());
        assert_eq!(error.code(), None);
        assert_eq!(error.to_string(), "server error 9999: future");
    }

    #[test]
    fn connection_failures_and_shutdown_are_retryable() {
        assert!(Error::Closed("eof".into()).is_retryable());
        assert!(Error::from(std::io::Error::other("reset")).is_retryable());
        assert!(Error::server(ErrorCode::ShuttingDown.code(), String::new()).is_retryable());
        assert!(!Error::Protocol("bad".into()).is_retryable());
    }
}
