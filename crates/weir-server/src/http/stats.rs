//! A snapshot of the broker for dashboards and scripts (`GET /v1/stats`), and the alerts
//! endpoint. Everything here is read from the broker's live state at request time; rates,
//! latencies and alert rules come with the broker's metrics, and this module must not invent
//! numbers the core does not keep.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::HttpState;
use super::subscriptions::KindView;
use super::topics::PartitionView;

/// A topic in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TopicStats {
    pub name: String,
    /// Messages stored, over all partitions (end minus start offsets).
    pub messages: u64,
    pub partitions: Vec<PartitionView>,
}

/// A subscription in the snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriptionStats {
    pub topic: String,
    pub name: String,
    pub kind: KindView,
    /// Messages not yet acknowledged (streams: not yet committed).
    pub backlog: u64,
    /// Delivered and not yet settled.
    pub in_flight: u64,
    /// Consumers attached now.
    pub consumers: u32,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatsResponse {
    pub topics: Vec<TopicStats>,
    pub subscriptions: Vec<SubscriptionStats>,
    /// Messages exchanges dropped because no binding matched them, since the broker started.
    pub unroutable_dropped: u64,
}

#[utoipa::path(get, path = "/v1/stats", tag = "monitoring",
    responses((status = 200, description = "Topics and subscriptions as they are now", body = StatsResponse)))]
pub async fn stats(State(state): State<HttpState>) -> Json<StatsResponse> {
    let topics = state
        .broker
        .topics()
        .into_iter()
        .map(|topic| TopicStats {
            messages: topic
                .partitions
                .iter()
                .map(|partition| partition.end_offset - partition.start_offset)
                .sum(),
            partitions: topic
                .partitions
                .iter()
                .map(|partition| PartitionView {
                    partition: partition.partition,
                    start_offset: partition.start_offset,
                    end_offset: partition.end_offset,
                })
                .collect(),
            name: topic.name,
        })
        .collect();
    let subscriptions = state
        .broker
        .groups(None)
        .into_iter()
        .map(|group| SubscriptionStats {
            in_flight: group
                .partitions
                .iter()
                .map(|partition| u64::from(partition.in_flight))
                .sum(),
            topic: group.topic,
            name: group.group,
            kind: group.kind.into(),
            backlog: group.backlog,
            consumers: group.consumers,
        })
        .collect();
    Json(StatsResponse {
        topics,
        subscriptions,
        unroutable_dropped: state.broker.unroutable_dropped(),
    })
}

/// A firing alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AlertView {
    /// The rule that fired.
    pub rule: String,
    /// What it is about (a topic or subscription).
    pub scope: String,
    pub message: String,
    /// When it started firing, ms since the epoch.
    pub since_ms: i64,
}

/// `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AlertsResponse {
    /// Alerts firing now.
    pub alerts: Vec<AlertView>,
}

#[utoipa::path(get, path = "/v1/alerts", tag = "monitoring",
    responses((status = 200, description = "Alerts firing now. The broker evaluates no alert rules yet, so the list is empty", body = AlertsResponse)))]
pub async fn alerts() -> Json<AlertsResponse> {
    // Alert rules are evaluated by the broker's metrics, which do not exist yet: the honest
    // answer until then is that nothing is firing.
    Json(AlertsResponse { alerts: Vec::new() })
}
