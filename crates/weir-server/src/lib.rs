//! Weir's protocol front ends: thin adapters over one [`weir_core::Broker`].
//!
//! Nothing here decides anything about messages: a front end decodes a request, calls one
//! `Broker` method, and encodes the answer. Two front ends today: the native protocol of
//! `weir-proto`, and the HTTP/JSON API ([`http`]); RESP will sit beside them. All share
//! [`error::public_error`], the one mapping from the core's errors to the public error codes.
//!
//! # Layout
//!
//! - [`Server`]: binds the listeners ([`Server::bind`]) and runs them until a shutdown future
//!   resolves ([`Server::run`]), then lets connections finish and shuts the broker down so
//!   that every queued confirm is flushed.
//! - `native/listener.rs`: the accept loop, with a connection limit and graceful shutdown.
//! - `native/connection.rs`: one task per connection: frames in, a single writer task out,
//!   pipelined publishes, one delivery task per subscription.
//! - `native/handle.rs`: the one `match` over [`weir_proto::Request`].
//! - [`http`]: the HTTP/JSON API under `/v1` (axum), with its OpenAPI document, and the
//!   Prometheus exposition at `/metrics` (`docs/metrics.md`).
//! - [`metrics`]: what the listeners count themselves (connections, bytes in and out); the
//!   HTTP side counts through `http/listener.rs`, a listener whose sockets count their bytes.
//! - `webhook.rs`: POSTs every alert that fires or resolves to a configured URL.
//! - [`error`]: core error → public code and message.
//!
//! The internals (connection lifecycle, pipelining, back-pressure, shutdown) are described in
//! `docs/internals/server.md`.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use weir_core::{Broker, BrokerConfig};
//! use weir_server::{Server, ServerConfig};
//! let broker = Broker::open(BrokerConfig::new("./weir-data")).await.expect("the broker opens");
//! let server = Server::bind(broker, ServerConfig::default()).await?;
//! println!("listening on {}", server.native_addr());
//! server.run(async { tokio::signal::ctrl_c().await.ok(); }).await
//! # }
//! ```

pub mod error;
pub mod http;
pub mod metrics;
mod native;
mod webhook;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use weir_core::Broker;

/// The default of [`ServerConfig::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of [`ServerConfig::idle_timeout`]: Kafka's `connections.max.idle.ms`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The settings of the listeners. The broker's own settings live in
/// [`weir_core::BrokerConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where the native protocol listens. Port 0 picks a free port: see
    /// [`Server::native_addr`].
    pub native_addr: SocketAddr,
    /// Most native connections open at once; one more is answered with a `quota` error and
    /// closed.
    pub max_connections: usize,
    /// The largest frame accepted (and sent), length prefix included. A client declaring a
    /// larger frame gets `payload_too_large` and is disconnected before anything is allocated.
    pub max_frame_bytes: usize,
    /// Where the HTTP API ([`http`]) listens, if anywhere. Port 0 picks a free port: see
    /// [`Server::http_addr`]. `None` by default, so that embedding programs and tests open
    /// only what they ask for; `weir serve` defaults it to 127.0.0.1:15680.
    pub http_addr: Option<SocketAddr>,
    /// An `http://` URL to POST every alert to as it fires and resolves (JSON, the shape of
    /// `GET /v1/alerts`'s entries). `None` by default. Failed posts are logged, never retried
    /// and never slow the broker.
    pub alert_webhook: Option<String>,
    /// A native connection that has not completed its `Hello` this long after it was
    /// accepted is closed, so silent sockets cannot hold the connection slots.
    pub handshake_timeout: Duration,
    /// A native connection is closed after this long without a request while it has nothing
    /// in flight and no subscription or transaction checker open (those wait for the broker,
    /// not for the peer, so a quiet consumer is never idle). Clients reconnect on their next
    /// request.
    pub idle_timeout: Duration,
    /// The HTTP listener's limits and allowed host names; see [`http::HttpConfig`].
    pub http: http::HttpConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            native_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 5680)),
            max_connections: 1024,
            max_frame_bytes: weir_proto::DEFAULT_MAX_FRAME_BYTES,
            http_addr: None,
            alert_webhook: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            http: http::HttpConfig::default(),
        }
    }
}

/// Checks an [`ServerConfig::alert_webhook`] URL the way [`Server::bind`] will, so that a
/// command line can report a bad one as a usage error.
pub fn check_alert_webhook(url: &str) -> Result<(), String> {
    webhook::Webhook::new(url).map(drop)
}

