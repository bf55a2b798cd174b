//! Delayed messages with a manual clock: exact due times, cancel by business key, restart
//! with messages falling due during downtime, cancel and reschedule.

mod common;

use common::{Fixture, START_MS, batch};

use std::time::Duration;

use weir_core::{
    Broker, Error, ScheduleRequest, StartPosition, SubscribeOptions, SubscriptionKind,
};

fn stream() -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Stream,
        start: StartPosition::Earliest,
        ..SubscribeOptions::default()
    }
}

async fn values(broker: &Broker, topic: &str) -> Vec<String> {
    broker
        .read(topic, 0, 0, 1000)
        .map(|records| {
            records
                .iter()
                .map(|record| String::from_utf8_lossy(&record.value).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_delayed_message_is_invisible_until_its_millisecond() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .create_topic("reminders", Default::default())
        .await
        .unwrap();
    let consumer = broker
        .subscribe("reminders", "mailer", stream())
        .await
        .unwrap();
    broker
        .publish_delayed(
            "reminders",
            None,
            batch(&["in 1500 ms"]),
            Duration::from_millis(1500),
            None,
        )
        .await
        .unwrap();
    assert_eq!(broker.scheduled_count().unwrap(), 1);
    fixture.clock.advance(Duration::from_millis(1499));
    broker.tick().await;
    assert!(
        consumer.try_next(10).unwrap().is_empty(),
        "not a millisecond early"
    );
    fixture.clock.advance(Duration::from_millis(1));
    broker.tick().await;
    let deliveries = consumer.try_next(10).unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(&deliveries[0].record.value[..], b"in 1500 ms");
    assert_eq!(broker.scheduled_count().unwrap(), 0);
    broker.tick().await;
    assert_eq!(
        values(&broker, "reminders").await.len(),
        1,
        "delivered exactly once"
    );
    broker.shutdown().await;
}

/// The guide's order auto-cancel: every order schedules its cancellation in 30 minutes; paying
/// cancels the cancellation by the order number.
#[tokio::test]
async fn paying_an_order_cancels_its_auto_cancellation() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    for order in ["order-1", "order-2"] {
        broker
            .publish_delayed(
                "order-timeouts",
                None,
                batch(&[&format!("cancel {order}")]),
                Duration::from_secs(30 * 60),
                Some(order.to_owned()),
            )
            .await
            .unwrap();
    }
    let paid = broker.scheduled_id("order-1").unwrap();
    let cancelled = broker.cancel_scheduled(paid).await.unwrap();
    assert_eq!(cancelled.business_key.as_deref(), Some("order-1"));
    assert!(matches!(
        broker.scheduled_id("order-1"),
        Err(Error::NotFound(_))
    ));
    fixture.clock.advance(Duration::from_secs(30 * 60));
    broker.tick().await;
    assert_eq!(
        values(&broker, "order-timeouts").await,
        vec!["cancel order-2"]
    );
    assert!(matches!(
        broker.cancel_scheduled(paid).await,
        Err(Error::NotFound(_))
    ));
    broker.shutdown().await;
}

#[tokio::test]
async fn messages_due_during_downtime_arrive_after_start_in_due_order() {
    let fixture = Fixture::new();
    {
        let broker = fixture.open().await;
        let requests = [
            ("third", 3_000),
            ("first", 1_000),
            ("second", 2_000),
            ("later", 60_000),
        ]
        .into_iter()
        .map(|(value, delay_ms)| ScheduleRequest {
            topic: "jobs".into(),
            partition: None,
            batch: batch(&[value]),
            deliver_at_ms: START_MS + delay_ms,
            business_key: None,
        })
        .collect();
        broker.schedule(requests).await.unwrap();
        broker.shutdown().await;
    }
    fixture.clock.advance(Duration::from_secs(10));
    let broker = fixture.open().await;
    broker.tick().await;
    assert_eq!(
        values(&broker, "jobs").await,
        vec!["first", "second", "third"]
    );
    let pending = broker.scheduled(Some("jobs"), None, 10).unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].deliver_at_ms, START_MS + 60_000);
    broker.shutdown().await;
}

