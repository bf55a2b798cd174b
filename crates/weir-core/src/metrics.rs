//! Metrics kept in the core, cheap on the hot path: partition counters are atomics bumped once
//! per group commit; subscription counters live under the subscription's own lock, which every
//! delivery and ack already takes. [`crate::Broker::stats`] assembles a snapshot; front ends
//! render it (Prometheus, JSON, `weir top`).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// How far back the success rate looks.
pub const SUCCESS_WINDOW_MS: i64 = 60_000;

/// p50/p99/max of a latency histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

/// A latency histogram from 1 µs to an hour, 2 significant digits (about 1% error).
#[derive(Debug, Clone)]
pub(crate) struct Latency(Option<Histogram<u64>>);

impl Default for Latency {
    fn default() -> Self {
        Latency(Histogram::new_with_bounds(1, 3_600_000_000, 2).ok())
    }
}

impl Latency {
    pub fn record_us(&mut self, microseconds: u64) {
        if let Some(histogram) = &mut self.0 {
            // Values past the upper bound are clamped rather than lost.
            histogram.saturating_record(microseconds.max(1));
        }
    }

    pub fn summary(&self) -> LatencySummary {
        match &self.0 {
            Some(histogram) if !histogram.is_empty() => LatencySummary {
                count: histogram.len(),
                p50_us: histogram.value_at_quantile(0.5),
                p99_us: histogram.value_at_quantile(0.99),
                max_us: histogram.max(),
            },
            _ => LatencySummary::default(),
        }
    }
}

/// Counters of one partition, shared by its writer (which bumps them) and readers of stats.
#[derive(Debug, Default)]
pub(crate) struct PartitionCounters {
    pub published_messages: AtomicU64,
    pub published_bytes: AtomicU64,
    pub size_bytes: AtomicU64,
}

impl PartitionCounters {
    pub fn add_published(&self, messages: u64, bytes: u64) {
        self.published_messages
            .fetch_add(messages, Ordering::Relaxed);
        self.published_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Broker-wide metrics shared by every partition writer.
#[derive(Debug, Default)]
pub(crate) struct BrokerMetrics {
    /// Time of each group commit's fdatasync.
    pub fsync: Mutex<Latency>,
}

impl BrokerMetrics {
    pub fn record_fsync_us(&self, microseconds: u64) {
        self.fsync
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .record_us(microseconds);
    }
}

/// What happened to a subscription's messages since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubscriptionCounters {
    pub delivered: u64,
    /// Deliveries after the first of a message.
    pub redelivered: u64,
    pub acked: u64,
    /// Nacked with requeue (a failure that will be retried).
    pub nacked: u64,
    /// Nacked without requeue.
    pub rejected: u64,
    /// Deliveries whose ack timeout passed.
    pub timed_out: u64,
    /// Given back by consumers shutting down (not a failure).
    pub released: u64,
    pub dead_lettered: u64,
    /// Dead-lettered because their time to live passed.
    pub expired: u64,
}

/// Acks and failures per second over the last minute, for the success rate.
#[derive(Debug, Default)]
pub(crate) struct SuccessWindow {
    /// (second, successes, failures), oldest first.
    buckets: VecDeque<(i64, u64, u64)>,
}

impl SuccessWindow {
    pub fn record(&mut self, now_ms: i64, successes: u64, failures: u64) {
        if successes == 0 && failures == 0 {
            return;
        }
        let second = now_ms.div_euclid(1000);
        match self.buckets.back_mut() {
            Some((last, good, bad)) if *last == second => {
                *good += successes;
                *bad += failures;
            }
            _ => self.buckets.push_back((second, successes, failures)),
        }
        self.trim(now_ms);
    }

    fn trim(&mut self, now_ms: i64) {
        let oldest = (now_ms - SUCCESS_WINDOW_MS).div_euclid(1000);
        while self
            .buckets
            .front()
            .is_some_and(|(second, _, _)| *second <= oldest)
        {
            self.buckets.pop_front();
        }
    }

