//! Alerts over HTTP: what is pending and firing (`GET /v1/alerts`), every change as it happens
//! (`GET /v1/alerts/stream`, server-sent events for dashboards), and the rules
//! (`GET /v1/alert-rules`, `PUT` and `DELETE /v1/alert-rules/{name}`). The broker evaluates
//! the rules every second on its own timer ([`weir_core::Broker::alerts`]); these handlers only
//! translate. The JSON shapes mirror `weir_core::alerts` field for field, so a rule read from
//! the API can be put back, and match the `[[alert_rules]]` tables of `weir serve`'s config file.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use utoipa::ToSchema;
use weir_core::{Alert, AlertMetric, AlertRule, AlertState, Broker, Comparison};

use super::HttpState;
use super::error::{ApiError, ErrorBody};
use super::extract::{JsonBody, Path};
use super::model::Name;

/// What a rule measures, per subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetricView {
    /// Messages published and not yet acked (queue) or committed (stream).
    Backlog,
    /// acks ÷ (acks + nacks + rejects + timeouts + expiries) over the last minute, 0 to 1; an
    /// idle subscription has none, and its alert does not hold.
    SuccessRate,
    /// Delivered and not yet settled.
    InFlight,
    /// Publish → ack latency p99, in milliseconds.
    LatencyP99Ms,
    /// Consumers attached.
    Consumers,
    /// Messages moved to the dead-letter topic since the broker started.
    DeadLettered,
    /// 1 while a partition refuses writes until the broker restarts (its storage failed);
    /// scoped `topic/partition-N` rather than `topic/subscription`.
    PoisonedPartition,
}

impl From<AlertMetric> for AlertMetricView {
    fn from(metric: AlertMetric) -> AlertMetricView {
        match metric {
            AlertMetric::Backlog => AlertMetricView::Backlog,
            AlertMetric::SuccessRate => AlertMetricView::SuccessRate,
            AlertMetric::InFlight => AlertMetricView::InFlight,
            AlertMetric::LatencyP99Ms => AlertMetricView::LatencyP99Ms,
            AlertMetric::Consumers => AlertMetricView::Consumers,
            AlertMetric::DeadLettered => AlertMetricView::DeadLettered,
            AlertMetric::PoisonedPartition => AlertMetricView::PoisonedPartition,
        }
    }
}

impl From<AlertMetricView> for AlertMetric {
    fn from(metric: AlertMetricView) -> AlertMetric {
        match metric {
            AlertMetricView::Backlog => AlertMetric::Backlog,
            AlertMetricView::SuccessRate => AlertMetric::SuccessRate,
            AlertMetricView::InFlight => AlertMetric::InFlight,
            AlertMetricView::LatencyP99Ms => AlertMetric::LatencyP99Ms,
            AlertMetricView::Consumers => AlertMetric::Consumers,
            AlertMetricView::DeadLettered => AlertMetric::DeadLettered,
            AlertMetricView::PoisonedPartition => AlertMetric::PoisonedPartition,
        }
    }
}

/// Which side of the threshold is the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ComparisonView {
    /// Holds when the value is greater than the threshold.
    Above,
    /// Holds when the value is less than the threshold.
    Below,
}

impl From<Comparison> for ComparisonView {
    fn from(comparison: Comparison) -> ComparisonView {
        match comparison {
            Comparison::Above => ComparisonView::Above,
            Comparison::Below => ComparisonView::Below,
        }
    }
}

impl From<ComparisonView> for Comparison {
    fn from(comparison: ComparisonView) -> Comparison {
        match comparison {
            ComparisonView::Above => Comparison::Above,
            ComparisonView::Below => Comparison::Below,
        }
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStateView {
    /// The condition holds, not yet for the rule's `for_ms`.
    Pending,
    Firing,
    /// The condition stopped holding (only in the stream and the webhook).
    Resolved,
}

impl From<AlertState> for AlertStateView {
    fn from(state: AlertState) -> AlertStateView {
        match state {
            AlertState::Pending => AlertStateView::Pending,
            AlertState::Firing => AlertStateView::Firing,
            AlertState::Resolved => AlertStateView::Resolved,
        }
    }
}

/// One rule applied to one subscription.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertView {
    /// The rule's name.
    pub rule: String,
    /// The subscription, `topic/subscription`.
    pub scope: String,
    pub metric: AlertMetricView,
    /// The metric's value when last evaluated (when it resolved: its last value that held).
    pub value: f64,
    pub threshold: f64,
    pub state: AlertStateView,
    /// When the condition started holding (pending, firing) or stopped (resolved), ms since
    /// the epoch.
    pub since_ms: i64,
    /// The rule's message for the operator.
    pub message: String,
}

impl From<Alert> for AlertView {
    fn from(alert: Alert) -> AlertView {
        AlertView {
            rule: alert.rule,
            scope: alert.scope,
            metric: alert.metric.into(),
            value: alert.value,
            threshold: alert.threshold,
            state: alert.state.into(),
            since_ms: alert.since_ms,
            message: alert.message,
        }
    }
}

/// `GET /v1/alerts`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertsResponse {
    /// Pending and firing alerts, by rule then scope.
    pub alerts: Vec<AlertView>,
}

fn active_alerts(broker: &Broker) -> AlertsResponse {
    AlertsResponse {
        alerts: broker.alerts().into_iter().map(AlertView::from).collect(),
    }
}

#[utoipa::path(get, path = "/v1/alerts", tag = "monitoring",
    responses((status = 200, description = "Pending and firing alerts; the broker evaluates its rules every second", body = AlertsResponse)))]
pub async fn alerts(State(state): State<HttpState>) -> Json<AlertsResponse> {
    Json(active_alerts(&state.broker))
}

