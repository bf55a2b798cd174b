//! The session of one native connection, and the one `match` over [`Request`].
//!
//! [`Session::handle`] is the only place the native front end touches the broker: one
//! variant, one `Broker` (or `Consumer`) call, one response. It also holds what a connection
//! remembers between requests: whether the handshake happened, and the subscriptions it
//! opened, by the ids it gave them. It never reads or writes the socket itself; responses go
//! back to `connection.rs`, or, for deliveries, through the writer channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use weir_core::{Broker, Consumer, SubscribeOptions, TopicConfig};
use weir_proto::{ErrorCode, Request, Response};

use super::connection::{Limits, Outgoing, Pending};
use super::convert;
use super::delivery;
use crate::error::public_error;

/// Most subscriptions one connection may hold open at once: each runs a task and holds
/// deliveries, so a single peer must not open them without bound.
pub(crate) const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 1024;

/// What to do with a request's answer.
pub(crate) enum Reply {
    /// Send this now.
    Now(Response),
    /// Send what this future yields when it resolves (a publish awaiting its confirm); the
    /// connection keeps reading meanwhile.
    Later(Pending),
    /// The answer was already queued (a subscription's `Subscribed` must precede its first
    /// delivery, so the session sends it before starting the delivery task).
    Sent,
    /// Send this, then close the connection (failed handshake).
    Close(Response),
    /// The writer is gone; nothing can be answered.
    WriterGone,
}

/// A subscription this connection opened.
struct Attached {
    /// Shared with the delivery task; acks and nacks use it from here.
    consumer: Arc<Consumer>,
    delivery: tokio::task::JoinHandle<()>,
}

/// What one connection remembers between requests.
pub(crate) struct Session {
    broker: Broker,
    limits: Limits,
    outgoing: Outgoing,
    /// Set by a successful `Hello`; every other request is refused before it.
    greeted: bool,
    subscriptions: HashMap<u32, Attached>,
    /// The id the next subscription gets. Ids are never reused on a connection, so a late ack
    /// for a closed subscription cannot land on a newer one.
    next_subscription: u32,
}

fn core_error(error: &weir_core::Error) -> Response {
    let (code, message) = public_error(error);
    Response::error_with(code, message)
}

fn done(result: weir_core::Result<()>) -> Response {
    match result {
        Ok(()) => Response::Ok,
        Err(error) => core_error(&error),
    }
}

fn no_such_subscription(subscription: u32) -> Response {
    Response::error_with(
        ErrorCode::NoSuchSubscription,
        format!("no subscription {subscription} on this connection"),
    )
}

impl Session {
    pub(crate) fn new(broker: Broker, limits: Limits, outgoing: Outgoing) -> Session {
        Session {
            broker,
            limits,
            outgoing,
            greeted: false,
            subscriptions: HashMap::new(),
            next_subscription: 1,
        }
    }

    /// Runs one request. Only a publish is deferred; everything else is answered before the
    /// next request is read, which keeps a connection's admin requests in order.
    pub(crate) async fn handle(&mut self, correlation_id: u64, request: Request) -> Reply {
        if !self.greeted && !matches!(request, Request::Hello { .. }) {
            return Reply::Close(Response::error_with(
                ErrorCode::HandshakeRequired,
                format!(
                    "the first request must be session.hello, not {}",
                    request.kind().name()
                ),
            ));
        }
        let broker = &self.broker;
        let response = match request {
            Request::Hello {
                min_version,
                max_version,
                client_name,
            } => return self.hello(min_version, max_version, &client_name),
            Request::Ping => Response::Pong,
            Request::CreateTopic {
                name,
                partitions,
                fsync,
                retention_ms,
                retention_bytes,
                segment_bytes,
            } => {
                // Unset fields take the broker's default topic settings, not the type's.
                let defaults = &broker.config().default_topic;
                let config = TopicConfig {
                    partitions,
                    fsync: convert::fsync_policy(fsync),
                    retention_ms: retention_ms.or(defaults.retention_ms),
                    retention_bytes: retention_bytes.or(defaults.retention_bytes),
                    segment_bytes: segment_bytes.unwrap_or(defaults.segment_bytes),
                    // Settings the wire does not carry yet (dedup window, …).
                    ..defaults.clone()
                };
                match broker.create_topic(&name, config).await {
                    Ok(info) => Response::Topic(convert::topic_info(info)),
                    Err(error) => core_error(&error),
                }
            }
            Request::DeleteTopic { name } => done(broker.delete_topic(&name).await),
            Request::ListTopics => Response::Topics(
                broker
                    .topics()
                    .into_iter()
                    .map(convert::topic_info)
                    .collect(),
            ),
            Request::DescribeTopic { name } => match broker.topic(&name) {
                Ok(info) => Response::Topic(convert::topic_info(info)),
                Err(error) => core_error(&error),
            },
            Request::Publish {
                topic,
                partition,
                batch,
            } => {
                let broker = broker.clone();
                return Reply::Later(Box::pin(async move {
                    let response = match broker.publish(&topic, partition, batch).await {
                        Ok(confirm) => convert::published(confirm),
                        Err(error) => core_error(&error),
                    };
                    (correlation_id, response)
                }));
            }
            Request::Subscribe {
                topic,
                group,
                mode,
                start,
                prefetch,
                ack_timeout_ms,
            } => {
                let options = SubscribeOptions {
                    kind: convert::subscription_kind(mode),
                    start: convert::start_position(start),
                    prefetch,
                    ack_timeout: ack_timeout_ms.map(Duration::from_millis),
                    // Dead-lettering, ordering and backlog limits are not on the wire yet.
                    ..SubscribeOptions::default()
                };
                return self
                    .subscribe(correlation_id, &topic, &group, options)
                    .await;
            }
            Request::Unsubscribe { subscription } => {
                match self.subscriptions.remove(&subscription) {
                    Some(attached) => {
                        detach(attached).await;
                        Response::Ok
                    }
                    None => no_such_subscription(subscription),
                }
            }
            Request::Ack { subscription, ids } => match self.subscriptions.get(&subscription) {
                Some(attached) => done(attached.consumer.ack(&convert::message_ids(&ids))),
                None => no_such_subscription(subscription),
            },
            Request::Nack {
                subscription,
                ids,
                requeue,
                delay_ms,
                error,
            } => match self.subscriptions.get(&subscription) {
                Some(attached) => {
                    let ids = convert::message_ids(&ids);
                    let delay = Duration::from_millis(delay_ms);
                    // The reason travels with the message if it is dead-lettered; an empty one
                    // means the consumer gave none.
                    done(if error.is_empty() {
                        attached.consumer.nack(&ids, requeue, delay)
                    } else {
                        attached
                            .consumer
                            .nack_with_error(&ids, requeue, delay, &error)
                    })
                }
                None => no_such_subscription(subscription),
            },
            Request::ListGroups { topic } => Response::Groups(
                broker
                    .groups(topic.as_deref())
                    .into_iter()
                    .map(convert::group_info)
                    .collect(),
            ),
            Request::DescribeGroup { topic, group } => match broker.group(&topic, &group) {
                Ok(info) => Response::Groups(vec![convert::group_info(info)]),
                Err(error) => core_error(&error),
            },
            Request::ResetGroup { topic, group, to } => {
                done(broker.reset_group(&topic, &group, convert::start_position(to)))
            }
        };
        Reply::Now(response)
    }

