//! Proptest strategies for every request and response, shared by the roundtrip tests and the
//! stable-toolchain fuzz test (which mutates valid frames as well as feeding random bytes).

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use weir_batch::BatchBuilder;
use weir_proto::{
    Delivery, Durability, Fsync, GroupInfo, GroupPartition, MessageId, PartitionInfo,
    PublishedRange, Request, Response, Start, SubscriptionMode, TopicInfo,
};

pub fn text() -> impl Strategy<Value = String> {
    // Any Unicode, so multi-byte UTF-8 is exercised too.
    "\\PC{0,12}"
}

pub fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
}

pub fn fsync() -> impl Strategy<Value = Fsync> {
    prop_oneof![
        Just(Fsync::Always),
        Just(Fsync::Os),
        any::<u32>().prop_map(Fsync::IntervalMs),
    ]
}

pub fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Earliest),
        Just(Start::Latest),
        any::<u64>().prop_map(Start::Offset),
        any::<i64>().prop_map(Start::Timestamp),
    ]
}

pub fn mode() -> impl Strategy<Value = SubscriptionMode> {
    prop_oneof![
        Just(SubscriptionMode::Stream),
        Just(SubscriptionMode::Queue)
    ]
}

pub fn durability() -> impl Strategy<Value = Durability> {
    prop_oneof![Just(Durability::Os), Just(Durability::Fsynced)]
}

pub fn message_ids() -> impl Strategy<Value = Vec<MessageId>> {
    proptest::collection::vec(
        (any::<u32>(), any::<u64>())
            .prop_map(|(partition, offset)| MessageId { partition, offset }),
        0..6,
    )
}

/// One encoded batch of one to four records, as a producer would send it.
pub fn batch() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(
        (
            any::<i64>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            proptest::collection::vec(
                ("[a-z]{0,4}", proptest::collection::vec(any::<u8>(), 0..4)),
                0..3,
            ),
            proptest::collection::vec(any::<u8>(), 0..32),
        ),
        1..5,
    )
    .prop_map(|records| {
        let mut builder = BatchBuilder::new();
        for (timestamp, key, headers, value) in &records {
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(name, value)| (name.as_str(), value.as_slice()))
                .collect();
            builder.push(*timestamp, key.as_deref(), &headers, value);
        }
        builder.finish()
    })
}

pub fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), text()).prop_map(|(min_version, max_version, client_name)| {
            Request::Hello {
                min_version,
                max_version,
                client_name,
            }
        }),
        (
            text(),
            any::<u32>(),
            fsync(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
            any::<Option<u64>>()
        )
            .prop_map(
                |(name, partitions, fsync, retention_ms, retention_bytes, segment_bytes)| {
                    Request::CreateTopic {
                        name,
                        partitions,
                        fsync,
                        retention_ms,
                        retention_bytes,
                        segment_bytes,
                    }
                }
            ),
        text().prop_map(|name| Request::DeleteTopic { name }),
        Just(Request::ListTopics),
        text().prop_map(|name| Request::DescribeTopic { name }),
        (text(), any::<Option<u32>>(), batch()).prop_map(|(topic, partition, batch)| {
            Request::Publish {
                topic,
                partition,
                batch,
            }
        }),
        (
            text(),
            text(),
            mode(),
            start(),
            any::<u32>(),
            any::<Option<u64>>()
        )
            .prop_map(|(topic, group, mode, start, prefetch, ack_timeout_ms)| {
                Request::Subscribe {
                    topic,
                    group,
                    mode,
                    start,
                    prefetch,
                    ack_timeout_ms,
                }
            }),
        any::<u32>().prop_map(|subscription| Request::Unsubscribe { subscription }),
        (any::<u32>(), message_ids())
            .prop_map(|(subscription, ids)| Request::Ack { subscription, ids }),
        (
            any::<u32>(),
            message_ids(),
            any::<bool>(),
            any::<u64>(),
            text()
        )
            .prop_map(
                |(subscription, ids, requeue, delay_ms, error)| Request::Nack {
                    subscription,
                    ids,
                    requeue,
                    delay_ms,
                    error,
                }
            ),
        proptest::option::of(text()).prop_map(|topic| Request::ListGroups { topic }),
        (text(), text()).prop_map(|(topic, group)| Request::DescribeGroup { topic, group }),
        (text(), text(), start()).prop_map(|(topic, group, to)| Request::ResetGroup {
            topic,
            group,
            to
        }),
        Just(Request::Ping),
    ]
}

