//! The accept loop: a connection limit, one task per connection, and graceful shutdown.
//!
//! Shaped like mini-redis's `server.rs`. A semaphore permit is taken for each connection and
//! released when its task ends; a peer arriving with no permit left is told `quota` and closed
//! at once, rather than left hanging in the kernel's backlog with no explanation. Shutdown is
//! a `watch` flag every connection selects on; the connection tasks live in a `JoinSet`, so
//! the listener knows when the last one has finished, and can abort the stragglers.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use weir_core::Broker;
use weir_proto::{ErrorCode, Response};

use super::connection::{self, Limits};
use crate::metrics::ListenerMetrics;

/// Pause after a failed accept. Failures are mostly resource exhaustion (too many open files);
/// retrying at once would spin, and a short pause lets closing connections free descriptors.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

pub(crate) struct Listener {
    listener: TcpListener,
    broker: Broker,
    limits: Limits,
    /// One permit per connection allowed. A semaphore rather than a counter because the permit
    /// travels with the connection's task and is returned by its drop, whichever way the task
    /// ends (even aborted).
    permits: Arc<Semaphore>,
    max_connections: usize,
    metrics: Arc<ListenerMetrics>,
}

impl Listener {
    pub(crate) fn new(
        listener: TcpListener,
        broker: Broker,
        limits: Limits,
        max_connections: usize,
        metrics: Arc<ListenerMetrics>,
    ) -> Listener {
        Listener {
            listener,
            broker,
            limits,
            permits: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            metrics,
        }
    }

    /// Accepts until `shutdown` resolves; then closes the listening socket, tells every
    /// connection to finish, and waits up to `drain_timeout` for them before aborting the rest.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()>, drain_timeout: Duration) {
        let (stop, stopped) = watch::channel(false);
        let mut connections = JoinSet::new();
        // Whether accepting fails now: logged once per run of failures, not every pause.
        let mut accept_failing = false;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Reap finished connections, so the set holds only live ones.
                Some(result) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(error) = result
                        && error.is_panic()
                    {
                        tracing::error!(%error, "a connection task panicked");
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if std::mem::take(&mut accept_failing) {
                            tracing::info!("accepting connections again");
                        }
                        match self.permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let broker = self.broker.clone();
                            let stopped = stopped.clone();
                            let limits = self.limits;
                            let open = self.metrics.connection_opened();
                            let metrics = self.metrics.clone();
                            connections.spawn(async move {
                                connection::serve(stream, peer, broker, limits, stopped, metrics).await;
                                drop(open);
                                drop(permit);
                            });
                        }
                        Err(_) => {
                            tracing::warn!(%peer, limit = self.max_connections, "connection refused: too many connections");
                            self.metrics.connection_refused();
                            refuse(stream, self.max_connections, &self.metrics);
                        }
                    }},
                    Err(error) => {
                        if accept_failing {
                            tracing::debug!(%error, "accept failed");
                        } else {
                            tracing::warn!(%error, "accept failed; retrying every {ACCEPT_RETRY_PAUSE:?}");
                            accept_failing = true;
                        }
                        tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                    }
                },
            }
        }
        // Closing the listening socket first: new peers are refused by the kernel instead of
        // queueing for a server that will not serve them.
        drop(self.listener);
        stop.send_replace(true);
        let open = connections.len();
        tracing::debug!(connections = open, "waiting for connections to finish");
        let drained = tokio::time::timeout(drain_timeout, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                connections = connections.len(),
                "connections still open after {drain_timeout:?}; closing them"
            );
            connections.shutdown().await;
        }
    }
}

/// Tells a peer over the limit why it is being closed. Best effort and non-blocking: a fresh
/// socket's send buffer always has room for one small frame, and if not, the peer just sees the
/// close.
fn refuse(stream: TcpStream, limit: usize, metrics: &ListenerMetrics) {
    let mut frame = BytesMut::new();
    Response::error_with(
        ErrorCode::Quota,
        format!("too many connections (the limit is {limit}); retry later"),
    )
    .encode(0, &mut frame);
    if let Ok(written) = stream.try_write(&frame) {
        metrics.sent(written);
    }
}
