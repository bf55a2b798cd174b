//! The client against a real broker and native server, started in this process on a free
//! port with a temporary data directory: publishing with confirms, queue and stream
//! consuming, nack and requeue, admin calls, and resuming after the server restarts.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_client::{
    BatchBuilder, Client, ClientOptions, Durability, ErrorCode, Fsync, Message, ProducerOptions,
    Start, SubscribeOptions, SubscriptionMode, TopicOptions,
};
use weir_core::{Broker, BrokerConfig};
use weir_server::{Server, ServerConfig};

/// Generous bound on any wait in these tests: they normally take milliseconds, and a hang
/// should fail with a message instead of blocking the suite.
const PATIENCE: Duration = Duration::from_secs(20);

/// A broker and native server running in this process.
struct TestServer {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    /// Opens a broker on `data_dir` and serves it at `address` (port 0 for any free port).
    async fn start(data_dir: &Path, address: SocketAddr) -> TestServer {
        init_tracing();
        let broker = Broker::open(BrokerConfig::new(data_dir))
            .await
            .expect("the broker opens");
        let config = ServerConfig {
            native_addr: address,
            max_connections: 1024,
            max_frame_bytes: 16 << 20,
            // Other listeners stay off unless a test asks for them.
            ..ServerConfig::default()
        };
        let server = Server::bind(broker, config)
            .await
            .expect("the server binds");
        let address = server.native_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            address,
            stop: Some(stop),
            task,
        }
    }

    /// Shuts the server down gracefully and waits until its broker has stopped.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(PATIENCE, &mut self.task)
            .await
            .expect("the server stops in time")
            .expect("the server task did not panic")
            .expect("the server stopped cleanly");
    }
}

/// Logs to the test's output, filtered by `RUST_LOG` (e.g. `RUST_LOG=weir_client=debug`).
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

async fn connect(server: &TestServer) -> Client {
    Client::connect(&server.address.to_string())
        .await
        .expect("the client connects")
}

/// Fast, still-correct settings for tests that do not test durability.
fn os_topic(partitions: u32) -> TopicOptions {
    TopicOptions {
        partitions,
        fsync: Fsync::Os,
        ..TopicOptions::default()
    }
}

async fn within<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("finished in time")
}

