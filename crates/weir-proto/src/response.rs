//! Server → client: the [`Response`] enum, its codec, and the streaming [`DeliverWriter`].
//!
//! A response answers one request and echoes its correlation id; `Deliver` is the exception,
//! pushed unasked with correlation id 0. Deliveries are the hot path of consuming, so the
//! server writes them with a [`DeliverWriter`] straight from log records into the connection's
//! buffer, with no `Vec` of deliveries in between; the client decodes them as slices of the
//! frame. Like `request.rs`, this module checks encoding only, never broker semantics.

use crate::alerts::AlertInfo;
use crate::codes::{ErrorCode, ResponseKind};
use crate::error::DecodeError;
use crate::exchange::ExchangeInfo;
use crate::frame::{FRAME_HEADER_LEN, begin, finish};
use crate::schedule::ScheduledInfo;
use crate::stats::BrokerStats;
use crate::transaction::TransactionInfo;
use crate::types::{
    ClaimOutcome, DeadLetterQueueInfo, Delivery, Durability, GroupInfo, Message, MessageId,
    PublishedRange, TopicConfirm, TopicInfo, encoded_len, put_delivery,
};
use crate::wire::{Reader, put_list, put_string};
use bytes::{BufMut, Bytes, BytesMut};

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The handshake succeeded: the version both sides now speak.
    HelloOk {
        /// The protocol version chosen, within the client's range.
        version: u16,
        /// Free text naming the server (name and release), for logs.
        server_name: String,
        /// The largest frame the server accepts, length prefix included. Clients keep every
        /// request under it.
        max_frame_bytes: u32,
    },
    /// Success, with nothing more to say.
    Ok,
    /// The request failed.
    Error {
        /// An [`ErrorCode`] number. Raw, so that a client can carry a code newer than itself;
        /// see [`Response::error_code`].
        code: u16,
        /// Human-readable detail: the code's default message or something more specific.
        message: String,
    },
    /// One topic's description.
    Topic(TopicInfo),
    /// Several topics' descriptions.
    Topics(Vec<TopicInfo>),
    /// The publish confirm.
    Published {
        /// The offsets written, one entry per partition the batch went to.
        partitions: Vec<PublishedRange>,
        /// How durable every message of the publish was when this was sent.
        durability: Durability,
    },
    /// The subscription exists; deliveries for it follow.
    Subscribed {
        /// The id to name it with in acks, nacks, unsubscribe and deliveries, unique on this
        /// connection.
        subscription: u32,
    },
    /// Descriptions of groups (one entry for `DescribeGroup`).
    Groups(Vec<GroupInfo>),
    /// The answer to a ping.
    Pong,
    /// Messages for a subscription, pushed with correlation id 0.
    Deliver {
        /// The id `Subscribed` gave.
        subscription: u32,
        /// The messages, in delivery order.
        messages: Vec<Delivery>,
    },
    /// Success, with how many things the request affected (dead letters redriven or
    /// purged).
    Count {
        /// How many.
        count: u64,
    },
    /// The confirm of `PublishReportingDuplicates`: `Published` plus the duplicates.
    PublishedWithDuplicates {
        /// The offsets written, one entry per partition the batch went to.
        partitions: Vec<PublishedRange>,
        /// Messages not stored again because an earlier copy is: where that copy is.
        duplicates: Vec<MessageId>,
        /// How durable every message of the publish was when this was sent.
        durability: Durability,
    },
    /// The confirm of a publish through an exchange, sent once every copy is durable.
    Routed {
        /// Each topic the messages were routed to (the alternate topic included), with
        /// where they landed.
        targets: Vec<TopicConfirm>,
        /// Messages nothing matched that were dropped (not mandatory, no alternate topic).
        dropped: u32,
    },
    /// A delayed batch is stored durably (or was moved) and becomes visible then.
    Scheduled {
        /// Its id: to show, cancel or reschedule it.
        id: u64,
        /// When it becomes visible, in milliseconds since the Unix epoch.
        deliver_at_ms: i64,
    },
    /// One exchange.
    Exchange(ExchangeInfo),
    /// Several exchanges.
    Exchanges(Vec<ExchangeInfo>),
    /// Dead-letter topics and what each still holds.
    DeadLetterQueues(Vec<DeadLetterQueueInfo>),
    /// Dead letters, oldest first; each carries `weir.dlq.*` headers saying why and from where.
    DeadLetters(Vec<Delivery>),
    /// The answer to `Read`: messages of one partition in offset order, each with
    /// `delivery_count` 0 (a read is no delivery).
    Messages {
        /// Where the next read of the partition continues: one past the last message given,
        /// or where the read started when there was none.
        next_offset: u64,
        /// The messages.
        messages: Vec<Delivery>,
    },
    /// The answer to `AckReporting` and `NackReporting`: what the request did to each id.
    Settled {
        /// How many ids it settled.
        settled: u32,
        /// Ids settled before (acked; for a nack also timed out or given back): nothing done.
        already_settled: Vec<MessageId>,
        /// Ids never delivered to the subscription: nothing done.
        unknown: Vec<MessageId>,
    },
    /// Scheduled batches, in due order (one entry for `CancelScheduled`).
    ScheduledList(Vec<ScheduledInfo>),
    /// One scheduled batch and its messages.
    ScheduledMessage {
        /// The batch.
        info: ScheduledInfo,
        /// Its messages, in order; fewer than `info.message_count` if they would not fit in
        /// one frame.
        messages: Vec<Message>,
    },
    /// A transaction began.
    TransactionBegun {
        /// Its id, for `SendHalf`, commit and rollback.
        transaction: u64,
    },
    /// Undecided transactions, oldest first.
    Transactions(Vec<TransactionInfo>),
    /// Server push, correlation id 0, to a connection that registered as a checker of the
    /// group: decide this transaction and answer with `ResolveTransaction`.
    CheckTransaction {
        /// The transaction.
        transaction: u64,
        /// Its producer group (a connection may check for several).
        producer_group: String,
    },
    /// A transaction is committed: where its messages landed, per topic.
    TransactionCommitted {
        /// One entry per topic written.
        targets: Vec<TopicConfirm>,
    },
    /// The outcome of a key claim.
    Claimed(ClaimOutcome),
    /// The broker's numbers.
    Stats(BrokerStats),
    /// The alerts pending and firing now, by rule then scope.
    Alerts(Vec<AlertInfo>),
}

