//! What the broker measures, for dashboards and scripts: a snapshot (`GET /v1/stats`), and the
//! same snapshot as a server-sent-events stream for dashboards (`GET /v1/stats/stream`).
//! Every number is the core's ([`weir_core::Broker::stats`]); counters count since the broker
//! started, so a rate is the difference of two snapshots over their `now_ms` difference. This
//! module must not invent numbers the core does not keep.

use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_core::{BrokerStats, LatencySummary};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::Query;
use super::subscriptions::KindView;

/// A latency distribution, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct LatencyView {
    /// How many were measured.
    pub count: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl From<LatencySummary> for LatencyView {
    fn from(summary: LatencySummary) -> LatencyView {
        LatencyView {
            count: summary.count,
            p50_us: summary.p50_us,
            p99_us: summary.p99_us,
            max_us: summary.max_us,
        }
    }
}

/// One partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PartitionStatsView {
    pub partition: u32,
    pub start_offset: u64,
    pub end_offset: u64,
    /// On disk.
    pub size_bytes: u64,
    /// Since the broker started.
    pub published_messages: u64,
    pub published_bytes: u64,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TopicStatsView {
    pub name: String,
    /// Messages stored now, over all partitions (end minus start offsets).
    pub messages: u64,
    pub size_bytes: u64,
    pub published_messages: u64,
    pub published_bytes: u64,
    pub partitions: Vec<PartitionStatsView>,
}

/// One consumer of a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConsumerStatsView {
    pub id: u64,
    pub delivered: u64,
    pub in_flight: u32,
}

/// One subscription. Counters count since the broker started.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct SubscriptionStatsView {
    pub topic: String,
    pub name: String,
    pub kind: KindView,
    /// Published and not yet acked (queue) or committed (stream).
    pub backlog: u64,
    /// Delivered and not yet settled.
    pub in_flight: u64,
    /// Consumers attached now (all HTTP clients of a subscription share one).
    pub consumers: Vec<ConsumerStatsView>,
    pub delivered: u64,
    /// Deliveries after a message's first.
    pub redelivered: u64,
    pub acked: u64,
    /// Nacked with requeue.
    pub nacked: u64,
    /// Nacked without requeue.
    pub rejected: u64,
    /// Deliveries whose visibility (ack) timeout passed.
    pub timed_out: u64,
    /// Given back by consumers that stopped (not failures).
    pub released: u64,
    pub dead_lettered: u64,
    /// Dead-lettered because their time to live passed.
    pub expired: u64,
    /// acks ÷ (acks + nacks + rejects + timeouts + expiries) over the last minute; null when
    /// nothing was settled in it.
    pub success_rate: Option<f64>,
    /// Publish → ack.
    pub latency: LatencyView,
}

/// `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatsResponse {
    /// When the snapshot was taken, ms since the epoch.
    pub now_ms: i64,
    pub topics: Vec<TopicStatsView>,
    pub subscriptions: Vec<SubscriptionStatsView>,
    /// Each group commit's fdatasync.
    pub fsync: LatencyView,
    /// The topics' size on disk.
    pub disk_bytes: u64,
    /// Delayed messages waiting in the schedule.
    pub scheduled: u64,
    /// Open transactions.
    pub transactions: u64,
    /// Messages exchanges dropped because no binding matched them, since the broker started.
    pub unroutable_dropped: u64,
}

