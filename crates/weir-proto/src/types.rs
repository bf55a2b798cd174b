//! The values that requests and responses share: policies, positions, ids and descriptions.
//!
//! Each type knows its own byte layout (`put` and `read`, crate-private) and the least number
//! of bytes one value takes (`MINIMUM_BYTES`), which is what lets a list decoder refuse an
//! impossible count before allocating. The layouts are specified in `docs/protocol.md`; the
//! meaning of the values (what a committed offset is, what each fsync policy survives) belongs
//! to the broker, and is only summarised here.

use crate::error::DecodeError;
use crate::wire::{
    Reader, put_bool, put_bytes, put_list, put_option, put_option_u64, put_string, wire_u32,
};
use bytes::{BufMut, Bytes, BytesMut};

/// When a topic's appends are fsynced, and so what a publish confirm promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fsync {
    /// fdatasync before every confirm (group commit shares one among concurrent publishers):
    /// a confirmed message survives a process crash and a power loss. Tag 0.
    Always,
    /// Leave flushing to the operating system: a confirmed message survives a process crash,
    /// not a power loss. Tag 1.
    Os,
    /// fdatasync at most this many milliseconds apart; confirms do not wait for it: survives a
    /// process crash, and a power loss loses at most about one interval. Tag 2, then `u32`.
    IntervalMs(u32),
}

impl Fsync {
    const EXPECTED: &'static str = "fsync policy (0 always, 1 os, 2 interval)";

    pub(crate) fn put(self, buf: &mut BytesMut) {
        match self {
            Fsync::Always => buf.put_u8(0),
            Fsync::Os => buf.put_u8(1),
            Fsync::IntervalMs(interval) => {
                buf.put_u8(2);
                buf.put_u32_le(interval);
            }
        }
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<Fsync, DecodeError> {
        Ok(match reader.tag(2, Fsync::EXPECTED)? {
            0 => Fsync::Always,
            1 => Fsync::Os,
            _ => Fsync::IntervalMs(reader.u32("fsync interval in milliseconds")?),
        })
    }
}

/// Where a subscription starts reading, or where a reset moves a group to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Start {
    /// The oldest message still retained. Tag 0.
    Earliest,
    /// Only messages published from now on. Tag 1.
    Latest,
    /// This offset in every partition (clamped by the broker to what is retained). Tag 2,
    /// then `u64`.
    Offset(u64),
    /// The first message whose timestamp is at or after this many milliseconds since the Unix
    /// epoch. Tag 3, then `i64`.
    Timestamp(i64),
}

impl Start {
    const EXPECTED: &'static str = "start position (0 earliest, 1 latest, 2 offset, 3 timestamp)";

    pub(crate) fn put(self, buf: &mut BytesMut) {
        match self {
            Start::Earliest => buf.put_u8(0),
            Start::Latest => buf.put_u8(1),
            Start::Offset(offset) => {
                buf.put_u8(2);
                buf.put_u64_le(offset);
            }
            Start::Timestamp(timestamp_ms) => {
                buf.put_u8(3);
                buf.put_i64_le(timestamp_ms);
            }
        }
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<Start, DecodeError> {
        Ok(match reader.tag(3, Start::EXPECTED)? {
            0 => Start::Earliest,
            1 => Start::Latest,
            2 => Start::Offset(reader.u64("start offset")?),
            _ => Start::Timestamp(reader.i64("start timestamp in milliseconds")?),
        })
    }
}

/// The two kinds of subscription (consumer group).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionMode {
    /// Kafka semantics: a committed offset per partition, partitions shared among the
    /// group's consumers, order kept per partition. Tag 0.
    Stream,
    /// Work-queue semantics: per-message ack, competing consumers, redelivery. Tag 1.
    Queue,
}

