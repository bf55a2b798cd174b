//! Values from clients that the core must refuse with a clear error instead of misbehaving:
//! durations past what the clock can hold, offsets that wrap, empty credit, oversized keys,
//! tiny segments (issue 10 #12, #18, #23).

mod common;

use common::{Fixture, START_MS};

use std::time::Duration;

use weir_core::{
    BatchBuilder, Error, MAX_BUSINESS_KEY_BYTES, MAX_DURATION_MS, Message, QueueSettings,
    ScheduleRequest, SubscribeOptions, SubscriptionKind, TopicConfig,
};

fn queue() -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Queue,
        prefetch: 10,
        ack_timeout: Some(Duration::from_secs(5)),
        ..SubscribeOptions::default()
    }
}

fn invalid(result: Result<impl std::fmt::Debug, Error>, mentions: &str) {
    match result {
        Err(Error::InvalidArgument(message)) => {
            assert!(message.contains(mentions), "{message:?} names {mentions}")
        }
        other => panic!("expected InvalidArgument about {mentions}, got {other:?}"),
    }
}

/// 2^63 ms and more turned negative as `i64`: a deadline in the past, redelivered forever.
const HUGE: Duration = Duration::from_millis(1 << 63);

#[tokio::test]
async fn durations_past_the_maximum_are_refused_where_they_enter() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    invalid(
        broker
            .subscribe(
                "jobs",
                "a",
                SubscribeOptions {
                    ack_timeout: Some(HUGE),
                    ..queue()
                },
            )
            .await,
        "ack_timeout",
    );
    for (queue_settings, name) in [
        (
            QueueSettings {
                message_ttl_ms: Some(u64::MAX),
                ..QueueSettings::default()
            },
            "message_ttl_ms",
        ),
        (
            QueueSettings {
                retry_backoff_ms: vec![1_000, 1 << 63],
                ..QueueSettings::default()
            },
            "retry_backoff_ms",
        ),
    ] {
        invalid(
            broker
                .subscribe(
                    "jobs",
                    "b",
                    SubscribeOptions {
                        queue: queue_settings,
                        ..queue()
                    },
                )
                .await,
            name,
        );
    }
    invalid(broker.claim_key("k", "me", HUGE), "ttl");
    invalid(broker.complete_key("k", "me", HUGE), "ttl");
    invalid(broker.begin_transaction("producers", Some(HUGE)), "timeout");
    invalid(
        broker
            .create_topic(
                "kept-forever",
                TopicConfig {
                    retention_ms: Some(u64::MAX),
                    ..TopicConfig::default()
                },
            )
            .await,
        "retention_ms",
    );
    invalid(
        broker
            .create_topic(
                "dedup-forever",
                TopicConfig {
                    dedup_window_ms: u64::MAX,
                    ..TopicConfig::default()
                },
            )
            .await,
        "dedup_window_ms",
    );

    // A nack delay past the maximum is refused and the message stays in flight, not requeued
    // with a deadline in the past.
    broker
        .publish_messages("jobs", None, &[Message::new("m")])
        .await
        .unwrap();
    let consumer = broker.subscribe("jobs", "c", queue()).await.unwrap();
    let delivered = consumer.try_next(10).unwrap();
    invalid(
        consumer.nack(&[delivered[0].id()], true, HUGE).await,
        "nack delay",
    );
    assert!(consumer.try_next(10).unwrap().is_empty());
    // The maximum itself is accepted.
    consumer
        .nack(
            &[delivered[0].id()],
            true,
            Duration::from_millis(MAX_DURATION_MS),
        )
        .await
        .unwrap();
    assert!(
        consumer.try_next(10).unwrap().is_empty(),
        "not due for a century"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_base_offset_that_would_wrap_is_refused() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let mut builder = BatchBuilder::new();
    builder.push(START_MS, None, &[], b"a");
    builder.push(START_MS, None, &[], b"b");
    let mut bytes = builder.finish().to_vec();
    weir_core::Batch::set_base_offset(&mut bytes, u64::MAX - 1);
    invalid(
        broker.publish("events", None, bytes.clone().into()).await,
        "base offset",
    );
    // Near the end but with room is fine: the broker assigns its own offsets.
    weir_core::Batch::set_base_offset(&mut bytes, u64::MAX - 2);
    let confirm = broker.publish("events", None, bytes.into()).await.unwrap();
    assert_eq!(confirm.ranges[0].base_offset, 0);
    broker.shutdown().await;
}

#[tokio::test]
async fn prefetch_zero_is_refused() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    invalid(
        broker
            .subscribe(
                "jobs",
                "workers",
                SubscribeOptions {
                    prefetch: 0,
                    ..queue()
                },
            )
            .await,
        "prefetch",
    );
    assert!(broker.groups(None).is_empty(), "nothing created");
    broker.shutdown().await;
}

#[tokio::test]
async fn a_business_key_past_the_maximum_is_refused() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    let request = |key: String| ScheduleRequest {
        topic: "orders".into(),
        partition: None,
        batch: common::batch(&["cancel"]),
        deliver_at_ms: START_MS + 60_000,
        business_key: Some(key),
    };
    invalid(
        broker.schedule(vec![request("k".repeat(1 << 20))]).await,
        "business key",
    );
    broker
        .schedule(vec![request("k".repeat(MAX_BUSINESS_KEY_BYTES))])
        .await
        .unwrap();
    broker.shutdown().await;
}

#[tokio::test]
async fn segments_smaller_than_the_minimum_are_refused() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    invalid(
        broker
            .create_topic(
                "tiny",
                TopicConfig {
                    segment_bytes: 1,
                    ..TopicConfig::default()
                },
            )
            .await,
        "segment_bytes",
    );
    assert!(!fixture.dir.path().join("topics/tiny").exists());
    broker.shutdown().await;
}

/// A directory the catalog does not name (left by a failed create, or a delete that could not
/// remove it) must not come back as the data of a new topic of that name.
#[tokio::test]
async fn a_new_topic_does_not_inherit_a_leftover_directory() {
    let fixture = Fixture::new();
    let broker = fixture.open().await;
    broker
        .publish_messages(
            "old",
            None,
            &[Message::new("stale 1"), Message::new("stale 2")],
        )
        .await
        .unwrap();
    broker.shutdown().await;
    drop(broker);
    let topics = fixture.dir.path().join("topics");
    copy_dir(&topics.join("old"), &topics.join("new"));
    let broker = fixture.open().await;
    let created = broker
        .create_topic("new", TopicConfig::default())
        .await
        .unwrap();
    assert_eq!(created.partitions[0].end_offset, 0);
    assert!(broker.read("new", 0, 0, 10).unwrap().is_empty());
    broker.shutdown().await;
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
