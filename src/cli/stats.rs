//! `weir stats`: one snapshot of the broker's numbers — topics with their sizes and publish
//! rates, subscriptions with backlog, in-flight, delivery and ack rates, success rate and
//! publish-to-ack latency, plus disk, fsync latency, scheduled batches and open
//! transactions. Rates come from the counters of two snapshots `--interval` apart (the
//! broker keeps totals, not rates). `weir top` redraws the same view every second.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use weir_client::{BrokerStats, LatencySummary, SubscriptionStats, TopicStats};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::duration::parse_duration;
use crate::cli::output::{format_mode, format_size, write_json_pretty, write_table};
use crate::cli::position::format_rfc3339;

const EXAMPLES: &str = "\
Examples:
  weir stats
  weir stats --interval 5s          # rates over five seconds
  weir stats --interval 0s --json   # totals only, at once
  weir top                          # the same, redrawn every second";

/// Show the broker's numbers once: topics, subscriptions, rates, success, latency.
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
    let mut output = std::io::stdout().lock();
    if arguments.json {
        write_json_pretty(&mut output, &stats_json(&current, previous.as_ref()))
    } else {
        render(&mut output, &current, previous.as_ref())
    }
    .context("cannot write to stdout")
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

/// The tables `weir stats` and `weir top` print.
pub fn render(
    output: &mut impl Write,
    current: &BrokerStats,
    previous: Option<&BrokerStats>,
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

/// The snapshot as JSON, with rates where two snapshots were taken.
pub fn stats_json(current: &BrokerStats, previous: Option<&BrokerStats>) -> Value {
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
}
