//! Monitoring against an in-process broker: `GET /metrics` parses as the Prometheus text format
//! and its numbers follow publishing, consuming, acking, nacking and dead-lettering; the
//! listeners' connection and byte counters (native and HTTP, apart) count real sockets; alert rules are listed, set,
//! replaced and deleted over HTTP, with their error paths, and a firing alert shows in
//! `/metrics`. The real binary, the default rules and the webhook are covered by the root
//! `tests/alerts.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::BytesMut;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use weir_core::{Broker, BrokerConfig};
use weir_proto::{Frame, FrameError, Request as NativeRequest, Response as NativeResponse};
use weir_server::http::HttpApi;
use weir_server::{Server, ServerConfig};

const PATIENCE: Duration = Duration::from_secs(10);

/// One sample of an exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: its samples, and the declared type of each family.
#[derive(Debug, Default)]
struct Exposition {
    samples: Vec<Sample>,
    types: BTreeMap<String, String>,
}

impl Exposition {
    /// The value of the one series named `name` whose labels include `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|sample| {
                sample.name == name
                    && labels.iter().all(|(label, value)| {
                        sample.labels.get(*label).map(String::as_str) == Some(value)
                    })
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} matches {} series",
            matching.len()
        );
        matching.first().map(|sample| sample.value)
    }

    /// Like [`Exposition::value`], insisting that the series exists.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels)
            .unwrap_or_else(|| panic!("no series {name} {labels:?}"))
    }
}

fn valid_metric_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_' || first == ':')
        && characters.all(|next| next.is_ascii_alphanumeric() || next == '_' || next == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && characters.all(|next| next.is_ascii_alphanumeric() || next == '_')
}

fn parse_value(text: &str) -> Result<f64, String> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => text
            .parse::<f64>()
            .map_err(|error| format!("bad value '{text}': {error}")),
    }
}

/// Parses `{a="x",b="y"}` (the braces included) from the start of `text`; returns the labels
/// and the rest of the line.
fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    let mut rest = text
        .strip_prefix('{')
        .ok_or_else(|| "labels start with {".to_owned())?;
    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let (name, after_name) = rest
            .split_once("=\"")
            .ok_or_else(|| format!("a label without =\" in '{text}'"))?;
        if !valid_label_name(name) {
            return Err(format!("bad label name '{name}'"));
        }
        let mut value = String::new();
        let mut characters = after_name.char_indices();
        let end = loop {
            match characters.next() {
                Some((_, '\\')) => match characters.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?} in '{text}'")),
                },
                Some((index, '"')) => break index,
                Some((_, '\n')) => return Err("a raw newline in a label value".into()),
                Some((_, character)) => value.push(character),
                None => return Err(format!("an unterminated label value in '{text}'")),
            }
        };
        if labels.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice in '{text}'"));
        }
        rest = &after_name[end + 1..];
        if let Some(after_comma) = rest.strip_prefix(',') {
            rest = after_comma;
        } else if !rest.starts_with('}') {
            return Err(format!("labels must be separated by commas in '{text}'"));
        }
    }
}

