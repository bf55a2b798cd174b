//! The broker through its public API, in process, with a manual clock where time matters.

mod common;

use common::Fixture;

use std::collections::BTreeSet;
use std::time::Duration;

use weir_core::{
    Durability, Error, FsyncPolicy, Message, MessageId, QueueSettings, StartPosition,
    SubscribeOptions, SubscriptionKind, TopicConfig,
};

fn messages(range: std::ops::Range<u32>) -> Vec<Message> {
    range
        .map(|index| Message::new(format!("message {index}")))
        .collect()
}

fn queue(prefetch: u32) -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Queue,
        prefetch,
        ack_timeout: Some(Duration::from_secs(5)),
        ..SubscribeOptions::default()
    }
}

fn stream(start: StartPosition) -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Stream,
        start,
        ..SubscribeOptions::default()
    }
}

#[tokio::test]
async fn publish_confirms_offsets_and_fsynced_durability() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let first = broker
        .publish_messages("orders", None, &messages(0..3))
        .await
        .unwrap();
    let second = broker
        .publish_messages("orders", None, &messages(3..5))
        .await
        .unwrap();
    assert_eq!(
        (first.ranges[0].base_offset, first.ranges[0].last_offset),
        (0, 2)
    );
    assert_eq!(
        (second.ranges[0].base_offset, second.ranges[0].last_offset),
        (3, 4)
    );
    assert_eq!(first.durability, Durability::Fsynced);
    let records = broker.read("orders", 0, 0, 100).unwrap();
    assert_eq!(records.len(), 5);
    assert_eq!(&records[4].value[..], b"message 4");
    broker.shutdown().await;
}

#[tokio::test]
async fn os_policy_confirms_with_os_durability() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let config = TopicConfig {
        fsync: FsyncPolicy::Os,
        ..TopicConfig::default()
    };
    broker.create_topic("fast", config).await.unwrap();
    let confirm = broker
        .publish_messages("fast", None, &messages(0..1))
        .await
        .unwrap();
    assert_eq!(confirm.durability, Durability::Os);
    broker.shutdown().await;
}

#[tokio::test]
async fn topics_are_created_listed_and_deleted() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let config = TopicConfig {
        partitions: 3,
        ..TopicConfig::default()
    };
    broker.create_topic("a", config.clone()).await.unwrap();
    assert!(matches!(
        broker.create_topic("a", config).await,
        Err(Error::TopicExists(_))
    ));
    assert!(matches!(
        broker
            .create_topic("bad/name", TopicConfig::default())
            .await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(broker.topic("a").unwrap().partitions.len(), 3);
    assert_eq!(broker.topics().len(), 1);
    broker.delete_topic("a").await.unwrap();
    assert!(matches!(broker.topic("a"), Err(Error::UnknownTopic(_))));
    assert!(matches!(
        broker.delete_topic("a").await,
        Err(Error::UnknownTopic(_))
    ));
    broker.shutdown().await;
}

#[tokio::test]
async fn keyed_messages_land_in_the_partition_of_their_key_in_order() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let config = TopicConfig {
        partitions: 4,
        ..TopicConfig::default()
    };
    broker.create_topic("keyed", config).await.unwrap();
    let batch: Vec<Message> = (0..200)
        .map(|index| Message::new(format!("{index}")).with_key(format!("key-{}", index % 10)))
        .collect();
    broker
        .publish_messages("keyed", None, &batch)
        .await
        .unwrap();
    for partition in 0..4 {
        let records = broker.read("keyed", partition, 0, 1000).unwrap();
        let mut last_per_key = std::collections::HashMap::new();
        for record in records {
            let key = record.key.clone().unwrap();
            assert_eq!(weir_core::partition_for_key(&key, 4), partition);
            let value: u32 = std::str::from_utf8(&record.value).unwrap().parse().unwrap();
            if let Some(previous) = last_per_key.insert(key, value) {
                assert!(previous < value, "per-key order kept");
            }
        }
    }
    broker.shutdown().await;
}

