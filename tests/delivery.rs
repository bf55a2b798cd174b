//! Delivery as a user of `weir serve` sees it, through `weir-client`: point-to-point and
//! publish/subscribe, nack and requeue, ack timeouts, replay, and persistence across a restart.
//!
//! Every test starts the real binary with `util::Weir` (a free port, a temporary data
//! directory) and talks to it only through the client library, as an application would. Waits
//! are bounded by [`PATIENCE`], so a lost message fails the test with a message instead of
//! hanging it. Topics that do not test durability use `fsync = os` to stay fast.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use util::{Options, PATIENCE, Weir};
use weir_client::{
    Client, ClientOptions, Confirm, Consumer, Delivery, Durability, Fsync, GroupInfo, Message,
    MessageId, ProducerOptions, Start, SubscribeOptions, TopicOptions,
};

/// Runs `future`, failing the test with `what` if it takes longer than [`PATIENCE`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what}: not done within {PATIENCE:?}"),
    }
}

/// A client of `weir`, reconnecting quickly (tests restart servers).
async fn connect(weir: &Weir) -> Client {
    let options = ClientOptions {
        reconnect_delay_min: Duration::from_millis(10),
        reconnect_delay_max: Duration::from_millis(100),
        ..ClientOptions::default()
    };
    Client::connect_with(&weir.address.to_string(), options)
        .await
        .unwrap_or_else(|error| panic!("connecting to {}: {error}\n{}", weir.address, weir.log()))
}

fn topic_options(partitions: u32, fsync: Fsync) -> TopicOptions {
    TopicOptions {
        partitions,
        fsync,
        ..TopicOptions::default()
    }
}

/// Publishes `messages` to `topic` through one batching producer and returns each message's
/// confirm, in order.
async fn publish_confirmed(client: &Client, topic: &str, messages: Vec<Message>) -> Vec<Confirm> {
    let producer = client.producer(ProducerOptions::default());
    let mut futures = Vec::with_capacity(messages.len());
    for message in messages {
        futures.push(producer.send(topic, message).await.expect("buffered"));
    }
    within("flushing the producer", producer.flush())
        .await
        .expect("every batch is confirmed");
    let mut confirms = Vec::with_capacity(futures.len());
    for future in futures {
        confirms.push(future.await.expect("a confirm"));
    }
    confirms
}

/// Returns once the watched flag is true (or its sender is gone).
async fn until_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}

async fn next_delivery(consumer: &mut Consumer) -> Delivery {
    within("waiting for a delivery", consumer.next())
        .await
        .expect("a delivery")
}

fn text(value: &Bytes) -> String {
    String::from_utf8(value.to_vec()).expect("payloads are text")
}

async fn group(client: &Client, topic: &str, group: &str) -> GroupInfo {
    client
        .group(topic, group)
        .await
        .expect("the group is described")
}