impl From<BrokerStats> for StatsResponse {
    fn from(stats: BrokerStats) -> StatsResponse {
        StatsResponse {
            now_ms: stats.now_ms,
            topics: stats
                .topics
                .into_iter()
                .map(|topic| {
                    let sum = |field: fn(&weir_core::PartitionStats) -> u64| {
                        topic.partitions.iter().map(field).sum()
                    };
                    TopicStatsView {
                        messages: sum(|partition| {
                            partition.end_offset.saturating_sub(partition.start_offset)
                        }),
                        size_bytes: sum(|partition| partition.size_bytes),
                        published_messages: sum(|partition| partition.published_messages),
                        published_bytes: sum(|partition| partition.published_bytes),
                        partitions: topic
                            .partitions
                            .iter()
                            .map(|partition| PartitionStatsView {
                                partition: partition.partition,
                                start_offset: partition.start_offset,
                                end_offset: partition.end_offset,
                                size_bytes: partition.size_bytes,
                                published_messages: partition.published_messages,
                                published_bytes: partition.published_bytes,
                            })
                            .collect(),
                        name: topic.name,
                    }
                })
                .collect(),
            subscriptions: stats
                .subscriptions
                .into_iter()
                .map(|subscription| {
                    let counters = subscription.counters;
                    SubscriptionStatsView {
                        topic: subscription.topic,
                        name: subscription.group,
                        kind: subscription.kind.into(),
                        backlog: subscription.backlog,
                        in_flight: subscription.in_flight,
                        consumers: subscription
                            .consumers
                            .iter()
                            .map(|consumer| ConsumerStatsView {
                                id: consumer.id,
                                delivered: consumer.delivered,
                                in_flight: consumer.in_flight,
                            })
                            .collect(),
                        delivered: counters.delivered,
                        redelivered: counters.redelivered,
                        acked: counters.acked,
                        nacked: counters.nacked,
                        rejected: counters.rejected,
                        timed_out: counters.timed_out,
                        released: counters.released,
                        dead_lettered: counters.dead_lettered,
                        expired: counters.expired,
                        success_rate: subscription.success_rate,
                        latency: subscription.latency.into(),
                    }
                })
                .collect(),
            fsync: stats.fsync.into(),
            disk_bytes: stats.disk_bytes,
            scheduled: stats.scheduled,
            transactions: stats.transactions,
            unroutable_dropped: stats.unroutable_dropped,
        }
    }
}

#[utoipa::path(get, path = "/v1/stats", tag = "monitoring",
    responses((status = 200, description = "Everything the broker measures, now", body = StatsResponse)))]
pub async fn stats(State(state): State<HttpState>) -> Json<StatsResponse> {
    Json(state.broker.stats().into())
}

/// Query of `GET /v1/stats/stream`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    /// Milliseconds between snapshots: 100 to 60000, default 1000.
    #[param(minimum = 100, maximum = 60000)]
    pub interval_ms: Option<u64>,
}

#[utoipa::path(get, path = "/v1/stats/stream", tag = "monitoring",
    params(StreamQuery),
    responses(
        (status = 200, description = "Server-sent events: a `stats` event with a StatsResponse every interval, the first at once; ends when the server stops", content_type = "text/event-stream", body = String),
        (status = 400, description = "Bad interval", body = ErrorBody),
    ))]
pub async fn stats_stream(
    State(state): State<HttpState>,
    Query(query): Query<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let interval_ms = query.interval_ms.unwrap_or(1000);
    if !(100..=60_000).contains(&interval_ms) {
        return Err(ApiError::invalid_argument("interval_ms is 100 to 60000"));
    }
    let mut ticks = tokio::time::interval(Duration::from_millis(interval_ms));
    // A slow reader gets the latest snapshot, not a backlog of stale ones.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut stopping = state.stopping.subscribe();
    let broker = state.broker.clone();
    let snapshots = futures_util::stream::unfold(ticks, move |mut ticks| {
        let broker = broker.clone();
        async move {
            ticks.tick().await;
            let snapshot = StatsResponse::from(broker.stats());
            let event = Event::default()
                .event("stats")
                .json_data(&snapshot)
                // Serialising plain numbers and strings cannot fail; an empty event if it did.
                .unwrap_or_else(|_| Event::default().event("stats"));
            Some((Ok(event), ticks))
        }
    });
    // The stream is endless; it ends with the server, so that shutdown does not wait on it.
    let stop = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    let stream = futures_util::StreamExt::take_until(snapshots, Box::pin(stop));
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
