//! [`Client`]: a cheap, cloneable handle on one shared connection, with the admin calls and
//! the raw publish, and the factory for producers and consumers.
//!
//! The client keeps one connection (see `connection.rs`) for every clone. When it breaks, the
//! next call opens a new one; attempts after a failure are spaced by an exponential backoff with
//! random jitter, so many callers retrying at once make one connection attempt per pause, not
//! one each, and many clients of a restarted broker do not all come back at once. Admin calls
//! are tried once: whether to repeat a `create_topic` after a lost connection is the
//! caller's decision. Producers retry by themselves (`producer.rs`); consumers open their own
//! connection so that one slow consumer's flow control never holds up anyone else's answers
//! (`consumer.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;
use weir_proto::{
    AlertInfo, BrokerStats, Delivery, ErrorCode, Fsync, GroupInfo, Request, Response, Start,
    TopicInfo,
};

use crate::connection::{Connection, ConnectionSettings, unexpected};
use crate::consumer::{Consumer, SubscribeOptions};
use crate::error::{Error, Result};
use crate::message::Published;
use crate::producer::{Producer, ProducerOptions};

/// How a client connects and how long it waits.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Sent in the handshake; the broker shows it in its logs.
    pub client_name: String,
    /// Bound on connecting plus the handshake.
    pub connect_timeout: Duration,
    /// Bound on waiting for any one answer.
    pub request_timeout: Duration,
    /// First pause after a failed connection attempt; doubled after each further failure.
    /// Each pause is randomised between half of it and all of it, so that clients that lost
    /// the same broker do not reconnect in lockstep.
    pub reconnect_delay_min: Duration,
    /// The longest pause between connection attempts.
    pub reconnect_delay_max: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            client_name: format!("weir-client/{}", env!("CARGO_PKG_VERSION")),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            reconnect_delay_min: Duration::from_millis(50),
            reconnect_delay_max: Duration::from_secs(2),
        }
    }
}

impl ClientOptions {
    pub(crate) fn connection_settings(&self) -> ConnectionSettings {
        ConnectionSettings {
            client_name: self.client_name.clone(),
            connect_timeout: self.connect_timeout,
            request_timeout: self.request_timeout,
        }
    }

    pub(crate) fn backoff(&self) -> Backoff {
        Backoff::new(self.reconnect_delay_min, self.reconnect_delay_max)
    }
}

/// Pauses between retries: a step of `minimum`, doubling up to `maximum`, back to `minimum`
/// after a success. Each pause is drawn at random between half the step and the whole step
/// ("equal jitter"), so clients that lost the same broker at the same moment spread their
/// attempts instead of reconnecting in lockstep, and still back off as fast as the step grows.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    minimum: Duration,
    maximum: Duration,
    /// The step of the pause `next_delay` returns next.
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(minimum: Duration, maximum: Duration) -> Backoff {
        Backoff {
            minimum,
            maximum: maximum.max(minimum),
            current: minimum,
        }
    }

    /// The next pause: in `[step / 2, step]`, so never above `maximum`.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.maximum);
        let half = step / 2;
        let spread = u64::try_from((step - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::random_range(0..=spread))
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.minimum;
    }
}

/// A new topic's settings. `Default` is one partition, `fsync = always`, the broker's
/// retention and segment size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOptions {
    /// How many partitions (1 to the broker's maximum).
    pub partitions: u32,
    /// When appends are fsynced, and so what a confirm promises.
    pub fsync: Fsync,
    /// Delete messages older than this (whole segments at a time); `None` for the broker's
    /// default.
    pub retention: Option<Duration>,
    /// Keep each partition under about this many bytes; `None` for the broker's default.
    pub retention_bytes: Option<u64>,
    /// Roll segment files at this size; `None` for the broker's default.
    pub segment_bytes: Option<u64>,
}

impl Default for TopicOptions {
    fn default() -> Self {
        TopicOptions {
            partitions: 1,
            fsync: Fsync::Always,
            retention: None,
            retention_bytes: None,
            segment_bytes: None,
        }
    }
}

/// Retries of connecting: the pause before the next attempt, and the attempt itself.
#[derive(Debug)]
struct Reconnect {
    backoff: Backoff,
    /// No attempt before this instant (set after a failure).
    not_before: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    address: String,
    options: ClientOptions,
    /// The connection in use. A std mutex held only to clone or replace the `Arc`.
    current: Mutex<Option<Arc<Connection>>>,
    /// Held while connecting, so concurrent callers wait for one attempt instead of each
    /// making their own. A tokio mutex: it is held across the connect.
    reconnect: tokio::sync::Mutex<Reconnect>,
    /// Whether publishes ask for the confirm that lists duplicates
    /// (`PublishReportingDuplicates`); cleared once a broker that predates it refuses it.
    reports_duplicates: AtomicBool,
}

