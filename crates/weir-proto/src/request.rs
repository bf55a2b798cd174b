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
use crate::exchange::{Binding, ExchangeKind};
use crate::frame::{FRAME_HEADER_LEN, begin, finish};
use crate::schedule::{ScheduleTime, ScheduledSelector};
use crate::transaction::Decision;
use crate::types::{Fsync, MessageId, QueueSettings, Start, SubscriptionMode};
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
        /// Free text naming the client, for the server's logs.
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
    /// `Ack`, answered with `Settled` instead of `Ok`: which ids were settled before and
    /// which were never delivered to the subscription (both left alone). A separate kind, so
    /// that a client that does not know the richer answer never gets it.
    AckReporting {
        /// The id `Subscribed` gave.
        subscription: u32,
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// `Nack`, answered with `Settled` instead of `Ok`, as `AckReporting` is.
    NackReporting {
        /// As in `Nack`.
        subscription: u32,
        /// As in `Nack`.
        ids: Vec<MessageId>,
        /// As in `Nack`.
        requeue: bool,
        /// As in `Nack`.
        delay_ms: u64,
        /// As in `Nack`.
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
    /// Deletes a group (subscription) and its positions; its consumers are detached.
    /// Answered with `Ok`.
    DeleteGroup {
        /// The topic.
        topic: String,
        /// The group.
        group: String,
    },
    /// Answered with `Pong`.
    Ping,
    /// `Publish`, answered with `PublishedWithDuplicates` instead of `Published`: the confirm
    /// also says which messages were not stored again because an earlier copy is (same
    /// message id within the topic's dedup window, or an idempotent producer's retry). A
    /// separate kind, so that a client that does not know the richer confirm never gets it.
    PublishReportingDuplicates {
        /// The topic.
        topic: String,
        /// As in `Publish`.
        partition: Option<u32>,
        /// As in `Publish`: one batch, the rest of the payload, a slice of the frame.
        batch: Bytes,
    },
    /// Publishes one batch through an exchange: each topic a binding routes it to gets its
    /// own copy. Answered with `Routed` once every copy is durable.
    PublishToExchange {
        /// The exchange.
        exchange: String,
        /// Matched against the bindings' keys (ignored by fanout and headers exchanges).
        routing_key: String,
        /// When nothing matches a message and the exchange has no alternate topic: `true`
        /// refuses the whole publish with `unroutable`, `false` drops those messages and
        /// counts them in `Routed::dropped`.
        mandatory: bool,
        /// As in `Publish`.
        batch: Bytes,
    },
    /// Stores one batch durably now and appends it to its topic when due, invisible to
    /// every subscription until then. Answered with `Scheduled`.
    PublishDelayed {
        /// The topic.
        topic: String,
        /// As in `Publish`.
        partition: Option<u32>,
        /// When it becomes visible.
        when: ScheduleTime,
        /// A key to cancel it by, unique among scheduled batches (an order number, say).
        business_key: Option<String>,
        /// As in `Publish`.
        batch: Bytes,
    },
    /// `Subscribe` with the queue settings a new queue group is created with (dead-lettering,
    /// per-key ordering, backlog limit, retry backoff). Answered like `Subscribe`. A separate
    /// kind, so that `Subscribe`'s layout never changes; settings of an existing group are
    /// kept, as its mode and start are.
    SubscribeWithSettings {
        /// As in `Subscribe`.
        topic: String,
        /// As in `Subscribe`.
        group: String,
        /// As in `Subscribe`.
        mode: SubscriptionMode,
        /// As in `Subscribe`.
        start: Start,
        /// As in `Subscribe`.
        prefetch: u32,
        /// As in `Subscribe`.
        ack_timeout_ms: Option<u64>,
        /// The queue group's settings (ignored for stream groups).
        settings: QueueSettings,
    },
    /// Gives deliveries back because the consumer is shutting down: they are redelivered at
    /// once and do not count as failures (unlike `Nack`). Answered with `Ok`.
    Release {
        /// The id `Subscribed` gave.
        subscription: u32,
        /// The messages.
        ids: Vec<MessageId>,
    },
    /// Declares an exchange; declaring one that exists with the same settings is a no-op.
    /// Answered with `Exchange`.
    CreateExchange {
        /// Its name.
        name: String,
        /// How it matches.
        kind: ExchangeKind,
        /// Where messages no binding matches go; `None` to refuse or drop them.
        alternate_topic: Option<String>,
    },
    /// Deletes an exchange (its topics stay). Answered with `Ok`.
    DeleteExchange {
        /// The exchange.
        name: String,
    },
    /// Answered with `Exchanges`.
    ListExchanges,
    /// Adds a binding (the same binding twice is kept once). Answered with `Exchange`.
    Bind {
        /// The exchange.
        exchange: String,
        /// The binding.
        binding: Binding,
    },
    /// Removes the exchange's bindings to `topic`. Answered with `Exchange`.
    Unbind {
        /// The exchange.
        exchange: String,
        /// The bound topic.
        topic: String,
        /// Only bindings with this key; `None` for all of them.
        key: Option<String>,
    },
    /// Answered with `DeadLetterQueues`.
    ListDeadLetterQueues,
    /// Browses the dead letters still in a dead-letter topic, oldest first. Answered with
    /// `DeadLetters`.
    ListDeadLetters {
        /// The dead-letter topic.
        topic: String,
        /// At most this many (1 to 1000); fewer if they would not fit in one frame.
        max: u32,
    },
    /// Gives dead letters back to the subscription each came from (or publishes copies
    /// without their `weir.dlq.*` headers to `target`), and removes them from the dead-letter
    /// topic. Answered with `Count` (how many were redriven).
    Redrive {
        /// The dead-letter topic.
        topic: String,
        /// Where to publish copies; `None`: back to the subscription each came from.
        target: Option<String>,
        /// Only these (ids from `DeadLetters`); `None` for all, up to `max`.
        ids: Option<Vec<MessageId>>,
        /// At most this many (1 to 1000); repeat until the count is 0 to drain more.
        max: u32,
    },
    /// Drops every dead letter in a dead-letter topic. Answered with `Count`.
    PurgeDeadLetters {
        /// The dead-letter topic.
        topic: String,
    },
    /// Scheduled batches in due order. Answered with `ScheduledList`.
    ListScheduled {
        /// Only this topic's; `None` for all.
        topic: Option<String>,
        /// A page cursor: the `(deliver_at_ms, id)` of the last entry of the previous page.
        after: Option<(i64, u64)>,
        /// At most this many (1 to 1000).
        limit: u32,
    },
    /// One scheduled batch with its messages. Answered with `ScheduledMessage`.
    ShowScheduled {
        /// Its id.
        id: u64,
    },
    /// Cancels a scheduled batch: once answered, it will not be delivered. Answered with
    /// `ScheduledList` holding the cancelled entry.
    CancelScheduled {
        /// Which one.
        selector: ScheduledSelector,
    },
    /// Moves a scheduled batch to another time. Answered with `Scheduled`.
    Reschedule {
        /// Its id.
        id: u64,
        /// The new time.
        when: ScheduleTime,
    },
    /// Begins a transaction. Answered with `TransactionBegun`.
    BeginTransaction {
        /// Its producer group: live producers of the group are asked about it if it stays
        /// undecided.
        producer_group: String,
        /// Undecided this long, it is checked back; `None` for the broker's default.
        timeout_ms: Option<u64>,
    },
    /// Stores half messages: durable when answered, invisible until commit. Answered with
    /// `Ok`.
    SendHalf {
        /// The id `TransactionBegun` gave.
        transaction: u64,
        /// The topic they go to on commit.
        topic: String,
        /// As in `Publish`.
        partition: Option<u32>,
        /// As in `Publish`.
        batch: Bytes,
    },
    /// Makes every half message visible. Answered with `TransactionCommitted`.
    CommitTransaction {
        /// The transaction.
        transaction: u64,
    },
    /// Discards every half message. Answered with `Ok`.
    RollbackTransaction {
        /// The transaction.
        transaction: u64,
    },
    /// Undecided transactions, oldest first. Answered with `Transactions`.
    ListTransactions,
    /// Makes this connection a producer of the group that answers check-backs: the server
    /// pushes `CheckTransaction` for the group's overdue transactions until the connection
    /// closes. Answered with `Ok`.
    RegisterTransactionChecker {
        /// The producer group.
        producer_group: String,
    },
    /// The answer to a `CheckTransaction` (or an operator's decision). Answered with `Ok`.
    ResolveTransaction {
        /// The transaction.
        transaction: u64,
        /// Commit, roll back, or not known yet.
        decision: Decision,
    },
    /// Claims an idempotency key before doing the work it names. Answered with `Claimed`.
    ClaimKey {
        /// The business key (1 to 512 bytes).
        key: String,
        /// Who claims it (a consumer's name); claiming a key one holds extends it.
        holder: String,
        /// The claim lapses after this long unless completed.
        ttl_ms: u64,
    },
    /// Marks the work done: later claims are told `Completed` for `ttl_ms`. Answered with
    /// `Ok`.
    CompleteKey {
        /// The business key.
        key: String,
        /// Who did the work; refused if another holder claimed it since.
        holder: String,
        /// How long the completion is remembered.
        ttl_ms: u64,
    },
    /// Gives up a claim (the work failed and may be retried by anyone). Answered with `Ok`.
    ReleaseKey {
        /// The business key.
        key: String,
        /// Who holds it; a release by anyone else changes nothing.
        holder: String,
    },
    /// Reads messages of one partition by position, outside any group: no delivery state,
    /// nothing to ack, nothing left behind. Answered with `Messages`.
    Read {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// Where to start, clamped to what the partition retains: the earliest or latest
        /// position, an offset, or the first message at or after a time.
        from: Start,
        /// At most this many (1 to 1000); fewer if they would not fit in one frame.
        max: u32,
    },
    /// Answered with `Stats`.
    Stats,
    /// Answered with `Alerts`: the alerts pending and firing now.
    Alerts,
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
            Request::AckReporting { .. } => RequestKind::AckReporting,
            Request::NackReporting { .. } => RequestKind::NackReporting,
            Request::ListGroups { .. } => RequestKind::ListGroups,
            Request::DescribeGroup { .. } => RequestKind::DescribeGroup,
            Request::ResetGroup { .. } => RequestKind::ResetGroup,
            Request::DeleteGroup { .. } => RequestKind::DeleteGroup,
            Request::Ping => RequestKind::Ping,
            Request::PublishReportingDuplicates { .. } => RequestKind::PublishReportingDuplicates,
            Request::PublishToExchange { .. } => RequestKind::PublishToExchange,
            Request::PublishDelayed { .. } => RequestKind::PublishDelayed,
            Request::SubscribeWithSettings { .. } => RequestKind::SubscribeWithSettings,
            Request::Release { .. } => RequestKind::Release,
            Request::CreateExchange { .. } => RequestKind::CreateExchange,
            Request::DeleteExchange { .. } => RequestKind::DeleteExchange,
            Request::ListExchanges => RequestKind::ListExchanges,
            Request::Bind { .. } => RequestKind::Bind,
            Request::Unbind { .. } => RequestKind::Unbind,
            Request::ListDeadLetterQueues => RequestKind::ListDeadLetterQueues,
            Request::ListDeadLetters { .. } => RequestKind::ListDeadLetters,
            Request::Redrive { .. } => RequestKind::Redrive,
            Request::PurgeDeadLetters { .. } => RequestKind::PurgeDeadLetters,
            Request::ListScheduled { .. } => RequestKind::ListScheduled,
            Request::ShowScheduled { .. } => RequestKind::ShowScheduled,
            Request::CancelScheduled { .. } => RequestKind::CancelScheduled,
            Request::Reschedule { .. } => RequestKind::Reschedule,
            Request::BeginTransaction { .. } => RequestKind::BeginTransaction,
            Request::SendHalf { .. } => RequestKind::SendHalf,
            Request::CommitTransaction { .. } => RequestKind::CommitTransaction,
            Request::RollbackTransaction { .. } => RequestKind::RollbackTransaction,
            Request::ListTransactions => RequestKind::ListTransactions,
            Request::RegisterTransactionChecker { .. } => RequestKind::RegisterTransactionChecker,
            Request::ResolveTransaction { .. } => RequestKind::ResolveTransaction,
            Request::ClaimKey { .. } => RequestKind::ClaimKey,
            Request::CompleteKey { .. } => RequestKind::CompleteKey,
            Request::ReleaseKey { .. } => RequestKind::ReleaseKey,
            Request::Read { .. } => RequestKind::Read,
            Request::Stats => RequestKind::Stats,
            Request::Alerts => RequestKind::Alerts,
        }
    }

    /// Appends this request as one whole frame to `buf`.
    ///
    /// `correlation_id` should be non-zero and unique among the connection's outstanding
    /// requests: 0 marks frames the server sends unasked.
    ///
    /// # Panics
    /// If the frame would reach 4 GiB; callers keep frames under the negotiated maximum.
    #[allow(
        clippy::too_many_lines,
        reason = "one arm per request kind, in table order: splitting the match would only hide that"
    )]
    pub fn encode(&self, correlation_id: u64, buf: &mut BytesMut) {
        match self {
            Request::Publish {
                topic,
                partition,
                batch,
            } => return Request::encode_publish(correlation_id, topic, *partition, batch, buf),
            Request::PublishReportingDuplicates {
                topic,
                partition,
                batch,
            } => {
                return Request::encode_publish_reporting_duplicates(
                    correlation_id,
                    topic,
                    *partition,
                    batch,
                    buf,
                );
            }
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
            Request::ListTopics
            | Request::Ping
            | Request::ListExchanges
            | Request::ListDeadLetterQueues
            | Request::ListTransactions
            | Request::Stats
            | Request::Alerts => {}
            Request::Subscribe {
                topic,
                group,
                mode,
                start,
                prefetch,
                ack_timeout_ms,
            } => {
                put_subscribe(buf, topic, group, *mode, *start, *prefetch, *ack_timeout_ms);
            }
            Request::SubscribeWithSettings {
                topic,
                group,
                mode,
                start,
                prefetch,
                ack_timeout_ms,
                settings,
            } => {
                put_subscribe(buf, topic, group, *mode, *start, *prefetch, *ack_timeout_ms);
                settings.put(buf);
            }
            Request::Release { subscription, ids }
            | Request::AckReporting { subscription, ids } => {
                buf.put_u32_le(*subscription);
                put_list(buf, ids, |buf, id| id.put(buf));
            }
            Request::PublishToExchange {
                exchange,
                routing_key,
                mandatory,
                batch,
            } => {
                put_string(buf, exchange);
                put_string(buf, routing_key);
                put_bool(buf, *mandatory);
                buf.put_slice(batch);
            }
            Request::PublishDelayed {
                topic,
                partition,
                when,
                business_key,
                batch,
            } => {
                put_string(buf, topic);
                put_option(buf, *partition, BytesMut::put_u32_le);
                when.put(buf);
                put_option(buf, business_key.as_deref(), put_string);
                buf.put_slice(batch);
            }
            Request::CreateExchange {
                name,
                kind,
                alternate_topic,
            } => {
                put_string(buf, name);
                kind.put(buf);
                put_option(buf, alternate_topic.as_deref(), put_string);
            }
            Request::DeleteExchange { name }
            | Request::PurgeDeadLetters { topic: name }
            | Request::RegisterTransactionChecker {
                producer_group: name,
            } => put_string(buf, name),
            Request::Bind { exchange, binding } => {
                put_string(buf, exchange);
                binding.put(buf);
            }
            Request::Unbind {
                exchange,
                topic,
                key,
            } => {
                put_string(buf, exchange);
                put_string(buf, topic);
                put_option(buf, key.as_deref(), put_string);
            }
            Request::ListDeadLetters { topic, max } => {
                put_string(buf, topic);
                buf.put_u32_le(*max);
            }
            Request::Read {
                topic,
                partition,
                from,
                max,
            } => {
                put_string(buf, topic);
                buf.put_u32_le(*partition);
                from.put(buf);
                buf.put_u32_le(*max);
            }
            Request::Redrive {
                topic,
                target,
                ids,
                max,
            } => {
                put_string(buf, topic);
                put_option(buf, target.as_deref(), put_string);
                put_option(buf, ids.as_deref(), |buf, ids| {
                    put_list(buf, ids, |buf, id| id.put(buf));
                });
                buf.put_u32_le(*max);
            }
            Request::ListScheduled {
                topic,
                after,
                limit,
            } => {
                put_option(buf, topic.as_deref(), put_string);
                put_option(buf, *after, |buf, (deliver_at_ms, id)| {
                    buf.put_i64_le(deliver_at_ms);
                    buf.put_u64_le(id);
                });
                buf.put_u32_le(*limit);
            }
            Request::ShowScheduled { id }
            | Request::CommitTransaction { transaction: id }
            | Request::RollbackTransaction { transaction: id } => buf.put_u64_le(*id),
            Request::CancelScheduled { selector } => selector.put(buf),
            Request::Reschedule { id, when } => {
                buf.put_u64_le(*id);
                when.put(buf);
            }
            Request::BeginTransaction {
                producer_group,
                timeout_ms,
            } => {
                put_string(buf, producer_group);
                put_option_u64(buf, *timeout_ms);
            }
            Request::SendHalf {
                transaction,
                topic,
                partition,
                batch,
            } => {
                buf.put_u64_le(*transaction);
                put_string(buf, topic);
                put_option(buf, *partition, BytesMut::put_u32_le);
                buf.put_slice(batch);
            }
            Request::ResolveTransaction {
                transaction,
                decision,
            } => {
                buf.put_u64_le(*transaction);
                decision.put(buf);
            }
            Request::ClaimKey {
                key,
                holder,
                ttl_ms,
            }
            | Request::CompleteKey {
                key,
                holder,
                ttl_ms,
            } => {
                put_string(buf, key);
                put_string(buf, holder);
                buf.put_u64_le(*ttl_ms);
            }
            Request::ReleaseKey { key, holder } => {
                put_string(buf, key);
                put_string(buf, holder);
            }
            Request::Unsubscribe { subscription } => buf.put_u32_le(*subscription),
            Request::Nack {
                subscription,
                ids,
                requeue,
                delay_ms,
                error,
            }
            | Request::NackReporting {
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
            Request::DescribeGroup { topic, group } | Request::DeleteGroup { topic, group } => {
                put_string(buf, topic);
                put_string(buf, group);
            }
            Request::ResetGroup { topic, group, to } => {
                put_string(buf, topic);
                put_string(buf, group);
                to.put(buf);
            }
            Request::Publish { .. }
            | Request::PublishReportingDuplicates { .. }
            | Request::Ack { .. } => {
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
        encode_publish_as(
            RequestKind::Publish,
            correlation_id,
            topic,
            partition,
            batch,
            buf,
        );
    }

    /// [`Request::encode_publish`] for [`Request::PublishReportingDuplicates`]: the same
    /// layout under the kind whose confirm lists duplicates.
    ///
    /// # Panics
    /// If the frame would reach 4 GiB.
    pub fn encode_publish_reporting_duplicates(
        correlation_id: u64,
        topic: &str,
        partition: Option<u32>,
        batch: &[u8],
        buf: &mut BytesMut,
    ) {
        encode_publish_as(
            RequestKind::PublishReportingDuplicates,
            correlation_id,
            topic,
            partition,
            batch,
            buf,
        );
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

    #[allow(
        clippy::too_many_lines,
        reason = "one arm per request kind, in table order: splitting the match would only hide that"
    )]
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
            RequestKind::Subscribe => {
                let fields = SubscribeFields::read(reader)?;
                Request::Subscribe {
                    topic: fields.topic,
                    group: fields.group,
                    mode: fields.mode,
                    start: fields.start,
                    prefetch: fields.prefetch,
                    ack_timeout_ms: fields.ack_timeout_ms,
                }
            }
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
            RequestKind::AckReporting => Request::AckReporting {
                subscription: reader.u32("subscription id")?,
                ids: reader.list("message id list", MessageId::MINIMUM_BYTES, MessageId::read)?,
            },
            RequestKind::NackReporting => Request::NackReporting {
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
            RequestKind::DeleteGroup => Request::DeleteGroup {
                topic: reader.string("topic name")?,
                group: reader.string("group name")?,
            },
            RequestKind::ResetGroup => Request::ResetGroup {
                topic: reader.string("topic name")?,
                group: reader.string("group name")?,
                to: Start::read(reader)?,
            },
            RequestKind::Ping => Request::Ping,
            RequestKind::PublishReportingDuplicates => Request::PublishReportingDuplicates {
                topic: reader.string("topic name")?,
                partition: reader
                    .option("partition option", |reader| reader.u32("partition number"))?,
                batch: read_batch(reader)?,
            },
            RequestKind::PublishToExchange => Request::PublishToExchange {
                exchange: reader.string("exchange name")?,
                routing_key: reader.string("routing key")?,
                mandatory: reader.bool("mandatory flag (0 or 1)")?,
                batch: read_batch(reader)?,
            },
            RequestKind::PublishDelayed => Request::PublishDelayed {
                topic: reader.string("topic name")?,
                partition: reader
                    .option("partition option", |reader| reader.u32("partition number"))?,
                when: ScheduleTime::read(reader)?,
                business_key: reader.option("business key option", |reader| {
                    reader.string("business key")
                })?,
                batch: read_batch(reader)?,
            },
            RequestKind::SubscribeWithSettings => {
                let fields = SubscribeFields::read(reader)?;
                Request::SubscribeWithSettings {
                    topic: fields.topic,
                    group: fields.group,
                    mode: fields.mode,
                    start: fields.start,
                    prefetch: fields.prefetch,
                    ack_timeout_ms: fields.ack_timeout_ms,
                    settings: QueueSettings::read(reader)?,
                }
            }
            RequestKind::Release => Request::Release {
                subscription: reader.u32("subscription id")?,
                ids: reader.list("message id list", MessageId::MINIMUM_BYTES, MessageId::read)?,
            },
            RequestKind::CreateExchange => Request::CreateExchange {
                name: reader.string("exchange name")?,
                kind: ExchangeKind::read(reader)?,
                alternate_topic: reader.option("alternate topic option", |reader| {
                    reader.string("alternate topic name")
                })?,
            },
            RequestKind::DeleteExchange => Request::DeleteExchange {
                name: reader.string("exchange name")?,
            },
            RequestKind::ListExchanges => Request::ListExchanges,
            RequestKind::Bind => Request::Bind {
                exchange: reader.string("exchange name")?,
                binding: Binding::read(reader)?,
            },
            RequestKind::Unbind => Request::Unbind {
                exchange: reader.string("exchange name")?,
                topic: reader.string("binding topic")?,
                key: reader.option("binding key option", |reader| reader.string("binding key"))?,
            },
            RequestKind::Read => Request::Read {
                topic: reader.string("topic name")?,
                partition: reader.u32("partition")?,
                from: Start::read(reader)?,
                max: reader.u32("maximum messages")?,
            },
            RequestKind::ListDeadLetterQueues => Request::ListDeadLetterQueues,
            RequestKind::ListDeadLetters => Request::ListDeadLetters {
                topic: reader.string("dead-letter topic name")?,
                max: reader.u32("maximum dead letters")?,
            },
            RequestKind::Redrive => Request::Redrive {
                topic: reader.string("dead-letter topic name")?,
                target: reader.option("target topic option", |reader| {
                    reader.string("target topic name")
                })?,
                ids: reader.option("message id list option", |reader| {
                    reader.list("message id list", MessageId::MINIMUM_BYTES, MessageId::read)
                })?,
                max: reader.u32("maximum dead letters")?,
            },
            RequestKind::PurgeDeadLetters => Request::PurgeDeadLetters {
                topic: reader.string("dead-letter topic name")?,
            },
            RequestKind::ListScheduled => Request::ListScheduled {
                topic: reader.option("topic option", |reader| reader.string("topic name"))?,
                after: reader.option("page cursor option", |reader| {
                    Ok((
                        reader.i64("cursor delivery time in milliseconds")?,
                        reader.u64("cursor scheduled message id")?,
                    ))
                })?,
                limit: reader.u32("list limit")?,
            },
            RequestKind::ShowScheduled => Request::ShowScheduled {
                id: reader.u64("scheduled message id")?,
            },
            RequestKind::CancelScheduled => Request::CancelScheduled {
                selector: ScheduledSelector::read(reader)?,
            },
            RequestKind::Reschedule => Request::Reschedule {
                id: reader.u64("scheduled message id")?,
                when: ScheduleTime::read(reader)?,
            },
            RequestKind::BeginTransaction => Request::BeginTransaction {
                producer_group: reader.string("producer group")?,
                timeout_ms: reader.option("timeout_ms option", |reader| {
                    reader.u64("transaction timeout in milliseconds")
                })?,
            },
            RequestKind::SendHalf => Request::SendHalf {
                transaction: reader.u64("transaction id")?,
                topic: reader.string("topic name")?,
                partition: reader
                    .option("partition option", |reader| reader.u32("partition number"))?,
                batch: read_batch(reader)?,
            },
            RequestKind::CommitTransaction => Request::CommitTransaction {
                transaction: reader.u64("transaction id")?,
            },
            RequestKind::RollbackTransaction => Request::RollbackTransaction {
                transaction: reader.u64("transaction id")?,
            },
            RequestKind::ListTransactions => Request::ListTransactions,
            RequestKind::RegisterTransactionChecker => Request::RegisterTransactionChecker {
                producer_group: reader.string("producer group")?,
            },
            RequestKind::ResolveTransaction => Request::ResolveTransaction {
                transaction: reader.u64("transaction id")?,
                decision: Decision::read(reader)?,
            },
            RequestKind::ClaimKey => Request::ClaimKey {
                key: reader.string("idempotency key")?,
                holder: reader.string("key holder")?,
                ttl_ms: reader.u64("time to live in milliseconds")?,
            },
            RequestKind::CompleteKey => Request::CompleteKey {
                key: reader.string("idempotency key")?,
                holder: reader.string("key holder")?,
                ttl_ms: reader.u64("time to live in milliseconds")?,
            },
            RequestKind::ReleaseKey => Request::ReleaseKey {
                key: reader.string("idempotency key")?,
                holder: reader.string("key holder")?,
            },
            RequestKind::Stats => Request::Stats,
            RequestKind::Alerts => Request::Alerts,
        })
    }
}

