//! The native front end's routing, dead-letter, scheduling, idempotency, transaction and
//! statistics requests against an in-process broker, spoken byte for byte with `weir-proto`
//! over a real socket: each request's success and an error path, and the transaction
//! check-back push (a checker connection is asked about an overdue transaction, commits it,
//! and its messages become readable).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use weir_batch::BatchBuilder;
use weir_core::{Broker, BrokerConfig};
use weir_proto::{
    Binding, ClaimOutcome, Decision, Delivery, ErrorCode, ExchangeKind, Frame, FrameError,
    QueueSettings, Request, Response, ScheduleTime, ScheduledSelector, Start, SubscriptionMode,
};
use weir_server::{Server, ServerConfig};

const MAX_FRAME_BYTES: usize = 1 << 20;
const PATIENCE: Duration = Duration::from_secs(10);

/// A broker and a server on a free port, stopped by `stop`.
struct Running {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _directory: tempfile::TempDir,
}

async fn start_with(configure: impl FnOnce(&mut BrokerConfig)) -> Running {
    let directory = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(directory.path());
    configure(&mut config);
    let broker = Broker::open(config).await.unwrap();
    let server_config = ServerConfig {
        native_addr: "127.0.0.1:0".parse().unwrap(),
        max_frame_bytes: MAX_FRAME_BYTES,
        ..ServerConfig::default()
    };
    let server = Server::bind(broker, server_config).await.unwrap();
    let address = server.native_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    Running {
        address,
        stop: Some(stop),
        server,
        _directory: directory,
    }
}

async fn start() -> Running {
    start_with(|_| {}).await
}

impl Running {
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

/// A raw protocol client. Frames pushed with correlation id 0 (deliveries, check-backs) that
/// arrive while it waits for an answer are kept, in order, for [`Client::push`].
struct Client {
    stream: TcpStream,
    buffer: BytesMut,
    next_correlation_id: u64,
    pushed: VecDeque<Response>,
}

impl Client {
    async fn greeted(address: SocketAddr) -> Client {
        let mut client = Client {
            stream: TcpStream::connect(address).await.unwrap(),
            buffer: BytesMut::new(),
            next_correlation_id: 1,
            pushed: VecDeque::new(),
        };
        let response = client
            .call(Request::Hello {
                min_version: 1,
                max_version: 1,
                client_name: "native-features".into(),
            })
            .await;
        assert!(matches!(response, Response::HelloOk { .. }), "{response:?}");
        client
    }

    async fn receive(&mut self) -> (u64, Response) {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match Frame::parse(&mut self.buffer, MAX_FRAME_BYTES) {
                    Ok(frame) => {
                        let response = Response::decode(frame.kind, frame.payload).unwrap();
                        return (frame.correlation_id, response);
                    }
                    Err(FrameError::Incomplete { .. }) => {}
                    Err(error) => panic!("the server sent a bad frame: {error}"),
                }
                let read = self.stream.read_buf(&mut self.buffer).await.unwrap();
                assert!(read > 0, "the server closed the connection");
            }
        })
        .await
        .expect("a frame in time")
    }

    /// Sends a request and returns its answer; pushes arriving meanwhile are kept.
    async fn call(&mut self, request: Request) -> Response {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut wire = BytesMut::new();
        request.encode(correlation_id, &mut wire);
        self.stream.write_all(&wire).await.unwrap();
        loop {
            let (answered, response) = self.receive().await;
            if answered == correlation_id {
                return response;
            }
            assert_eq!(
                answered, 0,
                "an answer to a request not asked: {response:?}"
            );
            self.pushed.push_back(response);
        }
    }

    /// The next frame pushed with correlation id 0.
    async fn push(&mut self) -> Response {
        if let Some(pushed) = self.pushed.pop_front() {
            return pushed;
        }
        let (correlation_id, response) = self.receive().await;
        assert_eq!(correlation_id, 0, "an unasked answer: {response:?}");
        response
    }

    /// The next delivery push's messages.
    async fn delivery(&mut self) -> Vec<Delivery> {
        match self.push().await {
            Response::Deliver { messages, .. } => messages,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, request: Request) -> u32 {
        match self.call(request).await {
            Response::Subscribed { subscription } => subscription,
            other => panic!("expected Subscribed, got {other:?}"),
        }
    }

    /// Asserts that `request` is refused with `code`, and returns the message.
    async fn refused(&mut self, request: Request, code: ErrorCode) -> String {
        match self.call(request).await {
            Response::Error {
                code: answered,
                message,
            } if answered == code.code() => message,
            other => panic!("expected a {code} error, got {other:?}"),
        }
    }
}

