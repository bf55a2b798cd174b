//! One native connection: frames in, one writer task out, requests pipelined in between.
//!
//! The connection task owns the read half. It cuts the byte stream into frames with
//! [`Frame::check`] (which refuses an oversized frame from its length prefix alone, before
//! anything is allocated for it), decodes each into a request and hands it to the session in
//! `handle.rs`. Publishes are not awaited one by one: their futures run concurrently in a
//! [`FuturesUnordered`], up to [`MAX_IN_FLIGHT_PUBLISHES`], so that many of them reach the
//! partition writer together and share one fsync (group commit). Each is answered with its
//! correlation id when its confirm resolves, in whatever order confirms come.
//!
//! Every frame the server sends goes through one channel to one writer task, which takes all
//! frames queued so far, writes them through a buffer and flushes once per batch (NATS
//! `flushClients`), not once per frame. What is queued is bounded in bytes
//! ([`OUTGOING_BYTES`]), and that bound is the connection's back-pressure: a peer that stops
//! reading stops its deliveries and, once the budget is spent, the reading of its requests.
//!
//! A connection that does not say hello within the handshake timeout, or sits idle (no
//! request, nothing in flight, no subscription or checker waiting on the broker) for the idle
//! timeout, is told why and closed, so silent sockets cannot hold the connection slots.
//!
//! This module does not know what a request means; it only moves frames and decides when the
//! connection ends.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use weir_core::Broker;
use weir_proto::{DecodeError, ErrorCode, Frame, FrameError, Request, Response};

use super::handle::{Reply, Session};
use crate::ServerConfig;
use crate::metrics::ListenerMetrics;

/// Most publishes of one connection awaiting their confirm at once. Enough for a pipelining
/// producer to keep a partition writer busy (one fsync then serves up to this many batches);
/// at the limit the connection stops reading until a confirm comes back.
pub(crate) const MAX_IN_FLIGHT_PUBLISHES: usize = 1024;

/// Bytes of frames queued for the writer task (and being written by it) at most. It is the
/// connection's back-pressure: a peer that does not read its answers makes every sender wait
/// here, the read loop included, so it stops being read from. A frame larger than the budget
/// takes the whole of it (it waits until nothing else is queued). With one frame waiting per
/// sender, a stalled peer pins about this plus one answer (at most the frame limit) plus one
/// delivery frame per subscription.
pub(crate) const OUTGOING_BYTES: usize = 4 * 1024 * 1024;

/// Most frames the writer takes off the queue at once; they are written with one flush.
const WRITE_BATCH_FRAMES: usize = 64;

/// A delivery frame is closed once it holds this much, so one frame never monopolises the
/// writer's budget (see [`OUTGOING_BYTES`]).
pub(crate) const DELIVER_FRAME_TARGET_BYTES: usize = 256 * 1024;

/// Bytes the writer gathers before a write system call.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Least room made in the read buffer before each read, so small frames arrive many at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// How long closing waits for the writer to flush what is queued to a peer that may have
/// stopped reading.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long, after its last frame, a closing connection keeps reading (and discarding) what the
/// peer still sends. Closing a socket with unread input makes the kernel send a reset, which
/// can destroy the last frames (an error, the final confirms) before the peer reads them;
/// draining first lets them arrive.
const LINGER: Duration = Duration::from_millis(500);

/// Lingering stops early once the peer has been silent this long: an idle peer has nothing in
/// flight that could provoke a reset, and server shutdown should not wait on it.
const LINGER_IDLE: Duration = Duration::from_millis(50);

/// What a connection enforces, from [`ServerConfig`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_frame_bytes: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    pub(crate) fn from_config(config: &ServerConfig) -> Limits {
        Limits {
            max_frame_bytes: config.max_frame_bytes,
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
        }
    }
}

/// A frame queued for the writer, with its share of the byte budget; the share goes back when
/// the frame has been handed to the socket (or dropped unsent).
struct Queued {
    frame: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// The sending side of the writer task's channel. Cheap to clone: each delivery task has one.
#[derive(Clone)]
pub(crate) struct Outgoing {
    /// Unbounded in frames: `budget` bounds it in bytes.
    sender: mpsc::UnboundedSender<Queued>,
    /// [`OUTGOING_BYTES`] permits, one per byte queued. Closed by the writer when it ends, so
    /// a sender waiting for room learns at once that nobody will write.
    budget: Arc<Semaphore>,
}

/// The writer task is gone (the peer went away or a write failed): stop producing.
#[derive(Debug)]
pub(crate) struct WriterGone;

impl Outgoing {
    /// A channel to a writer task, and the writer's end of it.
    fn new() -> (Outgoing, OutgoingQueue) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let budget = Arc::new(Semaphore::new(OUTGOING_BYTES));
        let queue = OutgoingQueue {
            receiver,
            budget: budget.clone(),
        };
        (Outgoing { sender, budget }, queue)
    }

