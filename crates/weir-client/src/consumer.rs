//! [`Consumer`]: one member of a subscription (consumer group), on a connection of its own.
//!
//! Deliveries are pushed by the broker, as many as the prefetch credit allows, and wait in a
//! bounded channel until [`Consumer::next`] takes them. The consumer has its own connection so
//! that when it falls behind, TCP flow control slows only its own deliveries, never another
//! caller's answers.
//!
//! Acks are coalesced and pipelined: [`Consumer::ack`] adds ids to a list that is sent as one
//! request when it reaches half the prefetch, or when `next` is about to wait for the network
//! (the broker may be waiting for those acks to grant more credit), or on
//! [`Consumer::flush_acks`]. Nobody waits for their answers in the hot loop, but an error
//! answer is kept and returned by the next call, so a refused ack is reported late, never lost.
//!
//! When the connection breaks, the consumer reconnects with backoff and joins the same group
//! again; acks not yet sent go out on the new connection. Messages that were delivered and not
//! acked are delivered again by the broker (at least once), with a higher delivery count.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::mpsc;
use weir_proto::{
    Delivery, ErrorCode, MessageId, Overflow, QueueSettings, Request, Response, Start,
    SubscriptionMode,
};

use crate::client::{Client, milliseconds};
use crate::connection::{Connection, DeliveryBatch, unexpected};
use crate::error::{Error, Result};

/// Most ids sent in one ack request.
const ACK_BATCH_MAX: usize = 1024;

/// How to join a subscription. `mode`, `start`, `ack_timeout` and the queue settings apply
/// when this call creates the subscription; joining an existing one keeps its settings (and
/// the mode must match).
///
/// The queue settings (from `max_deliveries` on) are a queue subscription's delivery
/// guarantees; stream subscriptions ignore them. When any is set, the subscription is made with
/// `SubscribeWithSettings`, which a broker that predates it refuses with
/// `unsupported_request` rather than ignoring the settings.
///
/// ```
/// use std::time::Duration;
/// use weir_client::{Overflow, SubscribeOptions};
/// // Dead-letter a message after 5 failed deliveries, retry after 1 s, 5 s, then every 30 s,
/// // never two messages of one key at once, and refuse publishes beyond 10,000 waiting.
/// let options = SubscribeOptions::queue()
///     .with_max_deliveries(5)
///     .with_retry_backoff(vec![Duration::from_secs(1), Duration::from_secs(5), Duration::from_secs(30)])
///     .with_ordered_by_key()
///     .with_max_backlog(10_000, Overflow::RejectPublish);
/// assert!(options.has_queue_settings());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// `Queue`: per-message ack, competing consumers, redelivery. `Stream`: an offset per
    /// partition, partitions shared among the group, order kept per partition.
    pub mode: SubscriptionMode,
    /// Where a new subscription starts.
    pub start: Start,
    /// Most deliveries unacked at once (queue), or buffered for this consumer (stream).
    pub prefetch: u32,
    /// Queue mode: redeliver a message not acked within this time; `None` for the broker's
    /// default.
    pub ack_timeout: Option<Duration>,
    /// After this many deliveries without an ack, a message is dead-lettered; `None` for
    /// never. A [`Consumer::release`] does not count.
    pub max_deliveries: Option<u32>,
    /// Where dead letters go; `None` for `<topic>.<group>.dlq`.
    pub dead_letter_topic: Option<String>,
    /// Messages older than this (by publish time) are dead-lettered (reason `expired`)
    /// instead of delivered.
    pub message_ttl: Option<Duration>,
    /// Never two messages with the same key in flight: each key in order, with many
    /// consumers.
    pub ordered_by_key: bool,
    /// Most messages waiting (not yet acked) before `overflow` applies; `None` for no limit.
    pub max_backlog: Option<u64>,
    /// What happens at `max_backlog`: refuse publishes with `backlog_full`, or dead-letter
    /// the oldest waiting messages.
    pub overflow: Overflow,
    /// Waits before redelivering a message nacked with requeue and no delay of its own: the
    /// n-th failure waits the n-th entry, the last one repeating.
    pub retry_backoff: Vec<Duration>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            mode: SubscriptionMode::Queue,
            start: Start::Earliest,
            prefetch: 1000,
            ack_timeout: None,
            max_deliveries: None,
            dead_letter_topic: None,
            message_ttl: None,
            ordered_by_key: false,
            max_backlog: None,
            overflow: Overflow::RejectPublish,
            retry_backoff: Vec::new(),
        }
    }
}