fn batch_of(messages: &[(&str, &[(&str, &str)])]) -> Bytes {
    let mut builder = BatchBuilder::new();
    for (value, headers) in messages {
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(name, value)| (*name, value.as_bytes()))
            .collect();
        builder.push(1_700_000_000_000, None, &headers, value.as_bytes());
    }
    builder.finish()
}

fn batch(values: &[&str]) -> Bytes {
    let messages: Vec<(&str, &[(&str, &str)])> =
        values.iter().map(|value| (*value, &[][..])).collect();
    batch_of(&messages)
}

fn values(messages: &[Delivery]) -> Vec<String> {
    messages
        .iter()
        .map(|message| String::from_utf8(message.value.to_vec()).unwrap())
        .collect()
}

fn queue(topic: &str, group: &str, settings: QueueSettings) -> Request {
    Request::SubscribeWithSettings {
        topic: topic.into(),
        group: group.into(),
        mode: SubscriptionMode::Queue,
        start: Start::Earliest,
        prefetch: 10,
        ack_timeout_ms: None,
        settings,
    }
}

fn header<'message>(message: &'message Delivery, name: &str) -> Option<&'message str> {
    message
        .headers
        .iter()
        .find(|(header, _)| header == name)
        .map(|(_, value)| std::str::from_utf8(value).unwrap())
}

/// Messages stored in partition 0 of `topic`, from its description.
async fn stored(client: &mut Client, topic: &str) -> u64 {
    match client
        .call(Request::DescribeTopic { name: topic.into() })
        .await
    {
        Response::Topic(info) => info
            .partitions
            .iter()
            .map(|partition| partition.end_offset - partition.start_offset)
            .sum(),
        other => panic!("expected Topic, got {other:?}"),
    }
}

