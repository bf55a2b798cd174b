//! Consumer idempotency keys over HTTP: the guide's `SET processed:{id} NX EX ttl`, kept by
//! the broker. A handler claims a business key before acting, completes it after, and
//! releases it if the work failed; the broker answers whether the work is its to do, someone
//! else's now, or done already. The rules live in the core; this module converts JSON.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_core::Claim;

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path};

/// Longest time to live of a key: 366 days.
pub const MAX_TTL_MS: u64 = 366 * 24 * 60 * 60 * 1000;

fn check_ttl(ttl_ms: u64) -> Result<Duration, ApiError> {
    if (1..=MAX_TTL_MS).contains(&ttl_ms) {
        Ok(Duration::from_millis(ttl_ms))
    } else {
        Err(ApiError::invalid_argument(format!(
            "ttl_ms is 1 to {MAX_TTL_MS}"
        )))
    }
}

/// `POST /v1/idempotency/{key}/claim` and `…/complete`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRequest {
    /// Who claims: a consumer's name, unique among the competing handlers.
    #[schema(example = "worker-1")]
    pub holder: String,
    /// Claim: how long the claim holds if its holder never completes (a crashed handler).
    /// Complete: how long the key is remembered as done.
    #[schema(minimum = 1, example = 3_600_000)]
    pub ttl_ms: u64,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ClaimView {
    /// Yours until `expires_at_ms`: do the work, then complete the key.
    Acquired { expires_at_ms: i64 },
    /// Someone else holds it: retry after it expires or completes.
    Busy { holder: String, expires_at_ms: i64 },
    /// The work was done already: skip it.
    Completed { completed_at_ms: i64 },
}

impl From<Claim> for ClaimView {
    fn from(claim: Claim) -> ClaimView {
        match claim {
            Claim::Acquired { expires_at_ms } => ClaimView::Acquired { expires_at_ms },
            Claim::Busy {
                holder,
                expires_at_ms,
            } => ClaimView::Busy {
                holder,
                expires_at_ms,
            },
            Claim::Completed { completed_at_ms } => ClaimView::Completed { completed_at_ms },
        }
    }
}

#[utoipa::path(post, path = "/v1/idempotency/{key}/claim", tag = "idempotency",
    params(("key" = String, Path, description = "The business key (1 to 512 bytes), e.g. a payment id")),
    request_body = KeyRequest,
    responses(
        (status = 200, description = "Acquired, busy or completed", body = ClaimView),
        (status = 400, description = "Bad key or time to live", body = ErrorBody),
    ))]
pub async fn claim(
    State(state): State<HttpState>,
    Path(key): Path<String>,
    JsonBody(request): JsonBody<KeyRequest>,
) -> Result<Json<ClaimView>, ApiError> {
    let ttl = check_ttl(request.ttl_ms)?;
    Ok(Json(
        state.broker.claim_key(&key, &request.holder, ttl)?.into(),
    ))
}

#[utoipa::path(post, path = "/v1/idempotency/{key}/complete", tag = "idempotency",
    params(("key" = String, Path, description = "The business key")),
    request_body = KeyRequest,
    responses(
        (status = 204, description = "Remembered as done, durably"),
        (status = 400, description = "Held by another holder, or a bad key or time to live", body = ErrorBody),
    ))]
pub async fn complete(
    State(state): State<HttpState>,
    Path(key): Path<String>,
    JsonBody(request): JsonBody<KeyRequest>,
) -> Result<StatusCode, ApiError> {
    let ttl = check_ttl(request.ttl_ms)?;
    state.broker.complete_key(&key, &request.holder, ttl)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/idempotency/{key}/release`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub holder: String,
}

#[utoipa::path(post, path = "/v1/idempotency/{key}/release", tag = "idempotency",
    params(("key" = String, Path, description = "The business key")),
    request_body = ReleaseRequest,
    responses(
        (status = 204, description = "Released (the work failed; anyone may claim it again). Releasing a key one does not hold does nothing"),
        (status = 400, description = "Bad key", body = ErrorBody),
    ))]
pub async fn release(
    State(state): State<HttpState>,
    Path(key): Path<String>,
    JsonBody(request): JsonBody<ReleaseRequest>,
) -> Result<StatusCode, ApiError> {
    state.broker.release_key(&key, &request.holder)?;
    Ok(StatusCode::NO_CONTENT)
}
