//! The one mapping from the core's domain errors to the public error codes.
//!
//! The core does not know the wire contract's codes and the codec does not know the core, so
//! the conversion happens here, at the boundary, once for every front end: the native protocol
//! puts the code in an error frame; HTTP and RESP will turn the same pair into a status or an
//! error reply. Nothing else in the server picks a code for a core error.

use weir_core::Error;
use weir_proto::ErrorCode;

/// The public code and message a client sees for `error`.
///
/// The message is the core error's own text, which names the topic, group or limit involved;
/// the code is what a program should branch on.
pub fn public_error(error: &Error) -> (ErrorCode, String) {
    let code = match error {
        Error::UnknownTopic(_) => ErrorCode::UnknownTopic,
        Error::TopicExists(_) => ErrorCode::TopicExists,
        Error::NoSuchSubscription { .. } => ErrorCode::NoSuchSubscription,
        // The public table has no exchange-specific codes: a missing exchange is a missing
        // object, and one declared again with other settings is an argument refused (HTTP
        // tells the two apart by status).
        Error::UnknownExchange(_) | Error::NotFound(_) => ErrorCode::NotFound,
        Error::ExchangeExists(_) => ErrorCode::InvalidArgument,
        Error::Unroutable { .. } => ErrorCode::Unroutable,
        Error::BacklogFull { .. } => ErrorCode::BacklogFull,
        Error::InvalidArgument(_) => ErrorCode::InvalidArgument,
        Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
        // The frame was well formed but the batch inside it was not (bad CRC, bad record):
        // to the client that is still a payload it encoded wrongly.
        Error::MalformedBatch(_) => ErrorCode::MalformedFrame,
        Error::StorageFull => ErrorCode::StorageFull,
        // A partition whose writer failed: like a poisoned log, fixed only by a restart.
        Error::StoragePoisoned | Error::PartitionPoisoned { .. } => ErrorCode::StoragePoisoned,
        Error::ShuttingDown => ErrorCode::ShuttingDown,
        // Out of file descriptors: a limit of the broker's, transient, nothing changed.
        Error::TooManyOpenFiles(_) => ErrorCode::Quota,
        // An I/O failure other than a full disk: nothing the client can fix.
        Error::Storage(_) => ErrorCode::Internal,
        // The core's enum is non-exhaustive; a new variant is `internal` until mapped here.
        _ => ErrorCode::Internal,
    };
    (code, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_core_error_maps_to_its_public_code() {
        let cases = [
            (Error::UnknownTopic("t".into()), ErrorCode::UnknownTopic),
            (Error::TopicExists("t".into()), ErrorCode::TopicExists),
            (
                Error::NoSuchSubscription {
                    topic: "t".into(),
                    group: "g".into(),
                },
                ErrorCode::NoSuchSubscription,
            ),
            (
                Error::InvalidArgument("x".into()),
                ErrorCode::InvalidArgument,
            ),
            (
                Error::PayloadTooLarge {
                    length: 2,
                    limit: 1,
                },
                ErrorCode::PayloadTooLarge,
            ),
            (Error::StorageFull, ErrorCode::StorageFull),
            (Error::StoragePoisoned, ErrorCode::StoragePoisoned),
            (Error::Storage("disk on fire".into()), ErrorCode::Internal),
            (Error::ShuttingDown, ErrorCode::ShuttingDown),
            (Error::UnknownExchange("e".into()), ErrorCode::NotFound),
            (Error::NotFound("scheduled 7".into()), ErrorCode::NotFound),
            (
                Error::ExchangeExists("e".into()),
                ErrorCode::InvalidArgument,
            ),
            (
                Error::Unroutable {
                    exchange: "e".into(),
                    routing_key: "k".into(),
                },
                ErrorCode::Unroutable,
            ),
            (
                Error::BacklogFull {
                    topic: "t".into(),
                    group: "g".into(),
                },
                ErrorCode::BacklogFull,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(public_error(&error).0, expected, "{error}");
        }
    }

    #[test]
    fn the_message_names_what_the_error_is_about() {
        let (_, message) = public_error(&Error::UnknownTopic("orders".into()));
        assert!(message.contains("orders"), "{message}");
    }
}