impl SubscriptionMode {
    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u8(match self {
            SubscriptionMode::Stream => 0,
            SubscriptionMode::Queue => 1,
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<SubscriptionMode, DecodeError> {
        Ok(
            match reader.tag(1, "subscription mode (0 stream, 1 queue)")? {
                0 => SubscriptionMode::Stream,
                _ => SubscriptionMode::Queue,
            },
        )
    }
}

/// What a publish confirm guarantees: how durable the messages were when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// Written to the operating system's page cache: survives a process crash. Tag 0.
    Os,
    /// fdatasynced: survives a power loss too. Tag 1.
    Fsynced,
}

impl Durability {
    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u8(match self {
            Durability::Os => 0,
            Durability::Fsynced => 1,
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<Durability, DecodeError> {
        Ok(match reader.tag(1, "durability (0 os, 1 fsynced)")? {
            0 => Durability::Os,
            _ => Durability::Fsynced,
        })
    }
}

/// Names one message of a topic, for acks and nacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// The partition the message is in.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
}

impl MessageId {
    pub(crate) const MINIMUM_BYTES: usize = 4 + 8;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.partition);
        buf.put_u64_le(self.offset);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<MessageId, DecodeError> {
        Ok(MessageId {
            partition: reader.u32("message partition")?,
            offset: reader.u64("message offset")?,
        })
    }
}

/// One partition of a topic, as described to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionInfo {
    /// The partition number, from 0.
    pub partition: u32,
    /// The oldest offset still retained.
    pub start_offset: u64,
    /// The offset the next message will get (one past the last one).
    pub end_offset: u64,
    /// Bytes the partition's log occupies on disk.
    pub size_bytes: u64,
}

impl PartitionInfo {
    pub(crate) const MINIMUM_BYTES: usize = 4 + 8 + 8 + 8;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.partition);
        buf.put_u64_le(self.start_offset);
        buf.put_u64_le(self.end_offset);
        buf.put_u64_le(self.size_bytes);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<PartitionInfo, DecodeError> {
        Ok(PartitionInfo {
            partition: reader.u32("partition number")?,
            start_offset: reader.u64("partition start offset")?,
            end_offset: reader.u64("partition end offset")?,
            size_bytes: reader.u64("partition size in bytes")?,
        })
    }
}

/// A topic's configuration and partitions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionInfo>,
    /// Its durability policy.
    pub fsync: Fsync,
    /// Messages older than this are deleted (whole segments at a time); `None` keeps them.
    pub retention_ms: Option<u64>,
    /// Each partition is trimmed to about this size; `None` for no size limit.
    pub retention_bytes: Option<u64>,
}

impl TopicInfo {
    /// Name length, partition count, fsync tag, two option tags.
    pub(crate) const MINIMUM_BYTES: usize = 4 + 4 + 1 + 1 + 1;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.name);
        put_list(buf, &self.partitions, |buf, partition| partition.put(buf));
        self.fsync.put(buf);
        put_option_u64(buf, self.retention_ms);
        put_option_u64(buf, self.retention_bytes);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<TopicInfo, DecodeError> {
        Ok(TopicInfo {
            name: reader.string("topic name")?,
            partitions: reader.list(
                "partition list",
                PartitionInfo::MINIMUM_BYTES,
                PartitionInfo::read,
            )?,
            fsync: Fsync::read(reader)?,
            retention_ms: reader.option("retention_ms option", |reader| {
                reader.u64("retention in milliseconds")
            })?,
            retention_bytes: reader.option("retention_bytes option", |reader| {
                reader.u64("retention in bytes")
            })?,
        })
    }
}

/// The offsets one partition gave to a confirmed publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublishedRange {
    /// The partition written.
    pub partition: u32,
    /// Offset of the first message written there.
    pub base_offset: u64,
    /// Offset of the last message written there (inclusive).
    pub last_offset: u64,
}