/// Goal: 10,000 messages published through the batching producer are each confirmed with a
/// distinct position, and a queue subscription delivers every one of them. Method: keyed
/// messages over three partitions with `fsync = always` (group commit), every confirm
/// awaited, then consume and ack until all values are seen; the group's backlog ends at 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_confirmed_messages_are_consumed_from_a_queue() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = connect(&server).await;
    client
        .create_topic(
            "signups",
            TopicOptions {
                partitions: 3,
                ..TopicOptions::default()
            },
        )
        .await
        .unwrap();
    let producer = client.producer(ProducerOptions::default());
    let total = 10_000;
    let mut confirms = Vec::with_capacity(total);
    for index in 0..total {
        let message = Message::new(format!("user-{index}"))
            .with_key(format!("key-{}", index % 97))
            .with_header("type", "signup");
        confirms.push(producer.send("signups", message).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut positions = BTreeSet::new();
    for (index, confirm) in confirms.into_iter().enumerate() {
        let confirm = within(confirm).await.unwrap();
        assert_eq!(confirm.durability, Durability::Fsynced);
        let key = format!("key-{}", index % 97);
        assert_eq!(
            confirm.partition,
            weir_core::partition_for_key(key.as_bytes(), 3),
            "the client routes keys as the broker does"
        );
        assert!(positions.insert((confirm.partition, confirm.offset)));
    }
    let topic = client.topic("signups").await.unwrap();
    let stored: u64 = topic
        .partitions
        .iter()
        .map(|partition| partition.end_offset - partition.start_offset)
        .sum();
    assert_eq!(stored, total as u64);

    let mut consumer = client
        .subscribe(
            "signups",
            "welcome-email",
            SubscribeOptions {
                prefetch: 500,
                ..SubscribeOptions::queue()
            },
        )
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < total {
        let delivery = within(consumer.next()).await.unwrap();
        assert_eq!(delivery.headers[0].0, "type");
        seen.insert(delivery.value.clone());
        consumer.ack_one(&delivery).await.unwrap();
    }
    consumer.flush_acks().await.unwrap();
    assert_eq!(seen.len(), total);
    let group = client.group("signups", "welcome-email").await.unwrap();
    assert_eq!(group.mode, SubscriptionMode::Queue);
    assert_eq!(group.backlog, 0, "{group:?}");
    consumer.close().await.unwrap();
    server.stop().await;
}

/// Goal: a stream subscription replays a topic from the earliest message, in order, and a
/// reset replays it again. Method: 100 messages in one partition, read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_subscription_replays_from_the_earliest_message() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = connect(&server).await;
    client.create_topic("events", os_topic(1)).await.unwrap();
    let producer = client.producer(ProducerOptions::default());
    for index in 0..100u32 {
        // Fire and forget: the flush below reports any failure.
        producer
            .send("events", Message::new(index.to_string()))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();

    let mut consumer = client
        .subscribe("events", "audit", SubscribeOptions::stream(Start::Earliest))
        .await
        .unwrap();
    for expected in 0..100u64 {
        let delivery = within(consumer.next()).await.unwrap();
        assert_eq!(delivery.offset, expected);
        assert_eq!(delivery.value, Bytes::from(expected.to_string()));
        consumer.ack_one(&delivery).await.unwrap();
    }
    consumer.flush_acks().await.unwrap();

    client
        .reset_group("events", "audit", Start::Earliest)
        .await
        .unwrap();
    let mut replayed = Vec::new();
    while replayed.len() < 100 {
        for delivery in within(consumer.next_batch()).await.unwrap() {
            replayed.push(delivery.offset);
        }
    }
    assert_eq!(replayed, (0..100).collect::<Vec<u64>>());
    server.stop().await;
}

/// Goal: a nacked message with requeue comes back with a higher delivery count, and once
/// acked it does not. Method: one message, nack, receive again, ack, publish a marker that
/// must be the next delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_message_is_delivered_again() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = connect(&server).await;
    client.create_topic("orders", os_topic(1)).await.unwrap();
    let producer = client.producer(ProducerOptions::default());
    producer
        .send_confirmed("orders", Message::new("order-1"))
        .await
        .unwrap();
    let mut consumer = client
        .subscribe("orders", "notifications", SubscribeOptions::queue())
        .await
        .unwrap();
    let first = within(consumer.next()).await.unwrap();
    assert_eq!((first.offset, first.delivery_count), (0, 1));
    consumer
        .nack_one(&first, true, Duration::ZERO, "smtp timeout")
        .await
        .unwrap();
    let again = within(consumer.next()).await.unwrap();
    assert_eq!((again.offset, again.delivery_count), (0, 2));
    assert_eq!(again.value, first.value);
    consumer.ack_one(&again).await.unwrap();
    consumer.flush_acks().await.unwrap();
    producer
        .send_confirmed("orders", Message::new("order-2"))
        .await
        .unwrap();
    let next = within(consumer.next()).await.unwrap();
    assert_eq!((next.offset, next.delivery_count), (1, 1));
    server.stop().await;
}

/// Goal: the reporting ack and nack say per id what happened over the native protocol
/// (issue 10, defect 8): settled, settled before, or never delivered; the plain ack still
/// answers as before. Method: two messages published, one delivered (prefetch 1); ack it
/// with an id never delivered, then ack it again, then nack both; a plain ack of the unknown
/// id is still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reporting_acks_and_nacks_say_per_id_what_happened() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = connect(&server).await;
    client.create_topic("orders", os_topic(1)).await.unwrap();
    let producer = client.producer(ProducerOptions::default());
    for value in ["order-1", "order-2"] {
        producer
            .send_confirmed("orders", Message::new(value))
            .await
            .unwrap();
    }
    let options = SubscribeOptions {
        prefetch: 1,
        ..SubscribeOptions::queue()
    };
    let mut consumer = client
        .subscribe("orders", "billing", options)
        .await
        .unwrap();
    let first = within(consumer.next()).await.unwrap();
    assert_eq!(first.offset, 0);
    let never_delivered = weir_client::MessageId {
        partition: 0,
        offset: 7,
    };
    let report = within(consumer.ack_reporting(&[first.id(), never_delivered]))
        .await
        .unwrap();
    assert_eq!(report.settled, 1);
    assert!(report.already_settled.is_empty());
    assert_eq!(report.unknown, vec![never_delivered]);

    let again = within(consumer.ack_reporting(&[first.id()])).await.unwrap();
    assert_eq!(
        (again.settled, again.already_settled),
        (0, vec![first.id()])
    );

    let second = within(consumer.next()).await.unwrap();
    assert_eq!(second.offset, 1);
    let nacked = within(consumer.nack_reporting(
        &[second.id(), first.id(), never_delivered],
        true,
        Duration::ZERO,
        "",
    ))
    .await
    .unwrap();
    assert_eq!(nacked.settled, 1);
    assert_eq!(nacked.already_settled, vec![first.id()]);
    assert_eq!(nacked.unknown, vec![never_delivered]);

    // The plain kinds answer as they always did: no report, no error.
    consumer.ack(&[never_delivered]).await.unwrap();
    consumer.flush_acks().await.unwrap();
    server.stop().await;
}

