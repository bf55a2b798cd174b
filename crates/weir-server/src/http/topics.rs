//! Topic administration: create, list, describe, delete. Each handler is one `Broker` call
//! between a JSON shape and its core type.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_core::{FsyncPolicy, TopicConfig, TopicInfo};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path};
use super::model::Name;

/// When a publish to a topic is confirmed: `"always"` (after fdatasync, survives power loss),
/// `"os"` (in the page cache, survives a broker crash), or `{"interval_ms": N}` (page cache,
/// fdatasync at most N ms later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FsyncView {
    Named(FsyncName),
    Interval {
        #[schema(minimum = 1)]
        interval_ms: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FsyncName {
    Always,
    Os,
}

impl From<FsyncView> for FsyncPolicy {
    fn from(view: FsyncView) -> FsyncPolicy {
        match view {
            FsyncView::Named(FsyncName::Always) => FsyncPolicy::Always,
            FsyncView::Named(FsyncName::Os) => FsyncPolicy::Os,
            FsyncView::Interval { interval_ms } => FsyncPolicy::IntervalMs(interval_ms),
        }
    }
}

impl From<FsyncPolicy> for FsyncView {
    fn from(policy: FsyncPolicy) -> FsyncView {
        match policy {
            FsyncPolicy::Always => FsyncView::Named(FsyncName::Always),
            FsyncPolicy::Os => FsyncView::Named(FsyncName::Os),
            FsyncPolicy::IntervalMs(interval_ms) => FsyncView::Interval { interval_ms },
        }
    }
}

/// `POST /v1/topics`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopicRequest {
    #[schema(value_type = Name)]
    #[schema(example = "orders")]
    pub name: String,
    /// 1 to 4096; default 1.
    #[schema(minimum = 1, maximum = 4096)]
    pub partitions: Option<u32>,
    /// Default `"always"`.
    pub fsync: Option<FsyncView>,
    /// Delete closed segments older than this.
    pub retention_ms: Option<u64>,
    /// Keep each partition under about this many bytes.
    pub retention_bytes: Option<u64>,
}

/// One partition's offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PartitionView {
    pub partition: u32,
    /// The first offset still stored.
    pub start_offset: u64,
    /// One past the last offset.
    pub end_offset: u64,
}

/// A topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TopicView {
    pub name: String,
    /// How many partitions.
    pub partitions: u32,
    pub fsync: FsyncView,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    /// Each partition's offsets.
    pub offsets: Vec<PartitionView>,
}

impl From<TopicInfo> for TopicView {
    fn from(info: TopicInfo) -> TopicView {
        TopicView {
            partitions: info.config.partitions,
            fsync: info.config.fsync.into(),
            retention_ms: info.config.retention_ms,
            retention_bytes: info.config.retention_bytes,
            offsets: info
                .partitions
                .iter()
                .map(|partition| PartitionView {
                    partition: partition.partition,
                    start_offset: partition.start_offset,
                    end_offset: partition.end_offset,
                })
                .collect(),
            name: info.name,
        }
    }
}

#[utoipa::path(post, path = "/v1/topics", tag = "topics",
    request_body = CreateTopicRequest,
    responses(
        (status = 201, description = "Created", body = TopicView),
        (status = 400, description = "Invalid name or settings", body = ErrorBody),
        (status = 409, description = "A topic of this name exists", body = ErrorBody),
    ))]
pub async fn create_topic(
    State(state): State<HttpState>,
    JsonBody(request): JsonBody<CreateTopicRequest>,
) -> Result<(StatusCode, Json<TopicView>), ApiError> {
    let defaults = state.broker.config().default_topic.clone();
    let config = TopicConfig {
        partitions: request.partitions.unwrap_or(1),
        fsync: request.fsync.map_or(defaults.fsync, FsyncPolicy::from),
        retention_ms: request.retention_ms,
        retention_bytes: request.retention_bytes,
        ..defaults
    };
    let info = state.broker.create_topic(&request.name, config).await?;
    Ok((StatusCode::CREATED, Json(info.into())))
}

#[utoipa::path(get, path = "/v1/topics", tag = "topics",
    responses((status = 200, description = "Every topic, by name", body = [TopicView])))]
pub async fn list_topics(State(state): State<HttpState>) -> Json<Vec<TopicView>> {
    Json(
        state
            .broker
            .topics()
            .into_iter()
            .map(TopicView::from)
            .collect(),
    )
}

#[utoipa::path(get, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = Name, Path, description = "Topic name")),
    responses(
        (status = 200, description = "The topic", body = TopicView),
        (status = 404, description = "No such topic", body = ErrorBody),
    ))]
pub async fn get_topic(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
) -> Result<Json<TopicView>, ApiError> {
    Ok(Json(state.broker.topic(&topic)?.into()))
}

#[utoipa::path(delete, path = "/v1/topics/{topic}", tag = "topics",
    params(("topic" = Name, Path, description = "Topic name")),
    responses(
        (status = 204, description = "Deleted, with its data and subscriptions"),
        (status = 404, description = "No such topic", body = ErrorBody),
    ))]
pub async fn delete_topic(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_topic(&topic).await?;
    state.consumers.forget_topic(&topic);
    Ok(StatusCode::NO_CONTENT)
}