/// A handle on a Weir broker. Cheap to clone; every clone shares one connection.
///
/// ```no_run
/// # async fn run() -> weir_client::Result<()> {
/// let client = weir_client::Client::connect("127.0.0.1:5680").await?;
/// for topic in client.topics().await? {
///     println!("{} ({} partitions)", topic.name, topic.partitions.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects to the broker's native listener at `address` (`HOST:PORT`) with default
    /// options. Fails if the first connection cannot be made; later losses are repaired.
    pub async fn connect(address: &str) -> Result<Client> {
        Client::connect_with(address, ClientOptions::default()).await
    }

    /// Connects with explicit options.
    pub async fn connect_with(address: &str, options: ClientOptions) -> Result<Client> {
        let client = Client {
            inner: Arc::new(Inner {
                address: address.to_owned(),
                reconnect: tokio::sync::Mutex::new(Reconnect {
                    backoff: options.backoff(),
                    not_before: None,
                }),
                options,
                current: Mutex::new(None),
                reports_duplicates: AtomicBool::new(true),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    /// The address this client connects to.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    fn current(&self) -> Option<Arc<Connection>> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .filter(|connection| !connection.is_closed())
    }

    /// The shared connection, reconnecting if it closed. After a failed attempt the next one
    /// waits out the backoff pause first.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        let mut reconnect = self.inner.reconnect.lock().await;
        // Someone else may have reconnected while this caller waited for the lock.
        if let Some(connection) = self.current() {
            return Ok(connection);
        }
        if let Some(not_before) = reconnect.not_before {
            tokio::time::sleep_until(not_before).await;
        }
        match self.open_connection().await {
            Ok(connection) => {
                reconnect.backoff.reset();
                reconnect.not_before = None;
                let connection = Arc::new(connection);
                *self
                    .inner
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                let delay = reconnect.backoff.next_delay();
                reconnect.not_before = Some(Instant::now() + delay);
                tracing::debug!(address = %self.inner.address, %error, ?delay, "connecting failed");
                Err(error)
            }
        }
    }

    /// A new connection of its own (for a consumer), not shared with this client's calls.
    pub(crate) async fn open_connection(&self) -> Result<Connection> {
        Connection::open(
            &self.inner.address,
            &self.inner.options.connection_settings(),
        )
        .await
    }

    pub(crate) async fn request(&self, request: &Request) -> Result<Response> {
        self.connection().await?.request(request).await
    }

    pub(crate) async fn request_ok(&self, request: &Request) -> Result<()> {
        match self.request(request).await? {
            Response::Ok => Ok(()),
            other => Err(unexpected("Ok", &other)),
        }
    }

    /// Checks that the broker answers.
    pub async fn ping(&self) -> Result<()> {
        match self.request(&Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected("Pong", &other)),
        }
    }

    /// Creates a topic. Fails with the `topic_exists` code if there is one by that name.
    pub async fn create_topic(&self, name: &str, options: TopicOptions) -> Result<TopicInfo> {
        let retention_ms = options.retention.map(milliseconds);
        let request = Request::CreateTopic {
            name: name.to_owned(),
            partitions: options.partitions,
            fsync: options.fsync,
            retention_ms,
            retention_bytes: options.retention_bytes,
            segment_bytes: options.segment_bytes,
        };
        match self.request(&request).await? {
            Response::Topic(topic) => Ok(topic),
            other => Err(unexpected("Topic", &other)),
        }
    }

    /// Deletes a topic, its data and its subscriptions.
    pub async fn delete_topic(&self, name: &str) -> Result<()> {
        self.request_ok(&Request::DeleteTopic {
            name: name.to_owned(),
        })
        .await
    }

    /// Every topic.
    pub async fn topics(&self) -> Result<Vec<TopicInfo>> {
        match self.request(&Request::ListTopics).await? {
            Response::Topics(topics) => Ok(topics),
            other => Err(unexpected("Topics", &other)),
        }
    }

    /// One topic: its settings and partitions' offsets.
    pub async fn topic(&self, name: &str) -> Result<TopicInfo> {
        match self
            .request(&Request::DescribeTopic {
                name: name.to_owned(),
            })
            .await?
        {
            Response::Topic(topic) => Ok(topic),
            other => Err(unexpected("Topic", &other)),
        }
    }

    /// Subscriptions (consumer groups), of one topic or of all.
    pub async fn groups(&self, topic: Option<&str>) -> Result<Vec<GroupInfo>> {
        match self
            .request(&Request::ListGroups {
                topic: topic.map(str::to_owned),
            })
            .await?
        {
            Response::Groups(groups) => Ok(groups),
            other => Err(unexpected("Groups", &other)),
        }
    }

    /// One subscription: its consumers, positions and backlog.
    pub async fn group(&self, topic: &str, group: &str) -> Result<GroupInfo> {
        let request = Request::DescribeGroup {
            topic: topic.to_owned(),
            group: group.to_owned(),
        };
        match self.request(&request).await? {
            Response::Groups(groups) => groups
                .into_iter()
                .next()
                .ok_or_else(|| Error::Protocol("a group description with no group".into())),
            other => Err(unexpected("Groups", &other)),
        }
    }

    /// Moves a subscription to `to` while it runs: replay from the start, or skip ahead.
    pub async fn reset_group(&self, topic: &str, group: &str, to: Start) -> Result<()> {
        self.request_ok(&Request::ResetGroup {
            topic: topic.to_owned(),
            group: group.to_owned(),
            to,
        })
        .await
    }

    /// Publishes one encoded batch (build it with [`weir_batch::BatchBuilder`]) and waits
    /// for the confirm. `partition: None` lets the broker route each record by key (round
    /// robin without one), which may split the batch over several partitions. Tried once;
    /// [`Producer`] adds batching and retries.
    pub async fn publish(
        &self,
        topic: &str,
        partition: Option<u32>,
        batch: Bytes,
    ) -> Result<Published> {
        let connection = self.connection().await?;
        publish_on(self, &connection, topic, partition, &batch)
            .await?
            .wait()
            .await
    }

    /// The broker's numbers now: topics with their sizes and publish counts, subscriptions
    /// with backlog, in-flight and consumer counts, their counters since the broker started,
    /// success rate over the last minute and publish-to-ack latency, fsync latency, disk use,
    /// scheduled batches and open transactions.
    pub async fn stats(&self) -> Result<BrokerStats> {
        match self.request(&Request::Stats).await? {
            Response::Stats(stats) => Ok(stats),
            other => Err(unexpected("Stats", &other)),
        }
    }

    /// Reads up to `max` (1 to 1000) messages of one partition from `from`, outside any
    /// group: the broker keeps no state for the reader, and nothing is acked. Returns the
    /// messages (each with `delivery_count` 0) and the offset to read on from with
    /// `Start::Offset`. `from` is clamped to what the partition retains; `Start::Latest` gives
    /// no message, only where new ones will appear. A broker older than this request answers
    /// [`ErrorCode::UnsupportedRequest`].
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        from: Start,
        max: u32,
    ) -> Result<(Vec<Delivery>, u64)> {
        let request = Request::Read {
            topic: topic.to_owned(),
            partition,
            from,
            max,
        };
        match self.request(&request).await? {
            Response::Messages {
                next_offset,
                messages,
            } => Ok((messages, next_offset)),
            other => Err(unexpected("Messages", &other)),
        }
    }

    /// The alerts pending and firing now, by rule then scope: each names its rule, the
    /// subscription (`topic/subscription`), the metric's value against the rule's threshold,
    /// the rule's message and since when its condition holds. The broker evaluates its rules
    /// every second; a resolved alert is no longer listed. A broker older than this request
    /// answers [`ErrorCode::UnsupportedRequest`].
    pub async fn alerts(&self) -> Result<Vec<AlertInfo>> {
        match self.request(&Request::Alerts).await? {
            Response::Alerts(alerts) => Ok(alerts),
            other => Err(unexpected("Alerts", &other)),
        }
    }

    /// A producer that batches messages on this client's connection. Starts a background
    /// task, so it must be called within a tokio runtime.
    pub fn producer(&self, options: ProducerOptions) -> Producer {
        Producer::new(self.clone(), options)
    }

    /// Joins the subscription `group` on `topic` (creating it with `options` if it does not
    /// exist) on a connection of its own.
    pub async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Result<Consumer> {
        Consumer::open(self.clone(), topic, group, options).await
    }
}

