//! Client → server: the [`Request`] enum, one variant per operation, and its codec.
//!
//! The server decodes a frame into a `Request` and runs one `match` over it, calling one broker
//! method per variant; the client builds a `Request` and encodes it. Encoding writes straight
//! into the caller's buffer. The two hot requests also have borrowing encoders
//! ([`Request::encode_publish`], [`Request::encode_ack`]) so a client need not build an owned
//! value per call. Decoding checks framing-level validity only (lengths, tags, UTF-8, one whole
//! batch); whether a name or a number is acceptable is the broker's decision.

use crate::codes::RequestKind;
use crate::error::DecodeError;
use crate::frame::{FRAME_HEADER_LEN, begin, finish};
use crate::types::{Fsync, MessageId, Start, SubscriptionMode};
use crate::wire::{Reader, put_bool, put_list, put_option, put_option_u64, put_string};
use bytes::{BufMut, Bytes, BytesMut};

/// One request from a client. The variant decides the frame kind ([`Request::kind`]); the
/// matching answer for each is listed in `docs/protocol.md`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The first request on every connection: the versions the client speaks. Answered with
    /// `HelloOk` or an `unsupported_version` error.
    Hello {
        /// Lowest protocol version the client speaks.
        min_version: u16,
        /// Highest protocol version the client speaks.
        max_version: u16,
        /// Free text naming the client, for logs and the console.
        client_name: String,
    },
    /// Creates a topic. Answered with `Topic`.
    CreateTopic {
        /// The new topic's name.
        name: String,
        /// How many partitions it has (the broker refuses 0).
        partitions: u32,
        /// Its durability policy.
        fsync: Fsync,
        /// Maximum age of retained messages; `None` for the broker's default.
        retention_ms: Option<u64>,
        /// Maximum size per partition; `None` for the broker's default.
        retention_bytes: Option<u64>,
        /// Size at which a segment file is rolled; `None` for the broker's default.
        segment_bytes: Option<u64>,
    },
    /// Deletes a topic and its data. Answered with `Ok`.
    DeleteTopic {
        /// The topic.
        name: String,
    },
    /// Answered with `Topics`.
    ListTopics,
    /// Answered with `Topic`.
    DescribeTopic {
        /// The topic.
        name: String,
    },
    /// Appends one record batch to a topic. Answered with `Published` once the batch is as
    /// durable as the topic's fsync policy asks.
    Publish {
        /// The topic.
        topic: String,
        /// The partition to write to; `None` lets the broker choose per record (by key hash,
        /// round robin without a key), which may split the batch across partitions.
        partition: Option<u32>,
        /// One encoded `weir_batch` batch. Decoding checks only that it is exactly one batch
        /// by its declared length; the broker validates its CRC and records. A slice of the
        /// frame, never a copy.
        batch: Bytes,
    },
    /// Joins a group on a topic (creating the group if new). Answered with `Subscribed`;
    /// messages then arrive as `Deliver` pushes.
    Subscribe {
        /// The topic.
        topic: String,
        /// The group's name; consumers with the same name share its messages.
        group: String,
        /// Stream or queue (must match the group's mode if it exists).
        mode: SubscriptionMode,
        /// Where a new group starts; ignored for an existing group.
        start: Start,
        /// How many deliveries may be unacked (queue) or in the connection's buffer (stream)
        /// at once: the flow-control credit.
        prefetch: u32,
        /// Queue mode: redeliver a message not acked within this time; `None` for the
        /// broker's default.
        ack_timeout_ms: Option<u64>,
    },
    /// Leaves a subscription; its unacked messages go back to the group. Answered with `Ok`.
    Unsubscribe {
        /// The id `Subscribed` gave.
        subscription: u32,
    },
    /// Acknowledges messages (queue mode), or commits past them (stream mode). Answered with
    /// `Ok`.
    Ack {
        /// The id `Subscribed` gave.
        subscription: u32,
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// Refuses messages: redeliver (now or after a delay) or dead-letter. Answered with `Ok`.
    Nack {
        /// The id `Subscribed` gave.
        subscription: u32,
        /// The messages.
        ids: Vec<MessageId>,
        /// `true` to deliver again, `false` to dead-letter now.
        requeue: bool,
        /// With `requeue`, wait this long before redelivering.
        delay_ms: u64,
        /// Why the consumer failed, kept with a dead letter.
        error: String,
    },
    /// Answered with `Groups`.
    ListGroups {
        /// Only this topic's groups; `None` for all.
        topic: Option<String>,
    },
    /// Answered with `Groups` holding one entry.
    DescribeGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// Moves a group's position (replay or skip). Answered with `Ok`.
    ResetGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
        /// Where to move it.
        to: Start,
    },
    /// Answered with `Pong`.
    Ping,
}