/// Goal: admin calls do what they say and server errors carry their public code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_round_trip_and_errors_carry_their_code() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = connect(&server).await;
    client.ping().await.unwrap();
    let created = client
        .create_topic(
            "payments",
            TopicOptions {
                partitions: 2,
                fsync: Fsync::Os,
                retention: Some(Duration::from_secs(3600)),
                ..TopicOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.partitions.len(), 2);
    assert_eq!(created.retention_ms, Some(3_600_000));
    let duplicate = client
        .create_topic("payments", TopicOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        duplicate.code(),
        Some(ErrorCode::TopicExists),
        "{duplicate}"
    );
    let names: Vec<String> = client
        .topics()
        .await
        .unwrap()
        .into_iter()
        .map(|topic| topic.name)
        .collect();
    assert_eq!(names, ["payments"]);
    assert_eq!(client.topic("payments").await.unwrap().fsync, Fsync::Os);

    let consumer = client
        .subscribe("payments", "ledger", SubscribeOptions::queue())
        .await
        .unwrap();
    let groups = client.groups(Some("payments")).await.unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0].group, "ledger");
    assert_eq!(client.groups(None).await.unwrap().len(), 1);
    let group = client.group("payments", "ledger").await.unwrap();
    assert_eq!(group.consumers, 1);
    client
        .reset_group("payments", "ledger", Start::Latest)
        .await
        .unwrap();
    let missing = client.group("payments", "nobody").await.unwrap_err();
    assert_eq!(
        missing.code(),
        Some(ErrorCode::NoSuchSubscription),
        "{missing}"
    );
    consumer.close().await.unwrap();

    client.delete_topic("payments").await.unwrap();
    let gone = client.topic("payments").await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::UnknownTopic), "{gone}");
    server.stop().await;
}

/// Goal: the raw publish of a hand-built batch reports where it went; the broker's routing of
/// an unpinned batch by key matches the client's partitioner. Method: a batch of keyed
/// records to a 4-partition topic, then a stream read of each partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_batch_is_routed_by_key_as_the_client_predicts() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = connect(&server).await;
    client.create_topic("clicks", os_topic(4)).await.unwrap();
    let mut builder = BatchBuilder::new();
    let keys: Vec<String> = (0..40).map(|index| format!("session-{index}")).collect();
    for key in &keys {
        builder.push(1_700_000_000_000, Some(key.as_bytes()), &[], key.as_bytes());
    }
    let published = client
        .publish("clicks", None, builder.finish())
        .await
        .unwrap();
    assert_eq!(published.durability, Durability::Os);
    let total: u64 = published
        .partitions
        .iter()
        .map(|range| range.last_offset - range.base_offset + 1)
        .sum();
    assert_eq!(total, 40);
    let mut consumer = client
        .subscribe("clicks", "check", SubscribeOptions::stream(Start::Earliest))
        .await
        .unwrap();
    for _ in 0..40 {
        let delivery = within(consumer.next()).await.unwrap();
        let key = delivery.key.clone().unwrap();
        assert_eq!(delivery.partition, weir_client::partition_for_key(&key, 4));
    }
    server.stop().await;
}

