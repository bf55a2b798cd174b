//! Publishing to a topic and browsing its messages. A publish answers only once the broker
//! confirmed the batch durable under the topic's fsync policy, and says which durability that
//! was; browsing reads the log without touching any subscription's state.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query};
use super::model::{
    DurabilityView, MessageInput, MessageView, Name, PositionView, RangeView, into_messages,
    message_positions,
};

/// `POST /v1/topics/{topic}/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Published as one batch: one write, one confirm.
    pub messages: Vec<MessageInput>,
    /// Put every message in this partition instead of choosing by key.
    pub partition: Option<u32>,
}

/// The confirm of a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PublishResponse {
    /// What the confirm promises: `"os"` (survives a broker crash) or `"fsynced"` (survives a
    /// power loss). The weakest of the partitions written.
    pub durability: DurabilityView,
    /// Each message's partition and offset, in request order.
    pub messages: Vec<PositionView>,
    /// The offsets written, one range per partition.
    pub ranges: Vec<RangeView>,
}

#[utoipa::path(post, path = "/v1/topics/{topic}/messages", tag = "messages",
    params(("topic" = Name, Path, description = "Topic name (created on first publish if the broker auto-creates topics)")),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Durable", body = PublishResponse),
        (status = 400, description = "Malformed or invalid messages", body = ErrorBody),
        (status = 404, description = "No such topic (when topics are not auto-created)", body = ErrorBody),
        (status = 413, description = "The batch is larger than the broker accepts", body = ErrorBody),
        (status = 429, description = "A subscription's backlog is full", body = ErrorBody),
        (status = 507, description = "The disk is full", body = ErrorBody),
    ))]
pub async fn publish(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
    JsonBody(request): JsonBody<PublishRequest>,
) -> Result<Json<PublishResponse>, ApiError> {
    let messages = into_messages(request.messages)?;
    let confirm = state
        .broker
        .publish_messages(&topic, request.partition, &messages)
        .await?;
    // Several ranges only come from a multi-partition topic; its partition count places the
    // keyed messages. Not found only if the topic was deleted meanwhile.
    let partition_count = || {
        state
            .broker
            .topic(&topic)
            .ok()
            .map(|info| info.config.partitions)
    };
    Ok(Json(PublishResponse {
        durability: confirm.durability.into(),
        messages: message_positions(&messages, &confirm.ranges, partition_count)
            .unwrap_or_default(),
        ranges: confirm.ranges.iter().map(RangeView::from).collect(),
    }))
}

/// Most messages one browse returns.
pub const MAX_BROWSE: usize = 1000;

/// Query of `GET /v1/topics/{topic}/messages`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BrowseQuery {
    /// Default 0.
    pub partition: Option<u32>,
    /// Start here (default: the partition's first offset). Not with `timestamp_ms`.
    pub offset: Option<u64>,
    /// Start at the first message at or after this time (ms since the epoch).
    pub timestamp_ms: Option<i64>,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

/// A page of messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BrowseResponse {
    pub messages: Vec<MessageView>,
    /// Where the next page starts.
    pub next_offset: u64,
}

#[utoipa::path(get, path = "/v1/topics/{topic}/messages", tag = "messages",
    params(("topic" = Name, Path, description = "Topic name"), BrowseQuery),
    responses(
        (status = 200, description = "Messages in offset order", body = BrowseResponse),
        (status = 400, description = "Bad parameters or no such partition", body = ErrorBody),
        (status = 404, description = "No such topic", body = ErrorBody),
    ))]
pub async fn browse(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
    Query(query): Query<BrowseQuery>,
) -> Result<Json<BrowseResponse>, ApiError> {
    let partition = query.partition.unwrap_or(0);
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_BROWSE).contains(&limit) {
        return Err(ApiError::invalid_argument(format!(
            "limit is 1 to {MAX_BROWSE}"
        )));
    }
    let offset = match (query.offset, query.timestamp_ms) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_argument(
                "give offset or timestamp_ms, not both",
            ));
        }
        (Some(offset), None) => offset,
        (None, Some(timestamp_ms)) => {
            let offsets = state.broker.offsets_for_time(&topic, timestamp_ms)?;
            *offsets.get(partition as usize).ok_or_else(|| {
                ApiError::invalid_argument(format!(
                    "topic '{topic}' has {} partitions; there is no partition {partition}",
                    offsets.len()
                ))
            })?
        }
        (None, None) => 0,
    };
    let records = state.broker.read(&topic, partition, offset, limit)?;
    let next_offset = records.last().map_or(offset, |record| record.offset + 1);
    Ok(Json(BrowseResponse {
        messages: records
            .iter()
            .map(|record| MessageView::new(partition, record))
            .collect(),
        next_offset,
    }))
}