impl Response {
    /// An error with the code's default message.
    pub fn error(code: ErrorCode) -> Response {
        Response::Error {
            code: code.code(),
            message: code.default_message().to_owned(),
        }
    }

    /// An error with a specific message.
    pub fn error_with(code: ErrorCode, message: impl Into<String>) -> Response {
        Response::Error {
            code: code.code(),
            message: message.into(),
        }
    }

    /// The error code, if this is an error and this build knows the code.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Response::Error { code, .. } => ErrorCode::from_code(*code),
            _ => None,
        }
    }

    /// This response's frame kind.
    pub fn kind(&self) -> ResponseKind {
        match self {
            Response::HelloOk { .. } => ResponseKind::HelloOk,
            Response::Ok => ResponseKind::Ok,
            Response::Error { .. } => ResponseKind::Error,
            Response::Topic(_) => ResponseKind::Topic,
            Response::Topics(_) => ResponseKind::Topics,
            Response::Published { .. } => ResponseKind::Published,
            Response::Subscribed { .. } => ResponseKind::Subscribed,
            Response::Groups(_) => ResponseKind::Groups,
            Response::Pong => ResponseKind::Pong,
            Response::Deliver { .. } => ResponseKind::Deliver,
            Response::Count { .. } => ResponseKind::Count,
            Response::PublishedWithDuplicates { .. } => ResponseKind::PublishedWithDuplicates,
            Response::Routed { .. } => ResponseKind::Routed,
            Response::Scheduled { .. } => ResponseKind::Scheduled,
            Response::Exchange(_) => ResponseKind::Exchange,
            Response::Exchanges(_) => ResponseKind::Exchanges,
            Response::DeadLetterQueues(_) => ResponseKind::DeadLetterQueues,
            Response::DeadLetters(_) => ResponseKind::DeadLetters,
            Response::Messages { .. } => ResponseKind::Messages,
            Response::Settled { .. } => ResponseKind::Settled,
            Response::ScheduledList(_) => ResponseKind::ScheduledList,
            Response::ScheduledMessage { .. } => ResponseKind::ScheduledMessage,
            Response::TransactionBegun { .. } => ResponseKind::TransactionBegun,
            Response::Transactions(_) => ResponseKind::Transactions,
            Response::CheckTransaction { .. } => ResponseKind::CheckTransaction,
            Response::TransactionCommitted { .. } => ResponseKind::TransactionCommitted,
            Response::Claimed(_) => ResponseKind::Claimed,
            Response::Stats(_) => ResponseKind::Stats,
            Response::Alerts(_) => ResponseKind::Alerts,
        }
    }

    /// Appends this response as one whole frame to `buf`.
    ///
    /// `correlation_id` is the request's, or 0 for `Deliver` and for connection-level errors
    /// sent just before closing.
    ///
    /// # Panics
    /// If the frame would reach 4 GiB; the server keeps frames under its maximum.
    #[allow(
        clippy::too_many_lines,
        reason = "one arm per response kind, in table order: splitting the match would only hide that"
    )]
    pub fn encode(&self, correlation_id: u64, buf: &mut BytesMut) {
        if let Response::Deliver {
            subscription,
            messages,
        } = self
        {
            let mut writer = DeliverWriter::with_correlation_id(buf, correlation_id, *subscription);
            for delivery in messages {
                writer.push(delivery);
            }
            return;
        }
        let start = begin(buf, self.kind().code(), correlation_id);
        match self {
            Response::HelloOk {
                version,
                server_name,
                max_frame_bytes,
            } => {
                buf.put_u16_le(*version);
                put_string(buf, server_name);
                buf.put_u32_le(*max_frame_bytes);
            }
            Response::Ok | Response::Pong => {}
            Response::Error { code, message } => {
                buf.put_u16_le(*code);
                put_string(buf, message);
            }
            Response::Topic(topic) => topic.put(buf),
            Response::Topics(topics) => put_list(buf, topics, |buf, topic| topic.put(buf)),
            Response::Published {
                partitions,
                durability,
            } => {
                put_list(buf, partitions, |buf, range| range.put(buf));
                durability.put(buf);
            }
            Response::Subscribed { subscription } => buf.put_u32_le(*subscription),
            Response::Groups(groups) => put_list(buf, groups, |buf, group| group.put(buf)),
            Response::Deliver { .. } => unreachable!("encoded by the DeliverWriter above"),
            Response::Count { count } => buf.put_u64_le(*count),
            Response::PublishedWithDuplicates {
                partitions,
                duplicates,
                durability,
            } => {
                put_list(buf, partitions, |buf, range| range.put(buf));
                put_list(buf, duplicates, |buf, id| id.put(buf));
                durability.put(buf);
            }
            Response::Routed { targets, dropped } => {
                put_list(buf, targets, |buf, target| target.put(buf));
                buf.put_u32_le(*dropped);
            }
            Response::Scheduled { id, deliver_at_ms } => {
                buf.put_u64_le(*id);
                buf.put_i64_le(*deliver_at_ms);
            }
            Response::Exchange(exchange) => exchange.put(buf),
            Response::Exchanges(exchanges) => {
                put_list(buf, exchanges, |buf, exchange| exchange.put(buf));
            }
            Response::DeadLetterQueues(queues) => {
                put_list(buf, queues, |buf, queue| queue.put(buf));
            }
            Response::DeadLetters(letters) => put_list(buf, letters, put_whole_delivery),
            Response::Messages {
                next_offset,
                messages,
            } => {
                buf.put_u64_le(*next_offset);
                put_list(buf, messages, put_whole_delivery);
            }
            Response::Settled {
                settled,
                already_settled,
                unknown,
            } => {
                buf.put_u32_le(*settled);
                put_list(buf, already_settled, |buf, id| id.put(buf));
                put_list(buf, unknown, |buf, id| id.put(buf));
            }
            Response::ScheduledList(entries) => put_list(buf, entries, |buf, entry| entry.put(buf)),
            Response::ScheduledMessage { info, messages } => {
                info.put(buf);
                put_list(buf, messages, |buf, message| message.put(buf));
            }
            Response::TransactionBegun { transaction } => buf.put_u64_le(*transaction),
            Response::Transactions(transactions) => {
                put_list(buf, transactions, |buf, transaction| transaction.put(buf));
            }
            Response::CheckTransaction {
                transaction,
                producer_group,
            } => {
                buf.put_u64_le(*transaction);
                put_string(buf, producer_group);
            }
            Response::TransactionCommitted { targets } => {
                put_list(buf, targets, |buf, target| target.put(buf));
            }
            Response::Claimed(outcome) => outcome.put(buf),
            Response::Stats(stats) => stats.put(buf),
            Response::Alerts(alerts) => put_list(buf, alerts, |buf, alert| alert.put(buf)),
        }
        finish(buf, start);
    }

    /// Decodes the payload of a frame of kind `kind`.
    ///
    /// Never panics, and allocates no more than the payload's size. A delivery's key, header
    /// values and value are slices of `payload`.
    ///
    /// # Errors
    /// [`DecodeError::UnknownKind`] for a kind this build does not know; any other
    /// [`DecodeError`] for a payload that does not match the kind's layout.
    pub fn decode(kind: u8, payload: Bytes) -> Result<Response, DecodeError> {
        let kind = ResponseKind::from_code(kind).ok_or(DecodeError::UnknownKind { kind })?;
        let mut reader = Reader::new(payload);
        let response = Response::read(kind, &mut reader)?;
        reader.finish()?;
        Ok(response)
    }

    #[allow(
        clippy::too_many_lines,
        reason = "one arm per response kind, in table order: splitting the match would only hide that"
    )]
    fn read(kind: ResponseKind, reader: &mut Reader) -> Result<Response, DecodeError> {
        Ok(match kind {
            ResponseKind::HelloOk => Response::HelloOk {
                version: reader.u16("protocol version")?,
                server_name: reader.string("server name")?,
                max_frame_bytes: reader.u32("maximum frame size")?,
            },
            ResponseKind::Ok => Response::Ok,
            ResponseKind::Pong => Response::Pong,
            ResponseKind::Error => Response::Error {
                code: reader.u16("error code")?,
                message: reader.string("error message")?,
            },
            ResponseKind::Topic => Response::Topic(TopicInfo::read(reader)?),
            ResponseKind::Topics => Response::Topics(reader.list(
                "topic list",
                TopicInfo::MINIMUM_BYTES,
                TopicInfo::read,
            )?),
            ResponseKind::Published => Response::Published {
                partitions: reader.list(
                    "published partition list",
                    PublishedRange::MINIMUM_BYTES,
                    PublishedRange::read,
                )?,
                durability: Durability::read(reader)?,
            },
            ResponseKind::Subscribed => Response::Subscribed {
                subscription: reader.u32("subscription id")?,
            },
            ResponseKind::Groups => Response::Groups(reader.list(
                "group list",
                GroupInfo::MINIMUM_BYTES,
                GroupInfo::read,
            )?),
            ResponseKind::Deliver => Response::Deliver {
                subscription: reader.u32("subscription id")?,
                messages: reader.list("delivery list", Delivery::MINIMUM_BYTES, Delivery::read)?,
            },
            ResponseKind::Count => Response::Count {
                count: reader.u64("count")?,
            },
            ResponseKind::PublishedWithDuplicates => Response::PublishedWithDuplicates {
                partitions: reader.list(
                    "published partition list",
                    PublishedRange::MINIMUM_BYTES,
                    PublishedRange::read,
                )?,
                duplicates: reader.list(
                    "duplicate list",
                    MessageId::MINIMUM_BYTES,
                    MessageId::read,
                )?,
                durability: Durability::read(reader)?,
            },
            ResponseKind::Routed => Response::Routed {
                targets: reader.list(
                    "routed topic list",
                    TopicConfirm::MINIMUM_BYTES,
                    TopicConfirm::read,
                )?,
                dropped: reader.u32("dropped message count")?,
            },
            ResponseKind::Scheduled => Response::Scheduled {
                id: reader.u64("scheduled message id")?,
                deliver_at_ms: reader.i64("delivery time in milliseconds")?,
            },
            ResponseKind::Exchange => Response::Exchange(ExchangeInfo::read(reader)?),
            ResponseKind::Exchanges => Response::Exchanges(reader.list(
                "exchange list",
                ExchangeInfo::MINIMUM_BYTES,
                ExchangeInfo::read,
            )?),
            ResponseKind::DeadLetterQueues => Response::DeadLetterQueues(reader.list(
                "dead-letter queue list",
                DeadLetterQueueInfo::MINIMUM_BYTES,
                DeadLetterQueueInfo::read,
            )?),
            ResponseKind::DeadLetters => Response::DeadLetters(reader.list(
                "dead letter list",
                Delivery::MINIMUM_BYTES,
                Delivery::read,
            )?),
            ResponseKind::Messages => Response::Messages {
                next_offset: reader.u64("next offset")?,
                messages: reader.list("message list", Delivery::MINIMUM_BYTES, Delivery::read)?,
            },
            ResponseKind::Settled => Response::Settled {
                settled: reader.u32("settled count")?,
                already_settled: reader.list(
                    "already settled id list",
                    MessageId::MINIMUM_BYTES,
                    MessageId::read,
                )?,
                unknown: reader.list(
                    "unknown id list",
                    MessageId::MINIMUM_BYTES,
                    MessageId::read,
                )?,
            },
            ResponseKind::ScheduledList => Response::ScheduledList(reader.list(
                "scheduled message list",
                ScheduledInfo::MINIMUM_BYTES,
                ScheduledInfo::read,
            )?),
            ResponseKind::ScheduledMessage => Response::ScheduledMessage {
                info: ScheduledInfo::read(reader)?,
                messages: reader.list("message list", Message::MINIMUM_BYTES, Message::read)?,
            },
            ResponseKind::TransactionBegun => Response::TransactionBegun {
                transaction: reader.u64("transaction id")?,
            },
            ResponseKind::Transactions => Response::Transactions(reader.list(
                "transaction list",
                TransactionInfo::MINIMUM_BYTES,
                TransactionInfo::read,
            )?),
            ResponseKind::CheckTransaction => Response::CheckTransaction {
                transaction: reader.u64("transaction id")?,
                producer_group: reader.string("producer group")?,
            },
            ResponseKind::TransactionCommitted => Response::TransactionCommitted {
                targets: reader.list(
                    "committed topic list",
                    TopicConfirm::MINIMUM_BYTES,
                    TopicConfirm::read,
                )?,
            },
            ResponseKind::Claimed => Response::Claimed(ClaimOutcome::read(reader)?),
            ResponseKind::Stats => Response::Stats(BrokerStats::read(reader)?),
            ResponseKind::Alerts => Response::Alerts(reader.list(
                "alert list",
                AlertInfo::MINIMUM_BYTES,
                AlertInfo::read,
            )?),
        })
    }
}

