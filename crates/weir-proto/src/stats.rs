//! The wire form of the broker's numbers (`Stats`), for `weir stats` and `weir top`.
//!
//! A snapshot of what the broker measures, at one moment: per-partition sizes and publish
//! counters, per-subscription backlog, in-flight deliveries, counters, success rate and
//! latency. Rates over time are the reader's to compute from two snapshots. Layouts are in
//! `docs/protocol.md` §5.

use crate::error::DecodeError;
use crate::types::SubscriptionMode;
use crate::wire::{Reader, put_list, put_option, put_string};
use bytes::{BufMut, BytesMut};

/// Percentiles of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LatencySummary {
    /// Samples recorded.
    pub count: u64,
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest sample.
    pub max_us: u64,
}

impl LatencySummary {
    pub(crate) const BYTES: usize = 4 * 8;

    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u64_le(self.count);
        buf.put_u64_le(self.p50_us);
        buf.put_u64_le(self.p99_us);
        buf.put_u64_le(self.max_us);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<LatencySummary, DecodeError> {
        Ok(LatencySummary {
            count: reader.u64("latency sample count")?,
            p50_us: reader.u64("latency p50 in microseconds")?,
            p99_us: reader.u64("latency p99 in microseconds")?,
            max_us: reader.u64("latency maximum in microseconds")?,
        })
    }
}

/// One partition's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionStats {
    /// The partition.
    pub partition: u32,
    /// The oldest offset still retained.
    pub start_offset: u64,
    /// One past the last offset.
    pub end_offset: u64,
    /// Bytes its log occupies.
    pub size_bytes: u64,
    /// Messages published since the broker started.
    pub published_messages: u64,
    /// Bytes published since the broker started.
    pub published_bytes: u64,
}

impl PartitionStats {
    pub(crate) const BYTES: usize = 4 + 5 * 8;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_u32_le(self.partition);
        buf.put_u64_le(self.start_offset);
        buf.put_u64_le(self.end_offset);
        buf.put_u64_le(self.size_bytes);
        buf.put_u64_le(self.published_messages);
        buf.put_u64_le(self.published_bytes);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<PartitionStats, DecodeError> {
        Ok(PartitionStats {
            partition: reader.u32("partition number")?,
            start_offset: reader.u64("partition start offset")?,
            end_offset: reader.u64("partition end offset")?,
            size_bytes: reader.u64("partition size in bytes")?,
            published_messages: reader.u64("published message count")?,
            published_bytes: reader.u64("published byte count")?,
        })
    }
}

/// One topic's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicStats {
    /// The topic.
    pub name: String,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionStats>,
}

impl TopicStats {
    pub(crate) const MINIMUM_BYTES: usize = 4 + 4;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.name);
        put_list(buf, &self.partitions, |buf, partition| partition.put(buf));
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<TopicStats, DecodeError> {
        Ok(TopicStats {
            name: reader.string("topic name")?,
            partitions: reader.list(
                "partition statistics list",
                PartitionStats::BYTES,
                PartitionStats::read,
            )?,
        })
    }
}

/// One consumer attached to a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsumerStats {
    /// The broker's id for it.
    pub id: u64,
    /// Deliveries it received.
    pub delivered: u64,
    /// Deliveries it holds unacked now.
    pub in_flight: u32,
}

impl ConsumerStats {
    pub(crate) const BYTES: usize = 8 + 8 + 4;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.id);
        buf.put_u64_le(self.delivered);
        buf.put_u32_le(self.in_flight);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<ConsumerStats, DecodeError> {
        Ok(ConsumerStats {
            id: reader.u64("consumer id")?,
            delivered: reader.u64("consumer delivered count")?,
            in_flight: reader.u32("consumer in-flight count")?,
        })
    }
}

/// What happened to a subscription's messages since the broker started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionCounters {
    /// Deliveries, first ones and redeliveries.
    pub delivered: u64,
    /// Deliveries after the first of a message.
    pub redelivered: u64,
    /// Acknowledged.
    pub acked: u64,
    /// Nacked with requeue (a failure that will be retried).
    pub nacked: u64,
    /// Nacked without requeue.
    pub rejected: u64,
    /// Deliveries whose ack timeout passed.
    pub timed_out: u64,
    /// Given back by consumers shutting down (not a failure).
    pub released: u64,
    /// Moved to the dead-letter topic.
    pub dead_lettered: u64,
    /// Dead-lettered because their time to live passed.
    pub expired: u64,
}

