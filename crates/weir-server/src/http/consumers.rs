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
//! subscription or topic is deleted through this API, when the core reports it closed (deleted
//! through another front end), or when no HTTP client used it for longer than its
//! subscription's visibility timeout plus a minute ([`ConsumerRegistry::evict_idle`]): an idle
//! HTTP consumer must not keep a stream subscription's partitions from other consumers
//! forever, and by then every delivery it handed out has timed out anyway. The next use
//! attaches a fresh one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// An idle consumer is kept this much longer than its subscription's visibility timeout.
pub const IDLE_GRACE: Duration = Duration::from_secs(60);

/// A registered consumer and when an HTTP request last used it.
struct Entry {
    consumer: Arc<Consumer>,
    last_used: Instant,
    /// Dropped once unused this long.
    idle_limit: Duration,
}

/// One shared consumer per `(topic, subscription)`.
pub struct ConsumerRegistry {
    broker: Broker,
    /// A std mutex: held only to look up or insert, never across an await.
    consumers: Mutex<HashMap<(String, String), Entry>>,
}

impl ConsumerRegistry {
    pub fn new(broker: Broker) -> ConsumerRegistry {
        ConsumerRegistry {
            broker,
            consumers: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
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
        if let Some(entry) = self.map().get_mut(&key) {
            entry.last_used = Instant::now();
            return Ok(entry.consumer.clone());
        }
        // Join an existing subscription with its own kind; a stream subscription served over
        // HTTP is read in order by this one consumer.
        let existing = match self.broker.group(topic, subscription) {
            Ok(info) => Some(info),
            Err(Error::NoSuchSubscription { .. })
                if matches!(attach, Attach::CreateQueue { .. }) =>
            {
                None
            }
            Err(error) => return Err(error),
        };
        let kind = existing
            .as_ref()
            .map_or(SubscriptionKind::Queue, |info| info.kind);
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
        let visibility_ms = match existing {
            Some(info) => info.ack_timeout_ms,
            None => self.broker.group(topic, subscription)?.ack_timeout_ms,
        };
        let entry = Entry {
            consumer,
            last_used: Instant::now(),
            idle_limit: Duration::from_millis(visibility_ms).saturating_add(IDLE_GRACE),
        };
        // Another request may have attached one meanwhile: keep the first, so that there is
        // one HTTP consumer per subscription (ours is dropped, leaving at once).
        Ok(self.map().entry(key).or_insert(entry).consumer.clone())
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
            .is_some_and(|entry| Arc::ptr_eq(&entry.consumer, consumer))
        {
            map.remove(&key);
        }
    }

    /// Drops the consumers no request used for longer than their idle limit, as of `now`.
    /// Returns how many. A request still holding one (a long poll) keeps it alive until it
    /// ends.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let mut map = self.map();
        let before = map.len();
        map.retain(|_, entry| now.saturating_duration_since(entry.last_used) <= entry.idle_limit);
        before - map.len()
    }

    /// Drops every consumer (the server is stopping).
    pub fn clear(&self) {
        self.map().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::BrokerConfig;

    #[tokio::test]
    async fn a_consumer_unused_past_its_visibility_and_grace_is_dropped() {
        let directory = tempfile::tempdir().expect("a temporary directory");
        let broker = Broker::open(BrokerConfig::new(directory.path()))
            .await
            .expect("the broker opens");
        let registry = ConsumerRegistry::new(broker.clone());
        let attach = Attach::CreateQueue {
            visibility: Some(Duration::from_secs(10)),
        };
        registry
            .get("jobs", "workers", attach)
            .await
            .expect("attached");
        let attached = Instant::now();
        let consumers = || {
            broker
                .group("jobs", "workers")
                .map(|group| group.consumers)
                .ok()
        };
        assert_eq!(consumers(), Some(1));
        assert_eq!(registry.evict_idle(attached + Duration::from_secs(60)), 0);
        assert_eq!(consumers(), Some(1));
        assert_eq!(registry.evict_idle(attached + Duration::from_secs(71)), 1);
        assert_eq!(consumers(), Some(0), "the consumer left the subscription");
        broker.shutdown().await;
    }
}