/// Goal: a queue subscription is point-to-point: with three competing consumers every message
/// is delivered to exactly one of them, none is lost, and all three get work. Method: three
/// consumers join one group with a small prefetch (so no one can hold everything), then 600
/// unique messages are published over three partitions; each consumer acks what it gets until
/// 600 deliveries have been seen in all; the deliveries are counted per consumer and payload,
/// and the group ends with nothing unacked or in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_to_point_delivers_each_message_to_exactly_one_competing_consumer() {
    const TOTAL: usize = 600;
    let weir = Weir::start();
    let client = connect(&weir).await;
    client
        .create_topic("jobs", topic_options(3, Fsync::Os))
        .await
        .unwrap();
    let options = SubscribeOptions {
        prefetch: 5,
        ..SubscribeOptions::queue()
    };
    let delivered = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = watch::channel(false);
    let mut workers = Vec::new();
    for _ in 0..3 {
        let mut consumer = client
            .subscribe("jobs", "workers", options.clone())
            .await
            .unwrap();
        let delivered = delivered.clone();
        let mut stopped = stopped.clone();
        workers.push(tokio::spawn(async move {
            let mut received = Vec::new();
            loop {
                tokio::select! {
                    delivery = consumer.next() => {
                        let delivery = delivery.expect("a delivery");
                        received.push(text(&delivery.value));
                        consumer.ack_one(&delivery).await.expect("ack queued");
                        delivered.fetch_add(1, Ordering::SeqCst);
                    }
                    () = until_true(&mut stopped) => break,
                }
            }
            consumer.flush_acks().await.expect("acks accepted");
            consumer.close().await.expect("left the group");
            received
        }));
    }
    assert_eq!(group(&client, "jobs", "workers").await.consumers, 3);

    let messages = (0..TOTAL).map(|index| Message::new(format!("job-{index}")));
    publish_confirmed(&client, "jobs", messages.collect()).await;
    let deadline = Instant::now() + PATIENCE;
    while delivered.load(Ordering::SeqCst) < TOTAL {
        assert!(
            Instant::now() < deadline,
            "only {} of {TOTAL} messages delivered within {PATIENCE:?}",
            delivered.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.send(true).unwrap();

    let mut per_consumer = Vec::new();
    let mut owners: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (consumer, worker) in workers.into_iter().enumerate() {
        let received = within("a consumer stopping", worker).await.unwrap();
        per_consumer.push(received.len());
        for payload in received {
            owners.entry(payload).or_default().push(consumer);
        }
    }
    let duplicated: Vec<_> = owners
        .iter()
        .filter(|(_, consumers)| consumers.len() > 1)
        .collect();
    assert!(
        duplicated.is_empty(),
        "delivered more than once: {duplicated:?}"
    );
    let expected: BTreeSet<String> = (0..TOTAL).map(|index| format!("job-{index}")).collect();
    assert_eq!(
        owners.keys().cloned().collect::<BTreeSet<_>>(),
        expected,
        "every message delivered"
    );
    assert!(
        per_consumer.iter().all(|count| *count > 0),
        "every consumer gets work: {per_consumer:?}"
    );
    let settled = group(&client, "jobs", "workers").await;
    assert_eq!(settled.backlog, 0, "{settled:?}");
    assert!(
        settled
            .partitions
            .iter()
            .all(|partition| partition.in_flight == 0),
        "{settled:?}"
    );
}

/// Goal: publish/subscribe: every subscription of a topic receives every message, each
/// partition in order. Method: three stream subscriptions on a 3-partition topic; 300 keyed
/// messages (12 keys, so all partitions are used) are published; each subscription reads 300
/// messages and must see, per partition, the offsets 0, 1, 2, … in delivery order, each with
/// the payload its confirm named, and per key the messages in the order they were sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_gives_every_subscription_every_message_in_partition_order() {
    const TOTAL: usize = 300;
    let weir = Weir::start();
    let client = connect(&weir).await;
    client
        .create_topic("orders", topic_options(3, Fsync::Os))
        .await
        .unwrap();
    let mut subscribers = Vec::new();
    for name in ["billing", "shipping", "analytics"] {
        let consumer = client
            .subscribe("orders", name, SubscribeOptions::stream(Start::Earliest))
            .await
            .unwrap();
        subscribers.push((name, consumer));
    }

    let messages = (0..TOTAL).map(|index| {
        Message::new(format!("customer-{}:order-{index}", index % 12))
            .with_key(format!("customer-{}", index % 12))
    });
    let confirms = publish_confirmed(&client, "orders", messages.collect()).await;
    let mut stored = BTreeMap::new();
    for (index, confirm) in confirms.iter().enumerate() {
        stored.insert(
            (confirm.partition, confirm.offset),
            format!("customer-{}:order-{index}", index % 12),
        );
    }
    let partitions_used: BTreeSet<u32> = confirms.iter().map(|confirm| confirm.partition).collect();
    assert_eq!(
        partitions_used.len(),
        3,
        "the keys spread over all partitions"
    );

    for (name, mut consumer) in subscribers {
        let mut received = Vec::new();
        while received.len() < TOTAL {
            let batch = within(name, consumer.next_batch()).await.unwrap();
            let ids: Vec<MessageId> = batch.iter().map(Delivery::id).collect();
            consumer.ack(&ids).await.unwrap();
            received.extend(batch);
        }
        assert_eq!(received.len(), TOTAL, "{name}: no more than every message");
        let mut next_offset = [0u64; 3];
        let mut last_order_of_key: BTreeMap<String, usize> = BTreeMap::new();
        for delivery in &received {
            let partition = delivery.partition as usize;
            assert_eq!(
                delivery.offset, next_offset[partition],
                "{name}: partition {partition} out of order"
            );
            next_offset[partition] += 1;
            let payload = text(&delivery.value);
            assert_eq!(
                Some(&payload),
                stored.get(&(delivery.partition, delivery.offset)),
                "{name}: the message its confirm named"
            );
            let (key, order) = payload.split_once(":order-").unwrap();
            let order: usize = order.parse().unwrap();
            if let Some(previous) = last_order_of_key.insert(key.to_owned(), order) {
                assert!(previous < order, "{name}: {key} out of order");
            }
        }
        consumer.close().await.unwrap();
    }
}