/// Checks the text format's rules and parses it: `# HELP` then `# TYPE` before a family's
/// samples, a family's samples together and only once, valid names, escapes and values, no
/// series twice, and summary samples only as `name{quantile}`, `name_sum` and `name_count`.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut exposition = Exposition::default();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    if !text.ends_with('\n') {
        return Err("the exposition must end with a newline".into());
    }
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let keyword = parts.next().unwrap_or_default();
            let name = parts.next().unwrap_or_default().to_owned();
            let rest = parts.next().unwrap_or_default();
            if !valid_metric_name(&name) {
                return Err(format!("bad metric name in '{line}'"));
            }
            match keyword {
                "HELP" => {
                    if rest.is_empty() || !helped.insert(name.clone()) {
                        return Err(format!("a missing or repeated HELP: '{line}'"));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&rest) {
                        return Err(format!("bad type in '{line}'"));
                    }
                    if exposition.types.contains_key(&name) {
                        return Err(format!("TYPE of {name} twice"));
                    }
                    if let Some(previous) = current.replace(name.clone()) {
                        finished.insert(previous);
                    }
                    exposition.types.insert(name, rest.to_owned());
                }
                _ => return Err(format!("unknown comment '{line}'")),
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| format!("no value: '{line}'"))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(format!("bad metric name in '{line}'"));
        }
        let (labels, rest) = if line[name_end..].starts_with('{') {
            parse_labels(&line[name_end..])?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value_text = rest
            .strip_prefix(' ')
            .ok_or_else(|| format!("no space before the value: '{line}'"))?;
        // No timestamps are rendered; a second field would be one.
        let value = parse_value(value_text.trim_end())?;
        let family = current
            .clone()
            .ok_or_else(|| format!("a sample before any TYPE: '{line}'"))?;
        let kind = exposition.types[&family].clone();
        let belongs = match kind.as_str() {
            "summary" => {
                (name == family && labels.contains_key("quantile"))
                    || name == format!("{family}_sum")
                    || name == format!("{family}_count")
            }
            _ => name == family,
        };
        if !belongs || finished.contains(name) {
            return Err(format!("'{line}' is outside its family ({family})"));
        }
        if !helped.contains(&family) {
            return Err(format!("{family} has no HELP"));
        }
        if kind == "counter" && !name.ends_with("_total") {
            return Err(format!("the counter {name} should end in _total"));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(format!("the series '{line}' twice"));
        }
        exposition.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(exposition)
}

/// A broker on a temporary directory and the HTTP router over it.
struct Harness {
    broker: Broker,
    router: Router,
    directory: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let broker = Broker::open(BrokerConfig::new(directory.path()))
            .await
            .expect("the broker opens");
        let router = HttpApi::new(broker.clone()).router();
        Harness {
            broker,
            router,
            directory,
        }
    }

    async fn send_raw(&self, method: Method, path: &str, body: String) -> (StatusCode, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("a valid request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    async fn send(&self, method: Method, path: &str, body: Value) -> (StatusCode, Value) {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (status, answer) = self.send_raw(method, path, text).await;
        let value = if answer.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&answer)
                .unwrap_or_else(|error| panic!("{path}: not JSON ({error}): {answer}"))
        };
        (status, value)
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.send(method.clone(), path, body).await;
        assert!(status.is_success(), "{method} {path}: {status} {answer}");
        answer
    }

    async fn metrics(&self) -> Exposition {
        let request = Request::builder()
            .uri("/metrics")
            .body(Body::empty())
            .expect("a valid request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
        parse_exposition(&text).unwrap_or_else(|error| panic!("{error}\n{text}"))
    }

    async fn publish(&self, topic: &str, count: usize) {
        let messages: Vec<Value> = (0..count)
            .map(|index| json!({"payload": format!("message {index}")}))
            .collect();
        self.ok(
            Method::POST,
            &format!("/v1/topics/{topic}/messages"),
            json!({ "messages": messages }),
        )
        .await;
    }

    async fn fetch(&self, topic: &str, subscription: &str, max: usize) -> Vec<String> {
        let answer = self
            .ok(
                Method::POST,
                &format!("/v1/topics/{topic}/subscriptions/{subscription}/fetch"),
                json!({"max": max, "wait_ms": 2000}),
            )
            .await;
        answer["deliveries"]
            .as_array()
            .expect("deliveries")
            .iter()
            .map(|delivery| delivery["delivery_id"].as_str().expect("an id").to_owned())
            .collect()
    }
}

