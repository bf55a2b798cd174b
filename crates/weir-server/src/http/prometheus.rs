//! `GET /metrics`: the broker's numbers in the Prometheus text exposition format (0.0.4).
//!
//! Rendered by hand from one [`weir_core::Broker::stats`] snapshot, the pending and firing
//! alerts, and the listeners' own counters ([`crate::metrics::ServerMetrics`]): the numbers
//! exist already, so a metrics library would only add a second registry to keep in step. The
//! names and labels are a public interface, listed with their meaning in `docs/metrics.md`;
//! renaming one breaks somebody's dashboard, so add rather than rename.
//!
//! The format's rules that matter here: a family's `# HELP` and `# TYPE` come before its
//! samples and its samples are contiguous (so each family is one pass over the snapshot);
//! label values escape `\`, `"` and newline; `# HELP` text escapes `\` and newline.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use weir_core::{Alert, AlertState, BrokerStats, LatencySummary, SubscriptionKind};

use super::HttpState;
use crate::metrics::{ListenerSnapshot, ServerMetrics};

/// The content type Prometheus expects for the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(State(state): State<HttpState>) -> impl IntoResponse {
    let text = render(
        &state.broker.stats(),
        &state.broker.alerts(),
        &state.server_metrics,
    );
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], text)
}

/// The kind of a family, as `# TYPE` names it.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Summary,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Summary => "summary",
        }
    }
}

/// The text being built.
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Into<Value>) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (index, (label, label_value)) in labels.iter().enumerate() {
                if index > 0 {
                    self.text.push(',');
                }
                self.text.push_str(label);
                self.text.push_str("=\"");
                escape_label_value(&mut self.text, label_value);
                self.text.push('"');
            }
            self.text.push('}');
        }
        self.text.push(' ');
        match value.into() {
            Value::Integer(value) => {
                let _ = write!(self.text, "{value}");
            }
            Value::Float(value) => push_float(&mut self.text, value),
        }
        self.text.push('\n');
    }

    /// A summary of a latency in seconds: p50 and p99 as quantiles (NaN before anything was
    /// measured, as Prometheus's own clients do, rather than a misleading 0), and the count.
    /// The core keeps no sum (an HDR histogram does not need one), so `_sum` is left out,
    /// which the format allows; the maximum is a gauge of its own.
    fn latency_summary(&mut self, name: &str, labels: &[(&str, &str)], latency: LatencySummary) {
        for (quantile, microseconds) in [("0.5", latency.p50_us), ("0.99", latency.p99_us)] {
            let mut with_quantile = labels.to_vec();
            with_quantile.push(("quantile", quantile));
            let value = if latency.count == 0 {
                f64::NAN
            } else {
                seconds(microseconds)
            };
            self.sample(name, &with_quantile, value);
        }
        self.sample(&format!("{name}_count"), labels, latency.count);
    }
}

enum Value {
    Integer(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(value: u64) -> Value {
        Value::Integer(value)
    }
}

impl From<f64> for Value {
    fn from(value: f64) -> Value {
        Value::Float(value)
    }
}

fn seconds(microseconds: u64) -> f64 {
    microseconds as f64 / 1_000_000.0
}

fn escape_label_value(text: &mut String, value: &str) {
    for character in value.chars() {
        match character {
            '\\' => text.push_str("\\\\"),
            '"' => text.push_str("\\\""),
            '\n' => text.push_str("\\n"),
            other => text.push(other),
        }
    }
}

/// Floats as Go's `strconv.ParseFloat` reads them, with the format's spellings of the
/// special values.
fn push_float(text: &mut String, value: f64) {
    if value.is_nan() {
        text.push_str("NaN");
    } else if value.is_infinite() {
        text.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(text, "{value}");
    }
}

fn kind_name(kind: SubscriptionKind) -> &'static str {
    match kind {
        SubscriptionKind::Queue => "queue",
        SubscriptionKind::Stream => "stream",
    }
}