/// Goal: a nacked message comes back, counted, and an acked one never does. Method: one
/// message; nack it with requeue and no delay: it is delivered again with delivery count 2;
/// nack it with a 300 ms delay: it comes back with count 3, no sooner than the delay; ack it,
/// publish a second message, and that one (count 1) is the next delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_message_is_requeued_and_delivered_again_with_its_count() {
    let weir = Weir::start();
    let client = connect(&weir).await;
    client
        .create_topic("payments", topic_options(1, Fsync::Os))
        .await
        .unwrap();
    publish_confirmed(&client, "payments", vec![Message::new("payment-1")]).await;
    let mut consumer = client
        .subscribe("payments", "ledger", SubscribeOptions::queue())
        .await
        .unwrap();

    let first = next_delivery(&mut consumer).await;
    assert_eq!(
        (text(&first.value).as_str(), first.delivery_count),
        ("payment-1", 1)
    );
    consumer
        .nack_one(&first, true, Duration::ZERO, "bank unavailable")
        .await
        .unwrap();
    let second = next_delivery(&mut consumer).await;
    assert_eq!((second.id(), second.delivery_count), (first.id(), 2));
    assert_eq!(second.value, first.value);

    let delay = Duration::from_millis(300);
    let nacked_at = Instant::now();
    consumer
        .nack_one(&second, true, delay, "bank still unavailable")
        .await
        .unwrap();
    let third = next_delivery(&mut consumer).await;
    assert!(
        nacked_at.elapsed() >= delay,
        "redelivered after {:?}, before the {delay:?} delay",
        nacked_at.elapsed()
    );
    assert_eq!((third.id(), third.delivery_count), (first.id(), 3));

    consumer.ack_one(&third).await.unwrap();
    consumer.flush_acks().await.unwrap();
    publish_confirmed(&client, "payments", vec![Message::new("payment-2")]).await;
    let fourth = next_delivery(&mut consumer).await;
    assert_eq!(
        (text(&fourth.value).as_str(), fourth.delivery_count),
        ("payment-2", 1),
        "the acked message is not delivered again"
    );
}

