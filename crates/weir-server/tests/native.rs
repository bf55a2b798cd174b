//! The native front end against an in-process broker: the protocol's error paths, pipelining,
//! deliveries, and graceful shutdown, spoken byte for byte with `weir-proto` over a real
//! socket. Black-box tests of the `weir` binary live in the workspace's root `tests/`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use weir_batch::BatchBuilder;
use weir_core::{Broker, BrokerConfig};
use weir_proto::{
    ErrorCode, Frame, FrameError, MessageId, Request, Response, Start, SubscriptionMode,
};
use weir_server::{Server, ServerConfig};

const MAX_FRAME_BYTES: usize = 1 << 20;
const PATIENCE: Duration = Duration::from_secs(10);

/// A broker and a server on a free port, stopped by `stop`.
struct Running {
    address: SocketAddr,
    broker: Broker,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    directory: tempfile::TempDir,
}

async fn start_with(config: impl FnOnce(&mut ServerConfig)) -> Running {
    let directory = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(directory.path()))
        .await
        .unwrap();
    let mut server_config = ServerConfig {
        native_addr: "127.0.0.1:0".parse().unwrap(),
        max_frame_bytes: MAX_FRAME_BYTES,
        ..ServerConfig::default()
    };
    config(&mut server_config);
    let server = Server::bind(broker.clone(), server_config).await.unwrap();
    let address = server.native_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        address,
        broker,
        stop: Some(stop),
        server,
        directory,
    }
}

async fn start() -> Running {
    start_with(|_| {}).await
}

impl Running {
    /// Signals shutdown and waits for `run` to return.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.server)
            .await
            .expect("the server stops in time")
            .unwrap()
            .unwrap();
    }
}

/// A raw protocol client: frames out, frames in.
struct Client {
    stream: TcpStream,
    buffer: BytesMut,
    next_correlation_id: u64,
    /// The largest frame this client accepts, as a real client refuses a frame over the
    /// limit the server announced.
    max_frame_bytes: usize,
    /// Deliveries pushed while `call` waited for its answer (a settlement is answered once
    /// durable, so a redelivery it caused may arrive first), for `delivery`.
    pushed: std::collections::VecDeque<(u32, Vec<weir_proto::Delivery>)>,
}

impl Client {
    async fn connect(address: SocketAddr) -> Client {
        Client {
            stream: TcpStream::connect(address).await.unwrap(),
            buffer: BytesMut::new(),
            next_correlation_id: 1,
            max_frame_bytes: MAX_FRAME_BYTES,
            pushed: std::collections::VecDeque::new(),
        }
    }

    /// Connects and completes the handshake.
    async fn greeted(address: SocketAddr) -> Client {
        let mut client = Client::connect(address).await;
        let response = client
            .call(Request::Hello {
                min_version: 1,
                max_version: 1,
                client_name: "test".into(),
            })
            .await;
        assert!(
            matches!(response, Response::HelloOk { version: 1, .. }),
            "{response:?}"
        );
        client
    }

