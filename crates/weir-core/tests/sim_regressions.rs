//! Regression tests for defects the whole-broker simulation (`tests/simulation.rs`) found, each
//! named for what it keeps true, with the seed that found it.

mod common;

use common::Fixture;

use std::time::Duration;

use weir_core::{Message, QueueSettings, SubscribeOptions, SubscriptionKind};

fn queue() -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Queue,
        ack_timeout: Some(Duration::from_secs(5)),
        queue: QueueSettings {
            max_deliveries: Some(3),
            ..QueueSettings::default()
        },
        ..SubscribeOptions::default()
    }
}

/// Simulation seed 14: a reject answered just before a clean shutdown was forgotten (the
/// dead-letter outbox was stored only by the timer), so the message came back after restart.
#[tokio::test]
async fn a_reject_just_before_a_clean_shutdown_reaches_the_dead_letter_topic() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages("tasks", None, &[Message::new("poison")])
        .await
        .unwrap();
    let consumer = broker.subscribe("tasks", "workers", queue()).await.unwrap();
    let delivery = consumer.try_next(1).unwrap().pop().unwrap();
    consumer
        .nack(&[delivery.id()], false, Duration::ZERO)
        .unwrap();
    drop(consumer);
    broker.shutdown().await;
    drop(broker);

    let broker = fixture.open().await;
    let consumer = broker.subscribe("tasks", "workers", queue()).await.unwrap();
    broker.tick().await;
    assert!(
        consumer.try_next(10).unwrap().is_empty(),
        "rejected, so never delivered again"
    );
    let dead = broker.dead_letters("tasks.workers.dlq", 10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(&dead[0].record.value[..], b"poison");
    broker.shutdown().await;
}
