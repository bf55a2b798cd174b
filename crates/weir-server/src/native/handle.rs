//! The session of one native connection, and the one `match` over [`Request`].
//!
//! [`Session::handle`] is the only place the native front end touches the broker: one
//! variant, one `Broker` (or `Consumer`) call, one response. It also holds what a connection
//! remembers between requests: whether the handshake happened, the subscriptions it opened, by
//! the ids it gave them, and the producer groups it checks transactions for. It never reads or
//! writes the socket itself; responses go back to `connection.rs`, or, for deliveries and
//! check-backs, through the writer channel.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use weir_core::{Broker, Consumer, ScheduleRequest, SubscribeOptions, TopicConfig};
use weir_proto::{ErrorCode, FRAME_HEADER_LEN, Request, Response, ScheduledSelector, Start};

use super::connection::{Limits, Outgoing, Pending};
use super::convert;
use super::{checker, delivery};
use crate::error::public_error;

/// Most subscriptions one connection may hold open at once: each runs a task and holds
/// deliveries, so a single peer must not open them without bound.
pub(crate) const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 1024;

/// Most producer groups one connection may check transactions for: each runs a task and
/// holds a registration in the broker.
pub(crate) const MAX_CHECKER_GROUPS_PER_CONNECTION: usize = 64;

/// Most entries one listing request may ask for (dead letters, redrive, scheduled batches),
/// as over HTTP: a listing is read whole into memory before it is answered.
pub(crate) const MAX_LISTED: u32 = 1000;

/// Room left in a frame for the fixed parts of a `ScheduledMessage` besides the names it
/// carries (ids, times, counts, tags), with margin.
const SCHEDULED_INFO_BYTES: usize = 64;

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
    /// The protocol version agreed in `Hello`.
    version: u16,
    subscriptions: HashMap<u32, Attached>,
    /// The id the next subscription gets. Ids are never reused on a connection, so a late ack
    /// for a closed subscription cannot land on a newer one.
    next_subscription: u32,
    /// The task forwarding check-backs, per producer group this connection checks for.
    checkers: HashMap<String, tokio::task::JoinHandle<()>>,
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

/// Refuses a listing size outside `1..=MAX_LISTED` (0 would answer nothing, and more would
/// be read whole into memory), with the same bounds as the HTTP API.
fn check_listed(what: &str, count: u32) -> Result<usize, Response> {
    if (1..=MAX_LISTED).contains(&count) {
        Ok(count as usize)
    } else {
        Err(Response::error_with(
            ErrorCode::InvalidArgument,
            format!("{what} is 1 to {MAX_LISTED}, not {count}"),
        ))
    }
}

/// The longest prefix of `items` whose encoded sizes add up to at most `budget` bytes, so an
/// answer carrying payloads stays within one frame. The caller says how many were left out
/// (a count in the answer, or "ask again").
fn fit<T>(mut items: Vec<T>, budget: usize, encoded_len: impl Fn(&T) -> usize) -> Vec<T> {
    let mut used = 0;
    let fitting = items
        .iter()
        .take_while(|item| {
            used += encoded_len(item);
            used <= budget
        })
        .count();
    items.truncate(fitting);
    items
}