impl SubscribeOptions {
    /// A queue subscription (competing consumers, per-message ack) from the earliest message.
    pub fn queue() -> SubscribeOptions {
        SubscribeOptions::default()
    }

    /// A stream subscription (offsets, replay) starting at `start`.
    pub fn stream(start: Start) -> SubscribeOptions {
        SubscribeOptions {
            mode: SubscriptionMode::Stream,
            start,
            ..SubscribeOptions::default()
        }
    }

    /// Sets how many unacked deliveries this consumer holds at once.
    pub fn with_prefetch(mut self, prefetch: u32) -> SubscribeOptions {
        self.prefetch = prefetch;
        self
    }

    /// Dead-letters a message after `max_deliveries` deliveries without an ack.
    pub fn with_max_deliveries(mut self, max_deliveries: u32) -> SubscribeOptions {
        self.max_deliveries = Some(max_deliveries);
        self
    }

    /// Sends dead letters to `topic` instead of `<topic>.<group>.dlq`.
    pub fn with_dead_letter_topic(mut self, topic: impl Into<String>) -> SubscribeOptions {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// Dead-letters messages older than `ttl` instead of delivering them.
    pub fn with_message_ttl(mut self, ttl: Duration) -> SubscribeOptions {
        self.message_ttl = Some(ttl);
        self
    }

    /// Never two messages with one key in flight.
    pub fn with_ordered_by_key(mut self) -> SubscribeOptions {
        self.ordered_by_key = true;
        self
    }

    /// Applies `overflow` once `max_backlog` messages wait.
    pub fn with_max_backlog(mut self, max_backlog: u64, overflow: Overflow) -> SubscribeOptions {
        self.max_backlog = Some(max_backlog);
        self.overflow = overflow;
        self
    }

    /// Waits `backoff[n]` before the n-th redelivery of a nacked message (the last repeats).
    pub fn with_retry_backoff(mut self, backoff: Vec<Duration>) -> SubscribeOptions {
        self.retry_backoff = backoff;
        self
    }

    /// Whether any queue setting differs from the default (then `SubscribeWithSettings` is
    /// used).
    pub fn has_queue_settings(&self) -> bool {
        self.queue_settings() != QueueSettings::default()
    }

    /// The queue settings as the protocol carries them.
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            max_deliveries: self.max_deliveries,
            dead_letter_topic: self.dead_letter_topic.clone(),
            message_ttl_ms: self.message_ttl.map(milliseconds),
            ordered_by_key: self.ordered_by_key,
            retry_backoff_ms: self
                .retry_backoff
                .iter()
                .copied()
                .map(milliseconds)
                .collect(),
            max_backlog: self.max_backlog,
            overflow: self.overflow,
        }
    }

    fn request(&self, topic: &str, group: &str) -> Request {
        let ack_timeout_ms = self.ack_timeout.map(milliseconds);
        if self.has_queue_settings() {
            Request::SubscribeWithSettings {
                topic: topic.to_owned(),
                group: group.to_owned(),
                mode: self.mode,
                start: self.start,
                prefetch: self.prefetch,
                ack_timeout_ms,
                settings: self.queue_settings(),
            }
        } else {
            Request::Subscribe {
                topic: topic.to_owned(),
                group: group.to_owned(),
                mode: self.mode,
                start: self.start,
                prefetch: self.prefetch,
                ack_timeout_ms,
            }
        }
    }
}

