//! `weir stats`: one snapshot of the broker's numbers — the alerts firing now, topics with
//! their sizes and publish rates, subscriptions with backlog, in-flight, delivery and ack
//! rates, success rate and publish-to-ack latency, plus disk, fsync latency, scheduled
//! batches and open transactions. Rates come from the counters of two snapshots `--interval` apart (the
//! broker keeps totals, not rates). `weir top` redraws the same view every second.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use weir_client::{
    AlertInfo, AlertMetric, AlertState, BrokerStats, Client, ErrorCode, LatencySummary,
    SubscriptionStats, TopicStats,
};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::duration::parse_duration;
use crate::cli::output::{
    format_duration_ms, format_mode, format_size, write_json_pretty, write_table,
};
use crate::cli::position::format_rfc3339;

const EXAMPLES: &str = "\
Examples:
  weir stats
  weir stats --interval 5s          # rates over five seconds
  weir stats --interval 0s --json   # totals only, at once
  weir top                          # the same, redrawn every second";

/// Show the broker's numbers once: firing alerts, topics, subscriptions, rates, success,
/// latency.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct StatsArguments {
    /// Time between the two snapshots rates are computed from (0s: totals only)
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    interval: Duration,

    /// Print JSON instead of tables
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    server: ServerArgument,
}

pub async fn run(arguments: StatsArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    let mut previous = None;
    if !arguments.interval.is_zero() {
        previous = Some(
            client
                .stats()
                .await
                .context("cannot read the broker's stats")?,
        );
        tokio::time::sleep(arguments.interval).await;
    }
    let current = client
        .stats()
        .await
        .context("cannot read the broker's stats")?;
    let alerts = BrokerAlerts::fetch(&client).await;
    if let BrokerAlerts::Unavailable(error) = alerts {
        return Err(error).context("cannot read the broker's alerts");
    }
    let mut output = std::io::stdout().lock();
    if arguments.json {
        write_json_pretty(
            &mut output,
            &stats_json(&current, previous.as_ref(), &alerts),
        )
    } else {
        render(&mut output, &current, previous.as_ref(), &alerts)
    }
    .context("cannot write to stdout")
}

/// What `weir stats` and `weir top` know of the broker's alerts.
pub enum BrokerAlerts {
    /// Pending and firing now, by rule then scope.
    Active(Vec<AlertInfo>),
    /// The broker predates the native `Alerts` request; its numbers are still worth showing.
    NotServed,
    /// Asking failed (the connection broke, say).
    Unavailable(weir_client::Error),
}

impl BrokerAlerts {
    pub async fn fetch(client: &Client) -> BrokerAlerts {
        match client.alerts().await {
            Ok(alerts) => BrokerAlerts::Active(alerts),
            Err(error) if error.code() == Some(ErrorCode::UnsupportedRequest) => {
                BrokerAlerts::NotServed
            }
            Err(error) => BrokerAlerts::Unavailable(error),
        }
    }
}

/// Per-second change of a counter between two snapshots `elapsed_ms` apart.
fn rate(now: u64, before: Option<u64>, elapsed_ms: Option<i64>) -> Option<f64> {
    let elapsed_ms = elapsed_ms.filter(|elapsed| *elapsed > 0)?;
    let delta = now.saturating_sub(before?);
    Some(delta as f64 * 1000.0 / elapsed_ms as f64)
}

fn elapsed_ms(current: &BrokerStats, previous: Option<&BrokerStats>) -> Option<i64> {
    previous.map(|previous| current.now_ms - previous.now_ms)
}

fn published(topic: &TopicStats) -> (u64, u64) {
    topic
        .partitions
        .iter()
        .fold((0, 0), |(messages, bytes), partition| {
            (
                messages + partition.published_messages,
                bytes + partition.published_bytes,
            )
        })
}

fn retained(topic: &TopicStats) -> (u64, u64) {
    topic
        .partitions
        .iter()
        .fold((0, 0), |(messages, bytes), partition| {
            (
                messages + partition.end_offset.saturating_sub(partition.start_offset),
                bytes + partition.size_bytes,
            )
        })
}

type SubscriptionKey<'a> = (&'a str, &'a str);

fn subscriptions_by_key(stats: &BrokerStats) -> HashMap<SubscriptionKey<'_>, &SubscriptionStats> {
    stats
        .subscriptions
        .iter()
        .map(|subscription| {
            (
                (subscription.topic.as_str(), subscription.group.as_str()),
                subscription,
            )
        })
        .collect()
}

/// `850µs`, `1.2ms`, `3.4s`.
pub fn format_micros(micros: u64) -> String {
    if micros < 1000 {
        format!("{micros}µs")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", micros as f64 / 1000.0)
    } else {
        format!("{:.1}s", micros as f64 / 1_000_000.0)
    }
}

