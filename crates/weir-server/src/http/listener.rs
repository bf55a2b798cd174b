//! The HTTP listener: its accept loop, connection limit and timeouts, and its connection and
//! byte counters (`listener="http"` in `GET /metrics`).
//!
//! [`serve`] accepts like the native listener: a semaphore permit per connection
//! ([`HttpConfig::max_connections`]); a peer over the limit is answered `429 quota` at once
//! and closed. Each connection is served by hyper's HTTP/1 connection, watched by a timer
//! that closes it when it has no request in progress and either has not completed a request
//! head within [`HttpConfig::header_timeout`] of opening or of the head's first byte
//! (slowloris), or has sat idle between requests for [`HttpConfig::idle_timeout`]. A request
//! is in progress until its response body ends, so long polls and the SSE streams (which end
//! only when the client leaves or the server stops) are never cut. Slow bodies are left to
//! the body limit; the timer guards the head, where nothing else does.
//!
//! Each socket is a [`CountedStream`], which adds what each `read` and `write` call moved to
//! the listener's relaxed atomics (once per call, as on the native listener, never per
//! request) and counts the connection open until hyper drops it. Bytes are what crossed the
//! socket: request and response heads included, every protocol byte counted the same way as
//! on the native listener.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;
use weir_proto::ErrorCode;

use super::HttpConfig;
use super::error::{ErrorBody, status_for};
use crate::metrics::{ListenerMetrics, OpenConnection};

/// Pause after a failed accept (mostly: out of file descriptors), as on the native listener.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets every
/// connection finish its request in progress (idle ones close at once) and returns when the
/// last one has closed.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    config: HttpConfig,
    metrics: Arc<ListenerMetrics>,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(config.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    // Whether accepting fails now: logged once per run of failures, not every pause.
    let mut accept_failing = false;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if std::mem::take(&mut accept_failing) {
                        tracing::info!("http: accepting connections again");
                    }
                    match permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let stream = CountedStream::new(stream, metrics.connection_opened());
                        let router = router.clone();
                        let config = config.clone();
                        let stopped = stopped.clone();
                        connections.spawn(async move {
                            serve_connection(stream, router, &config, stopped).await;
                            drop(permit);
                        });
                    }
                    Err(_) => {
                        tracing::warn!(%peer, limit = config.max_connections, "http connection refused: too many connections");
                        metrics.connection_refused();
                        refuse(&stream, config.max_connections, &metrics);
                    }
                }},
                Err(error) => {
                    if accept_failing {
                        tracing::debug!(%error, "http accept failed");
                    } else {
                        tracing::warn!(%error, "http accept failed; retrying every {ACCEPT_RETRY_PAUSE:?}");
                        accept_failing = true;
                    }
                    tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    stop.send_replace(true);
    while connections.join_next().await.is_some() {}
}

/// Answers a peer over the connection limit `429 quota` and closes. Best effort and
/// non-blocking, like the native listener's refusal.
fn refuse(stream: &TcpStream, limit: usize, metrics: &ListenerMetrics) {
    let code = ErrorCode::Quota;
    let body = serde_json::to_string(&ErrorBody {
        code: code.code(),
        name: code.name().to_owned(),
        message: format!("too many connections (the limit is {limit}); retry later"),
    })
    .unwrap_or_default();
    let status = status_for(code);
    let answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default(),
        body.len()
    );
    if let Ok(written) = stream.try_write(answer.as_bytes()) {
        metrics.sent(written);
    }
}

/// Serves one connection until it closes, times out, or the server stops.
async fn serve_connection(
    stream: CountedStream,
    router: Router,
    config: &HttpConfig,
    mut stopped: watch::Receiver<bool>,
) {
    let activity = stream.activity.clone();
    let service = hyper::service::service_fn({
        let activity = activity.clone();
        move |request: Request<Incoming>| {
            // In progress from here until the response body is done (or dropped).
            let busy = activity.begin();
            let router = router.clone();
            async move {
                let response = router.oneshot(request.map(Body::new)).await?;
                Ok::<_, Infallible>(response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        // Moved in, so it lives exactly as long as the body.
                        let _ = &busy;
                        frame
                    }))
                }))
            }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // Timeouts are the watchdog's below; hyper's own would need its timer.
        .header_read_timeout(None)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let watchdog = tokio::time::sleep(config.header_timeout.min(config.idle_timeout));
    tokio::pin!(watchdog);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "http connection ended");
                }
                return;
            }
            _ = stopped.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                // Finishes the request in progress, then closes; closes an idle one now.
                connection.as_mut().graceful_shutdown();
            }
            () = &mut watchdog => {
                let now = Instant::now();
                match activity.deadline(config) {
                    Some((deadline, _)) if deadline > now => watchdog.as_mut().reset(deadline),
                    Some((_, reason)) => {
                        tracing::debug!(reason, "closing an http connection");
                        // Nothing is in progress, so dropping the connection loses no answer.
                        return;
                    }
                    None => watchdog.as_mut().reset(now + config.idle_timeout.min(config.header_timeout)),
                }
            }
        }
    }
}

/// What the watchdog needs to know about a connection, kept by its socket and its service.
/// Times are milliseconds since the connection opened.
struct Activity {
    opened: Instant,
    /// Requests whose responses are not done.
    busy: AtomicUsize,
    /// When the last response was done (or the connection opened).
    idle_since_ms: AtomicU64,
    /// When the first byte of a request head arrived while nothing was in progress; [`NONE`]
    /// once its request started.
    head_since_ms: AtomicU64,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            busy: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            // A new connection owes its first head from the start.
            head_since_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.opened + Duration::from_millis(ms)
    }

    /// Bytes arrived: if nothing is in progress, they start a request head.
    fn read(&self) {
        if self.busy.load(Ordering::Relaxed) == 0
            && self.head_since_ms.load(Ordering::Relaxed) == NONE
        {
            self.head_since_ms.store(self.now_ms(), Ordering::Relaxed);
        }
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.head_since_ms.store(NONE, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// When the connection is to be closed, and why; `None` while a request is in progress.
    fn deadline(&self, config: &HttpConfig) -> Option<(Instant, &'static str)> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        match self.head_since_ms.load(Ordering::Relaxed) {
            NONE => Some((
                self.at(self.idle_since_ms.load(Ordering::Relaxed)) + config.idle_timeout,
                "idle",
            )),
            since => Some((
                self.at(since) + config.header_timeout,
                "request head not complete in time",
            )),
        }
    }
}

/// A request in progress; dropped with its response body.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since_ms
            .store(activity.now_ms(), Ordering::Relaxed);
        activity.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An accepted socket that counts the bytes through it, and itself as open until dropped,
/// and tells the watchdog when bytes arrive.
pub(crate) struct CountedStream {
    stream: TcpStream,
    open: OpenConnection,
    activity: Arc<Activity>,
}

impl CountedStream {
    fn new(stream: TcpStream, open: OpenConnection) -> CountedStream {
        CountedStream {
            stream,
            open,
            activity: Arc::new(Activity::new()),
        }
    }

    fn count_sent(&self, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(bytes)) = written {
            self.open.listener().sent(*bytes);
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(context, buf);
        if let Poll::Ready(Ok(())) = read {
            let received = buf.filled().len() - before;
            this.open.listener().received(received);
            if received > 0 {
                this.activity.read();
            }
        }
        read
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(context, buf);
        this.count_sent(&written);
        written
    }

    // hyper writes a response's head and body in one vectored call when the socket supports
    // it (a TcpStream does): forwarded, so wrapping costs no extra system call.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(context, buffers);
        this.count_sent(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}
