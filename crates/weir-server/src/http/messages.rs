//! Publishing to a topic and browsing its messages. A publish answers only once the broker
//! confirmed the batch durable under the topic's fsync policy (and delayed messages durable in
//! its schedule), and says which durability that was; browsing reads the log without touching
//! any subscription's state.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_core::{Durability, Message, ScheduleRequest};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query};
use super::model::{
    DurabilityView, MESSAGE_ID_HEADER, MessageInput, MessageView, Name, RangeView, encode_batch,
    into_outgoing,
};
use super::placement::place_messages;

/// `POST /v1/topics/{topic}/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// The messages without a delay are published as one batch: one write, one confirm.
    pub messages: Vec<MessageInput>,
    /// Put every message in this partition instead of choosing by key.
    pub partition: Option<u32>,
}

/// What became of one message of a publish: stored (`partition`, `offset`, `duplicate`) or
/// scheduled (`scheduled_id`, `deliver_at_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, ToSchema)]
pub struct PublishedView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// True when the broker already held a message with this id: `partition` and `offset`
    /// are the earlier copy's, and nothing was stored again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// A delayed message's id in the broker's schedule, as a decimal string (the ids use all
    /// 64 bits, more than a JavaScript number holds exactly).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_id: Option<String>,
    /// When a delayed message will be appended to the topic, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver_at_ms: Option<i64>,
}

/// The confirm of a publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PublishResponse {
    /// What the confirm promises: `"os"` (survives a broker crash) or `"fsynced"` (survives a
    /// power loss). The weakest of the partitions written; the schedule is always fsynced.
    pub durability: DurabilityView,
    /// What became of each message, in request order. Empty in the rare case the broker's
    /// confirm cannot be matched to the messages one by one; `ranges` still says where they are.
    pub messages: Vec<PublishedView>,
    /// The offsets stored now, one range per partition.
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
    let outgoing = into_outgoing(request.messages)?;
    let (now, later): (Vec<_>, Vec<_>) = outgoing
        .into_iter()
        .enumerate()
        .partition(|(_, outgoing)| outgoing.delay.is_zero());
    let mut published = vec![PublishedView::default(); now.len() + later.len()];
    let mut durability = Durability::Fsynced;
    let mut ranges = Vec::new();
    let mut placed = true;

    // Delayed messages first: once scheduled they can still be cancelled, while messages
    // already in the topic cannot be taken back if scheduling failed.
    if !later.is_empty() {
        let now_ms = state.broker.config().clock.now_ms();
        let requests = later
            .iter()
            .map(|(_, outgoing)| ScheduleRequest {
                topic: topic.clone(),
                partition: request.partition,
                batch: encode_batch(now_ms, &[&outgoing.message]),
                deliver_at_ms: now_ms.saturating_add(outgoing.delay.as_millis() as i64),
                business_key: outgoing.business_key.clone(),
            })
            .collect();
        let scheduled = state.broker.schedule(requests).await?;
        for ((index, _), scheduled) in later.iter().zip(scheduled) {
            published[*index] = PublishedView {
                scheduled_id: Some(scheduled.id.to_string()),
                deliver_at_ms: Some(scheduled.deliver_at_ms),
                ..PublishedView::default()
            };
        }
    }

    if !now.is_empty() {
        let (indexes, messages): (Vec<usize>, Vec<Message>) = now
            .into_iter()
            .map(|(index, outgoing)| (index, outgoing.message))
            .unzip();
        let confirm = state
            .broker
            .publish_messages(&topic, request.partition, &messages)
            .await?;
        durability = confirm.durability;
        ranges = confirm.ranges.iter().map(RangeView::from).collect();
        // Asked only when the confirm spans partitions, or names duplicates of earlier
        // publishes; both read the broker's in-memory state or page cache.
        let partition_count = || {
            state
                .broker
                .topic(&topic)
                .ok()
                .map(|info| info.config.partitions)
        };
        let stored_id = |partition: u32, offset: u64| {
            let records = state.broker.read(&topic, partition, offset, 1).ok()?;
            let record = records.into_iter().find(|record| record.offset == offset)?;
            record.header(MESSAGE_ID_HEADER).cloned()
        };
        match place_messages(&messages, &confirm, partition_count, stored_id) {
            Some(positions) => {
                for (index, position) in indexes.into_iter().zip(positions) {
                    published[index] = PublishedView {
                        partition: Some(position.partition),
                        offset: Some(position.offset),
                        duplicate: Some(position.duplicate),
                        ..PublishedView::default()
                    };
                }
            }
            None => placed = false,
        }
    }

    Ok(Json(PublishResponse {
        durability: durability.into(),
        messages: if placed { published } else { Vec::new() },
        ranges,
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