#[tokio::test]
async fn reschedule_moves_and_limits_are_clear_errors() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let scheduled = broker
        .publish_delayed("jobs", None, batch(&["job"]), Duration::from_secs(60), None)
        .await
        .unwrap();
    broker
        .reschedule(scheduled.id, START_MS + 5_000)
        .await
        .unwrap();
    let (shown, records) = broker.scheduled_message(scheduled.id).unwrap();
    assert_eq!(shown.deliver_at_ms, START_MS + 5_000);
    assert_eq!(&records[0].value[..], b"job");
    fixture.clock.advance(Duration::from_secs(5));
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["job"]);
    let too_far = broker
        .publish_delayed(
            "jobs",
            None,
            batch(&["x"]),
            Duration::from_secs(400 * 86_400),
            None,
        )
        .await;
    assert!(matches!(too_far, Err(Error::InvalidArgument(_))));
    // A time in the past means now.
    let request = ScheduleRequest {
        topic: "jobs".into(),
        partition: None,
        batch: batch(&["overdue"]),
        deliver_at_ms: START_MS - 1_000_000,
        business_key: None,
    };
    broker.schedule(vec![request]).await.unwrap();
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["job", "overdue"]);
    broker.shutdown().await;
}

/// Delivered entries leave the store once their whole time bucket is delivered, so a restart
/// long after (past the topic's dedup window, which would otherwise catch a second hand-over)
/// delivers nothing again, while what is still pending survives and keeps its id.
#[tokio::test]
async fn delivered_buckets_leave_the_store_and_stay_delivered_after_restart() {
    let fixture = Fixture::new();
    let pending_id;
    {
        let broker = fixture.open().await;
        let request = |value: &str, delay_ms: i64| ScheduleRequest {
            topic: "jobs".into(),
            partition: None,
            batch: batch(&[value]),
            deliver_at_ms: START_MS + delay_ms,
            business_key: Some(value.to_owned()),
        };
        let scheduled = broker
            .schedule(vec![
                request("soon", 1_000),
                request("next hour", 3_600_000),
            ])
            .await
            .unwrap();
        pending_id = scheduled[1].id;
        fixture.clock.advance(Duration::from_secs(60));
        broker.tick().await;
        assert_eq!(values(&broker, "jobs").await, vec!["soon"]);
        assert_eq!(broker.scheduled_count().unwrap(), 1);
        assert!(
            matches!(broker.scheduled_id("soon"), Err(Error::NotFound(_))),
            "a delivered message's business key is free again"
        );
        broker
            .schedule(vec![request("soon", 7_200_000)])
            .await
            .expect("its key can name a new message at once");
        broker.shutdown().await;
    }
    fixture.clock.advance(Duration::from_secs(600));
    let broker = fixture.open().await;
    broker.tick().await;
    assert_eq!(
        values(&broker, "jobs").await,
        vec!["soon"],
        "delivered once, not again after a restart"
    );
    assert_eq!(broker.scheduled_id("next hour").unwrap(), pending_id);
    assert_eq!(broker.scheduled_count().unwrap(), 2);
    fixture.clock.advance(Duration::from_secs(3_600));
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["soon", "next hour"]);
    assert_eq!(
        broker.scheduled_count().unwrap(),
        1,
        "the second 'soon' is in two hours"
    );
    assert!(broker.scheduled_id("soon").is_ok());
    broker.shutdown().await;
}

/// A topic whose dedup window is 1 ms, so nothing but the schedule itself can keep a hand-over
/// from repeating after a restart.
async fn tiny_dedup_window(broker: &Broker, topic: &str, partitions: u32) {
    let config = weir_core::TopicConfig {
        partitions,
        dedup_window_ms: 1,
        ..Default::default()
    };
    broker.create_topic(topic, config).await.unwrap();
}

fn at(topic: &str, value: &str, delay_ms: i64) -> ScheduleRequest {
    ScheduleRequest {
        topic: topic.into(),
        partition: None,
        batch: batch(&[value]),
        deliver_at_ms: START_MS + delay_ms,
        business_key: None,
    }
}

