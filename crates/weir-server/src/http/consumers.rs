//! The consumers behind HTTP fetches. HTTP has no connection to hang a consumer on, so the
//! front end keeps one core [`Consumer`] per subscription, shared by every HTTP client that
//! fetches from it, and attached on first use.
//!
//! Why this is enough: a core queue subscription already keeps each delivered message in
//! flight until it is acked or nacked, by whoever holds its id, and redelivers it after the
//! subscription's ack timeout. So a delivery fetched over HTTP stays invisible to other
//! fetches until it is acked (by delivery id, from any client) or until that timeout passes —
//! which is exactly a visibility timeout. The subscription's ack timeout *is* its HTTP
//! visibility timeout; the first fetch that creates a subscription may set it
//! (`visibility_ms`), later fetches are told the value in force. No timers live here.
//!
//! The registry must not decide anything about messages: it only owns the consumers'
//! lifetimes. A consumer is dropped (releasing its unacked deliveries for redelivery) when its
//! subscription or topic is deleted through this API, or when the core reports it closed
//! (deleted through another front end); the next use attaches a fresh one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weir_core::{Broker, Consumer, Error, SubscribeOptions, SubscriptionKind};

/// Most deliveries the shared HTTP consumer of one subscription holds unacked. Past it,
/// fetches return nothing until acks, nacks or visibility timeouts free room: a bound on what
/// forgetful HTTP clients can pin in memory.
pub const HTTP_PREFETCH: u32 = 10_000;

/// How a use of the registry may attach a consumer it does not have yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attach {
    /// Create a queue subscription if there is none, with this ack (visibility) timeout.
    CreateQueue { visibility: Option<Duration> },
    /// The subscription must exist (acks and nacks never create one).
    Existing,
}

/// One shared consumer per `(topic, subscription)`.
pub struct ConsumerRegistry {
    broker: Broker,
    /// A std mutex: held only to look up or insert, never across an await.
    consumers: Mutex<HashMap<(String, String), Arc<Consumer>>>,
}

impl ConsumerRegistry {
    pub fn new(broker: Broker) -> ConsumerRegistry {
        ConsumerRegistry {
            broker,
            consumers: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Consumer>>> {
        // The map holds no invariant a panicking holder could break half-way.
        self.consumers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The consumer of `subscription` on `topic`, attached now if needed.
    pub async fn get(
        &self,
        topic: &str,
        subscription: &str,
        attach: Attach,
    ) -> Result<Arc<Consumer>, Error> {
        let key = (topic.to_owned(), subscription.to_owned());
        if let Some(consumer) = self.map().get(&key) {
            return Ok(consumer.clone());
        }
        // Join an existing subscription with its own kind; a stream subscription served over
        // HTTP is read in order by this one consumer.
        let kind = match self.broker.group(topic, subscription) {
            Ok(info) => info.kind,
            Err(Error::NoSuchSubscription { .. })
                if matches!(attach, Attach::CreateQueue { .. }) =>
            {
                SubscriptionKind::Queue
            }
            Err(error) => return Err(error),
        };
        let options = SubscribeOptions {
            kind,
            prefetch: HTTP_PREFETCH,
            ack_timeout: match attach {
                Attach::CreateQueue { visibility } => visibility,
                Attach::Existing => None,
            },
            ..SubscribeOptions::default()
        };
        let consumer = Arc::new(self.broker.subscribe(topic, subscription, options).await?);
        // Another request may have attached one meanwhile: keep the first, so that there is
        // one HTTP consumer per subscription (ours is dropped, leaving at once).
        Ok(self.map().entry(key).or_insert(consumer).clone())
    }

    /// Drops the consumer of `subscription` on `topic`, if there is one.
    pub fn forget(&self, topic: &str, subscription: &str) {
        self.map()
            .remove(&(topic.to_owned(), subscription.to_owned()));
    }

    /// Drops every consumer of `topic`.
    pub fn forget_topic(&self, topic: &str) {
        self.map().retain(|(name, _), _| name != topic);
    }

    /// Drops `consumer` if it is still the registered one: the core closed its subscription.
    pub fn forget_closed(&self, consumer: &Arc<Consumer>) {
        let mut map = self.map();
        let key = (consumer.topic().to_owned(), consumer.group().to_owned());
        if map
            .get(&key)
            .is_some_and(|registered| Arc::ptr_eq(registered, consumer))
        {
            map.remove(&key);
        }
    }

    /// Drops every consumer (the server is stopping).
    pub fn clear(&self) {
        self.map().clear();
    }
}