/// Goal: a message not acked within the ack timeout is delivered again. Method: the server runs
/// with `--default-ack-timeout-ms 300`; a queue consumer (no timeout of its own) receives one
/// message and does not ack it; the same message arrives again, with delivery count 2, no
/// sooner than 300 ms after the first delivery; once acked, nothing is left in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_not_acked_in_time_is_delivered_again() {
    let timeout = Duration::from_millis(300);
    let weir = Weir::start_with(Options {
        arguments: vec![
            "--default-ack-timeout-ms".into(),
            timeout.as_millis().to_string(),
        ],
        ..Options::default()
    });
    let client = connect(&weir).await;
    client
        .create_topic("emails", topic_options(1, Fsync::Os))
        .await
        .unwrap();
    let mut consumer = client
        .subscribe("emails", "sender", SubscribeOptions::queue())
        .await
        .unwrap();
    publish_confirmed(&client, "emails", vec![Message::new("welcome")]).await;

    let first = next_delivery(&mut consumer).await;
    let first_seen = Instant::now();
    assert_eq!(first.delivery_count, 1);
    let again = next_delivery(&mut consumer).await;
    assert!(
        first_seen.elapsed() >= timeout,
        "redelivered after {:?}, before the ack timeout",
        first_seen.elapsed()
    );
    assert_eq!((again.id(), again.delivery_count), (first.id(), 2));
    assert_eq!(again.value, first.value);

    consumer.ack_one(&again).await.unwrap();
    consumer.flush_acks().await.unwrap();
    let settled = group(&client, "emails", "sender").await;
    assert_eq!(settled.backlog, 0, "{settled:?}");
    assert_eq!(settled.partitions[0].in_flight, 0, "{settled:?}");
}

/// 100 messages `event-0` … `event-99` in one partition, `event-N` stamped
/// [`EVENTS_EPOCH_MS`] + N seconds.
async fn publish_events(client: &Client) {
    client
        .create_topic("events", topic_options(1, Fsync::Os))
        .await
        .unwrap();
    let messages = (0..100).map(|index| Message {
        timestamp_ms: Some(EVENTS_EPOCH_MS + index * 1000),
        ..Message::new(format!("event-{index}"))
    });
    let confirms = publish_confirmed(client, "events", messages.collect()).await;
    let offsets: Vec<u64> = confirms.iter().map(|confirm| confirm.offset).collect();
    assert_eq!(offsets, (0..100).collect::<Vec<_>>());
}

const EVENTS_EPOCH_MS: i64 = 1_700_000_000_000;

/// Reads `count` messages and returns their offsets, checking each payload matches its offset.
async fn read_offsets(consumer: &mut Consumer, count: usize) -> Vec<u64> {
    let mut offsets = Vec::with_capacity(count);
    while offsets.len() < count {
        let delivery = next_delivery(consumer).await;
        assert_eq!(text(&delivery.value), format!("event-{}", delivery.offset));
        consumer.ack_one(&delivery).await.unwrap();
        offsets.push(delivery.offset);
    }
    consumer.flush_acks().await.unwrap();
    offsets
}

/// Goal: a new stream subscription replays from where it is told: the earliest message, an
/// offset, or a time. Method: 100 messages one second apart; subscriptions starting at
/// `Earliest`, `Offset(40)`, `Timestamp(70 s)` and `Timestamp(70.5 s)` must read exactly the
/// offsets 0–99, 40–99, 70–99 and 71–99, in order; one starting at `Latest` gets only a
/// message published after it joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_subscription_replays_from_the_earliest_an_offset_or_a_timestamp() {
    let weir = Weir::start();
    let client = connect(&weir).await;
    publish_events(&client).await;
    let cases = [
        ("from-earliest", Start::Earliest, 0),
        ("from-offset", Start::Offset(40), 40),
        ("from-time", Start::Timestamp(EVENTS_EPOCH_MS + 70_000), 70),
        (
            "between-times",
            Start::Timestamp(EVENTS_EPOCH_MS + 70_500),
            71,
        ),
    ];
    for (group, start, first) in cases {
        let mut consumer = client
            .subscribe("events", group, SubscribeOptions::stream(start))
            .await
            .unwrap();
        let offsets = read_offsets(&mut consumer, 100 - first as usize).await;
        assert_eq!(offsets, (first..100).collect::<Vec<_>>(), "{group}");
        let settled = group_backlog(&client, group).await;
        assert_eq!(settled, 0, "{group} has read everything");
        consumer.close().await.unwrap();
    }

    let mut consumer = client
        .subscribe(
            "events",
            "from-now",
            SubscribeOptions::stream(Start::Latest),
        )
        .await
        .unwrap();
    let late = Message {
        timestamp_ms: Some(EVENTS_EPOCH_MS + 100_000),
        ..Message::new("event-100")
    };
    publish_confirmed(&client, "events", vec![late]).await;
    assert_eq!(read_offsets(&mut consumer, 1).await, [100]);
}

