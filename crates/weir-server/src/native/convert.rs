//! Translations between the wire types of `weir-proto` and the domain types of `weir-core`.
//!
//! The two crates deliberately do not know each other (the core knows no socket, the codec no
//! broker), so the same concept exists on both sides and meets here. Pure functions only: no
//! broker calls and no policy; a default that the wire leaves open (`None`) is filled in by the
//! caller in `handle.rs`.

use weir_core::{
    Alert, AlertMetric, AlertState, BrokerStats, Claim, Confirm, DeadLetterQueueInfo, Decision,
    Durability, Exchange, ExchangeKind, FsyncPolicy, Overflow, QueueSettings, Record,
    RoutedConfirm, ScheduledMessage, StartPosition, SubscriptionKind, TopicInfo, TransactionInfo,
    TransactionState,
};
use weir_proto::{Fsync, Response, ScheduleTime, Start, SubscriptionMode};

pub(crate) fn fsync_policy(fsync: Fsync) -> FsyncPolicy {
    match fsync {
        Fsync::Always => FsyncPolicy::Always,
        Fsync::Os => FsyncPolicy::Os,
        Fsync::IntervalMs(interval_ms) => FsyncPolicy::IntervalMs(interval_ms),
    }
}

fn fsync(policy: FsyncPolicy) -> Fsync {
    match policy {
        FsyncPolicy::Always => Fsync::Always,
        FsyncPolicy::Os => Fsync::Os,
        FsyncPolicy::IntervalMs(interval_ms) => Fsync::IntervalMs(interval_ms),
    }
}

pub(crate) fn start_position(start: Start) -> StartPosition {
    match start {
        Start::Earliest => StartPosition::Earliest,
        Start::Latest => StartPosition::Latest,
        Start::Offset(offset) => StartPosition::Offset(offset),
        Start::Timestamp(timestamp_ms) => StartPosition::Timestamp(timestamp_ms),
    }
}

pub(crate) fn subscription_kind(mode: SubscriptionMode) -> SubscriptionKind {
    match mode {
        SubscriptionMode::Stream => SubscriptionKind::Stream,
        SubscriptionMode::Queue => SubscriptionKind::Queue,
    }
}

fn subscription_mode(kind: SubscriptionKind) -> SubscriptionMode {
    match kind {
        SubscriptionKind::Stream => SubscriptionMode::Stream,
        SubscriptionKind::Queue => SubscriptionMode::Queue,
    }
}

fn durability(durability: Durability) -> weir_proto::Durability {
    match durability {
        Durability::Os => weir_proto::Durability::Os,
        Durability::Fsynced => weir_proto::Durability::Fsynced,
    }
}

pub(crate) fn topic_info(info: TopicInfo) -> weir_proto::TopicInfo {
    weir_proto::TopicInfo {
        partitions: info
            .partitions
            .iter()
            .map(|partition| weir_proto::PartitionInfo {
                partition: partition.partition,
                start_offset: partition.start_offset,
                end_offset: partition.end_offset,
                size_bytes: partition.size_bytes,
            })
            .collect(),
        fsync: fsync(info.config.fsync),
        retention_ms: info.config.retention_ms,
        retention_bytes: info.config.retention_bytes,
        name: info.name,
    }
}

pub(crate) fn group_info(info: weir_core::GroupInfo) -> weir_proto::GroupInfo {
    weir_proto::GroupInfo {
        mode: subscription_mode(info.kind),
        consumers: info.consumers,
        partitions: info
            .partitions
            .iter()
            .map(|partition| weir_proto::GroupPartition {
                partition: partition.partition,
                committed: partition.committed,
                end_offset: partition.end_offset,
                in_flight: partition.in_flight,
            })
            .collect(),
        backlog: info.backlog,
        topic: info.topic,
        group: info.group,
    }
}

fn published_ranges(confirm: &Confirm) -> Vec<weir_proto::PublishedRange> {
    confirm
        .ranges
        .iter()
        .map(|range| weir_proto::PublishedRange {
            partition: range.partition,
            base_offset: range.base_offset,
            last_offset: range.last_offset,
        })
        .collect()
}

