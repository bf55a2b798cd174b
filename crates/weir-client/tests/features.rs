//! The client's calls for routing, dead letters, delayed and transactional messages,
//! idempotency keys, queue settings and stats, against a real broker and native server
//! started in this process on a free port with a temporary data directory: each feature's
//! happy path and one way it fails.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use weir_client::{
    ClaimOutcome, Client, ClientOptions, DEAD_LETTER_DELIVERY_COUNT_HEADER,
    DEAD_LETTER_ERROR_HEADER, DEAD_LETTER_REASON_HEADER, DEAD_LETTER_TOPIC_HEADER, Decision,
    DeliveryTime, ErrorCode, ExchangeKind, Fsync, Message, Overflow, ProducerOptions,
    ScheduledSelector, SubscribeOptions, TopicOptions, delivery_header, key_binding,
};
use weir_core::{Broker, BrokerConfig};
use weir_server::{Server, ServerConfig};

/// Generous bound on any wait: these tests normally take milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// A broker and native server running in this process.
struct TestServer {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    _data: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    /// Starts with the default broker settings changed by `configure`.
    async fn start_with(configure: impl FnOnce(&mut BrokerConfig)) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
        let data = tempfile::tempdir().expect("a temporary directory");
        let mut config = BrokerConfig::new(data.path());
        configure(&mut config);
        let broker = Broker::open(config).await.expect("the broker opens");
        let config = ServerConfig {
            native_addr: "127.0.0.1:0".parse().expect("an address"),
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
            _data: data,
        }
    }

    async fn connect(&self) -> Client {
        let options = ClientOptions {
            reconnect_delay_min: Duration::from_millis(5),
            reconnect_delay_max: Duration::from_millis(50),
            ..ClientOptions::default()
        };
        Client::connect_with(&self.address.to_string(), options)
            .await
            .expect("the client connects")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(PATIENCE, &mut self.task).await;
    }
}

fn os_topic(partitions: u32) -> TopicOptions {
    TopicOptions {
        partitions,
        fsync: Fsync::Os,
        ..TopicOptions::default()
    }
}

async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, future)
        .await
        .expect("finished in time")
}

fn text(bytes: &Bytes) -> String {
    String::from_utf8(bytes.to_vec()).expect("text")
}

/// Goal: a message published again with its id is confirmed at the stored copy, marked as a
/// duplicate, and stored once, through the producer and through a raw publish. Method: the
/// same message twice, then a raw batch of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_again_with_its_id_is_confirmed_at_the_stored_copy() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.create_topic("payments", os_topic(3)).await.unwrap();
    let producer = client.producer(ProducerOptions::default());
    let message = Message::new("payment-1").with_id("p-1");
    let first = within(producer.send_confirmed("payments", message.clone()))
        .await
        .unwrap();
    assert!(!first.duplicate);
    let again = within(producer.send_confirmed("payments", message))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(
        (again.partition, again.offset),
        (first.partition, first.offset)
    );
    // The producer goes on after a duplicate (the broker does not count a batch it stored
    // none of in the producer's numbering).
    let next =
        within(producer.send_confirmed("payments", Message::new("payment-2").with_id("p-2")))
            .await
            .unwrap();
    assert!(!next.duplicate);
    let mut builder = weir_client::BatchBuilder::new();
    builder.push(1, None, &[(weir_client::MESSAGE_ID_HEADER, b"p-1")], b"x");
    let raw = client
        .publish("payments", Some(first.partition), builder.finish())
        .await
        .unwrap();
    assert!(raw.partitions.is_empty());
    assert_eq!(raw.duplicates.len(), 1);
    assert_eq!(raw.duplicates[0].offset, first.offset);
    let topic = client.topic("payments").await.unwrap();
    let stored: u64 = topic
        .partitions
        .iter()
        .map(|partition| partition.end_offset)
        .sum();
    assert_eq!(stored, 2, "one copy of each is stored");
    server.stop().await;
}

