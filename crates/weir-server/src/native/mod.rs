//! The native protocol front end: `weir-proto` frames over TCP.
//!
//! One hop per file, as the request travels: [`listener`] accepts, [`connection`] cuts the
//! byte stream into frames and owns the socket's two halves, [`handle`] runs the one `match`
//! over the decoded request, [`delivery`] pushes a subscription's messages back out, and
//! [`checker`] pushes transaction check-backs to producers that registered for them.
//! [`convert`] translates between the codec's types and the core's. Nothing in here decides
//! anything about messages; that is the broker's job.

mod checker;
pub(crate) mod connection;
mod convert;
mod delivery;
mod handle;
pub(crate) mod listener;