    async fn send(&mut self, request: &Request) -> u64 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut wire = BytesMut::new();
        request.encode(correlation_id, &mut wire);
        self.stream.write_all(&wire).await.unwrap();
        correlation_id
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` at the end of the stream.
    async fn receive(&mut self) -> Option<(u64, Response)> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match Frame::parse(&mut self.buffer, self.max_frame_bytes) {
                    Ok(frame) => {
                        let response = Response::decode(frame.kind, frame.payload).unwrap();
                        return Some((frame.correlation_id, response));
                    }
                    Err(FrameError::Incomplete { .. }) => {}
                    Err(error) => panic!("the server sent a bad frame: {error}"),
                }
                match self.stream.read_buf(&mut self.buffer).await {
                    Ok(0) => {
                        assert!(self.buffer.is_empty(), "the stream ended inside a frame");
                        return None;
                    }
                    Ok(_) => {}
                    // A reset after the last frame is an end too.
                    Err(_) => return None,
                }
            }
        })
        .await
        .expect("a frame or the end of the stream in time")
    }

    /// Sends a request and returns its answer, keeping pushed deliveries for `delivery`.
    async fn call(&mut self, request: Request) -> Response {
        let correlation_id = self.send(&request).await;
        loop {
            let (answered, response) = self.receive().await.expect("an answer");
            if answered == correlation_id {
                return response;
            }
            assert_eq!(
                answered, 0,
                "an answer to a request not asked: {response:?}"
            );
            if let Response::Deliver {
                subscription,
                messages,
            } = response
            {
                self.pushed.push_back((subscription, messages));
            }
        }
    }

    /// The next delivery push, as (subscription, messages).
    async fn delivery(&mut self) -> (u32, Vec<weir_proto::Delivery>) {
        if let Some(pushed) = self.pushed.pop_front() {
            return pushed;
        }
        match self.receive().await {
            Some((
                0,
                Response::Deliver {
                    subscription,
                    messages,
                },
            )) => (subscription, messages),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    async fn expect_error_then_end(&mut self, code: ErrorCode) {
        let (_, response) = self.receive().await.expect("an error frame");
        assert_eq!(response.error_code(), Some(code), "{response:?}");
        assert_eq!(self.receive().await, None, "the connection closes");
    }
}

fn batch(values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder.push(1_700_000_000_000, None, &[], value.as_bytes());
    }
    builder.finish()
}

fn publish(topic: &str, values: &[&str]) -> Request {
    Request::Publish {
        topic: topic.into(),
        partition: Some(0),
        batch: batch(values),
    }
}

fn subscribe(topic: &str, group: &str, mode: SubscriptionMode, prefetch: u32) -> Request {
    Request::Subscribe {
        topic: topic.into(),
        group: group.into(),
        mode,
        start: Start::Earliest,
        prefetch,
        ack_timeout_ms: None,
    }
}

async fn subscribed(client: &mut Client, request: Request) -> u32 {
    match client.call(request).await {
        Response::Subscribed { subscription } => subscription,
        other => panic!("expected Subscribed, got {other:?}"),
    }
}

#[tokio::test]
async fn a_greeted_client_is_answered_and_a_ping_pongs() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    assert_eq!(client.call(Request::Ping).await, Response::Pong);
    server.stop().await;
}

#[tokio::test]
async fn a_request_before_the_handshake_is_refused_and_the_connection_closed() {
    let mut server = start().await;
    let mut client = Client::connect(server.address).await;
    client.send(&Request::Ping).await;
    client
        .expect_error_then_end(ErrorCode::HandshakeRequired)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_client_with_no_common_version_is_refused_and_closed() {
    let mut server = start().await;
    let mut client = Client::connect(server.address).await;
    client
        .send(&Request::Hello {
            min_version: 7,
            max_version: 9,
            client_name: "future".into(),
        })
        .await;
    client
        .expect_error_then_end(ErrorCode::UnsupportedVersion)
        .await;
    server.stop().await;
}

/// Goal: a frame declared larger than the limit is refused from its length prefix alone, and
/// the server keeps serving others. Method: send only a 4-byte prefix of 4 GiB, expect
/// `payload_too_large` and a close, then greet on a new connection.
#[tokio::test]
async fn an_oversized_frame_is_refused_before_it_is_read() {
    let mut server = start().await;
    let mut client = Client::connect(server.address).await;
    client.send_raw(&u32::MAX.to_le_bytes()).await;
    client
        .expect_error_then_end(ErrorCode::PayloadTooLarge)
        .await;
    let mut other = Client::greeted(server.address).await;
    assert_eq!(other.call(Request::Ping).await, Response::Pong);
    server.stop().await;
}

#[tokio::test]
async fn a_frame_shorter_than_its_header_is_malformed() {
    let mut server = start().await;
    let mut client = Client::connect(server.address).await;
    client.send_raw(&[3, 0, 0, 0, 1, 2, 3]).await;
    client
        .expect_error_then_end(ErrorCode::MalformedFrame)
        .await;
    server.stop().await;
}

#[tokio::test]
async fn a_stream_that_ends_inside_a_frame_is_malformed() {
    let mut server = start().await;
    let mut client = Client::connect(server.address).await;
    let mut wire = BytesMut::new();
    Request::Ping.encode(1, &mut wire);
    client.send_raw(&wire[..wire.len() - 3]).await;
    client.stream.shutdown().await.unwrap();
    client
        .expect_error_then_end(ErrorCode::MalformedFrame)
        .await;
    server.stop().await;
}

/// Goal: a payload that does not decode is answered with `malformed_frame` under its own
/// correlation id, then the connection closes. Method: a hello frame whose payload is cut.
#[tokio::test]
async fn a_payload_that_does_not_decode_is_answered_then_closed() {
    let mut server = start().await;
    let mut client = Client::connect(server.address).await;
    let mut frame = BytesMut::new();
    Frame {
        kind: weir_proto::RequestKind::Hello.code(),
        correlation_id: 42,
        payload: Bytes::from_static(&[1, 0]),
    }
    .encode(&mut frame);
    client.send_raw(&frame).await;
    let (correlation_id, response) = client.receive().await.unwrap();
    assert_eq!(correlation_id, 42);
    assert_eq!(response.error_code(), Some(ErrorCode::MalformedFrame));
    assert_eq!(client.receive().await, None);
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_request_kind_is_refused_and_the_connection_stays() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let mut frame = BytesMut::new();
    Frame {
        kind: 0x7e,
        correlation_id: 77,
        payload: Bytes::new(),
    }
    .encode(&mut frame);
    client.send_raw(&frame).await;
    let (correlation_id, response) = client.receive().await.unwrap();
    assert_eq!(correlation_id, 77);
    assert_eq!(response.error_code(), Some(ErrorCode::UnsupportedRequest));
    assert_eq!(client.call(Request::Ping).await, Response::Pong);
    server.stop().await;
}

#[tokio::test]
async fn core_errors_reach_the_client_with_their_public_code() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let response = client
        .call(Request::DescribeTopic {
            name: "nowhere".into(),
        })
        .await;
    assert_eq!(response.error_code(), Some(ErrorCode::UnknownTopic));
    let response = client
        .call(Request::Ack {
            subscription: 9,
            ids: vec![],
        })
        .await;
    assert_eq!(response.error_code(), Some(ErrorCode::NoSuchSubscription));
    server.stop().await;
}

/// Goal: many publishes in flight on one connection are all confirmed, each under its own
/// correlation id, and appended in the order they were sent. Method: write 1000 publish frames in one
/// go without reading, then read 1000 confirms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_are_all_confirmed() {
    const PUBLISHES: u64 = 1000;
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let mut wire = BytesMut::new();
    for index in 0..PUBLISHES {
        Request::Publish {
            topic: "pipelined".into(),
            partition: Some(0),
            batch: batch(&[&format!("message {index}")]),
        }
        .encode(100 + index, &mut wire);
    }
    let started = Instant::now();
    let (mut reader, mut writer) = client.stream.into_split();
    let sending = tokio::spawn(async move {
        writer.write_all(&wire).await.unwrap();
        writer
    });
    let mut offsets = Vec::new();
    let mut answered = std::collections::HashSet::new();
    let mut buffer = BytesMut::new();
    while offsets.len() < PUBLISHES as usize {
        let frame = loop {
            match Frame::parse(&mut buffer, usize::MAX) {
                Ok(frame) => break frame,
                Err(FrameError::Incomplete { .. }) => {
                    assert!(reader.read_buf(&mut buffer).await.unwrap() > 0);
                }
                Err(error) => panic!("{error}"),
            }
        };
        assert!(answered.insert(frame.correlation_id), "answered twice");
        match Response::decode(frame.kind, frame.payload).unwrap() {
            Response::Published { partitions, .. } => {
                assert_eq!(partitions.len(), 1);
                // Confirms may come back in any order, but the log keeps the order in which
                // the publishes were read: publish i (correlation id 100 + i) is at offset i.
                assert_eq!(partitions[0].base_offset, frame.correlation_id - 100);
                offsets.push(partitions[0].base_offset);
            }
            other => panic!("expected a confirm, got {other:?}"),
        }
    }
    let elapsed = started.elapsed();
    eprintln!("{PUBLISHES} pipelined fsync'd publishes confirmed in {elapsed:?}");
    offsets.sort_unstable();
    assert_eq!(offsets, (0..PUBLISHES).collect::<Vec<_>>());
    client.stream = sending.await.unwrap().reunite(reader).unwrap();
    server.stop().await;
}

/// Goal: a queue subscription receives what was published, and an ack settles it. Method:
/// publish, subscribe, read the delivery, ack, check the group's in-flight count is back to 0.
#[tokio::test]
async fn a_queue_subscription_delivers_and_an_ack_settles() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    assert!(matches!(
        client.call(publish("orders", &["one", "two"])).await,
        Response::Published { .. }
    ));
    let subscription = subscribed(
        &mut client,
        subscribe("orders", "workers", SubscriptionMode::Queue, 10),
    )
    .await;
    let mut messages = Vec::new();
    while messages.len() < 2 {
        let (delivered_to, batch) = client.delivery().await;
        assert_eq!(delivered_to, subscription);
        messages.extend(batch);
    }
    assert_eq!(&messages[0].value[..], b"one");
    assert_eq!(messages[0].delivery_count, 1);
    let ids: Vec<MessageId> = messages.iter().map(|message| message.id()).collect();
    assert_eq!(
        client.call(Request::Ack { subscription, ids }).await,
        Response::Ok
    );
    let group = server.broker.group("orders", "workers").unwrap();
    assert_eq!(group.partitions[0].in_flight, 0);
    assert_eq!(group.partitions[0].committed, 2);
    server.stop().await;
}

/// Goal: unacked deliveries of a connection that goes away are redelivered to another
/// consumer. Method: two connections on one queue group; the first receives and closes without
/// acking; the second then receives the same message.
#[tokio::test]
async fn a_closed_connection_releases_its_unacked_deliveries() {
    let mut server = start().await;
    let mut first = Client::greeted(server.address).await;
    first.call(publish("jobs", &["job"])).await;
    subscribed(
        &mut first,
        subscribe("jobs", "workers", SubscriptionMode::Queue, 1),
    )
    .await;
    let (_, messages) = first.delivery().await;
    assert_eq!(messages[0].delivery_count, 1);

    let mut second = Client::greeted(server.address).await;
    subscribed(
        &mut second,
        subscribe("jobs", "workers", SubscriptionMode::Queue, 1),
    )
    .await;
    drop(first);
    // A delivery whose consumer left without settling it counts (issue 10: a message that
    // kills its consumers must still reach `max_deliveries`).
    let (_, messages) = second.delivery().await;
    assert_eq!(&messages[0].value[..], b"job");
    assert_eq!(messages[0].offset, 0);
    assert_eq!(messages[0].delivery_count, 2);
    server.stop().await;
}

#[tokio::test]
async fn unsubscribe_releases_unacked_deliveries_and_forgets_the_id() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    client.call(publish("jobs", &["job"])).await;
    let first = subscribed(
        &mut client,
        subscribe("jobs", "workers", SubscriptionMode::Queue, 1),
    )
    .await;
    client.delivery().await;
    assert_eq!(
        client
            .call(Request::Unsubscribe {
                subscription: first
            })
            .await,
        Response::Ok
    );
    let response = client
        .call(Request::Ack {
            subscription: first,
            ids: vec![],
        })
        .await;
    assert_eq!(response.error_code(), Some(ErrorCode::NoSuchSubscription));
    let second = subscribed(
        &mut client,
        subscribe("jobs", "workers", SubscriptionMode::Queue, 1),
    )
    .await;
    assert_ne!(first, second, "ids are not reused");
    let (delivered_to, messages) = client.delivery().await;
    assert_eq!(delivered_to, second);
    assert_eq!(&messages[0].value[..], b"job");
    server.stop().await;
}

/// Goal: a stream subscription delivers in partition order and an ack commits. Method:
/// publish three, subscribe in stream mode, ack the last, check the committed offset.
#[tokio::test]
async fn a_stream_subscription_delivers_in_order_and_an_ack_commits() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    client.call(publish("events", &["a", "b", "c"])).await;
    let subscription = subscribed(
        &mut client,
        subscribe("events", "audit", SubscriptionMode::Stream, 100),
    )
    .await;
    let mut messages = Vec::new();
    while messages.len() < 3 {
        messages.extend(client.delivery().await.1);
    }
    let values: Vec<&[u8]> = messages.iter().map(|message| &message.value[..]).collect();
    assert_eq!(values, [&b"a"[..], b"b", b"c"]);
    let last = messages[2].id();
    assert_eq!(
        client
            .call(Request::Ack {
                subscription,
                ids: vec![last],
            })
            .await,
        Response::Ok
    );
    assert_eq!(
        server.broker.group("events", "audit").unwrap().partitions[0].committed,
        3
    );
    server.stop().await;
}

#[tokio::test]
async fn a_connection_over_the_limit_is_told_why_and_closed() {
    let mut server = start_with(|config| config.max_connections = 1).await;
    let mut first = Client::greeted(server.address).await;
    let mut second = Client::connect(server.address).await;
    second.expect_error_then_end(ErrorCode::Quota).await;
    assert_eq!(first.call(Request::Ping).await, Response::Pong);
    server.stop().await;
}

/// Goal: stopping the server answers every publish already read, says why it closes, and
/// leaves the confirmed messages durable. Method: pipeline 200 publishes, stop the server
/// right after the first confirm, read everything up to the end of the stream, then reopen the
/// data directory and count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_publishes_in_flight_then_closes() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    for index in 0..200 {
        client
            .send(&publish("durable", &[&format!("m{index}")]))
            .await;
    }
    let mut confirmed = 0;
    let (_, first) = client.receive().await.unwrap();
    assert!(matches!(first, Response::Published { .. }), "{first:?}");
    confirmed += 1;
    server.stop().await;
    let mut saw_shutting_down = false;
    while let Some((_, response)) = client.receive().await {
        match response {
            Response::Published { .. } => {
                assert!(!saw_shutting_down, "a confirm after the goodbye");
                confirmed += 1;
            }
            other => {
                assert_eq!(other.error_code(), Some(ErrorCode::ShuttingDown));
                saw_shutting_down = true;
            }
        }
    }
    assert!(saw_shutting_down);
    drop(server.broker);
    let broker = Broker::open(BrokerConfig::new(server.directory.path()))
        .await
        .unwrap();
    let end = broker.topic("durable").unwrap().partitions[0].end_offset;
    assert!(end >= confirmed, "{confirmed} confirmed, {end} stored");
    broker.shutdown().await;
}

/// Goal: a nack with requeue hands the message back for another delivery. Method: receive,
/// nack with requeue and no delay, receive the same message again with its count raised.
#[tokio::test]
async fn a_nack_with_requeue_redelivers() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    client.call(publish("retries", &["flaky"])).await;
    let subscription = subscribed(
        &mut client,
        subscribe("retries", "workers", SubscriptionMode::Queue, 1),
    )
    .await;
    let (_, messages) = client.delivery().await;
    let response = client
        .call(Request::Nack {
            subscription,
            ids: vec![messages[0].id()],
            requeue: true,
            delay_ms: 0,
            error: "downstream timed out".into(),
        })
        .await;
    assert_eq!(response, Response::Ok);
    let (_, again) = client.delivery().await;
    assert_eq!(again[0].offset, messages[0].offset);
    assert_eq!(again[0].delivery_count, 2);
    server.stop().await;
}

/// Goal: no frame a client can send takes the server down or wedges a connection. Method:
/// 300 connections, each greeted and then sent one frame with a random request kind and a
/// random payload (seeded, so a failure replays); each must be answered or closed, and the
/// server must still answer a ping at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_frames_are_answered_or_closed_and_the_server_survives() {
    let mut server = start().await;
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*: plenty for picking bytes, and no dependency.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for round in 0..300 {
        let mut client = Client::greeted(server.address).await;
        // Every request kind byte, assigned or not.
        let kind = (next() % 0x80) as u8;
        let length = (next() % 48) as usize;
        let payload: Vec<u8> = (0..length).map(|_| next() as u8).collect();
        let mut frame = BytesMut::new();
        Frame {
            kind,
            correlation_id: 5,
            payload: Bytes::from(payload.clone()),
        }
        .encode(&mut frame);
        client.send_raw(&frame).await;
        loop {
            match client.receive().await {
                None | Some((5, _)) => break,
                Some((0, _)) => {}
                Some(other) => panic!("round {round}: kind {kind:#x} {payload:?}: {other:?}"),
            }
        }
    }
    let mut client = Client::greeted(server.address).await;
    assert_eq!(client.call(Request::Ping).await, Response::Pong);
    server.stop().await;
}

/// Goal (issue 10, defect 19): a connection that never says hello is closed after the
/// handshake timeout, so silent sockets cannot hold every connection slot. Method: a limit of
/// 4 connections, 4 silent sockets; a fifth is refused `quota`, the silent ones are told
/// `handshake_required` and closed, and then a real client gets in.
#[tokio::test]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    let mut server = start_with(|config| {
        config.max_connections = 4;
        config.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(Client::connect(server.address).await);
    }
    let mut over = Client::connect(server.address).await;
    over.expect_error_then_end(ErrorCode::Quota).await;
    for client in &mut silent {
        client
            .expect_error_then_end(ErrorCode::HandshakeRequired)
            .await;
    }
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut client = Client::connect(server.address).await;
        let request = Request::Hello {
            min_version: 1,
            max_version: 1,
            client_name: "late".into(),
        };
        let correlation_id = client.send(&request).await;
        match client.receive().await {
            Some((answered, Response::HelloOk { .. })) => {
                assert_eq!(answered, correlation_id);
                break;
            }
            // The slots are given back as the closed connections' tasks end.
            other => assert!(Instant::now() < deadline, "still refused: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

/// Goal (issue 10, defect 19): a greeted connection with nothing to do is closed after the
/// idle timeout, but one holding a subscription is not, however long it waits for messages.
/// Method: an idle timeout of 300 ms; one idle connection and one subscriber, both silent for
/// a second; the idle one is told and closed, the subscriber still gets a message published
/// then.
#[tokio::test]
async fn idle_connections_are_closed_but_quiet_subscribers_are_not() {
    let mut server = start_with(|config| {
        config.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut idle = Client::greeted(server.address).await;
    let mut subscriber = Client::greeted(server.address).await;
    let subscription = subscribed(
        &mut subscriber,
        subscribe("quiet", "workers", SubscriptionMode::Queue, 10),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    idle.expect_error_then_end(ErrorCode::Quota).await;

    let mut publisher = Client::greeted(server.address).await;
    assert!(matches!(
        publisher.call(publish("quiet", &["late"])).await,
        Response::Published { .. }
    ));
    let (delivered_to, messages) = subscriber.delivery().await;
    assert_eq!(delivered_to, subscription);
    assert_eq!(&messages[0].value[..], b"late");
    server.stop().await;
}

/// Goal (issue 10, defect 21): a message whose delivery could not fit in a frame (each empty
/// header costs 2 bytes in a batch and 8 in a `Deliver` frame) neither wedges its
/// subscription nor reaches the client as an oversized frame: a queue subscription
/// dead-letters it, a stream subscription skips it, and the next message is delivered.
/// Method: an 8 KiB frame limit, a record with 1,024 empty headers (the most a message may
/// carry: a ~2 KB batch, a ~8.2 KB delivery) then a small one; the client refuses any frame
/// over the limit.
#[tokio::test]
async fn a_message_too_large_to_deliver_is_refused_and_the_next_one_delivered() {
    const LIMIT: usize = 8 * 1024;
    let mut server = start_with(|config| config.max_frame_bytes = LIMIT).await;
    let mut client = Client::greeted(server.address).await;
    client.max_frame_bytes = LIMIT;
    let headers = vec![("", &b""[..]); 1_024];
    let mut builder = BatchBuilder::new();
    builder.push(1_700_000_000_000, None, &headers, b"huge");
    let huge = builder.finish();
    assert!(
        huge.len() < LIMIT / 2,
        "the batch itself is small: {}",
        huge.len()
    );
    for request in [
        Request::Publish {
            topic: "headers".into(),
            partition: Some(0),
            batch: huge,
        },
        publish("headers", &["next"]),
    ] {
        assert!(
            matches!(client.call(request).await, Response::Published { .. }),
            "published"
        );
    }
    for mode in [SubscriptionMode::Queue, SubscriptionMode::Stream] {
        let group = format!("{mode:?}");
        let subscription = subscribed(&mut client, subscribe("headers", &group, mode, 10)).await;
        let (delivered_to, messages) = client.delivery().await;
        assert_eq!(delivered_to, subscription);
        let values: Vec<&[u8]> = messages.iter().map(|message| &message.value[..]).collect();
        assert_eq!(values, [&b"next"[..]], "{mode:?}");
        let ids = messages.iter().map(|message| message.id()).collect();
        assert_eq!(
            client.call(Request::Ack { subscription, ids }).await,
            Response::Ok
        );
        let partition = &server.broker.group("headers", &group).unwrap().partitions[0];
        assert_eq!(partition.in_flight, 0, "{mode:?}: nothing left in flight");
    }
    // Dead letters are stored by the broker's timer.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let dead = server.broker.dead_letter_queues();
        if dead.iter().map(|queue| queue.pending).sum::<u64>() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not dead-lettered: {dead:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}