/// Where the earlier copies of the confirm's duplicates are, as message ids.
fn duplicates(confirm: &Confirm) -> Vec<weir_proto::MessageId> {
    confirm
        .duplicates
        .iter()
        .map(|duplicate| weir_proto::MessageId {
            partition: duplicate.partition,
            offset: duplicate.offset,
        })
        .collect()
}

pub(crate) fn published(confirm: Confirm) -> Response {
    Response::Published {
        partitions: published_ranges(&confirm),
        durability: durability(confirm.durability),
    }
}

pub(crate) fn published_with_duplicates(confirm: Confirm) -> Response {
    Response::PublishedWithDuplicates {
        partitions: published_ranges(&confirm),
        duplicates: duplicates(&confirm),
        durability: durability(confirm.durability),
    }
}

fn topic_confirm((topic, confirm): (String, Confirm)) -> weir_proto::TopicConfirm {
    weir_proto::TopicConfirm {
        partitions: published_ranges(&confirm),
        duplicates: duplicates(&confirm),
        durability: durability(confirm.durability),
        topic,
    }
}

pub(crate) fn routed(confirm: RoutedConfirm) -> Response {
    Response::Routed {
        targets: confirm.targets.into_iter().map(topic_confirm).collect(),
        dropped: confirm.dropped,
    }
}

pub(crate) fn transaction_committed(targets: Vec<(String, Confirm)>) -> Response {
    Response::TransactionCommitted {
        targets: targets.into_iter().map(topic_confirm).collect(),
    }
}

pub(crate) fn message_ids(ids: &[weir_proto::MessageId]) -> Vec<weir_core::MessageId> {
    ids.iter()
        .map(|id| weir_core::MessageId {
            partition: id.partition,
            offset: id.offset,
        })
        .collect()
}

/// The answer to `AckReporting` and `NackReporting`: `settlements` holds one entry per id of
/// `ids`, in order.
pub(crate) fn settled(
    ids: &[weir_proto::MessageId],
    settlements: &[weir_core::Settlement],
) -> Response {
    let named = |wanted: weir_core::Settlement| {
        ids.iter()
            .zip(settlements)
            .filter(|(_, settlement)| **settlement == wanted)
            .map(|(id, _)| *id)
            .collect::<Vec<_>>()
    };
    let settled = settlements
        .iter()
        .filter(|settlement| **settlement == weir_core::Settlement::Settled)
        .count();
    Response::Settled {
        // At most as many as the ids of one frame.
        settled: u32::try_from(settled).unwrap_or(u32::MAX),
        already_settled: named(weir_core::Settlement::AlreadySettled),
        unknown: named(weir_core::Settlement::Unknown),
    }
}

pub(crate) fn queue_settings(settings: weir_proto::QueueSettings) -> QueueSettings {
    QueueSettings {
        max_deliveries: settings.max_deliveries,
        dead_letter_topic: settings.dead_letter_topic,
        message_ttl_ms: settings.message_ttl_ms,
        ordered_by_key: settings.ordered_by_key,
        retry_backoff_ms: settings.retry_backoff_ms,
        max_backlog: settings.max_backlog,
        overflow: match settings.overflow {
            weir_proto::Overflow::RejectPublish => Overflow::RejectPublish,
            weir_proto::Overflow::DeadLetterOldest => Overflow::DeadLetterOldest,
        },
    }
}

pub(crate) fn exchange_kind(kind: weir_proto::ExchangeKind) -> ExchangeKind {
    match kind {
        weir_proto::ExchangeKind::Direct => ExchangeKind::Direct,
        weir_proto::ExchangeKind::Topic => ExchangeKind::Topic,
        weir_proto::ExchangeKind::Fanout => ExchangeKind::Fanout,
        weir_proto::ExchangeKind::Headers => ExchangeKind::Headers,
    }
}

