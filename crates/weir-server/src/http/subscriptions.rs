//! Subscriptions over HTTP: administration (create, list, describe, delete, reset) and
//! consuming for any language (fetch with a long poll, then ack or nack by delivery id).
//!
//! Consuming goes through the shared per-subscription consumer of [`super::consumers`]: a
//! fetched delivery stays in flight until it is acked or nacked, or until the subscription's
//! ack timeout (its visibility timeout) passes and the broker redelivers it.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_core::{
    DLQ_GROUP, Delivery, Error, GroupInfo, MessageId, Overflow, QueueSettings, Settlement,
    SubscribeOptions, SubscriptionKind,
};

use super::HttpState;
use super::consumers::Attach;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path};
use super::model::{
    DeliveryId, DeliveryView, Name, PositionInput, format_delivery_id, parse_delivery_ids,
};

/// Most deliveries one fetch returns.
pub const MAX_FETCH: u32 = 1000;
/// Longest a fetch waits for a first message: long enough to spare idle pollers, short enough
/// for proxies' idle timeouts.
pub const MAX_WAIT_MS: u64 = 30_000;
/// Longest visibility (ack) timeout, as SQS allows: 12 hours.
pub const MAX_VISIBILITY_MS: u64 = 12 * 60 * 60 * 1000;
/// Longest nack delay: one day. Longer waits are what delayed messages are for.
pub const MAX_NACK_DELAY_MS: u64 = 24 * 60 * 60 * 1000;
/// Longest nack error text. It travels in a header of the dead letter, which must stay far
/// below the broker's batch limit or the dead letter could never be stored.
pub const MAX_ERROR_BYTES: usize = 4096;

/// The kind of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindView {
    /// Kafka semantics: an offset per partition; ack commits up to the message.
    Stream,
    /// RabbitMQ semantics: per-message ack, competing consumers, redelivery, dead letters.
    Queue,
}

impl From<SubscriptionKind> for KindView {
    fn from(kind: SubscriptionKind) -> KindView {
        match kind {
            SubscriptionKind::Stream => KindView::Stream,
            SubscriptionKind::Queue => KindView::Queue,
        }
    }
}

impl From<KindView> for SubscriptionKind {
    fn from(kind: KindView) -> SubscriptionKind {
        match kind {
            KindView::Stream => SubscriptionKind::Stream,
            KindView::Queue => SubscriptionKind::Queue,
        }
    }
}

/// One partition's progress in a subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriptionPartitionView {
    pub partition: u32,
    /// Stream: the committed offset (next to read). Queue: the ack floor.
    pub committed: u64,
    pub end_offset: u64,
    pub in_flight: u32,
    pub backlog: u64,
}

/// A subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub topic: String,
    pub name: String,
    pub kind: KindView,
    /// Consumers attached now (all HTTP clients of a subscription share one).
    pub consumers: u32,
    /// The ack timeout: how long a delivery stays invisible before it is redelivered.
    pub visibility_ms: u64,
    /// Messages not yet acknowledged (streams: not yet committed).
    pub backlog: u64,
    /// Delivered and not yet acked or nacked.
    pub in_flight: u64,
    pub partitions: Vec<SubscriptionPartitionView>,
}

impl From<GroupInfo> for SubscriptionView {
    fn from(info: GroupInfo) -> SubscriptionView {
        SubscriptionView {
            in_flight: info
                .partitions
                .iter()
                .map(|partition| u64::from(partition.in_flight))
                .sum(),
            partitions: info
                .partitions
                .iter()
                .map(|partition| SubscriptionPartitionView {
                    partition: partition.partition,
                    committed: partition.committed,
                    end_offset: partition.end_offset,
                    in_flight: partition.in_flight,
                    backlog: partition.backlog,
                })
                .collect(),
            topic: info.topic,
            name: info.group,
            kind: info.kind.into(),
            consumers: info.consumers,
            visibility_ms: info.ack_timeout_ms,
            backlog: info.backlog,
        }
    }
}