/// A publish sent and not yet confirmed.
pub(crate) struct PendingPublish {
    reply: crate::connection::PendingReply,
    /// What is needed to send it again as a plain `Publish`, should the broker predate
    /// `PublishReportingDuplicates`.
    resend: Option<Resend>,
}

struct Resend {
    client: Client,
    connection: Arc<Connection>,
    topic: String,
    partition: Option<u32>,
    batch: Bytes,
}

impl PendingPublish {
    /// Waits for the confirm.
    pub(crate) async fn wait(self) -> Result<Published> {
        match self.reply.wait().await {
            Err(error) if error.code() == Some(ErrorCode::UnsupportedRequest) => {
                let Some(resend) = self.resend else {
                    return Err(error);
                };
                // A broker from before duplicate reporting: ask the plain way from now on.
                resend
                    .client
                    .inner
                    .reports_duplicates
                    .store(false, Ordering::Relaxed);
                tracing::debug!("the broker does not report duplicates; publishing plainly");
                let sent = send_publish(
                    &resend.connection,
                    &resend.topic,
                    resend.partition,
                    &resend.batch,
                    false,
                )
                .await?;
                published(sent.wait().await?)
            }
            answer => published(answer?),
        }
    }
}

fn published(response: Response) -> Result<Published> {
    match response {
        Response::PublishedWithDuplicates {
            partitions,
            duplicates,
            durability,
        } => Ok(Published {
            partitions,
            duplicates,
            durability,
        }),
        Response::Published {
            partitions,
            durability,
        } => Ok(Published {
            partitions,
            duplicates: Vec::new(),
            durability,
        }),
        other => Err(unexpected("PublishedWithDuplicates", &other)),
    }
}