    fn hello(&mut self, min_version: u16, max_version: u16, client_name: &str) -> Reply {
        if self.greeted {
            return Reply::Now(Response::error_with(
                ErrorCode::InvalidArgument,
                "the handshake already happened on this connection",
            ));
        }
        let Some(version) = weir_proto::negotiate_version(min_version, max_version) else {
            return Reply::Close(Response::error_with(
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol versions {}..={}; the client asked for {min_version}..={max_version}",
                    weir_proto::MIN_PROTOCOL_VERSION,
                    weir_proto::PROTOCOL_VERSION
                ),
            ));
        };
        self.greeted = true;
        tracing::debug!(client = client_name, version, "handshake");
        Reply::Now(Response::HelloOk {
            version,
            server_name: concat!("weir ", env!("CARGO_PKG_VERSION")).to_owned(),
            // A limit above 4 GiB cannot be expressed and is not one in practice: the length
            // prefix caps frames there anyway.
            max_frame_bytes: u32::try_from(self.limits.max_frame_bytes).unwrap_or(u32::MAX),
        })
    }

    async fn subscribe(
        &mut self,
        correlation_id: u64,
        topic: &str,
        group: &str,
        options: SubscribeOptions,
    ) -> Reply {
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
            return Reply::Now(Response::error_with(
                ErrorCode::Quota,
                format!(
                    "a connection holds at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} subscriptions"
                ),
            ));
        }
        let subscription = self.next_subscription;
        let Some(next) = subscription.checked_add(1) else {
            return Reply::Now(Response::error_with(
                ErrorCode::Quota,
                "this connection has used up its subscription ids; reconnect",
            ));
        };
        // Stream subscriptions have no unacked limit in the core: the fetch size (and the
        // writer channel behind it) is their flow control.
        let fetch_max = options.prefetch.clamp(1, delivery::MAX_FETCH) as usize;
        let consumer = match self.broker.subscribe(topic, group, options).await {
            Ok(consumer) => Arc::new(consumer),
            Err(error) => return Reply::Now(core_error(&error)),
        };
        self.next_subscription = next;
        let mut scratch = bytes::BytesMut::new();
        if self
            .outgoing
            .send_response(
                &mut scratch,
                correlation_id,
                &Response::Subscribed { subscription },
            )
            .await
            .is_err()
        {
            return Reply::WriterGone;
        }
        let delivery = tokio::spawn(delivery::deliver(
            subscription,
            consumer.clone(),
            self.outgoing.clone(),
            fetch_max,
            self.limits.max_frame_bytes,
        ));
        self.subscriptions
            .insert(subscription, Attached { consumer, delivery });
        Reply::Sent
    }

    /// Ends every subscription of the connection and waits until their delivery tasks are
    /// gone, so their consumers are dropped (and their unacked messages released to the
    /// group) before this returns.
    pub(crate) async fn close(&mut self) {
        for (_, attached) in self.subscriptions.drain() {
            detach(attached).await;
        }
    }
}

/// Stops a subscription's delivery task and drops the consumer. Dropping the last `Arc` of a
/// `Consumer` is what hands its unacked deliveries back to the group.
async fn detach(attached: Attached) {
    let Attached { consumer, delivery } = attached;
    delivery.abort();
    // The task's result is irrelevant (it was cancelled or ended on its own); waiting is what
    // guarantees its clone of the consumer is dropped by now.
    let _ = delivery.await;
    drop(consumer);
}