/// Goal: a batch of which some messages were held already (by id) and others are new is
/// confirmed message by message — the held ones at their copies, the new ones where they were
/// stored — although the broker's answer alone does not say which is which. Method: store
/// `a`, then one batch of `a` again, a new `b` and a message without an id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_partly_held_already_is_confirmed_message_by_message() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.create_topic("ledger", os_topic(1)).await.unwrap();
    let producer = client.producer(ProducerOptions {
        linger: Duration::from_millis(200),
        ..ProducerOptions::default()
    });
    let held = within(producer.send_confirmed("ledger", Message::new("a").with_id("id-a")))
        .await
        .unwrap();
    let again = producer
        .send("ledger", Message::new("a").with_id("id-a"))
        .await
        .unwrap();
    let new = producer
        .send("ledger", Message::new("b").with_id("id-b"))
        .await
        .unwrap();
    let plain = producer.send("ledger", Message::new("c")).await.unwrap();
    let (again, new, plain) = (
        within(again).await.unwrap(),
        within(new).await.unwrap(),
        within(plain).await.unwrap(),
    );
    assert!(again.duplicate);
    assert_eq!(again.offset, held.offset);
    assert_eq!((new.duplicate, new.offset), (false, 1));
    assert_eq!((plain.duplicate, plain.offset), (false, 2));
    assert_eq!(
        client.topic("ledger").await.unwrap().partitions[0].end_offset,
        3,
        "nothing stored twice, also not by asking"
    );
    server.stop().await;
}

/// Goal: a topic exchange routes by pattern, each bound topic gets its copy, and an
/// unroutable mandatory publish is refused while a non-mandatory one is dropped and counted.
/// Method: `order.vip.*` and `order.#` bindings, three routing keys; bind, unbind, list,
/// delete, and a delete of an exchange that does not exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_exchange_routes_by_pattern_and_refuses_an_unroutable_mandatory_publish() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    for topic in ["vip-orders", "all-orders"] {
        client.create_topic(topic, os_topic(1)).await.unwrap();
    }
    client
        .create_exchange("orders", ExchangeKind::Topic, None)
        .await
        .unwrap();
    client
        .bind("orders", key_binding("vip-orders", "order.vip.*"))
        .await
        .unwrap();
    let exchange = client
        .bind("orders", key_binding("all-orders", "order.#"))
        .await
        .unwrap();
    assert_eq!(exchange.bindings.len(), 2);

    let routed = client
        .publish_to_exchange("orders", "order.vip.created", true, &[Message::new("vip")])
        .await
        .unwrap();
    let targets: BTreeSet<String> = routed
        .targets
        .iter()
        .map(|target| target.topic.clone())
        .collect();
    assert_eq!(
        targets,
        BTreeSet::from(["vip-orders".into(), "all-orders".into()])
    );
    let routed = client
        .publish_to_exchange(
            "orders",
            "order.normal.created",
            true,
            &[Message::new("normal")],
        )
        .await
        .unwrap();
    assert_eq!(routed.targets.len(), 1);
    assert_eq!(routed.targets[0].topic, "all-orders");

    let refused = client
        .publish_to_exchange("orders", "invoice.paid", true, &[Message::new("lost")])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Unroutable), "{refused}");
    let dropped = client
        .publish_to_exchange("orders", "invoice.paid", false, &[Message::new("lost")])
        .await
        .unwrap();
    assert_eq!((dropped.targets.len(), dropped.dropped), (0, 1));

    let exchange = client.unbind("orders", "all-orders", None).await.unwrap();
    assert_eq!(exchange.bindings.len(), 1);
    assert_eq!(client.exchanges().await.unwrap().len(), 1);
    client.delete_exchange("orders").await.unwrap();
    assert!(client.exchanges().await.unwrap().is_empty());
    let missing = client.delete_exchange("orders").await.unwrap_err();
    assert!(missing.code().is_some(), "{missing}");
    let vip = client.topic("vip-orders").await.unwrap();
    let all = client.topic("all-orders").await.unwrap();
    assert_eq!(
        (vip.partitions[0].end_offset, all.partitions[0].end_offset),
        (1, 2)
    );
    server.stop().await;
}