    /// Queues one encoded frame, waiting while the frames queued already use the byte budget.
    pub(crate) async fn send_frame(&self, frame: Bytes) -> Result<(), WriterGone> {
        // Fits u32: the budget does.
        let cost = frame.len().min(OUTGOING_BYTES) as u32;
        let budget = self
            .budget
            .clone()
            .acquire_many_owned(cost)
            .await
            .map_err(|_| WriterGone)?;
        self.sender
            .send(Queued {
                frame,
                _budget: budget,
            })
            .map_err(|_| WriterGone)
    }

    /// Encodes `response` into `scratch` and queues it. `scratch` is the caller's reusable
    /// buffer: the frame is split off it, so its allocation serves many frames.
    pub(crate) async fn send_response(
        &self,
        scratch: &mut BytesMut,
        correlation_id: u64,
        response: &Response,
    ) -> Result<(), WriterGone> {
        response.encode(correlation_id, scratch);
        self.send_frame(scratch.split().freeze()).await
    }

    /// [`Outgoing::send_response`] for an answer to a request, which must not exceed the
    /// peer's frame limit: a peer refuses (and disconnects on) a larger frame, so a listing
    /// that grew too large is answered with `payload_too_large` instead. Answers that carry
    /// payloads are trimmed to fit before they get here; this is the limit's backstop.
    pub(crate) async fn send_answer(
        &self,
        scratch: &mut BytesMut,
        correlation_id: u64,
        response: &Response,
        max_frame_bytes: usize,
    ) -> Result<(), WriterGone> {
        response.encode(correlation_id, scratch);
        if scratch.len() > max_frame_bytes {
            let message = format!(
                "the answer ({}) would be a frame of {} bytes, over the limit of {max_frame_bytes}; ask for less",
                response.kind(),
                scratch.len()
            );
            scratch.clear();
            Response::error_with(ErrorCode::PayloadTooLarge, message)
                .encode(correlation_id, scratch);
        }
        self.send_frame(scratch.split().freeze()).await
    }
}

/// A response whose answer is not known yet (a publish awaiting its confirm), with the
/// correlation id it answers. Boxed: one allocation per publish *batch* is noise next to the
/// batch, and it lets any request kind be deferred the same way.
pub(crate) type Pending = Pin<Box<dyn Future<Output = (u64, Response)> + Send>>;

/// The writer task's end of [`Outgoing`].
struct OutgoingQueue {
    receiver: mpsc::UnboundedReceiver<Queued>,
    budget: Arc<Semaphore>,
}

/// The read half and its buffer.
struct FrameReader {
    reader: OwnedReadHalf,
    buffer: BytesMut,
    max_frame_bytes: usize,
    /// Counts the bytes of each read call (one call brings many small frames).
    metrics: Arc<ListenerMetrics>,
}

/// What the read half produced.
enum Incoming {
    Frame(Frame),
    /// The stream cannot be cut into frames any more (too large, too short).
    Invalid(FrameError),
    /// The peer closed its side between frames.
    End,
    /// The peer closed its side in the middle of a frame.
    Truncated {
        buffered: usize,
    },
}

impl FrameReader {
    /// Reads until a whole frame is buffered.
    ///
    /// Cancel safe: bytes read are kept in `buffer` whether or not this future completes, so
    /// the connection may drop it in a `select!` and call again.
    async fn read_frame(&mut self) -> std::io::Result<Incoming> {
        loop {
            match Frame::parse(&mut self.buffer, self.max_frame_bytes) {
                Ok(frame) => return Ok(Incoming::Frame(frame)),
                Err(FrameError::Incomplete { needed, .. }) => {
                    self.buffer.reserve(Frame::next_read_len(
                        self.buffer.len(),
                        needed,
                        READ_CHUNK_BYTES,
                    ));
                }
                Err(error) => return Ok(Incoming::Invalid(error)),
            }
            let read = self.reader.read_buf(&mut self.buffer).await?;
            self.metrics.received(read);
            if read == 0 {
                return Ok(if self.buffer.is_empty() {
                    Incoming::End
                } else {
                    Incoming::Truncated {
                        buffered: self.buffer.len(),
                    }
                });
            }
        }
    }

    /// Reads and discards whatever the peer still sends, until it closes, falls silent for
    /// [`LINGER_IDLE`], or [`LINGER`] passes.
    async fn linger(mut self) {
        let mut sink = [0u8; 8192];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(Ok(read @ 1..)) =
                tokio::time::timeout(LINGER_IDLE, self.reader.read(&mut sink)).await
            {
                // Discarded, but received all the same.
                self.metrics.received(read);
            }
        })
        .await;
    }
}

