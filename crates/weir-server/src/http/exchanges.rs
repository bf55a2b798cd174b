//! Exchanges over HTTP: declare, list, describe, delete, bind and unbind, and publish through
//! one. Routing happens in the core; a routed publish answers once every target topic's
//! append is durable.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use weir_core::{Binding, Exchange, ExchangeKind, Message};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path, Query};
use super::model::{
    DurabilityView, MessageInput, Name, RangeView, encode_batch, into_immediate_messages,
};

/// How an exchange matches bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExchangeKindView {
    /// The binding key equals the routing key.
    Direct,
    /// Dot-separated words; `*` matches one word, `#` zero or more.
    Topic,
    /// Every binding.
    Fanout,
    /// The binding's header pairs match the message's headers.
    Headers,
}

impl From<ExchangeKindView> for ExchangeKind {
    fn from(kind: ExchangeKindView) -> ExchangeKind {
        match kind {
            ExchangeKindView::Direct => ExchangeKind::Direct,
            ExchangeKindView::Topic => ExchangeKind::Topic,
            ExchangeKindView::Fanout => ExchangeKind::Fanout,
            ExchangeKindView::Headers => ExchangeKind::Headers,
        }
    }
}

impl From<ExchangeKind> for ExchangeKindView {
    fn from(kind: ExchangeKind) -> ExchangeKindView {
        match kind {
            ExchangeKind::Direct => ExchangeKindView::Direct,
            ExchangeKind::Topic => ExchangeKindView::Topic,
            ExchangeKind::Fanout => ExchangeKindView::Fanout,
            ExchangeKind::Headers => ExchangeKindView::Headers,
        }
    }
}

/// A binding from an exchange to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindingView {
    #[schema(value_type = Name)]
    #[schema(example = "vip-orders")]
    pub topic: String,
    /// The routing key (direct) or pattern (topic); ignored by fanout and headers.
    #[serde(default)]
    #[schema(example = "order.vip.*")]
    pub key: String,
    /// Header pairs a headers exchange matches on.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Headers exchange: every pair must match (default) or any one.
    #[serde(default = "default_true")]
    pub match_all: bool,
}

fn default_true() -> bool {
    true
}

impl From<BindingView> for Binding {
    fn from(view: BindingView) -> Binding {
        Binding {
            topic: view.topic,
            key: view.key,
            headers: view.headers.into_iter().collect(),
            match_all: view.match_all,
        }
    }
}

/// An exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ExchangeView {
    pub name: String,
    pub kind: ExchangeKindView,
    /// Where messages no binding matches go, if anywhere.
    pub alternate_topic: Option<String>,
    pub bindings: Vec<BindingView>,
}

impl From<Exchange> for ExchangeView {
    fn from(exchange: Exchange) -> ExchangeView {
        ExchangeView {
            name: exchange.name,
            kind: exchange.kind.into(),
            alternate_topic: exchange.alternate_topic,
            bindings: exchange
                .bindings
                .into_iter()
                .map(|binding| BindingView {
                    topic: binding.topic,
                    key: binding.key,
                    headers: binding.headers.into_iter().collect(),
                    match_all: binding.match_all,
                })
                .collect(),
        }
    }
}

/// `POST /v1/exchanges`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExchangeRequest {
    #[schema(value_type = Name)]
    #[schema(example = "orders")]
    pub name: String,
    pub kind: ExchangeKindView,
    /// Where messages no binding matches go.
    #[schema(value_type = Option<Name>)]
    pub alternate_topic: Option<String>,
}

#[utoipa::path(post, path = "/v1/exchanges", tag = "exchanges",
    request_body = CreateExchangeRequest,
    responses(
        (status = 201, description = "Declared (declaring an identical one again is not an error)", body = ExchangeView),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 409, description = "An exchange of this name exists with other settings", body = ErrorBody),
    ))]
pub async fn create_exchange(
    State(state): State<HttpState>,
    JsonBody(request): JsonBody<CreateExchangeRequest>,
) -> Result<(StatusCode, Json<ExchangeView>), ApiError> {
    let exchange = state
        .broker
        .create_exchange(&request.name, request.kind.into(), request.alternate_topic)
        .await?;
    Ok((StatusCode::CREATED, Json(exchange.into())))
}

#[utoipa::path(get, path = "/v1/exchanges", tag = "exchanges",
    responses((status = 200, description = "Every exchange, by name", body = [ExchangeView])))]
pub async fn list_exchanges(State(state): State<HttpState>) -> Json<Vec<ExchangeView>> {
    Json(
        state
            .broker
            .exchanges()
            .into_iter()
            .map(ExchangeView::from)
            .collect(),
    )
}