impl SubscriptionCounters {
    pub(crate) const BYTES: usize = 9 * 8;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        for counter in [
            self.delivered,
            self.redelivered,
            self.acked,
            self.nacked,
            self.rejected,
            self.timed_out,
            self.released,
            self.dead_lettered,
            self.expired,
        ] {
            buf.put_u64_le(counter);
        }
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<SubscriptionCounters, DecodeError> {
        Ok(SubscriptionCounters {
            delivered: reader.u64("delivered count")?,
            redelivered: reader.u64("redelivered count")?,
            acked: reader.u64("acked count")?,
            nacked: reader.u64("nacked count")?,
            rejected: reader.u64("rejected count")?,
            timed_out: reader.u64("timed-out count")?,
            released: reader.u64("released count")?,
            dead_lettered: reader.u64("dead-lettered count")?,
            expired: reader.u64("expired count")?,
        })
    }
}

/// One subscription's numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionStats {
    /// The topic.
    pub topic: String,
    /// The group.
    pub group: String,
    /// Stream or queue.
    pub mode: SubscriptionMode,
    /// Published and not yet acked (queue) or committed (stream).
    pub backlog: u64,
    /// Delivered and not yet acked.
    pub in_flight: u64,
    /// The consumers attached now.
    pub consumers: Vec<ConsumerStats>,
    /// Counters since the broker started.
    pub counters: SubscriptionCounters,
    /// Acks ÷ (acks + failures) over the last minute, in parts per million (1,000,000 is
    /// 100%); `None` when nothing was settled in that minute. An integer, so that every
    /// value has one encoding.
    pub success_rate_ppm: Option<u32>,
    /// Publish → ack latency.
    pub latency: LatencySummary,
}

impl SubscriptionStats {
    /// Two string lengths, mode, backlog, in-flight, consumer count, counters, option tag,
    /// latency.
    pub(crate) const MINIMUM_BYTES: usize =
        4 + 4 + 1 + 8 + 8 + 4 + SubscriptionCounters::BYTES + 1 + LatencySummary::BYTES;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.topic);
        put_string(buf, &self.group);
        self.mode.put(buf);
        buf.put_u64_le(self.backlog);
        buf.put_u64_le(self.in_flight);
        put_list(buf, &self.consumers, |buf, consumer| consumer.put(buf));
        self.counters.put(buf);
        put_option(buf, self.success_rate_ppm, BytesMut::put_u32_le);
        self.latency.put(buf);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<SubscriptionStats, DecodeError> {
        Ok(SubscriptionStats {
            topic: reader.string("topic name")?,
            group: reader.string("group name")?,
            mode: SubscriptionMode::read(reader)?,
            backlog: reader.u64("subscription backlog")?,
            in_flight: reader.u64("subscription in-flight count")?,
            consumers: reader.list(
                "consumer statistics list",
                ConsumerStats::BYTES,
                ConsumerStats::read,
            )?,
            counters: SubscriptionCounters::read(reader)?,
            success_rate_ppm: reader.option("success rate option", |reader| {
                reader.u32("success rate in parts per million")
            })?,
            latency: LatencySummary::read(reader)?,
        })
    }
}

/// Everything the broker measures, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerStats {
    /// When the snapshot was taken, in milliseconds since the Unix epoch (broker clock).
    pub now_ms: i64,
    /// Bytes all partition logs occupy.
    pub disk_bytes: u64,
    /// Scheduled batches not yet due.
    pub scheduled: u64,
    /// Undecided transactions.
    pub transactions: u64,
    /// Messages exchanges dropped because nothing matched them, since the broker started.
    pub unroutable_dropped: u64,
    /// Time of each group commit's fdatasync.
    pub fsync: LatencySummary,
    /// Every topic, by name.
    pub topics: Vec<TopicStats>,
    /// Every subscription.
    pub subscriptions: Vec<SubscriptionStats>,
}

impl BrokerStats {
    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_i64_le(self.now_ms);
        buf.put_u64_le(self.disk_bytes);
        buf.put_u64_le(self.scheduled);
        buf.put_u64_le(self.transactions);
        buf.put_u64_le(self.unroutable_dropped);
        self.fsync.put(buf);
        put_list(buf, &self.topics, |buf, topic| topic.put(buf));
        put_list(buf, &self.subscriptions, |buf, subscription| {
            subscription.put(buf);
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<BrokerStats, DecodeError> {
        Ok(BrokerStats {
            now_ms: reader.i64("snapshot time in milliseconds")?,
            disk_bytes: reader.u64("disk bytes")?,
            scheduled: reader.u64("scheduled batch count")?,
            transactions: reader.u64("transaction count")?,
            unroutable_dropped: reader.u64("unroutable dropped count")?,
            fsync: LatencySummary::read(reader)?,
            topics: reader.list(
                "topic statistics list",
                TopicStats::MINIMUM_BYTES,
                TopicStats::read,
            )?,
            subscriptions: reader.list(
                "subscription statistics list",
                SubscriptionStats::MINIMUM_BYTES,
                SubscriptionStats::read,
            )?,
        })
    }
}