impl Request {
    /// This request's entry in the command table.
    pub fn kind(&self) -> RequestKind {
        match self {
            Request::Hello { .. } => RequestKind::Hello,
            Request::CreateTopic { .. } => RequestKind::CreateTopic,
            Request::DeleteTopic { .. } => RequestKind::DeleteTopic,
            Request::ListTopics => RequestKind::ListTopics,
            Request::DescribeTopic { .. } => RequestKind::DescribeTopic,
            Request::Publish { .. } => RequestKind::Publish,
            Request::Subscribe { .. } => RequestKind::Subscribe,
            Request::Unsubscribe { .. } => RequestKind::Unsubscribe,
            Request::Ack { .. } => RequestKind::Ack,
            Request::Nack { .. } => RequestKind::Nack,
            Request::ListGroups { .. } => RequestKind::ListGroups,
            Request::DescribeGroup { .. } => RequestKind::DescribeGroup,
            Request::ResetGroup { .. } => RequestKind::ResetGroup,
            Request::Ping => RequestKind::Ping,
        }
    }

    /// Appends this request as one whole frame to `buf`.
    ///
    /// `correlation_id` should be non-zero and unique among the connection's outstanding
    /// requests: 0 marks frames the server sends unasked.
    ///
    /// # Panics
    /// If the frame would reach 4 GiB; callers keep frames under the negotiated maximum.
    pub fn encode(&self, correlation_id: u64, buf: &mut BytesMut) {
        match self {
            Request::Publish {
                topic,
                partition,
                batch,
            } => return Request::encode_publish(correlation_id, topic, *partition, batch, buf),
            Request::Ack { subscription, ids } => {
                return Request::encode_ack(correlation_id, *subscription, ids, buf);
            }
            _ => {}
        }
        let start = begin(buf, self.kind().code(), correlation_id);
        match self {
            Request::Hello {
                min_version,
                max_version,
                client_name,
            } => {
                buf.put_u16_le(*min_version);
                buf.put_u16_le(*max_version);
                put_string(buf, client_name);
            }
            Request::CreateTopic {
                name,
                partitions,
                fsync,
                retention_ms,
                retention_bytes,
                segment_bytes,
            } => {
                put_string(buf, name);
                buf.put_u32_le(*partitions);
                fsync.put(buf);
                put_option_u64(buf, *retention_ms);
                put_option_u64(buf, *retention_bytes);
                put_option_u64(buf, *segment_bytes);
            }
            Request::DeleteTopic { name } | Request::DescribeTopic { name } => {
                put_string(buf, name);
            }
            Request::ListTopics | Request::Ping => {}
            Request::Subscribe {
                topic,
                group,
                mode,
                start,
                prefetch,
                ack_timeout_ms,
            } => {
                put_string(buf, topic);
                put_string(buf, group);
                mode.put(buf);
                start.put(buf);
                buf.put_u32_le(*prefetch);
                put_option_u64(buf, *ack_timeout_ms);
            }
            Request::Unsubscribe { subscription } => buf.put_u32_le(*subscription),
            Request::Nack {
                subscription,
                ids,
                requeue,
                delay_ms,
                error,
            } => {
                buf.put_u32_le(*subscription);
                put_list(buf, ids, |buf, id| id.put(buf));
                put_bool(buf, *requeue);
                buf.put_u64_le(*delay_ms);
                put_string(buf, error);
            }
            Request::ListGroups { topic } => {
                put_option(buf, topic.as_deref(), put_string);
            }
            Request::DescribeGroup { topic, group } => {
                put_string(buf, topic);
                put_string(buf, group);
            }
            Request::ResetGroup { topic, group, to } => {
                put_string(buf, topic);
                put_string(buf, group);
                to.put(buf);
            }
            Request::Publish { .. } | Request::Ack { .. } => {
                unreachable!("encoded by their borrowing encoders above")
            }
        }
        finish(buf, start);
    }

    /// Appends a publish frame, borrowing its parts: the client's hot path. The batch is
    /// copied once, into `buf`, after one reservation for the whole frame.
    ///
    /// # Panics
    /// If the frame would reach 4 GiB.
    pub fn encode_publish(
        correlation_id: u64,
        topic: &str,
        partition: Option<u32>,
        batch: &[u8],
        buf: &mut BytesMut,
    ) {
        // One reservation for the whole frame: the batch is the bulk of it.
        buf.reserve(FRAME_HEADER_LEN + 4 + topic.len() + 5 + batch.len());
        let start = begin(buf, RequestKind::Publish.code(), correlation_id);
        put_string(buf, topic);
        put_option(buf, partition, BytesMut::put_u32_le);
        buf.put_slice(batch);
        finish(buf, start);
    }

    /// Appends an ack frame, borrowing the ids: the consumer's hot path.
    ///
    /// # Panics
    /// If the frame would reach 4 GiB.
    pub fn encode_ack(
        correlation_id: u64,
        subscription: u32,
        ids: &[MessageId],
        buf: &mut BytesMut,
    ) {
        let start = begin(buf, RequestKind::Ack.code(), correlation_id);
        buf.reserve(8 + ids.len() * MessageId::MINIMUM_BYTES);
        buf.put_u32_le(subscription);
        put_list(buf, ids, |buf, id| id.put(buf));
        finish(buf, start);
    }

