//! Dead-letter queues over HTTP: list them, browse what each still holds, redrive dead
//! letters to where they came from (or elsewhere), purge. A dead-letter topic is an ordinary
//! topic; "what it holds" is what the broker's bookkeeping subscription has not settled.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_core::{DLQ_HEADER_PREFIX, Delivery};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query};
use super::model::{DeliveryId, DeliveryView, Name, parse_delivery_ids};

/// Most dead letters one browse or redrive handles.
pub const MAX_DEAD_LETTERS: usize = 1000;

/// A dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeadLetterQueueView {
    #[schema(example = "orders.billing.dlq")]
    pub topic: String,
    /// Dead letters not yet redriven or purged.
    pub pending: u64,
}

#[utoipa::path(get, path = "/v1/dlq", tag = "dead letters",
    responses((status = 200, description = "Every dead-letter topic", body = [DeadLetterQueueView])))]
pub async fn list_dead_letter_queues(
    State(state): State<HttpState>,
) -> Json<Vec<DeadLetterQueueView>> {
    Json(
        state
            .broker
            .dead_letter_queues()
            .into_iter()
            .map(|queue| DeadLetterQueueView {
                topic: queue.topic,
                pending: queue.pending,
            })
            .collect(),
    )
}

/// Why and where from a message was dead-lettered, read from its `weir.dlq.*` headers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeadLetterFacts {
    /// `max_deliveries`, `rejected`, `expired` or `overflow`.
    pub reason: Option<String>,
    /// The consumer's error text from its last nack, if it gave one.
    pub error: Option<String>,
    pub topic: Option<String>,
    pub subscription: Option<String>,
    pub partition: Option<u32>,
    pub offset: Option<u64>,
    pub delivery_count: Option<u32>,
}

/// A dead letter: the message as it was, plus the facts of its death.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeadLetterView {
    #[serde(flatten)]
    pub delivery: DeliveryView,
    pub dead_letter: DeadLetterFacts,
}

impl From<&Delivery> for DeadLetterView {
    fn from(delivery: &Delivery) -> DeadLetterView {
        let fact = |name: &str| {
            delivery
                .record
                .header(&format!("{DLQ_HEADER_PREFIX}{name}"))
                .map(|value| String::from_utf8_lossy(value).into_owned())
                .filter(|value| !value.is_empty())
        };
        DeadLetterView {
            delivery: DeliveryView::from(delivery),
            dead_letter: DeadLetterFacts {
                reason: fact("reason"),
                error: fact("error"),
                topic: fact("topic"),
                subscription: fact("subscription"),
                partition: fact("partition").and_then(|value| value.parse().ok()),
                offset: fact("offset").and_then(|value| value.parse().ok()),
                delivery_count: fact("delivery_count").and_then(|value| value.parse().ok()),
            },
        }
    }
}

/// Query of `GET /v1/dlq/{topic}/messages`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLettersQuery {
    /// 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
}

fn check_limit(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if (1..=MAX_DEAD_LETTERS).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid_argument(format!(
            "the limit is 1 to {MAX_DEAD_LETTERS}"
        )))
    }
}

#[utoipa::path(get, path = "/v1/dlq/{topic}/messages", tag = "dead letters",
    params(("topic" = Name, Path, description = "Dead-letter topic"), DeadLettersQuery),
    responses(
        (status = 200, description = "Dead letters still held, oldest first", body = [DeadLetterView]),
        (status = 400, description = "Not a dead-letter topic, or bad parameters", body = ErrorBody),
    ))]
pub async fn dead_letters(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
    Query(query): Query<DeadLettersQuery>,
) -> Result<Json<Vec<DeadLetterView>>, ApiError> {
    let limit = check_limit(query.limit, 100)?;
    let letters = state.broker.dead_letters(&topic, limit)?;
    Ok(Json(letters.iter().map(DeadLetterView::from).collect()))
}

/// `POST /v1/dlq/{topic}/redrive`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedriveRequest {
    /// Publish copies here instead of giving each dead letter back to the subscription it
    /// came from.
    #[schema(value_type = Option<Name>)]
    pub target: Option<String>,
    /// Only these dead letters (ids from the browse); default all, up to `max`.
    #[schema(value_type = Option<Vec<DeliveryId>>)]
    pub delivery_ids: Option<Vec<String>>,
    /// Most dead letters looked at: 1 to 1000, default 1000.
    #[schema(minimum = 1, maximum = 1000)]
    pub max: Option<usize>,
}

/// How many dead letters an operation settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CountResponse {
    pub count: u64,
}

#[utoipa::path(post, path = "/v1/dlq/{topic}/redrive", tag = "dead letters",
    params(("topic" = Name, Path, description = "Dead-letter topic")),
    request_body = RedriveRequest,
    responses(
        (status = 200, description = "Given back to their subscriptions (or published to the target) and removed from the DLQ", body = CountResponse),
        (status = 400, description = "Not a dead-letter topic, or bad parameters", body = ErrorBody),
    ))]
pub async fn redrive(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
    JsonBody(request): JsonBody<RedriveRequest>,
) -> Result<Json<CountResponse>, ApiError> {
    let max = check_limit(request.max, MAX_DEAD_LETTERS)?;
    let ids = match &request.delivery_ids {
        Some(ids) => Some(parse_delivery_ids(ids)?),
        None => None,
    };
    let count = state
        .broker
        .redrive(&topic, request.target.as_deref(), ids.as_deref(), max)
        .await?;
    Ok(Json(CountResponse { count }))
}

#[utoipa::path(post, path = "/v1/dlq/{topic}/purge", tag = "dead letters",
    params(("topic" = Name, Path, description = "Dead-letter topic")),
    responses(
        (status = 200, description = "Every dead letter held now is dropped", body = CountResponse),
        (status = 400, description = "Not a dead-letter topic", body = ErrorBody),
    ))]
pub async fn purge(
    State(state): State<HttpState>,
    Path(topic): Path<String>,
) -> Result<Json<CountResponse>, ApiError> {
    let count = state.broker.purge_dead_letters(&topic).await?;
    Ok(Json(CountResponse { count }))
}
