//! One TCP connection to a broker: the handshake, then a writer task and a reader task.
//!
//! Callers never touch the socket. A request is encoded by the caller, registered in the
//! pending table under a fresh correlation id, and queued on a bounded channel; the writer task
//! drains everything queued and flushes once per drain, so many pipelined requests share one
//! system call. The reader task cuts frames off the socket, hands each answer to the waiter
//! registered under its correlation id, and routes `Deliver` pushes (correlation id 0) to the
//! channel of their subscription. When either task fails, the connection closes as a whole:
//! every waiter gets an error and every subscription channel ends. Reconnecting is not this
//! module's business; `client.rs` and the consumer open a new `Connection`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use weir_proto::{
    DEFAULT_MAX_FRAME_BYTES, Delivery, Frame, FrameError, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
    Request, Response,
};

use crate::error::{Error, Result};

/// Frames queued for the writer. Bounded so that a caller producing faster than the socket
/// drains waits instead of growing memory; large enough that pipelined requests rarely wait.
const OUTGOING_FRAMES: usize = 1024;
/// Read buffer growth step; also the writer's buffer size. Big enough for many small frames
/// per system call.
const IO_BUFFER_BYTES: usize = 64 * 1024;
/// The correlation id of the handshake; later requests count up from the next one.
const HELLO_CORRELATION_ID: u64 = 1;

/// What a connection needs to know to open.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSettings {
    pub client_name: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

/// Messages of one `Deliver` frame, as routed to a subscription's channel.
pub(crate) type DeliveryBatch = Vec<Delivery>;

/// A transaction check-back pushed by the broker: the transaction and its producer group.
pub(crate) type CheckRequest = (u64, String);

/// Who is waiting for the answer to a request.
enum Pending {
    /// A caller awaits the response.
    Reply(oneshot::Sender<Result<Response>>),
    /// A subscribe: on `Subscribed`, the reader starts routing the new subscription's
    /// deliveries to `deliveries` *before* it reads the next frame, so the first deliveries
    /// (which may follow the answer immediately) are never dropped.
    Subscribe {
        reply: oneshot::Sender<Result<Response>>,
        deliveries: mpsc::Sender<DeliveryBatch>,
    },
    /// Sent without waiting (acks, nacks): an error answer is kept for the owner to collect
    /// on its next call, so it is reported late but never lost.
    Detached,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    routes: HashMap<u32, mpsc::Sender<DeliveryBatch>>,
    /// Where pushed transaction check-backs go, once a checker asked for them.
    checks: Option<mpsc::Sender<CheckRequest>>,
    /// Detached requests not yet answered.
    detached: usize,
    /// The first error answer to a detached request, not yet collected.
    detached_error: Option<Error>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
    /// The error the server pushed unasked (correlation id 0) before the connection closed:
    /// a subscription ended, or the server is shutting down.
    pushed_error: Option<Error>,
}

/// The part both tasks and every caller share.
struct Shared {
    /// A std mutex, not tokio's: it is held only for map lookups and inserts, never across an
    /// await, so it cannot stall the runtime and is cheaper than an async lock.
    state: Mutex<State>,
    /// Mirrors `state.closed.is_some()` for the lock-free check on every request.
    closed: AtomicBool,
    /// Mirrors `state.detached_error.is_some()`: consumers check it on every call, so the
    /// common answer ("no error") must not take the lock.
    has_detached_error: AtomicBool,
    /// Tells both tasks to stop.
    stop: watch::Sender<bool>,
    /// Woken when the last detached request is answered, or on close.
    settled: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves maps that are still consistent (every update
        // is a single insert or remove), so carry on with them.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes the connection once: fails every waiter, ends every subscription channel, stops
    /// both tasks. Later calls do nothing.
    fn close(&self, reason: String) {
        let (pending, routes, checks, unanswered) = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(reason.clone());
            // Left as it is: a flush waiting for these answers must fail, not see none owed.
            let unanswered = state.detached;
            (
                std::mem::take(&mut state.pending),
                std::mem::take(&mut state.routes),
                state.checks.take(),
                unanswered,
            )
        };
        self.closed.store(true, Ordering::Release);
        tracing::debug!(%reason, "connection closed");
        if unanswered > 0 {
            tracing::warn!(
                unanswered,
                %reason,
                "acks or nacks were unanswered when the connection closed; their messages may be delivered again"
            );
        }
        for (_, waiter) in pending {
            match waiter {
                Pending::Reply(reply) | Pending::Subscribe { reply, .. } => {
                    let _ = reply.send(Err(Error::Closed(reason.clone())));
                }
                Pending::Detached => {}
            }
        }
        drop(routes);
        drop(checks);
        self.stop.send_replace(true);
        self.settled.notify_waiters();
    }

