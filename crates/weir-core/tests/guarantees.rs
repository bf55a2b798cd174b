//! Routing, dead letters, back-pressure and per-key ordering through the public API, with a
//! manual clock.

mod common;

use common::{Fixture, batch};

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use weir_core::{
    Binding, Error, ExchangeKind, Message, MessageId, Overflow, QueueSettings, SubscribeOptions,
    SubscriptionKind,
};

fn queue_with(settings: QueueSettings, prefetch: u32) -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Queue,
        prefetch,
        ack_timeout: Some(Duration::from_secs(5)),
        queue: settings,
        ..SubscribeOptions::default()
    }
}

fn binding(topic: &str, key: &str) -> Binding {
    Binding {
        topic: topic.into(),
        key: key.into(),
        headers: Vec::new(),
        match_all: true,
    }
}

/// The guide's example: VIP and normal orders go to different topics by a topic exchange.
#[tokio::test]
async fn a_topic_exchange_routes_orders_by_type() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .create_exchange("orders", ExchangeKind::Topic, None)
        .await
        .unwrap();
    broker
        .bind("orders", binding("vip-orders", "order.vip.*"))
        .await
        .unwrap();
    broker
        .bind("orders", binding("normal-orders", "order.normal.*"))
        .await
        .unwrap();
    broker
        .bind("orders", binding("audit", "order.#"))
        .await
        .unwrap();

    let routed = broker
        .publish_to_exchange("orders", "order.vip.created", batch(&["vip 1"]), true)
        .await
        .unwrap();
    let targets: BTreeSet<&str> = routed
        .targets
        .iter()
        .map(|(topic, _)| topic.as_str())
        .collect();
    assert_eq!(targets, BTreeSet::from(["vip-orders", "audit"]));
    broker
        .publish_to_exchange("orders", "order.normal.created", batch(&["normal 1"]), true)
        .await
        .unwrap();
    assert_eq!(broker.read("vip-orders", 0, 0, 10).unwrap().len(), 1);
    assert_eq!(broker.read("normal-orders", 0, 0, 10).unwrap().len(), 1);
    assert_eq!(broker.read("audit", 0, 0, 10).unwrap().len(), 2);

    // Unroutable: refused when mandatory, dropped and counted otherwise.
    let refused = broker
        .publish_to_exchange("orders", "invoice.created", batch(&["x"]), true)
        .await;
    assert!(matches!(refused, Err(Error::Unroutable { .. })));
    let dropped = broker
        .publish_to_exchange("orders", "invoice.created", batch(&["x", "y"]), false)
        .await
        .unwrap();
    assert_eq!(dropped.dropped, 2);
    assert_eq!(broker.unroutable_dropped(), 2);
    broker.shutdown().await;
}

#[tokio::test]
async fn an_alternate_topic_catches_unroutable_messages_and_bindings_survive_restart() {
    let fixture = Fixture::new();
    {
        let broker = fixture.open().await;
        broker
            .create_exchange("events", ExchangeKind::Direct, Some("unrouted".into()))
            .await
            .unwrap();
        broker
            .bind("events", binding("signups", "user.signup"))
            .await
            .unwrap();
        broker.shutdown().await;
    }
    let broker = fixture.open().await;
    assert_eq!(broker.exchange("events").unwrap().bindings.len(), 1);
    broker
        .publish_to_exchange("events", "user.deleted", batch(&["lost?"]), true)
        .await
        .unwrap();
    assert_eq!(broker.read("unrouted", 0, 0, 10).unwrap().len(), 1);
    broker.unbind("events", "signups", None).await.unwrap();
    assert!(broker.exchange("events").unwrap().bindings.is_empty());
    broker.shutdown().await;
}