/// Writes one [`Delivery`] (as a list item of `DeadLetters` and `Messages`).
fn put_whole_delivery(buf: &mut BytesMut, delivery: &Delivery) {
    put_delivery(
        buf,
        delivery.partition,
        delivery.offset,
        delivery.delivery_count,
        delivery.timestamp_ms,
        delivery.key.as_deref(),
        &delivery.headers,
        &delivery.value,
    );
}

/// Writes one `Deliver` frame message by message, straight into the connection's buffer.
///
/// The frame's length and message count are patched in when the writer is finished or
/// dropped, so the buffer holds one valid frame whatever happens. Watch [`frame_len`] to stay
/// under the peer's maximum frame size: start a new frame when the next message would cross it.
///
/// ```
/// use bytes::BytesMut;
/// use weir_proto::{DeliverWriter, Frame, Response, DEFAULT_MAX_FRAME_BYTES};
/// let mut buf = BytesMut::new();
/// let mut writer = DeliverWriter::new(&mut buf, 7);
/// writer.push_parts(0, 41, 1, 1_700_000_000_000, None, &[], b"hello");
/// writer.finish();
/// let frame = Frame::parse(&mut buf, DEFAULT_MAX_FRAME_BYTES).unwrap();
/// let Response::Deliver { subscription, messages } = Response::decode(frame.kind, frame.payload).unwrap()
/// else { panic!("a deliver frame") };
/// assert_eq!((subscription, messages[0].offset, &messages[0].value[..]), (7, 41, &b"hello"[..]));
/// ```
///
/// [`frame_len`]: DeliverWriter::frame_len
#[derive(Debug)]
pub struct DeliverWriter<'buffer> {
    buf: &'buffer mut BytesMut,
    /// Where the frame starts in `buf`.
    start: usize,
    count: u32,
}

