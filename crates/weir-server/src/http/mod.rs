//! The HTTP/JSON front end: the broker for every language that is not Rust, under `/v1`, with
//! an OpenAPI document generated from these handlers at `/v1/openapi.json`.
//!
//! Like the native front end, it decides nothing about messages: each handler parses a JSON
//! shape, calls one [`Broker`] method and turns the answer (or the error, through
//! [`error::ApiError`]) back into JSON. The only state it keeps is the consumers that HTTP
//! fetches share ([`consumers`]), because HTTP has no connection to hang a consumer on.
//!
//! # Layout
//!
//! - [`HttpApi`]: builds the router over a broker and serves it on a listener until shutdown.
//! - `topics.rs`, `messages.rs`, `subscriptions.rs`, `exchanges.rs`, `dead_letters.rs`,
//!   `schedule.rs`, `transactions.rs`, `idempotency.rs`, `stats.rs`, `alerts.rs`: the
//!   handlers, one per endpoint, each annotated for the OpenAPI document.
//! - `model.rs`: JSON shapes shared by several endpoints; `placement.rs`: each published
//!   message's position from the broker's per-partition confirm; `extract.rs`: extractors whose
//!   rejections are JSON errors; `error.rs`: error code → HTTP status.
//! - `guard.rs`: the Host, Origin and content-type checks that keep web pages from driving
//!   the broker (CSRF, DNS rebinding), run before every handler.
//! - `listener.rs`: the accept loop with its connection limit, header and idle timeouts, and
//!   the listener's counters.
//!
//! The endpoints, with curl examples, are documented in `docs/http-api.md`.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use weir_core::{Broker, BrokerConfig};
//! use weir_server::http::HttpApi;
//! let broker = Broker::open(BrokerConfig::new("./weir-data")).await.expect("the broker opens");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:15680").await?;
//! HttpApi::new(broker).serve(listener, async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

mod alerts;
mod consumers;
mod dead_letters;
pub mod error;
mod exchanges;
mod extract;
mod guard;
mod idempotency;
mod listener;
mod messages;
mod model;
mod placement;
mod prometheus;
mod schedule;
mod stats;
mod subscriptions;
mod topics;
mod transactions;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use weir_core::Broker;
use weir_proto::ErrorCode;

use consumers::ConsumerRegistry;
use error::ApiError;

/// Largest request body accepted. Bigger bodies get 413 `payload_too_large` before they are
/// buffered. Twice the broker's default batch limit, since JSON (and base64) inflate payloads.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// The HTTP listener's limits, and the extra names it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// Most HTTP connections open at once; one more is answered `429 quota` and closed.
    pub max_connections: usize,
    /// A request head must be complete this long after its first byte (or after the
    /// connection opened, for the first request); otherwise the connection is closed.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in progress is closed after this long.
    /// Long polls and event streams are requests in progress, so they are never cut.
    pub idle_timeout: Duration,
    /// Host names besides IP addresses and `localhost` that requests may name in `Host` and
    /// `Origin` (the names a reverse proxy forwards); `*` allows any. See `docs/http-api.md`.
    pub allowed_hosts: Vec<String>,
}