/// Three competing consumers: every message goes to exactly one of them.
#[tokio::test]
async fn queue_consumers_compete_and_each_message_goes_to_one() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("jobs", None, &messages(0..300))
        .await
        .unwrap();
    let consumers = [
        broker
            .subscribe("jobs", "workers", queue(10))
            .await
            .unwrap(),
        broker
            .subscribe("jobs", "workers", queue(10))
            .await
            .unwrap(),
        broker
            .subscribe("jobs", "workers", queue(10))
            .await
            .unwrap(),
    ];
    let mut seen = Vec::new();
    let mut per_consumer = [0; 3];
    while seen.len() < 300 {
        for (index, consumer) in consumers.iter().enumerate() {
            let deliveries = consumer.try_next(10).unwrap();
            assert!(deliveries.len() <= 10, "prefetch bounds deliveries");
            per_consumer[index] += deliveries.len();
            let ids: Vec<MessageId> = deliveries.iter().map(|delivery| delivery.id()).collect();
            seen.extend(ids.iter().map(|id| id.offset));
            consumer.ack(&ids).await.unwrap();
        }
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 300);
    assert_eq!(unique.len(), 300);
    assert!(
        per_consumer.iter().all(|&count| count > 0),
        "{per_consumer:?}"
    );
    let group = broker.group("jobs", "workers").unwrap();
    assert_eq!(group.backlog, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn prefetch_stops_deliveries_until_acks_free_credit() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("jobs", None, &messages(0..10))
        .await
        .unwrap();
    let consumer = broker.subscribe("jobs", "workers", queue(3)).await.unwrap();
    let first = consumer.try_next(100).unwrap();
    assert_eq!(first.len(), 3);
    assert!(consumer.try_next(100).unwrap().is_empty());
    consumer.ack(&[first[0].id()]).await.unwrap();
    assert_eq!(consumer.try_next(100).unwrap().len(), 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn nack_requeues_now_or_after_a_delay() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("jobs", None, &messages(0..2))
        .await
        .unwrap();
    let consumer = broker
        .subscribe("jobs", "workers", queue(10))
        .await
        .unwrap();
    let first = consumer.try_next(10).unwrap();
    assert_eq!(first.len(), 2);
    consumer
        .nack(&[first[0].id()], true, Duration::ZERO)
        .await
        .unwrap();
    consumer
        .nack(&[first[1].id()], true, Duration::from_secs(2))
        .await
        .unwrap();
    let again = consumer.try_next(10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].record.offset, 0);
    assert_eq!(again[0].delivery_count, 2);
    fixture.clock.advance(Duration::from_millis(1999));
    assert!(
        consumer.try_next(10).unwrap().is_empty(),
        "not before its delay"
    );
    fixture.clock.advance(Duration::from_millis(1));
    let delayed = consumer.try_next(10).unwrap();
    assert_eq!(delayed.len(), 1);
    assert_eq!(delayed[0].record.offset, 1);
    // Reject without requeue: gone for good.
    consumer
        .nack(&[delayed[0].id()], false, Duration::ZERO)
        .await
        .unwrap();
    consumer.ack(&[again[0].id()]).await.unwrap();
    fixture.clock.advance(Duration::from_secs(60));
    broker.tick().await;
    assert!(consumer.try_next(10).unwrap().is_empty());
    assert_eq!(broker.group("jobs", "workers").unwrap().backlog, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn unacked_messages_are_redelivered_after_the_ack_timeout() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("jobs", None, &messages(0..1))
        .await
        .unwrap();
    let slow = broker
        .subscribe("jobs", "workers", queue(10))
        .await
        .unwrap();
    let other = broker
        .subscribe("jobs", "workers", queue(10))
        .await
        .unwrap();
    let first = slow.try_next(10).unwrap();
    assert_eq!(first.len(), 1);
    fixture.clock.advance(Duration::from_millis(4999));
    broker.tick().await;
    assert!(
        other.try_next(10).unwrap().is_empty(),
        "still within the timeout"
    );
    fixture.clock.advance(Duration::from_millis(1));
    broker.tick().await;
    let redelivered = other.try_next(10).unwrap();
    assert_eq!(redelivered.len(), 1);
    assert_eq!(redelivered[0].delivery_count, 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_dropped_consumer_releases_its_messages_to_the_others() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("jobs", None, &messages(0..5))
        .await
        .unwrap();
    let crashed = broker
        .subscribe("jobs", "workers", queue(10))
        .await
        .unwrap();
    let survivor = broker
        .subscribe("jobs", "workers", queue(10))
        .await
        .unwrap();
    assert_eq!(crashed.try_next(10).unwrap().len(), 5);
    assert!(survivor.try_next(10).unwrap().is_empty());
    drop(crashed);
    assert_eq!(survivor.try_next(10).unwrap().len(), 5);
    broker.shutdown().await;
}

/// Three subscriptions on one topic each receive every message, in partition order.
#[tokio::test]
async fn every_subscription_receives_every_message() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("events", None, &messages(0..50))
        .await
        .unwrap();
    for group in ["email", "sms", "audit"] {
        let consumer = broker
            .subscribe("events", group, stream(StartPosition::Earliest))
            .await
            .unwrap();
        let mut offsets = Vec::new();
        while offsets.len() < 50 {
            let deliveries = consumer.next(20).await.unwrap();
            offsets.extend(deliveries.iter().map(|delivery| delivery.record.offset));
        }
        assert_eq!(offsets, (0..50).collect::<Vec<u64>>());
    }
    broker.shutdown().await;
}

#[tokio::test]
async fn stream_partitions_are_shared_and_rebalanced() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let config = TopicConfig {
        partitions: 4,
        ..TopicConfig::default()
    };
    broker.create_topic("events", config).await.unwrap();
    for partition in 0..4 {
        broker
            .publish_messages("events", Some(partition), &messages(0..10))
            .await
            .unwrap();
    }
    let first = broker
        .subscribe("events", "group", stream(StartPosition::Earliest))
        .await
        .unwrap();
    let second = broker
        .subscribe("events", "group", stream(StartPosition::Earliest))
        .await
        .unwrap();
    let from_first: BTreeSet<u32> = first
        .try_next(100)
        .unwrap()
        .iter()
        .map(|delivery| delivery.partition)
        .collect();
    let from_second: BTreeSet<u32> = second
        .try_next(100)
        .unwrap()
        .iter()
        .map(|delivery| delivery.partition)
        .collect();
    assert_eq!(from_first.len(), 2);
    assert_eq!(from_second.len(), 2);
    assert!(from_first.is_disjoint(&from_second));
    // The first commits nothing and leaves: its partitions go to the second, from the start.
    drop(first);
    let taken_over = second.try_next(100).unwrap();
    let partitions: BTreeSet<u32> = taken_over
        .iter()
        .map(|delivery| delivery.partition)
        .collect();
    assert_eq!(partitions, from_first);
    assert_eq!(taken_over.len(), 20);
    broker.shutdown().await;
}