/// Why the read loop stopped.
enum Ending {
    /// The peer closed its side: answer what is in flight, then close.
    PeerClosed,
    /// The server is shutting down.
    Shutdown,
    /// The peer broke the protocol; an error frame has been queued.
    Refused,
    /// The socket failed or the writer is gone: nobody to answer.
    Broken,
}

/// Serves one accepted connection until either side ends it.
pub(crate) async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    broker: Broker,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
    metrics: Arc<ListenerMetrics>,
) {
    // Frames are batched by the writer task already; Nagle would only add latency on top.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "could not disable Nagle's algorithm");
    }
    let opened = Instant::now();
    let (read_half, write_half) = stream.into_split();
    let (outgoing, queue) = Outgoing::new();
    let writer = tokio::spawn(write_frames(queue, write_half, metrics.clone()));
    let mut frames = FrameReader {
        reader: read_half,
        buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
        max_frame_bytes: limits.max_frame_bytes,
        metrics,
    };
    let mut session = Session::new(broker, limits, outgoing.clone());
    let mut in_flight: FuturesUnordered<Pending> = FuturesUnordered::new();
    let mut scratch = BytesMut::new();
    tracing::debug!(%peer, "connection opened");
    // When the connection last did something (a request read, a confirm sent): idleness is
    // measured from here. Set on every frame, so it is a plain store, and the timer below is
    // only re-armed when it fires.
    let mut last_active = opened;
    let timer = tokio::time::sleep_until(opened + limits.handshake_timeout);
    tokio::pin!(timer);

    let ending = loop {
        let can_read = in_flight.len() < MAX_IN_FLIGHT_PUBLISHES;
        // Biased: shutdown first, then confirms (they free in-flight slots and are what the
        // peer waits for), then new requests, and the timeouts last.
        let incoming = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break Ending::Shutdown,
            Some((correlation_id, response)) = in_flight.next(), if !in_flight.is_empty() => {
                last_active = Instant::now();
                if outgoing
                    .send_answer(&mut scratch, correlation_id, &response, limits.max_frame_bytes)
                    .await
                    .is_err()
                {
                    break Ending::Broken;
                }
                continue;
            }
            incoming = frames.read_frame(), if can_read => incoming,
            () = &mut timer => {
                let now = Instant::now();
                let deadline = if !session.greeted() {
                    Some((opened + limits.handshake_timeout, TimedOut::Handshake))
                } else if in_flight.is_empty() && !session.awaits_broker() {
                    Some((last_active + limits.idle_timeout, TimedOut::Idle))
                } else {
                    None
                };
                match deadline {
                    Some((deadline, _)) if deadline > now => timer.as_mut().reset(deadline),
                    Some((_, reason)) => {
                        let response = reason.response(&limits);
                        tracing::debug!(%peer, ?reason, "closing the connection");
                        let _ = outgoing.send_response(&mut scratch, 0, &response).await;
                        break Ending::Refused;
                    }
                    // Busy: look again once it could have become idle.
                    None => timer.as_mut().reset(now + limits.idle_timeout),
                }
                continue;
            }
        };
        let frame = match incoming {
            Ok(Incoming::Frame(frame)) => frame,
            Ok(Incoming::End) => break Ending::PeerClosed,
            Ok(Incoming::Truncated { buffered }) => {
                let message =
                    format!("the stream ended inside a frame ({buffered} bytes of it were sent)");
                tracing::debug!(%peer, "{message}");
                let response = Response::error_with(ErrorCode::MalformedFrame, message);
                let _ = outgoing.send_response(&mut scratch, 0, &response).await;
                break Ending::Refused;
            }
            Ok(Incoming::Invalid(error)) => {
                tracing::debug!(%peer, %error, "invalid frame");
                let code = error.code().unwrap_or(ErrorCode::MalformedFrame);
                let response = Response::error_with(code, error.to_string());
                let _ = outgoing.send_response(&mut scratch, 0, &response).await;
                break Ending::Refused;
            }
            Err(error) => {
                tracing::debug!(%peer, %error, "read failed");
                break Ending::Broken;
            }
        };
        last_active = Instant::now();
        let correlation_id = frame.correlation_id;
        let request = match Request::decode(frame.kind, frame.payload) {
            Ok(request) => request,
            Err(error @ DecodeError::UnknownKind { .. }) => {
                // The stream is still in step and a newer client may simply know more kinds
                // than this server: refuse this request, keep the connection.
                let response = Response::error_with(error.code(), error.to_string());
                if outgoing
                    .send_response(&mut scratch, correlation_id, &response)
                    .await
                    .is_err()
                {
                    break Ending::Broken;
                }
                continue;
            }
            Err(error) => {
                // A payload that does not decode means the peer's encoder is broken; nothing
                // it sends next can be trusted, so answer once and close.
                tracing::debug!(%peer, %error, "malformed request");
                let response = Response::error_with(error.code(), error.to_string());
                let _ = outgoing
                    .send_response(&mut scratch, correlation_id, &response)
                    .await;
                break Ending::Refused;
            }
        };
        match session.handle(correlation_id, request).await {
            Reply::Now(response) => {
                if outgoing
                    .send_answer(
                        &mut scratch,
                        correlation_id,
                        &response,
                        limits.max_frame_bytes,
                    )
                    .await
                    .is_err()
                {
                    break Ending::Broken;
                }
            }
            Reply::Later(pending) => in_flight.push(pending),
            Reply::Sent => {}
            Reply::Close(response) => {
                let _ = outgoing
                    .send_response(&mut scratch, correlation_id, &response)
                    .await;
                break Ending::Refused;
            }
            Reply::WriterGone => break Ending::Broken,
        }
    };

    // Stop deliveries first: their consumers are dropped, so whatever they had fetched and
    // not yet written goes back to the subscription for redelivery.
    session.close().await;
    if !matches!(ending, Ending::Broken) {
        // Confirms still owed are answered: these publishes reached the broker, and a peer
        // that half-closed, broke the protocol later, or sees the server stop still learns
        // which of them are durable.
        while let Some((correlation_id, response)) = in_flight.next().await {
            if outgoing
                .send_answer(
                    &mut scratch,
                    correlation_id,
                    &response,
                    limits.max_frame_bytes,
                )
                .await
                .is_err()
            {
                break;
            }
        }
    }
    if matches!(ending, Ending::Shutdown) {
        let response = Response::error(ErrorCode::ShuttingDown);
        let _ = outgoing.send_response(&mut scratch, 0, &response).await;
    }
    // The writer ends when the last sender is gone; `session.close` dropped the delivery
    // tasks' clones, and this is the last one.
    drop(session);
    drop(outgoing);
    match tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::debug!(%peer, %error, "write failed"),
        Ok(Err(join_error)) => tracing::warn!(%peer, %join_error, "writer task failed"),
        Err(_) => tracing::debug!(%peer, "peer did not read the last frames in time"),
    }
    if matches!(ending, Ending::Refused | Ending::Shutdown) {
        frames.linger().await;
    }
    tracing::debug!(%peer, "connection closed");
}