/// Asks `request` until `done` accepts the answer; dead letters and due messages are moved
/// by the broker's timer, not by the request that caused them.
async fn eventually(
    client: &mut Client,
    request: Request,
    done: impl Fn(&Response) -> bool,
) -> Response {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let response = client.call(request.clone()).await;
        if done(&response) {
            return response;
        }
        assert!(Instant::now() < deadline, "still {response:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Goal: exchanges are declared, bound, routed through and removed over the native protocol,
/// and their error paths carry the public codes. Method: the guide's order routing — a topic
/// exchange sending `order.vip.*` and `order.normal.*` to two topics.
#[tokio::test]
async fn exchanges_route_by_pattern_and_refuse_what_matches_nothing() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let created = client
        .call(Request::CreateExchange {
            name: "orders".into(),
            kind: ExchangeKind::Topic,
            alternate_topic: None,
        })
        .await;
    assert!(
        matches!(&created, Response::Exchange(info) if info.kind == ExchangeKind::Topic && info.bindings.is_empty()),
        "{created:?}"
    );
    for (topic, key) in [
        ("vip-orders", "order.vip.*"),
        ("normal-orders", "order.normal.*"),
    ] {
        let bound = client
            .call(Request::Bind {
                exchange: "orders".into(),
                binding: Binding {
                    topic: topic.into(),
                    key: key.into(),
                    headers: Vec::new(),
                    match_all: true,
                },
            })
            .await;
        assert!(matches!(bound, Response::Exchange(_)), "{bound:?}");
    }
    let Response::Exchanges(exchanges) = client.call(Request::ListExchanges).await else {
        panic!("expected Exchanges")
    };
    assert_eq!(exchanges.len(), 1);
    assert_eq!(exchanges[0].bindings.len(), 2);

    let routed = client
        .call(Request::PublishToExchange {
            exchange: "orders".into(),
            routing_key: "order.vip.created".into(),
            mandatory: true,
            batch: batch(&["vip order 1", "vip order 2"]),
        })
        .await;
    let Response::Routed { targets, dropped } = routed else {
        panic!("expected Routed, got {routed:?}")
    };
    assert_eq!(dropped, 0);
    assert_eq!(targets.len(), 1);
    assert_eq!(targets[0].topic, "vip-orders");
    assert_eq!(targets[0].partitions[0].base_offset, 0);
    assert_eq!(targets[0].partitions[0].last_offset, 1);
    assert_eq!(stored(&mut client, "vip-orders").await, 2);
    assert_eq!(stored(&mut client, "normal-orders").await, 0);

    // Nothing matches: refused when mandatory, dropped and counted otherwise.
    let unroutable = PublishToExchange::new("order.refund.created", true);
    client
        .refused(unroutable.request(), ErrorCode::Unroutable)
        .await;
    let dropped = client
        .call(PublishToExchange::new("order.refund.created", false).request())
        .await;
    assert_eq!(
        dropped,
        Response::Routed {
            targets: Vec::new(),
            dropped: 1
        }
    );

    // Unbinding the vip pattern makes vip orders unroutable too.
    let Response::Exchange(after) = client
        .call(Request::Unbind {
            exchange: "orders".into(),
            topic: "vip-orders".into(),
            key: None,
        })
        .await
    else {
        panic!("expected Exchange")
    };
    assert_eq!(after.bindings.len(), 1);
    client
        .refused(
            PublishToExchange::new("order.vip.created", true).request(),
            ErrorCode::Unroutable,
        )
        .await;

    // Declaring it again with other settings is refused; unknown exchanges are not found.
    client
        .refused(
            Request::CreateExchange {
                name: "orders".into(),
                kind: ExchangeKind::Fanout,
                alternate_topic: None,
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    assert_eq!(
        client
            .call(Request::DeleteExchange {
                name: "orders".into()
            })
            .await,
        Response::Ok
    );
    client
        .refused(
            Request::DeleteExchange {
                name: "orders".into(),
            },
            ErrorCode::NotFound,
        )
        .await;
    client
        .refused(
            Request::Bind {
                exchange: "orders".into(),
                binding: Binding {
                    topic: "vip-orders".into(),
                    key: "#".into(),
                    headers: Vec::new(),
                    match_all: true,
                },
            },
            ErrorCode::NotFound,
        )
        .await;
    client
        .refused(
            PublishToExchange::new("order.vip.created", false).request(),
            ErrorCode::NotFound,
        )
        .await;
    server.stop().await;
}

/// A publish of one message through the `orders` exchange.
struct PublishToExchange {
    routing_key: &'static str,
    mandatory: bool,
}

impl PublishToExchange {
    fn new(routing_key: &'static str, mandatory: bool) -> PublishToExchange {
        PublishToExchange {
            routing_key,
            mandatory,
        }
    }

    fn request(&self) -> Request {
        Request::PublishToExchange {
            exchange: "orders".into(),
            routing_key: self.routing_key.into(),
            mandatory: self.mandatory,
            batch: batch(&["an order"]),
        }
    }
}

/// Goal: a publish that reports duplicates says where the stored copy of a message published
/// again with its id is, instead of storing it twice. Method: the same `weir.id` twice.
#[tokio::test]
async fn a_message_published_again_with_its_id_is_reported_as_a_duplicate() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let publish = |value: &'static str| Request::PublishReportingDuplicates {
        topic: "payments".into(),
        partition: None,
        batch: batch_of(&[(value, &[("weir.id", "payment-7")])]),
    };
    let first = client.call(publish("charge 7")).await;
    let Response::PublishedWithDuplicates {
        partitions,
        duplicates,
        ..
    } = first
    else {
        panic!("expected PublishedWithDuplicates, got {first:?}")
    };
    assert_eq!((partitions.len(), duplicates.len()), (1, 0));
    let again = client.call(publish("charge 7, retried")).await;
    let Response::PublishedWithDuplicates {
        partitions,
        duplicates,
        ..
    } = again
    else {
        panic!("expected PublishedWithDuplicates, got {again:?}")
    };
    assert!(
        partitions.is_empty(),
        "nothing stored again: {partitions:?}"
    );
    assert_eq!(duplicates.len(), 1);
    assert_eq!((duplicates[0].partition, duplicates[0].offset), (0, 0));
    assert_eq!(stored(&mut client, "payments").await, 1);
    // A plain publish keeps its plain confirm.
    let plain = client
        .call(Request::Publish {
            topic: "payments".into(),
            partition: None,
            batch: batch(&["charge 8"]),
        })
        .await;
    assert!(matches!(plain, Response::Published { .. }), "{plain:?}");
    client
        .refused(
            Request::PublishReportingDuplicates {
                topic: "not a valid name!".into(),
                partition: None,
                batch: batch(&["x"]),
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    server.stop().await;
}

/// Goal: a rejected message is dead-lettered with the consumer's error, can be listed,
/// browsed, redriven to its topic and consumed again, and a DLQ can be purged. Method: a queue
/// subscription with settings, `Nack` without requeue carrying an error text.
#[tokio::test]
async fn dead_letters_are_listed_browsed_redriven_and_purged() {
    let mut server = start().await;
    let mut consumer = Client::greeted(server.address).await;
    let mut admin = Client::greeted(server.address).await;
    let settings = QueueSettings {
        max_deliveries: Some(3),
        ..QueueSettings::default()
    };
    let subscription = consumer.subscribe(queue("jobs", "workers", settings)).await;
    admin
        .call(Request::Publish {
            topic: "jobs".into(),
            partition: None,
            batch: batch(&["poison"]),
        })
        .await;
    let delivered = consumer.delivery().await;
    let nacked = consumer
        .call(Request::Nack {
            subscription,
            ids: vec![delivered[0].id()],
            requeue: false,
            delay_ms: 0,
            error: "cannot parse the job".into(),
        })
        .await;
    assert_eq!(nacked, Response::Ok);

    let queues = eventually(&mut admin, Request::ListDeadLetterQueues, |response| {
        matches!(response, Response::DeadLetterQueues(queues) if queues.iter().any(|queue| queue.pending == 1))
    })
    .await;
    let Response::DeadLetterQueues(queues) = queues else {
        unreachable!()
    };
    assert_eq!(queues[0].topic, "jobs.workers.dlq");

    let browse = Request::ListDeadLetters {
        topic: "jobs.workers.dlq".into(),
        max: 10,
    };
    let Response::DeadLetters(letters) = admin.call(browse.clone()).await else {
        panic!("expected DeadLetters")
    };
    assert_eq!(values(&letters), ["poison"]);
    assert_eq!(header(&letters[0], "weir.dlq.reason"), Some("rejected"));
    assert_eq!(
        header(&letters[0], "weir.dlq.error"),
        Some("cannot parse the job")
    );
    assert_eq!(header(&letters[0], "weir.dlq.topic"), Some("jobs"));

    let redriven = admin
        .call(Request::Redrive {
            topic: "jobs.workers.dlq".into(),
            target: None,
            ids: Some(vec![letters[0].id()]),
            max: 10,
        })
        .await;
    assert_eq!(redriven, Response::Count { count: 1 });
    let again = consumer.delivery().await;
    assert_eq!(values(&again), ["poison"]);
    assert_eq!(
        header(&again[0], "weir.dlq.reason"),
        None,
        "redriven without its dead-letter headers"
    );
    assert_eq!(
        admin.call(browse.clone()).await,
        Response::DeadLetters(Vec::new())
    );

    // Rejected once more, then purged.
    consumer
        .call(Request::Nack {
            subscription,
            ids: vec![again[0].id()],
            requeue: false,
            delay_ms: 0,
            error: String::new(),
        })
        .await;
    eventually(
        &mut admin,
        browse.clone(),
        |response| matches!(response, Response::DeadLetters(letters) if letters.len() == 1),
    )
    .await;
    let purged = admin
        .call(Request::PurgeDeadLetters {
            topic: "jobs.workers.dlq".into(),
        })
        .await;
    assert_eq!(purged, Response::Count { count: 1 });
    assert_eq!(admin.call(browse).await, Response::DeadLetters(Vec::new()));

    // Error paths: a listing size out of bounds; a topic that is no dead-letter topic.
    admin
        .refused(
            Request::ListDeadLetters {
                topic: "jobs.workers.dlq".into(),
                max: 0,
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    admin
        .refused(
            Request::Redrive {
                topic: "jobs.workers.dlq".into(),
                target: None,
                ids: None,
                max: 1001,
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    admin
        .refused(
            Request::PurgeDeadLetters {
                topic: "jobs".into(),
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    server.stop().await;
}

/// Goal: dead letters that would not fit in one frame are answered in part, never as an
/// oversized frame. Method: five dead letters of 300 KiB under a 1 MiB frame limit.
#[tokio::test]
async fn a_browse_of_large_dead_letters_fits_in_one_frame() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let subscription = client
        .subscribe(queue("uploads", "scanners", QueueSettings::default()))
        .await;
    let large = "x".repeat(300 * 1024);
    for _ in 0..5 {
        client
            .call(Request::Publish {
                topic: "uploads".into(),
                partition: None,
                batch: batch(&[&large]),
            })
            .await;
    }
    let mut rejected = 0;
    while rejected < 5 {
        let messages = client.delivery().await;
        let ids = messages.iter().map(Delivery::id).collect();
        rejected += messages.len();
        client
            .call(Request::Nack {
                subscription,
                ids,
                requeue: false,
                delay_ms: 0,
                error: "infected".into(),
            })
            .await;
    }
    let browse = Request::ListDeadLetters {
        topic: "uploads.scanners.dlq".into(),
        max: 5,
    };
    eventually(&mut client, Request::ListDeadLetterQueues, |response| {
        matches!(response, Response::DeadLetterQueues(queues) if queues.iter().any(|queue| queue.pending == 5))
    })
    .await;
    let Response::DeadLetters(letters) = client.call(browse).await else {
        panic!("expected DeadLetters")
    };
    assert_eq!(
        letters.len(),
        3,
        "three of 300 KiB fit in 1 MiB, four do not"
    );
    server.stop().await;
}

/// Goal: the queue settings of `SubscribeWithSettings` reach the broker, and a consumer's
/// `Release` hands a message back without counting a failure. Method: a backlog limit that
/// refuses the second publish; a released message comes back with the same delivery count.
#[tokio::test]
async fn queue_settings_apply_and_a_release_is_not_a_failure() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let settings = QueueSettings {
        max_backlog: Some(1),
        ..QueueSettings::default()
    };
    let subscription = client.subscribe(queue("tickets", "agents", settings)).await;
    let publish = || Request::Publish {
        topic: "tickets".into(),
        partition: None,
        batch: batch(&["ticket"]),
    };
    assert!(matches!(
        client.call(publish()).await,
        Response::Published { .. }
    ));
    client.refused(publish(), ErrorCode::BacklogFull).await;

    let first = client.delivery().await;
    assert_eq!(first[0].delivery_count, 1);
    let released = client
        .call(Request::Release {
            subscription,
            ids: vec![first[0].id()],
        })
        .await;
    assert_eq!(released, Response::Ok);
    let again = client.delivery().await;
    assert_eq!(again[0].offset, first[0].offset);
    assert_eq!(
        again[0].delivery_count, 1,
        "a release is not a failed delivery"
    );
    client
        .refused(
            Request::Release {
                subscription: subscription + 100,
                ids: vec![first[0].id()],
            },
            ErrorCode::NoSuchSubscription,
        )
        .await;
    // Joining the queue group as a stream is refused.
    client
        .refused(
            Request::SubscribeWithSettings {
                topic: "tickets".into(),
                group: "agents".into(),
                mode: SubscriptionMode::Stream,
                start: Start::Earliest,
                prefetch: 1,
                ack_timeout_ms: None,
                settings: QueueSettings::default(),
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    server.stop().await;
}

/// Goal: a delayed batch is stored, listed, shown, rescheduled and cancelled by its business
/// key (the guide's order auto-cancel), and one falling due is delivered. Method: one batch a
/// minute out, handled by every schedule request; one batch 50 ms out, consumed.
#[tokio::test]
async fn delayed_messages_are_listed_shown_rescheduled_cancelled_and_delivered() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let scheduled = client
        .call(Request::PublishDelayed {
            topic: "order-timeouts".into(),
            partition: None,
            when: ScheduleTime::DelayMs(60_000),
            business_key: Some("order-1".into()),
            batch: batch(&["cancel order 1 unless paid"]),
        })
        .await;
    let Response::Scheduled { id, deliver_at_ms } = scheduled else {
        panic!("expected Scheduled, got {scheduled:?}")
    };
    let Response::ScheduledList(listed) = client
        .call(Request::ListScheduled {
            topic: Some("order-timeouts".into()),
            after: None,
            limit: 10,
        })
        .await
    else {
        panic!("expected ScheduledList")
    };
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id, listed[0].deliver_at_ms), (id, deliver_at_ms));
    assert_eq!(listed[0].business_key.as_deref(), Some("order-1"));
    assert_eq!(listed[0].message_count, 1);

    let shown = client.call(Request::ShowScheduled { id }).await;
    let Response::ScheduledMessage { info, messages } = shown else {
        panic!("expected ScheduledMessage, got {shown:?}")
    };
    assert_eq!(info.id, id);
    assert_eq!(&messages[0].value[..], b"cancel order 1 unless paid");

    let moved = client
        .call(Request::Reschedule {
            id,
            when: ScheduleTime::DelayMs(120_000),
        })
        .await;
    let Response::Scheduled {
        deliver_at_ms: later,
        ..
    } = moved
    else {
        panic!("expected Scheduled, got {moved:?}")
    };
    assert!(later > deliver_at_ms, "{later} > {deliver_at_ms}");

    // The order was paid: cancel its timeout by the order number.
    let cancelled = client
        .call(Request::CancelScheduled {
            selector: ScheduledSelector::BusinessKey("order-1".into()),
        })
        .await;
    assert!(
        matches!(&cancelled, Response::ScheduledList(entries) if entries.len() == 1 && entries[0].id == id),
        "{cancelled:?}"
    );
    client
        .refused(Request::ShowScheduled { id }, ErrorCode::NotFound)
        .await;
    client
        .refused(
            Request::CancelScheduled {
                selector: ScheduledSelector::Id(id),
            },
            ErrorCode::NotFound,
        )
        .await;

    // Due soon: delivered once due, and not before.
    let soon = client
        .call(Request::PublishDelayed {
            topic: "reminders".into(),
            partition: None,
            when: ScheduleTime::DelayMs(50),
            business_key: None,
            batch: batch(&["reminder"]),
        })
        .await;
    assert!(matches!(soon, Response::Scheduled { .. }), "{soon:?}");
    client
        .subscribe(queue("reminders", "mailer", QueueSettings::default()))
        .await;
    assert_eq!(values(&client.delivery().await), ["reminder"]);

    // Error paths: too far ahead; a listing size out of bounds.
    let a_year_and_more = ScheduleTime::DelayMs(400 * 24 * 3600 * 1000);
    client
        .refused(
            Request::PublishDelayed {
                topic: "reminders".into(),
                partition: None,
                when: a_year_and_more,
                business_key: None,
                batch: batch(&["too late"]),
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    client
        .refused(
            Request::ListScheduled {
                topic: None,
                after: None,
                limit: 0,
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    client
        .refused(
            Request::Reschedule {
                id: 999_999,
                when: ScheduleTime::AtMs(0),
            },
            ErrorCode::NotFound,
        )
        .await;
    server.stop().await;
}

/// Goal: idempotency keys run a handler once per business key across consumers. Method: the
/// guide's `SET processed:{id} NX EX 3600` sequence, with two holders.
#[tokio::test]
async fn idempotency_keys_are_claimed_completed_and_released() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let claim = |holder: &str| Request::ClaimKey {
        key: "order-42".into(),
        holder: holder.into(),
        ttl_ms: 3_600_000,
    };
    assert!(matches!(
        client.call(claim("worker-a")).await,
        Response::Claimed(ClaimOutcome::Acquired { .. })
    ));
    let busy = client.call(claim("worker-b")).await;
    assert!(
        matches!(&busy, Response::Claimed(ClaimOutcome::Busy { holder, .. }) if holder == "worker-a"),
        "{busy:?}"
    );
    // Only the holder may complete it.
    client
        .refused(
            Request::CompleteKey {
                key: "order-42".into(),
                holder: "worker-b".into(),
                ttl_ms: 3_600_000,
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    let completed = client
        .call(Request::CompleteKey {
            key: "order-42".into(),
            holder: "worker-a".into(),
            ttl_ms: 3_600_000,
        })
        .await;
    assert_eq!(completed, Response::Ok);
    assert!(matches!(
        client.call(claim("worker-b")).await,
        Response::Claimed(ClaimOutcome::Completed { .. })
    ));

    // A released claim is free at once.
    let other = |holder: &str| Request::ClaimKey {
        key: "order-43".into(),
        holder: holder.into(),
        ttl_ms: 60_000,
    };
    client.call(other("worker-a")).await;
    let released = client
        .call(Request::ReleaseKey {
            key: "order-43".into(),
            holder: "worker-a".into(),
        })
        .await;
    assert_eq!(released, Response::Ok);
    assert!(matches!(
        client.call(other("worker-b")).await,
        Response::Claimed(ClaimOutcome::Acquired { .. })
    ));
    client
        .refused(
            Request::ClaimKey {
                key: String::new(),
                holder: "worker-a".into(),
                ttl_ms: 1,
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    server.stop().await;
}

/// Goal: half messages stay invisible until commit, then appear in every topic at once; a
/// rollback discards them. Method: a transaction over two topics, committed; another rolled
/// back; the error paths of deciding an unknown transaction.
#[tokio::test]
async fn a_transaction_commits_across_topics_and_a_rollback_discards() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    let begin = Request::BeginTransaction {
        producer_group: "checkout".into(),
        timeout_ms: None,
    };
    let Response::TransactionBegun { transaction } = client.call(begin.clone()).await else {
        panic!("expected TransactionBegun")
    };
    for (topic, value) in [("orders", "order 9 placed"), ("stock", "reserve item 3")] {
        let sent = client
            .call(Request::SendHalf {
                transaction,
                topic: topic.into(),
                partition: None,
                batch: batch(&[value]),
            })
            .await;
        assert_eq!(sent, Response::Ok);
    }
    let Response::Transactions(open) = client.call(Request::ListTransactions).await else {
        panic!("expected Transactions")
    };
    assert_eq!(open.len(), 1);
    assert_eq!((open[0].id, open[0].parts), (transaction, 2));
    assert_eq!(open[0].producer_group, "checkout");
    assert_eq!(
        stored(&mut client, "orders").await,
        0,
        "invisible until commit"
    );

    let committed = client
        .call(Request::CommitTransaction { transaction })
        .await;
    let Response::TransactionCommitted { targets } = committed else {
        panic!("expected TransactionCommitted, got {committed:?}")
    };
    let mut topics: Vec<&str> = targets.iter().map(|target| target.topic.as_str()).collect();
    topics.sort_unstable();
    assert_eq!(topics, ["orders", "stock"]);
    assert_eq!(stored(&mut client, "orders").await, 1);
    assert_eq!(stored(&mut client, "stock").await, 1);

    let Response::TransactionBegun {
        transaction: abandoned,
    } = client.call(begin).await
    else {
        panic!("expected TransactionBegun")
    };
    client
        .call(Request::SendHalf {
            transaction: abandoned,
            topic: "orders".into(),
            partition: None,
            batch: batch(&["order 10 placed"]),
        })
        .await;
    assert_eq!(
        client
            .call(Request::RollbackTransaction {
                transaction: abandoned
            })
            .await,
        Response::Ok
    );
    assert_eq!(stored(&mut client, "orders").await, 1);
    assert_eq!(
        client.call(Request::ListTransactions).await,
        Response::Transactions(Vec::new())
    );
    // Decided transactions are gone: deciding or extending them again is refused.
    client
        .refused(
            Request::CommitTransaction { transaction },
            ErrorCode::NotFound,
        )
        .await;
    client
        .refused(
            Request::SendHalf {
                transaction: abandoned,
                topic: "orders".into(),
                partition: None,
                batch: batch(&["late"]),
            },
            ErrorCode::NotFound,
        )
        .await;
    client
        .refused(
            Request::BeginTransaction {
                producer_group: String::new(),
                timeout_ms: None,
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    server.stop().await;
}

/// Goal: the check-back reaches a live producer of the group as a push, and its answer
/// commits the transaction. Method: a producer begins a transaction and never decides it; a
/// checker connection of the same group is asked once the (short) timeout passes, answers
/// commit, and the messages become readable by a subscriber.
#[tokio::test]
async fn an_overdue_transaction_is_checked_back_and_committed_by_the_answer() {
    let mut server = start_with(|config| {
        config.transactions.timeout_ms = 200;
        config.transactions.check_interval_ms = 200;
    })
    .await;
    let mut checker = Client::greeted(server.address).await;
    for _ in 0..2 {
        // Registering the group again on the same connection is accepted and changes nothing.
        let registered = checker
            .call(Request::RegisterTransactionChecker {
                producer_group: "payments".into(),
            })
            .await;
        assert_eq!(registered, Response::Ok);
    }

    // The producer that began it "crashes" after sending its half message.
    let mut producer = Client::greeted(server.address).await;
    let Response::TransactionBegun { transaction } = producer
        .call(Request::BeginTransaction {
            producer_group: "payments".into(),
            timeout_ms: None,
        })
        .await
    else {
        panic!("expected TransactionBegun")
    };
    producer
        .call(Request::SendHalf {
            transaction,
            topic: "ledger".into(),
            partition: None,
            batch: batch(&["debit 10", "credit 10"]),
        })
        .await;
    drop(producer);

    let check = checker.push().await;
    assert_eq!(
        check,
        Response::CheckTransaction {
            transaction,
            producer_group: "payments".into(),
        }
    );
    let resolved = checker
        .call(Request::ResolveTransaction {
            transaction,
            decision: Decision::Commit,
        })
        .await;
    assert_eq!(resolved, Response::Ok);

    let mut reader = Client::greeted(server.address).await;
    reader
        .subscribe(queue("ledger", "auditors", QueueSettings::default()))
        .await;
    let mut seen = values(&reader.delivery().await);
    while seen.len() < 2 {
        seen.extend(values(&reader.delivery().await));
    }
    assert_eq!(seen, ["debit 10", "credit 10"]);
    assert!(
        checker.pushed.is_empty(),
        "asked once: {:?}",
        checker.pushed
    );

    // Resolving it again finds nothing to decide.
    checker
        .refused(
            Request::ResolveTransaction {
                transaction,
                decision: Decision::Rollback,
            },
            ErrorCode::NotFound,
        )
        .await;
    server.stop().await;
}

/// Goal: `Stats` reports topics and subscriptions with their counters, so `weir stats` and
/// `weir top` can use the native protocol. Method: publish, consume and ack, then read the
/// numbers back.
#[tokio::test]
async fn stats_report_topics_and_subscriptions() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    client
        .call(Request::Publish {
            topic: "metrics".into(),
            partition: None,
            batch: batch(&["a", "b", "c"]),
        })
        .await;
    let subscription = client
        .subscribe(queue("metrics", "dashboards", QueueSettings::default()))
        .await;
    let mut delivered = Vec::new();
    while delivered.len() < 3 {
        delivered.extend(client.delivery().await);
    }
    let acked = client
        .call(Request::Ack {
            subscription,
            ids: delivered[..2].iter().map(Delivery::id).collect(),
        })
        .await;
    assert_eq!(acked, Response::Ok);
    let Response::Stats(stats) = client.call(Request::Stats).await else {
        panic!("expected Stats")
    };
    let topic = stats
        .topics
        .iter()
        .find(|topic| topic.name == "metrics")
        .expect("the topic is in the stats");
    assert_eq!(topic.partitions[0].end_offset, 3);
    assert_eq!(topic.partitions[0].published_messages, 3);
    let group = stats
        .subscriptions
        .iter()
        .find(|subscription| subscription.group == "dashboards")
        .expect("the subscription is in the stats");
    assert_eq!(group.mode, SubscriptionMode::Queue);
    assert_eq!(group.counters.delivered, 3);
    assert_eq!(group.counters.acked, 2);
    assert_eq!(group.in_flight, 1);
    assert_eq!(group.backlog, 1);
    assert_eq!(group.consumers.len(), 1);
    assert_eq!(group.success_rate_ppm, Some(1_000_000));
    assert_eq!(group.latency.count, 2);
    assert!(stats.now_ms > 0);
    server.stop().await;
}

/// Goal: a group can be deleted (a CLI reader without a group cleans up after itself), and
/// topic sizes are reported. Method: create, describe, delete, describe again.
#[tokio::test]
async fn a_group_is_deleted_and_topic_sizes_are_reported() {
    let mut server = start().await;
    let mut client = Client::greeted(server.address).await;
    client
        .call(Request::Publish {
            topic: "events".into(),
            partition: None,
            batch: batch(&["a"]),
        })
        .await;
    client
        .subscribe(queue("events", "temporary", QueueSettings::default()))
        .await;
    let Response::Topic(topic) = client
        .call(Request::DescribeTopic {
            name: "events".into(),
        })
        .await
    else {
        panic!("expected Topic")
    };
    assert!(topic.partitions[0].size_bytes > 0, "{topic:?}");
    let deleted = client
        .call(Request::DeleteGroup {
            topic: "events".into(),
            group: "temporary".into(),
        })
        .await;
    assert_eq!(deleted, Response::Ok);
    client
        .refused(
            Request::DescribeGroup {
                topic: "events".into(),
                group: "temporary".into(),
            },
            ErrorCode::NoSuchSubscription,
        )
        .await;
    server.stop().await;
}

/// Goal: the new requests, like the old, are refused before the handshake.
#[tokio::test]
async fn the_new_requests_need_the_handshake_too() {
    let mut server = start().await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    let mut wire = BytesMut::new();
    Request::Stats.encode(1, &mut wire);
    stream.write_all(&wire).await.unwrap();
    let mut buffer = BytesMut::new();
    let frame = tokio::time::timeout(PATIENCE, async {
        loop {
            match Frame::parse(&mut buffer, MAX_FRAME_BYTES) {
                Ok(frame) => return frame,
                Err(FrameError::Incomplete { .. }) => {
                    assert!(stream.read_buf(&mut buffer).await.unwrap() > 0);
                }
                Err(error) => panic!("{error}"),
            }
        }
    })
    .await
    .unwrap();
    let response = Response::decode(frame.kind, frame.payload).unwrap();
    assert_eq!(response.error_code(), Some(ErrorCode::HandshakeRequired));
    server.stop().await;
}