impl PublishedRange {
    pub(crate) const MINIMUM_BYTES: usize = 4 + 8 + 8;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.partition);
        buf.put_u64_le(self.base_offset);
        buf.put_u64_le(self.last_offset);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<PublishedRange, DecodeError> {
        Ok(PublishedRange {
            partition: reader.u32("published partition")?,
            base_offset: reader.u64("published base offset")?,
            last_offset: reader.u64("published last offset")?,
        })
    }
}

/// A group's position in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GroupPartition {
    /// The partition.
    pub partition: u32,
    /// Stream mode: the next offset the group will read. Queue mode: the ack floor (every
    /// offset below it is acked).
    pub committed: u64,
    /// The partition's end offset (one past its last message).
    pub end_offset: u64,
    /// Messages delivered and not yet acked (queue mode; 0 in stream mode).
    pub in_flight: u32,
}

impl GroupPartition {
    pub(crate) const MINIMUM_BYTES: usize = 4 + 8 + 8 + 4;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.partition);
        buf.put_u64_le(self.committed);
        buf.put_u64_le(self.end_offset);
        buf.put_u32_le(self.in_flight);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<GroupPartition, DecodeError> {
        Ok(GroupPartition {
            partition: reader.u32("group partition")?,
            committed: reader.u64("group committed offset")?,
            end_offset: reader.u64("group end offset")?,
            in_flight: reader.u32("group in-flight count")?,
        })
    }
}

/// A subscription (consumer group) on a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupInfo {
    /// The topic subscribed to.
    pub topic: String,
    /// The group's name, unique per topic.
    pub group: String,
    /// Stream or queue.
    pub mode: SubscriptionMode,
    /// Consumers attached now.
    pub consumers: u32,
    /// Its position in each partition.
    pub partitions: Vec<GroupPartition>,
    /// Messages not yet consumed (stream) or not yet acked (queue), over all partitions.
    pub backlog: u64,
}

impl GroupInfo {
    /// Two string lengths, mode tag, consumer count, partition count, backlog.
    pub(crate) const MINIMUM_BYTES: usize = 4 + 4 + 1 + 4 + 4 + 8;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.topic);
        put_string(buf, &self.group);
        self.mode.put(buf);
        buf.put_u32_le(self.consumers);
        put_list(buf, &self.partitions, |buf, partition| partition.put(buf));
        buf.put_u64_le(self.backlog);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<GroupInfo, DecodeError> {
        Ok(GroupInfo {
            topic: reader.string("group topic")?,
            group: reader.string("group name")?,
            mode: SubscriptionMode::read(reader)?,
            consumers: reader.u32("group consumer count")?,
            partitions: reader.list(
                "group partition list",
                GroupPartition::MINIMUM_BYTES,
                GroupPartition::read,
            )?,
            backlog: reader.u64("group backlog")?,
        })
    }
}

/// One message handed to a consumer.
///
/// Decoded deliveries share the frame's bytes: `key`, header values and `value` are slices of
/// it, not copies.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    /// The partition the message is in.
    pub partition: u32,
    /// Its offset there: with the partition, the id to ack or nack.
    pub offset: u64,
    /// 1 on first delivery, more on redelivery.
    pub delivery_count: u32,
    /// When it was published, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The routing / partitioning key, if it has one.
    pub key: Option<Bytes>,
    /// Application headers, in the order published.
    pub headers: Vec<(String, Bytes)>,
    /// The payload.
    pub value: Bytes,
}

impl Delivery {
    /// partition, offset, delivery count, timestamp, key tag, header count, value length.
    pub(crate) const MINIMUM_BYTES: usize = 4 + 8 + 4 + 8 + 1 + 4 + 4;
    /// Name length and value length.
    const MINIMUM_HEADER_BYTES: usize = 4 + 4;

    /// A delivery of a record read from a partition log (moves the record's slices, copies
    /// nothing).
    pub fn from_record(
        partition: u32,
        delivery_count: u32,
        record: weir_batch::Record,
    ) -> Delivery {
        Delivery {
            partition,
            offset: record.offset,
            delivery_count,
            timestamp_ms: record.timestamp_ms,
            key: record.key,
            headers: record.headers,
            value: record.value,
        }
    }