    /// Decodes the payload of a frame of kind `kind`.
    ///
    /// Never panics, and allocates no more than the payload's size: every length and count is
    /// checked against the bytes left first. A publish's batch stays a slice of `payload`.
    ///
    /// # Errors
    /// [`DecodeError::UnknownKind`] for a kind not in the command table (answer
    /// `unsupported_request`); any other [`DecodeError`] for a payload that does not match the
    /// kind's layout (answer `malformed_frame`). Either way the stream stays in step.
    pub fn decode(kind: u8, payload: Bytes) -> Result<Request, DecodeError> {
        let kind = RequestKind::from_code(kind).ok_or(DecodeError::UnknownKind { kind })?;
        let mut reader = Reader::new(payload);
        let request = Request::read(kind, &mut reader)?;
        reader.finish()?;
        Ok(request)
    }

    fn read(kind: RequestKind, reader: &mut Reader) -> Result<Request, DecodeError> {
        Ok(match kind {
            RequestKind::Hello => Request::Hello {
                min_version: reader.u16("minimum protocol version")?,
                max_version: reader.u16("maximum protocol version")?,
                client_name: reader.string("client name")?,
            },
            RequestKind::CreateTopic => Request::CreateTopic {
                name: reader.string("topic name")?,
                partitions: reader.u32("partition count")?,
                fsync: Fsync::read(reader)?,
                retention_ms: reader.option("retention_ms option", |reader| {
                    reader.u64("retention in milliseconds")
                })?,
                retention_bytes: reader.option("retention_bytes option", |reader| {
                    reader.u64("retention in bytes")
                })?,
                segment_bytes: reader.option("segment_bytes option", |reader| {
                    reader.u64("segment size in bytes")
                })?,
            },
            RequestKind::DeleteTopic => Request::DeleteTopic {
                name: reader.string("topic name")?,
            },
            RequestKind::ListTopics => Request::ListTopics,
            RequestKind::DescribeTopic => Request::DescribeTopic {
                name: reader.string("topic name")?,
            },
            RequestKind::Publish => Request::Publish {
                topic: reader.string("topic name")?,
                partition: reader
                    .option("partition option", |reader| reader.u32("partition number"))?,
                batch: read_batch(reader)?,
            },
            RequestKind::Subscribe => Request::Subscribe {
                topic: reader.string("topic name")?,
                group: reader.string("group name")?,
                mode: SubscriptionMode::read(reader)?,
                start: Start::read(reader)?,
                prefetch: reader.u32("prefetch")?,
                ack_timeout_ms: reader.option("ack_timeout_ms option", |reader| {
                    reader.u64("ack timeout in milliseconds")
                })?,
            },
            RequestKind::Unsubscribe => Request::Unsubscribe {
                subscription: reader.u32("subscription id")?,
            },
            RequestKind::Ack => Request::Ack {
                subscription: reader.u32("subscription id")?,
                ids: reader.list("message id list", MessageId::MINIMUM_BYTES, MessageId::read)?,
            },
            RequestKind::Nack => Request::Nack {
                subscription: reader.u32("subscription id")?,
                ids: reader.list("message id list", MessageId::MINIMUM_BYTES, MessageId::read)?,
                requeue: reader.bool("requeue flag (0 or 1)")?,
                delay_ms: reader.u64("redelivery delay in milliseconds")?,
                error: reader.string("error text")?,
            },
            RequestKind::ListGroups => Request::ListGroups {
                topic: reader.option("topic option", |reader| reader.string("topic name"))?,
            },
            RequestKind::DescribeGroup => Request::DescribeGroup {
                topic: reader.string("topic name")?,
                group: reader.string("group name")?,
            },
            RequestKind::ResetGroup => Request::ResetGroup {
                topic: reader.string("topic name")?,
                group: reader.string("group name")?,
                to: Start::read(reader)?,
            },
            RequestKind::Ping => Request::Ping,
        })
    }
}

/// The rest of a publish payload, which must be exactly one batch by its declared length.
///
/// The limit handed to `check_len` is what is left of the payload, itself bounded by the
/// maximum frame size, so the batch can never claim more than the frame holds.
fn read_batch(reader: &mut Reader) -> Result<Bytes, DecodeError> {
    let offset = reader.position();
    let rest = reader.rest();
    match weir_batch::check_len(&rest, rest.len()) {
        Ok(total) if total == rest.len() => Ok(rest),
        Ok(total) => Err(DecodeError::TrailingBytes {
            offset: offset + total,
            count: rest.len() - total,
        }),
        Err(weir_batch::BatchError::Incomplete { needed, available }) => {
            Err(DecodeError::Truncated {
                offset,
                expected: "record batch",
                needed,
                available,
            })
        }
        Err(weir_batch::BatchError::TooLarge { length, .. }) => Err(DecodeError::Truncated {
            offset,
            expected: "record batch",
            needed: length,
            available: rest.len(),
        }),
        Err(source) => Err(DecodeError::InvalidBatch { offset, source }),
    }
}
