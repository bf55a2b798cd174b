//! Transactional messages over HTTP: begin a transaction, send half messages (durable and
//! invisible), then commit (every one becomes visible) or roll back (none does).
//!
//! An HTTP producer has no connection on which the broker could ask it about an undecided
//! transaction, so it registers no check-back: a transaction it leaves undecided past its
//! timeout is asked of the group's live native producers, if any, and is otherwise settled by
//! the broker's configured outcome after its checks run out. The core does all of that; this
//! module only converts JSON.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_core::{Message, TransactionInfo, TransactionState};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::exchanges::TargetView;
use super::extract::{JsonBody, Path};
use super::model::{MessageInput, Name, RangeView, encode_batch, into_immediate_messages};

/// Longest transaction timeout: one day.
pub const MAX_TIMEOUT_MS: u64 = 24 * 60 * 60 * 1000;

/// Transaction ids are decimal strings in JSON: they use all 64 bits, more than a JavaScript
/// number holds exactly.
fn parse_id(text: &str) -> Result<u64, ApiError> {
    text.parse().map_err(|_| {
        ApiError::invalid_argument(format!(
            "'{text}' is not a transaction id (a decimal number)"
        ))
    })
}

/// `POST /v1/transactions`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginRequest {
    /// The producer group: its live native producers answer check-backs.
    #[schema(value_type = Name)]
    pub producer_group: String,
    /// Undecided this long, the transaction is checked (default: the broker's setting).
    #[schema(minimum = 1, maximum = 86_400_000)]
    pub timeout_ms: Option<u64>,
}

/// A new transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct BegunView {
    /// A decimal string.
    #[schema(example = "1882885504171507712")]
    pub id: String,
}

#[utoipa::path(post, path = "/v1/transactions", tag = "transactions",
    request_body = BeginRequest,
    responses(
        (status = 201, description = "Begun", body = BegunView),
        (status = 400, description = "Invalid group or timeout", body = ErrorBody),
    ))]
pub async fn begin(
    State(state): State<HttpState>,
    JsonBody(request): JsonBody<BeginRequest>,
) -> Result<(StatusCode, Json<BegunView>), ApiError> {
    let timeout = match request.timeout_ms {
        Some(timeout_ms) if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) => {
            return Err(ApiError::invalid_argument(format!(
                "timeout_ms is 1 to {MAX_TIMEOUT_MS}"
            )));
        }
        other => other.map(Duration::from_millis),
    };
    let id = state
        .broker
        .begin_transaction(&request.producer_group, timeout)?;
    Ok((StatusCode::CREATED, Json(BegunView { id: id.to_string() })))
}

/// `POST /v1/transactions/{id}/messages`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    #[schema(value_type = Name)]
    pub topic: String,
    /// Put every message in this partition instead of choosing by key.
    pub partition: Option<u32>,
    /// As for a publish, without delays.
    pub messages: Vec<MessageInput>,
}

#[utoipa::path(post, path = "/v1/transactions/{id}/messages", tag = "transactions",
    params(("id" = String, Path, description = "Transaction id")),
    request_body = SendRequest,
    responses(
        (status = 204, description = "Stored durably, invisible until commit"),
        (status = 400, description = "Invalid messages, or the transaction is decided", body = ErrorBody),
        (status = 404, description = "No open transaction with this id", body = ErrorBody),
    ))]
pub async fn send(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<SendRequest>,
) -> Result<StatusCode, ApiError> {
    let id = parse_id(&id)?;
    let messages = into_immediate_messages(request.messages)?;
    let messages: Vec<&Message> = messages.iter().collect();
    let batch = encode_batch(state.broker.config().clock.now_ms(), &messages);
    state
        .broker
        .send_half(id, &request.topic, request.partition, batch)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a committed transaction's messages landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CommittedView {
    pub targets: Vec<TargetView>,
}

#[utoipa::path(post, path = "/v1/transactions/{id}/commit", tag = "transactions",
    params(("id" = String, Path, description = "Transaction id")),
    responses(
        (status = 200, description = "Every half message is now in its topic, durably", body = CommittedView),
        (status = 400, description = "The id is not a number", body = ErrorBody),
        (status = 404, description = "No open transaction with this id", body = ErrorBody),
    ))]
pub async fn commit(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<Json<CommittedView>, ApiError> {
    let committed = state.broker.commit_transaction(parse_id(&id)?).await?;
    Ok(Json(CommittedView {
        targets: committed
            .into_iter()
            .map(|(topic, confirm)| TargetView {
                topic,
                durability: confirm.durability.into(),
                ranges: confirm.ranges.iter().map(RangeView::from).collect(),
            })
            .collect(),
    }))
}

#[utoipa::path(post, path = "/v1/transactions/{id}/rollback", tag = "transactions",
    params(("id" = String, Path, description = "Transaction id")),
    responses(
        (status = 204, description = "Every half message is discarded"),
        (status = 400, description = "Already committed", body = ErrorBody),
        (status = 404, description = "No open transaction with this id", body = ErrorBody),
    ))]
pub async fn rollback(
    State(state): State<HttpState>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.rollback_transaction(parse_id(&id)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Where a transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStateView {
    Open,
    /// Decided; its messages are being appended.
    Committing,
}

/// An undecided transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TransactionView {
    pub id: String,
    pub producer_group: String,
    pub state: TransactionStateView,
    pub created_ms: i64,
    /// Check-backs asked so far.
    pub checks: u32,
    /// Half-message batches sent.
    pub parts: u32,
}

impl From<TransactionInfo> for TransactionView {
    fn from(info: TransactionInfo) -> TransactionView {
        TransactionView {
            id: info.id.to_string(),
            producer_group: info.producer_group,
            state: match info.state {
                TransactionState::Open => TransactionStateView::Open,
                TransactionState::Committing => TransactionStateView::Committing,
            },
            created_ms: info.created_ms,
            checks: info.checks,
            parts: info.parts,
        }
    }
}

#[utoipa::path(get, path = "/v1/transactions", tag = "transactions",
    responses((status = 200, description = "Undecided transactions, oldest first", body = [TransactionView])))]
pub async fn list(State(state): State<HttpState>) -> Result<Json<Vec<TransactionView>>, ApiError> {
    Ok(Json(
        state
            .broker
            .transactions()?
            .into_iter()
            .map(TransactionView::from)
            .collect(),
    ))
}