/// What an ack or nack did, per id ([`Consumer::ack_reporting`], [`Consumer::nack_reporting`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settlements {
    /// How many ids it settled.
    pub settled: u32,
    /// Ids settled before (acked; for a nack also timed out, given back or dead-lettered):
    /// nothing was done. An ack of one usually means another consumer has it too.
    pub already_settled: Vec<MessageId>,
    /// Ids never delivered to the group: nothing was done.
    pub unknown: Vec<MessageId>,
}

/// One connection's membership of the group.
struct Session {
    connection: Connection,
    subscription: u32,
    deliveries: mpsc::Receiver<DeliveryBatch>,
}

impl Session {
    async fn open(
        client: &Client,
        topic: &str,
        group: &str,
        options: &SubscribeOptions,
    ) -> Result<Session> {
        let connection = client.open_connection().await?;
        let request = options.request(topic, group);
        // In queue mode at most `prefetch` messages are unacked, so at most that many frames
        // can be in the channel and the reader never waits; in stream mode a full channel
        // makes the reader wait, which is the back-pressure we want.
        let capacity = usize::try_from(options.prefetch)
            .unwrap_or(usize::MAX)
            .clamp(16, 4096);
        let (subscription, deliveries) = connection.subscribe(&request, capacity).await?;
        Ok(Session {
            connection,
            subscription,
            deliveries,
        })
    }
}

/// A member of a subscription: receives messages, acks and nacks them. Made by
/// [`Client::subscribe`].
///
/// ```no_run
/// # async fn run(client: weir_client::Client) -> weir_client::Result<()> {
/// use weir_client::SubscribeOptions;
/// let mut consumer = client.subscribe("orders", "billing", SubscribeOptions::queue()).await?;
/// loop {
///     let delivery = consumer.next().await?;
///     println!("{:?}", delivery.value);
///     consumer.ack_one(&delivery).await?;
/// }
/// # }
/// ```
///
/// Dropping it sends the acks still coalesced (if the connection has room) and leaves the
/// group; unacked messages go back to the group.
pub struct Consumer {
    client: Client,
    topic: String,
    group: String,
    options: SubscribeOptions,
    session: Session,
    buffered: VecDeque<Delivery>,
    /// Acks not yet sent, coalesced.
    pending_acks: Vec<MessageId>,
    /// An error to report on the next call.
    deferred: Option<Error>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Consumer")
            .field("topic", &self.topic)
            .field("group", &self.group)
            .field("subscription", &self.session.subscription)
            .field("buffered", &self.buffered.len())
            .field("pending_acks", &self.pending_acks.len())
            .finish_non_exhaustive()
    }
}