async fn group_backlog(client: &Client, name: &str) -> u64 {
    group(client, "events", name).await.backlog
}

/// Goal: a running stream subscription can be moved back (replay) or forward while its
/// consumer stays connected. Method: one consumer reads all 100 messages; the group is reset to
/// `Earliest` and the same consumer reads 0–99 again; reset to `Offset(90)` it reads 90–99;
/// reset to `Timestamp(95 s)` it reads 95–99.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_a_running_stream_subscription_replays_from_the_new_position() {
    let weir = Weir::start();
    let client = connect(&weir).await;
    publish_events(&client).await;
    let mut consumer = client
        .subscribe("events", "audit", SubscribeOptions::stream(Start::Earliest))
        .await
        .unwrap();
    assert_eq!(
        read_offsets(&mut consumer, 100).await,
        (0..100).collect::<Vec<_>>()
    );
    let resets = [
        (Start::Earliest, 0),
        (Start::Offset(90), 90),
        (Start::Timestamp(EVENTS_EPOCH_MS + 95_000), 95),
    ];
    for (to, first) in resets {
        client.reset_group("events", "audit", to).await.unwrap();
        let offsets = read_offsets(&mut consumer, 100 - first as usize).await;
        assert_eq!(
            offsets,
            (first..100).collect::<Vec<_>>(),
            "after reset to {to:?}"
        );
    }
    assert_eq!(group_backlog(&client, "audit").await, 0);
}

/// Goal: what was confirmed survives a stop and start, and what was acked stays acked.
/// Method: 200 messages published with `fsync = always` to two partitions; a queue consumer
/// takes 100 of them, acks the first 80 and leaves the other 20 unacked; the server is stopped
/// with SIGTERM and started again on the same data directory. A new consumer of the group must
/// then receive exactly the 120 messages not acked, each once, none of the 80 (the 20 delivered
/// before the stop among them); the topic still holds all 200. Their delivery count is not
/// checked: a clean stop releases in-flight messages, and the broker does not count a released
/// delivery (`weir-core` `QueueState::release`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_a_restart_and_acked_ones_are_not_delivered_again() {
    const TOTAL: usize = 200;
    let mut weir = Weir::start();
    let client = connect(&weir).await;
    client
        .create_topic("invoices", topic_options(2, Fsync::Always))
        .await
        .unwrap();
    let messages = (0..TOTAL).map(|index| Message::new(format!("invoice-{index}")));
    let confirms = publish_confirmed(&client, "invoices", messages.collect()).await;
    assert!(
        confirms
            .iter()
            .all(|confirm| confirm.durability == Durability::Fsynced)
    );

    let mut consumer = client
        .subscribe(
            "invoices",
            "accounting",
            SubscribeOptions {
                // Room for the 20 left unacked, or the broker would stop delivering.
                prefetch: 30,
                ..SubscribeOptions::queue()
            },
        )
        .await
        .unwrap();
    let mut acked = BTreeSet::new();
    let mut unacked = BTreeSet::new();
    while acked.len() + unacked.len() < 100 {
        let delivery = next_delivery(&mut consumer).await;
        let payload = text(&delivery.value);
        if acked.len() < 80 {
            consumer.ack_one(&delivery).await.unwrap();
            assert!(acked.insert(payload), "delivered twice before the restart");
        } else {
            assert!(
                unacked.insert(payload),
                "delivered twice before the restart"
            );
        }
    }
    consumer.flush_acks().await.unwrap();

    let status = tokio::task::block_in_place(|| weir.terminate());
    assert!(status.success(), "exit status {status:?}\n{}", weir.log());
    drop(consumer);
    drop(client);
    tokio::task::block_in_place(|| weir.restart());

    let client = connect(&weir).await;
    let topic = client.topic("invoices").await.unwrap();
    let stored: u64 = topic
        .partitions
        .iter()
        .map(|partition| partition.end_offset - partition.start_offset)
        .sum();
    assert_eq!(stored, TOTAL as u64, "every confirmed message is kept");

    let mut consumer = client
        .subscribe("invoices", "accounting", SubscribeOptions::queue())
        .await
        .unwrap();
    let mut received = BTreeSet::new();
    while received.len() < TOTAL - acked.len() {
        let delivery = next_delivery(&mut consumer).await;
        let payload = text(&delivery.value);
        assert!(
            !acked.contains(&payload),
            "{payload} was acked before the restart"
        );
        consumer.ack_one(&delivery).await.unwrap();
        assert!(
            received.insert(payload.clone()),
            "{payload} delivered twice after the restart"
        );
    }
    consumer.flush_acks().await.unwrap();
    let expected: BTreeSet<String> = (0..TOTAL)
        .map(|index| format!("invoice-{index}"))
        .filter(|payload| !acked.contains(payload))
        .collect();
    // Among them the 20 delivered and not acked before the stop.
    assert_eq!(received, expected);
    let settled = group(&client, "invoices", "accounting").await;
    assert_eq!(settled.backlog, 0, "{settled:?}");
}