/// Goal: a poison message is dead-lettered after exactly `max_deliveries` failed deliveries
/// with its reason, last error and origin in headers; a released message does not count;
/// redriving publishes it again without those headers; purge empties a DLQ; browsing a topic
/// that is not a DLQ is refused. Method: max 3 deliveries, one release, three nacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_after_max_deliveries_and_redriven() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.create_topic("jobs", os_topic(1)).await.unwrap();
    let options = SubscribeOptions::queue()
        .with_max_deliveries(3)
        .with_prefetch(1);
    let mut consumer = client.subscribe("jobs", "workers", options).await.unwrap();
    let producer = client.producer(ProducerOptions::default());
    within(producer.send_confirmed("jobs", Message::new("poison").with_key("job-1")))
        .await
        .unwrap();

    // A release (the consumer stopping) is not a failed delivery.
    let delivery = within(consumer.next()).await.unwrap();
    consumer.release_one(&delivery).await.unwrap();
    for attempt in 1..=3 {
        let delivery = within(consumer.next()).await.unwrap();
        assert_eq!(text(&delivery.value), "poison");
        consumer
            .nack_one(
                &delivery,
                true,
                Duration::ZERO,
                &format!("failure {attempt}"),
            )
            .await
            .unwrap();
    }
    consumer.flush_acks().await.unwrap();
    let dlq = "jobs.workers.dlq";
    let letters = within(async {
        loop {
            let letters = client.dead_letters(dlq, 10).await;
            if let Ok(letters) = letters
                && !letters.is_empty()
            {
                return letters;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    let header = |name| delivery_header(letter, name).map(text);
    assert_eq!(
        header(DEAD_LETTER_REASON_HEADER).as_deref(),
        Some("max_deliveries")
    );
    assert_eq!(
        header(DEAD_LETTER_ERROR_HEADER).as_deref(),
        Some("failure 3")
    );
    assert_eq!(header(DEAD_LETTER_TOPIC_HEADER).as_deref(), Some("jobs"));
    assert_eq!(
        header(DEAD_LETTER_DELIVERY_COUNT_HEADER).as_deref(),
        Some("3")
    );
    assert_eq!(letter.key.as_deref(), Some(&b"job-1"[..]));
    let queues = client.dead_letter_queues().await.unwrap();
    assert!(
        queues
            .iter()
            .any(|queue| queue.topic == dlq && queue.pending == 1)
    );

    assert_eq!(client.redrive_all(dlq, None).await.unwrap(), 1);
    let redriven = within(consumer.next()).await.unwrap();
    assert_eq!(text(&redriven.value), "poison");
    assert!(delivery_header(&redriven, DEAD_LETTER_REASON_HEADER).is_none());
    consumer.ack_one(&redriven).await.unwrap();
    consumer.flush_acks().await.unwrap();
    assert_eq!(client.purge_dead_letters(dlq).await.unwrap(), 0);

    let refused = client.dead_letters("jobs", 10).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::InvalidArgument),
        "{refused}"
    );
    consumer.close().await.unwrap();
    server.stop().await;
}

/// Goal: a delayed batch stays invisible until due, then arrives once; one cancelled by its
/// business key never arrives; listing, showing and rescheduling work; a time more than a
/// year ahead and a cancel of an unknown key are refused. Method: two delayed batches to one
/// topic, a stream reader watching it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_batch_arrives_when_due_and_one_cancelled_by_key_never_does() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client
        .create_topic("cancellations", os_topic(1))
        .await
        .unwrap();
    let sent_at = Instant::now();
    let due = client
        .publish_delayed(
            "cancellations",
            &[Message::new("cancel order 1")],
            DeliveryTime::After(Duration::from_millis(400)),
            Some("order-1"),
        )
        .await
        .unwrap();
    let cancelled = client
        .publish_delayed(
            "cancellations",
            &[Message::new("cancel order 2")],
            DeliveryTime::After(Duration::from_millis(300)),
            Some("order-2"),
        )
        .await
        .unwrap();
    let pending = client
        .scheduled(Some("cancellations"), None, 10)
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|entry| entry.id).collect::<Vec<_>>(),
        [cancelled.id, due.id],
        "in due order"
    );
    let shown = client.scheduled_batch(due.id).await.unwrap();
    assert_eq!(shown.info.business_key.as_deref(), Some("order-1"));
    assert_eq!(text(&shown.messages[0].value), "cancel order 1");
    let gone = client
        .cancel_scheduled(ScheduledSelector::BusinessKey("order-2".into()))
        .await
        .unwrap();
    assert_eq!(gone.id, cancelled.id);
    let missing = client
        .cancel_scheduled(ScheduledSelector::BusinessKey("order-2".into()))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound), "{missing}");
    let moved = client
        .reschedule(due.id, DeliveryTime::After(Duration::from_millis(500)))
        .await
        .unwrap();
    assert!(moved.deliver_at_ms >= due.deliver_at_ms);
    let too_late = SystemTime::now() + Duration::from_secs(400 * 24 * 3600);
    let refused = client
        .publish_delayed(
            "cancellations",
            &[Message::new("x")],
            DeliveryTime::At(too_late),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::InvalidArgument),
        "{refused}"
    );

    let mut reader = client
        .subscribe("cancellations", "reader", SubscribeOptions::queue())
        .await
        .unwrap();
    let delivery = within(reader.next()).await.unwrap();
    assert!(
        sent_at.elapsed() >= Duration::from_millis(500),
        "not before it was due: {:?}",
        sent_at.elapsed()
    );
    assert_eq!(text(&delivery.value), "cancel order 1");
    reader.ack_one(&delivery).await.unwrap();
    // The cancelled one would be long due by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let nothing = tokio::time::timeout(Duration::from_millis(200), reader.next()).await;
    assert!(nothing.is_err(), "the cancelled batch was delivered");
    reader.close().await.unwrap();
    server.stop().await;
}