#[tokio::test]
async fn an_idle_broker_renders_every_broker_wide_family() {
    let harness = Harness::new().await;
    let metrics = harness.metrics().await;
    for (name, kind) in [
        ("weir_build_info", "gauge"),
        ("weir_partition_messages_published_total", "counter"),
        ("weir_partition_bytes_published_total", "counter"),
        ("weir_partition_size_bytes", "gauge"),
        ("weir_partition_start_offset", "gauge"),
        ("weir_partition_end_offset", "gauge"),
        ("weir_partition_poisoned", "gauge"),
        ("weir_subscription_info", "gauge"),
        ("weir_subscription_backlog", "gauge"),
        ("weir_subscription_in_flight", "gauge"),
        ("weir_subscription_consumers", "gauge"),
        ("weir_subscription_deliveries_total", "counter"),
        ("weir_subscription_redeliveries_total", "counter"),
        ("weir_subscription_acks_total", "counter"),
        ("weir_subscription_nacks_total", "counter"),
        ("weir_subscription_rejects_total", "counter"),
        ("weir_subscription_timeouts_total", "counter"),
        ("weir_subscription_releases_total", "counter"),
        ("weir_subscription_dead_letters_total", "counter"),
        ("weir_subscription_expired_total", "counter"),
        ("weir_subscription_success_ratio", "gauge"),
        ("weir_subscription_latency_seconds", "summary"),
        ("weir_subscription_latency_seconds_max", "gauge"),
        ("weir_consumer_in_flight", "gauge"),
        ("weir_consumer_deliveries_total", "counter"),
        ("weir_fsync_seconds", "summary"),
        ("weir_fsync_seconds_max", "gauge"),
        ("weir_disk_bytes", "gauge"),
        ("weir_scheduled_messages", "gauge"),
        ("weir_transactions_open", "gauge"),
        ("weir_unroutable_dropped_total", "counter"),
        ("weir_topics", "gauge"),
        ("weir_background_failures_total", "counter"),
        ("weir_alerts_firing", "gauge"),
        ("weir_alerts_pending", "gauge"),
        ("weir_connections_open", "gauge"),
        ("weir_connections_accepted_total", "counter"),
        ("weir_connections_refused_total", "counter"),
        ("weir_received_bytes_total", "counter"),
        ("weir_sent_bytes_total", "counter"),
    ] {
        assert_eq!(
            metrics.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    assert_eq!(
        metrics.types.len(),
        41,
        "every family is in docs/metrics.md: {:?}",
        metrics.types.keys()
    );
    assert_eq!(metrics.get("weir_build_info", &[]), 1.0);
    assert_eq!(metrics.get("weir_disk_bytes", &[]), 0.0);
    assert_eq!(metrics.get("weir_topics", &[]), 0.0);
    assert_eq!(metrics.get("weir_fsync_seconds_count", &[]), 0.0);
    assert!(
        metrics
            .get("weir_fsync_seconds", &[("quantile", "0.5")])
            .is_nan(),
        "no quantile before anything was measured"
    );
    assert_eq!(
        metrics.get("weir_connections_open", &[("listener", "native")]),
        0.0
    );
    assert!(metrics.value("weir_alerts_firing", &[]).is_none());
}

/// The numbers follow a subscription's life: published, delivered, acked, nacked and
/// redelivered, rejected into the dead-letter topic; and they agree with `/v1/stats`.
#[tokio::test]
async fn metrics_follow_publishing_consuming_nacking_and_dead_lettering() {
    let harness = Harness::new().await;
    harness
        .ok(
            Method::POST,
            "/v1/topics/orders/subscriptions",
            json!({"name": "billing"}),
        )
        .await;
    harness.publish("orders", 5).await;
    let orders = [("topic", "orders"), ("partition", "0")];
    let billing = [("topic", "orders"), ("subscription", "billing")];

    let published = harness.metrics().await;
    assert_eq!(
        published.get("weir_partition_messages_published_total", &orders),
        5.0
    );
    assert_eq!(published.get("weir_partition_end_offset", &orders), 5.0);
    assert_eq!(published.get("weir_partition_start_offset", &orders), 0.0);
    let size = published.get("weir_partition_size_bytes", &orders);
    assert!(size > 0.0);
    assert!(published.get("weir_partition_bytes_published_total", &orders) > 0.0);
    assert!(published.get("weir_disk_bytes", &[]) >= size);
    assert!(published.get("weir_fsync_seconds_count", &[]) >= 1.0);
    assert!(published.get("weir_fsync_seconds", &[("quantile", "0.99")]) > 0.0);
    assert_eq!(published.get("weir_subscription_backlog", &billing), 5.0);
    assert_eq!(published.get("weir_subscription_in_flight", &billing), 0.0);
    assert_eq!(
        published.get("weir_subscription_deliveries_total", &billing),
        0.0
    );
    assert_eq!(
        published.get(
            "weir_subscription_info",
            &[
                ("topic", "orders"),
                ("subscription", "billing"),
                ("kind", "queue")
            ]
        ),
        1.0
    );
    assert!(
        published
            .value("weir_subscription_success_ratio", &billing)
            .is_none(),
        "nothing settled yet"
    );

    let ids = harness.fetch("orders", "billing", 5).await;
    assert_eq!(ids.len(), 5);
    let settle = |action: &'static str, ids: &[String], extra: Value| {
        let mut body = json!({"delivery_ids": ids});
        if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
            body.extend(extra.clone());
        }
        let path = format!("/v1/topics/orders/subscriptions/billing/{action}");
        let harness = &harness;
        async move { harness.ok(Method::POST, &path, body).await }
    };
    settle("ack", &ids[0..2], json!({})).await;
    settle("nack", &ids[2..3], json!({"requeue": true})).await;
    settle(
        "nack",
        &ids[3..4],
        json!({"reject": true, "error": "bad order"}),
    )
    .await;

    // The rejected message reaches the dead-letter topic through the broker's own publish,
    // after the nack has been answered.
    let deadline = Instant::now() + PATIENCE;
    let settled = loop {
        let metrics = harness.metrics().await;
        if metrics.get("weir_subscription_dead_letters_total", &billing) == 1.0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "the rejected message is not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        settled.get("weir_subscription_deliveries_total", &billing),
        5.0
    );
    assert_eq!(settled.get("weir_subscription_acks_total", &billing), 2.0);
    assert_eq!(settled.get("weir_subscription_nacks_total", &billing), 1.0);
    assert_eq!(
        settled.get("weir_subscription_rejects_total", &billing),
        1.0
    );
    assert_eq!(
        settled.get("weir_subscription_dead_letters_total", &billing),
        1.0
    );
    assert_eq!(settled.get("weir_subscription_in_flight", &billing), 1.0);
    assert_eq!(settled.get("weir_subscription_consumers", &billing), 1.0);
    assert_eq!(
        settled.get("weir_subscription_success_ratio", &billing),
        0.5
    );
    assert_eq!(
        settled.get("weir_subscription_latency_seconds_count", &billing),
        2.0
    );
    assert!(settled.get("weir_subscription_latency_seconds_max", &billing) >= 0.0);
    let dead_letters = [("topic", "orders.billing.dlq"), ("partition", "0")];
    assert_eq!(
        settled.get("weir_partition_messages_published_total", &dead_letters),
        1.0
    );
    let consumer_in_flight: Vec<&Sample> = settled
        .samples
        .iter()
        .filter(|sample| {
            sample.name == "weir_consumer_in_flight"
                && sample.labels.get("subscription").map(String::as_str) == Some("billing")
        })
        .collect();
    assert_eq!(consumer_in_flight.len(), 1);
    assert_eq!(consumer_in_flight[0].value, 1.0);
    assert!(consumer_in_flight[0].labels.contains_key("consumer"));

    // The nacked message comes back: a redelivery.
    let again = harness.fetch("orders", "billing", 5).await;
    assert_eq!(again.len(), 1);
    let redelivered = harness.metrics().await;
    assert_eq!(
        redelivered.get("weir_subscription_redeliveries_total", &billing),
        1.0
    );
    assert_eq!(
        redelivered.get("weir_subscription_deliveries_total", &billing),
        6.0
    );
    assert_eq!(
        redelivered.get("weir_subscription_in_flight", &billing),
        2.0
    );

    // The same numbers as /v1/stats, which reads the same snapshot type.
    let (_, stats) = harness.send(Method::GET, "/v1/stats", Value::Null).await;
    let subscription = stats["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .find(|subscription| subscription["name"] == "billing")
        .expect("billing in the stats")
        .clone();
    for (metric, field) in [
        ("weir_subscription_backlog", "backlog"),
        ("weir_subscription_in_flight", "in_flight"),
        ("weir_subscription_deliveries_total", "delivered"),
        ("weir_subscription_redeliveries_total", "redelivered"),
        ("weir_subscription_acks_total", "acked"),
        ("weir_subscription_nacks_total", "nacked"),
        ("weir_subscription_rejects_total", "rejected"),
        ("weir_subscription_dead_letters_total", "dead_lettered"),
    ] {
        assert_eq!(
            Some(redelivered.get(metric, &billing)),
            subscription[field].as_f64(),
            "{metric} = stats' {field}"
        );
    }
}

#[tokio::test]
async fn alert_rules_are_listed_set_replaced_and_deleted_over_http() {
    let harness = Harness::new().await;
    let (status, rules) = harness
        .send(Method::GET, "/v1/alert-rules", Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rules[0]["name"], "backlog-high");
    assert_eq!(rules[0]["threshold"], 10000.0);
    assert_eq!(rules[1]["name"], "success-rate-low");
    assert_eq!(rules[1]["comparison"], "below");

    let rule = json!({"metric": "backlog", "scope": "orders/*", "comparison": "above",
                      "threshold": 0, "for_ms": 0, "message": "orders \"pile\" up"});
    let set = harness
        .ok(Method::PUT, "/v1/alert-rules/orders-backlog", rule.clone())
        .await;
    assert_eq!(set["name"], "orders-backlog");
    assert_eq!(set["scope"], "orders/*");
    // A rule read back can be put back as it is (its name matches the path).
    let replaced = harness
        .ok(
            Method::PUT,
            "/v1/alert-rules/orders-backlog",
            json!({"name": "orders-backlog", "metric": "backlog", "scope": "orders/*",
                   "comparison": "above", "threshold": 0.5, "message": "orders \"pile\" up"}),
        )
        .await;
    assert_eq!(replaced["threshold"], 0.5);
    assert_eq!(replaced["for_ms"], 0);
    let (_, rules) = harness
        .send(Method::GET, "/v1/alert-rules", Value::Null)
        .await;
    let names: Vec<&str> = rules
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|rule| rule["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "backlog-high",
            "success-rate-low",
            "partition-poisoned",
            "orders-backlog"
        ]
    );

    // Error paths: each a 4xx with the API's error shape, and nothing changed.
    let cases: [(Method, &str, String, StatusCode, &str); 9] = [
        (
            Method::PUT,
            "/v1/alert-rules/other",
            json!({"name": "orders-backlog", "metric": "backlog", "comparison": "above", "threshold": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/v1/alert-rules/bad%20name",
            json!({"metric": "backlog", "comparison": "above", "threshold": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/v1/alert-rules/x",
            json!({"metric": "mood", "comparison": "above", "threshold": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/v1/alert-rules/x",
            json!({"metric": "backlog", "comparison": "sideways", "threshold": 1}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/v1/alert-rules/x",
            json!({"metric": "backlog", "comparison": "above", "threshold": "high"}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/v1/alert-rules/x",
            json!({"metric": "backlog", "comparison": "above", "threshold": 1, "for_ms": 604_800_001u64}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/v1/alert-rules/x",
            json!({"metric": "backlog", "comparison": "above", "threshold": 1, "scope": ""}).to_string(),
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            Method::PUT,
            "/v1/alert-rules/x",
            "{\"metric\": \"backlog\",".to_owned(),
            StatusCode::BAD_REQUEST,
            "malformed_frame",
        ),
        (
            Method::DELETE,
            "/v1/alert-rules/never-set",
            String::new(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (method, path, body, status, name) in cases {
        let (answered, text) = harness.send_raw(method.clone(), path, body.clone()).await;
        assert_eq!(answered, status, "{method} {path} {body}: {text}");
        let error: Value = serde_json::from_str(&text).expect("a JSON error");
        assert_eq!(error["name"], name, "{method} {path} {body}: {text}");
    }
    let (_, unchanged) = harness
        .send(Method::GET, "/v1/alert-rules", Value::Null)
        .await;
    assert_eq!(unchanged, rules);

    // The rule fires on a real backlog, and the alert shows in /metrics.
    harness
        .ok(
            Method::POST,
            "/v1/topics/orders/subscriptions",
            json!({"name": "billing"}),
        )
        .await;
    harness.publish("orders", 1).await;
    let scope = [("rule", "orders-backlog"), ("scope", "orders/billing")];
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = harness.metrics().await;
        if metrics.value("weir_alerts_firing", &scope) == Some(1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "the alert did not fire in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, alerts) = harness.send(Method::GET, "/v1/alerts", Value::Null).await;
    assert_eq!(alerts["alerts"][0]["state"], "firing");
    assert_eq!(alerts["alerts"][0]["message"], "orders \"pile\" up");

    // Deleting the rule resolves its alert at the next evaluation.
    let (status, _) = harness
        .send(
            Method::DELETE,
            "/v1/alert-rules/orders-backlog",
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let metrics = harness.metrics().await;
        if metrics.value("weir_alerts_firing", &scope).is_none() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alert did not resolve in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Rules are saved: a broker reopened on the same data has the edited set.
    let rules_before = harness.broker.alert_rules();
    let Harness {
        broker,
        router,
        directory,
    } = harness;
    // The router's consumers hold the broker too; its files close when the last one goes.
    drop(router);
    broker.shutdown().await;
    drop(broker);
    let reopened = Broker::open(BrokerConfig::new(directory.path()))
        .await
        .expect("the broker reopens");
    assert_eq!(reopened.alert_rules(), rules_before);
    reopened.shutdown().await;
}

const SCRAPE: &[u8] = b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

/// Sends `request` on a connection of its own and reads the answer until the server closes
/// it (every request here says `connection: close`): every byte the server sent.
async fn exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(request).await.expect("sends");
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("reads");
    String::from_utf8(answer).expect("UTF-8")
}

fn exposition_of(answer: &str) -> Exposition {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    parse_exposition(body).unwrap_or_else(|error| panic!("{error}\n{body}"))
}

/// A raw `GET /metrics` over TCP, for a server bound to real sockets.
async fn scrape(address: std::net::SocketAddr) -> Exposition {
    exposition_of(&exchange(address, SCRAPE).await)
}

/// A server on real sockets, native and HTTP, with a handle to stop it.
async fn start_server(
    directory: &tempfile::TempDir,
) -> (
    std::net::SocketAddr,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let broker = Broker::open(BrokerConfig::new(directory.path()))
        .await
        .expect("the broker opens");
    let config = ServerConfig {
        native_addr: "127.0.0.1:0".parse().expect("an address"),
        http_addr: Some("127.0.0.1:0".parse().expect("an address")),
        ..ServerConfig::default()
    };
    let server = Server::bind(broker, config).await.expect("binds");
    let native = server.native_addr();
    let http = server.http_addr().expect("an http address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (native, http, stop, running)
}

/// The HTTP listener counts its own connections and exactly the bytes that crossed them, as
/// `listener="http"`, apart from the native listener's. Method: two requests on connections
/// of their own, then a scrape, which has read its own request but not yet written its
/// answer when it renders.
#[tokio::test]
async fn the_http_listener_counts_connections_and_bytes() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (_native, http, stop, running) = start_server(&directory).await;
    let http_listener = [("listener", "http")];
    let native_listener = [("listener", "native")];

    let first_answer = exchange(http, SCRAPE).await;
    let first = exposition_of(&first_answer);
    assert_eq!(
        first.get("weir_received_bytes_total", &http_listener),
        SCRAPE.len() as f64,
        "a scrape has read its own request"
    );
    assert_eq!(first.get("weir_sent_bytes_total", &http_listener), 0.0);
    assert_eq!(first.get("weir_connections_open", &http_listener), 1.0);
    let topics = b"GET /v1/topics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";
    let topics_answer = exchange(http, topics).await;
    assert!(topics_answer.starts_with("HTTP/1.1 200"), "{topics_answer}");

    let metrics = scrape(http).await;
    assert_eq!(
        metrics.get("weir_connections_accepted_total", &http_listener),
        3.0
    );
    assert_eq!(
        metrics.get("weir_received_bytes_total", &http_listener),
        (2 * SCRAPE.len() + topics.len()) as f64
    );
    assert_eq!(
        metrics.get("weir_sent_bytes_total", &http_listener),
        (first_answer.len() + topics_answer.len()) as f64,
        "every byte of the two answers, heads included"
    );
    assert!(metrics.get("weir_connections_open", &http_listener) >= 1.0);
    assert_eq!(
        metrics.get("weir_connections_refused_total", &http_listener),
        0.0
    );
    // HTTP traffic is not the native listener's.
    assert_eq!(
        metrics.get("weir_connections_accepted_total", &native_listener),
        0.0
    );
    assert_eq!(
        metrics.get("weir_received_bytes_total", &native_listener),
        0.0
    );

    // Closed connections stop counting as open; only the scrape itself is left.
    let deadline = Instant::now() + PATIENCE;
    while scrape(http)
        .await
        .get("weir_connections_open", &http_listener)
        != 1.0
    {
        assert!(
            Instant::now() < deadline,
            "closed connections are still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    running
        .await
        .expect("the server task")
        .expect("the server stops");
}

/// The native listener counts its connections and exactly the bytes that crossed them.
#[tokio::test]
async fn the_native_listener_counts_connections_and_bytes() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let (native, http, stop, running) = start_server(&directory).await;

    let mut connection = TcpStream::connect(native).await.expect("connects");
    let mut request = BytesMut::new();
    NativeRequest::Hello {
        min_version: 1,
        max_version: 1,
        client_name: "metrics test".into(),
    }
    .encode(1, &mut request);
    connection.write_all(&request).await.expect("sends");
    let mut received = BytesMut::new();
    let frame = loop {
        match Frame::parse(&mut received.clone(), usize::MAX) {
            Ok(frame) => break frame,
            Err(FrameError::Incomplete { .. }) => {
                let read = tokio::time::timeout(PATIENCE, connection.read_buf(&mut received))
                    .await
                    .expect("an answer in time")
                    .expect("reads");
                assert!(read > 0, "the server closed the connection");
            }
            Err(error) => panic!("a bad frame: {error}"),
        }
    };
    let response = NativeResponse::decode(frame.kind, frame.payload).expect("a response");
    assert!(
        matches!(response, NativeResponse::HelloOk { .. }),
        "{response:?}"
    );

    let native_listener = [("listener", "native")];
    let open = scrape(http).await;
    assert_eq!(open.get("weir_connections_open", &native_listener), 1.0);
    assert_eq!(
        open.get("weir_connections_accepted_total", &native_listener),
        1.0
    );
    assert_eq!(
        open.get("weir_connections_refused_total", &native_listener),
        0.0
    );
    assert_eq!(
        open.get("weir_received_bytes_total", &native_listener),
        request.len() as f64
    );
    assert_eq!(
        open.get("weir_sent_bytes_total", &native_listener),
        received.len() as f64
    );

    drop(connection);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let closed = scrape(http).await;
        if closed.get("weir_connections_open", &native_listener) == 0.0 {
            assert_eq!(
                closed.get("weir_connections_accepted_total", &native_listener),
                1.0
            );
            break;
        }
        assert!(Instant::now() < deadline, "the connection is still counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    running
        .await
        .expect("the server task")
        .expect("the server stops");
}