/// Goal: when the producer did not know a topic's partition count, the broker splits its
/// batch by key and each message's confirm still names its exact position. Method: the
/// producer first sees the topic missing (it is auto-created with one partition), then the
/// topic is recreated with four partitions behind its back; confirms are checked against a
/// stream read of what was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_of_a_batch_the_broker_split_name_each_message() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let client = connect(&server).await;
    let producer = client.producer(ProducerOptions {
        linger: Duration::from_millis(20),
        ..ProducerOptions::default()
    });
    producer
        .send_confirmed("late", Message::new("first").with_key("a"))
        .await
        .unwrap();
    client.delete_topic("late").await.unwrap();
    client.create_topic("late", os_topic(4)).await.unwrap();
    let mut confirms = Vec::new();
    for index in 0..50 {
        let mut message = Message::new(format!("value-{index}"));
        if index % 5 != 0 {
            message = message.with_key(format!("key-{index}"));
        }
        confirms.push(producer.send("late", message).await.unwrap());
    }
    producer.flush().await.unwrap();
    let mut expected = BTreeMap::new();
    for (index, confirm) in confirms.into_iter().enumerate() {
        let confirm = confirm.await.unwrap();
        expected.insert(
            (confirm.partition, confirm.offset),
            format!("value-{index}"),
        );
    }
    let mut consumer = client
        .subscribe("late", "verify", SubscribeOptions::stream(Start::Earliest))
        .await
        .unwrap();
    let mut stored = BTreeMap::new();
    while stored.len() < 50 {
        let delivery = within(consumer.next()).await.unwrap();
        let value = String::from_utf8(delivery.value.to_vec()).unwrap();
        stored.insert((delivery.partition, delivery.offset), value);
    }
    assert_eq!(stored, expected);
    server.stop().await;
}

/// Goal: a producer and a consumer ride through a server restart: messages sent while the
/// server is down are confirmed once it is back, and the consumer rejoins its group and
/// receives everything (at least once). Method: stop the server mid-stream, start a new one
/// on the same data directory and port, keep producing and consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_resume_after_the_server_restarts() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let address = server.address;
    let options = ClientOptions {
        reconnect_delay_min: Duration::from_millis(10),
        reconnect_delay_max: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&address.to_string(), options)
        .await
        .unwrap();
    client.create_topic("jobs", os_topic(2)).await.unwrap();
    let producer = client.producer(ProducerOptions::default());
    let mut consumer = client
        .subscribe("jobs", "workers", SubscribeOptions::queue())
        .await
        .unwrap();

    let mut seen = BTreeSet::new();
    for index in 0..500 {
        producer
            .send("jobs", Message::new(format!("job-{index}")))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    while seen.len() < 250 {
        let delivery = within(consumer.next()).await.unwrap();
        seen.insert(delivery.value.clone());
        consumer.ack_one(&delivery).await.unwrap();
    }
    consumer.flush_acks().await.unwrap();

    server.stop().await;
    // Sent while the server is down: buffered, retried, confirmed after the restart.
    let mut late_confirms = Vec::new();
    for index in 500..1000 {
        late_confirms.push(
            producer
                .send("jobs", Message::new(format!("job-{index}")))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server = TestServer::start(data.path(), address).await;

    for confirm in late_confirms {
        within(confirm).await.unwrap();
    }
    while seen.len() < 1000 {
        let delivery = within(consumer.next()).await.unwrap();
        seen.insert(delivery.value.clone());
        consumer.ack_one(&delivery).await.unwrap();
    }
    let expected: BTreeSet<Bytes> = (0..1000)
        .map(|index| Bytes::from(format!("job-{index}")))
        .collect();
    assert_eq!(seen, expected);
    consumer.close().await.unwrap();
    server.stop().await;
}

/// Found by the kill -9 consumer cycles (`tests/crash.rs`): an ack whose connection was gone
/// stayed queued unsent (to go out after reconnecting), yet `flush_acks` answered `Ok` as if
/// the broker had it; a caller recording "acked" then saw the message delivered again. An ack
/// not answered fails the flush.
#[tokio::test]
async fn flushing_an_ack_the_lost_connection_could_not_send_fails() {
    let data = tempfile::tempdir().unwrap();
    let server = TestServer::start(data.path(), "127.0.0.1:0".parse().unwrap()).await;
    let options = ClientOptions {
        reconnect_delay_min: Duration::from_millis(10),
        reconnect_delay_max: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(&server.address.to_string(), options)
        .await
        .unwrap();
    client.create_topic("jobs", os_topic(1)).await.unwrap();
    let producer = client.producer(ProducerOptions::default());
    producer.send("jobs", Message::new("job")).await.unwrap();
    producer.flush().await.unwrap();
    let mut consumer = client
        .subscribe("jobs", "workers", SubscribeOptions::queue())
        .await
        .unwrap();
    let delivery = within(consumer.next()).await.unwrap();
    server.stop().await;
    // Time for the client to see the connection close, so the ack is not even sent.
    tokio::time::sleep(Duration::from_millis(300)).await;
    consumer.ack_one(&delivery).await.unwrap();
    let flushed = consumer.flush_acks().await;
    assert!(
        flushed.is_err(),
        "an ack the broker never answered was reported flushed"
    );
}