fn wire_exchange_kind(kind: ExchangeKind) -> weir_proto::ExchangeKind {
    match kind {
        ExchangeKind::Direct => weir_proto::ExchangeKind::Direct,
        ExchangeKind::Topic => weir_proto::ExchangeKind::Topic,
        ExchangeKind::Fanout => weir_proto::ExchangeKind::Fanout,
        ExchangeKind::Headers => weir_proto::ExchangeKind::Headers,
    }
}

pub(crate) fn binding(binding: weir_proto::Binding) -> weir_core::Binding {
    weir_core::Binding {
        topic: binding.topic,
        key: binding.key,
        headers: binding.headers,
        match_all: binding.match_all,
    }
}

pub(crate) fn exchange_info(exchange: Exchange) -> weir_proto::ExchangeInfo {
    weir_proto::ExchangeInfo {
        name: exchange.name,
        kind: wire_exchange_kind(exchange.kind),
        alternate_topic: exchange.alternate_topic,
        bindings: exchange
            .bindings
            .into_iter()
            .map(|binding| weir_proto::Binding {
                topic: binding.topic,
                key: binding.key,
                headers: binding.headers,
                match_all: binding.match_all,
            })
            .collect(),
    }
}

pub(crate) fn dead_letter_queue_info(info: DeadLetterQueueInfo) -> weir_proto::DeadLetterQueueInfo {
    weir_proto::DeadLetterQueueInfo {
        topic: info.topic,
        pending: info.pending,
    }
}

pub(crate) fn delivery(delivery: weir_core::Delivery) -> weir_proto::Delivery {
    weir_proto::Delivery::from_record(delivery.partition, delivery.delivery_count, delivery.record)
}

pub(crate) fn message(record: Record) -> weir_proto::Message {
    weir_proto::Message {
        timestamp_ms: record.timestamp_ms,
        key: record.key,
        headers: record.headers,
        value: record.value,
    }
}

pub(crate) fn scheduled_info(message: ScheduledMessage) -> weir_proto::ScheduledInfo {
    weir_proto::ScheduledInfo {
        id: message.id,
        topic: message.topic,
        partition: message.partition,
        deliver_at_ms: message.deliver_at_ms,
        business_key: message.business_key,
        message_count: message.message_count,
    }
}

/// The instant a [`ScheduleTime`] names, on the broker's clock (`now_ms`). A delay too large
/// for the clock saturates, so the broker refuses it as too far ahead rather than wrapping.
pub(crate) fn deliver_at_ms(when: ScheduleTime, now_ms: i64) -> i64 {
    match when {
        ScheduleTime::AtMs(at_ms) => at_ms,
        ScheduleTime::DelayMs(delay_ms) => {
            now_ms.saturating_add(i64::try_from(delay_ms).unwrap_or(i64::MAX))
        }
    }
}

pub(crate) fn decision(decision: weir_proto::Decision) -> Decision {
    match decision {
        weir_proto::Decision::Commit => Decision::Commit,
        weir_proto::Decision::Rollback => Decision::Rollback,
        weir_proto::Decision::Unknown => Decision::Unknown,
    }
}

pub(crate) fn transaction_info(info: TransactionInfo) -> weir_proto::TransactionInfo {
    weir_proto::TransactionInfo {
        id: info.id,
        producer_group: info.producer_group,
        state: match info.state {
            TransactionState::Open => weir_proto::TransactionState::Open,
            TransactionState::Committing => weir_proto::TransactionState::Committing,
        },
        created_ms: info.created_ms,
        checks: info.checks,
        parts: info.parts,
    }
}

pub(crate) fn claim_outcome(claim: Claim) -> weir_proto::ClaimOutcome {
    match claim {
        Claim::Acquired { expires_at_ms } => weir_proto::ClaimOutcome::Acquired { expires_at_ms },
        Claim::Busy {
            holder,
            expires_at_ms,
        } => weir_proto::ClaimOutcome::Busy {
            holder,
            expires_at_ms,
        },
        Claim::Completed { completed_at_ms } => {
            weir_proto::ClaimOutcome::Completed { completed_at_ms }
        }
    }
}

