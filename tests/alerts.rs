//! Black-box: the guide's two default alerts on the real binary, driven by real traffic, each
//! reaching a loopback webhook as firing and then resolving.
//!
//! The server gets its rules from a config file (the two defaults, with the backlog threshold
//! lowered from 10,000 to 50 to keep the burst small) and the webhook from `--alert-webhook`.
//! A burst of 60 messages with no consumer fires `backlog-high`; draining them resolves it. A
//! consumer that nacks everything fires `success-rate-low`; acking enough afterwards lifts the
//! minute's success rate back over 95% and resolves it. The broker evaluates its rules every
//! second, so every wait is a poll against a deadline.
//!
//! While an alert fires, the native protocol lists it too (`Alerts`, which `weir stats` and
//! `weir top` show); once it resolves, it is gone from there as from `GET /v1/alerts`.

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use util::{Options, PATIENCE, Weir};
use weir_proto::{AlertMetric, AlertState, Request, Response};

/// How long an alert may take to fire or resolve: evaluation runs every second, on a machine
/// that may be busy compiling.
const ALERT_PATIENCE: Duration = Duration::from_secs(30);

/// A webhook receiver on a free loopback port: every JSON body POSTed to it comes out of the
/// channel. Connections are kept alive (the server's client reuses them), one thread each.
fn webhook_receiver() -> (SocketAddr, mpsc::Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = listener.local_addr().expect("an address");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let sender = sender.clone();
            std::thread::spawn(move || serve_webhook_connection(stream, &sender));
        }
    });
    (address, receiver)
}

/// Reads requests off one connection until it closes, answering each with 204.
fn serve_webhook_connection(stream: TcpStream, sender: &mpsc::Sender<Value>) {
    let mut writer = stream.try_clone().expect("a second handle");
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        assert!(
            request_line.starts_with("POST /alerts "),
            "the webhook is POSTed to its path: {request_line}"
        );
        let mut content_length = 0;
        let mut content_type = String::new();
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => content_length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_owned(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        assert_eq!(content_type, "application/json");
        let alert: Value = serde_json::from_slice(&body).expect("the webhook body is JSON");
        if writer
            .write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .is_err()
        {
            return;
        }
        let _ = sender.send(alert);
    }
}

/// Every alert event the webhook received, in order, with a way to wait for one.
struct Webhook {
    receiver: mpsc::Receiver<Value>,
    seen: Vec<Value>,
}

impl Webhook {
    /// Waits for an event of `rule` on `scope` in `state`; returns its position among all the
    /// events received.
    fn wait_for(&mut self, rule: &str, scope: &str, state: &str, weir: &Weir) -> usize {
        let deadline = Instant::now() + ALERT_PATIENCE;
        loop {
            if let Some(position) = self.seen.iter().position(|alert| {
                alert["rule"] == rule && alert["scope"] == scope && alert["state"] == state
            }) {
                return position;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.receiver.recv_timeout(left) {
                Ok(alert) => self.seen.push(alert),
                Err(_) => panic!(
                    "no '{state}' {rule} on {scope} at the webhook within {ALERT_PATIENCE:?}; received {:?}\nserver log:\n{}",
                    self.seen,
                    weir.log()
                ),
            }
        }
    }
}

/// One HTTP/1.1 request with `connection: close`; the status and the JSON answer (null if
/// the body is empty).
fn http(address: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(address).expect("connects to the http listener");
    stream
        .set_read_timeout(Some(PATIENCE))
        .expect("a read timeout");
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("sends");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("reads the answer");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {answer:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|error| panic!("not JSON ({error}): {body}"))
    };
    (status, value)
}

/// Sends a request that must succeed; returns its answer.
fn ok(address: SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let (status, answer) = http(address, method, path, Some(body));
    assert!(
        (200..300).contains(&status),
        "{method} {path}: {status} {answer}"
    );
    answer
}

