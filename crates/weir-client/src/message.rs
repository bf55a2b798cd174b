//! The values a producer hands in and gets back: [`Message`], [`Confirm`] and [`Published`].
//!
//! Plain data, no behaviour beyond builders: batching lives in `accumulator.rs`, the wire in
//! `weir-proto`. Consumers receive `weir_proto::Delivery` (re-exported at the crate root), which
//! shares the frame's bytes instead of copying them.

use bytes::Bytes;
use weir_batch::MESSAGE_ID_HEADER;
use weir_proto::{Durability, MessageId, PublishedRange};

/// One message to publish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Partitioning key: messages with one key go to one partition, in order. Also kept with
    /// the message for consumers.
    pub key: Option<Bytes>,
    /// Application headers, delivered in this order.
    pub headers: Vec<(String, Bytes)>,
    /// The payload.
    pub value: Bytes,
    /// Write to this partition instead of choosing by key (or round robin without a key).
    pub partition: Option<u32>,
    /// Milliseconds since the Unix epoch; `None` stamps the message with the client's clock
    /// when it is sent.
    pub timestamp_ms: Option<i64>,
}

impl Message {
    /// A message with this payload and nothing else.
    pub fn new(value: impl Into<Bytes>) -> Message {
        Message {
            value: value.into(),
            ..Message::default()
        }
    }

    /// Sets the partitioning key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Message {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Message {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Pins the message to one partition.
    pub fn with_partition(mut self, partition: u32) -> Message {
        self.partition = Some(partition);
        self
    }

    /// Sets the message id (header `weir.id`, replacing an earlier one): the broker stores a
    /// message whose id it saw within the topic's dedup window only once, and confirms the
    /// repeat at the stored copy ([`Confirm::duplicate`]). Without a key, the id also picks
    /// the partition, so that a repeat meets its earlier copy.
    pub fn with_id(mut self, id: impl Into<Bytes>) -> Message {
        self.headers.retain(|(name, _)| name != MESSAGE_ID_HEADER);
        self.headers.push((MESSAGE_ID_HEADER.to_owned(), id.into()));
        self
    }

    /// The message id (header `weir.id`), if it has one.
    pub fn id(&self) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(name, _)| name == MESSAGE_ID_HEADER)
            .map(|(_, value)| value)
    }

    /// What picks the partition when none is given: the key, else the message id (as the
    /// broker routes).
    pub(crate) fn routing_key(&self) -> Option<&Bytes> {
        self.key.as_ref().or_else(|| self.id())
    }

    /// An upper bound of the bytes this message adds to a batch: the record's fields plus the
    /// most its varint lengths can take. Used to start a new batch *before* one would grow past
    /// its size limit.
    pub(crate) fn encoded_len_bound(&self) -> usize {
        const VARINT_BYTES_MAX: usize = 10;
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.len() + value.len() + 2 * VARINT_BYTES_MAX)
            .sum();
        self.key.as_ref().map_or(0, Bytes::len) + headers + self.value.len() + 5 * VARINT_BYTES_MAX
    }
}

/// The broker's confirmation of one message: where it was stored and how durably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Confirm {
    /// The partition it was written to.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// What the confirm promises: `Fsynced` survives a power loss, `Os` a process crash.
    pub durability: Durability,
    /// The broker already held this message (same message id within the topic's dedup
    /// window, or an idempotent producer's retry) and did not store it again: `partition`
    /// and `offset` are the stored copy's.
    pub duplicate: bool,
}

/// The broker's confirmation of one raw batch publish ([`crate::Client::publish`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The offsets written, one entry per partition the batch went to.
    pub partitions: Vec<PublishedRange>,
    /// Messages not stored again because the broker already held them, in batch order:
    /// where each stored copy is. Empty when the broker does not report duplicates (an
    /// older broker answers the plain publish).
    pub duplicates: Vec<MessageId>,
    /// How durable every message of the batch was when the confirm was sent.
    pub durability: Durability,
}