fn check_visibility(visibility_ms: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match visibility_ms {
        Some(visibility_ms) if !(1..=MAX_VISIBILITY_MS).contains(&visibility_ms) => Err(
            ApiError::invalid_argument(format!("visibility_ms is 1 to {MAX_VISIBILITY_MS}")),
        ),
        other => Ok(other.map(Duration::from_millis)),
    }
}

/// The broker's own dead-letter bookkeeping subscription is reached through `/v1/dlq`, so that
/// an HTTP consumer cannot ack dead letters out of their queue by accident.
fn refuse_internal(name: &str) -> Result<(), ApiError> {
    if name == DLQ_GROUP {
        return Err(ApiError::invalid_argument(format!(
            "'{DLQ_GROUP}' is the broker's dead-letter bookkeeping; use /v1/dlq"
        )));
    }
    Ok(())
}

/// What to do when a queue subscription's backlog is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverflowView {
    /// Publishes to the topic fail with `backlog_full` (429) until consumers catch up.
    RejectPublish,
    /// The oldest waiting messages are moved to the dead-letter topic.
    DeadLetterOldest,
}

/// `POST /v1/topics/{topic}/subscriptions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubscriptionRequest {
    #[schema(value_type = Name)]
    #[schema(example = "billing")]
    pub name: String,
    /// Default `"queue"`.
    pub kind: Option<KindView>,
    /// Default `"earliest"`.
    pub start: Option<PositionInput>,
    /// The ack timeout (queue subscriptions); default the broker's (30 s).
    #[schema(minimum = 1, maximum = 43_200_000)]
    pub visibility_ms: Option<u64>,
    /// Dead-letter a message after this many deliveries without an ack (queue).
    pub max_deliveries: Option<u32>,
    /// Default `<topic>.<name>.dlq` (queue).
    #[schema(value_type = Option<Name>)]
    pub dead_letter_topic: Option<String>,
    /// Dead-letter messages older than this instead of delivering them (queue).
    pub message_ttl_ms: Option<u64>,
    /// Never two messages with one key in flight: per-key order with many consumers (queue).
    #[serde(default)]
    pub ordered_by_key: bool,
    /// Most messages waiting before `overflow` applies (queue).
    pub max_backlog: Option<u64>,
    /// Default `"reject_publish"`.
    pub overflow: Option<OverflowView>,
}

#[utoipa::path(post, path = "/v1/topics/{topic}/subscriptions", tag = "subscriptions",
    params(("topic" = Name, Path, description = "Topic name")),
    request_body = CreateSubscriptionRequest,
    responses(
        (status = 201, description = "Created", body = SubscriptionView),
        (status = 400, description = "Invalid settings", body = ErrorBody),
        (status = 404, description = "No such topic (when topics are not auto-created)", body = ErrorBody),
        (status = 409, description = "A subscription of this name exists", body = ErrorBody),
    ))]
pub async fn create_subscription(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
    JsonBody(request): JsonBody<CreateSubscriptionRequest>,
) -> Result<(StatusCode, Json<SubscriptionView>), ApiError> {
    refuse_internal(&request.name)?;
    // `subscribe` joins an existing subscription silently, keeping its settings; creating
    // must not pretend new settings took effect.
    if state.broker.group(&topic, &request.name).is_ok() {
        return Err(ApiError::conflict(format!(
            "subscription '{}' on '{topic}' already exists",
            request.name
        )));
    }
    let options = SubscribeOptions {
        kind: request.kind.unwrap_or(KindView::Queue).into(),
        start: request
            .start
            .map_or(weir_core::StartPosition::Earliest, Into::into),
        ack_timeout: check_visibility(request.visibility_ms)?,
        queue: QueueSettings {
            max_deliveries: request.max_deliveries,
            dead_letter_topic: request.dead_letter_topic,
            message_ttl_ms: request.message_ttl_ms,
            ordered_by_key: request.ordered_by_key,
            max_backlog: request.max_backlog,
            overflow: match request.overflow {
                Some(OverflowView::DeadLetterOldest) => Overflow::DeadLetterOldest,
                Some(OverflowView::RejectPublish) | None => Overflow::RejectPublish,
            },
            // Settings this API does not expose yet keep the broker's defaults.
            ..QueueSettings::default()
        },
        ..SubscribeOptions::default()
    };
    // Created through a consumer that leaves at once: HTTP clients attach on their first
    // fetch, other front ends with their own consumers.
    drop(
        state
            .broker
            .subscribe(&topic, &request.name, options)
            .await?,
    );
    let info = state.broker.group(&topic, &request.name)?;
    Ok((StatusCode::CREATED, Json(info.into())))
}