/// The fields `Subscribe` and `SubscribeWithSettings` share, in their order on the wire.
#[allow(clippy::too_many_arguments)]
fn put_subscribe(
    buf: &mut BytesMut,
    topic: &str,
    group: &str,
    mode: SubscriptionMode,
    start: Start,
    prefetch: u32,
    ack_timeout_ms: Option<u64>,
) {
    put_string(buf, topic);
    put_string(buf, group);
    mode.put(buf);
    start.put(buf);
    buf.put_u32_le(prefetch);
    put_option_u64(buf, ack_timeout_ms);
}

/// The fields `Subscribe` and `SubscribeWithSettings` share, read once for both.
struct SubscribeFields {
    topic: String,
    group: String,
    mode: SubscriptionMode,
    start: Start,
    prefetch: u32,
    ack_timeout_ms: Option<u64>,
}

impl SubscribeFields {
    fn read(reader: &mut Reader) -> Result<SubscribeFields, DecodeError> {
        Ok(SubscribeFields {
            topic: reader.string("topic name")?,
            group: reader.string("group name")?,
            mode: SubscriptionMode::read(reader)?,
            start: Start::read(reader)?,
            prefetch: reader.u32("prefetch")?,
            ack_timeout_ms: reader.option("ack_timeout_ms option", |reader| {
                reader.u64("ack timeout in milliseconds")
            })?,
        })
    }
}

/// A publish-shaped frame (topic, partition option, batch) under `kind`, borrowing its parts.
/// The batch is copied once, into `buf`, after one reservation for the whole frame.
fn encode_publish_as(
    kind: RequestKind,
    correlation_id: u64,
    topic: &str,
    partition: Option<u32>,
    batch: &[u8],
    buf: &mut BytesMut,
) {
    // One reservation for the whole frame: the batch is the bulk of it.
    buf.reserve(FRAME_HEADER_LEN + 4 + topic.len() + 5 + batch.len());
    let start = begin(buf, kind.code(), correlation_id);
    put_string(buf, topic);
    put_option(buf, partition, BytesMut::put_u32_le);
    buf.put_slice(batch);
    finish(buf, start);
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