fn publish(address: SocketAddr, topic: &str, count: usize) {
    let messages: Vec<Value> = (0..count)
        .map(|index| json!({"payload": format!("{topic} {index}")}))
        .collect();
    ok(
        address,
        "POST",
        &format!("/v1/topics/{topic}/messages"),
        json!({ "messages": messages }),
    );
}

/// Fetches until `count` deliveries have come; returns their ids.
fn fetch(address: SocketAddr, topic: &str, subscription: &str, count: usize) -> Vec<Value> {
    let mut ids = Vec::new();
    let deadline = Instant::now() + PATIENCE;
    while ids.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} deliveries",
            ids.len()
        );
        let answer = ok(
            address,
            "POST",
            &format!("/v1/topics/{topic}/subscriptions/{subscription}/fetch"),
            json!({"max": count - ids.len(), "wait_ms": 1000}),
        );
        ids.extend(
            answer["deliveries"]
                .as_array()
                .expect("deliveries")
                .iter()
                .map(|delivery| delivery["delivery_id"].clone()),
        );
    }
    ids
}

fn settle(address: SocketAddr, topic: &str, subscription: &str, action: &str, body: Value) {
    ok(
        address,
        "POST",
        &format!("/v1/topics/{topic}/subscriptions/{subscription}/{action}"),
        body,
    );
}

