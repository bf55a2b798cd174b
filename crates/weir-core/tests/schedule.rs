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