#[tokio::test]
async fn fanout_and_headers_exchanges_copy_to_each_match() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .create_exchange("all", ExchangeKind::Fanout, None)
        .await
        .unwrap();
    for topic in ["email", "sms", "push"] {
        broker.bind("all", binding(topic, "")).await.unwrap();
    }
    let routed = broker
        .publish_to_exchange("all", "", batch(&["hi"]), true)
        .await
        .unwrap();
    assert_eq!(routed.targets.len(), 3);

    broker
        .create_exchange("regions", ExchangeKind::Headers, None)
        .await
        .unwrap();
    let eu = Binding {
        topic: "eu".into(),
        key: String::new(),
        headers: vec![("region".into(), "eu".into())],
        match_all: true,
    };
    broker.bind("regions", eu).await.unwrap();
    let mut builder = weir_core::BatchBuilder::new();
    builder.push(1, None, &[("region", b"eu")], b"for eu");
    builder.push(1, None, &[("region", b"us")], b"for nobody");
    let routed = broker
        .publish_to_exchange("regions", "", builder.finish(), false)
        .await
        .unwrap();
    assert_eq!(routed.dropped, 1);
    let stored = broker.read("eu", 0, 0, 10).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(&stored[0].value[..], b"for eu");
    broker.shutdown().await;
}

/// A poison message: delivered exactly `max_deliveries` times, then dead-lettered with its
/// history; then redriven and consumed.
#[tokio::test]
async fn a_poison_message_is_dead_lettered_after_max_deliveries_then_redriven() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let settings = QueueSettings {
        max_deliveries: Some(3),
        ..QueueSettings::default()
    };
    broker
        .publish_messages(
            "payments",
            None,
            &[Message::new("poison")
                .with_key("order-7")
                .with_header("trace", "abc")],
        )
        .await
        .unwrap();
    let consumer = broker
        .subscribe("payments", "charger", queue_with(settings, 10))
        .await
        .unwrap();
    for attempt in 1..=3 {
        let deliveries = consumer.try_next(10).unwrap();
        assert_eq!(deliveries.len(), 1, "attempt {attempt}");
        assert_eq!(deliveries[0].delivery_count, attempt);
        consumer
            .nack_with_error(&[deliveries[0].id()], true, Duration::ZERO, "card declined")
            .await
            .unwrap();
    }
    assert!(
        consumer.try_next(10).unwrap().is_empty(),
        "no fourth delivery"
    );
    broker.tick().await;
    let dead = broker.dead_letters("payments.charger.dlq", 10).unwrap();
    assert_eq!(dead.len(), 1);
    let record = &dead[0].record;
    let header = |name: &str| {
        std::str::from_utf8(record.header(&format!("weir.dlq.{name}")).unwrap())
            .unwrap()
            .to_owned()
    };
    assert_eq!(header("reason"), "max_deliveries");
    assert_eq!(header("error"), "card declined");
    assert_eq!(header("topic"), "payments");
    assert_eq!(header("partition"), "0");
    assert_eq!(header("offset"), "0");
    assert_eq!(header("delivery_count"), "3");
    assert_eq!(header("first_delivery_ms"), "1700000000000");
    assert_eq!(&record.value[..], b"poison");
    assert_eq!(record.key.as_deref(), Some(&b"order-7"[..]));
    assert_eq!(
        record.header("trace").map(|value| &value[..]),
        Some(&b"abc"[..])
    );
    assert_eq!(broker.group("payments", "charger").unwrap().backlog, 0);
    assert_eq!(broker.dead_letter_queues()[0].pending, 1);

    assert_eq!(
        broker
            .redrive("payments.charger.dlq", None, None, 100)
            .await
            .unwrap(),
        1
    );
    assert!(
        broker
            .dead_letters("payments.charger.dlq", 10)
            .unwrap()
            .is_empty()
    );
    let again = consumer.try_next(10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(&again[0].record.value[..], b"poison");
    assert!(again[0].record.header("weir.dlq.reason").is_none());
    consumer.ack(&[again[0].id()]).await.unwrap();
    broker.shutdown().await;
}

