//! Proptest strategies for every request and response, shared by the roundtrip tests and the
//! stable-toolchain fuzz test (which mutates valid frames as well as feeding random bytes).

#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use weir_batch::BatchBuilder;
use weir_proto::{
    AlertInfo, AlertMetric, AlertState, Binding, BrokerStats, ClaimOutcome, ConsumerStats,
    DeadLetterQueueInfo, Decision, Delivery, Durability, ExchangeInfo, ExchangeKind, Fsync,
    GroupInfo, GroupPartition, LatencySummary, Message, MessageId, Overflow, PartitionInfo,
    PartitionStats, PublishedRange, QueueSettings, Request, Response, ScheduleTime, ScheduledInfo,
    ScheduledSelector, Start, SubscriptionCounters, SubscriptionMode, SubscriptionStats,
    TopicConfirm, TopicInfo, TopicStats, TransactionInfo, TransactionState,
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

pub fn queue_settings() -> impl Strategy<Value = QueueSettings> {
    (
        any::<Option<u32>>(),
        proptest::option::of(text()),
        any::<Option<u64>>(),
        any::<bool>(),
        proptest::collection::vec(any::<u64>(), 0..4),
        any::<Option<u64>>(),
        prop_oneof![
            Just(Overflow::RejectPublish),
            Just(Overflow::DeadLetterOldest)
        ],
    )
        .prop_map(
            |(
                max_deliveries,
                dead_letter_topic,
                message_ttl_ms,
                ordered_by_key,
                retry_backoff_ms,
                max_backlog,
                overflow,
            )| QueueSettings {
                max_deliveries,
                dead_letter_topic,
                message_ttl_ms,
                ordered_by_key,
                retry_backoff_ms,
                max_backlog,
                overflow,
            },
        )
}

pub fn exchange_kind() -> impl Strategy<Value = ExchangeKind> {
    prop_oneof![
        Just(ExchangeKind::Direct),
        Just(ExchangeKind::Topic),
        Just(ExchangeKind::Fanout),
        Just(ExchangeKind::Headers),
    ]
}

pub fn binding() -> impl Strategy<Value = Binding> {
    (
        text(),
        text(),
        proptest::collection::vec((text(), text()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(topic, key, headers, match_all)| Binding {
            topic,
            key,
            headers,
            match_all,
        })
}

pub fn schedule_time() -> impl Strategy<Value = ScheduleTime> {
    prop_oneof![
        any::<u64>().prop_map(ScheduleTime::DelayMs),
        any::<i64>().prop_map(ScheduleTime::AtMs),
    ]
}

pub fn decision() -> impl Strategy<Value = Decision> {
    prop_oneof![
        Just(Decision::Commit),
        Just(Decision::Rollback),
        Just(Decision::Unknown)
    ]
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
        (any::<u32>(), message_ids())
            .prop_map(|(subscription, ids)| Request::AckReporting { subscription, ids }),
        (
            any::<u32>(),
            message_ids(),
            any::<bool>(),
            any::<u64>(),
            text()
        )
            .prop_map(|(subscription, ids, requeue, delay_ms, error)| {
                Request::NackReporting {
                    subscription,
                    ids,
                    requeue,
                    delay_ms,
                    error,
                }
            }),
        proptest::option::of(text()).prop_map(|topic| Request::ListGroups { topic }),
        (text(), text()).prop_map(|(topic, group)| Request::DescribeGroup { topic, group }),
        (text(), text()).prop_map(|(topic, group)| Request::DeleteGroup { topic, group }),
        (text(), text(), start()).prop_map(|(topic, group, to)| Request::ResetGroup {
            topic,
            group,
            to
        }),
        Just(Request::Ping),
        (text(), any::<Option<u32>>(), batch()).prop_map(|(topic, partition, batch)| {
            Request::PublishReportingDuplicates {
                topic,
                partition,
                batch,
            }
        }),
        (text(), text(), any::<bool>(), batch()).prop_map(
            |(exchange, routing_key, mandatory, batch)| Request::PublishToExchange {
                exchange,
                routing_key,
                mandatory,
                batch,
            }
        ),
        (
            text(),
            any::<Option<u32>>(),
            schedule_time(),
            proptest::option::of(text()),
            batch()
        )
            .prop_map(|(topic, partition, when, business_key, batch)| {
                Request::PublishDelayed {
                    topic,
                    partition,
                    when,
                    business_key,
                    batch,
                }
            }),
        (
            (text(), text(), mode(), start()),
            any::<u32>(),
            any::<Option<u64>>(),
            queue_settings()
        )
            .prop_map(
                |((topic, group, mode, start), prefetch, ack_timeout_ms, settings)| {
                    Request::SubscribeWithSettings {
                        topic,
                        group,
                        mode,
                        start,
                        prefetch,
                        ack_timeout_ms,
                        settings,
                    }
                }
            ),
        (any::<u32>(), message_ids())
            .prop_map(|(subscription, ids)| Request::Release { subscription, ids }),
        (text(), exchange_kind(), proptest::option::of(text())).prop_map(
            |(name, kind, alternate_topic)| Request::CreateExchange {
                name,
                kind,
                alternate_topic
            }
        ),
        text().prop_map(|name| Request::DeleteExchange { name }),
        Just(Request::ListExchanges),
        (text(), binding()).prop_map(|(exchange, binding)| Request::Bind { exchange, binding }),
        (text(), text(), proptest::option::of(text())).prop_map(|(exchange, topic, key)| {
            Request::Unbind {
                exchange,
                topic,
                key,
            }
        }),
        Just(Request::ListDeadLetterQueues),
        (text(), any::<u32>()).prop_map(|(topic, max)| Request::ListDeadLetters { topic, max }),
        (text(), any::<u32>(), start(), any::<u32>()).prop_map(|(topic, partition, from, max)| {
            Request::Read {
                topic,
                partition,
                from,
                max,
            }
        }),
        (
            text(),
            proptest::option::of(text()),
            proptest::option::of(message_ids()),
            any::<u32>()
        )
            .prop_map(|(topic, target, ids, max)| Request::Redrive {
                topic,
                target,
                ids,
                max
            }),
        text().prop_map(|topic| Request::PurgeDeadLetters { topic }),
        (
            proptest::option::of(text()),
            any::<Option<(i64, u64)>>(),
            any::<u32>()
        )
            .prop_map(|(topic, after, limit)| Request::ListScheduled {
                topic,
                after,
                limit
            }),
        any::<u64>().prop_map(|id| Request::ShowScheduled { id }),
        prop_oneof![
            any::<u64>().prop_map(ScheduledSelector::Id),
            text().prop_map(ScheduledSelector::BusinessKey),
        ]
        .prop_map(|selector| Request::CancelScheduled { selector }),
        (any::<u64>(), schedule_time()).prop_map(|(id, when)| Request::Reschedule { id, when }),
        (text(), any::<Option<u64>>()).prop_map(|(producer_group, timeout_ms)| {
            Request::BeginTransaction {
                producer_group,
                timeout_ms,
            }
        }),
        (any::<u64>(), text(), any::<Option<u32>>(), batch()).prop_map(
            |(transaction, topic, partition, batch)| Request::SendHalf {
                transaction,
                topic,
                partition,
                batch,
            }
        ),
        any::<u64>().prop_map(|transaction| Request::CommitTransaction { transaction }),
        any::<u64>().prop_map(|transaction| Request::RollbackTransaction { transaction }),
        Just(Request::ListTransactions),
        text().prop_map(|producer_group| Request::RegisterTransactionChecker { producer_group }),
        (any::<u64>(), decision()).prop_map(|(transaction, decision)| {
            Request::ResolveTransaction {
                transaction,
                decision,
            }
        }),
        (text(), text(), any::<u64>()).prop_map(|(key, holder, ttl_ms)| Request::ClaimKey {
            key,
            holder,
            ttl_ms
        }),
        (text(), text(), any::<u64>()).prop_map(|(key, holder, ttl_ms)| Request::CompleteKey {
            key,
            holder,
            ttl_ms
        }),
        (text(), text()).prop_map(|(key, holder)| Request::ReleaseKey { key, holder }),
        Just(Request::Stats),
        Just(Request::Alerts),
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

pub fn published_ranges() -> impl Strategy<Value = Vec<PublishedRange>> {
    proptest::collection::vec(
        (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(
            |(partition, base_offset, last_offset)| PublishedRange {
                partition,
                base_offset,
                last_offset,
            },
        ),
        0..4,
    )
}

pub fn topic_confirm() -> impl Strategy<Value = TopicConfirm> {
    (text(), published_ranges(), message_ids(), durability()).prop_map(
        |(topic, partitions, duplicates, durability)| TopicConfirm {
            topic,
            partitions,
            duplicates,
            durability,
        },
    )
}

pub fn exchange_info() -> impl Strategy<Value = ExchangeInfo> {
    (
        text(),
        exchange_kind(),
        proptest::option::of(text()),
        proptest::collection::vec(binding(), 0..3),
    )
        .prop_map(|(name, kind, alternate_topic, bindings)| ExchangeInfo {
            name,
            kind,
            alternate_topic,
            bindings,
        })
}

pub fn scheduled_info() -> impl Strategy<Value = ScheduledInfo> {
    (
        any::<u64>(),
        text(),
        any::<Option<u32>>(),
        any::<i64>(),
        proptest::option::of(text()),
        any::<u32>(),
    )
        .prop_map(
            |(id, topic, partition, deliver_at_ms, business_key, message_count)| ScheduledInfo {
                id,
                topic,
                partition,
                deliver_at_ms,
                business_key,
                message_count,
            },
        )
}

pub fn message() -> impl Strategy<Value = Message> {
    (
        any::<i64>(),
        proptest::option::of(bytes()),
        proptest::collection::vec((text(), bytes()), 0..3),
        bytes(),
    )
        .prop_map(|(timestamp_ms, key, headers, value)| Message {
            timestamp_ms,
            key,
            headers,
            value,
        })
}

pub fn transaction_info() -> impl Strategy<Value = TransactionInfo> {
    (
        any::<u64>(),
        text(),
        prop_oneof![
            Just(TransactionState::Open),
            Just(TransactionState::Committing)
        ],
        any::<i64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(id, producer_group, state, created_ms, checks, parts)| TransactionInfo {
                id,
                producer_group,
                state,
                created_ms,
                checks,
                parts,
            },
        )
}

pub fn claim_outcome() -> impl Strategy<Value = ClaimOutcome> {
    prop_oneof![
        any::<i64>().prop_map(|expires_at_ms| ClaimOutcome::Acquired { expires_at_ms }),
        (text(), any::<i64>()).prop_map(|(holder, expires_at_ms)| ClaimOutcome::Busy {
            holder,
            expires_at_ms
        }),
        any::<i64>().prop_map(|completed_at_ms| ClaimOutcome::Completed { completed_at_ms }),
    ]
}

pub fn latency() -> impl Strategy<Value = LatencySummary> {
    any::<[u64; 4]>().prop_map(|[count, p50_us, p99_us, max_us]| LatencySummary {
        count,
        p50_us,
        p99_us,
        max_us,
    })
}

pub fn subscription_stats() -> impl Strategy<Value = SubscriptionStats> {
    (
        (text(), text(), mode(), any::<u64>(), any::<u64>()),
        proptest::collection::vec(
            (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(id, delivered, in_flight)| {
                ConsumerStats {
                    id,
                    delivered,
                    in_flight,
                }
            }),
            0..3,
        ),
        any::<[u64; 9]>(),
        any::<Option<u32>>(),
        latency(),
    )
        .prop_map(
            |(
                (topic, group, mode, backlog, in_flight),
                consumers,
                counters,
                success_rate_ppm,
                latency,
            )| {
                let [
                    delivered,
                    redelivered,
                    acked,
                    nacked,
                    rejected,
                    timed_out,
                    released,
                    dead_lettered,
                    expired,
                ] = counters;
                SubscriptionStats {
                    topic,
                    group,
                    mode,
                    backlog,
                    in_flight,
                    consumers,
                    counters: SubscriptionCounters {
                        delivered,
                        redelivered,
                        acked,
                        nacked,
                        rejected,
                        timed_out,
                        released,
                        dead_lettered,
                        expired,
                    },
                    success_rate_ppm,
                    latency,
                }
            },
        )
}

pub fn broker_stats() -> impl Strategy<Value = BrokerStats> {
    (
        any::<i64>(),
        any::<[u64; 4]>(),
        latency(),
        proptest::collection::vec(
            (
                text(),
                proptest::collection::vec(
                    (any::<u32>(), any::<[u64; 5]>()).prop_map(
                        |(
                            partition,
                            [
                                start_offset,
                                end_offset,
                                size_bytes,
                                published_messages,
                                published_bytes,
                            ],
                        )| PartitionStats {
                            partition,
                            start_offset,
                            end_offset,
                            size_bytes,
                            published_messages,
                            published_bytes,
                        },
                    ),
                    0..3,
                ),
            )
                .prop_map(|(name, partitions)| TopicStats { name, partitions }),
            0..3,
        ),
        proptest::collection::vec(subscription_stats(), 0..3),
    )
        .prop_map(
            |(
                now_ms,
                [disk_bytes, scheduled, transactions, unroutable_dropped],
                fsync,
                topics,
                subscriptions,
            )| BrokerStats {
                now_ms,
                disk_bytes,
                scheduled,
                transactions,
                unroutable_dropped,
                fsync,
                topics,
                subscriptions,
            },
        )
}

/// A finite `f64` from its bits, so that every exponent and the sign of zero are exercised.
pub fn finite_f64() -> impl Strategy<Value = f64> {
    any::<u64>()
        .prop_map(f64::from_bits)
        .prop_filter("the wire carries finite values only", |value| {
            value.is_finite()
        })
}

pub fn alert_info() -> impl Strategy<Value = AlertInfo> {
    (
        (text(), text(), text()),
        prop_oneof![
            Just(AlertMetric::Backlog),
            Just(AlertMetric::SuccessRate),
            Just(AlertMetric::InFlight),
            Just(AlertMetric::LatencyP99Ms),
            Just(AlertMetric::Consumers),
            Just(AlertMetric::DeadLettered),
            Just(AlertMetric::PoisonedPartition),
        ],
        prop_oneof![Just(AlertState::Pending), Just(AlertState::Firing)],
        finite_f64(),
        finite_f64(),
        any::<i64>(),
    )
        .prop_map(
            |((rule, scope, message), metric, state, value, threshold, since_ms)| AlertInfo {
                rule,
                scope,
                metric,
                state,
                value,
                threshold,
                since_ms,
                message,
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
        any::<u64>().prop_map(|count| Response::Count { count }),
        (published_ranges(), message_ids(), durability()).prop_map(
            |(partitions, duplicates, durability)| Response::PublishedWithDuplicates {
                partitions,
                duplicates,
                durability,
            }
        ),
        (
            proptest::collection::vec(topic_confirm(), 0..3),
            any::<u32>()
        )
            .prop_map(|(targets, dropped)| Response::Routed { targets, dropped }),
        (any::<u64>(), any::<i64>())
            .prop_map(|(id, deliver_at_ms)| Response::Scheduled { id, deliver_at_ms }),
        exchange_info().prop_map(Response::Exchange),
        proptest::collection::vec(exchange_info(), 0..3).prop_map(Response::Exchanges),
        proptest::collection::vec(
            (text(), any::<u64>())
                .prop_map(|(topic, pending)| DeadLetterQueueInfo { topic, pending }),
            0..3
        )
        .prop_map(Response::DeadLetterQueues),
        proptest::collection::vec(delivery(), 0..4).prop_map(Response::DeadLetters),
        (any::<u64>(), proptest::collection::vec(delivery(), 0..4)).prop_map(
            |(next_offset, messages)| Response::Messages {
                next_offset,
                messages
            }
        ),
        (any::<u32>(), message_ids(), message_ids()).prop_map(
            |(settled, already_settled, unknown)| Response::Settled {
                settled,
                already_settled,
                unknown
            }
        ),
        proptest::collection::vec(scheduled_info(), 0..3).prop_map(Response::ScheduledList),
        (scheduled_info(), proptest::collection::vec(message(), 0..3))
            .prop_map(|(info, messages)| Response::ScheduledMessage { info, messages }),
        any::<u64>().prop_map(|transaction| Response::TransactionBegun { transaction }),
        proptest::collection::vec(transaction_info(), 0..3).prop_map(Response::Transactions),
        (any::<u64>(), text()).prop_map(|(transaction, producer_group)| {
            Response::CheckTransaction {
                transaction,
                producer_group,
            }
        }),
        proptest::collection::vec(topic_confirm(), 0..3)
            .prop_map(|targets| Response::TransactionCommitted { targets }),
        claim_outcome().prop_map(Response::Claimed),
        broker_stats().prop_map(Response::Stats),
        proptest::collection::vec(alert_info(), 0..3).prop_map(Response::Alerts),
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