/// Waits until `GET /v1/alerts` lists `rule` on `scope` as firing (or, with `firing` false,
/// no longer lists it).
fn wait_for_listed(address: SocketAddr, rule: &str, scope: &str, firing: bool) {
    let deadline = Instant::now() + ALERT_PATIENCE;
    loop {
        let (_, alerts) = http(address, "GET", "/v1/alerts", None);
        let listed = alerts["alerts"].as_array().is_some_and(|alerts| {
            alerts.iter().any(|alert| {
                alert["rule"] == rule && alert["scope"] == scope && alert["state"] == "firing"
            })
        });
        if listed == firing {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{rule} on {scope}: firing should be {firing}: {alerts}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `weir stats` against `weir`'s native listener: its human output and its JSON.
fn weir_stats(weir: &Weir) -> (String, Value) {
    let run = |extra: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["stats", "--interval", "0s", "--server"])
            .arg(weir.address.to_string())
            .args(extra)
            .env_remove("WEIR_SERVER")
            .output()
            .expect("weir stats runs");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "weir stats {extra:?} failed: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let json = run(&["--json"]);
    let json = serde_json::from_str(&json).unwrap_or_else(|error| panic!("{error}: {json}"));
    (run(&[]), json)
}

/// Checks that the native protocol — a raw `Alerts` request, and `weir stats` in both forms —
/// lists `rule` on `scope` as firing, or (with `firing` false) does not list it. Called once
/// `GET /v1/alerts` agrees: both read the same evaluation, so no second wait is needed.
fn assert_listed_natively(weir: &Weir, rule: &str, scope: &str, firing: bool) {
    let Response::Alerts(alerts) = weir.connect().call(&Request::Alerts) else {
        panic!("Alerts is answered with Alerts");
    };
    let listed = alerts
        .iter()
        .find(|alert| alert.rule == rule && alert.scope == scope);
    assert_eq!(listed.is_some(), firing, "{rule} on {scope}: {alerts:?}");
    if let Some(alert) = listed {
        assert_eq!(alert.state, AlertState::Firing, "{alert:?}");
    }

    let (table, json) = weir_stats(weir);
    let row = table
        .lines()
        .find(|line| line.starts_with(rule) && line.contains(scope));
    assert_eq!(row.is_some(), firing, "{rule} on {scope} in:\n{table}");
    if firing {
        assert!(table.contains("FIRING ALERTS\n"), "{table}");
    }
    let in_json = json["alerts"]
        .as_array()
        .unwrap_or_else(|| panic!("an alert list: {json}"))
        .iter()
        .find(|alert| alert["rule"] == rule && alert["scope"] == scope)
        .cloned();
    assert_eq!(in_json.is_some(), firing, "{rule} on {scope}: {json}");
    if let Some(alert) = in_json {
        assert_eq!(alert["state"], "firing", "{alert}");
    }
}

#[test]
fn both_default_alerts_fire_and_resolve_and_reach_the_webhook() {
    let (receiver_address, receiver) = webhook_receiver();
    let mut webhook = Webhook {
        receiver,
        seen: Vec::new(),
    };
    let directory = tempfile::tempdir().expect("a temporary directory");
    let config = directory.path().join("weir.toml");
    std::fs::write(
        &config,
        r#"
# The guide's two rules; the backlog threshold is lowered from 10000 to keep the burst small.
[[alert_rules]]
name = "backlog-high"
metric = "backlog"
comparison = "above"
threshold = 50
message = "backlog too high, add consumers"

[[alert_rules]]
name = "success-rate-low"
metric = "success_rate"
comparison = "below"
threshold = 0.95
message = "success rate too low, check the business logic"
"#,
    )
    .expect("the config file is written");
    let weir = Weir::start_with(Options {
        arguments: vec![
            "--config".into(),
            config.display().to_string(),
            "--alert-webhook".into(),
            format!("http://{receiver_address}/alerts"),
        ],
        ..Options::default()
    });
    let address = weir.http_address();
    let (_, rules) = http(address, "GET", "/v1/alert-rules", None);
    assert_eq!(rules[0]["threshold"], 50.0, "the file's rules: {rules}");

    // A burst with nobody consuming: the backlog passes 50.
    ok(address, "POST", "/v1/topics", json!({"name": "orders"}));
    ok(
        address,
        "POST",
        "/v1/topics/orders/subscriptions",
        json!({"name": "shipping"}),
    );
    publish(address, "orders", 60);
    let backlog_fired = webhook.wait_for("backlog-high", "orders/shipping", "firing", &weir);
    let fired = &webhook.seen[backlog_fired];
    assert_eq!(fired["metric"], "backlog");
    assert_eq!(fired["value"], 60.0);
    assert_eq!(fired["threshold"], 50.0);
    assert_eq!(fired["message"], "backlog too high, add consumers");
    wait_for_listed(address, "backlog-high", "orders/shipping", true);
    assert_listed_natively(&weir, "backlog-high", "orders/shipping", true);
    let Response::Alerts(alerts) = weir.connect().call(&Request::Alerts) else {
        panic!("Alerts is answered with Alerts");
    };
    let alert = &alerts[0];
    assert_eq!(alert.metric, AlertMetric::Backlog);
    assert_eq!((alert.value, alert.threshold), (60.0, 50.0));
    assert_eq!(alert.message, "backlog too high, add consumers");
    let (table, _) = weir_stats(&weir);
    let row = table
        .lines()
        .find(|line| line.starts_with("backlog-high"))
        .unwrap_or_else(|| panic!("no row:\n{table}"));
    assert!(
        row.contains("backlog") && row.contains("60") && row.contains("> 50"),
        "{row}"
    );
    assert!(row.ends_with("backlog too high, add consumers"), "{row}");

    // A consumer arrives and works the backlog off: the alert resolves.
    let ids = fetch(address, "orders", "shipping", 60);
    settle(
        address,
        "orders",
        "shipping",
        "ack",
        json!({"delivery_ids": ids}),
    );
    let backlog_resolved = webhook.wait_for("backlog-high", "orders/shipping", "resolved", &weir);
    assert!(backlog_resolved > backlog_fired);
    wait_for_listed(address, "backlog-high", "orders/shipping", false);
    assert_listed_natively(&weir, "backlog-high", "orders/shipping", false);

    // A consumer whose every message fails: the success rate drops to 0.
    ok(
        address,
        "POST",
        "/v1/topics/payments/subscriptions",
        json!({"name": "ledger"}),
    );
    publish(address, "payments", 4);
    let ids = fetch(address, "payments", "ledger", 4);
    settle(
        address,
        "payments",
        "ledger",
        "nack",
        json!({"delivery_ids": ids, "requeue": true, "error": "ledger unavailable"}),
    );
    let rate_fired = webhook.wait_for("success-rate-low", "payments/ledger", "firing", &weir);
    let fired = &webhook.seen[rate_fired];
    assert_eq!(fired["metric"], "success_rate");
    assert_eq!(fired["value"], 0.0);
    wait_for_listed(address, "success-rate-low", "payments/ledger", true);
    assert_listed_natively(&weir, "success-rate-low", "payments/ledger", true);

    // The consumer is fixed: the 4 failures are retried and acked, and 120 more succeed, so
    // the minute's rate is 124 / 128 ≈ 0.97, above 0.95 (never with more than 50 waiting).
    let retried = fetch(address, "payments", "ledger", 4);
    settle(
        address,
        "payments",
        "ledger",
        "ack",
        json!({"delivery_ids": retried}),
    );
    for _ in 0..3 {
        publish(address, "payments", 40);
        let ids = fetch(address, "payments", "ledger", 40);
        settle(
            address,
            "payments",
            "ledger",
            "ack",
            json!({"delivery_ids": ids}),
        );
    }
    let rate_resolved = webhook.wait_for("success-rate-low", "payments/ledger", "resolved", &weir);
    assert!(rate_resolved > rate_fired);
    wait_for_listed(address, "success-rate-low", "payments/ledger", false);
    assert_listed_natively(&weir, "success-rate-low", "payments/ledger", false);

    // Each alert reached the webhook exactly once as firing and once as resolved, in order.
    let events: Vec<(String, String, String)> = webhook
        .seen
        .iter()
        .map(|alert| {
            (
                alert["rule"].as_str().unwrap_or_default().to_owned(),
                alert["scope"].as_str().unwrap_or_default().to_owned(),
                alert["state"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("backlog-high", "orders/shipping", "firing"),
        ("backlog-high", "orders/shipping", "resolved"),
        ("success-rate-low", "payments/ledger", "firing"),
        ("success-rate-low", "payments/ledger", "resolved"),
    ];
    assert_eq!(
        events,
        expected
            .iter()
            .map(|(rule, scope, state)| (rule.to_string(), scope.to_string(), state.to_string()))
            .collect::<Vec<_>>()
    );
    // The firing and the resolving were logged too.
    let log = weir.log();
    assert!(log.contains("alert firing"), "{log}");
    assert!(log.contains("alert resolved"), "{log}");
}

/// A webhook that is down costs nothing but log lines: the broker keeps serving, and alerts
/// are still listed.
#[test]
fn an_unreachable_webhook_is_logged_and_does_not_stop_the_broker() {
    // A port that was free a moment ago: connections to it are refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address");
    let weir = Weir::start_with(Options {
        arguments: vec!["--alert-webhook".into(), format!("http://{closed}/alerts")],
        ..Options::default()
    });
    let address = weir.http_address();
    ok(
        address,
        "PUT",
        "/v1/alert-rules/any-backlog",
        json!({"metric": "backlog", "comparison": "above", "threshold": 0}),
    );
    ok(
        address,
        "POST",
        "/v1/topics/events/subscriptions",
        json!({"name": "audit"}),
    );
    publish(address, "events", 1);
    wait_for_listed(address, "any-backlog", "events/audit", true);
    let deadline = Instant::now() + ALERT_PATIENCE;
    while !weir
        .log()
        .contains("posting an alert to the webhook failed")
    {
        assert!(
            Instant::now() < deadline,
            "the failed post is not logged:\n{}",
            weir.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    publish(address, "events", 1);
    let (status, _) = http(address, "GET", "/v1/stats", None);
    assert_eq!(status, 200);
}

/// A webhook that is not an http:// URL is a usage error at start, not a surprise at the
/// first alert.
#[test]
fn a_bad_webhook_url_is_refused_at_start() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "serve",
            "--native-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--alert-webhook",
            "https://alerts.example/hook",
        ])
        .env("WEIR_DATA_DIR", directory.path())
        .output()
        .expect("weir runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http://"), "{stderr}");
}