/// Goal: a committed transaction's half messages appear together, a rolled-back one's
/// never, and deciding a transaction twice is refused. Method: two topics, two transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_transaction_is_visible_and_a_rolled_back_one_is_not() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    for topic in ["orders", "stock"] {
        client.create_topic(topic, os_topic(1)).await.unwrap();
    }
    let transaction = client.transaction("shop").await.unwrap();
    transaction
        .send("orders", Message::new("order 1"))
        .await
        .unwrap();
    transaction
        .send_all(
            "stock",
            &[Message::new("reserve a"), Message::new("reserve b")],
        )
        .await
        .unwrap();
    let listed = client.transactions().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|info| info.id == transaction.id() && info.parts == 2)
    );
    assert_eq!(
        client.topic("orders").await.unwrap().partitions[0].end_offset,
        0
    );
    let id = transaction.id();
    let targets = transaction.commit().await.unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(
        client.topic("stock").await.unwrap().partitions[0].end_offset,
        2
    );
    let again = client.commit_transaction(id).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::NotFound), "{again}");

    let discarded = client.transaction("shop").await.unwrap();
    discarded
        .send("orders", Message::new("order 2"))
        .await
        .unwrap();
    discarded.rollback().await.unwrap();
    assert_eq!(
        client.topic("orders").await.unwrap().partitions[0].end_offset,
        1
    );
    assert!(client.transactions().await.unwrap().is_empty());
    server.stop().await;
}