/// The default of [`HttpConfig::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The default of [`HttpConfig::header_timeout`].
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`HttpConfig::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            allowed_hosts: Vec::new(),
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct HttpState {
    broker: Broker,
    consumers: Arc<ConsumerRegistry>,
    /// Turns true when the server starts shutting down, ending long polls early. The router
    /// holds the sender, so that it lives as long as any handler can wait on it.
    stopping: Arc<watch::Sender<bool>>,
    /// The listeners' own counters, for `GET /metrics`.
    server_metrics: Arc<crate::metrics::ServerMetrics>,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Weir HTTP API",
        description = "Topics, publishing, consuming, exchanges, dead letters, delayed messages, transactions and idempotency keys of a Weir broker, as JSON. Errors are `{code, name, message}` with the public error codes."
    ),
    tags(
        (name = "topics", description = "Create, list, describe and delete topics"),
        (name = "messages", description = "Publish to a topic and browse its messages"),
        (name = "subscriptions", description = "Subscriptions, and consuming over HTTP: fetch, ack, nack"),
        (name = "exchanges", description = "Routing by key, pattern or headers to topics"),
        (name = "dead letters", description = "Browse, redrive and purge dead-letter queues"),
        (name = "schedule", description = "Delayed messages: list, inspect, cancel, reschedule"),
        (name = "transactions", description = "Half messages: begin, send, commit, roll back"),
        (name = "idempotency", description = "Broker-kept idempotency keys: claim, complete, release"),
        (name = "monitoring", description = "Stats and alerts, with live streams of both, and alert rules"),
    )
)]
struct ApiDocument;

/// The routes with their OpenAPI description; one `routes!` per path.
fn documented_routes() -> OpenApiRouter<HttpState> {
    OpenApiRouter::with_openapi(ApiDocument::openapi())
        .routes(routes!(topics::create_topic, topics::list_topics))
        .routes(routes!(topics::get_topic, topics::delete_topic))
        .routes(routes!(messages::publish, messages::browse))
        .routes(routes!(
            subscriptions::create_subscription,
            subscriptions::list_subscriptions
        ))
        .routes(routes!(
            subscriptions::get_subscription,
            subscriptions::delete_subscription
        ))
        .routes(routes!(subscriptions::reset_subscription))
        .routes(routes!(subscriptions::fetch))
        .routes(routes!(subscriptions::ack))
        .routes(routes!(subscriptions::nack))
        .routes(routes!(
            exchanges::create_exchange,
            exchanges::list_exchanges
        ))
        .routes(routes!(exchanges::get_exchange, exchanges::delete_exchange))
        .routes(routes!(exchanges::bind, exchanges::unbind))
        .routes(routes!(exchanges::publish))
        .routes(routes!(dead_letters::list_dead_letter_queues))
        .routes(routes!(dead_letters::dead_letters))
        .routes(routes!(dead_letters::redrive))
        .routes(routes!(dead_letters::purge))
        .routes(routes!(schedule::list_scheduled))
        .routes(routes!(schedule::get_scheduled, schedule::cancel_scheduled))
        .routes(routes!(schedule::cancel_scheduled_by_key))
        .routes(routes!(schedule::reschedule))
        .routes(routes!(transactions::begin, transactions::list))
        .routes(routes!(transactions::send))
        .routes(routes!(transactions::commit))
        .routes(routes!(transactions::rollback))
        .routes(routes!(idempotency::claim))
        .routes(routes!(idempotency::complete))
        .routes(routes!(idempotency::release))
        .routes(routes!(stats::stats))
        .routes(routes!(stats::stats_stream))
        .routes(routes!(alerts::alerts))
        .routes(routes!(alerts::alert_stream))
        .routes(routes!(alerts::list_rules))
        .routes(routes!(alerts::set_rule, alerts::delete_rule))
}

/// The OpenAPI document of the API, as served at `/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = documented_routes().into_openapi();
    document_guard(&mut document);
    document
}

/// Adds the answers of `guard.rs`, which every operation can give, to every operation: 403
/// (Host or Origin refused) and, where a body is taken, 415 (not JSON).
fn document_guard(document: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let error = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
    };
    for item in document.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            let responses = &mut operation.responses.responses;
            responses.entry("403".into()).or_insert_with(|| {
                error("The Host or Origin header names another site: see docs/http-api.md").into()
            });
            if operation.request_body.is_some() {
                responses
                    .entry("415".into())
                    .or_insert_with(|| error("The body is not sent as application/json").into());
            }
        }
    }
}

/// How often idle HTTP consumers are looked for.
const EVICT_IDLE_EVERY: Duration = Duration::from_secs(10);