#[utoipa::path(get, path = "/v1/topics/{topic}/subscriptions", tag = "subscriptions",
    params(("topic" = Name, Path, description = "Topic name")),
    responses(
        (status = 200, description = "The topic's subscriptions", body = [SubscriptionView]),
        (status = 404, description = "No such topic", body = ErrorBody),
    ))]
pub async fn list_subscriptions(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
) -> Result<Json<Vec<SubscriptionView>>, ApiError> {
    // An unknown topic is a 404 here, not an empty list that hides a typo.
    state.broker.topic(&topic)?;
    Ok(Json(
        state
            .broker
            .groups(Some(&topic))
            .into_iter()
            .map(SubscriptionView::from)
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/topics/{topic}/subscriptions/{name}", tag = "subscriptions",
    params(("topic" = Name, Path, description = "Topic name"), ("name" = Name, Path, description = "Subscription name")),
    responses(
        (status = 200, description = "The subscription", body = SubscriptionView),
        (status = 404, description = "No such subscription", body = ErrorBody),
    ))]
pub async fn get_subscription(
    State(state): State<HttpState>,
    Path((topic, name)): Path<(String, String)>,
) -> Result<Json<SubscriptionView>, ApiError> {
    Ok(Json(state.broker.group(&topic, &name)?.into()))
}

#[utoipa::path(delete, path = "/v1/topics/{topic}/subscriptions/{name}", tag = "subscriptions",
    params(("topic" = Name, Path, description = "Topic name"), ("name" = Name, Path, description = "Subscription name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The broker's internal subscription", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    ))]
