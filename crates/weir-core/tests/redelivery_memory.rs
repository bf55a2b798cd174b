//! What redelivery and large batches cost in memory and time (issue 10 defect 17). Alone in
//! its test binary: it reads the process's resident set size, which other tests running in
//! parallel would disturb.

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, START_MS};
use weir_core::{BatchBuilder, MessageId, QueueSettings, SubscribeOptions, SubscriptionKind};

/// A field of `/proc/self/status`, in bytes (`VmRSS`, `VmHWM`).
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().strip_suffix("kB"))
        .and_then(|kilobytes| kilobytes.trim().parse::<u64>().ok())
        .map_or(0, |kilobytes| kilobytes * 1024)
}

fn queue(prefetch: u32) -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Queue,
        prefetch,
        ack_timeout: Some(Duration::from_secs(600)),
        queue: QueueSettings::default(),
        ..SubscribeOptions::default()
    }
}

/// Publishes `batches` batches of `per_batch` records of `value_bytes` each to `topic`.
async fn publish_batches(
    broker: &weir_core::Broker,
    topic: &str,
    batches: usize,
    per_batch: usize,
    value_bytes: usize,
) {
    let value = vec![b'x'; value_bytes];
    for _ in 0..batches {
        let mut builder = BatchBuilder::new();
        for _ in 0..per_batch {
            builder.push(START_MS, None, &[], &value);
        }
        broker
            .publish(topic, None, builder.finish())
            .await
            .expect("published");
    }
}

/// Goal: a redelivery costs its message, not its batch. Method: 512 messages of 8 KiB in
/// 256 KiB batches are delivered to a consumer that leaves without acking; a second consumer
/// takes all 512 again and holds them. Each used to be read alone and keep its own copy of its
/// whole batch alive (512 × 256 KiB = 128 MiB); now they take about their own 4 MiB.
#[tokio::test]
async fn redeliveries_do_not_keep_their_batches_alive() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    publish_batches(&broker, "big", 16, 32, 8 << 10).await;
    let consumer = broker
        .subscribe("big", "workers", queue(512))
        .await
        .unwrap();
    let first = consumer.try_next(512).unwrap();
    assert_eq!(first.len(), 512);
    drop(first);
    drop(consumer);

    let before = status_bytes("VmRSS");
    let consumer = broker
        .subscribe("big", "workers", queue(512))
        .await
        .unwrap();
    let again = consumer.try_next(512).unwrap();
    assert_eq!(again.len(), 512);
    assert!(again.iter().all(|delivery| delivery.delivery_count == 2));
    let grown = status_bytes("VmRSS").saturating_sub(before);
    assert!(
        grown < 32 << 20,
        "holding 512 redeliveries of 8 KiB grew the resident set by {} MiB",
        grown >> 20
    );
    drop(again);
    drop(consumer);
    broker.shutdown().await;
}

/// Measures (run with `--ignored --nocapture`, best in release): the two cases.
/// - prefetch 4,096 over 1 MiB batches of 1 KiB messages, the consumer leaves, another takes
///   the 4,096 redeliveries: time to get them and peak resident set;
/// - 100,000 records in one batch consumed with prefetch 100 (per-message acks): time.
#[tokio::test]
#[ignore = "a measurement; prints numbers"]
async fn measure_redelivery_and_large_batch_consumption() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    publish_batches(&broker, "wide", 8, 1024, 1024).await;
    let consumer = broker
        .subscribe("wide", "workers", queue(4096))
        .await
        .unwrap();
    assert_eq!(consumer.try_next(4096).unwrap().len(), 4096);
    drop(consumer);
    let rss_before = status_bytes("VmRSS");
    let started = Instant::now();
    let consumer = broker
        .subscribe("wide", "workers", queue(4096))
        .await
        .unwrap();
    let again = consumer.try_next(4096).unwrap();
    let elapsed = started.elapsed();
    assert_eq!(again.len(), 4096);
    println!(
        "redelivery of 4,096 × 1 KiB from 1 MiB batches: {elapsed:?}, VmRSS {} → {} MiB, VmHWM {} MiB",
        rss_before >> 20,
        status_bytes("VmRSS") >> 20,
        status_bytes("VmHWM") >> 20
    );
    drop(again);
    drop(consumer);

    publish_batches(&broker, "long", 1, 100_000, 10).await;
    let consumer = broker
        .subscribe("long", "workers", queue(100))
        .await
        .unwrap();
    let started = Instant::now();
    let mut consumed = 0;
    while consumed < 100_000 {
        let deliveries = consumer.try_next(100).unwrap();
        assert!(!deliveries.is_empty(), "stalled at {consumed}");
        consumed += deliveries.len();
        let ids: Vec<MessageId> = deliveries.iter().map(|delivery| delivery.id()).collect();
        consumer.ack(&ids).await.unwrap();
    }
    println!(
        "100,000 records in one batch, prefetch 100: consumed in {:?}",
        started.elapsed()
    );
    broker.shutdown().await;
}