impl<'buffer> DeliverWriter<'buffer> {
    /// Starts a `Deliver` frame for `subscription`, with correlation id 0.
    pub fn new(buf: &'buffer mut BytesMut, subscription: u32) -> DeliverWriter<'buffer> {
        DeliverWriter::with_correlation_id(buf, 0, subscription)
    }

    fn with_correlation_id(
        buf: &'buffer mut BytesMut,
        correlation_id: u64,
        subscription: u32,
    ) -> DeliverWriter<'buffer> {
        let start = begin(buf, ResponseKind::Deliver.code(), correlation_id);
        buf.put_u32_le(subscription);
        buf.put_u32_le(0);
        DeliverWriter {
            buf,
            start,
            count: 0,
        }
    }

    /// Appends one delivery.
    pub fn push(&mut self, delivery: &Delivery) {
        self.push_parts(
            delivery.partition,
            delivery.offset,
            delivery.delivery_count,
            delivery.timestamp_ms,
            delivery.key.as_deref(),
            &delivery.headers,
            &delivery.value,
        );
    }

    /// Appends one record read from a partition log.
    pub fn push_record(
        &mut self,
        partition: u32,
        delivery_count: u32,
        record: &weir_batch::Record,
    ) {
        self.push_parts(
            partition,
            record.offset,
            delivery_count,
            record.timestamp_ms,
            record.key.as_deref(),
            &record.headers,
            &record.value,
        );
    }