    /// The id to ack or nack this delivery with.
    pub fn id(&self) -> MessageId {
        MessageId {
            partition: self.partition,
            offset: self.offset,
        }
    }

    /// Bytes this delivery adds to a `Deliver` frame.
    pub fn encoded_len(&self) -> usize {
        encoded_len(self.key.as_deref(), &self.headers, &self.value)
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<Delivery, DecodeError> {
        Ok(Delivery {
            partition: reader.u32("delivery partition")?,
            offset: reader.u64("delivery offset")?,
            delivery_count: reader.u32("delivery count")?,
            timestamp_ms: reader.i64("delivery timestamp")?,
            key: reader.option("delivery key option", |reader| reader.bytes("delivery key"))?,
            headers: read_headers(reader, "delivery header list")?,
            value: reader.bytes("delivery value")?,
        })
    }
}

/// Size of one encoded delivery, from its parts.
pub(crate) fn encoded_len(key: Option<&[u8]>, headers: &[(String, Bytes)], value: &[u8]) -> usize {
    Delivery::MINIMUM_BYTES
        + key.map_or(0, |key| 4 + key.len())
        + headers
            .iter()
            .map(|(name, value)| Delivery::MINIMUM_HEADER_BYTES + name.len() + value.len())
            .sum::<usize>()
        + value.len()
}

/// Writes one delivery from its parts, so a caller holding a log record need not build a
/// [`Delivery`] first.
#[allow(clippy::too_many_arguments)]
pub(crate) fn put_delivery(
    buf: &mut BytesMut,
    partition: u32,
    offset: u64,
    delivery_count: u32,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    headers: &[(String, Bytes)],
    value: &[u8],
) {
    buf.reserve(encoded_len(key, headers, value));
    buf.put_u32_le(partition);
    buf.put_u64_le(offset);
    buf.put_u32_le(delivery_count);
    buf.put_i64_le(timestamp_ms);
    put_option(buf, key, put_bytes);
    buf.put_u32_le(wire_u32(headers.len()));
    for (name, value) in headers {
        put_string(buf, name);
        put_bytes(buf, value);
    }
    put_bytes(buf, value);
}

/// Reads a header list, as deliveries and messages lay it out: `(name: string, value: bytes)`
/// pairs.
fn read_headers(
    reader: &mut Reader,
    expected: &'static str,
) -> Result<Vec<(String, Bytes)>, DecodeError> {
    reader.list(expected, Delivery::MINIMUM_HEADER_BYTES, |reader| {
        Ok((reader.string("header name")?, reader.bytes("header value")?))
    })
}

fn put_headers(buf: &mut BytesMut, headers: &[(String, Bytes)]) {
    put_list(buf, headers, |buf, (name, value)| {
        put_string(buf, name);
        put_bytes(buf, value);
    });
}

/// What a queue subscription does when its backlog reaches `max_backlog`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Overflow {
    /// Publishes to the topic are refused with `backlog_full` until consumers catch up.
    /// Tag 0.
    #[default]
    RejectPublish,
    /// The oldest waiting messages are moved to the dead-letter topic. Tag 1.
    DeadLetterOldest,
}