#[utoipa::path(get, path = "/v1/alerts/stream", tag = "monitoring",
    responses((status = 200, description = "Server-sent events: an `alert` event with an AlertView each time an alert fires or resolves; an `alerts` event with an AlertsResponse (what is pending and firing now) in place of the changes a reader too slow to keep up missed. Ends when the server stops", content_type = "text/event-stream", body = String)))]
pub async fn alert_stream(
    State(state): State<HttpState>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = state.broker.alert_events();
    let broker = state.broker.clone();
    let changes = futures_util::stream::unfold(events, move |mut events| {
        let broker = broker.clone();
        async move {
            let event = match events.recv().await {
                Ok(alert) => Event::default()
                    .event("alert")
                    .json_data(AlertView::from(alert))
                    // Serialising plain numbers and strings cannot fail; an empty event if it did.
                    .unwrap_or_else(|_| Event::default().event("alert")),
                // Missed changes cannot be replayed; the current state stands in for them.
                Err(RecvError::Lagged(_)) => Event::default()
                    .event("alerts")
                    .json_data(active_alerts(&broker))
                    .unwrap_or_else(|_| Event::default().event("alerts")),
                Err(RecvError::Closed) => return None,
            };
            Some((Ok(event), events))
        }
    });
    let mut stopping = state.stopping.subscribe();
    // Endless until the server stops, so that shutdown does not wait on it.
    let stop = async move {
        let _ = stopping.wait_for(|stopping| *stopping).await;
    };
    let stream = futures_util::StreamExt::take_until(changes, Box::pin(stop));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// An alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AlertRuleView {
    #[schema(value_type = Name)]
    pub name: String,
    pub metric: AlertMetricView,
    /// `topic/subscription`, `*` matching any run of characters; `*` alone matches every
    /// subscription.
    pub scope: String,
    pub comparison: ComparisonView,
    pub threshold: f64,
    /// How long the condition must hold before the alert fires, in ms.
    pub for_ms: u64,
    /// What to tell the operator.
    pub message: String,
}

impl From<AlertRule> for AlertRuleView {
    fn from(rule: AlertRule) -> AlertRuleView {
        AlertRuleView {
            name: rule.name,
            metric: rule.metric.into(),
            scope: rule.scope,
            comparison: rule.comparison.into(),
            threshold: rule.threshold,
            for_ms: rule.for_ms,
            message: rule.message,
        }
    }
}

#[utoipa::path(get, path = "/v1/alert-rules", tag = "monitoring",
    responses((status = 200, description = "The rules the broker evaluates, in the order they were added", body = Vec<AlertRuleView>)))]
pub async fn list_rules(State(state): State<HttpState>) -> Json<Vec<AlertRuleView>> {
    Json(
        state
            .broker
            .alert_rules()
            .into_iter()
            .map(AlertRuleView::from)
            .collect(),
    )
}

/// The longest `for_ms` accepted: a week. Longer is more likely a unit mistake than a wish.
const MAX_FOR_MS: u64 = 7 * 24 * 3_600_000;

/// `PUT /v1/alert-rules/{name}`: the rule, named by the path.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutAlertRuleRequest {
    /// Optional; if given it must be the path's name (so a rule read from the API can be put
    /// back as it is).
    #[schema(value_type = Option<Name>)]
    pub name: Option<String>,
    pub metric: AlertMetricView,
    /// Default `*` (every subscription).
    #[schema(example = "orders/*")]
    pub scope: Option<String>,
    pub comparison: ComparisonView,
    #[schema(example = 10000)]
    pub threshold: f64,
    /// Default 0 (fire at the first evaluation that holds). At most a week.
    #[schema(maximum = 604_800_000)]
    pub for_ms: Option<u64>,
    /// Default empty.
    pub message: Option<String>,
}

#[utoipa::path(put, path = "/v1/alert-rules/{name}", tag = "monitoring",
    params(("name" = Name, Path, description = "Rule name")),
    request_body = PutAlertRuleRequest,
    responses(
        (status = 200, description = "Added, or replaced the rule of this name; saved, so it outlives a restart", body = AlertRuleView),
        (status = 400, description = "A bad name, scope, message, for_ms, or a body of another shape", body = ErrorBody),
    ))]
pub async fn set_rule(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    JsonBody(request): JsonBody<PutAlertRuleRequest>,
) -> Result<Json<AlertRuleView>, ApiError> {
    if request.name.as_ref().is_some_and(|given| *given != name) {
        return Err(ApiError::invalid_argument(format!(
            "the body names the rule '{}' but the path '{name}'",
            request.name.unwrap_or_default()
        )));
    }
    let for_ms = request.for_ms.unwrap_or(0);
    if for_ms > MAX_FOR_MS {
        return Err(ApiError::invalid_argument(format!(
            "for_ms is at most {MAX_FOR_MS} (a week)"
        )));
    }
    let rule = AlertRule {
        name,
        metric: request.metric.into(),
        scope: request.scope.unwrap_or_else(|| "*".into()),
        comparison: request.comparison.into(),
        threshold: request.threshold,
        for_ms,
        message: request.message.unwrap_or_default(),
    };
    state.broker.set_alert_rule(rule.clone())?;
    Ok(Json(rule.into()))
}

#[utoipa::path(delete, path = "/v1/alert-rules/{name}", tag = "monitoring",
    params(("name" = Name, Path, description = "Rule name")),
    responses(
        (status = 204, description = "Deleted; its alerts resolve at the next evaluation"),
        (status = 404, description = "No such rule", body = ErrorBody),
    ))]
pub async fn delete_rule(
    State(state): State<HttpState>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.broker.delete_alert_rule(&name)?;
    Ok(StatusCode::NO_CONTENT)
}
