//! The alert webhook: a task that follows [`weir_core::Broker::alert_events`] and POSTs each
//! alert that fires or resolves to one `http://` URL, as JSON: [`weir_core::Alert`]'s own
//! serialisation, which is also the shape of `GET /v1/alerts`'s entries (`rule`, `scope`,
//! `metric`, `value`, `threshold`, `state` — `firing` or `resolved` —, `since_ms`, `message`).
//!
//! The broker is never held up by it: alert events come through a broadcast channel, which
//! never waits for a slow receiver; this task only falls behind, and then logs how many events
//! it skipped. Posts go one at a time, in the order the events happened (so a receiver sees an
//! alert fire before it resolves), each bounded by [`REQUEST_TIMEOUT`]; a failure is logged and
//! the event dropped: retrying would delay every later event behind a dead receiver.

use std::time::Duration;

use axum::http::{Request, Uri, header};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use weir_core::Alert;

/// Connecting to the receiver, at most.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One post, connection included, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A checked webhook URL with its client, ready to [`spawn`](Webhook::spawn).
pub(crate) struct Webhook {
    url: Uri,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Webhook {
    /// Checks that `url` is an absolute `http://` URL. HTTPS is refused rather than failing at
    /// the first alert: the server carries no TLS client.
    pub(crate) fn new(url: &str) -> Result<Webhook, String> {
        let parsed: Uri = url
            .parse()
            .map_err(|error| format!("the alert webhook '{url}' is not a URL: {error}"))?;
        if parsed.scheme_str() != Some("http") || parsed.host().is_none() {
            return Err(format!(
                "the alert webhook '{url}' must be an http:// URL with a host (https is not supported)"
            ));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Webhook {
            url: parsed,
            client,
        })
    }

    /// Posts every event from `events` until the broker is gone or the task is aborted.
    pub(crate) fn spawn(self, mut events: broadcast::Receiver<Alert>) -> JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(alert) => self.post(&alert).await,
                    Err(RecvError::Lagged(skipped)) => tracing::warn!(
                        url = %self.url,
                        skipped,
                        "the alert webhook fell behind; some alert events were not posted"
                    ),
                    Err(RecvError::Closed) => break,
                }
            }
        })
    }

    async fn post(&self, alert: &Alert) {
        let (rule, scope) = (&alert.rule, &alert.scope);
        let body = match serde_json::to_vec(alert) {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(%error, %rule, %scope, "an alert could not be encoded for the webhook");
                return;
            }
        };
        let request = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("weir/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)));
        let request = match request {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, url = %self.url, "the alert webhook request could not be built");
                return;
            }
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => {
                tracing::debug!(url = %self.url, %rule, %scope, "alert posted to the webhook");
            }
            Ok(Ok(response)) => tracing::warn!(
                url = %self.url,
                status = %response.status(),
                %rule,
                %scope,
                "the alert webhook refused an alert"
            ),
            Ok(Err(error)) => {
                tracing::warn!(url = %self.url, %error, %rule, %scope, "posting an alert to the webhook failed");
            }
            Err(_) => tracing::warn!(
                url = %self.url,
                timeout = ?REQUEST_TIMEOUT,
                %rule,
                %scope,
                "the alert webhook did not answer in time"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!(Webhook::new("http://127.0.0.1:9000/alerts").is_ok());
        assert!(Webhook::new("http://alerts.example").is_ok());
        assert!(Webhook::new("https://alerts.example/hook").is_err());
        assert!(Webhook::new("/alerts").is_err());
        assert!(Webhook::new("not a url").is_err());
    }
}