fn latency(summary: weir_core::LatencySummary) -> weir_proto::LatencySummary {
    weir_proto::LatencySummary {
        count: summary.count,
        p50_us: summary.p50_us,
        p99_us: summary.p99_us,
        max_us: summary.max_us,
    }
}

/// A rate in 0..=1 as parts per million: the wire carries an integer so that every value
/// has one encoding (a float has several NaNs and two zeros).
fn parts_per_million(rate: f64) -> u32 {
    // Clamped first, so the cast cannot truncate or wrap.
    (rate.clamp(0.0, 1.0) * 1_000_000.0).round() as u32
}

pub(crate) fn stats(stats: BrokerStats) -> weir_proto::BrokerStats {
    weir_proto::BrokerStats {
        now_ms: stats.now_ms,
        disk_bytes: stats.disk_bytes,
        scheduled: stats.scheduled,
        transactions: stats.transactions,
        unroutable_dropped: stats.unroutable_dropped,
        fsync: latency(stats.fsync),
        topics: stats
            .topics
            .into_iter()
            .map(|topic| weir_proto::TopicStats {
                name: topic.name,
                partitions: topic
                    .partitions
                    .iter()
                    .map(|partition| weir_proto::PartitionStats {
                        partition: partition.partition,
                        start_offset: partition.start_offset,
                        end_offset: partition.end_offset,
                        size_bytes: partition.size_bytes,
                        published_messages: partition.published_messages,
                        published_bytes: partition.published_bytes,
                    })
                    .collect(),
            })
            .collect(),
        subscriptions: stats
            .subscriptions
            .into_iter()
            .map(|subscription| weir_proto::SubscriptionStats {
                mode: subscription_mode(subscription.kind),
                backlog: subscription.backlog,
                in_flight: subscription.in_flight,
                consumers: subscription
                    .consumers
                    .iter()
                    .map(|consumer| weir_proto::ConsumerStats {
                        id: consumer.id,
                        delivered: consumer.delivered,
                        in_flight: consumer.in_flight,
                    })
                    .collect(),
                counters: weir_proto::SubscriptionCounters {
                    delivered: subscription.counters.delivered,
                    redelivered: subscription.counters.redelivered,
                    acked: subscription.counters.acked,
                    nacked: subscription.counters.nacked,
                    rejected: subscription.counters.rejected,
                    timed_out: subscription.counters.timed_out,
                    released: subscription.counters.released,
                    dead_lettered: subscription.counters.dead_lettered,
                    expired: subscription.counters.expired,
                },
                success_rate_ppm: subscription.success_rate.map(parts_per_million),
                latency: latency(subscription.latency),
                topic: subscription.topic,
                group: subscription.group,
            })
            .collect(),
    }
}

/// The pending and firing alerts, in the broker's order (by rule, then scope).
/// The active alerts a peer speaking protocol `version` can decode.
pub(crate) fn alerts(alerts: Vec<Alert>, version: u16) -> Vec<weir_proto::AlertInfo> {
    alerts
        .into_iter()
        .filter_map(alert)
        .filter(|alert| alert.metric.since_version() <= version)
        .collect()
}

/// `None` for a resolved alert: the wire lists only active ones, and the broker's list holds
/// no resolved alert anyway.
fn alert(alert: Alert) -> Option<weir_proto::AlertInfo> {
    let state = match alert.state {
        AlertState::Pending => weir_proto::AlertState::Pending,
        AlertState::Firing => weir_proto::AlertState::Firing,
        AlertState::Resolved => return None,
    };
    Some(weir_proto::AlertInfo {
        rule: alert.rule,
        scope: alert.scope,
        metric: alert_metric(alert.metric),
        state,
        value: finite(alert.value),
        threshold: finite(alert.threshold),
        since_ms: alert.since_ms,
        message: alert.message,
    })
}