/// Goal: a stream subscription's committed offsets survive a stop and start. Method: 100
/// messages over two partitions; a stream consumer reads and acks 60 of them (a prefix of each
/// partition); SIGTERM, start again; a consumer of the group must resume each partition exactly
/// after the last offset acked and read the rest, nothing acked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_subscription_resumes_at_its_committed_offsets_after_a_restart() {
    let mut weir = Weir::start();
    let client = connect(&weir).await;
    client
        .create_topic("audit-log", topic_options(2, Fsync::Always))
        .await
        .unwrap();
    let messages =
        (0..100u32).map(|index| Message::new(format!("entry-{index}")).with_partition(index % 2));
    publish_confirmed(&client, "audit-log", messages.collect()).await;

    let mut consumer = client
        .subscribe(
            "audit-log",
            "archiver",
            SubscribeOptions::stream(Start::Earliest),
        )
        .await
        .unwrap();
    let mut committed = [0u64; 2];
    for _ in 0..60 {
        let delivery = next_delivery(&mut consumer).await;
        let partition = delivery.partition as usize;
        assert_eq!(delivery.offset, committed[partition], "partition order");
        consumer.ack_one(&delivery).await.unwrap();
        committed[partition] += 1;
    }
    consumer.flush_acks().await.unwrap();

    let status = tokio::task::block_in_place(|| weir.terminate());
    assert!(status.success(), "exit status {status:?}\n{}", weir.log());
    drop(consumer);
    drop(client);
    tokio::task::block_in_place(|| weir.restart());

    let client = connect(&weir).await;
    let mut consumer = client
        .subscribe(
            "audit-log",
            "archiver",
            SubscribeOptions::stream(Start::Earliest),
        )
        .await
        .unwrap();
    let mut next = committed;
    for _ in 0..40 {
        let delivery = next_delivery(&mut consumer).await;
        let partition = delivery.partition as usize;
        assert_eq!(
            delivery.offset, next[partition],
            "partition {partition} resumes at its committed offset {} and keeps order",
            committed[partition]
        );
        consumer.ack_one(&delivery).await.unwrap();
        next[partition] += 1;
    }
    consumer.flush_acks().await.unwrap();
    assert_eq!(next, [50, 50], "everything read once");
    assert_eq!(group(&client, "audit-log", "archiver").await.backlog, 0);
}