    fn closed_error(&self) -> Error {
        Error::Closed(
            self.lock()
                .closed
                .clone()
                .unwrap_or_else(|| "connection closed".to_owned()),
        )
    }
}

/// An open, handshaken connection. Shared by reference count; dropping the last handle lets
/// the writer drain what is queued, then closes the socket.
pub(crate) struct Connection {
    outgoing: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
    next_correlation_id: AtomicU64,
    max_frame_bytes: usize,
    request_timeout: Duration,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Connection")
            .field("closed", &self.is_closed())
            .field("max_frame_bytes", &self.max_frame_bytes)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `address`, says hello, and starts the two tasks. The whole handshake is
    /// bounded by the connect timeout.
    pub(crate) async fn open(address: &str, settings: &ConnectionSettings) -> Result<Connection> {
        match tokio::time::timeout(
            settings.connect_timeout,
            Connection::handshake(address, settings),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(settings.connect_timeout)),
        }
    }

    async fn handshake(address: &str, settings: &ConnectionSettings) -> Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        // Requests are small and latency matters; the writer already coalesces frames.
        stream.set_nodelay(true)?;
        let (mut read_half, mut write_half) = stream.into_split();
        let mut hello = BytesMut::new();
        Request::Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            client_name: settings.client_name.clone(),
        }
        .encode(HELLO_CORRELATION_ID, &mut hello);
        write_half.write_all(&hello).await?;
        let mut buffer = BytesMut::with_capacity(IO_BUFFER_BYTES);
        let frame = loop {
            match Frame::parse(&mut buffer, DEFAULT_MAX_FRAME_BYTES) {
                Ok(frame) => break frame,
                Err(FrameError::Incomplete { needed, .. }) => {
                    buffer.reserve(needed.saturating_sub(buffer.len()));
                    if read_half.read_buf(&mut buffer).await? == 0 {
                        return Err(Error::Closed(
                            "the server closed the connection during the handshake".into(),
                        ));
                    }
                }
                Err(error) => return Err(Error::Protocol(format!("handshake: {error}"))),
            }
        };
        let response = Response::decode(frame.kind, frame.payload)
            .map_err(|error| Error::Protocol(format!("handshake answer: {error}")))?;
        let max_frame_bytes = match response {
            Response::HelloOk {
                version,
                server_name,
                max_frame_bytes,
            } => {
                tracing::debug!(address, version, %server_name, max_frame_bytes, "connected");
                usize::try_from(max_frame_bytes).unwrap_or(usize::MAX)
            }
            Response::Error { code, message } => return Err(Error::server(code, message)),
            other => {
                return Err(Error::Protocol(format!(
                    "expected a hello answer, got {}",
                    other.kind()
                )));
            }
        };
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            closed: AtomicBool::new(false),
            has_detached_error: AtomicBool::new(false),
            stop,
            settled: Notify::new(),
        });
        let (outgoing, receiver) = mpsc::channel(OUTGOING_FRAMES);
        tokio::spawn(write_loop(receiver, write_half, shared.clone()));
        // Read frames up to the larger of the two limits: the server's announced limit is for
        // what it accepts, and its deliveries are sized by its own idea of a frame.
        let read_limit = max_frame_bytes.max(DEFAULT_MAX_FRAME_BYTES);
        tokio::spawn(read_loop(read_half, buffer, shared.clone(), read_limit));
        Ok(Connection {
            outgoing,
            shared,
            next_correlation_id: AtomicU64::new(HELLO_CORRELATION_ID + 1),
            max_frame_bytes,
            request_timeout: settings.request_timeout,
        })
    }

    /// Whether the connection has closed (it never reopens).
    pub(crate) fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// A fresh correlation id: unique on this connection, never 0.
    pub(crate) fn next_correlation_id(&self) -> u64 {
        self.next_correlation_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `request` and waits for its answer; an error answer becomes [`Error::Server`].
    pub(crate) async fn request(&self, request: &Request) -> Result<Response> {
        let correlation_id = self.next_correlation_id();
        let mut frame = BytesMut::new();
        request.encode(correlation_id, &mut frame);
        self.start(correlation_id, frame.freeze())
            .await?
            .wait()
            .await
    }

    /// Registers a waiter for `correlation_id` and queues `frame` (which must carry that id),
    /// without waiting for the answer: the caller awaits [`PendingReply::wait`] when it
    /// chooses, which is how many publishes are in flight at once.
    pub(crate) async fn start(&self, correlation_id: u64, frame: Bytes) -> Result<PendingReply> {
        let (reply, receiver) = oneshot::channel();
        self.send(correlation_id, frame, Pending::Reply(reply))
            .await?;
        Ok(PendingReply {
            receiver,
            guard: PendingGuard {
                shared: self.shared.clone(),
                correlation_id,
            },
            timeout: self.request_timeout,
        })
    }

    /// Queues a request whose answer nobody awaits. An error answer is kept and returned by
    /// the next [`Connection::take_detached_error`].
    pub(crate) async fn send_detached(&self, correlation_id: u64, frame: Bytes) -> Result<()> {
        self.send(correlation_id, frame, Pending::Detached).await
    }

    /// The first error answer to a detached request since the last call, if any.
    pub(crate) fn take_detached_error(&self) -> Option<Error> {
        if !self.shared.has_detached_error.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.shared.lock();
        self.shared
            .has_detached_error
            .store(false, Ordering::Release);
        state.detached_error.take()
    }

    /// The error the server pushed unasked before closing the connection, if any.
    pub(crate) fn take_pushed_error(&self) -> Option<Error> {
        self.shared.lock().pushed_error.take()
    }

    /// Waits until every detached request sent so far is answered (or the connection closes).
    pub(crate) async fn settle_detached(&self) -> Result<()> {
        loop {
            // Register interest before checking, so an answer arriving in between still
            // wakes this waiter.
            let notified = self.shared.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.shared.lock();
                if state.detached == 0 {
                    return Ok(());
                }
                if let Some(reason) = &state.closed {
                    return Err(Error::Closed(reason.clone()));
                }
            }
            notified.await;
        }
    }

    /// Subscribes: sends the request (which must be a `Subscribe` carrying `correlation_id`)
    /// and returns the subscription id and the channel its deliveries arrive on. `capacity`
    /// bounds the frames buffered there; when it is full the reader waits, and TCP flow
    /// control slows the server down.
    pub(crate) async fn subscribe(
        &self,
        request: &Request,
        capacity: usize,
    ) -> Result<(u32, mpsc::Receiver<DeliveryBatch>)> {
        let correlation_id = self.next_correlation_id();
        let mut frame = BytesMut::new();
        request.encode(correlation_id, &mut frame);
        let (reply, receiver) = oneshot::channel();
        let (deliveries, delivery_receiver) = mpsc::channel(capacity.max(1));
        self.send(
            correlation_id,
            frame.freeze(),
            Pending::Subscribe { reply, deliveries },
        )
        .await?;
        let pending = PendingReply {
            receiver,
            guard: PendingGuard {
                shared: self.shared.clone(),
                correlation_id,
            },
            timeout: self.request_timeout,
        };
        match pending.wait().await? {
            Response::Subscribed { subscription } => Ok((subscription, delivery_receiver)),
            other => Err(unexpected("Subscribed", &other)),
        }
    }

    /// From now on, pushed `CheckTransaction` frames go to the returned channel (of at most
    /// `capacity` waiting checks; more are dropped, and the broker asks again later). The
    /// channel ends when the connection closes.
    pub(crate) fn route_checks(&self, capacity: usize) -> mpsc::Receiver<CheckRequest> {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        let mut state = self.shared.lock();
        if state.closed.is_none() {
            state.checks = Some(sender);
        }
        receiver
    }

    /// Like [`Connection::send_detached`], but never waits: fails if the writer's queue is
    /// full. For `Drop`, which cannot await.
    pub(crate) fn try_send_detached(&self, correlation_id: u64, frame: Bytes) -> Result<()> {
        self.check_size(frame.len())?;
        let permit = self
            .outgoing
            .try_reserve()
            .map_err(|_| self.shared.closed_error())?;
        self.register(correlation_id, Pending::Detached)?;
        permit.send(frame);
        Ok(())
    }

    /// Queues `frame` with its waiter.
    ///
    /// Cancel-safe: the only wait is for room in the queue, before anything is registered,
    /// so a caller dropped mid-way (a `select!` that took another branch) leaves no waiter
    /// behind for an answer that will never come.
    async fn send(&self, correlation_id: u64, frame: Bytes, waiter: Pending) -> Result<()> {
        self.check_size(frame.len())?;
        let permit = self
            .outgoing
            .reserve()
            .await
            .map_err(|_| self.shared.closed_error())?;
        self.register(correlation_id, waiter)?;
        permit.send(frame);
        Ok(())
    }

    fn check_size(&self, frame_bytes: usize) -> Result<()> {
        if frame_bytes > self.max_frame_bytes {
            return Err(Error::TooLarge {
                size: frame_bytes,
                limit: self.max_frame_bytes,
            });
        }
        Ok(())
    }

    /// Registers the waiter *before* its frame is queued, so the answer cannot overtake it.
    fn register(&self, correlation_id: u64, waiter: Pending) -> Result<()> {
        let mut state = self.shared.lock();
        if let Some(reason) = &state.closed {
            return Err(Error::Closed(reason.clone()));
        }
        if matches!(waiter, Pending::Detached) {
            state.detached += 1;
        }
        state.pending.insert(correlation_id, waiter);
        Ok(())
    }
}

