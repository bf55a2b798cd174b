//! Issue 10 #22: an ack (nack, reject, release) is answered only once it is durable, or the
//! answer says it is not. The broker runs on the simulated storage with no background timers,
//! so nothing saves positions behind the test's back, and a crash drops whatever was not
//! synced.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use weir_core::{
    Broker, BrokerConfig, Consumer, Error, ManualClock, Message, QueueSettings, SubscribeOptions,
    SubscriptionKind,
};
use weir_storage::io::sim::{CrashMode, SimDirectory, SimStorage};

const START_MS: i64 = 1_700_000_000_000;

struct SimBroker {
    storage: Arc<SimStorage>,
    clock: Arc<ManualClock>,
}

impl SimBroker {
    fn new(seed: u64) -> SimBroker {
        SimBroker {
            storage: SimStorage::new(seed),
            clock: Arc::new(ManualClock::new(START_MS)),
        }
    }

    async fn open(&self) -> Broker {
        let mut config = BrokerConfig::new(PathBuf::from("/sim"));
        config.clock = self.clock.clone();
        config.storage = self.storage.clone();
        config.background_timers = false;
        Broker::open(config).await.expect("the broker opens")
    }

    /// The directory holding the metadata store.
    fn meta_directory(&self) -> Arc<SimDirectory> {
        self.storage
            .directories()
            .into_iter()
            .map(|(_, directory)| directory)
            .find(|directory| {
                directory
                    .file_names()
                    .iter()
                    .any(|name| name == "meta.redb")
            })
            .expect("the metadata store is on the simulated storage")
    }
}

fn queue() -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Queue,
        ack_timeout: Some(Duration::from_secs(30)),
        queue: QueueSettings {
            max_deliveries: Some(5),
            ..QueueSettings::default()
        },
        ..SubscribeOptions::default()
    }
}

async fn publish_and_take(
    broker: &Broker,
    values: &[&str],
) -> (Consumer, Vec<weir_core::Delivery>) {
    let messages: Vec<Message> = values
        .iter()
        .map(|value| Message::new(value.to_string()))
        .collect();
    broker
        .publish_messages("tasks", None, &messages)
        .await
        .expect("published");
    let consumer = broker
        .subscribe("tasks", "workers", queue())
        .await
        .expect("subscribed");
    let deliveries = consumer.try_next(10).expect("fetched");
    assert_eq!(deliveries.len(), values.len());
    (consumer, deliveries)
}

fn values(deliveries: &[weir_core::Delivery]) -> Vec<String> {
    deliveries
        .iter()
        .map(|delivery| String::from_utf8_lossy(&delivery.record.value).into_owned())
        .collect()
}

/// Goal: an answered ack survives a crash right after it (power loss, nothing unsynced kept).
/// Method: ack one of two messages, crash the machine at once (no timer ran, no clean
/// shutdown), reopen: only the other message is delivered again. Before the fix the ack was
/// saved by a timer every 100 ms, so it came back.
#[tokio::test]
async fn an_answered_ack_survives_a_crash_right_after_it() {
    let sim = SimBroker::new(22);
    let broker = sim.open().await;
    let (consumer, deliveries) = publish_and_take(&broker, &["acked", "held"]).await;
    consumer
        .ack(&[deliveries[0].id()])
        .await
        .expect("acked durably");
    sim.storage.crash(CrashMode::DropUnsynced);
    drop(consumer);
    broker.shutdown().await;
    drop(broker);

    let broker = sim.open().await;
    let consumer = broker
        .subscribe("tasks", "workers", queue())
        .await
        .expect("subscribed");
    assert_eq!(values(&consumer.try_next(10).expect("fetched")), ["held"]);
    broker.shutdown().await;
}

/// Goal: a reject, once answered, is not forgotten by a crash before its dead letter is
/// stored (the timer stores it): the message goes to the dead-letter topic, not back to the
/// queue. Method: reject, crash before any tick, reopen and tick.
#[tokio::test]
async fn an_answered_reject_survives_a_crash_before_its_dead_letter_is_stored() {
    let sim = SimBroker::new(23);
    let broker = sim.open().await;
    let (consumer, deliveries) = publish_and_take(&broker, &["poison"]).await;
    consumer
        .nack(&[deliveries[0].id()], false, Duration::ZERO)
        .await
        .expect("rejected durably");
    sim.storage.crash(CrashMode::DropUnsynced);
    drop(consumer);
    broker.shutdown().await;
    drop(broker);

    let broker = sim.open().await;
    let consumer = broker
        .subscribe("tasks", "workers", queue())
        .await
        .expect("subscribed");
    broker.tick().await;
    assert!(
        consumer.try_next(10).expect("fetched").is_empty(),
        "rejected, never back"
    );
    let dead = broker
        .dead_letters("tasks.workers.dlq", 10)
        .expect("the DLQ");
    assert_eq!(values(&dead), ["poison"]);
    broker.shutdown().await;
}

/// Goal: an ack whose save fails is answered with the error, never with success, and is made
/// durable by a later save once there is room. Method: the metadata store's disk is full at
/// the ack's save (`StorageFull`); crash: the message comes back (the answer said so). Then, with room again,
/// ack it and crash once more: it stays acked.
#[tokio::test]
async fn an_ack_whose_save_fails_is_answered_with_the_error() {
    let sim = SimBroker::new(24);
    let broker = sim.open().await;
    let (consumer, deliveries) = publish_and_take(&broker, &["first"]).await;
    let meta = sim.meta_directory();
    // The disk is full at the save's first write.
    meta.fail_write_with_storage_full(meta.write_count());
    let answer = consumer.ack(&[deliveries[0].id()]).await;
    assert!(
        matches!(answer, Err(Error::StorageFull)),
        "a full disk is reported as such: {answer:?}"
    );
    sim.storage.crash(CrashMode::DropUnsynced);
    drop(consumer);
    broker.shutdown().await;
    drop(broker);

    let broker = sim.open().await;
    let consumer = broker
        .subscribe("tasks", "workers", queue())
        .await
        .expect("subscribed");
    let again = consumer.try_next(10).expect("fetched");
    assert_eq!(values(&again), ["first"], "not durable, as the answer said");
    consumer
        .ack(&[again[0].id()])
        .await
        .expect("room again: durable");
    sim.storage.crash(CrashMode::DropUnsynced);
    drop(consumer);
    broker.shutdown().await;
    drop(broker);

    let broker = sim.open().await;
    let consumer = broker
        .subscribe("tasks", "workers", queue())
        .await
        .expect("subscribed");
    assert!(consumer.try_next(10).expect("fetched").is_empty());
    broker.shutdown().await;
}