/// Issue 10 defect 6: redrive without a target returns a dead letter to the subscription it
/// came from and to no other: the original message at its own partition and offset (so its
/// key and order), with a fresh delivery count, also after a restart.
#[tokio::test]
async fn redrive_to_origin_reaches_only_the_origin_subscription_at_the_same_place() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .create_topic(
            "orders",
            weir_core::TopicConfig {
                partitions: 4,
                ..weir_core::TopicConfig::default()
            },
        )
        .await
        .unwrap();
    let billing = broker
        .subscribe(
            "orders",
            "billing",
            queue_with(QueueSettings::default(), 100),
        )
        .await
        .unwrap();
    let audit = broker
        .subscribe("orders", "audit", queue_with(QueueSettings::default(), 100))
        .await
        .unwrap();
    let messages: Vec<Message> = (0..8)
        .map(|index| Message::new(format!("order {index}")).with_key(format!("customer-{index}")))
        .collect();
    broker
        .publish_messages("orders", None, &messages)
        .await
        .unwrap();
    let audited = audit.try_next(100).unwrap();
    assert_eq!(audited.len(), 8);
    audit
        .ack(
            &audited
                .iter()
                .map(|delivery| delivery.id())
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    let delivered = billing.try_next(100).unwrap();
    let poison = delivered
        .iter()
        .find(|delivery| &delivery.record.value[..] == b"order 5")
        .unwrap()
        .clone();
    let others: Vec<MessageId> = delivered
        .iter()
        .map(|delivery| delivery.id())
        .filter(|id| *id != poison.id())
        .collect();
    billing.ack(&others).await.unwrap();
    billing
        .nack(&[poison.id()], false, Duration::ZERO)
        .await
        .unwrap();
    broker.tick().await;
    assert_eq!(
        broker.dead_letters("orders.billing.dlq", 10).unwrap().len(),
        1
    );

    assert_eq!(
        broker
            .redrive("orders.billing.dlq", None, None, 100)
            .await
            .unwrap(),
        1
    );
    assert!(
        broker
            .dead_letters("orders.billing.dlq", 10)
            .unwrap()
            .is_empty()
    );
    assert!(
        audit.try_next(100).unwrap().is_empty(),
        "another subscription gets nothing"
    );
    assert_eq!(broker.group("orders", "audit").unwrap().backlog, 0);
    let end_offsets: Vec<u64> = broker
        .topic("orders")
        .unwrap()
        .partitions
        .iter()
        .map(|partition| partition.end_offset)
        .collect();
    assert_eq!(
        end_offsets.iter().sum::<u64>(),
        8,
        "nothing was published again"
    );
    assert_eq!(broker.group("orders", "billing").unwrap().backlog, 1);
    drop(billing);
    drop(audit);
    broker.shutdown().await;
    drop(broker);

    // Pending again durably: after a restart billing still gets it, where it was.
    let broker = fixture.open().await;
    let billing = broker
        .subscribe(
            "orders",
            "billing",
            queue_with(QueueSettings::default(), 100),
        )
        .await
        .unwrap();
    let again = billing.try_next(100).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].id(), poison.id(), "same partition and offset");
    assert_eq!(again[0].record.key, poison.record.key);
    assert_eq!(again[0].record.value, poison.record.value);
    assert!(again[0].record.header("weir.dlq.reason").is_none());
    assert_eq!(again[0].delivery_count, 1, "a fresh delivery count");
    billing.ack(&[again[0].id()]).await.unwrap();
    let audit = broker
        .subscribe("orders", "audit", queue_with(QueueSettings::default(), 100))
        .await
        .unwrap();
    assert!(audit.try_next(100).unwrap().is_empty());
    broker.shutdown().await;
}

/// A dead letter whose subscription was deleted cannot go back there: the redrive says so and
/// moves nothing; with a target it is published there.
#[tokio::test]
async fn redrive_to_a_deleted_origin_is_refused_and_a_target_still_works() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("jobs", None, &[Message::new("job").with_key("k")])
        .await
        .unwrap();
    let consumer = broker
        .subscribe("jobs", "workers", queue_with(QueueSettings::default(), 10))
        .await
        .unwrap();
    let deliveries = consumer.try_next(10).unwrap();
    consumer
        .nack(&[deliveries[0].id()], false, Duration::ZERO)
        .await
        .unwrap();
    broker.tick().await;
    drop(consumer);
    broker.delete_group("jobs", "workers").await.unwrap();
    let refused = broker.redrive("jobs.workers.dlq", None, None, 100).await;
    assert!(
        matches!(refused, Err(Error::InvalidArgument(_))),
        "{refused:?}"
    );
    assert_eq!(
        broker.dead_letters("jobs.workers.dlq", 10).unwrap().len(),
        1
    );
    assert_eq!(
        broker
            .redrive("jobs.workers.dlq", Some("jobs-retry"), None, 100)
            .await
            .unwrap(),
        1
    );
    let copied = broker.read("jobs-retry", 0, 0, 10).unwrap();
    assert_eq!(copied.len(), 1);
    assert_eq!(copied[0].key.as_deref(), Some(&b"k"[..]));
    assert!(copied[0].header("weir.dlq.reason").is_none());
    broker.shutdown().await;
}

