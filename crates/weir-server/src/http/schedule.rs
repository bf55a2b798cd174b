//! Delayed messages over HTTP: list what is scheduled, look at one scheduled message, cancel it
//! (by its id or by its business key: order paid → cancel its auto-cancel), or move it.
//! Scheduling itself is a publish with `delay_ms` (see `messages.rs`). The broker keeps the
//! schedule durable and appends each message to its topic when due; nothing here keeps time.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_core::{Record, ScheduledMessage};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query};
use super::model::{MESSAGE_ID_HEADER, Name, text_or_base64};

/// Most scheduled messages one listing returns.
pub const MAX_LISTED: usize = 1000;

/// A scheduled publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ScheduledView {
    /// A decimal string: the ids use all 64 bits, more than a JavaScript number holds exactly.
    #[schema(example = "1882885369507086336")]
    pub id: String,
    pub topic: String,
    /// The partition it was published to, if one was named.
    pub partition: Option<u32>,
    /// When it will be appended to the topic, ms since the epoch.
    pub deliver_at_ms: i64,
    pub business_key: Option<String>,
    /// Messages in it (a publish with `delay_ms` schedules each message on its own).
    pub message_count: u32,
}

impl From<ScheduledMessage> for ScheduledView {
    fn from(scheduled: ScheduledMessage) -> ScheduledView {
        ScheduledView {
            id: scheduled.id.to_string(),
            topic: scheduled.topic,
            partition: scheduled.partition,
            deliver_at_ms: scheduled.deliver_at_ms,
            business_key: scheduled.business_key,
            message_count: scheduled.message_count,
        }
    }
}

/// Query of `GET /v1/schedule`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScheduleQuery {
    /// Only messages scheduled for this topic.
    #[param(value_type = Option<Name>)]
    pub topic: Option<String>,
    /// Page cursor: the `deliver_at_ms` of the last message of the previous page (with
    /// `after_id`).
    pub after_ms: Option<i64>,
    /// Page cursor: the `id` of the last message of the previous page (with `after_ms`).
    pub after_id: Option<u64>,
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/schedule", tag = "schedule",
    params(ScheduleQuery),
    responses(
        (status = 200, description = "Scheduled messages, soonest first", body = [ScheduledView]),
        (status = 400, description = "Bad parameters", body = ErrorBody),
    ))]
pub async fn list_scheduled(
    State(state): State<HttpState>,
    Query(query): Query<ScheduleQuery>,
) -> Result<Json<Vec<ScheduledView>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_LISTED).contains(&limit) {
        return Err(ApiError::invalid_argument(format!(
            "limit is 1 to {MAX_LISTED}"
        )));
    }
    let after = match (query.after_ms, query.after_id) {
        (Some(after_ms), Some(after_id)) => Some((after_ms, after_id)),
        (None, None) => None,
        _ => {
            return Err(ApiError::invalid_argument(
                "the page cursor is after_ms and after_id together",
            ));
        }
    };
    let scheduled = state
        .broker
        .scheduled(query.topic.as_deref(), after, limit)?;
    Ok(Json(
        scheduled.into_iter().map(ScheduledView::from).collect(),
    ))
}

/// One message waiting in the schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ScheduledContentView {
    /// The producer-supplied message id, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// When it was published, ms since the epoch.
    pub timestamp_ms: i64,
}

impl From<&Record> for ScheduledContentView {
    fn from(record: &Record) -> ScheduledContentView {
        let (key, key_base64) = match &record.key {
            Some(key) => text_or_base64(key),
            None => (None, None),
        };
        let (payload, payload_base64) = text_or_base64(&record.value);
        ScheduledContentView {
            id: record
                .header(MESSAGE_ID_HEADER)
                .map(|id| String::from_utf8_lossy(id).into_owned()),
            key,
            key_base64,
            headers: record
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
                .collect(),
            payload,
            payload_base64,
            timestamp_ms: record.timestamp_ms,
        }
    }
}

/// A scheduled publish with its messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ScheduledDetailView {
    #[serde(flatten)]
    pub scheduled: ScheduledView,
    pub messages: Vec<ScheduledContentView>,
}

#[utoipa::path(get, path = "/v1/schedule/{id}", tag = "schedule",
    params(("id" = u64, Path, description = "Scheduled message id")),
    responses(
        (status = 200, description = "The scheduled message", body = ScheduledDetailView),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "Not scheduled (never, delivered already, or cancelled)", body = ErrorBody),
    ))]
pub async fn get_scheduled(
    State(state): State<HttpState>,
    Path(id): Path<u64>,
) -> Result<Json<ScheduledDetailView>, ApiError> {
    let (scheduled, records) = state.broker.scheduled_message(id)?;
    Ok(Json(ScheduledDetailView {
        scheduled: scheduled.into(),
        messages: records.iter().map(ScheduledContentView::from).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/schedule/{id}", tag = "schedule",
    params(("id" = u64, Path, description = "Scheduled message id")),
    responses(
        (status = 200, description = "Cancelled: it will not be delivered", body = ScheduledView),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "Not scheduled (never, delivered already, or cancelled)", body = ErrorBody),
    ))]
pub async fn cancel_scheduled(
    State(state): State<HttpState>,
    Path(id): Path<u64>,
) -> Result<Json<ScheduledView>, ApiError> {
    Ok(Json(state.broker.cancel_scheduled(id).await?.into()))
}

#[utoipa::path(delete, path = "/v1/schedule/by-key/{business_key}", tag = "schedule",
    params(("business_key" = String, Path, description = "The business key given at publish")),
    responses(
        (status = 200, description = "Cancelled: it will not be delivered", body = ScheduledView),
        (status = 404, description = "Nothing scheduled under this key", body = ErrorBody),
    ))]
pub async fn cancel_scheduled_by_key(
    State(state): State<HttpState>,
    Path(business_key): Path<String>,
) -> Result<Json<ScheduledView>, ApiError> {
    // The key names the id; a delivery between the two calls answers 404, as it should.
    let id = state.broker.scheduled_id(&business_key)?;
    Ok(Json(state.broker.cancel_scheduled(id).await?.into()))
}

/// `POST /v1/schedule/{id}/reschedule`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    /// The new delivery time, ms since the epoch (a past time means now).
    pub deliver_at_ms: i64,
}

#[utoipa::path(post, path = "/v1/schedule/{id}/reschedule", tag = "schedule",
    params(("id" = u64, Path, description = "Scheduled message id")),
    request_body = RescheduleRequest,
    responses(
        (status = 200, description = "Moved", body = ScheduledView),
        (status = 400, description = "Too far ahead", body = ErrorBody),
        (status = 404, description = "Not scheduled", body = ErrorBody),
    ))]
pub async fn reschedule(
    State(state): State<HttpState>,
    Path(id): Path<u64>,
    JsonBody(request): JsonBody<RescheduleRequest>,
) -> Result<Json<ScheduledView>, ApiError> {
    Ok(Json(
        state
            .broker
            .reschedule(id, request.deliver_at_ms)
            .await?
            .into(),
    ))
}