#[tokio::test]
async fn streams_replay_from_earliest_an_offset_or_a_time() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("log", None, &messages(0..5))
        .await
        .unwrap();
    fixture.clock.advance(Duration::from_secs(60));
    let middle_ms = 1_700_000_000_000 + 60_000;
    broker
        .publish_messages("log", None, &messages(5..10))
        .await
        .unwrap();

    let from_offset = broker
        .subscribe("log", "from-offset", stream(StartPosition::Offset(7)))
        .await
        .unwrap();
    assert_eq!(from_offset.try_next(100).unwrap()[0].record.offset, 7);
    let from_time = broker
        .subscribe(
            "log",
            "from-time",
            stream(StartPosition::Timestamp(middle_ms)),
        )
        .await
        .unwrap();
    assert_eq!(from_time.try_next(100).unwrap()[0].record.offset, 5);
    let latest = broker
        .subscribe("log", "latest", stream(StartPosition::Latest))
        .await
        .unwrap();
    assert!(latest.try_next(100).unwrap().is_empty());

    let consumer = broker
        .subscribe("log", "replayer", stream(StartPosition::Earliest))
        .await
        .unwrap();
    let all = consumer.try_next(100).unwrap();
    consumer.ack(&[all.last().unwrap().id()]).await.unwrap();
    assert!(consumer.try_next(100).unwrap().is_empty());
    broker
        .reset_group("log", "replayer", StartPosition::Earliest)
        .await
        .unwrap();
    assert_eq!(
        consumer.try_next(100).unwrap().len(),
        10,
        "reset replays while running"
    );
    broker.shutdown().await;
}