/// Issue 10 defect 2: a message handed over more than the dedup window before a clean
/// restart was handed over again after it, because its time bucket (still holding a message
/// due later) was not removed yet.
#[tokio::test]
async fn a_hand_over_is_not_repeated_after_a_clean_restart_past_the_dedup_window() {
    let fixture = Fixture::new();
    {
        let broker = fixture.open().await;
        tiny_dedup_window(&broker, "jobs", 1).await;
        // Both in the bucket of START_MS (which starts 2,048 ms before it and lasts 8,192).
        broker
            .schedule(vec![
                at("jobs", "first", 1_000),
                at("jobs", "second", 5_000),
            ])
            .await
            .unwrap();
        fixture.clock.advance(Duration::from_millis(1_000));
        broker.tick().await;
        assert_eq!(values(&broker, "jobs").await, vec!["first"]);
        fixture.clock.advance(Duration::from_millis(100));
        broker.shutdown().await;
    }
    let broker = fixture.open().await;
    broker.tick().await;
    assert_eq!(
        values(&broker, "jobs").await,
        vec!["first"],
        "not handed over again after the restart"
    );
    fixture.clock.advance(Duration::from_millis(4_000));
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["first", "second"]);
    broker.shutdown().await;
}

/// Issue 10 defect 2, the crash window: the broker dies after a hand-over is stored in the
/// log and before the schedule forgets the entry (here: dropped without a shutdown).
#[tokio::test]
async fn a_hand_over_is_not_repeated_after_a_crash_before_its_removal() {
    let fixture = Fixture::new();
    {
        let broker = fixture.open().await;
        tiny_dedup_window(&broker, "jobs", 1).await;
        broker
            .schedule(vec![
                at("jobs", "first", 1_000),
                at("jobs", "second", 5_000),
            ])
            .await
            .unwrap();
        fixture.clock.advance(Duration::from_millis(1_000));
        broker.tick().await;
        assert_eq!(values(&broker, "jobs").await, vec!["first"]);
        // A crash: no shutdown, nothing removed.
        drop(broker);
    }
    fixture.clock.advance(Duration::from_millis(100));
    let broker = fixture.open().await;
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["first"]);
    fixture.clock.advance(Duration::from_millis(4_000));
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["first", "second"]);
    broker.shutdown().await;
}

/// A crash in the middle of one entry's hand-over: its records go to two partitions (by key)
/// and only one part reached the log. After the restart only the missing record is handed
/// over, and it keeps the message id it would have had.
#[tokio::test]
async fn a_hand_over_cut_short_by_a_crash_delivers_only_what_is_missing() {
    let fixture = Fixture::new();
    {
        let broker = fixture.open().await;
        tiny_dedup_window(&broker, "jobs", 2).await;
        let mut builder = weir_core::BatchBuilder::new();
        // Keys that land in different partitions of two.
        let keys: Vec<String> = (0..100)
            .map(|key| format!("key-{key}"))
            .filter(|key| weir_core::partition_for_key(key.as_bytes(), 2) == 0)
            .take(1)
            .chain(
                (0..100)
                    .map(|key| format!("key-{key}"))
                    .filter(|key| weir_core::partition_for_key(key.as_bytes(), 2) == 1)
                    .take(1),
            )
            .collect();
        for (key, value) in keys.iter().zip(["half-0", "half-1"]) {
            builder.push(START_MS, Some(key.as_bytes()), &[], value.as_bytes());
        }
        let scheduled = broker
            .schedule(vec![
                at("jobs", "first", 1_000),
                ScheduleRequest {
                    topic: "jobs".into(),
                    partition: None,
                    batch: builder.finish(),
                    deliver_at_ms: START_MS + 5_000,
                    business_key: None,
                },
            ])
            .await
            .unwrap();
        // The first hand-over to the topic in this time bucket.
        fixture.clock.advance(Duration::from_millis(1_000));
        broker.tick().await;
        // What a crash halfway through the second one leaves behind: its first record,
        // stored under the id the hand-over gives it.
        let mut half = weir_core::BatchBuilder::new();
        let id = format!("schedule-{}-0", scheduled[1].id);
        half.push(
            START_MS,
            Some(keys[0].as_bytes()),
            &[(weir_batch::MESSAGE_ID_HEADER, id.as_bytes())],
            b"half-0",
        );
        broker.publish("jobs", None, half.finish()).await.unwrap();
        drop(broker);
    }
    fixture.clock.advance(Duration::from_millis(4_000));
    let broker = fixture.open().await;
    broker.tick().await;
    let mut all = Vec::new();
    for partition in 0..2 {
        for record in broker.read("jobs", partition, 0, 100).unwrap() {
            all.push((
                String::from_utf8_lossy(&record.value).into_owned(),
                record
                    .message_id()
                    .map(|id| String::from_utf8_lossy(id).into_owned()),
            ));
        }
    }
    all.sort();
    let values: Vec<&str> = all.iter().map(|(value, _)| value.as_str()).collect();
    assert_eq!(values, vec!["first", "half-0", "half-1"], "{all:?}");
    assert!(
        all[2].1.as_deref().is_some_and(|id| id.ends_with("-1")),
        "the missing record keeps its derived id: {all:?}"
    );
    broker.shutdown().await;
}