#[tokio::test]
async fn reject_and_expiry_dead_letter_and_purge_empties_the_dlq() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let settings = QueueSettings {
        message_ttl_ms: Some(60_000),
        ..QueueSettings::default()
    };
    broker
        .publish_messages("tasks", None, &[Message::new("old")])
        .await
        .unwrap();
    fixture.clock.advance(Duration::from_secs(61));
    broker
        .publish_messages("tasks", None, &[Message::new("fresh")])
        .await
        .unwrap();
    let consumer = broker
        .subscribe("tasks", "workers", queue_with(settings, 10))
        .await
        .unwrap();
    let deliveries = consumer.try_next(10).unwrap();
    assert_eq!(deliveries.len(), 1, "the expired message is not delivered");
    assert_eq!(&deliveries[0].record.value[..], b"fresh");
    consumer
        .nack(&[deliveries[0].id()], false, Duration::ZERO)
        .await
        .unwrap();
    broker.tick().await;
    let dead = broker.dead_letters("tasks.workers.dlq", 10).unwrap();
    let reasons: Vec<String> = dead
        .iter()
        .map(|letter| {
            String::from_utf8(letter.record.header("weir.dlq.reason").unwrap().to_vec()).unwrap()
        })
        .collect();
    assert_eq!(reasons, vec!["expired", "rejected"]);
    assert_eq!(
        broker
            .purge_dead_letters("tasks.workers.dlq")
            .await
            .unwrap(),
        2
    );
    assert!(
        broker
            .dead_letters("tasks.workers.dlq", 10)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        broker.dead_letters("tasks", 10),
        Err(Error::InvalidArgument(_))
    ));
    broker.shutdown().await;
}

#[tokio::test]
async fn release_does_not_count_towards_max_deliveries() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let settings = QueueSettings {
        max_deliveries: Some(1),
        ..QueueSettings::default()
    };
    broker
        .publish_messages("jobs", None, &[Message::new("job")])
        .await
        .unwrap();
    let consumer = broker
        .subscribe("jobs", "workers", queue_with(settings, 10))
        .await
        .unwrap();
    for _ in 0..3 {
        let deliveries = consumer.try_next(10).unwrap();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(deliveries[0].delivery_count, 1);
        consumer.release(&[deliveries[0].id()]).await.unwrap();
    }
    broker.shutdown().await;
}

/// Issue 10 defect 4: a poison message that kills its consumer. Every consumer that is lost
/// holding it counts a delivery, so after `max_deliveries` lost consumers it is dead-lettered
/// instead of being redelivered forever.
#[tokio::test]
async fn a_message_whose_consumers_are_lost_is_dead_lettered_after_max_deliveries() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let settings = QueueSettings {
        max_deliveries: Some(2),
        ..QueueSettings::default()
    };
    broker
        .publish_messages("jobs", None, &[Message::new("poison")])
        .await
        .unwrap();
    for attempt in 1..=2 {
        let consumer = broker
            .subscribe("jobs", "workers", queue_with(settings.clone(), 10))
            .await
            .unwrap();
        let deliveries = consumer.try_next(10).unwrap();
        assert_eq!(deliveries.len(), 1, "attempt {attempt}");
        assert_eq!(deliveries[0].delivery_count, attempt);
        drop(consumer); // Crashed while processing it.
    }
    let consumer = broker
        .subscribe("jobs", "workers", queue_with(settings, 10))
        .await
        .unwrap();
    assert!(
        consumer.try_next(10).unwrap().is_empty(),
        "no third delivery"
    );
    broker.tick().await;
    let dead = broker.dead_letters("jobs.workers.dlq", 10).unwrap();
    assert_eq!(dead.len(), 1);
    let header = |name: &str| dead[0].record.header(&format!("weir.dlq.{name}")).unwrap();
    assert_eq!(&header("reason")[..], b"max_deliveries");
    assert_eq!(&header("delivery_count")[..], b"2");
    assert_eq!(broker.group("jobs", "workers").unwrap().backlog, 0);
    broker.shutdown().await;
}

