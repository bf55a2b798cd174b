//! Metrics follow what happens: publishing, consuming, nacking, dead-lettering.

use std::sync::Arc;
use std::time::Duration;

use weir_core::{
    Broker, BrokerConfig, ManualClock, Message, QueueSettings, SubscribeOptions, SubscriptionKind,
};

#[tokio::test]
async fn stats_count_publishes_deliveries_acks_failures_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let mut config = BrokerConfig::new(dir.path());
    config.clock = clock.clone();
    config.tick_interval = Duration::from_secs(3600);
    let broker = Broker::open(config).await.unwrap();
    let messages: Vec<Message> = (0..10)
        .map(|index| Message::new(format!("m{index}")))
        .collect();
    broker
        .publish_messages("orders", None, &messages)
        .await
        .unwrap();

    let stats = broker.stats();
    let partition = &stats.topics[0].partitions[0];
    assert_eq!(partition.published_messages, 10);
    assert!(partition.published_bytes > 10 * 2);
    assert!(partition.size_bytes >= partition.published_bytes);
    assert_eq!(partition.end_offset, 10);
    assert!(stats.fsync.count >= 1, "fsync=always timed its sync");
    assert_eq!(stats.disk_bytes, partition.size_bytes);

    let options = SubscribeOptions {
        kind: SubscriptionKind::Queue,
        prefetch: 100,
        queue: QueueSettings {
            max_deliveries: Some(1),
            ..QueueSettings::default()
        },
        ..SubscribeOptions::default()
    };
    let consumer = broker
        .subscribe("orders", "billing", options)
        .await
        .unwrap();
    clock.advance(Duration::from_millis(250));
    let deliveries = consumer.try_next(100).unwrap();
    assert_eq!(deliveries.len(), 10);
    let ids: Vec<_> = deliveries.iter().map(|delivery| delivery.id()).collect();
    consumer.ack(&ids[..8]).unwrap();
    consumer.nack(&ids[8..9], true, Duration::ZERO).unwrap();
    consumer.nack(&ids[9..], false, Duration::ZERO).unwrap();
    broker.tick().await;

    let stats = broker.stats();
    let billing = stats
        .subscriptions
        .iter()
        .find(|subscription| subscription.group == "billing")
        .unwrap();
    assert_eq!(billing.counters.delivered, 10);
    assert_eq!(billing.counters.acked, 8);
    assert_eq!(billing.counters.nacked, 1);
    assert_eq!(billing.counters.rejected, 1);
    assert_eq!(
        billing.counters.dead_lettered, 2,
        "the rejected one and the one out of deliveries"
    );
    assert_eq!(billing.success_rate, Some(0.8));
    assert_eq!(billing.latency.count, 8);
    assert!(
        (245_000..=255_000).contains(&billing.latency.p50_us),
        "{:?}",
        billing.latency
    );
    assert_eq!(billing.backlog, 0);
    assert_eq!(billing.consumers.len(), 1);
    assert_eq!(billing.consumers[0].delivered, 10);
    drop(consumer);
    broker.shutdown().await;
}