/// Goal: a transaction whose producer went away after sending its half messages, without
/// deciding, is committed through another producer's registered checker. Method: a short
/// broker transaction timeout; the first client drops the transaction; a second client's
/// checker answers commit for it (and would answer unknown for any other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_left_undecided_is_committed_by_another_producers_checker() {
    let server = TestServer::start_with(|config| {
        config.transactions.timeout_ms = 300;
        config.transactions.check_interval_ms = 200;
    })
    .await;
    let dying = server.connect().await;
    dying.create_topic("orders", os_topic(1)).await.unwrap();
    let transaction = dying.transaction("shop").await.unwrap();
    transaction
        .send_all("orders", &[Message::new("half 1"), Message::new("half 2")])
        .await
        .unwrap();
    let id = transaction.id();
    // The producer "dies" after its local transaction committed.
    drop(transaction);
    drop(dying);

    let survivor = server.connect().await;
    let (asked, mut questions) = tokio::sync::mpsc::unbounded_channel();
    let checker = survivor
        .register_checker("shop", move |check| {
            let asked = asked.clone();
            async move {
                let _ = asked.send(check.transaction);
                if check.transaction == id {
                    Decision::Commit
                } else {
                    Decision::Unknown
                }
            }
        })
        .await
        .unwrap();
    assert_eq!(checker.producer_group(), "shop");
    let checked = within(questions.recv()).await.expect("a check-back");
    assert_eq!(checked, id);
    within(async {
        while survivor.topic("orders").await.unwrap().partitions[0].end_offset < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(survivor.transactions().await.unwrap().is_empty());
    checker.close();
    server.stop().await;
}

/// Goal: an idempotency key is worked on by one holder at a time and, once completed, never
/// again; completing a key someone else claimed is refused. Method: two holders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_claimed_once_and_then_completed() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    let ttl = Duration::from_secs(60);
    assert!(matches!(
        client.claim_key("payment-1", "a", ttl).await.unwrap(),
        ClaimOutcome::Acquired { .. }
    ));
    assert!(matches!(
        client.claim_key("payment-1", "b", ttl).await.unwrap(),
        ClaimOutcome::Busy { holder, .. } if holder == "a"
    ));
    let refused = client
        .complete_key("payment-1", "b", ttl)
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Some(ErrorCode::InvalidArgument),
        "{refused}"
    );
    client.complete_key("payment-1", "a", ttl).await.unwrap();
    assert!(matches!(
        client.claim_key("payment-1", "b", ttl).await.unwrap(),
        ClaimOutcome::Completed { .. }
    ));
    assert!(matches!(
        client.claim_key("payment-2", "a", ttl).await.unwrap(),
        ClaimOutcome::Acquired { .. }
    ));
    client.release_key("payment-2", "a").await.unwrap();
    assert!(matches!(
        client.claim_key("payment-2", "b", ttl).await.unwrap(),
        ClaimOutcome::Acquired { .. }
    ));
    server.stop().await;
}