fn format_latency(latency: &LatencySummary) -> (String, String) {
    if latency.count == 0 {
        return ("-".into(), "-".into());
    }
    (format_micros(latency.p50_us), format_micros(latency.p99_us))
}

fn format_rate(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1}"))
}

fn format_success(parts_per_million: Option<u32>) -> String {
    parts_per_million.map_or_else(
        || "-".to_owned(),
        |ppm| format!("{:.2}%", f64::from(ppm) / 10_000.0),
    )
}

/// An alert's value or threshold in the metric's own unit: `97.50%`, `12.3ms`, `60`.
fn format_alert_number(metric: AlertMetric, number: f64) -> String {
    match metric {
        AlertMetric::SuccessRate => format!("{:.2}%", number * 100.0),
        AlertMetric::LatencyP99Ms => format!("{number:.1}ms"),
        // Counts are whole; a threshold of a rule may still be fractional (`50.5`).
        _ if number.fract() == 0.0 && number.abs() < 1e15 => format!("{number:.0}"),
        _ => number.to_string(),
    }
}

/// `> 50`, `< 95.00%`. The wire does not repeat the rule's comparison, but an active alert's
/// condition holds, so the side of the threshold its value is on is the comparison.
fn format_threshold(alert: &AlertInfo) -> String {
    let side = if alert.value > alert.threshold {
        ">"
    } else if alert.value < alert.threshold {
        "<"
    } else {
        "="
    };
    format!(
        "{side} {}",
        format_alert_number(alert.metric, alert.threshold)
    )
}

/// The firing alerts as a table (or one line saying there are none), then a blank line. First
/// on the screen, because an alert is what an operator watching `weir top` must not miss.
fn render_alerts(
    output: &mut impl Write,
    alerts: &BrokerAlerts,
    now_ms: i64,
) -> std::io::Result<()> {
    let alerts = match alerts {
        BrokerAlerts::Active(alerts) => alerts,
        BrokerAlerts::NotServed => {
            writeln!(
                output,
                "FIRING ALERTS: not served over the native protocol by this broker (see HTTP GET /v1/alerts)"
            )?;
            return writeln!(output);
        }
        BrokerAlerts::Unavailable(error) => {
            writeln!(output, "FIRING ALERTS: cannot read them: {error}")?;
            return writeln!(output);
        }
    };
    let firing: Vec<&AlertInfo> = alerts
        .iter()
        .filter(|alert| alert.state == AlertState::Firing)
        .collect();
    let pending = alerts.len() - firing.len();
    // Pending alerts hold but not yet for their rule's `for`: worth a count, not a row.
    let pending_note = if pending > 0 {
        format!(" ({pending} pending)")
    } else {
        String::new()
    };
    if firing.is_empty() {
        writeln!(output, "FIRING ALERTS: none{pending_note}")?;
        return writeln!(output);
    }
    writeln!(output, "FIRING ALERTS{pending_note}")?;
    let rows: Vec<Vec<String>> = firing
        .iter()
        .map(|alert| {
            let firing_for = u64::try_from(now_ms.saturating_sub(alert.since_ms)).unwrap_or(0);
            // Whole seconds: evaluation runs every second, so milliseconds would be noise.
            let firing_for = match firing_for - firing_for % 1000 {
                0 => "<1s".to_owned(),
                whole_seconds => format_duration_ms(whole_seconds),
            };
            vec![
                alert.rule.clone(),
                alert.scope.clone(),
                alert.metric.name().to_owned(),
                format_alert_number(alert.metric, alert.value),
                format_threshold(alert),
                format_rfc3339(alert.since_ms),
                firing_for,
                alert.message.clone(),
            ]
        })
        .collect();
    write_table(
        output,
        &[
            "RULE",
            "SCOPE",
            "METRIC",
            "VALUE",
            "THRESHOLD",
            "SINCE",
            "FOR",
            "MESSAGE",
        ],
        &rows,
    )?;
    writeln!(output)
}

