//! The HTTP front end against an in-process broker: every endpoint's success and error paths,
//! bad input (malformed JSON, wrong types, oversized bodies), consuming with ack, nack,
//! visibility timeouts and long polls, and the OpenAPI document. Requests go through the axum
//! router with `tower::ServiceExt::oneshot`, except the shutdown test, which serves a real
//! listener. The running binary is exercised by `scripts/schemathesis.sh` and the Python
//! examples.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use weir_core::{Broker, BrokerConfig, ManualClock};
use weir_server::http::HttpApi;

const PATIENCE: Duration = Duration::from_secs(10);

/// A broker on a temporary directory and the HTTP router over it.
struct Harness {
    broker: Broker,
    router: Router,
    clock: Option<Arc<ManualClock>>,
    _directory: tempfile::TempDir,
}

impl Harness {
    async fn new() -> Harness {
        Harness::with(|_| {}).await
    }

    async fn with(configure: impl FnOnce(&mut BrokerConfig)) -> Harness {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let mut config = BrokerConfig::new(directory.path());
        configure(&mut config);
        let broker = Broker::open(config).await.expect("the broker opens");
        let router = HttpApi::new(broker.clone()).router();
        Harness {
            broker,
            router,
            clock: None,
            _directory: directory,
        }
    }

    /// With a manual clock, for visibility timeouts without sleeping.
    async fn with_manual_clock() -> Harness {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let shared = clock.clone();
        let mut harness = Harness::with(move |config| config.clock = shared).await;
        harness.clock = Some(clock);
        harness
    }

    async fn send(&self, method: Method, path: &str, body: Body) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body)
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
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|error| {
                panic!(
                    "{path}: not JSON ({error}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        (status, value)
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, Body::empty()).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, Body::empty()).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, Body::from(body.to_string()))
            .await
    }

    /// Posts and insists on `expected`, returning the body.
    async fn post_ok(&self, path: &str, body: Value, expected: StatusCode) -> Value {
        let (status, answer) = self.post(path, body).await;
        assert_eq!(status, expected, "POST {path}: {answer}");
        answer
    }

    async fn publish(&self, topic: &str, messages: Value) -> Value {
        self.post_ok(
            &format!("/v1/topics/{topic}/messages"),
            json!({ "messages": messages }),
            StatusCode::OK,
        )
        .await
    }

    async fn fetch(&self, topic: &str, subscription: &str, body: Value) -> Vec<Value> {
        let answer = self
            .post_ok(
                &format!("/v1/topics/{topic}/subscriptions/{subscription}/fetch"),
                body,
                StatusCode::OK,
            )
            .await;
        answer["deliveries"]
            .as_array()
            .expect("deliveries is a list")
            .clone()
    }
}

/// Asserts an error answer: its status, and its `name` with the matching `code`.
fn assert_error(answer: &(StatusCode, Value), status: StatusCode, name: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["name"], name, "{}", answer.1);
    let code = weir_proto::ErrorCode::from_name(name).expect("a public code name");
    assert_eq!(answer.1["code"], code.code(), "{}", answer.1);
    assert!(
        answer.1["message"]
            .as_str()
            .is_some_and(|text| !text.is_empty()),
        "{}",
        answer.1
    );
}

fn ids(deliveries: &[Value]) -> Vec<Value> {
    deliveries
        .iter()
        .map(|delivery| delivery["delivery_id"].clone())
        .collect()
}