pub fn topic_info() -> impl Strategy<Value = TopicInfo> {
    (
        text(),
        proptest::collection::vec(
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
                |(partition, start_offset, end_offset, size_bytes)| PartitionInfo {
                    partition,
                    start_offset,
                    end_offset,
                    size_bytes,
                },
            ),
            0..4,
        ),
        fsync(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
    )
        .prop_map(
            |(name, partitions, fsync, retention_ms, retention_bytes)| TopicInfo {
                name,
                partitions,
                fsync,
                retention_ms,
                retention_bytes,
            },
        )
}

pub fn group_info() -> impl Strategy<Value = GroupInfo> {
    (
        text(),
        text(),
        mode(),
        any::<u32>(),
        proptest::collection::vec(
            (any::<u32>(), any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
                |(partition, committed, end_offset, in_flight)| GroupPartition {
                    partition,
                    committed,
                    end_offset,
                    in_flight,
                },
            ),
            0..4,
        ),
        any::<u64>(),
    )
        .prop_map(
            |(topic, group, mode, consumers, partitions, backlog)| GroupInfo {
                topic,
                group,
                mode,
                consumers,
                partitions,
                backlog,
            },
        )
}

pub fn delivery() -> impl Strategy<Value = Delivery> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<i64>(),
        proptest::option::of(bytes()),
        proptest::collection::vec((text(), bytes()), 0..3),
        bytes(),
    )
        .prop_map(
            |(partition, offset, delivery_count, timestamp_ms, key, headers, value)| Delivery {
                partition,
                offset,
                delivery_count,
                timestamp_ms,
                key,
                headers,
                value,
            },
        )
}

pub fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (any::<u16>(), text(), any::<u32>()).prop_map(|(version, server_name, max_frame_bytes)| {
            Response::HelloOk {
                version,
                server_name,
                max_frame_bytes,
            }
        }),
        Just(Response::Ok),
        (any::<u16>(), text()).prop_map(|(code, message)| Response::Error { code, message }),
        topic_info().prop_map(Response::Topic),
        proptest::collection::vec(topic_info(), 0..3).prop_map(Response::Topics),
        (
            proptest::collection::vec(
                (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
                    |(partition, base_offset, last_offset)| PublishedRange {
                        partition,
                        base_offset,
                        last_offset,
                    },
                ),
                0..4,
            ),
            durability(),
        )
            .prop_map(|(partitions, durability)| Response::Published {
                partitions,
                durability
            }),
        any::<u32>().prop_map(|subscription| Response::Subscribed { subscription }),
        proptest::collection::vec(group_info(), 0..3).prop_map(Response::Groups),
        Just(Response::Pong),
        (any::<u32>(), proptest::collection::vec(delivery(), 0..5)).prop_map(
            |(subscription, messages)| Response::Deliver {
                subscription,
                messages
            }
        ),
    ]
}

/// A request encoded as a whole frame.
pub fn encoded_request() -> impl Strategy<Value = (Request, u64, BytesMut)> {
    (request(), any::<u64>()).prop_map(|(request, correlation_id)| {
        let mut buf = BytesMut::new();
        request.encode(correlation_id, &mut buf);
        (request, correlation_id, buf)
    })
}

/// A response encoded as a whole frame.
pub fn encoded_response() -> impl Strategy<Value = (Response, u64, BytesMut)> {
    (response(), any::<u64>()).prop_map(|(response, correlation_id)| {
        let mut buf = BytesMut::new();
        response.encode(correlation_id, &mut buf);
        (response, correlation_id, buf)
    })
}