impl Overflow {
    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u8(match self {
            Overflow::RejectPublish => 0,
            Overflow::DeadLetterOldest => 1,
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<Overflow, DecodeError> {
        Ok(
            match reader.tag(
                1,
                "overflow policy (0 reject publish, 1 dead-letter oldest)",
            )? {
                0 => Overflow::RejectPublish,
                _ => Overflow::DeadLetterOldest,
            },
        )
    }
}

/// The delivery guarantees of a queue subscription, fixed when the subscription is created
/// (joining an existing one keeps its settings). The default is what `Subscribe` without
/// settings gets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct QueueSettings {
    /// After this many deliveries without an ack, a message is dead-lettered; `None` for
    /// never.
    pub max_deliveries: Option<u32>,
    /// Where dead letters go; `None` for `<topic>.<group>.dlq`.
    pub dead_letter_topic: Option<String>,
    /// Messages older than this (by publish time) are dead-lettered instead of delivered.
    pub message_ttl_ms: Option<u64>,
    /// Never two messages with the same key in flight: per-key order with many consumers.
    pub ordered_by_key: bool,
    /// Waits before redelivering a message nacked with requeue and no delay of its own: the
    /// n-th failure waits the n-th entry, the last one repeating. Empty for no wait.
    pub retry_backoff_ms: Vec<u64>,
    /// Most messages waiting (not yet acked) before `overflow` applies; `None` for no limit.
    pub max_backlog: Option<u64>,
    /// What happens at `max_backlog`.
    pub overflow: Overflow,
}

impl QueueSettings {
    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_option(buf, self.max_deliveries, BytesMut::put_u32_le);
        put_option(buf, self.dead_letter_topic.as_deref(), put_string);
        put_option_u64(buf, self.message_ttl_ms);
        put_bool(buf, self.ordered_by_key);
        put_list(buf, &self.retry_backoff_ms, |buf, delay| {
            buf.put_u64_le(*delay);
        });
        put_option_u64(buf, self.max_backlog);
        self.overflow.put(buf);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<QueueSettings, DecodeError> {
        Ok(QueueSettings {
            max_deliveries: reader.option("max_deliveries option", |reader| {
                reader.u32("maximum deliveries")
            })?,
            dead_letter_topic: reader.option("dead_letter_topic option", |reader| {
                reader.string("dead-letter topic name")
            })?,
            message_ttl_ms: reader.option("message_ttl_ms option", |reader| {
                reader.u64("message time to live in milliseconds")
            })?,
            ordered_by_key: reader.bool("ordered_by_key flag (0 or 1)")?,
            retry_backoff_ms: reader.list("retry backoff list", 8, |reader| {
                reader.u64("retry backoff in milliseconds")
            })?,
            max_backlog: reader.option("max_backlog option", |reader| {
                reader.u64("maximum backlog in messages")
            })?,
            overflow: Overflow::read(reader)?,
        })
    }
}

/// A message as stored, without a place in a log yet (a scheduled message, for instance).
///
/// Decoded messages share the frame's bytes, as deliveries do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Message {
    /// When it was published, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The routing / partitioning key, if it has one.
    pub key: Option<Bytes>,
    /// Application headers, in the order published.
    pub headers: Vec<(String, Bytes)>,
    /// The payload.
    pub value: Bytes,
}

impl Message {
    /// timestamp, key tag, header count, value length.
    pub(crate) const MINIMUM_BYTES: usize = 8 + 1 + 4 + 4;

    /// Bytes this message adds to a frame: check it against the peer's maximum frame size
    /// before adding it to a response.
    pub fn encoded_len(&self) -> usize {
        // A delivery is a message plus partition, offset and delivery count.
        encoded_len(self.key.as_deref(), &self.headers, &self.value)
            - (Delivery::MINIMUM_BYTES - Message::MINIMUM_BYTES)
    }

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_i64_le(self.timestamp_ms);
        put_option(buf, self.key.as_deref(), put_bytes);
        put_headers(buf, &self.headers);
        put_bytes(buf, &self.value);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<Message, DecodeError> {
        Ok(Message {
            timestamp_ms: reader.i64("message timestamp")?,
            key: reader.option("message key option", |reader| reader.bytes("message key"))?,
            headers: read_headers(reader, "message header list")?,
            value: reader.bytes("message value")?,
        })
    }
}