/// Goal: `reject-publish` overflow refuses publishes with `backlog_full` while the backlog
/// is full, and an idempotent producer recovers by itself once it drains (later batches are
/// not refused as out of order). Method: max backlog 10, a burst of 30 messages one per
/// batch, then drain and publish again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_backlog_refuses_publishes_and_the_producer_recovers_after_it_drains() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.create_topic("burst", os_topic(1)).await.unwrap();
    let options = SubscribeOptions::queue()
        .with_max_backlog(10, Overflow::RejectPublish)
        .with_prefetch(100);
    let mut consumer = client.subscribe("burst", "slow", options).await.unwrap();
    let producer = client.producer(ProducerOptions {
        max_batch_messages: 1,
        ..ProducerOptions::default()
    });
    let mut confirms = Vec::new();
    for index in 0..30 {
        confirms.push(
            producer
                .send("burst", Message::new(format!("m{index}")))
                .await
                .unwrap(),
        );
    }
    let mut stored = 0;
    let mut refused = 0;
    for confirm in confirms {
        match within(confirm).await {
            Ok(_) => stored += 1,
            Err(error) => {
                assert_eq!(error.code(), Some(ErrorCode::BacklogFull), "{error}");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the burst overflowed");
    // The broker checks the backlog when a publish arrives, so batches in flight together may
    // pass it together: at most the lane's in-flight batches (of one message) over the limit.
    assert!(
        (10..=10 + weir_client::LANE_IN_FLIGHT).contains(&stored),
        "{stored} stored"
    );
    for _ in 0..stored {
        let delivery = within(consumer.next()).await.unwrap();
        consumer.ack_one(&delivery).await.unwrap();
    }
    consumer.flush_acks().await.unwrap();
    within(async {
        while client.group("burst", "slow").await.unwrap().backlog > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let _ = producer.flush().await;
    let after = within(producer.send_confirmed("burst", Message::new("after")))
        .await
        .expect("publishing works again once the backlog drained");
    assert!(!after.duplicate);
    consumer.close().await.unwrap();
    server.stop().await;
}

/// Goal: the stats snapshot shows topics with their publish counts and subscriptions with
/// backlog and counters. Method: publish 5, deliver and ack 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_show_topics_and_subscriptions() {
    let server = TestServer::start().await;
    let client = server.connect().await;
    client.create_topic("metered", os_topic(2)).await.unwrap();
    let mut consumer = client
        .subscribe(
            "metered",
            "counting",
            SubscribeOptions::queue().with_prefetch(2),
        )
        .await
        .unwrap();
    let producer = client.producer(ProducerOptions::default());
    for index in 0..5 {
        producer
            .send("metered", Message::new(format!("m{index}")))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    for _ in 0..2 {
        let delivery = within(consumer.next()).await.unwrap();
        consumer.ack_one(&delivery).await.unwrap();
    }
    consumer.flush_acks().await.unwrap();
    let stats = client.stats().await.unwrap();
    let topic = stats
        .topics
        .iter()
        .find(|topic| topic.name == "metered")
        .expect("the topic");
    let published: u64 = topic
        .partitions
        .iter()
        .map(|partition| partition.published_messages)
        .sum();
    assert_eq!(published, 5);
    let subscription = stats
        .subscriptions
        .iter()
        .find(|subscription| subscription.group == "counting")
        .expect("the subscription");
    assert_eq!(subscription.counters.acked, 2);
    assert_eq!(subscription.backlog, 3);
    assert!(stats.now_ms > 0);
    drop(consumer);
    server.stop().await;
}

/// Goal: the alerts the broker's rules raise reach a native client while they fire, and are
/// gone once resolved. Method: a rule "backlog above 2" on a queue; publish 5 (fires), then
/// consume and ack them all (resolves). The broker evaluates its rules every second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_listed_while_they_fire() {
    let server = TestServer::start_with(|config| {
        config.alert_rules = vec![weir_core::AlertRule {
            name: "queue-deep".into(),
            metric: weir_core::AlertMetric::Backlog,
            scope: "watched/*".into(),
            comparison: weir_core::Comparison::Above,
            threshold: 2.0,
            for_ms: 0,
            message: "add consumers".into(),
        }];
    })
    .await;
    let client = server.connect().await;
    client.create_topic("watched", os_topic(1)).await.unwrap();
    let mut consumer = client
        .subscribe("watched", "workers", SubscribeOptions::queue())
        .await
        .unwrap();
    assert_eq!(client.alerts().await.unwrap(), Vec::new());
    let producer = client.producer(ProducerOptions::default());
    for index in 0..5 {
        producer
            .send("watched", Message::new(format!("m{index}")))
            .await
            .unwrap();
    }
    producer.flush().await.unwrap();
    let alert = within(async {
        loop {
            if let Some(alert) = client.alerts().await.unwrap().into_iter().next() {
                break alert;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(alert.rule, "queue-deep");
    assert_eq!(alert.scope, "watched/workers");
    assert_eq!(alert.metric, weir_client::AlertMetric::Backlog);
    assert_eq!(alert.state, weir_client::AlertState::Firing);
    assert!(alert.value > 2.0 && alert.threshold == 2.0, "{alert:?}");
    assert_eq!(alert.message, "add consumers");
    assert!(alert.since_ms > 0);
    for _ in 0..5 {
        let delivery = within(consumer.next()).await.unwrap();
        consumer.ack_one(&delivery).await.unwrap();
    }
    consumer.flush_acks().await.unwrap();
    within(async {
        while !client.alerts().await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    consumer.close().await.unwrap();
    server.stop().await;
}