/// The tables `weir stats` and `weir top` print.
pub fn render(
    output: &mut impl Write,
    current: &BrokerStats,
    previous: Option<&BrokerStats>,
    alerts: &BrokerAlerts,
) -> std::io::Result<()> {
    let elapsed = elapsed_ms(current, previous);
    writeln!(
        output,
        "broker {}  disk {}  scheduled {}  transactions {}  unroutable dropped {}  fsync p50 {} p99 {}",
        format_rfc3339(current.now_ms),
        format_size(current.disk_bytes),
        current.scheduled,
        current.transactions,
        current.unroutable_dropped,
        format_latency(&current.fsync).0,
        format_latency(&current.fsync).1,
    )?;
    writeln!(output)?;
    render_alerts(output, alerts, current.now_ms)?;
    let before_topics: HashMap<&str, &TopicStats> = previous
        .map(|previous| {
            previous
                .topics
                .iter()
                .map(|topic| (topic.name.as_str(), topic))
                .collect()
        })
        .unwrap_or_default();
    let topic_rows: Vec<Vec<String>> = current
        .topics
        .iter()
        .map(|topic| {
            let (messages, bytes) = retained(topic);
            let (published_messages, published_bytes) = published(topic);
            let before = before_topics
                .get(topic.name.as_str())
                .map(|before| published(before));
            vec![
                topic.name.clone(),
                topic.partitions.len().to_string(),
                messages.to_string(),
                format_size(bytes),
                published_messages.to_string(),
                format_rate(rate(
                    published_messages,
                    before.map(|before| before.0),
                    elapsed,
                )),
                rate(published_bytes, before.map(|before| before.1), elapsed).map_or_else(
                    || "-".to_owned(),
                    |rate| format!("{}/s", format_size(rate as u64)),
                ),
            ]
        })
        .collect();
    write_table(
        output,
        &[
            "TOPIC",
            "PARTITIONS",
            "MESSAGES",
            "SIZE",
            "PUBLISHED",
            "MSG/S",
            "BYTES/S",
        ],
        &topic_rows,
    )?;
    writeln!(output)?;
    let before_subscriptions = previous.map(subscriptions_by_key).unwrap_or_default();
    let subscription_rows: Vec<Vec<String>> = current
        .subscriptions
        .iter()
        .map(|subscription| {
            let before = before_subscriptions
                .get(&(subscription.topic.as_str(), subscription.group.as_str()))
                .map(|before| &before.counters);
            let counters = &subscription.counters;
            let (p50, p99) = format_latency(&subscription.latency);
            vec![
                subscription.topic.clone(),
                subscription.group.clone(),
                format_mode(subscription.mode).to_owned(),
                subscription.consumers.len().to_string(),
                subscription.backlog.to_string(),
                subscription.in_flight.to_string(),
                format_rate(rate(
                    counters.delivered,
                    before.map(|before| before.delivered),
                    elapsed,
                )),
                format_rate(rate(
                    counters.acked,
                    before.map(|before| before.acked),
                    elapsed,
                )),
                format_success(subscription.success_rate_ppm),
                p50,
                p99,
                counters.dead_lettered.to_string(),
            ]
        })
        .collect();
    write_table(
        output,
        &[
            "TOPIC",
            "GROUP",
            "MODE",
            "CONSUMERS",
            "BACKLOG",
            "IN_FLIGHT",
            "DELIVERED/S",
            "ACKED/S",
            "SUCCESS",
            "P50",
            "P99",
            "DEAD_LETTERED",
        ],
        &subscription_rows,
    )
}

fn latency_json(latency: &LatencySummary) -> Value {
    json!({
        "count": latency.count,
        "p50_us": latency.p50_us,
        "p99_us": latency.p99_us,
        "max_us": latency.max_us,
    })
}

/// The pending and firing alerts as JSON (`null` when the broker does not serve them), shaped
/// like the entries of HTTP `GET /v1/alerts` plus `since` as RFC 3339.
fn alerts_json(alerts: &BrokerAlerts) -> Value {
    let BrokerAlerts::Active(alerts) = alerts else {
        return Value::Null;
    };
    alerts
        .iter()
        .map(|alert| {
            json!({
                "rule": alert.rule,
                "scope": alert.scope,
                "metric": alert.metric.name(),
                "state": match alert.state {
                    AlertState::Pending => "pending",
                    AlertState::Firing => "firing",
                },
                "value": alert.value,
                "threshold": alert.threshold,
                "since": format_rfc3339(alert.since_ms),
                "since_ms": alert.since_ms,
                "message": alert.message,
            })
        })
        .collect()
}