/// An answer not yet received. Dropping it (for instance when the caller's future is
/// cancelled) forgets the waiter, so the pending table never keeps abandoned entries.
pub(crate) struct PendingReply {
    receiver: oneshot::Receiver<Result<Response>>,
    guard: PendingGuard,
    timeout: Duration,
}

impl PendingReply {
    /// Waits for the answer, up to the request timeout. An error answer becomes
    /// [`Error::Server`].
    pub(crate) async fn wait(self) -> Result<Response> {
        let PendingReply {
            receiver,
            guard,
            timeout,
        } = self;
        let answer = match tokio::time::timeout(timeout, receiver).await {
            Err(_) => Err(Error::Timeout(timeout)),
            // The sender is dropped only by `close` after sending, or never: treat it as
            // closed either way.
            Ok(Err(_)) => Err(guard.shared.closed_error()),
            Ok(Ok(answer)) => answer,
        };
        drop(guard);
        match answer? {
            Response::Error { code, message } => Err(Error::server(code, message)),
            response => Ok(response),
        }
    }
}

struct PendingGuard {
    shared: Arc<Shared>,
    correlation_id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        // Usually the reader removed the entry already; then this finds nothing.
        self.shared.lock().pending.remove(&self.correlation_id);
    }
}

/// The error for an answer of the wrong kind.
pub(crate) fn unexpected(expected: &str, response: &Response) -> Error {
    Error::Protocol(format!("expected {expected}, got {}", response.kind()))
}