/// Queues a publish of `batch` on `connection` without waiting for its confirm. Asks for the
/// confirm that lists duplicates unless the broker is known not to give it.
pub(crate) async fn publish_on(
    client: &Client,
    connection: &Arc<Connection>,
    topic: &str,
    partition: Option<u32>,
    batch: &Bytes,
) -> Result<PendingPublish> {
    let reporting = client.inner.reports_duplicates.load(Ordering::Relaxed);
    let reply = send_publish(connection, topic, partition, batch, reporting).await?;
    let resend = reporting.then(|| Resend {
        client: client.clone(),
        connection: connection.clone(),
        topic: topic.to_owned(),
        partition,
        batch: batch.clone(),
    });
    Ok(PendingPublish { reply, resend })
}

async fn send_publish(
    connection: &Connection,
    topic: &str,
    partition: Option<u32>,
    batch: &[u8],
    reporting: bool,
) -> Result<crate::connection::PendingReply> {
    if batch.is_empty() {
        return Err(Error::InvalidArgument("an empty batch".into()));
    }
    let correlation_id = connection.next_correlation_id();
    // The frame adds a 13-byte header, the topic's length and bytes, and an option tag and
    // partition number; reserving it all makes the batch copy the only allocation.
    let mut frame = BytesMut::with_capacity(batch.len() + topic.len() + 32);
    if reporting {
        Request::encode_publish_reporting_duplicates(
            correlation_id,
            topic,
            partition,
            batch,
            &mut frame,
        );
    } else {
        Request::encode_publish(correlation_id, topic, partition, batch, &mut frame);
    }
    connection.start(correlation_id, frame.freeze()).await
}

/// Milliseconds in `duration`, saturating.
pub(crate) fn milliseconds(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each pause lies between half its step and the step; the steps double to the maximum.
    fn assert_steps(backoff: &mut Backoff, steps_ms: &[u64]) {
        for &step in steps_ms {
            let delay = backoff.next_delay();
            let step = Duration::from_millis(step);
            assert!(
                step / 2 <= delay && delay <= step,
                "{delay:?} outside [{:?}, {step:?}]",
                step / 2
            );
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_maximum_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        assert_steps(&mut backoff, &[50, 100, 200, 300, 300, 300]);
        backoff.reset();
        assert_steps(&mut backoff, &[50, 100]);
    }

    /// Goal: clients that lose the broker together do not come back in lockstep (issue 10,
    /// defect 15: every client waited exactly 50, 100, 200 ms … and reconnected at the same
    /// instants). Method: 1,000 clients' backoffs with the default options, their first four
    /// pauses each: every pause within its bounds, and the pauses of one attempt spread over
    /// many different values.
    #[test]
    fn the_reconnect_pauses_of_many_clients_differ_within_their_bounds() {
        let options = ClientOptions::default();
        let mut backoffs: Vec<Backoff> = (0..1_000).map(|_| options.backoff()).collect();
        let mut step = options.reconnect_delay_min;
        for _ in 0..4 {
            let delays: Vec<Duration> = backoffs.iter_mut().map(Backoff::next_delay).collect();
            for delay in &delays {
                assert!(
                    step / 2 <= *delay && *delay <= step,
                    "{delay:?} for {step:?}"
                );
            }
            let distinct: std::collections::BTreeSet<&Duration> = delays.iter().collect();
            assert!(
                distinct.len() > 900,
                "1,000 clients chose only {} different pauses of {step:?}",
                distinct.len()
            );
            let earliest = delays.iter().min().expect("1,000 pauses");
            let latest = delays.iter().max().expect("1,000 pauses");
            assert!(
                *latest - *earliest > step / 4,
                "the pauses of {step:?} spread over only {:?}",
                *latest - *earliest
            );
            step = (step * 2).min(options.reconnect_delay_max);
        }
    }
}