/// Publish confirmed, consume some with acks, stop, start: the rest comes, acked ones do not.
#[tokio::test]
async fn acks_and_messages_survive_a_restart() {
    let fixture = Fixture::new();
    {
        let broker = fixture.open().await;
        broker
            .publish_messages("jobs", None, &messages(0..10))
            .await
            .unwrap();
        let consumer = broker
            .subscribe("jobs", "workers", queue(100))
            .await
            .unwrap();
        let deliveries = consumer.try_next(10).unwrap();
        let acked: Vec<MessageId> = deliveries
            .iter()
            .filter(|delivery| delivery.record.offset % 2 == 0)
            .map(|delivery| delivery.id())
            .collect();
        consumer.ack(&acked).await.unwrap();
        let streamer = broker
            .subscribe("jobs", "audit", stream(StartPosition::Earliest))
            .await
            .unwrap();
        let streamed = streamer.try_next(4).unwrap();
        streamer.ack(&[streamed[3].id()]).await.unwrap();
        broker.shutdown().await;
    }
    let broker = fixture.open().await;
    let consumer = broker
        .subscribe("jobs", "workers", queue(100))
        .await
        .unwrap();
    let again: Vec<u64> = consumer
        .try_next(100)
        .unwrap()
        .iter()
        .map(|delivery| delivery.record.offset)
        .collect();
    assert_eq!(again, vec![1, 3, 5, 7, 9]);
    let streamer = broker
        .subscribe("jobs", "audit", stream(StartPosition::Earliest))
        .await
        .unwrap();
    assert_eq!(streamer.try_next(100).unwrap()[0].record.offset, 4);
    assert_eq!(broker.topic("jobs").unwrap().partitions[0].end_offset, 10);
    broker.shutdown().await;
}

#[tokio::test]
async fn a_waiting_consumer_wakes_on_publish() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let consumer = broker.subscribe("live", "group", queue(10)).await.unwrap();
    let waiter =
        tokio::spawn(async move { consumer.next(10).await.map(|deliveries| deliveries.len()) });
    tokio::task::yield_now().await;
    broker
        .publish_messages("live", None, &messages(0..1))
        .await
        .unwrap();
    let received = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(received, 1);
    broker.shutdown().await;
}

#[tokio::test]
async fn subscription_kind_mismatch_and_unknown_groups_are_clear_errors() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let _queue = broker.subscribe("t", "g", queue(1)).await.unwrap();
    assert!(matches!(
        broker
            .subscribe("t", "g", stream(StartPosition::Earliest))
            .await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        broker.group("t", "nope"),
        Err(Error::NoSuchSubscription { .. })
    ));
    assert!(matches!(
        broker
            .publish("t", None, bytes::Bytes::from_static(b"garbage"))
            .await,
        Err(Error::MalformedBatch(_))
    ));
    broker.shutdown().await;
}

