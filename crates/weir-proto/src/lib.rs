//! Weir's native wire protocol: frames, requests, responses and the public error codes.
//!
//! Pure: no I/O, no async, no runtime. The server's native front end and `weir-client` both
//! build on this crate, so the two sides share one definition of every message (as
//! mini-redis's commands serve both its server and its client). The byte layout is specified in
//! `docs/protocol.md`.
//!
//! # Map
//!
//! - [`frame`]: [`Frame::check`] (is a whole frame buffered, and is its declared size under
//!   the limit, *before* allocating) and [`Frame::parse`] (split it off the buffer, no copy).
//!   [`FrameError::Incomplete`] means "read more".
//! - [`request`]: [`Request`], one variant per operation a client can ask for, with
//!   [`Request::encode`] and [`Request::decode`], plus borrowing encoders for the hot
//!   requests ([`Request::encode_publish`], [`Request::encode_ack`]).
//! - [`response`]: [`Response`], what the server sends back, including the `Deliver` push,
//!   and [`DeliverWriter`], which writes deliveries straight from log records.
//! - [`types`]: the values both share ([`Fsync`], [`Start`], [`SubscriptionMode`],
//!   [`Durability`], [`MessageId`], [`TopicInfo`], [`GroupInfo`], [`Delivery`],
//!   [`QueueSettings`], [`TopicConfirm`], …); and by area, [`exchange`] (kinds, bindings),
//!   [`schedule`] (delayed messages), [`transaction`] (half messages and check-back) and
//!   [`stats`] (the broker's numbers) and [`alerts`] (what its alert rules report).
//! - [`codes`]: the wire contract's numbers as data — the command table ([`RequestKind`], with
//!   dotted names for logs and metrics), [`ResponseKind`], and the public [`ErrorCode`] table
//!   that every front end reports.
//! - [`error`]: [`FrameError`] (the stream) and [`DecodeError`] (one payload: at which byte,
//!   what was expected, what was there).
//!
//! A connection starts with [`Request::Hello`]; the server answers [`Response::HelloOk`] with
//! a version from [`negotiate_version`], or an `unsupported_version` error. Every later
//! request carries a client-chosen correlation id that its response echoes; deliveries and
//! transaction check-backs are pushed with correlation id 0.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use weir_proto::{
//!     negotiate_version, Frame, Request, Response, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION,
//! };
//!
//! // Client: say hello as correlation id 1.
//! let mut wire = BytesMut::new();
//! Request::Hello { min_version: 1, max_version: PROTOCOL_VERSION, client_name: "example".into() }
//!     .encode(1, &mut wire);
//!
//! // Server: cut a frame off the connection buffer, decode it, answer it.
//! let frame = Frame::parse(&mut wire, DEFAULT_MAX_FRAME_BYTES).expect("a whole frame");
//! let Request::Hello { min_version, max_version, .. } = Request::decode(frame.kind, frame.payload)?
//! else { unreachable!("the client sent a hello") };
//! let version = negotiate_version(min_version, max_version).expect("a common version");
//! Response::HelloOk { version, server_name: "weir".into(), max_frame_bytes: 16 << 20 }
//!     .encode(frame.correlation_id, &mut wire);
//!
//! // Client: read the answer and match it to the request by correlation id.
//! let frame = Frame::parse(&mut wire, DEFAULT_MAX_FRAME_BYTES).expect("a whole frame");
//! assert_eq!(frame.correlation_id, 1);
//! assert!(matches!(
//!     Response::decode(frame.kind, frame.payload)?,
//!     Response::HelloOk { version: PROTOCOL_VERSION, .. }
//! ));
//! # Ok::<(), weir_proto::DecodeError>(())
//! ```
//!
//! `Request` and `Response` are deliberately not `#[non_exhaustive]`: the server's one `match`
//! over `Request` should stop compiling when an operation is added. New operations get new
//! kinds (see [`codes`]); changing an existing layout means a new protocol version.

#![warn(missing_docs, clippy::pedantic)]
// `#[must_use]` on every getter and constructor is noise here: values are cheap and obvious.
#![allow(clippy::must_use_candidate, clippy::return_self_not_must_use)]

pub mod alerts;
pub mod codes;
pub mod error;
pub mod exchange;
pub mod frame;
pub mod request;
pub mod response;
pub mod schedule;
pub mod stats;
pub mod transaction;
pub mod types;
mod wire;

#[doc(hidden)]
pub mod fuzzing;

pub use alerts::{AlertInfo, AlertMetric, AlertState};
pub use codes::{ErrorCode, RequestKind, ResponseKind};
pub use error::{DecodeError, FrameError};
pub use exchange::{Binding, ExchangeInfo, ExchangeKind};
pub use frame::{DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_LEN, Frame, LENGTH_PREFIX_LEN};
pub use request::Request;
pub use response::{DeliverWriter, Response};
pub use schedule::{ScheduleTime, ScheduledInfo, ScheduledSelector};
pub use stats::{
    BrokerStats, ConsumerStats, LatencySummary, PartitionStats, SubscriptionCounters,
    SubscriptionStats, TopicStats,
};
pub use transaction::{Decision, TransactionInfo, TransactionState};
pub use types::{
    ClaimOutcome, DeadLetterQueueInfo, Delivery, Durability, Fsync, GroupInfo, GroupPartition,
    Message, MessageId, Overflow, PartitionInfo, PublishedRange, QueueSettings, Start,
    SubscriptionMode, TopicConfirm, TopicInfo,
};

/// The newest protocol version this build speaks. Version 2 adds alert metric tag 6
/// (`poisoned_partition`); a version-1 peer is never sent it.
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The version to speak with a peer that speaks `min_version..=max_version`: the highest one
/// both sides know, or `None` (answer `unsupported_version` and close).
pub fn negotiate_version(min_version: u16, max_version: u16) -> Option<u16> {
    let highest = max_version.min(PROTOCOL_VERSION);
    (highest >= min_version && highest >= MIN_PROTOCOL_VERSION).then_some(highest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_common_version_is_chosen() {
        assert_eq!(negotiate_version(1, 1), Some(1));
        assert_eq!(negotiate_version(1, 9), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate_version(0, 1), Some(1));
    }

    #[test]
    fn no_common_version_is_refused() {
        assert_eq!(negotiate_version(PROTOCOL_VERSION + 1, 9), None);
        assert_eq!(negotiate_version(0, 0), None);
        assert_eq!(negotiate_version(5, 3), None);
    }
}