#[tokio::test]
async fn topics_are_created_listed_described_and_deleted() {
    let harness = Harness::new().await;
    let created = harness
        .post_ok(
            "/v1/topics",
            json!({"name": "orders", "partitions": 3, "fsync": {"interval_ms": 5}, "retention_ms": 60000}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["name"], "orders");
    assert_eq!(created["partitions"], 3);
    assert_eq!(created["fsync"], json!({"interval_ms": 5}));
    assert_eq!(created["retention_ms"], 60000);
    assert_eq!(created["offsets"].as_array().map(Vec::len), Some(3));
    harness
        .post_ok(
            "/v1/topics",
            json!({"name": "audit", "fsync": "os"}),
            StatusCode::CREATED,
        )
        .await;

    let (status, list) = harness.get("/v1/topics").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|topic| topic["name"].as_str())
        .collect();
    assert_eq!(names, ["audit", "orders"]);
    let (status, audit) = harness.get("/v1/topics/audit").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(audit["fsync"], "os");
    assert_eq!(audit["partitions"], 1);

    assert_error(
        &harness.post("/v1/topics", json!({"name": "orders"})).await,
        StatusCode::CONFLICT,
        "topic_exists",
    );
    assert_error(
        &harness
            .post("/v1/topics", json!({"name": "no/slashes"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post("/v1/topics", json!({"name": "zero", "partitions": 0}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post(
                "/v1/topics",
                json!({"name": "never", "fsync": {"interval_ms": 0}}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post("/v1/topics", json!({"name": "odd", "fsync": "sometimes"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    let (status, _) = harness.delete("/v1/topics/orders").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &harness.get("/v1/topics/orders").await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
    assert_error(
        &harness.delete("/v1/topics/orders").await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
}

/// Publishes text, binary, keyed, headed and identified messages and reads them back by
/// browsing: each confirm names the offsets the browse finds them at.
#[tokio::test]
async fn published_messages_are_confirmed_durable_and_browsable() {
    let harness = Harness::new().await;
    let confirm = harness
        .publish(
            "orders",
            json!([
                {"payload": "order 1 created", "key": "order-1", "headers": {"source": "shop"}, "id": "m-1"},
                {"payload_base64": "AP8A", "delay_ms": 0},
            ]),
        )
        .await;
    assert_eq!(confirm["durability"], "fsynced");
    assert_eq!(
        confirm["messages"],
        json!([
            {"partition": 0, "offset": 0, "duplicate": false},
            {"partition": 0, "offset": 1, "duplicate": false}
        ])
    );
    assert_eq!(
        confirm["ranges"],
        json!([{"partition": 0, "base_offset": 0, "last_offset": 1}])
    );

    let (status, page) = harness
        .get("/v1/topics/orders/messages?partition=0&offset=0&limit=100")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["next_offset"], 2);
    let first = &page["messages"][0];
    assert_eq!(first["payload"], "order 1 created");
    assert_eq!(first["key"], "order-1");
    assert_eq!(first["id"], "m-1");
    assert_eq!(first["headers"]["source"], "shop");
    assert_eq!(first["headers"]["weir.id"], "m-1");
    assert!(first["timestamp_ms"].as_i64().is_some_and(|time| time > 0));
    let second = &page["messages"][1];
    assert_eq!(second["payload_base64"], "AP8A");
    assert!(second.get("payload").is_none(), "{second}");

    let (_, from_one) = harness.get("/v1/topics/orders/messages?offset=1").await;
    assert_eq!(from_one["messages"].as_array().map(Vec::len), Some(1));
    let (_, limited) = harness.get("/v1/topics/orders/messages?limit=1").await;
    assert_eq!(limited["next_offset"], 1);
    let (_, by_time) = harness
        .get("/v1/topics/orders/messages?timestamp_ms=0")
        .await;
    assert_eq!(by_time["messages"].as_array().map(Vec::len), Some(2));
    let (_, future) = harness
        .get("/v1/topics/orders/messages?timestamp_ms=99999999999999")
        .await;
    assert_eq!(future["messages"], json!([]));
    assert_eq!(future["next_offset"], 2);
}

/// In a multi-partition topic, each message's reported position is where browsing finds it.
#[tokio::test]
async fn positions_of_a_batch_split_across_partitions_are_exact() {
    let harness = Harness::new().await;
    harness
        .post_ok(
            "/v1/topics",
            json!({"name": "spread", "partitions": 4, "fsync": "os"}),
            StatusCode::CREATED,
        )
        .await;
    let messages: Vec<Value> = (0..12)
        .map(|index| {
            if index % 3 == 0 {
                json!({"payload": format!("unkeyed {index}")})
            } else {
                json!({"payload": format!("keyed {index}"), "key": format!("key-{index}")})
            }
        })
        .collect();
    let confirm = harness.publish("spread", json!(messages)).await;
    assert_eq!(confirm["durability"], "os");
    let positions = confirm["messages"].as_array().expect("positions");
    assert_eq!(positions.len(), 12, "{confirm}");
    for (index, position) in positions.iter().enumerate() {
        let (_, page) = harness
            .get(&format!(
                "/v1/topics/spread/messages?partition={}&offset={}&limit=1",
                position["partition"], position["offset"]
            ))
            .await;
        assert_eq!(page["messages"][0]["payload"], messages[index]["payload"]);
    }

    let pinned = harness
        .post_ok(
            "/v1/topics/spread/messages",
            json!({"partition": 2, "messages": [{"payload": "here", "key": "anything"}]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(pinned["messages"][0]["partition"], 2);
}

#[tokio::test]
async fn invalid_messages_and_browse_parameters_are_refused_clearly() {
    let harness = Harness::new().await;
    let publish = |body: Value| harness.post("/v1/topics/orders/messages", body);
    let too_late =
        publish(json!({"messages": [{"payload": "x", "delay_ms": 400u64 * 86_400_000}]})).await;
    assert_error(&too_late, StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(
        too_late.1["message"]
            .as_str()
            .is_some_and(|text| text.contains("messages[0]")),
        "{}",
        too_late.1
    );
    for body in [
        json!({"messages": [{"payload": "a", "business_key": "k"}]}),
        json!({"messages": [{"payload": "a", "delay_ms": 5, "business_key": ""}]}),
        json!({"messages": []}),
        json!({"messages": [{}]}),
        json!({"messages": [{"payload": "a", "payload_base64": "YQ=="}]}),
        json!({"messages": [{"payload_base64": "not base64!"}]}),
        json!({"messages": [{"payload": "a", "id": ""}]}),
        json!({"messages": [{"payload": 5}]}),
        json!({"messages": [{"payload": "a", "headers": {"n": 1}}]}),
        json!({"messages": [{"payload": "a", "unknown": true}]}),
        json!({"messages": [{"payload": "a", "delay_ms": -1}]}),
        json!({"messages": "not a list"}),
        json!({}),
        json!([1, 2]),
    ] {
        assert_error(
            &publish(body.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    assert_error(
        &publish(json!({"partition": 9, "messages": [{"payload": "a"}]})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    harness.publish("orders", json!([{"payload": "a"}])).await;
    for query in [
        "partition=7",
        "partition=abc",
        "partition=-1",
        "limit=0",
        "limit=1001",
        "offset=1&timestamp_ms=1",
        "offset=99999999999999999999999",
        "surprise=1",
    ] {
        assert_error(
            &harness
                .get(&format!("/v1/topics/orders/messages?{query}"))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    assert_error(
        &harness.get("/v1/topics/nothing/messages").await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
    assert_error(
        &harness
            .get("/v1/topics/nothing/messages?timestamp_ms=5")
            .await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
}

/// Bodies that are not JSON, too big, sent without a content type, to unknown paths or with
/// the wrong method: each gets a clear 4xx with a JSON error, never a 5xx.
#[tokio::test]
async fn malformed_and_oversized_requests_get_json_4xx_errors() {
    let harness = Harness::new().await;
    for body in [
        "{",
        "not json",
        "{\"name\": }",
        "\u{0}",
        "[",
        "{\"name\":\"a\"} trailing",
    ] {
        let answer = harness
            .send(Method::POST, "/v1/topics", Body::from(body))
            .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "malformed_frame");
    }
    assert_error(
        &harness.post("/v1/topics", json!({"name": 5})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness.post("/v1/topics", json!({"partitions": 1})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post(
                "/v1/topics",
                json!({"name": "big", "partitions": 1u64 << 40}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    // Over the body limit: refused before the body is parsed.
    let huge = format!(
        "{{\"messages\":[{{\"payload\":\"{}\"}}]}}",
        "x".repeat(weir_server::http::MAX_BODY_BYTES + 1)
    );
    let answer = harness
        .send(Method::POST, "/v1/topics/big/messages", Body::from(huge))
        .await;
    assert_error(&answer, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    // Under the body limit but over the broker's batch limit: the broker refuses it.
    let large = json!({"messages": [{"payload": "y".repeat(9 << 20)}]});
    assert_error(
        &harness.post("/v1/topics/big/messages", large).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    // curl -d sends a form content type, which a web page can send too: refused (use
    // `curl --json`).
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/topics")
        .header("content-type", "application/x-www-form-urlencoded")
        .header("content-length", "16")
        .body(Body::from(r#"{"name": "curl"}"#))
        .expect("a request");
    let response = harness
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    assert_error(
        &harness.get("/v1/nowhere").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &harness.send(Method::PUT, "/v1/topics", Body::empty()).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "unsupported_request",
    );
}

/// The guide's consumer loop over HTTP: fetch creates a queue subscription, ack settles a
/// delivery for good, nack with requeue brings it back with a higher delivery count.
#[tokio::test]
async fn fetch_ack_and_nack_with_requeue_over_http() {
    let harness = Harness::new().await;
    harness
        .publish(
            "orders",
            json!([{"payload": "one", "id": "m-1"}, {"payload": "two"}, {"payload": "three"}]),
        )
        .await;
    let first = harness
        .fetch(
            "orders",
            "billing",
            json!({"max": 2, "visibility_ms": 60000}),
        )
        .await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["delivery_id"], "0-0");
    assert_eq!(first[0]["delivery_count"], 1);
    assert_eq!(first[0]["payload"], "one");
    assert_eq!(first[0]["id"], "m-1");
    assert_eq!(first[1]["delivery_id"], "0-1");

    let (status, subscription) = harness.get("/v1/topics/orders/subscriptions/billing").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(subscription["kind"], "queue");
    assert_eq!(subscription["visibility_ms"], 60000);
    assert_eq!(subscription["in_flight"], 2);
    assert_eq!(subscription["backlog"], 3);
    assert_eq!(subscription["consumers"], 1);

    // Issue 10 defect 8: an id never delivered ("0-2") or unknown to the log ("0-99") used to
    // be answered as settled.
    let acked = harness
        .post_ok(
            "/v1/topics/orders/subscriptions/billing/ack",
            json!({"delivery_ids": ["0-0", "0-2", "0-99"]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        acked,
        json!({"settled": 1, "already_settled": [], "unknown": ["0-2", "0-99"]})
    );
    let again = harness
        .post_ok(
            "/v1/topics/orders/subscriptions/billing/ack",
            json!({"delivery_ids": ["0-0"]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(
        again,
        json!({"settled": 0, "already_settled": ["0-0"], "unknown": []})
    );
    harness
        .post_ok(
            "/v1/topics/orders/subscriptions/billing/nack",
            json!({"delivery_ids": ["0-1"], "requeue": true}),
            StatusCode::OK,
        )
        .await;

    // A later fetch may set another visibility: the subscription's own stays in force.
    let answer = harness
        .post_ok(
            "/v1/topics/orders/subscriptions/billing/fetch",
            json!({"max": 10, "visibility_ms": 5}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(answer["visibility_ms"], 60000);
    let again = answer["deliveries"].as_array().expect("deliveries").clone();
    let mut by_id: Vec<(String, u64)> = again
        .iter()
        .map(|delivery| {
            (
                delivery["delivery_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                delivery["delivery_count"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    by_id.sort();
    assert_eq!(by_id, [("0-1".to_owned(), 2), ("0-2".to_owned(), 1)]);
    harness
        .post_ok(
            "/v1/topics/orders/subscriptions/billing/ack",
            json!({"delivery_ids": ids(&again)}),
            StatusCode::OK,
        )
        .await;
    assert!(
        harness
            .fetch("orders", "billing", json!({}))
            .await
            .is_empty()
    );
    let (_, subscription) = harness.get("/v1/topics/orders/subscriptions/billing").await;
    assert_eq!(subscription["backlog"], 0);
    assert_eq!(subscription["in_flight"], 0);
}

#[tokio::test]
async fn ack_and_nack_refuse_bad_ids_unknown_subscriptions_and_contradictions() {
    let harness = Harness::new().await;
    harness.publish("orders", json!([{"payload": "a"}])).await;
    let delivered = harness.fetch("orders", "billing", json!({})).await;
    assert_eq!(delivered.len(), 1);
    let ack = "/v1/topics/orders/subscriptions/billing/ack";
    let nack = "/v1/topics/orders/subscriptions/billing/nack";
    for body in [
        json!({"delivery_ids": []}),
        json!({"delivery_ids": ["zero"]}),
        json!({"delivery_ids": ["0-"]}),
        json!({"delivery_ids": [5]}),
        json!({}),
    ] {
        assert_error(
            &harness.post(ack, body.clone()).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
        assert_error(
            &harness.post(nack, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    assert_error(
        &harness.post(ack, json!({"delivery_ids": ["9-0"]})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    for body in [
        json!({"delivery_ids": ["0-0"], "requeue": true, "reject": true}),
        json!({"delivery_ids": ["0-0"], "delay_ms": 90_000_000_000u64}),
        json!({"delivery_ids": ["0-0"], "error": "e".repeat(5000)}),
    ] {
        assert_error(
            &harness.post(nack, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    assert_error(
        &harness
            .post(
                "/v1/topics/orders/subscriptions/nobody/ack",
                json!({"delivery_ids": ["0-0"]}),
            )
            .await,
        StatusCode::NOT_FOUND,
        "no_such_subscription",
    );
    assert_error(
        &harness
            .post(
                "/v1/topics/orders/subscriptions/nobody/nack",
                json!({"delivery_ids": ["0-0"]}),
            )
            .await,
        StatusCode::NOT_FOUND,
        "no_such_subscription",
    );
    // Acks of ids never delivered, or already acked, are no-ops, as in the core.
    harness
        .post_ok(ack, json!({"delivery_ids": ["0-0", "0-0"]}), StatusCode::OK)
        .await;
    harness
        .post_ok(ack, json!({"delivery_ids": ["0-0"]}), StatusCode::OK)
        .await;
}

/// A fetched delivery stays invisible until its visibility timeout, then comes back with a
/// higher delivery count. The clock is manual: no sleeping.
#[tokio::test]
async fn an_unacked_delivery_is_redelivered_after_its_visibility_timeout() {
    let harness = Harness::with_manual_clock().await;
    let clock = harness.clock.clone().expect("a manual clock");
    harness.publish("jobs", json!([{"payload": "work"}])).await;
    let first = harness
        .fetch("jobs", "workers", json!({"visibility_ms": 1000}))
        .await;
    assert_eq!(first.len(), 1);
    clock.advance(Duration::from_millis(999));
    harness.broker.tick().await;
    assert!(harness.fetch("jobs", "workers", json!({})).await.is_empty());
    clock.advance(Duration::from_millis(2));
    harness.broker.tick().await;
    let again = harness.fetch("jobs", "workers", json!({})).await;
    assert_eq!(again.len(), 1, "redelivered after the visibility timeout");
    assert_eq!(again[0]["delivery_id"], first[0]["delivery_id"]);
    assert_eq!(again[0]["delivery_count"], 2);
}

/// A fetch with `wait_ms` waits for a message published meanwhile and answers as soon as it
/// arrives; with nothing coming it answers empty when the wait is over.
#[tokio::test]
async fn fetch_long_polls_until_a_message_arrives_or_the_wait_ends() {
    let harness = Arc::new(Harness::new().await);
    harness
        .post_ok("/v1/topics", json!({"name": "events"}), StatusCode::CREATED)
        .await;
    let started = Instant::now();
    let waiting = {
        let harness = harness.clone();
        tokio::spawn(async move {
            harness
                .fetch("events", "watchers", json!({"wait_ms": 5000}))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    harness
        .publish("events", json!([{"payload": "hello"}]))
        .await;
    let deliveries = tokio::time::timeout(PATIENCE, waiting)
        .await
        .expect("the long poll answers")
        .expect("the task finishes");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["payload"], "hello");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered on arrival"
    );

    let started = Instant::now();
    let nothing = harness
        .fetch("events", "watchers", json!({"wait_ms": 200}))
        .await;
    assert!(nothing.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(190));
}

#[tokio::test]
async fn fetch_refuses_bad_parameters_and_the_internal_subscription() {
    let harness = Harness::new().await;
    let path = "/v1/topics/orders/subscriptions/billing/fetch";
    for body in [
        json!({"max": 0}),
        json!({"max": 1001}),
        json!({"max": -1}),
        json!({"visibility_ms": 0}),
        json!({"visibility_ms": 43_200_001u64}),
        json!({"wait_ms": "soon"}),
        json!({"surprise": 1}),
    ] {
        assert_error(
            &harness.post(path, body).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    assert_error(
        &harness
            .post(
                "/v1/topics/orders/subscriptions/bad%20name/fetch",
                json!({}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post("/v1/topics/orders/subscriptions/weir-dlq/fetch", json!({}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    // An empty body is `{}`: the defaults.
    let answer = harness.send(Method::POST, path, Body::empty()).await;
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(answer.1["visibility_ms"], 30000);
}

/// Subscription administration: create (queue and stream), list, describe, reset (replay),
/// delete; and a stream subscription consumed over HTTP, whose ack commits.
#[tokio::test]
async fn subscriptions_are_administered_and_streams_replay_after_a_reset() {
    let harness = Harness::new().await;
    harness
        .publish(
            "orders",
            json!([{"payload": "a"}, {"payload": "b"}, {"payload": "c"}]),
        )
        .await;
    let created = harness
        .post_ok(
            "/v1/topics/orders/subscriptions",
            json!({"name": "audit", "kind": "stream", "start": {"offset": 1}}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["kind"], "stream");
    assert_eq!(created["partitions"][0]["committed"], 1);
    assert_eq!(created["consumers"], 0);
    harness
        .post_ok(
            "/v1/topics/orders/subscriptions",
            json!({"name": "billing", "visibility_ms": 5000, "max_deliveries": 3,
                   "ordered_by_key": true, "max_backlog": 100, "overflow": "dead_letter_oldest",
                   "start": "latest"}),
            StatusCode::CREATED,
        )
        .await;
    assert_error(
        &harness
            .post("/v1/topics/orders/subscriptions", json!({"name": "audit"}))
            .await,
        StatusCode::CONFLICT,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post(
                "/v1/topics/orders/subscriptions",
                json!({"name": "x", "kind": "firehose"}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    let (status, list) = harness.get("/v1/topics/orders/subscriptions").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|subscription| subscription["name"].as_str())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    assert_error(
        &harness.get("/v1/topics/nothing/subscriptions").await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );

    let read = harness.fetch("orders", "audit", json!({"max": 10})).await;
    let payloads: Vec<&Value> = read.iter().map(|delivery| &delivery["payload"]).collect();
    assert_eq!(payloads, [&json!("b"), &json!("c")]);
    harness
        .post_ok(
            "/v1/topics/orders/subscriptions/audit/ack",
            json!({"delivery_ids": ["0-2"]}),
            StatusCode::OK,
        )
        .await;
    let (_, audit) = harness.get("/v1/topics/orders/subscriptions/audit").await;
    assert_eq!(audit["partitions"][0]["committed"], 3);

    let reset = harness
        .post_ok(
            "/v1/topics/orders/subscriptions/audit/reset",
            json!({"to": "earliest"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(reset["partitions"][0]["committed"], 0);
    let replayed = harness.fetch("orders", "audit", json!({"max": 10})).await;
    assert_eq!(replayed.len(), 3, "a reset replays from the start");
    for to in [
        json!({"offset": 2}),
        json!({"timestamp_ms": 0}),
        json!("latest"),
    ] {
        harness
            .post_ok(
                "/v1/topics/orders/subscriptions/audit/reset",
                json!({ "to": to }),
                StatusCode::OK,
            )
            .await;
    }
    for body in [
        json!({"to": "yesterday"}),
        json!({"to": {"offset": -1}}),
        json!({}),
    ] {
        assert_error(
            &harness
                .post("/v1/topics/orders/subscriptions/audit/reset", body)
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    assert_error(
        &harness
            .post(
                "/v1/topics/orders/subscriptions/nobody/reset",
                json!({"to": "earliest"}),
            )
            .await,
        StatusCode::NOT_FOUND,
        "no_such_subscription",
    );

    let (status, _) = harness
        .delete("/v1/topics/orders/subscriptions/audit")
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &harness.get("/v1/topics/orders/subscriptions/audit").await,
        StatusCode::NOT_FOUND,
        "no_such_subscription",
    );
    assert_error(
        &harness
            .delete("/v1/topics/orders/subscriptions/audit")
            .await,
        StatusCode::NOT_FOUND,
        "no_such_subscription",
    );
    // Fetching the deleted name creates a fresh queue subscription.
    let fresh = harness.fetch("orders", "audit", json!({"max": 10})).await;
    assert_eq!(fresh.len(), 3);
}

/// A subscription deleted through another front end (here, the core directly) does not leave
/// HTTP fetches stuck on its closed consumer.
#[tokio::test]
async fn a_subscription_deleted_elsewhere_is_recreated_by_the_next_fetch() {
    let harness = Harness::new().await;
    harness.publish("orders", json!([{"payload": "a"}])).await;
    assert_eq!(harness.fetch("orders", "billing", json!({})).await.len(), 1);
    harness
        .broker
        .delete_group("orders", "billing")
        .await
        .expect("deleted");
    let again = harness.fetch("orders", "billing", json!({})).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["delivery_count"], 1);
}

/// A rejected message reaches the dead-letter queue with the consumer's error text; it can be
/// browsed, redriven back to its subscription, and a DLQ can be purged.
#[tokio::test]
async fn rejected_messages_are_dead_lettered_browsed_redriven_and_purged() {
    let harness = Harness::new().await;
    harness
        .publish(
            "orders",
            json!([{"payload": "bad 1"}, {"payload": "bad 2"}]),
        )
        .await;
    let delivered = harness.fetch("orders", "billing", json!({"max": 2})).await;
    harness
        .post_ok(
            "/v1/topics/orders/subscriptions/billing/nack",
            json!({"delivery_ids": ids(&delivered), "reject": true, "error": "card declined"}),
            StatusCode::OK,
        )
        .await;

    let deadline = Instant::now() + PATIENCE;
    let queues = loop {
        let (status, queues) = harness.get("/v1/dlq").await;
        assert_eq!(status, StatusCode::OK);
        if queues[0]["pending"] == 2 {
            break queues;
        }
        assert!(Instant::now() < deadline, "dead letters arrive: {queues}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(queues[0]["topic"], "orders.billing.dlq");

    let (status, letters) = harness
        .get("/v1/dlq/orders.billing.dlq/messages?limit=10")
        .await;
    assert_eq!(status, StatusCode::OK);
    let letters = letters.as_array().expect("a list").clone();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["payload"], "bad 1");
    assert_eq!(letters[0]["dead_letter"]["reason"], "rejected");
    assert_eq!(letters[0]["dead_letter"]["error"], "card declined");
    assert_eq!(letters[0]["dead_letter"]["topic"], "orders");
    assert_eq!(letters[0]["dead_letter"]["subscription"], "billing");
    assert_eq!(letters[0]["dead_letter"]["offset"], 0);
    assert_eq!(letters[0]["dead_letter"]["delivery_count"], 1);

    let redriven = harness
        .post_ok(
            "/v1/dlq/orders.billing.dlq/redrive",
            json!({"delivery_ids": [letters[0]["delivery_id"]]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(redriven["count"], 1);
    // Back in its subscription, at its own offset: nothing is published again.
    let again = harness.fetch("orders", "billing", json!({"max": 2})).await;
    assert_eq!(again[0]["payload"], "bad 1", "{again:?}");
    assert_eq!(again[0]["offset"], 0, "{again:?}");
    let (_, page) = harness.get("/v1/topics/orders/messages?offset=2").await;
    assert_eq!(page["messages"], json!([]), "{page}");

    let purged = harness
        .post_ok(
            "/v1/dlq/orders.billing.dlq/purge",
            json!({}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(purged["count"], 1);
    let (_, queues) = harness.get("/v1/dlq").await;
    assert_eq!(queues[0]["pending"], 0);

    assert_error(
        &harness.get("/v1/dlq/orders/messages").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness.post("/v1/dlq/orders/redrive", json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness.post("/v1/dlq/orders/purge", json!({})).await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness
            .get("/v1/dlq/orders.billing.dlq/messages?limit=0")
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post(
                "/v1/dlq/orders.billing.dlq/redrive",
                json!({"delivery_ids": ["x"]}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
}

/// The guide's routing matrix through HTTP: a topic exchange with wildcard bindings, a
/// mandatory publish that matches nothing, unbinding, and the exchanges' error paths.
#[tokio::test]
async fn exchanges_route_bind_unbind_and_refuse_what_they_cannot_route() {
    let harness = Harness::new().await;
    let created = harness
        .post_ok(
            "/v1/exchanges",
            json!({"name": "orders", "kind": "topic"}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["kind"], "topic");
    assert_eq!(created["bindings"], json!([]));
    // Declaring the same again is fine; with other settings it is a conflict.
    harness
        .post_ok(
            "/v1/exchanges",
            json!({"name": "orders", "kind": "topic"}),
            StatusCode::CREATED,
        )
        .await;
    assert_error(
        &harness
            .post("/v1/exchanges", json!({"name": "orders", "kind": "fanout"}))
            .await,
        StatusCode::CONFLICT,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post("/v1/exchanges", json!({"name": "x", "kind": "broadcast"}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    harness
        .post_ok(
            "/v1/exchanges/orders/bindings",
            json!({"topic": "vip", "key": "order.vip.*"}),
            StatusCode::OK,
        )
        .await;
    let bound = harness
        .post_ok(
            "/v1/exchanges/orders/bindings",
            json!({"topic": "all-orders", "key": "order.#"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(bound["bindings"].as_array().map(Vec::len), Some(2));

    let routed = harness
        .post_ok(
            "/v1/exchanges/orders/publish",
            json!({"routing_key": "order.vip.created", "messages": [{"payload": "big order"}]}),
            StatusCode::OK,
        )
        .await;
    let mut targets: Vec<&str> = routed["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|target| target["topic"].as_str())
        .collect();
    targets.sort_unstable();
    assert_eq!(targets, ["all-orders", "vip"]);
    assert_eq!(routed["targets"][0]["durability"], "fsynced");
    assert_eq!(routed["dropped"], 0);

    let dropped = harness
        .post_ok(
            "/v1/exchanges/orders/publish",
            json!({"routing_key": "invoice.sent", "messages": [{"payload": "x"}]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(dropped["dropped"], 1);
    assert_error(
        &harness
            .post(
                "/v1/exchanges/orders/publish",
                json!({"routing_key": "invoice.sent", "mandatory": true, "messages": [{"payload": "x"}]}),
            )
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unroutable",
    );
    let (_, stats) = harness.get("/v1/stats").await;
    assert_eq!(stats["unroutable_dropped"], 1);

    let (status, unbound) = harness
        .delete("/v1/exchanges/orders/bindings?topic=vip")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(unbound["bindings"].as_array().map(Vec::len), Some(1));
    assert_error(
        &harness.delete("/v1/exchanges/orders/bindings").await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    let (status, list) = harness.get("/v1/exchanges").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    let (status, one) = harness.get("/v1/exchanges/orders").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["name"], "orders");

    for answer in [
        harness.get("/v1/exchanges/nothing").await,
        harness.delete("/v1/exchanges/nothing").await,
        harness
            .post("/v1/exchanges/nothing/bindings", json!({"topic": "t"}))
            .await,
        harness
            .delete("/v1/exchanges/nothing/bindings?topic=t")
            .await,
        harness
            .post(
                "/v1/exchanges/nothing/publish",
                json!({"messages": [{"payload": "x"}]}),
            )
            .await,
    ] {
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
    }
    assert_error(
        &harness
            .post("/v1/exchanges/orders/publish", json!({"messages": []}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    assert_error(
        &harness
            .post(
                "/v1/exchanges/orders/bindings",
                json!({"topic": "bad topic"}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );

    let (status, _) = harness.delete("/v1/exchanges/orders").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &harness.get("/v1/exchanges/orders").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

/// A queue subscription with a full backlog refuses publishes with 429 `backlog_full`.
#[tokio::test]
async fn a_full_backlog_refuses_publishes_with_429() {
    let harness = Harness::new().await;
    harness
        .post_ok(
            "/v1/topics/orders/subscriptions",
            json!({"name": "slow", "max_backlog": 1}),
            StatusCode::CREATED,
        )
        .await;
    harness.publish("orders", json!([{"payload": "1"}])).await;
    assert_error(
        &harness
            .post(
                "/v1/topics/orders/messages",
                json!({"messages": [{"payload": "2"}]}),
            )
            .await,
        StatusCode::TOO_MANY_REQUESTS,
        "backlog_full",
    );
}

/// Publishing to a topic that does not exist is a 404 when topics are not auto-created.
#[tokio::test]
async fn without_auto_created_topics_an_unknown_topic_is_404() {
    let harness = Harness::with(|config| config.auto_create_topics = false).await;
    assert_error(
        &harness
            .post(
                "/v1/topics/nothing/messages",
                json!({"messages": [{"payload": "x"}]}),
            )
            .await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
    assert_error(
        &harness
            .post("/v1/topics/nothing/subscriptions/s/fetch", json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "unknown_topic",
    );
}

/// The live stats stream sends a `stats` event at once and then one per interval; a bad
/// interval is refused.
#[tokio::test]
async fn the_stats_stream_sends_snapshots_as_server_sent_events() {
    let harness = Harness::new().await;
    harness.publish("orders", json!([{"payload": "a"}])).await;
    let request = Request::builder()
        .uri("/v1/stats/stream?interval_ms=100")
        .body(Body::empty())
        .expect("a request");
    let response = harness
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "{:?}",
        response.headers()
    );
    let mut body = response.into_body();
    let mut text = String::new();
    let mut events = 0;
    while events < 2 {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("a frame");
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
            events = text.matches("event: stats").count();
        }
    }
    let data = text
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .expect("a data line");
    let snapshot: Value = serde_json::from_str(data).expect("JSON data");
    assert_eq!(snapshot["topics"][0]["name"], "orders");

    for query in ["interval_ms=5", "interval_ms=60001", "interval_ms=x"] {
        assert_error(
            &harness.get(&format!("/v1/stats/stream?{query}")).await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
}

#[tokio::test]
async fn stats_show_topics_and_subscriptions_and_alerts_are_empty() {
    let harness = Harness::new().await;
    harness
        .publish("orders", json!([{"payload": "a"}, {"payload": "b"}]))
        .await;
    harness.fetch("orders", "billing", json!({"max": 1})).await;
    let (status, stats) = harness.get("/v1/stats").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stats["topics"][0]["name"], "orders");
    assert_eq!(stats["topics"][0]["messages"], 2);
    assert_eq!(stats["topics"][0]["partitions"][0]["end_offset"], 2);
    let billing = &stats["subscriptions"][0];
    assert_eq!(billing["name"], "billing");
    assert_eq!(billing["kind"], "queue");
    assert_eq!(billing["backlog"], 2);
    assert_eq!(billing["in_flight"], 1);
    assert_eq!(billing["consumers"].as_array().map(Vec::len), Some(1));
    assert_eq!(billing["consumers"][0]["in_flight"], 1);
    assert_eq!(billing["delivered"], 1);
    assert_eq!(billing["acked"], 0);
    assert_eq!(stats["topics"][0]["published_messages"], 2);
    assert!(
        stats["topics"][0]["size_bytes"]
            .as_u64()
            .is_some_and(|size| size > 0)
    );
    assert!(
        stats["fsync"]["count"]
            .as_u64()
            .is_some_and(|count| count > 0)
    );
    assert!(stats["now_ms"].as_i64().is_some_and(|now| now > 0));
}

/// Alert rules over HTTP: the guide's two defaults are listed; a rule set through the API
/// fires on a real backlog, shows in `/v1/alerts` and on the alert stream, and can be deleted.
#[tokio::test]
async fn an_alert_rule_set_over_http_fires_and_is_streamed() {
    let harness = Harness::new().await;
    let (status, rules) = harness.get("/v1/alert-rules").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = rules
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|rule| rule["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["backlog-high", "success-rate-low", "partition-poisoned"]
    );
    let (_, quiet) = harness.get("/v1/alerts").await;
    assert_eq!(quiet, json!({"alerts": []}));

    let request = Request::builder()
        .uri("/v1/alerts/stream")
        .body(Body::empty())
        .expect("a request");
    let stream = harness
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("an answer");
    assert_eq!(stream.status(), StatusCode::OK);
    let mut body = stream.into_body();

    let set = harness
        .send(
            Method::PUT,
            "/v1/alert-rules/orders-backlog",
            Body::from(
                json!({"metric": "backlog", "scope": "orders/*", "comparison": "above",
                       "threshold": 1, "message": "orders pile up"})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(set.0, StatusCode::OK, "{}", set.1);
    assert_eq!(set.1["scope"], "orders/*");
    harness
        .post_ok(
            "/v1/topics/orders/subscriptions",
            json!({"name": "billing"}),
            StatusCode::CREATED,
        )
        .await;
    harness
        .publish("orders", json!([{"payload": "1"}, {"payload": "2"}]))
        .await;

    let deadline = Instant::now() + PATIENCE;
    let firing = loop {
        let (_, alerts) = harness.get("/v1/alerts").await;
        if let Some(alert) = alerts["alerts"].as_array().and_then(|alerts| {
            alerts
                .iter()
                .find(|alert| alert["rule"] == "orders-backlog")
        }) && alert["state"] == "firing"
        {
            break alert.clone();
        }
        assert!(Instant::now() < deadline, "the alert fires: {alerts}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(firing["scope"], "orders/billing");
    assert_eq!(firing["metric"], "backlog");
    assert_eq!(firing["value"], 2.0);
    assert_eq!(firing["message"], "orders pile up");

    let mut text = String::new();
    while !text.contains("orders-backlog") {
        let frame = tokio::time::timeout(PATIENCE, body.frame())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .expect("a frame");
        if let Some(data) = frame.data_ref() {
            text.push_str(&String::from_utf8_lossy(data));
        }
    }
    assert!(text.contains("event: alert"), "{text}");

    for (method, body) in [
        (
            Method::PUT,
            json!({"metric": "mood", "comparison": "above", "threshold": 1}),
        ),
        (
            Method::PUT,
            json!({"metric": "backlog", "comparison": "above"}),
        ),
        (
            Method::PUT,
            json!({"metric": "backlog", "comparison": "above", "threshold": 1, "for_ms": 3_000_000_000u64}),
        ),
    ] {
        assert_error(
            &harness
                .send(method, "/v1/alert-rules/bad", Body::from(body.to_string()))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        );
    }
    let (status, _) = harness.delete("/v1/alert-rules/orders-backlog").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &harness.delete("/v1/alert-rules/orders-backlog").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

/// The OpenAPI document is served, is OpenAPI 3, and describes every stable path of the API.
#[tokio::test]
async fn the_openapi_document_describes_every_endpoint() {
    let harness = Harness::new().await;
    let (status, document) = harness.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|version| version.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    let expected = [
        ("/v1/topics", &["get", "post"][..]),
        ("/v1/topics/{topic}", &["get", "delete"]),
        ("/v1/topics/{topic}/messages", &["get", "post"]),
        ("/v1/topics/{topic}/subscriptions", &["get", "post"]),
        (
            "/v1/topics/{topic}/subscriptions/{name}",
            &["get", "delete"],
        ),
        ("/v1/topics/{topic}/subscriptions/{name}/reset", &["post"]),
        ("/v1/topics/{topic}/subscriptions/{name}/fetch", &["post"]),
        ("/v1/topics/{topic}/subscriptions/{name}/ack", &["post"]),
        ("/v1/topics/{topic}/subscriptions/{name}/nack", &["post"]),
        ("/v1/exchanges", &["get", "post"]),
        ("/v1/exchanges/{name}", &["get", "delete"]),
        ("/v1/exchanges/{name}/bindings", &["post", "delete"]),
        ("/v1/exchanges/{name}/publish", &["post"]),
        ("/v1/dlq", &["get"]),
        ("/v1/dlq/{topic}/messages", &["get"]),
        ("/v1/dlq/{topic}/redrive", &["post"]),
        ("/v1/dlq/{topic}/purge", &["post"]),
        ("/v1/schedule", &["get"]),
        ("/v1/schedule/{id}", &["get", "delete"]),
        ("/v1/schedule/by-key/{business_key}", &["delete"]),
        ("/v1/schedule/{id}/reschedule", &["post"]),
        ("/v1/transactions", &["get", "post"]),
        ("/v1/transactions/{id}/messages", &["post"]),
        ("/v1/transactions/{id}/commit", &["post"]),
        ("/v1/transactions/{id}/rollback", &["post"]),
        ("/v1/idempotency/{key}/claim", &["post"]),
        ("/v1/idempotency/{key}/complete", &["post"]),
        ("/v1/idempotency/{key}/release", &["post"]),
        ("/v1/stats", &["get"]),
        ("/v1/stats/stream", &["get"]),
        ("/v1/alerts", &["get"]),
        ("/v1/alerts/stream", &["get"]),
        ("/v1/alert-rules", &["get"]),
        ("/v1/alert-rules/{name}", &["put", "delete"]),
    ];
    let paths = document["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), expected.len(), "{:?}", paths.keys());
    for (path, methods) in expected {
        for method in methods {
            assert!(
                paths[path].get(*method).is_some(),
                "{method} {path} is documented"
            );
        }
    }
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
}

/// Shutting the HTTP listener down ends a long poll at once instead of holding the shutdown
/// for the whole wait.
#[tokio::test]
async fn shutdown_ends_long_polls_early() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let broker = Broker::open(BrokerConfig::new(directory.path()))
        .await
        .expect("the broker opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let address = listener.local_addr().expect("an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(HttpApi::new(broker.clone()).serve(listener, async {
        let _ = stopped.await;
    }));

    let poll = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connects");
        let body = r#"{"wait_ms": 30000}"#;
        let request = format!(
            "POST /v1/topics/events/subscriptions/s/fetch HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream.write_all(request.as_bytes()).await.expect("sends");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .await
            .expect("reads the answer");
        answer
    });
    // Let the poll start waiting.
    let deadline = Instant::now() + PATIENCE;
    while broker
        .group("events", "s")
        .ok()
        .map(|group| group.consumers)
        != Some(1)
    {
        assert!(Instant::now() < deadline, "the poll attaches");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    stop.send(()).expect("the server listens for the stop");
    let answer = tokio::time::timeout(PATIENCE, poll)
        .await
        .expect("the poll ends")
        .expect("the task finishes");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""deliveries":[]"#), "{answer}");
    tokio::time::timeout(PATIENCE, server)
        .await
        .expect("the server stops")
        .expect("the task finishes")
        .expect("serving ends cleanly");
    assert!(started.elapsed() < Duration::from_secs(5));
    broker.shutdown().await;
}

/// `Server` opens the HTTP listener beside the native one when configured, reports its
/// address, serves the API on it, and stops it with the rest.
#[tokio::test]
async fn the_server_serves_http_beside_the_native_protocol() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use weir_server::{Server, ServerConfig};

    let directory = tempfile::tempdir().expect("a temporary directory");
    let broker = Broker::open(BrokerConfig::new(directory.path()))
        .await
        .expect("the broker opens");
    let config = ServerConfig {
        native_addr: "127.0.0.1:0".parse().expect("an address"),
        http_addr: Some("127.0.0.1:0".parse().expect("an address")),
        ..ServerConfig::default()
    };
    let server = Server::bind(broker.clone(), config).await.expect("binds");
    let address = server.http_addr().expect("an http listener");
    assert_ne!(address.port(), 0);
    assert_ne!(address, server.native_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    stream
        .write_all(b"GET /v1/topics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .expect("sends");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("reads the answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("[]"), "{answer}");

    stop.send(()).expect("the server listens for the stop");
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the server stops")
        .expect("the task finishes")
        .expect("serving ends cleanly");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the http listener is closed"
    );
}

/// A message id seen before is not stored again: the confirm points at the first copy, for a
/// repeat within one batch and for a repeat of an earlier publish alike.
#[tokio::test]
async fn a_repeated_message_id_is_confirmed_as_a_duplicate_of_the_first_copy() {
    let harness = Harness::new().await;
    let first = harness
        .publish(
            "orders",
            json!([{"payload": "created", "id": "order-1"}, {"payload": "other", "id": "order-2"}]),
        )
        .await;
    assert_eq!(
        first["messages"][0],
        json!({"partition": 0, "offset": 0, "duplicate": false})
    );
    let again = harness
        .publish(
            "orders",
            json!([
                {"payload": "new", "id": "order-3"},
                {"payload": "created", "id": "order-1"},
                {"payload": "new again", "id": "order-3"},
                {"payload": "no id"}
            ]),
        )
        .await;
    assert_eq!(
        again["messages"],
        json!([
            {"partition": 0, "offset": 2, "duplicate": false},
            {"partition": 0, "offset": 0, "duplicate": true},
            {"partition": 0, "offset": 2, "duplicate": true},
            {"partition": 0, "offset": 3, "duplicate": false}
        ])
    );
    let (_, page) = harness.get("/v1/topics/orders/messages").await;
    assert_eq!(page["next_offset"], 4, "duplicates are stored once: {page}");
}

/// Delayed messages: a publish with `delay_ms` schedules them durably; they are listed,
/// inspected, moved, cancelled by id or business key, and appended to the topic when due.
#[tokio::test]
async fn delayed_messages_are_scheduled_listed_cancelled_and_delivered_when_due() {
    let harness = Harness::with_manual_clock().await;
    let clock = harness.clock.clone().expect("a manual clock");
    let confirm = harness
        .publish(
            "orders",
            json!([
                {"payload": "now"},
                {"payload": "auto-cancel order-1", "delay_ms": 1_800_000, "business_key": "cancel:order-1"},
                {"payload": "reminder", "delay_ms": 60_000, "id": "reminder-1"},
            ]),
        )
        .await;
    assert_eq!(confirm["durability"], "fsynced");
    assert_eq!(
        confirm["messages"][0],
        json!({"partition": 0, "offset": 0, "duplicate": false})
    );
    let auto_cancel: u64 = confirm["messages"][1]["scheduled_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("scheduled");
    let reminder: u64 = confirm["messages"][2]["scheduled_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .expect("scheduled");
    assert_eq!(confirm["messages"][2]["deliver_at_ms"], 1_000_000 + 60_000);

    let (status, listed) = harness.get("/v1/schedule?topic=orders").await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<u64> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|scheduled| scheduled["id"].as_str()?.parse().ok())
        .collect();
    assert_eq!(ids, [reminder, auto_cancel], "soonest first");
    let (status, detail) = harness.get(&format!("/v1/schedule/{reminder}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["messages"][0]["payload"], "reminder");
    assert_eq!(detail["messages"][0]["id"], "reminder-1");
    assert_eq!(detail["topic"], "orders");

    // The order was paid: its auto-cancel is cancelled by business key.
    let (status, cancelled) = harness.delete("/v1/schedule/by-key/cancel:order-1").await;
    assert_eq!(status, StatusCode::OK, "{cancelled}");
    assert_eq!(cancelled["id"], auto_cancel.to_string());
    assert_error(
        &harness.delete("/v1/schedule/by-key/cancel:order-1").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &harness.delete(&format!("/v1/schedule/{auto_cancel}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let moved = harness
        .post_ok(
            &format!("/v1/schedule/{reminder}/reschedule"),
            json!({"deliver_at_ms": 1_000_000 + 10_000}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(moved["deliver_at_ms"], 1_010_000);
    clock.advance(Duration::from_millis(10_000));
    harness.broker.deliver_due().await.expect("hand-over");
    let (_, page) = harness.get("/v1/topics/orders/messages").await;
    let payloads: Vec<&Value> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|message| &message["payload"])
        .collect();
    assert_eq!(payloads, [&json!("now"), &json!("reminder")]);
    assert_eq!(page["messages"][1]["id"], "reminder-1");
    let (_, listed) = harness.get("/v1/schedule").await;
    assert_eq!(listed, json!([]));

    for (answer, status, name) in [
        (
            harness.get("/v1/schedule/12345").await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            harness.get("/v1/schedule/minus-one").await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            harness.get("/v1/schedule?limit=0").await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            harness.get("/v1/schedule?after_ms=5").await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            harness
                .post("/v1/schedule/12345/reschedule", json!({"deliver_at_ms": 5}))
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            harness
                .post(&format!("/v1/schedule/{reminder}/reschedule"), json!({}))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            harness
                .post(
                    "/v1/exchanges/any/publish",
                    json!({"messages": [{"payload": "x", "delay_ms": 5}]}),
                )
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
    ] {
        assert_error(&(answer.0, answer.1), status, name);
    }
    harness
        .publish(
            "orders",
            json!([{"payload": "a", "delay_ms": 5, "business_key": "taken"}]),
        )
        .await;
    assert_error(
        &harness
            .post(
                "/v1/topics/orders/messages",
                json!({"messages": [{"payload": "b", "delay_ms": 5, "business_key": "taken"}]}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
}

/// Half messages stay invisible until their transaction commits; a rolled-back transaction
/// leaves nothing; a decided or unknown transaction is refused.
#[tokio::test]
async fn transactions_commit_all_half_messages_or_roll_back_all() {
    let harness = Harness::new().await;
    let begun = harness
        .post_ok(
            "/v1/transactions",
            json!({"producer_group": "orders-service", "timeout_ms": 60000}),
            StatusCode::CREATED,
        )
        .await;
    let id = begun["id"].as_str().expect("an id").to_owned();
    let (status, _) = harness
        .post(
            &format!("/v1/transactions/{id}/messages"),
            json!({"topic": "orders", "messages": [{"payload": "order 1 paid", "key": "order-1"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = harness
        .post(
            &format!("/v1/transactions/{id}/messages"),
            json!({"topic": "points", "messages": [{"payload": "+10 points"}]}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, open) = harness.get("/v1/transactions").await;
    assert_eq!(open[0]["id"], id);
    assert_eq!(open[0]["state"], "open");
    assert_eq!(open[0]["parts"], 2);
    let (_, invisible) = harness.get("/v1/topics/orders/messages").await;
    assert_eq!(
        invisible["messages"],
        json!([]),
        "half messages are invisible"
    );

    let committed = harness
        .post_ok(
            &format!("/v1/transactions/{id}/commit"),
            json!({}),
            StatusCode::OK,
        )
        .await;
    let mut topics: Vec<&str> = committed["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|target| target["topic"].as_str())
        .collect();
    topics.sort_unstable();
    assert_eq!(topics, ["orders", "points"]);
    let (_, visible) = harness.get("/v1/topics/orders/messages").await;
    assert_eq!(visible["messages"][0]["payload"], "order 1 paid");
    let (_, none_open) = harness.get("/v1/transactions").await;
    assert_eq!(none_open, json!([]));

    let rolled = harness
        .post_ok(
            "/v1/transactions",
            json!({"producer_group": "orders-service"}),
            StatusCode::CREATED,
        )
        .await;
    let rolled = rolled["id"].as_str().expect("an id").to_owned();
    harness
        .post(
            &format!("/v1/transactions/{rolled}/messages"),
            json!({"topic": "orders", "messages": [{"payload": "never"}]}),
        )
        .await;
    let (status, _) = harness
        .post(&format!("/v1/transactions/{rolled}/rollback"), json!({}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, after) = harness.get("/v1/topics/orders/messages").await;
    assert_eq!(after["messages"].as_array().map(Vec::len), Some(1));

    for (answer, status, name) in [
        (
            harness
                .post(&format!("/v1/transactions/{rolled}/commit"), json!({}))
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            harness
                .post("/v1/transactions/12345/rollback", json!({}))
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            harness
                .post(
                    "/v1/transactions/12345/messages",
                    json!({"topic": "orders", "messages": [{"payload": "x"}]}),
                )
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            harness
                .post("/v1/transactions/not-a-number/commit", json!({}))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            harness
                .post("/v1/transactions", json!({"producer_group": "bad group"}))
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
        (
            harness
                .post(
                    "/v1/transactions",
                    json!({"producer_group": "g", "timeout_ms": 0}),
                )
                .await,
            StatusCode::BAD_REQUEST,
            "invalid_argument",
        ),
    ] {
        assert_error(&(answer.0, answer.1), status, name);
    }
}

/// The guide's `SET processed:{id} NX EX`, kept by the broker: the first claim wins, a second
/// holder is told it is busy, a completed key is reported done, a released one is free again.
#[tokio::test]
async fn idempotency_keys_are_claimed_completed_and_released() {
    let harness = Harness::new().await;
    let claim = |holder: &str| {
        harness.post(
            "/v1/idempotency/payment:pay-1/claim",
            json!({"holder": holder, "ttl_ms": 60000}),
        )
    };
    let first = claim("worker-1").await;
    assert_eq!(first.0, StatusCode::OK);
    assert_eq!(first.1["state"], "acquired", "{}", first.1);
    let busy = claim("worker-2").await;
    assert_eq!(busy.1["state"], "busy");
    assert_eq!(busy.1["holder"], "worker-1");
    assert_error(
        &harness
            .post(
                "/v1/idempotency/payment:pay-1/complete",
                json!({"holder": "worker-2", "ttl_ms": 60000}),
            )
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_argument",
    );
    let (status, _) = harness
        .post(
            "/v1/idempotency/payment:pay-1/complete",
            json!({"holder": "worker-1", "ttl_ms": 86_400_000}),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(claim("worker-2").await.1["state"], "completed");

    let other = |path: &'static str, holder: &'static str| {
        harness.post(path, json!({"holder": holder, "ttl_ms": 60000}))
    };
    assert_eq!(
        other("/v1/idempotency/k2/claim", "a").await.1["state"],
        "acquired"
    );
    let (status, _) = harness
        .post("/v1/idempotency/k2/release", json!({"holder": "a"}))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        other("/v1/idempotency/k2/claim", "b").await.1["state"],
        "acquired"
    );

    for (answer, name) in [
        (
            harness
                .post(
                    "/v1/idempotency/k3/claim",
                    json!({"holder": "a", "ttl_ms": 0}),
                )
                .await,
            "invalid_argument",
        ),
        (
            harness
                .post(
                    &format!("/v1/idempotency/{}/claim", "k".repeat(600)),
                    json!({"holder": "a", "ttl_ms": 5}),
                )
                .await,
            "invalid_argument",
        ),
        (
            harness
                .post("/v1/idempotency/k3/claim", json!({"holder": "a"}))
                .await,
            "invalid_argument",
        ),
    ] {
        assert_error(&answer, StatusCode::BAD_REQUEST, name);
    }
}

/// Sends one request to `router` with the given headers, returning the status and the error
/// name, if any.
async fn call_with_headers(
    router: &Router,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (StatusCode, Option<String>) {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_empty() {
        request = request.header("content-length", body.len().to_string());
    }
    let request = request
        .body(Body::from(body.to_owned()))
        .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("an answer");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    let name = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|value| value["name"].as_str().map(str::to_owned));
    (status, name)
}

/// Goal (issue 10, defect 24): a web page cannot drive the broker: a cross-origin "simple"
/// POST (text/plain, form, no type), any request from another Origin, and any request naming
/// another Host (DNS rebinding) are refused before a handler runs; the broker's own origin,
/// IP addresses, localhost and configured proxy names pass. Method: requests through the
/// router with browser-like headers, then a look at what changed.
#[tokio::test]
async fn cross_site_requests_and_foreign_hosts_are_refused() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let broker = Broker::open(BrokerConfig::new(directory.path()))
        .await
        .expect("the broker opens");
    let config = weir_server::http::HttpConfig {
        allowed_hosts: vec!["weir.example.com".into()],
        ..weir_server::http::HttpConfig::default()
    };
    let router = HttpApi::with_config(broker.clone(), Arc::default(), config).router();
    let create = r#"{"name": "csrf"}"#;
    let host = ("host", "127.0.0.1:15680");

    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let answer = call_with_headers(
            &router,
            Method::POST,
            "/v1/topics",
            &[host, ("content-type", content_type)],
            create,
        )
        .await;
        assert_eq!(
            answer,
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("invalid_argument".into())
            ),
            "{content_type}"
        );
    }
    let untyped = call_with_headers(&router, Method::POST, "/v1/topics", &[host], create).await;
    assert_eq!(untyped.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(broker.topic("csrf").is_err(), "nothing was created");

    // An empty-body purge or delete from another site: the Origin gives it away.
    broker
        .create_topic("kept", weir_core::TopicConfig::default())
        .await
        .expect("created");
    for (method, path) in [
        (Method::DELETE, "/v1/topics/kept"),
        (Method::POST, "/v1/dlq/kept/purge"),
    ] {
        let answer = call_with_headers(
            &router,
            method,
            path,
            &[host, ("origin", "http://evil.example")],
            "",
        )
        .await;
        assert_eq!(
            answer,
            (StatusCode::FORBIDDEN, Some("unauthorised".into())),
            "{path}"
        );
    }
    assert!(broker.topic("kept").is_ok(), "nothing was deleted");

    // DNS rebinding: the page's own name, resolved to the broker, is in the Host header.
    let rebound = call_with_headers(
        &router,
        Method::GET,
        "/v1/topics",
        &[("host", "evil.example:15680")],
        "",
    )
    .await;
    assert_eq!(
        rebound,
        (StatusCode::FORBIDDEN, Some("unauthorised".into()))
    );

    // What a real client or the broker's own origin sends passes.
    let json = ("content-type", "application/json");
    for headers in [
        vec![host, json],
        vec![
            ("host", "localhost:15680"),
            ("origin", "http://localhost:15680"),
            json,
        ],
        vec![
            ("host", "weir.example.com"),
            ("origin", "https://weir.example.com"),
            json,
        ],
    ] {
        let name = format!("ok-{}", headers.len());
        let body = format!(r#"{{"name": "{name}-{}"}}"#, headers[0].1.len());
        let answer = call_with_headers(&router, Method::POST, "/v1/topics", &headers, &body).await;
        assert_eq!(answer.0, StatusCode::CREATED, "{headers:?}");
    }
    let purge = call_with_headers(&router, Method::POST, "/v1/dlq/kept/purge", &[host], "").await;
    assert_ne!(purge.0, StatusCode::FORBIDDEN);
    assert_ne!(purge.0, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    broker.shutdown().await;
}

/// Goal (issue 10, defect 19): the HTTP listener bounds its connections and closes the ones
/// that hold a slot doing nothing: a request head that does not complete in time (slowloris,
/// even dripping a byte at a time), and a keep-alive connection idle between requests. An
/// event stream is a request in progress, and is not cut. Method: a server with a 2-connection
/// limit and 400 ms timeouts; an event stream, an idle connection, a third connection, then a
/// dripping one.
#[tokio::test]
async fn slow_and_idle_http_connections_are_closed_and_event_streams_are_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use weir_server::{Server, ServerConfig};

    let directory = tempfile::tempdir().expect("a temporary directory");
    let broker = Broker::open(BrokerConfig::new(directory.path()))
        .await
        .expect("the broker opens");
    let config = ServerConfig {
        native_addr: "127.0.0.1:0".parse().expect("an address"),
        http_addr: Some("127.0.0.1:0".parse().expect("an address")),
        http: weir_server::http::HttpConfig {
            max_connections: 2,
            header_timeout: Duration::from_millis(400),
            idle_timeout: Duration::from_millis(400),
            ..weir_server::http::HttpConfig::default()
        },
        ..ServerConfig::default()
    };
    let server = Server::bind(broker.clone(), config).await.expect("binds");
    let address = server.http_addr().expect("an http listener");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    /// Reads until the peer closes, or gives up after PATIENCE; returns what was read.
    async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
            .await
            .expect("the server closes the connection in time")
            .ok();
        String::from_utf8_lossy(&answer).into_owned()
    }

    // A stream of snapshots every 1.5 s: the second arrives well after the idle timeout.
    let mut events = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    events
        .write_all(b"GET /v1/stats/stream?interval_ms=1500 HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("sends");
    let mut idle = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    idle.write_all(b"GET /v1/topics HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .expect("sends");
    // Two connections are open: a third is told the limit and closed.
    let mut third = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let refused = read_until_closed(&mut third).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains(r#""name":"quota""#), "{refused}");
    // The idle keep-alive connection got its answer, then was closed.
    let answered = read_until_closed(&mut idle).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while received
        .windows(12)
        .filter(|window| window == b"event: stats")
        .count()
        < 2
    {
        let read = tokio::time::timeout(PATIENCE, events.read(&mut chunk))
            .await
            .expect("the stream goes on")
            .expect("reads");
        assert!(
            read > 0,
            "the event stream was closed: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..read]);
    }

    // Slowloris: a head dripped a byte every 100 ms never completes, and is cut.
    let slow = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    let (mut slow_read, mut slow_write) = slow.into_split();
    let drip = tokio::spawn(async move {
        for byte in b"GET /v1/topics HTTP/1.1\r\nhost: localhost\r\nx-slow: "
            .iter()
            .cycle()
        {
            if slow_write.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(PATIENCE, slow_read.read_to_end(&mut sink))
        .await
        .expect("the slow connection is closed")
        .ok();
    assert!(
        sink.is_empty(),
        "no answer to half a head: {}",
        String::from_utf8_lossy(&sink)
    );
    assert!(started.elapsed() < PATIENCE);
    drip.abort();

    stop.send(()).expect("the server listens for the stop");
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("the server stops")
        .expect("the task finishes")
        .expect("serving ends cleanly");
}