/// Writes queued frames until the channel ends or the connection stops. Drains everything
/// queued before flushing, so a burst of pipelined requests costs one system call.
async fn write_loop(
    mut receiver: mpsc::Receiver<Bytes>,
    write_half: OwnedWriteHalf,
    shared: Arc<Shared>,
) {
    let mut writer = BufWriter::with_capacity(IO_BUFFER_BYTES, write_half);
    let mut stop = shared.stop.subscribe();
    let result: std::io::Result<()> = async {
        loop {
            let frame = tokio::select! {
                frame = receiver.recv() => frame,
                _ = stop.wait_for(|stopped| *stopped) => return Ok(()),
            };
            let Some(frame) = frame else {
                // Every handle is gone: flush what was queued and say goodbye.
                writer.flush().await?;
                writer.shutdown().await?;
                return Ok(());
            };
            writer.write_all(&frame).await?;
            while let Ok(frame) = receiver.try_recv() {
                writer.write_all(&frame).await?;
            }
            writer.flush().await?;
        }
    }
    .await;
    match result {
        Ok(()) => shared.close("the client closed the connection".into()),
        Err(error) => shared.close(format!("write failed: {error}")),
    }
}

/// Reads frames until the socket ends, a frame is malformed, or the connection stops.
async fn read_loop(
    mut read_half: OwnedReadHalf,
    mut buffer: BytesMut,
    shared: Arc<Shared>,
    max_frame_bytes: usize,
) {
    let mut stop = shared.stop.subscribe();
    let reason = 'connection: loop {
        loop {
            match Frame::parse(&mut buffer, max_frame_bytes) {
                Ok(frame) => {
                    if let Err(reason) = dispatch(&shared, &mut stop, frame).await {
                        break 'connection reason;
                    }
                }
                Err(FrameError::Incomplete { needed, .. }) => {
                    // `needed` is bounded by the frame limit, so reserving it is safe.
                    let wanted = needed.max(buffer.len() + IO_BUFFER_BYTES / 4);
                    buffer.reserve(wanted.saturating_sub(buffer.len()));
                    break;
                }
                Err(error) => {
                    break 'connection format!("malformed frame from the server: {error}");
                }
            }
        }
        tokio::select! {
            read = read_half.read_buf(&mut buffer) => match read {
                Ok(0) => break 'connection "the server closed the connection".to_owned(),
                Ok(_) => {}
                Err(error) => break 'connection format!("read failed: {error}"),
            },
            _ = stop.wait_for(|stopped| *stopped) => break 'connection "connection stopped".to_owned(),
        }
    };
    shared.close(reason);
}

