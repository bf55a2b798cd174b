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
        .await
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

/// Simulation seed 102: a hand-over whose append fails (here its fsync) may still have written
/// the message, which a restart finds; the entry stayed in the schedule and a cancel answered
/// "cancelled" — and the cancelled message was delivered. Not fixed yet: the cancel must say
/// "too late" for an entry whose hand-over is in doubt (or the hand-over must not be in doubt).
#[tokio::test]
#[ignore = "cancel after a failed hand-over: not fixed yet (issue 10, found by the simulation)"]
async fn a_cancel_after_a_failed_hand_over_is_never_delivered() {
    use std::path::PathBuf;
    use std::sync::Arc;
    use weir_core::{BatchBuilder, Broker, BrokerConfig, ManualClock};
    use weir_storage::io::sim::{CrashMode, SimStorage};

    let storage = SimStorage::new(102);
    let clock = Arc::new(ManualClock::new(common::START_MS));
    let config = || {
        let mut config = BrokerConfig::new(PathBuf::from("/sim"));
        config.clock = clock.clone();
        config.storage = storage.clone();
        config.background_timers = false;
        config
    };
    let broker = Broker::open(config()).await.unwrap();
    broker
        .publish_messages("orders", None, &[Message::new("first")])
        .await
        .unwrap();
    let mut builder = BatchBuilder::new();
    builder.push(common::START_MS, None, &[], b"cancel me");
    let scheduled = broker
        .publish_delayed(
            "orders",
            None,
            builder.finish(),
            Duration::from_secs(1),
            None,
        )
        .await
        .unwrap();
    let (_, partition) = storage
        .directories()
        .into_iter()
        .find(|(path, _)| path.ends_with("orders/0"))
        .unwrap();
    // The hand-over's write goes through, its fsync fails.
    partition.fail_operation(partition.operation_count() + 1);
    clock.advance(Duration::from_secs(1));
    broker.tick().await;
    let cancelled = broker.cancel_scheduled(scheduled.id).await;
    storage.crash(CrashMode::KeepWritten);
    broker.shutdown().await;
    drop(broker);

    let broker = Broker::open(config()).await.unwrap();
    let values: Vec<Vec<u8>> = broker
        .read("orders", 0, 0, 10)
        .unwrap()
        .iter()
        .map(|record| record.value.to_vec())
        .collect();
    if cancelled.is_ok() {
        assert_eq!(values, vec![b"first".to_vec()], "cancelled, yet delivered");
    }
    broker.shutdown().await;
}

/// Simulation seeds 592, 678, 5068, 5104, 5162 (at b6b611b): a delayed message whose hand-over
/// fails on a full disk must still be delivered once space returns (or after a restart). Today
/// it is lost: the failed append left its derived message id in dedup (defect 11), so the
/// retry is "confirmed" as a duplicate of nothing and the entry removed.
#[tokio::test]
async fn a_delayed_message_whose_hand_over_failed_on_a_full_disk_is_delivered_later() {
    use std::path::PathBuf;
    use std::sync::Arc;
    use weir_core::{BatchBuilder, Broker, BrokerConfig, ManualClock, TopicConfig};
    use weir_storage::io::sim::SimStorage;

    let storage = SimStorage::new(592);
    let clock = Arc::new(ManualClock::new(common::START_MS));
    let config = || {
        let mut config = BrokerConfig::new(PathBuf::from("/sim"));
        config.clock = clock.clone();
        config.storage = storage.clone();
        config.background_timers = false;
        config
    };
    let broker = Broker::open(config()).await.unwrap();
    broker
        .create_topic("orders", TopicConfig::default())
        .await
        .unwrap();
    let mut builder = BatchBuilder::new();
    builder.push(common::START_MS, None, &[], b"later");
    broker
        .publish_delayed(
            "orders",
            None,
            builder.finish(),
            Duration::from_secs(1),
            None,
        )
        .await
        .unwrap();
    let (_, partition) = storage
        .directories()
        .into_iter()
        .find(|(path, _)| path.ends_with("orders/0"))
        .unwrap();
    partition.set_capacity(Some(partition.used_bytes()));
    clock.advance(Duration::from_secs(1));
    broker.tick().await;
    storage.clear_faults();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(1));
        broker.tick().await;
    }
    let delivered = broker.read("orders", 0, 0, 10).unwrap().len();
    broker.shutdown().await;
    drop(broker);
    let broker = Broker::open(config()).await.unwrap();
    for _ in 0..5 {
        clock.advance(Duration::from_secs(1));
        broker.tick().await;
    }
    let after_restart = broker.read("orders", 0, 0, 10).unwrap().len();
    broker.shutdown().await;
    assert_eq!((delivered, after_restart), (1, 1));
}