impl Consumer {
    pub(crate) async fn open(
        client: Client,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Consumer> {
        let session = Session::open(&client, topic, group, &options).await?;
        Ok(Consumer {
            client,
            topic: topic.to_owned(),
            group: group.to_owned(),
            options,
            session,
            buffered: VecDeque::new(),
            pending_acks: Vec::new(),
            deferred: None,
        })
    }

    /// The topic subscribed to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The group joined.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The next message, waiting for one if none is buffered. Reconnects by itself after a
    /// connection loss; fails with an error the broker or an earlier ack reported.
    ///
    /// Cancel-safe, like [`Consumer::next_batch`]: used in a `select!` that takes another
    /// branch, no message and no ack is lost.
    pub async fn next(&mut self) -> Result<Delivery> {
        self.take_error()?;
        loop {
            if let Some(delivery) = self.buffered.pop_front() {
                return Ok(delivery);
            }
            self.fill().await?;
        }
    }

    /// Every message buffered now (at least one, waiting if none is).
    pub async fn next_batch(&mut self) -> Result<Vec<Delivery>> {
        self.take_error()?;
        while self.buffered.is_empty() {
            self.fill().await?;
        }
        // Take what else has arrived too, without waiting.
        while let Ok(batch) = self.session.deliveries.try_recv() {
            self.buffered.extend(batch);
        }
        Ok(self.buffered.drain(..).collect())
    }

    /// Acknowledges messages: queue mode, each is done; stream mode, the group's position in
    /// each partition moves past the highest offset given. Sent coalesced (see the module
    /// documentation); call [`Consumer::flush_acks`] to wait until the broker has them.
    pub async fn ack(&mut self, ids: &[MessageId]) -> Result<()> {
        self.take_error()?;
        self.pending_acks.extend_from_slice(ids);
        if self.pending_acks.len() >= self.ack_threshold() {
            self.send_acks().await?;
        }
        Ok(())
    }

    /// Acknowledges one delivery.
    pub async fn ack_one(&mut self, delivery: &Delivery) -> Result<()> {
        self.ack(&[delivery.id()]).await
    }

    /// Refuses messages. Queue mode: with `requeue`, each is delivered again after `delay`
    /// (to any consumer of the group); without, it is rejected (dead-lettered where the
    /// broker supports it). Stream mode: with `requeue` the partition rewinds to the message.
    /// `error` says why, and is kept with a dead letter. Sent at once, after any coalesced
    /// acks, without waiting for the answer.
    pub async fn nack(
        &mut self,
        ids: &[MessageId],
        requeue: bool,
        delay: Duration,
        error: &str,
    ) -> Result<()> {
        self.take_error()?;
        self.send_acks().await?;
        let request = Request::Nack {
            subscription: self.session.subscription,
            ids: ids.to_vec(),
            requeue,
            delay_ms: milliseconds(delay),
            error: error.to_owned(),
        };
        self.send_detached(&request, ids.len(), "nack").await
    }

    /// Acknowledges messages as [`Consumer::ack`] does, and says what happened to each id:
    /// sent at once (after any coalesced acks), and waits for the answer, taking deliveries
    /// that arrive meanwhile for `next`. Ids settled before or never delivered to the group
    /// are listed and left alone. A broker that predates it (`AckReporting`) answers
    /// [`ErrorCode::UnsupportedRequest`] and acks nothing; [`Consumer::ack`] works with any.
    pub async fn ack_reporting(&mut self, ids: &[MessageId]) -> Result<Settlements> {
        self.take_error()?;
        self.send_acks().await?;
        let request = Request::AckReporting {
            subscription: self.session.subscription,
            ids: ids.to_vec(),
        };
        self.settle_reporting(&request).await
    }

    /// Refuses messages as [`Consumer::nack`] does, and says what happened to each id, as
    /// [`Consumer::ack_reporting`] does.
    pub async fn nack_reporting(
        &mut self,
        ids: &[MessageId],
        requeue: bool,
        delay: Duration,
        error: &str,
    ) -> Result<Settlements> {
        self.take_error()?;
        self.send_acks().await?;
        let request = Request::NackReporting {
            subscription: self.session.subscription,
            ids: ids.to_vec(),
            requeue,
            delay_ms: milliseconds(delay),
            error: error.to_owned(),
        };
        self.settle_reporting(&request).await
    }

    /// Sends an `AckReporting` or `NackReporting` and waits for its `Settled`.
    async fn settle_reporting(&mut self, request: &Request) -> Result<Settlements> {
        let Session {
            connection,
            deliveries,
            ..
        } = &mut self.session;
        let answer = connection.request(request);
        tokio::pin!(answer);
        // Keep taking deliveries while waiting: in stream mode the reader may be waiting for
        // room in the channel before it can read the answer.
        let answer = loop {
            tokio::select! {
                answer = &mut answer => break answer?,
                Some(batch) = deliveries.recv() => self.buffered.extend(batch),
            }
        };
        match answer {
            Response::Settled {
                settled,
                already_settled,
                unknown,
            } => Ok(Settlements {
                settled,
                already_settled,
                unknown,
            }),
            other => Err(unexpected("Settled", &other)),
        }
    }

    /// Gives messages back because this consumer is stopping (or cannot take them now): they
    /// are delivered again at once, to any consumer of the group, and count neither as
    /// failures nor towards `max_deliveries` (unlike [`Consumer::nack`]). Sent at once, after
    /// any coalesced acks, without waiting for the answer.
    pub async fn release(&mut self, ids: &[MessageId]) -> Result<()> {
        self.take_error()?;
        self.send_acks().await?;
        let request = Request::Release {
            subscription: self.session.subscription,
            ids: ids.to_vec(),
        };
        self.send_detached(&request, ids.len(), "release").await
    }

    /// Gives one delivery back; see [`Consumer::release`].
    pub async fn release_one(&mut self, delivery: &Delivery) -> Result<()> {
        self.release(&[delivery.id()]).await
    }

    async fn send_detached(&self, request: &Request, count: usize, what: &str) -> Result<()> {
        let connection = &self.session.connection;
        let correlation_id = connection.next_correlation_id();
        let mut frame = BytesMut::new();
        request.encode(correlation_id, &mut frame);
        match connection
            .send_detached(correlation_id, frame.freeze())
            .await
        {
            Ok(()) => Ok(()),
            // The messages are unacked, so the broker delivers them again once this consumer
            // reconnects: the same effect as a requeue without delay.
            Err(error) if error.is_retryable() => {
                tracing::warn!(count, %error, "{what} not sent; the messages will be delivered again");
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Refuses one delivery; see [`Consumer::nack`].
    pub async fn nack_one(
        &mut self,
        delivery: &Delivery,
        requeue: bool,
        delay: Duration,
        error: &str,
    ) -> Result<()> {
        self.nack(&[delivery.id()], requeue, delay, error).await
    }

    /// Sends coalesced acks and waits until the broker has answered every ack and nack sent
    /// so far (the broker answers one once it is durable); fails with the first one it
    /// refused. Messages arriving meanwhile are kept for
    /// `next`. If the connection is lost, fails with [`Error::Closed`]: acks not yet sent stay
    /// queued and go out once `next` has reconnected; those sent and unanswered may be lost,
    /// and their messages delivered again.
    pub async fn flush_acks(&mut self) -> Result<()> {
        self.take_error()?;
        self.send_acks().await?;
        loop {
            let Session {
                connection,
                deliveries,
                ..
            } = &mut self.session;
            // Keep taking deliveries while waiting: in stream mode the reader may be waiting
            // for room in the channel before it can read the answers.
            tokio::select! {
                settled = connection.settle_detached() => {
                    settled?;
                    break;
                }
                Some(batch) = deliveries.recv() => self.buffered.extend(batch),
            }
        }
        self.take_error()?;
        // Acks a lost connection could not send stay queued for the next connection: the
        // broker has not answered them.
        if !self.pending_acks.is_empty() {
            return Err(Error::Closed(
                "the connection was lost before these acks were sent".into(),
            ));
        }
        Ok(())
    }

    /// Sends coalesced acks, waits for their answers, and leaves the group. Messages buffered
    /// and not yet taken by [`Consumer::next`] are released first (they do not count as
    /// failed deliveries); those taken and not acked go back to the group.
    pub async fn close(mut self) -> Result<()> {
        let flushed = self.flush_acks().await;
        // The acks just answered freed credit, so deliveries may have arrived since: they
        // were never seen either (every delivery held at unsubscribe counts as a failed one).
        while let Ok(batch) = self.session.deliveries.try_recv() {
            self.buffered.extend(batch);
        }
        let unseen: Vec<MessageId> = self
            .buffered
            .drain(..)
            .map(|delivery| delivery.id())
            .collect();
        if !unseen.is_empty() {
            let request = Request::Release {
                subscription: self.session.subscription,
                ids: unseen,
            };
            match self.session.connection.request(&request).await {
                // A broker from before `Release` takes them back with the subscription.
                Ok(_) => {}
                Err(error) if error.code() == Some(ErrorCode::UnsupportedRequest) => {}
                Err(error) => tracing::debug!(%error, "releasing unseen deliveries failed"),
            }
        }
        let request = Request::Unsubscribe {
            subscription: self.session.subscription,
        };
        let unsubscribed = match self.session.connection.request(&request).await {
            Ok(Response::Ok) => Ok(()),
            Ok(other) => Err(unexpected("Ok", &other)),
            Err(error) => Err(error),
        };
        flushed.and(unsubscribed)
    }

    fn ack_threshold(&self) -> usize {
        // Half the credit: the broker grants more before this consumer runs dry.
        (usize::try_from(self.options.prefetch / 2).unwrap_or(ACK_BATCH_MAX))
            .clamp(1, ACK_BATCH_MAX)
    }

    fn take_error(&mut self) -> Result<()> {
        if let Some(error) = self.deferred.take() {
            return Err(error);
        }
        match self.session.connection.take_detached_error() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    /// Sends the coalesced acks. If the connection is gone they stay queued and go out on the
    /// next one.
    async fn send_acks(&mut self) -> Result<()> {
        while !self.pending_acks.is_empty() {
            let count = self.pending_acks.len().min(ACK_BATCH_MAX);
            let connection = &self.session.connection;
            let correlation_id = connection.next_correlation_id();
            let mut frame = BytesMut::new();
            Request::encode_ack(
                correlation_id,
                self.session.subscription,
                &self.pending_acks[..count],
                &mut frame,
            );
            match connection
                .send_detached(correlation_id, frame.freeze())
                .await
            {
                Ok(()) => {
                    self.pending_acks.drain(..count);
                }
                Err(error) if error.is_retryable() => return Ok(()),
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Waits for the next delivery frame, sending coalesced acks first, and reconnecting if
    /// the connection is gone.
    async fn fill(&mut self) -> Result<()> {
        match self.session.deliveries.try_recv() {
            Ok(batch) => {
                self.buffered.extend(batch);
                return Ok(());
            }
            Err(mpsc::error::TryRecvError::Empty) => {}
            Err(mpsc::error::TryRecvError::Disconnected) => return self.reconnect().await,
        }
        // About to wait on the network: the broker may be waiting for these acks before it
        // grants more credit.
        self.send_acks().await?;
        match self.session.deliveries.recv().await {
            Some(batch) => {
                self.buffered.extend(batch);
                Ok(())
            }
            None => self.reconnect().await,
        }
    }

    /// Joins the group again on a new connection, retrying with backoff while the failure is
    /// one a retry can fix.
    async fn reconnect(&mut self) -> Result<()> {
        // An error answer that arrived before the connection closed is still reported.
        if let Some(error) = self.session.connection.take_detached_error() {
            self.deferred.get_or_insert(error);
        }
        // The server ended the subscription for a reason rejoining cannot fix (the topic was
        // deleted, say): report it. The next call tries to rejoin.
        if let Some(error) = self.session.connection.take_pushed_error()
            && !error.is_retryable()
        {
            return Err(error);
        }
        tracing::warn!(topic = %self.topic, group = %self.group, "consumer connection lost; reconnecting");
        let mut backoff = self.client.options().backoff();
        loop {
            match Session::open(&self.client, &self.topic, &self.group, &self.options).await {
                Ok(session) => {
                    tracing::info!(topic = %self.topic, group = %self.group, "consumer reconnected");
                    self.session = session;
                    return Ok(());
                }
                Err(error) if error.is_retryable() => {
                    let delay = backoff.next_delay();
                    tracing::debug!(%error, ?delay, "consumer reconnect failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        if self.pending_acks.is_empty() {
            return;
        }
        // Best effort, without waiting: the writer sends what is queued before it closes.
        let connection = &self.session.connection;
        for chunk in self.pending_acks.chunks(ACK_BATCH_MAX) {
            let correlation_id = connection.next_correlation_id();
            let mut frame = BytesMut::new();
            Request::encode_ack(correlation_id, self.session.subscription, chunk, &mut frame);
            if connection
                .try_send_detached(correlation_id, frame.freeze())
                .is_err()
            {
                tracing::debug!(
                    count = self.pending_acks.len(),
                    "acks not sent on drop; those messages will be delivered again"
                );
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    use super::*;
    use crate::scripted_server::scripted_server;

    fn delivery(offset: u64) -> Delivery {
        Delivery {
            partition: 0,
            offset,
            delivery_count: 1,
            timestamp_ms: 0,
            key: None,
            headers: Vec::new(),
            value: Bytes::from(offset.to_string()),
        }
    }

    /// Goal: acks in a hot loop are coalesced into one request, sent when the consumer is
    /// about to wait for more messages, not one round trip per message. Method: the server
    /// delivers four messages, records every ack request, and delivers a fifth only once acked.
    #[tokio::test]
    async fn acks_are_coalesced_until_the_consumer_would_wait() {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let recorded = acks.clone();
        let address = scripted_server(move |_, correlation_id, request| match request {
            Request::Subscribe { .. } => Some(vec![
                (correlation_id, Response::Subscribed { subscription: 3 }),
                (
                    0,
                    Response::Deliver {
                        subscription: 3,
                        messages: (0..4).map(delivery).collect(),
                    },
                ),
            ]),
            Request::Ack { subscription, ids } => {
                assert_eq!(subscription, 3);
                recorded.lock().unwrap().push(ids);
                Some(vec![
                    (correlation_id, Response::Ok),
                    (
                        0,
                        Response::Deliver {
                            subscription: 3,
                            messages: vec![delivery(4)],
                        },
                    ),
                ])
            }
            other => panic!("unexpected {other:?}"),
        })
        .await;
        let client = Client::connect(&address).await.unwrap();
        let mut consumer = client
            .subscribe("t", "g", SubscribeOptions::queue())
            .await
            .unwrap();
        for expected in 0..4 {
            let delivery = consumer.next().await.unwrap();
            assert_eq!(delivery.offset, expected);
            consumer.ack_one(&delivery).await.unwrap();
        }
        assert!(acks.lock().unwrap().is_empty(), "no ack sent yet");
        let fifth = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("the coalesced acks were sent before waiting")
            .unwrap();
        assert_eq!(fifth.offset, 4);
        let offsets: Vec<Vec<u64>> = acks
            .lock()
            .unwrap()
            .iter()
            .map(|ids| ids.iter().map(|id| id.offset).collect())
            .collect();
        assert_eq!(offsets, [vec![0, 1, 2, 3]]);
    }

    /// Goal: an ack the broker refuses is reported by the consumer's next call. Method: a
    /// server that refuses acks; `flush_acks` waits for the answer and returns it.
    #[tokio::test]
    async fn a_refused_ack_is_reported_on_the_next_call() {
        let address = scripted_server(|_, correlation_id, request| match request {
            Request::Subscribe { .. } => Some(vec![
                (correlation_id, Response::Subscribed { subscription: 1 }),
                (
                    0,
                    Response::Deliver {
                        subscription: 1,
                        messages: vec![delivery(0)],
                    },
                ),
            ]),
            Request::Ack { .. } => Some(vec![(
                correlation_id,
                Response::error(weir_proto::ErrorCode::NoSuchSubscription),
            )]),
            other => panic!("unexpected {other:?}"),
        })
        .await;
        let client = Client::connect(&address).await.unwrap();
        let mut consumer = client
            .subscribe("t", "g", SubscribeOptions::queue())
            .await
            .unwrap();
        let delivery = consumer.next().await.unwrap();
        consumer.ack_one(&delivery).await.unwrap();
        let error = consumer.flush_acks().await.unwrap_err();
        assert_eq!(
            error.code(),
            Some(weir_proto::ErrorCode::NoSuchSubscription)
        );
    }
}