/// Why a connection was closed by its timer.
#[derive(Debug, Clone, Copy)]
enum TimedOut {
    /// No `Hello` within the handshake timeout.
    Handshake,
    /// Nothing happened for the idle timeout.
    Idle,
}

impl TimedOut {
    /// The error frame that tells the peer.
    fn response(self, limits: &Limits) -> Response {
        match self {
            TimedOut::Handshake => Response::error_with(
                ErrorCode::HandshakeRequired,
                format!(
                    "no session.hello within {:?} of connecting; closing",
                    limits.handshake_timeout
                ),
            ),
            TimedOut::Idle => Response::error_with(
                ErrorCode::Quota,
                format!(
                    "closing a connection idle for {:?} (no request, nothing in flight, no subscription); reconnect when needed",
                    limits.idle_timeout
                ),
            ),
        }
    }
}

/// Resolves once the server is stopping (or the listener that would tell it is gone).
///
/// A function of its own so the `watch` read guard `wait_for` returns is dropped here, and not
/// held in the caller's `select!` across awaits (it is not `Send`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The writer task: takes every frame queued so far, writes them through one buffer, flushes
/// once, and repeats; when every sender is gone, flushes and shuts the write side down (FIN).
/// The bytes sent are counted once per flushed batch, not per frame.
async fn write_frames(
    mut queue: OutgoingQueue,
    write_half: OwnedWriteHalf,
    metrics: Arc<ListenerMetrics>,
) -> std::io::Result<()> {
    let result = write_queued(&mut queue.receiver, write_half, &metrics).await;
    // Senders waiting for room would wait forever once nobody writes.
    queue.budget.close();
    result
}

async fn write_queued(
    receiver: &mut mpsc::UnboundedReceiver<Queued>,
    write_half: OwnedWriteHalf,
    metrics: &ListenerMetrics,
) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER_BYTES, write_half);
    let mut frames = Vec::with_capacity(WRITE_BATCH_FRAMES);
    while receiver.recv_many(&mut frames, WRITE_BATCH_FRAMES).await > 0 {
        let mut batch_bytes = 0;
        for queued in frames.drain(..) {
            // Frames larger than the buffer bypass it (BufWriter writes them directly), so a
            // delivery frame is not copied a second time. Its budget is given back here,
            // once the socket (or the buffer) has it.
            writer.write_all(&queued.frame).await?;
            batch_bytes += queued.frame.len();
        }
        writer.flush().await?;
        metrics.sent(batch_bytes);
    }
    writer.shutdown().await
}