/// The HTTP API over one broker.
pub struct HttpApi {
    router: Router,
    consumers: Arc<ConsumerRegistry>,
    stopping: Arc<watch::Sender<bool>>,
    /// Where [`HttpApi::serve`] counts its connections and bytes.
    listener_metrics: Arc<crate::metrics::ListenerMetrics>,
    config: HttpConfig,
}

impl HttpApi {
    /// Must be called inside a tokio runtime: it starts the task that drops idle HTTP
    /// consumers (it ends when the API is dropped).
    pub fn new(broker: Broker) -> HttpApi {
        HttpApi::with_metrics(broker, Arc::default())
    }

    /// [`HttpApi::new`], with `GET /metrics` rendering the listeners' counters of
    /// `server_metrics` beside the broker's (a [`crate::Server`] passes its own).
    pub fn with_metrics(
        broker: Broker,
        server_metrics: Arc<crate::metrics::ServerMetrics>,
    ) -> HttpApi {
        HttpApi::with_config(broker, server_metrics, HttpConfig::default())
    }

    /// [`HttpApi::with_metrics`], with the listener's limits and allowed host names.
    pub fn with_config(
        broker: Broker,
        server_metrics: Arc<crate::metrics::ServerMetrics>,
        config: HttpConfig,
    ) -> HttpApi {
        let stopping = Arc::new(watch::Sender::new(false));
        let consumers = Arc::new(ConsumerRegistry::new(broker.clone()));
        let registry = Arc::downgrade(&consumers);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EVICT_IDLE_EVERY);
            loop {
                ticks.tick().await;
                let Some(registry) = registry.upgrade() else {
                    break;
                };
                registry.evict_idle(std::time::Instant::now());
            }
        });
        let listener_metrics = server_metrics.http.clone();
        let state = HttpState {
            broker,
            consumers: consumers.clone(),
            stopping: stopping.clone(),
            server_metrics,
        };
        let (router, mut document) = documented_routes().split_for_parts();
        document_guard(&mut document);
        // Serialised once: the document is the same for the server's whole life.
        let document = bytes::Bytes::from(
            serde_json::to_vec(&document).expect("the OpenAPI document is plain JSON data"),
        );
        let router = router
            // Prometheus scrapes a fixed path outside the versioned API; it is text, not JSON,
            // so it is documented in docs/metrics.md rather than in the OpenAPI document.
            .route("/metrics", axum::routing::get(prometheus::metrics))
            .route(
                "/v1/openapi.json",
                axum::routing::get(move || {
                    let document = document.clone();
                    async move {
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            document,
                        )
                    }
                }),
            )
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            // Outermost: a refused request reaches no handler (the unknown paths included).
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(guard::RequestGuard::new(&config.allowed_hosts)),
                guard::guard,
            ))
            .with_state(state);
        HttpApi {
            router,
            consumers,
            stopping,
            listener_metrics,
            config,
        }
    }

    /// The router, for serving it yourself or calling it in tests.
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Ends every long poll now (they answer with what they have) and makes later ones answer
    /// at once: called when the server starts shutting down.
    pub fn stop_waiting(&self) {
        self.stopping.send_replace(true);
    }

    /// Serves on `listener` until `shutdown` resolves, then ends long polls, stops accepting,
    /// and returns once the open requests are answered. The broker is left running: its owner
    /// shuts it down. Connections and bytes are counted as `listener="http"` in `/metrics`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let stopping = self.stopping;
        listener::serve(
            listener,
            self.router,
            self.config,
            self.listener_metrics,
            async move {
                shutdown.await;
                stopping.send_replace(true);
            },
        )
        .await;
        // Their unacked deliveries go back to the subscriptions for whoever comes next.
        self.consumers.clear();
        Ok(())
    }
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no endpoint at {}; see /v1/openapi.json", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> impl IntoResponse {
    ApiError::new(
        ErrorCode::UnsupportedRequest,
        format!("{method} is not supported on {}", uri.path()),
    )
}