pub async fn delete_subscription(
    State(state): State<HttpState>,
    Path((topic, name)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    refuse_internal(&name)?;
    state.broker.delete_group(&topic, &name).await?;
    state.consumers.forget(&topic, &name);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/subscriptions/{name}/reset`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// `"earliest"`, `"latest"`, `{"offset": N}` or `{"timestamp_ms": T}`.
    pub to: PositionInput,
}

#[utoipa::path(post, path = "/v1/topics/{topic}/subscriptions/{name}/reset", tag = "subscriptions",
    params(("topic" = Name, Path, description = "Topic name"), ("name" = Name, Path, description = "Subscription name")),
    request_body = ResetRequest,
    responses(
        (status = 200, description = "Moved; the subscription as it is now", body = SubscriptionView),
        (status = 400, description = "Bad position", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
    ))]
pub async fn reset_subscription(
    State(state): State<HttpState>,
    Path((topic, name)): Path<(String, String)>,
    JsonBody(request): JsonBody<ResetRequest>,
) -> Result<Json<SubscriptionView>, ApiError> {
    refuse_internal(&name)?;
    state
        .broker
        .reset_group(&topic, &name, request.to.into())
        .await?;
    Ok(Json(state.broker.group(&topic, &name)?.into()))
}

/// `POST …/subscriptions/{name}/fetch`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// Most deliveries to return: 1 to 1000, default 10.
    #[schema(minimum = 1, maximum = 1000)]
    pub max: Option<u32>,
    /// Wait up to this long for a first message (capped at 30000); default 0: answer now.
    pub wait_ms: Option<u64>,
    /// The visibility (ack) timeout of a subscription this fetch creates. An existing
    /// subscription keeps its own; the answer says which is in force.
    #[schema(minimum = 1, maximum = 43_200_000)]
    pub visibility_ms: Option<u64>,
}

/// Deliveries, possibly none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FetchResponse {
    pub deliveries: Vec<DeliveryView>,
    /// Unacked deliveries are redelivered after this long.
    pub visibility_ms: u64,
}

#[utoipa::path(post, path = "/v1/topics/{topic}/subscriptions/{name}/fetch", tag = "subscriptions",
    params(("topic" = Name, Path, description = "Topic name"), ("name" = Name, Path, description = "Subscription name; a queue subscription is created on first use")),
    request_body = FetchRequest,
    responses(
        (status = 200, description = "Deliveries (empty if none came in time)", body = FetchResponse),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 404, description = "No such topic (when topics are not auto-created)", body = ErrorBody),
        (status = 503, description = "The broker is shutting down", body = ErrorBody),
    ))]
pub async fn fetch(
    State(state): State<HttpState>,
    Path((topic, name)): Path<(String, String)>,
    JsonBody(request): JsonBody<FetchRequest>,
) -> Result<Json<FetchResponse>, ApiError> {
    refuse_internal(&name)?;
    let max = request.max.unwrap_or(10);
    if !(1..=MAX_FETCH).contains(&max) {
        return Err(ApiError::invalid_argument(format!(
            "max is 1 to {MAX_FETCH}"
        )));
    }
    let wait = Duration::from_millis(request.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    let attach = Attach::CreateQueue {
        visibility: check_visibility(request.visibility_ms)?,
    };
    let deliveries = fetch_once(&state, &topic, &name, attach, max as usize, wait).await?;
    let visibility_ms = state.broker.group(&topic, &name)?.ack_timeout_ms;
    Ok(Json(FetchResponse {
        deliveries: deliveries.iter().map(DeliveryView::from).collect(),
        visibility_ms,
    }))
}

/// Takes up to `max` deliveries, waiting up to `wait` for the first, or less if the server
/// starts shutting down. A consumer the core closed (its subscription was deleted by another
/// front end) is replaced once.
async fn fetch_once(
    state: &HttpState,
    topic: &str,
    name: &str,
    attach: Attach,
    max: usize,
    wait: Duration,
) -> Result<Vec<Delivery>, ApiError> {
    let mut retried = false;
    loop {
        let consumer = state.consumers.get(topic, name, attach).await?;
        let result = if wait.is_zero() {
            consumer.try_next(max)
        } else {
            let mut stopping = state.stopping.subscribe();
            // `Consumer::next` takes deliveries only in a synchronous step between its awaits,
            // so dropping it on the timeout or at shutdown loses none.
            tokio::select! {
                result = tokio::time::timeout(wait, consumer.next(max)) => {
                    result.unwrap_or(Ok(Vec::new()))
                }
                _ = stopping.wait_for(|stopping| *stopping) => Ok(Vec::new()),
            }
        };
        match result {
            Err(Error::ShuttingDown) if !retried => {
                state.consumers.forget_closed(&consumer);
                retried = true;
            }
            other => return Ok(other?),
        }
    }
}

/// `POST …/subscriptions/{name}/ack`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Ids from fetch. Streams: commits each partition up to the highest id given.
    #[schema(value_type = Vec<DeliveryId>)]
    pub delivery_ids: Vec<String>,
}

/// What an ack or nack did, per id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SettledResponse {
    /// How many ids this call settled.
    pub settled: usize,
    /// Ids settled before (acked; for a nack also timed out or given back): nothing done.
    #[schema(value_type = Vec<DeliveryId>)]
    pub already_settled: Vec<String>,
    /// Ids never delivered to this subscription: nothing done.
    #[schema(value_type = Vec<DeliveryId>)]
    pub unknown: Vec<String>,
}

impl SettledResponse {
    fn new(ids: &[MessageId], settlements: &[Settlement]) -> SettledResponse {
        let named = |wanted: Settlement| {
            ids.iter()
                .zip(settlements)
                .filter(|(_, settlement)| **settlement == wanted)
                .map(|(id, _)| format_delivery_id(*id))
                .collect::<Vec<_>>()
        };
        SettledResponse {
            settled: settlements
                .iter()
                .filter(|settlement| **settlement == Settlement::Settled)
                .count(),
            already_settled: named(Settlement::AlreadySettled),
            unknown: named(Settlement::Unknown),
        }
    }
}

#[utoipa::path(post, path = "/v1/topics/{topic}/subscriptions/{name}/ack", tag = "subscriptions",
    params(("topic" = Name, Path, description = "Topic name"), ("name" = Name, Path, description = "Subscription name")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "Acknowledged durably; ids already settled or never delivered are listed and left alone", body = SettledResponse),
        (status = 400, description = "Bad delivery ids", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 507, description = "The disk is full: acknowledged but not durable yet (saved with the next save; a crash before it may redeliver)", body = ErrorBody),
    ))]
pub async fn ack(
    State(state): State<HttpState>,
    Path((topic, name)): Path<(String, String)>,
    JsonBody(request): JsonBody<AckRequest>,
) -> Result<Json<SettledResponse>, ApiError> {
    refuse_internal(&name)?;
    let ids = parse_delivery_ids(&request.delivery_ids)?;
    let consumer = state.consumers.get(&topic, &name, Attach::Existing).await?;
    let settlements = consumer.ack(&ids).await?;
    Ok(Json(SettledResponse::new(&ids, &settlements)))
}

/// `POST …/subscriptions/{name}/nack`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    #[schema(value_type = Vec<DeliveryId>)]
    pub delivery_ids: Vec<String>,
    /// Deliver again (default), or reject: dead-letter at once (queue) / skip (stream).
    pub requeue: Option<bool>,
    /// `true` is `requeue: false`.
    pub reject: Option<bool>,
    /// Redeliver after this long (queue; at most one day). Default 0.
    #[schema(maximum = 86_400_000)]
    pub delay_ms: Option<u64>,
    /// Why processing failed (at most 4096 bytes); kept with the message if it is
    /// dead-lettered.
    pub error: Option<String>,
}

#[utoipa::path(post, path = "/v1/topics/{topic}/subscriptions/{name}/nack", tag = "subscriptions",
    params(("topic" = Name, Path, description = "Topic name"), ("name" = Name, Path, description = "Subscription name")),
    request_body = NackRequest,
    responses(
        (status = 200, description = "Given back durably; ids not in flight (settled before, or never delivered) are listed and left alone", body = SettledResponse),
        (status = 400, description = "Bad delivery ids or options", body = ErrorBody),
        (status = 404, description = "No such subscription", body = ErrorBody),
        (status = 507, description = "The disk is full: given back but not durable yet", body = ErrorBody),
    ))]
pub async fn nack(
    State(state): State<HttpState>,
    Path((topic, name)): Path<(String, String)>,
    JsonBody(request): JsonBody<NackRequest>,
) -> Result<Json<SettledResponse>, ApiError> {
    refuse_internal(&name)?;
    let ids = parse_delivery_ids(&request.delivery_ids)?;
    let requeue = match (request.requeue, request.reject) {
        (Some(true), Some(true)) => {
            return Err(ApiError::invalid_argument(
                "requeue and reject contradict each other",
            ));
        }
        (_, Some(true)) => false,
        (requeue, _) => requeue.unwrap_or(true),
    };
    let delay_ms = request.delay_ms.unwrap_or(0);
    if delay_ms > MAX_NACK_DELAY_MS {
        return Err(ApiError::invalid_argument(format!(
            "delay_ms is at most {MAX_NACK_DELAY_MS}"
        )));
    }
    if request
        .error
        .as_ref()
        .is_some_and(|error| error.len() > MAX_ERROR_BYTES)
    {
        return Err(ApiError::invalid_argument(format!(
            "error is at most {MAX_ERROR_BYTES} bytes"
        )));
    }
    let delay = Duration::from_millis(delay_ms);
    let consumer = state.consumers.get(&topic, &name, Attach::Existing).await?;
    let settlements = match &request.error {
        Some(error) => {
            consumer
                .nack_with_error(&ids, requeue, delay, error)
                .await?
        }
        None => consumer.nack(&ids, requeue, delay).await?,
    };
    Ok(Json(SettledResponse::new(&ids, &settlements)))
}