/// Issue 10 defect 21: a message with millions of empty headers made a delivery larger than a
/// protocol frame and wedged its subscription. Goal: headers per message are bounded at
/// publish, through every way in, with a clear error, and nothing is stored. Method: publish,
/// publish to an exchange and schedule a batch with one message of `MAX_RECORD_HEADERS + 1`
/// empty headers; then one with exactly the limit, which is accepted.
#[tokio::test]
async fn a_message_with_too_many_headers_is_refused_at_publish() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let batch_with_headers = |count: u32| {
        let headers: Vec<(&str, &[u8])> = (0..count).map(|_| ("", &b""[..])).collect();
        let mut builder = weir_core::BatchBuilder::new();
        builder.push(common::START_MS, None, &[], b"ordinary");
        builder.push(common::START_MS, None, &headers, b"many headers");
        builder.finish()
    };
    broker
        .create_topic("events", TopicConfig::default())
        .await
        .unwrap();
    let too_many = weir_core::MAX_RECORD_HEADERS + 1;
    let refused = broker
        .publish("events", None, batch_with_headers(too_many))
        .await;
    assert!(
        matches!(&refused, Err(Error::InvalidArgument(text)) if text.contains("headers")),
        "{refused:?}"
    );
    broker
        .create_exchange("all", weir_core::ExchangeKind::Fanout, None)
        .await
        .unwrap();
    let refused = broker
        .publish_to_exchange("all", "", batch_with_headers(too_many), false)
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(broker.topic("events").unwrap().partitions[0].end_offset, 0);

    broker
        .publish(
            "events",
            None,
            batch_with_headers(weir_core::MAX_RECORD_HEADERS),
        )
        .await
        .expect("the limit itself is accepted");
    let stored = broker.read("events", 0, 0, 10).unwrap();
    assert_eq!(
        stored[1].headers.len(),
        weir_core::MAX_RECORD_HEADERS as usize
    );
    broker.shutdown().await;
}

/// Goal: queue settings no subscription could keep are refused when it is created, with a
/// clear error, and leave nothing behind (issue 10, defect 5: `dead_letter_topic: "a/b"` was
/// accepted and then every dead letter failed, retried ~100 times a second; defect 7:
/// `max_deliveries: 0` was accepted and acted as 1). Method: subscribe with each bad setting
/// on a topic that does not exist yet; each is `InvalidArgument` naming the setting, and the
/// broker has neither the topic nor a group afterwards. A valid setting still works.
#[tokio::test]
async fn queue_settings_no_queue_could_keep_are_refused_at_creation() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let with = |queue: QueueSettings| SubscribeOptions {
        kind: SubscriptionKind::Queue,
        queue,
        ..SubscribeOptions::default()
    };
    let refusals = [
        (
            QueueSettings {
                dead_letter_topic: Some("a/b".into()),
                ..QueueSettings::default()
            },
            "dead-letter topic name 'a/b'",
        ),
        (
            QueueSettings {
                dead_letter_topic: Some("orders".into()),
                ..QueueSettings::default()
            },
            "dead-letter topic cannot be 'orders'",
        ),
        (
            QueueSettings {
                max_deliveries: Some(0),
                ..QueueSettings::default()
            },
            "max_deliveries must be at least 1",
        ),
    ];
    for (settings, expected) in refusals {
        match broker
            .subscribe("orders", "billing", with(settings.clone()))
            .await
        {
            Err(Error::InvalidArgument(message)) => {
                assert!(message.contains(expected), "{settings:?}: {message}")
            }
            Err(other) => panic!("{settings:?}: {other:?}"),
            Ok(_) => panic!("{settings:?} was accepted"),
        }
    }
    assert!(broker.topics().is_empty(), "no topic was auto-created");
    assert!(broker.groups(None).is_empty(), "no group was created");

    let consumer = broker
        .subscribe(
            "orders",
            "billing",
            with(QueueSettings {
                max_deliveries: Some(1),
                dead_letter_topic: Some("orders.failed".into()),
                ..QueueSettings::default()
            }),
        )
        .await
        .expect("valid settings are accepted");
    drop(consumer);
    broker.shutdown().await;
}