/// The whole exposition.
pub(crate) fn render(stats: &BrokerStats, alerts: &[Alert], server: &ServerMetrics) -> String {
    let mut out = Exposition {
        text: String::with_capacity(4096),
    };
    out.family(
        "weir_build_info",
        Kind::Gauge,
        "Always 1; the version of the running broker.",
    );
    out.sample(
        "weir_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    render_partitions(&mut out, stats);
    render_subscriptions(&mut out, stats);
    render_broker(&mut out, stats);
    render_alerts(&mut out, alerts);
    render_listeners(
        &mut out,
        &[
            ("native", server.native.snapshot()),
            ("http", server.http.snapshot()),
        ],
    );
    out.text
}

fn render_partitions(out: &mut Exposition, stats: &BrokerStats) {
    type Field = fn(&weir_core::PartitionStats) -> u64;
    let families: [(&str, Kind, &str, Field); 6] = [
        (
            "weir_partition_messages_published_total",
            Kind::Counter,
            "Messages appended to the partition since the broker started.",
            |partition| partition.published_messages,
        ),
        (
            "weir_partition_bytes_published_total",
            Kind::Counter,
            "Bytes of the record batches appended to the partition since the broker started.",
            |partition| partition.published_bytes,
        ),
        (
            "weir_partition_size_bytes",
            Kind::Gauge,
            "Bytes the partition's log takes on disk.",
            |partition| partition.size_bytes,
        ),
        (
            "weir_partition_start_offset",
            Kind::Gauge,
            "Offset of the oldest message retained in the partition.",
            |partition| partition.start_offset,
        ),
        (
            "weir_partition_end_offset",
            Kind::Gauge,
            "Offset the next message appended to the partition will get.",
            |partition| partition.end_offset,
        ),
        (
            "weir_partition_poisoned",
            Kind::Gauge,
            "1 when the partition's writer failed and it refuses writes until the broker restarts.",
            |partition| u64::from(partition.poisoned),
        ),
    ];
    for (name, kind, help, field) in families {
        out.family(name, kind, help);
        for topic in &stats.topics {
            for partition in &topic.partitions {
                let number = partition.partition.to_string();
                out.sample(
                    name,
                    &[("topic", &topic.name), ("partition", &number)],
                    field(partition),
                );
            }
        }
    }
}

fn render_subscriptions(out: &mut Exposition, stats: &BrokerStats) {
    out.family(
        "weir_subscription_info",
        Kind::Gauge,
        "Always 1; the subscription's kind (queue or stream).",
    );
    for subscription in &stats.subscriptions {
        out.sample(
            "weir_subscription_info",
            &[
                ("topic", &subscription.topic),
                ("subscription", &subscription.group),
                ("kind", kind_name(subscription.kind)),
            ],
            1,
        );
    }
    type Field = fn(&weir_core::SubscriptionStats) -> u64;
    let families: [(&str, Kind, &str, Field); 12] = [
        (
            "weir_subscription_backlog",
            Kind::Gauge,
            "Messages published and not yet acked (queue) or committed (stream).",
            |subscription| subscription.backlog,
        ),
        (
            "weir_subscription_in_flight",
            Kind::Gauge,
            "Messages delivered and not yet settled.",
            |subscription| subscription.in_flight,
        ),
        (
            "weir_subscription_consumers",
            Kind::Gauge,
            "Consumers attached to the subscription.",
            |subscription| subscription.consumers.len() as u64,
        ),
        (
            "weir_subscription_deliveries_total",
            Kind::Counter,
            "Deliveries to consumers, redeliveries included.",
            |subscription| subscription.counters.delivered,
        ),
        (
            "weir_subscription_redeliveries_total",
            Kind::Counter,
            "Deliveries of a message after its first.",
            |subscription| subscription.counters.redelivered,
        ),
        (
            "weir_subscription_acks_total",
            Kind::Counter,
            "Messages acked.",
            |subscription| subscription.counters.acked,
        ),
        (
            "weir_subscription_nacks_total",
            Kind::Counter,
            "Messages nacked with requeue (failures that will be retried).",
            |subscription| subscription.counters.nacked,
        ),
        (
            "weir_subscription_rejects_total",
            Kind::Counter,
            "Messages nacked without requeue (rejected).",
            |subscription| subscription.counters.rejected,
        ),
        (
            "weir_subscription_timeouts_total",
            Kind::Counter,
            "Deliveries whose ack timeout passed before a settle.",
            |subscription| subscription.counters.timed_out,
        ),
        (
            "weir_subscription_releases_total",
            Kind::Counter,
            "Deliveries given back by consumers that stopped (not failures).",
            |subscription| subscription.counters.released,
        ),
        (
            "weir_subscription_dead_letters_total",
            Kind::Counter,
            "Messages moved to the dead-letter topic.",
            |subscription| subscription.counters.dead_lettered,
        ),
        (
            "weir_subscription_expired_total",
            Kind::Counter,
            "Messages dead-lettered because their time to live passed.",
            |subscription| subscription.counters.expired,
        ),
    ];
    for (name, kind, help, field) in families {
        out.family(name, kind, help);
        for subscription in &stats.subscriptions {
            out.sample(
                name,
                &[
                    ("topic", &subscription.topic),
                    ("subscription", &subscription.group),
                ],
                field(subscription),
            );
        }
    }
    out.family(
        "weir_subscription_success_ratio",
        Kind::Gauge,
        "acks / (acks + nacks + rejects + timeouts + expiries) over the last minute, 0 to 1; absent while nothing was settled in the minute.",
    );
    for subscription in &stats.subscriptions {
        if let Some(ratio) = subscription.success_rate {
            out.sample(
                "weir_subscription_success_ratio",
                &[
                    ("topic", &subscription.topic),
                    ("subscription", &subscription.group),
                ],
                ratio,
            );
        }
    }
    out.family(
        "weir_subscription_latency_seconds",
        Kind::Summary,
        "Publish-to-ack latency of acked messages since the broker started (about 1% precision).",
    );
    for subscription in &stats.subscriptions {
        out.latency_summary(
            "weir_subscription_latency_seconds",
            &[
                ("topic", &subscription.topic),
                ("subscription", &subscription.group),
            ],
            subscription.latency,
        );
    }
    out.family(
        "weir_subscription_latency_seconds_max",
        Kind::Gauge,
        "Longest publish-to-ack latency measured since the broker started.",
    );
    for subscription in &stats.subscriptions {
        out.sample(
            "weir_subscription_latency_seconds_max",
            &[
                ("topic", &subscription.topic),
                ("subscription", &subscription.group),
            ],
            seconds(subscription.latency.max_us),
        );
    }
    for (name, kind, help) in [
        (
            "weir_consumer_in_flight",
            Kind::Gauge,
            "Messages delivered to the consumer and not yet settled.",
        ),
        (
            "weir_consumer_deliveries_total",
            Kind::Counter,
            "Deliveries to the consumer since it attached.",
        ),
    ] {
        out.family(name, kind, help);
        for subscription in &stats.subscriptions {
            for consumer in &subscription.consumers {
                let id = consumer.id.to_string();
                let labels = [
                    ("topic", subscription.topic.as_str()),
                    ("subscription", subscription.group.as_str()),
                    ("consumer", id.as_str()),
                ];
                let value = if name == "weir_consumer_in_flight" {
                    u64::from(consumer.in_flight)
                } else {
                    consumer.delivered
                };
                out.sample(name, &labels, value);
            }
        }
    }
}

fn render_broker(out: &mut Exposition, stats: &BrokerStats) {
    out.family(
        "weir_fsync_seconds",
        Kind::Summary,
        "Time of each group commit's fdatasync since the broker started.",
    );
    out.latency_summary("weir_fsync_seconds", &[], stats.fsync);
    out.family(
        "weir_fsync_seconds_max",
        Kind::Gauge,
        "Longest group-commit fdatasync since the broker started.",
    );
    out.sample("weir_fsync_seconds_max", &[], seconds(stats.fsync.max_us));
    let gauges: [(&str, Kind, &str, u64); 5] = [
        (
            "weir_disk_bytes",
            Kind::Gauge,
            "Bytes the topics' logs take on disk.",
            stats.disk_bytes,
        ),
        (
            "weir_scheduled_messages",
            Kind::Gauge,
            "Delayed messages waiting for their time.",
            stats.scheduled,
        ),
        (
            "weir_scheduled_quarantined",
            Kind::Gauge,
            "Scheduled messages set aside because their stored form does not decode.",
            stats.scheduled_quarantined,
        ),
        (
            "weir_transactions_open",
            Kind::Gauge,
            "Transactions begun and neither committed nor rolled back.",
            stats.transactions,
        ),
        (
            "weir_unroutable_dropped_total",
            Kind::Counter,
            "Messages exchanges dropped because no binding matched them.",
            stats.unroutable_dropped,
        ),
    ];
    for (name, kind, help, value) in gauges {
        out.family(name, kind, help);
        out.sample(name, &[], value);
    }
    out.family(
        "weir_topics",
        Kind::Gauge,
        "Topics, internal ones included.",
    );
    out.sample("weir_topics", &[], stats.topics.len() as u64);
    out.family(
        "weir_background_failures_total",
        Kind::Counter,
        "Failed attempts of the broker's background steps, by step; a failing step backs off.",
    );
    for (step, failures) in &stats.background_failures {
        out.sample(
            "weir_background_failures_total",
            &[("step", step)],
            *failures,
        );
    }
}

fn render_alerts(out: &mut Exposition, alerts: &[Alert]) {
    for (name, state, help) in [
        (
            "weir_alerts_firing",
            AlertState::Firing,
            "1 for each alert firing now, by rule and scope (topic/subscription).",
        ),
        (
            "weir_alerts_pending",
            AlertState::Pending,
            "1 for each alert whose condition holds but not yet for its rule's for_ms.",
        ),
    ] {
        out.family(name, Kind::Gauge, help);
        for alert in alerts.iter().filter(|alert| alert.state == state) {
            out.sample(name, &[("rule", &alert.rule), ("scope", &alert.scope)], 1);
        }
    }
}

/// One family per counter, one sample per listener in it: a family is declared once, its
/// samples contiguous.
fn render_listeners(out: &mut Exposition, listeners: &[(&str, ListenerSnapshot)]) {
    type Field = fn(&ListenerSnapshot) -> u64;
    let families: [(&str, Kind, &str, Field); 5] = [
        (
            "weir_connections_open",
            Kind::Gauge,
            "Client connections open now.",
            |snapshot| snapshot.connections_open,
        ),
        (
            "weir_connections_accepted_total",
            Kind::Counter,
            "Client connections accepted since the server started.",
            |snapshot| snapshot.connections_accepted,
        ),
        (
            "weir_connections_refused_total",
            Kind::Counter,
            "Client connections turned away over the connection limit.",
            |snapshot| snapshot.connections_refused,
        ),
        (
            "weir_received_bytes_total",
            Kind::Counter,
            "Bytes read from client connections.",
            |snapshot| snapshot.received_bytes,
        ),
        (
            "weir_sent_bytes_total",
            Kind::Counter,
            "Bytes written to client connections.",
            |snapshot| snapshot.sent_bytes,
        ),
    ];
    for (name, kind, help, field) in families {
        out.family(name, kind, help);
        for (listener, snapshot) in listeners {
            out.sample(name, &[("listener", listener)], field(snapshot));
        }
    }
}

#[cfg(test)]
mod tests {
    use weir_core::{PartitionStats, TopicStats};

    use super::*;

    fn stats_with_topic(name: &str) -> BrokerStats {
        BrokerStats {
            now_ms: 0,
            topics: vec![TopicStats {
                name: name.into(),
                partitions: vec![PartitionStats {
                    partition: 3,
                    start_offset: 0,
                    end_offset: 7,
                    size_bytes: 1024,
                    published_messages: 7,
                    published_bytes: 900,
                    poisoned: false,
                }],
            }],
            subscriptions: Vec::new(),
            fsync: LatencySummary {
                count: 2,
                p50_us: 1500,
                p99_us: 250_000,
                max_us: 1_000_000,
            },
            disk_bytes: 1024,
            scheduled: 0,
            scheduled_quarantined: 0,
            transactions: 0,
            unroutable_dropped: 0,
            background_failures: std::collections::BTreeMap::new(),
        }
    }

    /// Names are restricted today, so no real label needs escaping; the renderer must still
    /// never produce a line a scraper rejects if that changes.
    #[test]
    fn label_values_are_escaped() {
        let text = render(
            &stats_with_topic("a\"b\\c\nd"),
            &[],
            &ServerMetrics::default(),
        );
        assert!(
            text.contains(
                "weir_partition_end_offset{topic=\"a\\\"b\\\\c\\nd\",partition=\"3\"} 7\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn latencies_are_seconds_and_summaries_have_quantiles_and_a_count() {
        let text = render(&stats_with_topic("orders"), &[], &ServerMetrics::default());
        for line in [
            "# TYPE weir_fsync_seconds summary\n",
            "weir_fsync_seconds{quantile=\"0.5\"} 0.0015\n",
            "weir_fsync_seconds{quantile=\"0.99\"} 0.25\n",
            "weir_fsync_seconds_count 2\n",
            "weir_fsync_seconds_max 1\n",
            "weir_partition_messages_published_total{topic=\"orders\",partition=\"3\"} 7\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
    }

    #[test]
    fn special_floats_use_the_formats_spellings() {
        let mut text = String::new();
        push_float(&mut text, f64::NAN);
        text.push(' ');
        push_float(&mut text, f64::INFINITY);
        text.push(' ');
        push_float(&mut text, f64::NEG_INFINITY);
        text.push(' ');
        push_float(&mut text, 0.5);
        assert_eq!(text, "NaN +Inf -Inf 0.5");
    }
}