/// What a nack asks for, beside its ids.
struct Nack {
    requeue: bool,
    delay: Duration,
    error: String,
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
            version: weir_proto::MIN_PROTOCOL_VERSION,
            subscriptions: HashMap::new(),
            next_subscription: 1,
            checkers: HashMap::new(),
        }
    }

    /// Whether the handshake happened.
    pub(crate) fn greeted(&self) -> bool {
        self.greeted
    }

    /// Whether the connection waits on the broker rather than on its peer: an open
    /// subscription waits for messages and a checker for check-backs, however long the peer
    /// stays quiet, so such a connection is never idle.
    pub(crate) fn awaits_broker(&self) -> bool {
        !self.subscriptions.is_empty() || !self.checkers.is_empty()
    }

    /// Runs one request. Only a publish (plain, reporting duplicates, or through an exchange)
    /// is deferred; everything else is answered before the next request is read, which keeps
    /// a connection's other requests in order: a `SendHalf` is stored before the `Commit`
    /// pipelined after it runs, and a delayed publish before a cancel by its business key.
    #[allow(
        clippy::too_many_lines,
        reason = "the one match over Request: one short arm per operation, by design"
    )]
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
            Request::PublishReportingDuplicates {
                topic,
                partition,
                batch,
            } => {
                let broker = broker.clone();
                return Reply::Later(Box::pin(async move {
                    let response = match broker.publish(&topic, partition, batch).await {
                        Ok(confirm) => convert::published_with_duplicates(confirm),
                        Err(error) => core_error(&error),
                    };
                    (correlation_id, response)
                }));
            }
            Request::PublishToExchange {
                exchange,
                routing_key,
                mandatory,
                batch,
            } => {
                let broker = broker.clone();
                return Reply::Later(Box::pin(async move {
                    let routed = broker
                        .publish_to_exchange(&exchange, &routing_key, batch, mandatory)
                        .await;
                    let response = match routed {
                        Ok(confirm) => convert::routed(confirm),
                        Err(error) => core_error(&error),
                    };
                    (correlation_id, response)
                }));
            }
            Request::PublishDelayed {
                topic,
                partition,
                when,
                business_key,
                batch,
            } => {
                // A delay counts from now on the broker's clock, whatever the producer's says.
                let deliver_at_ms = convert::deliver_at_ms(when, broker.config().clock.now_ms());
                let request = ScheduleRequest {
                    topic,
                    partition,
                    batch,
                    deliver_at_ms,
                    business_key,
                };
                match broker.schedule(vec![request]).await {
                    Ok(mut scheduled) => match scheduled.pop() {
                        Some(scheduled) => Response::Scheduled {
                            id: scheduled.id,
                            deliver_at_ms: scheduled.deliver_at_ms,
                        },
                        None => Response::error_with(
                            ErrorCode::Internal,
                            "the broker scheduled nothing for one batch",
                        ),
                    },
                    Err(error) => core_error(&error),
                }
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
                    ..SubscribeOptions::default()
                };
                return self
                    .subscribe(correlation_id, &topic, &group, options)
                    .await;
            }
            Request::SubscribeWithSettings {
                topic,
                group,
                mode,
                start,
                prefetch,
                ack_timeout_ms,
                settings,
            } => {
                let options = SubscribeOptions {
                    kind: convert::subscription_kind(mode),
                    start: convert::start_position(start),
                    prefetch,
                    ack_timeout: ack_timeout_ms.map(Duration::from_millis),
                    queue: convert::queue_settings(settings),
                };
                return self
                    .subscribe(correlation_id, &topic, &group, options)
                    .await;
            }
            Request::Unsubscribe { subscription } => {
                match self.subscriptions.remove(&subscription) {
                    Some(attached) => {
                        detach(attached, Goodbye::Clean).await;
                        Response::Ok
                    }
                    None => no_such_subscription(subscription),
                }
            }
            // Settlements take effect at once and are answered once durable (a save shared
            // with every settlement meanwhile); the connection keeps reading while they wait.
            Request::Ack { subscription, ids } => {
                return self.settle(correlation_id, subscription, ids, None, false);
            }
            Request::AckReporting { subscription, ids } => {
                return self.settle(correlation_id, subscription, ids, None, true);
            }
            Request::Nack {
                subscription,
                ids,
                requeue,
                delay_ms,
                error,
            } => {
                let nack = Nack {
                    requeue,
                    delay: Duration::from_millis(delay_ms),
                    error,
                };
                return self.settle(correlation_id, subscription, ids, Some(nack), false);
            }
            Request::NackReporting {
                subscription,
                ids,
                requeue,
                delay_ms,
                error,
            } => {
                let nack = Nack {
                    requeue,
                    delay: Duration::from_millis(delay_ms),
                    error,
                };
                return self.settle(correlation_id, subscription, ids, Some(nack), true);
            }
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
            Request::DeleteGroup { topic, group } => {
                done(broker.delete_group(&topic, &group).await)
            }
            Request::ResetGroup { topic, group, to } => done(
                broker
                    .reset_group(&topic, &group, convert::start_position(to))
                    .await,
            ),
            Request::Release { subscription, ids } => match self.subscriptions.get(&subscription) {
                Some(attached) => {
                    let consumer = attached.consumer.clone();
                    return Reply::Later(Box::pin(async move {
                        let released = consumer.release(&convert::message_ids(&ids)).await;
                        (correlation_id, done(released))
                    }));
                }
                None => no_such_subscription(subscription),
            },
            Request::CreateExchange {
                name,
                kind,
                alternate_topic,
            } => match broker
                .create_exchange(&name, convert::exchange_kind(kind), alternate_topic)
                .await
            {
                Ok(exchange) => Response::Exchange(convert::exchange_info(exchange)),
                Err(error) => core_error(&error),
            },
            Request::DeleteExchange { name } => done(broker.delete_exchange(&name).await),
            Request::ListExchanges => Response::Exchanges(
                broker
                    .exchanges()
                    .into_iter()
                    .map(convert::exchange_info)
                    .collect(),
            ),
            Request::Bind { exchange, binding } => {
                match broker.bind(&exchange, convert::binding(binding)).await {
                    Ok(exchange) => Response::Exchange(convert::exchange_info(exchange)),
                    Err(error) => core_error(&error),
                }
            }
            Request::Unbind {
                exchange,
                topic,
                key,
            } => match broker.unbind(&exchange, &topic, key.as_deref()).await {
                Ok(exchange) => Response::Exchange(convert::exchange_info(exchange)),
                Err(error) => core_error(&error),
            },
            Request::Read {
                topic,
                partition,
                from,
                max,
            } => match check_listed("max", max) {
                Ok(max) => self.read(&topic, partition, from, max),
                Err(refused) => refused,
            },
            Request::ListDeadLetterQueues => Response::DeadLetterQueues(
                broker
                    .dead_letter_queues()
                    .into_iter()
                    .map(convert::dead_letter_queue_info)
                    .collect(),
            ),
            Request::ListDeadLetters { topic, max } => match check_listed("max", max) {
                Ok(max) => match broker.dead_letters(&topic, max) {
                    Ok(letters) => {
                        let letters = letters.into_iter().map(convert::delivery).collect();
                        // The list's count follows the header.
                        let budget = self
                            .limits
                            .max_frame_bytes
                            .saturating_sub(FRAME_HEADER_LEN + 4);
                        Response::DeadLetters(fit(
                            letters,
                            budget,
                            weir_proto::Delivery::encoded_len,
                        ))
                    }
                    Err(error) => core_error(&error),
                },
                Err(refused) => refused,
            },
            Request::Redrive {
                topic,
                target,
                ids,
                max,
            } => match check_listed("max", max) {
                Ok(max) => {
                    let ids = ids.as_deref().map(convert::message_ids);
                    match broker
                        .redrive(&topic, target.as_deref(), ids.as_deref(), max)
                        .await
                    {
                        Ok(count) => Response::Count { count },
                        Err(error) => core_error(&error),
                    }
                }
                Err(refused) => refused,
            },
            Request::PurgeDeadLetters { topic } => match broker.purge_dead_letters(&topic).await {
                Ok(count) => Response::Count { count },
                Err(error) => core_error(&error),
            },
            Request::ListScheduled {
                topic,
                after,
                limit,
            } => match check_listed("limit", limit) {
                Ok(limit) => match broker.scheduled(topic.as_deref(), after, limit) {
                    Ok(entries) => Response::ScheduledList(
                        entries.into_iter().map(convert::scheduled_info).collect(),
                    ),
                    Err(error) => core_error(&error),
                },
                Err(refused) => refused,
            },
            Request::ShowScheduled { id } => match broker.scheduled_message(id) {
                Ok((scheduled, records)) => {
                    let info = convert::scheduled_info(scheduled);
                    let budget = self.limits.max_frame_bytes.saturating_sub(
                        FRAME_HEADER_LEN
                            + SCHEDULED_INFO_BYTES
                            + info.topic.len()
                            + info.business_key.as_ref().map_or(0, String::len),
                    );
                    let messages = records.into_iter().map(convert::message).collect();
                    Response::ScheduledMessage {
                        info,
                        messages: fit(messages, budget, weir_proto::Message::encoded_len),
                    }
                }
                Err(error) => core_error(&error),
            },
            Request::CancelScheduled { selector } => {
                // The core cancels by id; a business key is looked up first.
                let id = match selector {
                    ScheduledSelector::Id(id) => Ok(id),
                    ScheduledSelector::BusinessKey(key) => broker.scheduled_id(&key),
                };
                match id {
                    Ok(id) => match broker.cancel_scheduled(id).await {
                        Ok(cancelled) => {
                            Response::ScheduledList(vec![convert::scheduled_info(cancelled)])
                        }
                        Err(error) => core_error(&error),
                    },
                    Err(error) => core_error(&error),
                }
            }
            Request::Reschedule { id, when } => {
                let deliver_at_ms = convert::deliver_at_ms(when, broker.config().clock.now_ms());
                match broker.reschedule(id, deliver_at_ms).await {
                    Ok(moved) => Response::Scheduled {
                        id: moved.id,
                        deliver_at_ms: moved.deliver_at_ms,
                    },
                    Err(error) => core_error(&error),
                }
            }
            Request::BeginTransaction {
                producer_group,
                timeout_ms,
            } => match broker
                .begin_transaction(&producer_group, timeout_ms.map(Duration::from_millis))
            {
                Ok(transaction) => Response::TransactionBegun { transaction },
                Err(error) => core_error(&error),
            },
            Request::SendHalf {
                transaction,
                topic,
                partition,
                batch,
            } => done(
                broker
                    .send_half(transaction, &topic, partition, batch)
                    .await,
            ),
            Request::CommitTransaction { transaction } => {
                match broker.commit_transaction(transaction).await {
                    Ok(targets) => convert::transaction_committed(targets),
                    Err(error) => core_error(&error),
                }
            }
            Request::RollbackTransaction { transaction } => {
                done(broker.rollback_transaction(transaction).await)
            }
            Request::ListTransactions => match broker.transactions() {
                Ok(transactions) => Response::Transactions(
                    transactions
                        .into_iter()
                        .map(convert::transaction_info)
                        .collect(),
                ),
                Err(error) => core_error(&error),
            },
            Request::RegisterTransactionChecker { producer_group } => {
                self.register_checker(producer_group)
            }
            Request::ResolveTransaction {
                transaction,
                decision,
            } => done(
                broker
                    .resolve_transaction(transaction, convert::decision(decision))
                    .await,
            ),
            Request::ClaimKey {
                key,
                holder,
                ttl_ms,
            } => match broker.claim_key(&key, &holder, Duration::from_millis(ttl_ms)) {
                Ok(claim) => Response::Claimed(convert::claim_outcome(claim)),
                Err(error) => core_error(&error),
            },
            Request::CompleteKey {
                key,
                holder,
                ttl_ms,
            } => done(broker.complete_key(&key, &holder, Duration::from_millis(ttl_ms))),
            Request::ReleaseKey { key, holder } => done(broker.release_key(&key, &holder)),
            Request::Stats => Response::Stats(convert::stats(broker.stats())),
            Request::Alerts => Response::Alerts(convert::alerts(broker.alerts(), self.version)),
        };
        Reply::Now(response)
    }

    /// Acks (`nack` `None`) or nacks deliveries of one of this connection's subscriptions,
    /// answering once the settlement is durable: `Ok`, or with `report` what happened to each
    /// id (`Settled`).
    fn settle(
        &self,
        correlation_id: u64,
        subscription: u32,
        ids: Vec<weir_proto::MessageId>,
        nack: Option<Nack>,
        report: bool,
    ) -> Reply {
        let Some(attached) = self.subscriptions.get(&subscription) else {
            return Reply::Now(no_such_subscription(subscription));
        };
        let consumer = attached.consumer.clone();
        Reply::Later(Box::pin(async move {
            let core_ids = convert::message_ids(&ids);
            let settled = match nack {
                None => consumer.ack(&core_ids).await,
                // The reason travels with the message if it is dead-lettered; an empty one
                // means the consumer gave none.
                Some(nack) if nack.error.is_empty() => {
                    consumer.nack(&core_ids, nack.requeue, nack.delay).await
                }
                Some(nack) => {
                    consumer
                        .nack_with_error(&core_ids, nack.requeue, nack.delay, &nack.error)
                        .await
                }
            };
            let response = match settled {
                Ok(settlements) if report => convert::settled(&ids, &settlements),
                Ok(_) => Response::Ok,
                Err(error) => core_error(&error),
            };
            (correlation_id, response)
        }))
    }

    /// Reads a partition outside any group: as many messages as fit in one frame. One message
    /// too large for a frame is refused rather than skipped or answered with nothing (a reader
    /// following `next_offset` would ask for it again forever).
    fn read(&self, topic: &str, partition: u32, from: Start, max: usize) -> Response {
        let (records, next_offset) =
            match self
                .broker
                .read_from(topic, partition, convert::start_position(from), max)
            {
                Ok(read) => read,
                Err(error) => return core_error(&error),
            };
        let first_offset = records.first().map(|record| record.offset);
        let messages: Vec<weir_proto::Delivery> = records
            .into_iter()
            .map(|record| weir_proto::Delivery::from_record(partition, 0, record))
            .collect();
        // `next_offset` and the list's count precede the messages.
        let budget = self
            .limits
            .max_frame_bytes
            .saturating_sub(FRAME_HEADER_LEN + 8 + 4);
        let messages = fit(messages, budget, weir_proto::Delivery::encoded_len);
        let next_offset = match (messages.last(), first_offset) {
            (Some(last), _) => last.offset + 1,
            (None, None) => next_offset,
            (None, Some(offset)) => {
                return Response::error_with(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the message at offset {offset} of partition {partition} of '{topic}' does not fit in one frame of {} bytes",
                        self.limits.max_frame_bytes
                    ),
                );
            }
        };
        Response::Messages {
            next_offset,
            messages,
        }
    }

    /// Makes this connection a checker of `producer_group`: the broker's questions about the
    /// group's overdue transactions are pushed to the peer until the connection closes.
    /// Registering a group twice keeps the one registration, so the peer is not asked twice.
    fn register_checker(&mut self, producer_group: String) -> Response {
        if self.checkers.contains_key(&producer_group) {
            return Response::Ok;
        }
        if self.checkers.len() >= MAX_CHECKER_GROUPS_PER_CONNECTION {
            return Response::error_with(
                ErrorCode::Quota,
                format!(
                    "a connection checks transactions for at most {MAX_CHECKER_GROUPS_PER_CONNECTION} producer groups"
                ),
            );
        }
        let checker = self.broker.register_transaction_checker(&producer_group);
        let task = tokio::spawn(checker::forward_checks(
            checker,
            producer_group.clone(),
            self.outgoing.clone(),
        ));
        self.checkers.insert(producer_group, task);
        Response::Ok
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
        self.version = version;
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
    /// group) before this returns. Ends the connection's checker registrations the same way,
    /// so the broker stops asking a producer that left.
    pub(crate) async fn close(&mut self) {
        for (_, attached) in self.subscriptions.drain() {
            detach(attached, Goodbye::Lost).await;
        }
        for (_, task) in self.checkers.drain() {
            task.abort();
            // Waiting is what guarantees the checker (and its writer handle) is dropped.
            let _ = task.await;
        }
    }
}

/// How a subscription of this connection ends: an explicit unsubscribe gives back what it holds
/// uncounted; a lost connection counts it (a consumer that crashes on a message must not get
/// it forever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goodbye {
    Clean,
    Lost,
}

/// Stops a subscription's delivery task and drops the consumer. Dropping the last `Arc` of a
/// `Consumer` is what hands its unacked deliveries back to the group.
async fn detach(attached: Attached, goodbye: Goodbye) {
    let Attached { consumer, delivery } = attached;
    delivery.abort();
    // The task's result is irrelevant (it was cancelled or ended on its own); waiting is what
    // guarantees its clone of the consumer is dropped by now.
    let _ = delivery.await;
    if goodbye == Goodbye::Clean {
        consumer.close();
    }
    drop(consumer);
}