/// Goal: a dead-letter topic that cannot be written neither spins nor loses the letter (issue
/// 10, defect 5: the timer retried every 10 ms, ~100 log lines a second, forever). Method: a
/// file where the dead-letter topic's directory would go, so creating it fails; reject a
/// message and run the timer for one second: a handful of attempts, backing off, each counted
/// in `stats().background_failures`. Once the way is clear, the letter is stored.
#[tokio::test]
async fn a_failing_dead_letter_topic_is_retried_with_backoff_and_counted() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let in_the_way = fixture.dir.path().join("topics").join("orders.failed");
    std::fs::write(&in_the_way, b"not a directory").unwrap();
    broker
        .publish_messages("orders", None, &[Message::new("poison")])
        .await
        .unwrap();
    let options = SubscribeOptions {
        kind: SubscriptionKind::Queue,
        queue: QueueSettings {
            max_deliveries: Some(1),
            dead_letter_topic: Some("orders.failed".into()),
            ..QueueSettings::default()
        },
        ..SubscribeOptions::default()
    };
    let consumer = broker
        .subscribe("orders", "billing", options)
        .await
        .unwrap();
    let ids: Vec<MessageId> = consumer
        .try_next(10)
        .unwrap()
        .iter()
        .map(|delivery| delivery.id())
        .collect();
    assert_eq!(ids.len(), 1);
    consumer.nack(&ids, false, Duration::ZERO).await.unwrap();

    // One second of the timer, every 10 ms: attempts at 0, 100, 300 and 700 ms.
    for _ in 0..100 {
        broker.tick().await;
        fixture.clock.advance(Duration::from_millis(10));
    }
    let failures = broker.stats().background_failures["dead_letters"];
    assert!(
        (1..=5).contains(&failures),
        "{failures} attempts in one second"
    );

    std::fs::remove_file(&in_the_way).unwrap();
    fixture.clock.advance(Duration::from_secs(31));
    broker.tick().await;
    let queues = broker.dead_letter_queues();
    assert_eq!(queues.len(), 1, "{queues:?}");
    assert_eq!(queues[0].topic, "orders.failed");
    assert_eq!(queues[0].pending, 1, "the letter was kept and stored");
    drop(consumer);
    broker.shutdown().await;
}

/// Issue 10 defect 8: an ack of a delivery id that was never delivered answered as settled.
/// Goal: ack and nack say per id what they did — settled, already settled, or unknown — and
/// an unknown id changes nothing (a stream does not commit past what it delivered).
#[tokio::test]
async fn acks_and_nacks_say_per_id_what_they_settled() {
    use weir_core::Settlement::{AlreadySettled, Settled, Unknown};
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("jobs", None, &messages(0..3))
        .await
        .unwrap();
    let consumer = broker.subscribe("jobs", "workers", queue(1)).await.unwrap();
    let delivered = consumer.try_next(10).unwrap();
    assert_eq!(delivered.len(), 1);
    let id = |offset| MessageId {
        partition: 0,
        offset,
    };
    assert_eq!(
        consumer.ack(&[id(0), id(1), id(99)]).await.unwrap(),
        [Settled, Unknown, Unknown]
    );
    assert_eq!(consumer.ack(&[id(0)]).await.unwrap(), [AlreadySettled]);
    assert_eq!(
        consumer
            .nack(&[id(0), id(2)], true, Duration::ZERO)
            .await
            .unwrap(),
        [AlreadySettled, Unknown]
    );
    let next = consumer.try_next(10).unwrap();
    assert_eq!(
        next[0].record.offset, 1,
        "the unknown ack did not settle offset 1"
    );
    assert_eq!(
        consumer.nack(&[id(1)], true, Duration::ZERO).await.unwrap(),
        [Settled]
    );

    let reader = broker
        .subscribe("jobs", "audit", stream(StartPosition::Earliest))
        .await
        .unwrap();
    let read = reader.try_next(1).unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        reader.ack(&[id(2), id(0)]).await.unwrap(),
        [Unknown, Settled]
    );
    assert_eq!(reader.ack(&[id(0)]).await.unwrap(), [AlreadySettled]);
    assert_eq!(
        broker.group("jobs", "audit").unwrap().partitions[0].committed,
        1
    );
    broker.shutdown().await;
}