    /// acks ÷ (acks + failures) over the window; `None` when nothing happened in it.
    pub fn rate(&self, now_ms: i64) -> Option<f64> {
        let oldest = (now_ms - SUCCESS_WINDOW_MS).div_euclid(1000);
        let (good, bad) = self
            .buckets
            .iter()
            .filter(|(second, _, _)| *second > oldest)
            .fold((0, 0), |(good, bad), (_, successes, failures)| {
                (good + successes, bad + failures)
            });
        (good + bad > 0).then(|| good as f64 / (good + bad) as f64)
    }
}

/// A subscription's metrics, kept under its state lock.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionMetrics {
    pub counters: SubscriptionCounters,
    pub success: SuccessWindow,
    /// Publish → ack, from the message's timestamp.
    pub latency: Latency,
}

impl SubscriptionMetrics {
    pub fn acked(&mut self, now_ms: i64, published_ms: i64) {
        self.counters.acked += 1;
        self.success.record(now_ms, 1, 0);
        self.latency
            .record_us(now_ms.saturating_sub(published_ms).max(0) as u64 * 1000);
    }

    pub fn failed(&mut self, now_ms: i64) {
        self.success.record(now_ms, 0, 1);
    }
}

/// One consumer of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerStats {
    pub id: u64,
    pub delivered: u64,
    pub in_flight: u32,
}

/// A subscription's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionStats {
    pub topic: String,
    pub group: String,
    pub kind: crate::config::SubscriptionKind,
    /// Published and not yet acked (queue) or committed (stream).
    pub backlog: u64,
    pub in_flight: u64,
    pub consumers: Vec<ConsumerStats>,
    pub counters: SubscriptionCounters,
    /// acks ÷ (acks + nacks + rejects + timeouts + expiries) over the last minute.
    pub success_rate: Option<f64>,
    /// Publish → ack.
    pub latency: LatencySummary,
}

/// One partition's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionStats {
    pub partition: u32,
    pub start_offset: u64,
    pub end_offset: u64,
    pub size_bytes: u64,
    /// Since the broker started.
    pub published_messages: u64,
    pub published_bytes: u64,
    /// The partition's writer failed (a panic): it refuses writes until the broker restarts.
    pub poisoned: bool,
}

/// One topic's numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicStats {
    pub name: String,
    pub partitions: Vec<PartitionStats>,
}

/// Everything the core measures, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerStats {
    pub now_ms: i64,
    pub topics: Vec<TopicStats>,
    pub subscriptions: Vec<SubscriptionStats>,
    /// Time of each group commit's fdatasync.
    pub fsync: LatencySummary,
    pub disk_bytes: u64,
    pub scheduled: u64,
    /// Scheduled entries set aside because their stored form does not decode.
    pub scheduled_quarantined: u64,
    pub transactions: u64,
    pub unroutable_dropped: u64,
    /// Failed attempts of the timer's background steps since start, by step (each of
    /// [`BACKGROUND_STEPS`], 0 when it never failed). A failing step backs off.
    pub background_failures: std::collections::BTreeMap<String, u64>,
}

/// The timer's background steps that can fail and are retried: storing dead letters,
/// delivering due scheduled messages, checking transactions, expiring idempotency keys,
/// retention.
pub const BACKGROUND_STEPS: &[&str] = &[
    "dead_letters",
    "schedule",
    "transactions",
    "idempotency_keys",
    "retention",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_success_rate_covers_the_last_minute_only() {
        let mut window = SuccessWindow::default();
        assert_eq!(window.rate(0), None);
        window.record(0, 0, 10);
        window.record(30_000, 90, 0);
        assert_eq!(window.rate(30_000), Some(0.9));
        assert_eq!(
            window.rate(61_000),
            Some(1.0),
            "the failures fell out of the window"
        );
        assert_eq!(window.rate(100_000), None);
    }

    #[test]
    fn latency_summaries_report_percentiles() {
        let mut latency = Latency::default();
        for value in 1..=100 {
            latency.record_us(value * 1000);
        }
        let summary = latency.summary();
        assert_eq!(summary.count, 100);
        assert!((49_000..=51_000).contains(&summary.p50_us), "{summary:?}");
        assert!(summary.max_us >= 100_000);
    }
}