fn alert_metric(metric: AlertMetric) -> weir_proto::AlertMetric {
    match metric {
        AlertMetric::Backlog => weir_proto::AlertMetric::Backlog,
        AlertMetric::SuccessRate => weir_proto::AlertMetric::SuccessRate,
        AlertMetric::InFlight => weir_proto::AlertMetric::InFlight,
        AlertMetric::LatencyP99Ms => weir_proto::AlertMetric::LatencyP99Ms,
        AlertMetric::Consumers => weir_proto::AlertMetric::Consumers,
        AlertMetric::DeadLettered => weir_proto::AlertMetric::DeadLettered,
        AlertMetric::PoisonedPartition => weir_proto::AlertMetric::PoisonedPartition,
    }
}

/// The wire carries finite numbers only, and a client refuses the whole answer otherwise.
/// The broker already refuses non-finite thresholds (config file and API) and its metrics are
/// finite, so this only guards against one slipping through: an infinity travels as the
/// largest finite number of its sign, a NaN (which never makes a condition hold) as 0.
fn finite(value: f64) -> f64 {
    if value.is_nan() {
        0.0
    } else {
        value.clamp(f64::MIN, f64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delay_is_measured_on_the_broker_clock_and_saturates() {
        assert_eq!(deliver_at_ms(ScheduleTime::DelayMs(500), 1_000), 1_500);
        assert_eq!(deliver_at_ms(ScheduleTime::AtMs(7), 1_000), 7);
        assert_eq!(
            deliver_at_ms(ScheduleTime::DelayMs(u64::MAX), 1_000),
            i64::MAX
        );
    }

    #[test]
    fn alerts_travel_finite_and_only_while_active() {
        let firing = Alert {
            rule: "backlog-high".into(),
            scope: "orders/shipping".into(),
            metric: AlertMetric::Backlog,
            value: 12_000.0,
            threshold: f64::INFINITY,
            state: AlertState::Firing,
            since_ms: 7,
            message: "add consumers".into(),
        };
        let resolved = Alert {
            state: AlertState::Resolved,
            ..firing.clone()
        };
        let wire = alerts(vec![firing, resolved], weir_proto::PROTOCOL_VERSION);
        assert_eq!(wire.len(), 1, "a resolved alert is not listed");
        assert_eq!(wire[0].state, weir_proto::AlertState::Firing);
        assert_eq!(wire[0].metric, weir_proto::AlertMetric::Backlog);
        assert_eq!(wire[0].value, 12_000.0);
        assert_eq!(wire[0].threshold, f64::MAX);
        assert_eq!(finite(f64::NEG_INFINITY), f64::MIN);
        assert_eq!(finite(f64::NAN), 0.0);
    }

    /// A version-1 peer's decoder refuses the poisoned-partition metric's tag, so it is not
    /// sent one; a version-2 peer gets it.
    #[test]
    fn a_peer_is_sent_only_the_alert_metrics_its_version_knows() {
        let poisoned = Alert {
            rule: "partition-poisoned".into(),
            scope: "orders/partition-1".into(),
            metric: AlertMetric::PoisonedPartition,
            value: 1.0,
            threshold: 0.0,
            state: AlertState::Firing,
            since_ms: 7,
            message: "restart the broker".into(),
        };
        let backlog = Alert {
            metric: AlertMetric::Backlog,
            ..poisoned.clone()
        };
        let both = vec![poisoned, backlog];
        let old = alerts(both.clone(), 1);
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].metric, weir_proto::AlertMetric::Backlog);
        assert_eq!(alerts(both, 2).len(), 2);
    }

    #[test]
    fn success_rates_become_whole_parts_per_million() {
        assert_eq!(parts_per_million(0.9), 900_000);
        assert_eq!(parts_per_million(1.0), 1_000_000);
        assert_eq!(
            parts_per_million(f64::NAN),
            0,
            "a NaN casts to 0, not a panic"
        );
        assert_eq!(parts_per_million(2.0), 1_000_000);
    }
}