/// Issue 10 defect 4: a delivery in flight when the broker stops still counts after it starts
/// again, whether its consumer left before the shutdown or was still attached.
#[tokio::test]
async fn a_delivery_in_flight_at_a_restart_keeps_its_count() {
    let fixture = Fixture::new();
    let settings = QueueSettings {
        max_deliveries: Some(5),
        ..QueueSettings::default()
    };
    broker_publish(&fixture, "poison").await;
    for expected in 1..=3 {
        let broker = fixture.open().await;
        let consumer = broker
            .subscribe("jobs", "workers", queue_with(settings.clone(), 10))
            .await
            .unwrap();
        let deliveries = consumer.try_next(10).unwrap();
        assert_eq!(deliveries.len(), 1);
        assert_eq!(
            deliveries[0].delivery_count,
            expected,
            "after {} restarts",
            expected - 1
        );
        if expected % 2 == 1 {
            // The front end closes connections before the broker stops.
            drop(consumer);
            broker.shutdown().await;
        } else {
            broker.shutdown().await;
            drop(consumer);
        }
    }
}

async fn broker_publish(fixture: &Fixture, value: &str) {
    let broker = fixture.open().await;
    broker
        .publish_messages("jobs", None, &[Message::new(value.to_owned())])
        .await
        .unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn reject_publish_overflow_refuses_a_burst_past_max_backlog() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let settings = QueueSettings {
        max_backlog: Some(100),
        overflow: Overflow::RejectPublish,
        ..QueueSettings::default()
    };
    let consumer = broker
        .subscribe("orders", "shipping", queue_with(settings, 1000))
        .await
        .unwrap();
    let mut accepted = 0;
    let mut refused = 0;
    for index in 0..30 {
        let messages: Vec<Message> = (0..10)
            .map(|n| Message::new(format!("{index}-{n}")))
            .collect();
        match broker.publish_messages("orders", None, &messages).await {
            Ok(_) => accepted += 10,
            Err(Error::BacklogFull { group, .. }) => {
                assert_eq!(group, "shipping");
                refused += 10;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 100);
    assert_eq!(refused, 200);
    // Consumers catch up: publishing works again.
    let deliveries = consumer.try_next(1000).unwrap();
    let ids: Vec<MessageId> = deliveries.iter().map(|delivery| delivery.id()).collect();
    consumer.ack(&ids).await.unwrap();
    broker
        .publish_messages("orders", None, &[Message::new("after")])
        .await
        .unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn dead_letter_oldest_overflow_keeps_the_backlog_bounded() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let settings = QueueSettings {
        max_backlog: Some(10),
        overflow: Overflow::DeadLetterOldest,
        ..QueueSettings::default()
    };
    let consumer = broker
        .subscribe("feed", "reader", queue_with(settings, 100))
        .await
        .unwrap();
    let messages: Vec<Message> = (0..25).map(|n| Message::new(format!("{n}"))).collect();
    broker
        .publish_messages("feed", None, &messages)
        .await
        .unwrap();
    broker.tick().await;
    assert_eq!(broker.group("feed", "reader").unwrap().backlog, 10);
    let kept: Vec<u64> = consumer
        .try_next(100)
        .unwrap()
        .iter()
        .map(|delivery| delivery.record.offset)
        .collect();
    assert_eq!(kept, (15..25).collect::<Vec<u64>>(), "the newest are kept");
    let dead = broker.dead_letters("feed.reader.dlq", 100).unwrap();
    assert_eq!(dead.len(), 15);
    assert_eq!(
        dead[0]
            .record
            .header("weir.dlq.reason")
            .map(|value| &value[..]),
        Some(&b"overflow"[..])
    );
    broker.shutdown().await;
}

/// Per-key order with competing consumers: 4 consumers, 50 keys x 20 sequence numbers,
/// random acks and nacks; each key's messages are processed strictly in order and no two of a
/// key are ever in flight at once.
#[tokio::test]
async fn ordered_by_key_never_has_two_of_a_key_in_flight() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let config = weir_core::TopicConfig {
        partitions: 3,
        ..weir_core::TopicConfig::default()
    };
    broker.create_topic("ledger", config).await.unwrap();
    let mut messages = Vec::new();
    for sequence in 0..20 {
        for key in 0..50 {
            messages.push(Message::new(format!("{sequence}")).with_key(format!("account-{key}")));
        }
    }
    broker
        .publish_messages("ledger", None, &messages)
        .await
        .unwrap();
    let settings = QueueSettings {
        ordered_by_key: true,
        ..QueueSettings::default()
    };
    let mut consumers = Vec::new();
    for _ in 0..4 {
        consumers.push(
            broker
                .subscribe("ledger", "posting", queue_with(settings.clone(), 16))
                .await
                .unwrap(),
        );
    }
    let mut next_expected: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut held: Vec<Vec<weir_core::Delivery>> = vec![Vec::new(); 4];
    let mut seed = 42u64;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut done = 0;
    while done < 1000 {
        for (index, consumer) in consumers.iter().enumerate() {
            held[index].extend(consumer.try_next(16).unwrap());
            let in_flight: Vec<Vec<u8>> = held
                .iter()
                .flatten()
                .map(|delivery| delivery.record.key.clone().unwrap().to_vec())
                .collect();
            let unique: BTreeSet<&Vec<u8>> = in_flight.iter().collect();
            assert_eq!(
                unique.len(),
                in_flight.len(),
                "two messages of one key in flight"
            );
            // Finish a random part of what this consumer holds; sometimes fail and retry.
            let mut keep = Vec::new();
            for delivery in held[index].drain(..) {
                match random() % 4 {
                    0 => keep.push(delivery),
                    1 => {
                        consumer
                            .nack(&[delivery.id()], true, Duration::ZERO)
                            .await
                            .unwrap();
                    }
                    _ => {
                        let key = delivery.record.key.clone().unwrap().to_vec();
                        let sequence: u32 = std::str::from_utf8(&delivery.record.value)
                            .unwrap()
                            .parse()
                            .unwrap();
                        let expected = next_expected.entry(key).or_insert(0);
                        assert_eq!(sequence, *expected, "per-key order");
                        *expected += 1;
                        consumer.ack(&[delivery.id()]).await.unwrap();
                        done += 1;
                    }
                }
            }
            held[index] = keep;
        }
    }
    assert!(next_expected.values().all(|&count| count == 20));
    broker.shutdown().await;
}

fn with_id(value: &str, id: &str) -> Message {
    Message::new(value.to_owned()).with_header("weir.id", id.to_owned())
}

/// A message id published twice within the window is stored once (also across a restart);
/// after the window, twice.
#[tokio::test]
async fn a_message_id_is_stored_once_within_the_dedup_window() {
    let fixture = Fixture::new();
    {
        let broker = fixture.open().await;
        let first = broker
            .publish_messages("payments", None, &[with_id("pay 1", "m-1")])
            .await
            .unwrap();
        assert_eq!(first.ranges.len(), 1);
        assert!(first.duplicates.is_empty());
        let again = broker
            .publish_messages("payments", None, &[with_id("pay 1", "m-1")])
            .await
            .unwrap();
        assert!(again.ranges.is_empty());
        assert_eq!(
            again.duplicates,
            vec![weir_core::Duplicate {
                partition: 0,
                offset: 0
            }]
        );
        broker.shutdown().await;
    }
    let broker = fixture.open().await;
    let after_restart = broker
        .publish_messages(
            "payments",
            None,
            &[with_id("pay 1", "m-1"), with_id("pay 2", "m-2")],
        )
        .await
        .unwrap();
    assert_eq!(
        after_restart.duplicates.len(),
        1,
        "the window survives a restart"
    );
    assert_eq!(after_restart.ranges[0].base_offset, 1);
    fixture.clock.advance(Duration::from_secs(121));
    let later = broker
        .publish_messages("payments", None, &[with_id("pay 1", "m-1")])
        .await
        .unwrap();
    assert_eq!(
        later.ranges.len(),
        1,
        "after the window the id is new again"
    );
    assert_eq!(broker.read("payments", 0, 0, 10).unwrap().len(), 3);
    broker.shutdown().await;
}

/// A producer whose confirm was lost retries the same batch: stored once, answered with the
/// original offsets.
#[tokio::test]
async fn an_idempotent_producer_retry_is_stored_once() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let mut builder = weir_core::BatchBuilder::new();
    builder.producer(99, 0);
    builder.push(1, None, &[], b"a").push(1, None, &[], b"b");
    let batch = builder.finish();
    let first = broker
        .publish("orders", Some(0), batch.clone())
        .await
        .unwrap();
    let retry = broker.publish("orders", Some(0), batch).await.unwrap();
    assert_eq!(
        (first.ranges[0].base_offset, first.ranges[0].last_offset),
        (0, 1)
    );
    assert!(retry.ranges.is_empty());
    assert_eq!(
        retry
            .duplicates
            .iter()
            .map(|duplicate| duplicate.offset)
            .collect::<Vec<_>>(),
        vec![0, 1]
    );
    let mut gap = weir_core::BatchBuilder::new();
    gap.producer(99, 5);
    gap.push(1, None, &[], b"c");
    assert!(matches!(
        broker.publish("orders", Some(0), gap.finish()).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(broker.read("orders", 0, 0, 10).unwrap().len(), 2);
    broker.shutdown().await;
}

/// Retries back off per subscription: the n-th failure waits the n-th delay.
#[tokio::test]
async fn nacked_messages_back_off_by_the_subscriptions_schedule() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let settings = QueueSettings {
        retry_backoff_ms: vec![1_000, 5_000],
        ..QueueSettings::default()
    };
    broker
        .publish_messages("jobs", None, &[Message::new("flaky")])
        .await
        .unwrap();
    let consumer = broker
        .subscribe("jobs", "workers", queue_with(settings, 10))
        .await
        .unwrap();
    for wait_ms in [1_000, 5_000, 5_000] {
        let deliveries = consumer.try_next(10).unwrap();
        assert_eq!(deliveries.len(), 1);
        consumer
            .nack(&[deliveries[0].id()], true, Duration::ZERO)
            .await
            .unwrap();
        fixture.clock.advance(Duration::from_millis(wait_ms - 1));
        assert!(
            consumer.try_next(10).unwrap().is_empty(),
            "waits {wait_ms} ms"
        );
        fixture.clock.advance(Duration::from_millis(1));
    }
    assert_eq!(consumer.try_next(10).unwrap()[0].delivery_count, 4);
    broker.shutdown().await;
}

/// Found by the simulation (seed 915 with the redrive operations): a message published with a
/// message id, redriven to its origin and dead-lettered again within the dead-letter topic's
/// dedup window vanished. Its first dead letter carried the original `weir.id`, so the DLQ
/// took the second one for a duplicate and stored nothing, while the origin settled the
/// message as stored. The same id also made a redrive to the original topic a "duplicate".
/// A dead letter (and a redriven copy) is a new message: the original id travels as
/// `weir.dlq.message_id`.
#[tokio::test]
async fn a_message_with_an_id_dead_lettered_again_after_a_redrive_is_not_lost() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let consumer = broker
        .subscribe(
            "orders",
            "billing",
            queue_with(QueueSettings::default(), 10),
        )
        .await
        .unwrap();
    let message = Message::new("poison").with_header("weir.id", "order-1");
    broker
        .publish_messages("orders", None, &[message])
        .await
        .unwrap();
    async fn reject(consumer: &weir_core::Consumer, expected: usize) {
        let delivered = consumer.try_next(10).unwrap();
        assert_eq!(
            delivered.len(),
            expected,
            "delivered again after the redrive"
        );
        let ids: Vec<MessageId> = delivered.iter().map(|delivery| delivery.id()).collect();
        consumer.nack(&ids, false, Duration::ZERO).await.unwrap();
    }
    reject(&consumer, 1).await;
    broker.tick().await;
    let letters = broker.dead_letters("orders.billing.dlq", 10).unwrap();
    assert_eq!(letters.len(), 1);
    let letter = &letters[0].record;
    assert!(letter.header("weir.id").is_none(), "{letter:?}");
    assert_eq!(
        letter.header("weir.dlq.message_id").map(|id| &id[..]),
        Some(&b"order-1"[..])
    );

    broker
        .redrive("orders.billing.dlq", None, None, 10)
        .await
        .unwrap();
    reject(&consumer, 1).await;
    broker.tick().await;
    let letters = broker.dead_letters("orders.billing.dlq", 10).unwrap();
    assert_eq!(letters.len(), 1, "dead-lettered again, so in the DLQ again");

    // To the original topic as a target: a new copy, not a duplicate of the original.
    broker
        .redrive("orders.billing.dlq", Some("orders"), None, 10)
        .await
        .unwrap();
    reject(&consumer, 1).await;
    broker.shutdown().await;
}