/// Where one topic's share of a publish landed (a publish through an exchange, or a
/// committed transaction, may write to several topics).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicConfirm {
    /// The topic written.
    pub topic: String,
    /// The offsets written, one entry per partition.
    pub partitions: Vec<PublishedRange>,
    /// Messages not stored again because an earlier copy is stored (same message id within
    /// the dedup window, or an idempotent producer's retry): where that copy is.
    pub duplicates: Vec<MessageId>,
    /// How durable this topic's messages were when the confirm was sent.
    pub durability: Durability,
}

impl TopicConfirm {
    /// Name length, two list counts, durability.
    pub(crate) const MINIMUM_BYTES: usize = 4 + 4 + 4 + 1;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.topic);
        put_list(buf, &self.partitions, |buf, range| range.put(buf));
        put_list(buf, &self.duplicates, |buf, id| id.put(buf));
        self.durability.put(buf);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<TopicConfirm, DecodeError> {
        Ok(TopicConfirm {
            topic: reader.string("confirmed topic name")?,
            partitions: reader.list(
                "published partition list",
                PublishedRange::MINIMUM_BYTES,
                PublishedRange::read,
            )?,
            duplicates: reader.list("duplicate list", MessageId::MINIMUM_BYTES, MessageId::read)?,
            durability: Durability::read(reader)?,
        })
    }
}

/// A dead-letter topic and how many dead letters it still holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeadLetterQueueInfo {
    /// The dead-letter topic (an ordinary topic, by default `<topic>.<group>.dlq`).
    pub topic: String,
    /// Dead letters neither redriven nor purged.
    pub pending: u64,
}

impl DeadLetterQueueInfo {
    pub(crate) const MINIMUM_BYTES: usize = 4 + 8;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.topic);
        buf.put_u64_le(self.pending);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<DeadLetterQueueInfo, DecodeError> {
        Ok(DeadLetterQueueInfo {
            topic: reader.string("dead-letter topic name")?,
            pending: reader.u64("pending dead letters")?,
        })
    }
}

/// The answer to a claim of an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClaimOutcome {
    /// The caller holds the key until then: do the work, then `CompleteKey`. Tag 0, then
    /// `i64` ms since the epoch.
    Acquired {
        /// When the claim lapses unless completed or claimed again.
        expires_at_ms: i64,
    },
    /// Another holder has it; retry after it expires or is released. Tag 1, then the holder
    /// (`string`) and `i64`.
    Busy {
        /// Who holds it.
        holder: String,
        /// When their claim lapses.
        expires_at_ms: i64,
    },
    /// The work was already done: skip it. Tag 2, then `i64`.
    Completed {
        /// When it was completed.
        completed_at_ms: i64,
    },
}

impl ClaimOutcome {
    pub(crate) fn put(&self, buf: &mut BytesMut) {
        match self {
            ClaimOutcome::Acquired { expires_at_ms } => {
                buf.put_u8(0);
                buf.put_i64_le(*expires_at_ms);
            }
            ClaimOutcome::Busy {
                holder,
                expires_at_ms,
            } => {
                buf.put_u8(1);
                put_string(buf, holder);
                buf.put_i64_le(*expires_at_ms);
            }
            ClaimOutcome::Completed { completed_at_ms } => {
                buf.put_u8(2);
                buf.put_i64_le(*completed_at_ms);
            }
        }
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<ClaimOutcome, DecodeError> {
        Ok(
            match reader.tag(2, "claim outcome (0 acquired, 1 busy, 2 completed)")? {
                0 => ClaimOutcome::Acquired {
                    expires_at_ms: reader.i64("claim expiry in milliseconds")?,
                },
                1 => ClaimOutcome::Busy {
                    holder: reader.string("claim holder")?,
                    expires_at_ms: reader.i64("claim expiry in milliseconds")?,
                },
                _ => ClaimOutcome::Completed {
                    completed_at_ms: reader.i64("completion time in milliseconds")?,
                },
            },
        )
    }
}