/// Hands one frame to whoever waits for it. An `Err` is the reason to close the connection.
async fn dispatch(
    shared: &Shared,
    stop: &mut watch::Receiver<bool>,
    frame: Frame,
) -> std::result::Result<(), String> {
    let response = Response::decode(frame.kind, frame.payload)
        .map_err(|error| format!("undecodable frame from the server: {error}"))?;
    if frame.correlation_id == 0 {
        return match response {
            Response::Deliver {
                subscription,
                messages,
            } => {
                let route = shared.lock().routes.get(&subscription).cloned();
                let Some(route) = route else {
                    // Deliveries may trail an unsubscribe; the broker takes unacked ones back.
                    tracing::debug!(subscription, "delivery for a subscription no one reads");
                    return Ok(());
                };
                tokio::select! {
                    sent = route.send(messages) => {
                        if sent.is_err() {
                            // The consumer is gone; stop routing to it.
                            shared.lock().routes.remove(&subscription);
                        }
                    }
                    _ = stop.wait_for(|stopped| *stopped) => return Err("connection stopped".into()),
                }
                Ok(())
            }
            Response::CheckTransaction {
                transaction,
                producer_group,
            } => {
                let checks = shared.lock().checks.clone();
                match checks {
                    // Not waiting: a check not taken now is asked again by the broker, and
                    // the reader must keep serving answers and deliveries.
                    Some(checks) => {
                        if checks.try_send((transaction, producer_group)).is_err() {
                            tracing::debug!(
                                transaction,
                                "transaction check dropped; the broker asks again"
                            );
                        }
                    }
                    None => tracing::debug!(transaction, "transaction check no one answers"),
                }
                Ok(())
            }
            Response::Error { code, message } => {
                // Unasked errors end a subscription or the whole session. Consumers have a
                // connection each, so closing it is how the consumer learns, and it can tell
                // from the kept error whether rejoining makes sense.
                let error = Error::server(code, message);
                let reason = format!("the server ended the session: {error}");
                shared.lock().pushed_error = Some(error);
                Err(reason)
            }
            other => Err(format!("unsolicited {} frame", other.kind())),
        };
    }
    let mut state = shared.lock();
    match state.pending.remove(&frame.correlation_id) {
        None => {
            tracing::debug!(
                correlation_id = frame.correlation_id,
                "answer to an abandoned request"
            );
        }
        Some(Pending::Reply(reply)) => {
            let _ = reply.send(Ok(response));
        }
        Some(Pending::Subscribe { reply, deliveries }) => {
            if let Response::Subscribed { subscription } = &response {
                state.routes.insert(*subscription, deliveries);
            }
            let _ = reply.send(Ok(response));
        }
        Some(Pending::Detached) => {
            state.detached = state.detached.saturating_sub(1);
            if let Response::Error { code, message } = response {
                state
                    .detached_error
                    .get_or_insert(Error::server(code, message));
                shared.has_detached_error.store(true, Ordering::Release);
            }
            if state.detached == 0 {
                shared.settled.notify_waiters();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scripted_server::scripted_server;
    use tokio::net::TcpListener;
    use weir_proto::{ErrorCode, Fsync, MessageId, Start, SubscriptionMode, TopicInfo};

    fn settings() -> ConnectionSettings {
        ConnectionSettings {
            client_name: "test".into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }

    fn topic(name: &str) -> Response {
        Response::Topic(TopicInfo {
            name: name.into(),
            partitions: Vec::new(),
            fsync: Fsync::Os,
            retention_ms: None,
            retention_bytes: None,
        })
    }

    /// Goal: answers reach their own callers whatever order the server sends them in.
    /// Method: the server holds the first request's answer and sends both after the second.
    #[tokio::test]
    async fn answers_are_matched_by_correlation_id_in_any_order() {
        let mut held = None;
        let address = scripted_server(move |_, correlation_id, request| {
            let Request::DescribeTopic { name } = request else {
                panic!("unexpected {request:?}")
            };
            match held.take() {
                None => {
                    held = Some((correlation_id, topic(&name)));
                    Some(Vec::new())
                }
                Some(first) => Some(vec![(correlation_id, topic(&name)), first]),
            }
        })
        .await;
        let connection = Connection::open(&address, &settings()).await.unwrap();
        let describe_first = Request::DescribeTopic {
            name: "first".into(),
        };
        let describe_second = Request::DescribeTopic {
            name: "second".into(),
        };
        let (first, second) = tokio::join!(connection.request(&describe_first), async {
            // Make sure "first" is sent first.
            tokio::time::sleep(Duration::from_millis(20)).await;
            connection.request(&describe_second).await
        });
        assert_eq!(first.unwrap(), topic("first"));
        assert_eq!(second.unwrap(), topic("second"));
    }

    #[tokio::test]
    async fn an_error_answer_becomes_a_server_error() {
        let address = scripted_server(|_, correlation_id, _| {
            Some(vec![(
                correlation_id,
                Response::error_with(ErrorCode::UnknownTopic, "no topic 'x'"),
            )])
        })
        .await;
        let connection = Connection::open(&address, &settings()).await.unwrap();
        let error = connection
            .request(&Request::DescribeTopic { name: "x".into() })
            .await
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::UnknownTopic));
        assert!(!connection.is_closed());
    }

    /// Goal: deliveries that follow the `Subscribed` answer in the same write are not lost,
    /// and a refused detached ack is reported afterwards. Method: the server writes both
    /// frames at once, then refuses the ack.
    #[tokio::test]
    async fn first_deliveries_arrive_and_a_refused_ack_is_reported_later() {
        let address = scripted_server(|_, correlation_id, request| match request {
            Request::Subscribe { .. } => {
                let delivery = Delivery {
                    partition: 0,
                    offset: 5,
                    delivery_count: 1,
                    timestamp_ms: 0,
                    key: None,
                    headers: Vec::new(),
                    value: Bytes::from_static(b"first"),
                };
                Some(vec![
                    (correlation_id, Response::Subscribed { subscription: 9 }),
                    (
                        0,
                        Response::Deliver {
                            subscription: 9,
                            messages: vec![delivery],
                        },
                    ),
                ])
            }
            Request::Ack { .. } => Some(vec![(
                correlation_id,
                Response::error(ErrorCode::NoSuchSubscription),
            )]),
            other => panic!("unexpected {other:?}"),
        })
        .await;
        let connection = Connection::open(&address, &settings()).await.unwrap();
        let subscribe = Request::Subscribe {
            topic: "t".into(),
            group: "g".into(),
            mode: SubscriptionMode::Queue,
            start: Start::Earliest,
            prefetch: 10,
            ack_timeout_ms: None,
        };
        let (subscription, mut deliveries) = connection.subscribe(&subscribe, 4).await.unwrap();
        assert_eq!(subscription, 9);
        let batch = deliveries.recv().await.unwrap();
        assert_eq!(&batch[0].value[..], b"first");
        let correlation_id = connection.next_correlation_id();
        let mut frame = BytesMut::new();
        let ids = [MessageId {
            partition: 0,
            offset: 5,
        }];
        Request::encode_ack(correlation_id, subscription, &ids, &mut frame);
        connection
            .send_detached(correlation_id, frame.freeze())
            .await
            .unwrap();
        connection.settle_detached().await.unwrap();
        let error = connection.take_detached_error().unwrap();
        assert_eq!(error.code(), Some(ErrorCode::NoSuchSubscription));
        assert!(connection.take_detached_error().is_none());
    }

    #[tokio::test]
    async fn a_lost_connection_fails_pending_requests_and_ends_subscriptions() {
        let address = scripted_server(|_, _, _| None).await;
        let connection = Connection::open(&address, &settings()).await.unwrap();
        let error = connection.request(&Request::Ping).await.unwrap_err();
        assert!(matches!(error, Error::Closed(_)), "{error}");
        assert!(error.is_retryable());
        assert!(connection.is_closed());
        assert!(matches!(
            connection.request(&Request::Ping).await,
            Err(Error::Closed(_))
        ));
    }

    #[tokio::test]
    async fn a_refused_handshake_is_a_server_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = BytesMut::new();
            stream.read_buf(&mut buffer).await.unwrap();
            let mut out = BytesMut::new();
            Response::error(ErrorCode::UnsupportedVersion).encode(1, &mut out);
            stream.write_all(&out).await.unwrap();
        });
        let error = Connection::open(&address, &settings()).await.unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::UnsupportedVersion));
    }
}