    /// Appends one delivery from its parts.
    ///
    /// # Panics
    /// After `u32::MAX` messages in one frame, which the maximum frame size rules out long
    /// before.
    #[allow(clippy::too_many_arguments)]
    pub fn push_parts(
        &mut self,
        partition: u32,
        offset: u64,
        delivery_count: u32,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        headers: &[(String, Bytes)],
        value: &[u8],
    ) {
        put_delivery(
            self.buf,
            partition,
            offset,
            delivery_count,
            timestamp_ms,
            key,
            headers,
            value,
        );
        self.count = self
            .count
            .checked_add(1)
            .expect("a frame holds far fewer than u32::MAX deliveries");
    }

    /// Bytes [`DeliverWriter::push_record`] would add for `record`: check it against the
    /// peer's maximum frame size before pushing.
    pub fn record_len(record: &weir_batch::Record) -> usize {
        encoded_len(record.key.as_deref(), &record.headers, &record.value)
    }

    /// Messages written so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Size of the frame so far, header included: compare with the peer's maximum before the
    /// next push.
    pub fn frame_len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Ends the frame; returns its size in bytes. Dropping the writer does the same.
    pub fn finish(self) -> usize {
        self.frame_len()
    }
}

impl Drop for DeliverWriter<'_> {
    fn drop(&mut self) {
        // The message count sits right after the subscription id, at a fixed place.
        let count_at = self.start + FRAME_HEADER_LEN + 4;
        self.buf[count_at..count_at + 4].copy_from_slice(&self.count.to_le_bytes());
        finish(self.buf, self.start);
    }
}
