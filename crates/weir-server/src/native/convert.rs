//! Translations between the wire types of `weir-proto` and the domain types of `weir-core`.
//!
//! The two crates deliberately do not know each other (the core knows no socket, the codec no
//! broker), so the same concept exists on both sides and meets here. Pure functions only: no
//! broker calls and no policy; a default that the wire leaves open (`None`) is filled in by the
//! caller in `handle.rs`.

use weir_core::{Confirm, Durability, FsyncPolicy, StartPosition, SubscriptionKind, TopicInfo};
use weir_proto::{Fsync, Response, Start, SubscriptionMode};

pub(crate) fn fsync_policy(fsync: Fsync) -> FsyncPolicy {
    match fsync {
        Fsync::Always => FsyncPolicy::Always,
        Fsync::Os => FsyncPolicy::Os,
        Fsync::IntervalMs(interval_ms) => FsyncPolicy::IntervalMs(interval_ms),
    }
}

fn fsync(policy: FsyncPolicy) -> Fsync {
    match policy {
        FsyncPolicy::Always => Fsync::Always,
        FsyncPolicy::Os => Fsync::Os,
        FsyncPolicy::IntervalMs(interval_ms) => Fsync::IntervalMs(interval_ms),
    }
}

pub(crate) fn start_position(start: Start) -> StartPosition {
    match start {
        Start::Earliest => StartPosition::Earliest,
        Start::Latest => StartPosition::Latest,
        Start::Offset(offset) => StartPosition::Offset(offset),
        Start::Timestamp(timestamp_ms) => StartPosition::Timestamp(timestamp_ms),
    }
}

pub(crate) fn subscription_kind(mode: SubscriptionMode) -> SubscriptionKind {
    match mode {
        SubscriptionMode::Stream => SubscriptionKind::Stream,
        SubscriptionMode::Queue => SubscriptionKind::Queue,
    }
}

fn subscription_mode(kind: SubscriptionKind) -> SubscriptionMode {
    match kind {
        SubscriptionKind::Stream => SubscriptionMode::Stream,
        SubscriptionKind::Queue => SubscriptionMode::Queue,
    }
}

fn durability(durability: Durability) -> weir_proto::Durability {
    match durability {
        Durability::Os => weir_proto::Durability::Os,
        Durability::Fsynced => weir_proto::Durability::Fsynced,
    }
}

pub(crate) fn topic_info(info: TopicInfo) -> weir_proto::TopicInfo {
    weir_proto::TopicInfo {
        partitions: info
            .partitions
            .iter()
            .map(|partition| weir_proto::PartitionInfo {
                partition: partition.partition,
                start_offset: partition.start_offset,
                end_offset: partition.end_offset,
                // The core does not report on-disk size yet; 0 means "not reported".
                size_bytes: 0,
            })
            .collect(),
        fsync: fsync(info.config.fsync),
        retention_ms: info.config.retention_ms,
        retention_bytes: info.config.retention_bytes,
        name: info.name,
    }
}

pub(crate) fn group_info(info: weir_core::GroupInfo) -> weir_proto::GroupInfo {
    weir_proto::GroupInfo {
        mode: subscription_mode(info.kind),
        consumers: info.consumers,
        partitions: info
            .partitions
            .iter()
            .map(|partition| weir_proto::GroupPartition {
                partition: partition.partition,
                committed: partition.committed,
                end_offset: partition.end_offset,
                in_flight: partition.in_flight,
            })
            .collect(),
        backlog: info.backlog,
        topic: info.topic,
        group: info.group,
    }
}

pub(crate) fn published(confirm: Confirm) -> Response {
    Response::Published {
        partitions: confirm
            .ranges
            .iter()
            .map(|range| weir_proto::PublishedRange {
                partition: range.partition,
                base_offset: range.base_offset,
                last_offset: range.last_offset,
            })
            .collect(),
        durability: durability(confirm.durability),
    }
}

pub(crate) fn message_ids(ids: &[weir_proto::MessageId]) -> Vec<weir_core::MessageId> {
    ids.iter()
        .map(|id| weir_core::MessageId {
            partition: id.partition,
            offset: id.offset,
        })
        .collect()
}