#[utoipa::path(get, path = "/v1/exchanges/{name}", tag = "exchanges",
    params(("name" = Name, Path, description = "Exchange name")),
    responses(
        (status = 200, description = "The exchange", body = ExchangeView),
        (status = 404, description = "No such exchange", body = ErrorBody),
    ))]
pub async fn get_exchange(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> Result<Json<ExchangeView>, ApiError> {
    Ok(Json(state.broker.exchange(&name)?.into()))
}

#[utoipa::path(delete, path = "/v1/exchanges/{name}", tag = "exchanges",
    params(("name" = Name, Path, description = "Exchange name")),
    responses(
        (status = 204, description = "Deleted (its topics stay)"),
        (status = 404, description = "No such exchange", body = ErrorBody),
    ))]
pub async fn delete_exchange(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_exchange(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/exchanges/{name}/bindings", tag = "exchanges",
    params(("name" = Name, Path, description = "Exchange name")),
    request_body = BindingView,
    responses(
        (status = 200, description = "Bound (binding twice keeps one); the exchange as it is now", body = ExchangeView),
        (status = 400, description = "Invalid binding", body = ErrorBody),
        (status = 404, description = "No such exchange, or no such topic when topics are not auto-created", body = ErrorBody),
    ))]
pub async fn bind(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    JsonBody(binding): JsonBody<BindingView>,
) -> Result<Json<ExchangeView>, ApiError> {
    Ok(Json(state.broker.bind(&name, binding.into()).await?.into()))
}

/// Query of `DELETE /v1/exchanges/{name}/bindings`.
#[derive(Debug, Clone, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UnbindQuery {
    #[param(value_type = Name)]
    /// Remove bindings to this topic.
    pub topic: String,
    /// Only those with this key (default: any key).
    pub key: Option<String>,
}

#[utoipa::path(delete, path = "/v1/exchanges/{name}/bindings", tag = "exchanges",
    params(("name" = Name, Path, description = "Exchange name"), UnbindQuery),
    responses(
        (status = 200, description = "Unbound (nothing matching is not an error); the exchange as it is now", body = ExchangeView),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 404, description = "No such exchange", body = ErrorBody),
    ))]
pub async fn unbind(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    Query(query): Query<UnbindQuery>,
) -> Result<Json<ExchangeView>, ApiError> {
    let exchange = state
        .broker
        .unbind(&name, &query.topic, query.key.as_deref())
        .await?;
    Ok(Json(exchange.into()))
}

/// `POST /v1/exchanges/{name}/publish`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExchangePublishRequest {
    #[serde(default)]
    #[schema(example = "order.vip.created")]
    pub routing_key: String,
    /// Refuse the whole publish (422 `unroutable`) if some message matches no binding and
    /// the exchange has no alternate topic. Otherwise such messages are dropped and counted.
    #[serde(default)]
    pub mandatory: bool,
    pub messages: Vec<MessageInput>,
}

/// Where a routed publish landed in one topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TargetView {
    pub topic: String,
    pub durability: DurabilityView,
    pub ranges: Vec<RangeView>,
}

/// The confirm of a routed publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ExchangePublishResponse {
    pub targets: Vec<TargetView>,
    /// Messages that matched nothing and were dropped.
    pub dropped: u32,
}

#[utoipa::path(post, path = "/v1/exchanges/{name}/publish", tag = "exchanges",
    params(("name" = Name, Path, description = "Exchange name")),
    request_body = ExchangePublishRequest,
    responses(
        (status = 200, description = "Durable in every target topic", body = ExchangePublishResponse),
        (status = 400, description = "Malformed or invalid messages", body = ErrorBody),
        (status = 404, description = "No such exchange", body = ErrorBody),
        (status = 413, description = "The batch is larger than the broker accepts", body = ErrorBody),
        (status = 422, description = "Mandatory and unroutable", body = ErrorBody),
        (status = 429, description = "A subscription's backlog is full", body = ErrorBody),
    ))]
pub async fn publish(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<ExchangePublishRequest>,
) -> Result<Json<ExchangePublishResponse>, ApiError> {
    let messages = into_immediate_messages(request.messages)?;
    let messages: Vec<&Message> = messages.iter().collect();
    let batch = encode_batch(state.broker.config().clock.now_ms(), &messages);
    let routed = state
        .broker
        .publish_to_exchange(&name, &request.routing_key, batch, request.mandatory)
        .await?;
    Ok(Json(ExchangePublishResponse {
        targets: routed
            .targets
            .into_iter()
            .map(|(topic, confirm)| TargetView {
                topic,
                durability: confirm.durability.into(),
                ranges: confirm.ranges.iter().map(RangeView::from).collect(),
            })
            .collect(),
        dropped: routed.dropped,
    }))
}