/// Removal ran ahead of the window while nothing was scheduled; a message scheduled a moment
/// later falls in a bucket below it and must still leave the store once delivered (it stayed
/// and was handed over again after any restart).
#[tokio::test]
async fn a_message_scheduled_while_nothing_waits_leaves_the_store_once_delivered() {
    let fixture = Fixture::new();
    {
        let broker = fixture.open().await;
        tiny_dedup_window(&broker, "jobs", 1).await;
        broker.tick().await;
        fixture.clock.advance(Duration::from_secs(20));
        broker.tick().await;
        broker
            .schedule(vec![at("jobs", "soon", 21_000)])
            .await
            .unwrap();
        fixture.clock.advance(Duration::from_secs(1));
        broker.tick().await;
        assert_eq!(values(&broker, "jobs").await, vec!["soon"]);
        fixture.clock.advance(Duration::from_secs(1));
        broker.shutdown().await;
    }
    let broker = fixture.open().await;
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["soon"]);
    broker.shutdown().await;
}

/// Issue 10 defect 12: a business key of 64 KiB was stored with its length cut to 16 bits, and
/// every later pass over due messages failed on it. Keys are bounded, for every front end.
#[tokio::test]
async fn a_business_key_longer_than_the_limit_is_refused_and_nothing_is_stored() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    for length in [weir_core::MAX_BUSINESS_KEY_BYTES + 1, 64 << 10] {
        let refused = broker
            .publish_delayed(
                "jobs",
                None,
                batch(&["x"]),
                Duration::from_secs(1),
                Some("k".repeat(length)),
            )
            .await;
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
    }
    assert_eq!(broker.scheduled_count().unwrap(), 0);
    let longest = "k".repeat(weir_core::MAX_BUSINESS_KEY_BYTES);
    broker
        .publish_delayed(
            "jobs",
            None,
            batch(&["kept"]),
            Duration::from_secs(1),
            Some(longest),
        )
        .await
        .unwrap();
    fixture.clock.advance(Duration::from_secs(1));
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["kept"]);
    broker.shutdown().await;
}

/// Issue 10 defect 12: a stored entry that does not decode is set aside (and counted), not
/// retried on every pass, and the entries around it are delivered.
#[tokio::test]
async fn an_undecodable_stored_entry_is_set_aside_and_the_rest_delivered() {
    let fixture = Fixture::new();
    let broken;
    {
        let broker = fixture.open().await;
        let scheduled = broker
            .schedule(vec![
                at("jobs", "before", 1_000),
                at("jobs", "broken", 2_000),
                at("jobs", "after", 3_000),
            ])
            .await
            .unwrap();
        broken = scheduled[1].id;
        broker.shutdown().await;
    }
    {
        // Damage the middle entry by hand: a value too short to hold its fields.
        let meta = weir_storage::MetaStore::open(&fixture.dir.path().join("meta.redb")).unwrap();
        meta.write(
            &[weir_storage::MetaOp::Put {
                table: "schedule_entries",
                key: broken.to_be_bytes().to_vec(),
                value: vec![0xff; 12],
            }],
            true,
        )
        .unwrap();
    }
    let broker = fixture.open().await;
    fixture.clock.advance(Duration::from_secs(5));
    broker.tick().await;
    broker.tick().await;
    assert_eq!(values(&broker, "jobs").await, vec!["before", "after"]);
    assert_eq!(broker.stats().scheduled_quarantined, 1);
    assert_eq!(broker.scheduled_count().unwrap(), 0);
    assert!(broker.scheduled(None, None, 10).unwrap().is_empty());
    broker.shutdown().await;
}