/// The snapshot as JSON, with rates where two snapshots were taken.
pub fn stats_json(
    current: &BrokerStats,
    previous: Option<&BrokerStats>,
    alerts: &BrokerAlerts,
) -> Value {
    let elapsed = elapsed_ms(current, previous);
    let before_topics: HashMap<&str, &TopicStats> = previous
        .map(|previous| {
            previous
                .topics
                .iter()
                .map(|topic| (topic.name.as_str(), topic))
                .collect()
        })
        .unwrap_or_default();
    let topics: Vec<Value> = current
        .topics
        .iter()
        .map(|topic| {
            let (messages, bytes) = retained(topic);
            let (published_messages, published_bytes) = published(topic);
            let before = before_topics
                .get(topic.name.as_str())
                .map(|before| published(before));
            json!({
                "name": topic.name,
                "partitions": topic.partitions.len(),
                "messages": messages,
                "size_bytes": bytes,
                "published_messages": published_messages,
                "published_bytes": published_bytes,
                "publish_rate": rate(published_messages, before.map(|before| before.0), elapsed),
                "publish_bytes_rate": rate(published_bytes, before.map(|before| before.1), elapsed),
            })
        })
        .collect();
    let before_subscriptions = previous.map(subscriptions_by_key).unwrap_or_default();
    let subscriptions: Vec<Value> = current
        .subscriptions
        .iter()
        .map(|subscription| {
            let before = before_subscriptions
                .get(&(subscription.topic.as_str(), subscription.group.as_str()))
                .map(|before| &before.counters);
            let counters = &subscription.counters;
            json!({
                "topic": subscription.topic,
                "group": subscription.group,
                "mode": format_mode(subscription.mode),
                "consumers": subscription.consumers.len(),
                "backlog": subscription.backlog,
                "in_flight": subscription.in_flight,
                "counters": {
                    "delivered": counters.delivered,
                    "redelivered": counters.redelivered,
                    "acked": counters.acked,
                    "nacked": counters.nacked,
                    "rejected": counters.rejected,
                    "timed_out": counters.timed_out,
                    "released": counters.released,
                    "dead_lettered": counters.dead_lettered,
                    "expired": counters.expired,
                },
                "delivery_rate": rate(counters.delivered, before.map(|before| before.delivered), elapsed),
                "ack_rate": rate(counters.acked, before.map(|before| before.acked), elapsed),
                "success_rate": subscription.success_rate_ppm.map(|ppm| f64::from(ppm) / 1_000_000.0),
                "latency": latency_json(&subscription.latency),
            })
        })
        .collect();
    json!({
        "now": format_rfc3339(current.now_ms),
        "interval_ms": elapsed,
        "disk_bytes": current.disk_bytes,
        "scheduled": current.scheduled,
        "transactions": current.transactions,
        "unroutable_dropped": current.unroutable_dropped,
        "fsync": latency_json(&current.fsync),
        "alerts": alerts_json(alerts),
        "topics": topics,
        "subscriptions": subscriptions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_change_between_snapshots() {
        assert_eq!(rate(150, Some(50), Some(2000)), Some(50.0));
        assert_eq!(rate(150, None, Some(2000)), None);
        assert_eq!(rate(150, Some(50), Some(0)), None);
        // A counter that went down (a broker restart) counts from zero, not negative.
        assert_eq!(rate(10, Some(50), Some(1000)), Some(0.0));
        assert_eq!(format_micros(850), "850µs");
        assert_eq!(format_micros(1250), "1.2ms");
        assert_eq!(format_success(Some(987_600)), "98.76%");
    }

    fn alert(metric: AlertMetric, state: AlertState, value: f64, threshold: f64) -> AlertInfo {
        AlertInfo {
            rule: "rule".into(),
            scope: "orders/shipping".into(),
            metric,
            state,
            value,
            threshold,
            since_ms: 1_700_000_000_000,
            message: "look".into(),
        }
    }

    #[test]
    fn alert_numbers_are_in_the_metric_unit_with_the_side_of_the_threshold() {
        let backlog = alert(AlertMetric::Backlog, AlertState::Firing, 60.0, 50.0);
        assert_eq!(format_alert_number(backlog.metric, backlog.value), "60");
        assert_eq!(format_threshold(&backlog), "> 50");
        let success = alert(AlertMetric::SuccessRate, AlertState::Firing, 0.5, 0.95);
        assert_eq!(format_alert_number(success.metric, success.value), "50.00%");
        assert_eq!(format_threshold(&success), "< 95.00%");
        assert_eq!(
            format_alert_number(AlertMetric::LatencyP99Ms, 12.25),
            "12.2ms"
        );
        assert_eq!(format_alert_number(AlertMetric::InFlight, 50.5), "50.5");
    }

    #[test]
    fn only_firing_alerts_get_rows_and_pending_ones_a_count() {
        let alerts = BrokerAlerts::Active(vec![
            alert(AlertMetric::Backlog, AlertState::Firing, 60.0, 50.0),
            alert(AlertMetric::InFlight, AlertState::Pending, 9.0, 5.0),
        ]);
        let mut output = Vec::new();
        render_alerts(&mut output, &alerts, 1_700_000_012_000).unwrap();
        let text = String::from_utf8(output).unwrap();
        assert!(
            text.starts_with("FIRING ALERTS (1 pending)\nRULE"),
            "{text}"
        );
        assert!(text.contains("orders/shipping  backlog"), "{text}");
        assert!(text.contains("> 50") && text.contains("12s") && text.contains("look"));
        assert!(!text.contains("in_flight"), "{text}");
        let mut output = Vec::new();
        render_alerts(&mut output, &BrokerAlerts::Active(Vec::new()), 0).unwrap();
        assert_eq!(
            String::from_utf8(output).unwrap(),
            "FIRING ALERTS: none\n\n"
        );
    }
}