/// How long [`Server::run`] waits, after the shutdown future resolves, for connections to
/// answer their in-flight requests and close. Past it, the remaining connections are dropped
/// (their peers see the socket close), and the broker is shut down anyway, which still
/// commits every publish it had queued.
const CONNECTION_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Bound listeners over one broker, ready to [`run`](Server::run).
pub struct Server {
    broker: Broker,
    config: ServerConfig,
    native: TcpListener,
    http: Option<TcpListener>,
    metrics: Arc<metrics::ServerMetrics>,
    webhook: Option<webhook::Webhook>,
}

impl Server {
    /// Binds the native listener, and the HTTP one if configured. Nothing is accepted until
    /// [`Server::run`].
    ///
    /// # Errors
    /// A listener that cannot bind, or an `alert_webhook` that is not an `http://` URL
    /// ([`std::io::ErrorKind::InvalidInput`]).
    pub async fn bind(broker: Broker, config: ServerConfig) -> std::io::Result<Server> {
        // Checked before binding, so that a typo in the URL is reported at start, not at the
        // first alert.
        let webhook =
            match &config.alert_webhook {
                Some(url) => Some(webhook::Webhook::new(url).map_err(|error| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, error)
                })?),
                None => None,
            };
        let native = TcpListener::bind(config.native_addr).await?;
        let http = match config.http_addr {
            Some(address) => Some(TcpListener::bind(address).await?),
            None => None,
        };
        Ok(Server {
            broker,
            config,
            native,
            http,
            metrics: Arc::default(),
            webhook,
        })
    }

    /// The address the native listener is bound to: the configured one, with the port the
    /// system chose if the configured port was 0.
    pub fn native_addr(&self) -> SocketAddr {
        self.native.local_addr().unwrap_or(self.config.native_addr)
    }

    /// The listeners' own counters (connections, bytes), as `GET /metrics` renders them.
    pub fn metrics(&self) -> Arc<metrics::ServerMetrics> {
        self.metrics.clone()
    }

    /// The address the HTTP listener is bound to, if there is one (with the chosen port if the
    /// configured one was 0).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        let listener = self.http.as_ref()?;
        listener.local_addr().ok().or(self.config.http_addr)
    }

    /// Serves until `shutdown` resolves, then: stops accepting, tells every connection to stop
    /// reading requests, lets each answer what it has in flight and close (for up to
    /// [`CONNECTION_DRAIN_TIMEOUT`]), and finally calls [`Broker::shutdown`], which commits
    /// every queued publish. Returns once the broker is shut down.
    ///
    /// # Errors
    /// None today: accept failures are logged and retried, and connection failures end only
    /// that connection. The `Result` is for listeners whose failure will be fatal.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let listener = native::listener::Listener::new(
            self.native,
            self.broker.clone(),
            native::connection::Limits::from_config(&self.config),
            self.config.max_connections,
            self.metrics.native.clone(),
        );
        let webhook = self
            .webhook
            .map(|webhook| webhook.spawn(self.broker.alert_events()));
        // One shutdown future, two listeners: the native side awaits it and tells the HTTP
        // side through a watch channel, so both start draining at once.
        let stopping = tokio::sync::watch::Sender::new(false);
        let http = self.http.map(|http_listener| {
            let mut stop = stopping.subscribe();
            tokio::spawn(
                http::HttpApi::with_config(
                    self.broker.clone(),
                    self.metrics.clone(),
                    self.config.http.clone(),
                )
                .serve(http_listener, async move {
                    let _ = stop.wait_for(|stopping| *stopping).await;
                }),
            )
        });
        let native_shutdown = async {
            shutdown.await;
            stopping.send_replace(true);
        };
        listener
            .run(native_shutdown, CONNECTION_DRAIN_TIMEOUT)
            .await;
        if let Some(mut http) = http {
            // The HTTP side drained meanwhile; past the same timeout its last connections are
            // dropped, as on the native side.
            match tokio::time::timeout(CONNECTION_DRAIN_TIMEOUT, &mut http).await {
                Ok(Ok(Err(error))) => tracing::warn!(%error, "the http listener failed"),
                Ok(_) => {}
                Err(_) => http.abort(),
            }
        }
        self.broker.shutdown().await;
        // Alerts have nothing left to report once the broker is shut down; a post in flight
        // is abandoned rather than holding the exit for its timeout.
        if let Some(webhook) = webhook {
            webhook.abort();
        }
        Ok(())
    }
}
