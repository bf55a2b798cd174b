//! What the broker remembers besides the logs: topics, subscriptions, committed offsets and
//! ack state, in the metadata store. Owns the table names and key encodings.
//!
//! Keys are `topic \0 group \0 partition(u32 big-endian)`, so a prefix scan finds everything of
//! a topic or a subscription; names never contain `\0` (checked by `valid_name`).

use serde::{Deserialize, Serialize};
use weir_storage::{MetaOp, MetaStore};

use crate::alerts::AlertRule;
use crate::config::{QueueSettings, StartPosition, SubscriptionKind, TopicConfig};
use crate::error::{Error, Result};
use crate::exchange::Exchange;

const TOPICS: &str = "topics";
const EXCHANGES: &str = "exchanges";
const IDEMPOTENCY_KEYS: &str = "idempotency_keys";
/// One entry, `rules`: the alert rules as last edited through the API.
const ALERT_RULES: &str = "alert_rules";
const SUBSCRIPTIONS: &str = "subscriptions";
/// Per partition of a subscription: the stream's committed offset or the queue's ack state.
const POSITIONS: &str = "positions";
/// Per queue subscription that stores dead letters: its dead-letter mark (`DeadLetterMark`).
const DEAD_LETTER_MARKS: &str = "dead_letter_marks";

/// Where to look for a queue subscription's dead letters whose settlement may not be durable
/// (`broker/dead_letters.rs`): offsets of its dead-letter topic's partitions at or before
/// every such letter.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetterMark {
    pub topic: String,
    pub group: String,
    pub ends: Vec<u64>,
}

/// A subscription's settings as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub topic: String,
    pub group: String,
    pub kind: SubscriptionKind,
    pub start: StartPosition,
    pub ack_timeout_ms: u64,
    #[serde(default)]
    pub queue: QueueSettings,
}

impl SubscriptionRecord {
    /// Where this subscription's dead letters go.
    pub fn dead_letter_topic(&self) -> String {
        self.queue
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.{}.dlq", self.topic, self.group))
    }
}

/// Names of topics and subscriptions: 1 to 200 of `A-Z a-z 0-9 . _ -`, so they are safe as
/// directory names and as key parts.
pub fn valid_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{kind} name '{name}' must be 1 to 200 characters of A-Z a-z 0-9 . _ -"
        )))
    }
}

pub fn subscription_key(topic: &str, group: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(topic.len() + group.len() + 1);
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key.extend_from_slice(group.as_bytes());
    key
}

pub fn position_key(topic: &str, group: &str, partition: u32) -> Vec<u8> {
    let mut key = subscription_key(topic, group);
    key.push(0);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

fn topic_prefix(topic: &str) -> Vec<u8> {
    let mut key = topic.as_bytes().to_vec();
    key.push(0);
    key
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("catalog records are plain data that always serialize")
}

fn decode<T: for<'a> Deserialize<'a>>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|error| Error::Storage(format!("unreadable {what} in the catalog: {error}")))
}

pub(crate) struct Catalog {
    meta: MetaStore,
}

impl Catalog {
    pub fn new(meta: MetaStore) -> Catalog {
        Catalog { meta }
    }

    /// The store itself, for modules that own their own tables (the schedule).
    pub fn meta(&self) -> &MetaStore {
        &self.meta
    }

    pub fn topics(&self) -> Result<Vec<(String, TopicConfig)>> {
        self.meta
            .scan(TOPICS, b"")?
            .into_iter()
            .map(|(key, value)| {
                let name = String::from_utf8(key)
                    .map_err(|_| Error::Storage("topic name in the catalog is not UTF-8".into()))?;
                Ok((name, decode("topic config", &value)?))
            })
            .collect()
    }

    pub fn save_topic(&self, name: &str, config: &TopicConfig) -> Result<()> {
        let op = MetaOp::Put {
            table: TOPICS,
            key: name.as_bytes().to_vec(),
            value: encode(config),
        };
        Ok(self.meta.write(&[op], true)?)
    }

    /// Forgets a topic and every subscription and position on it.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let mut ops = vec![MetaOp::Delete {
            table: TOPICS,
            key: name.as_bytes().to_vec(),
        }];
        for table in [SUBSCRIPTIONS, POSITIONS, DEAD_LETTER_MARKS] {
            for (key, _) in self.meta.scan(table, &topic_prefix(name))? {
                ops.push(MetaOp::Delete { table, key });
            }
        }
        Ok(self.meta.write(&ops, true)?)
    }

    pub fn exchanges(&self) -> Result<Vec<Exchange>> {
        self.meta
            .scan(EXCHANGES, b"")?
            .into_iter()
            .map(|(_, value)| decode("exchange", &value))
            .collect()
    }

    /// Saves an exchange with its bindings (one record, so bindings change atomically).
    pub fn save_exchange(&self, exchange: &Exchange) -> Result<()> {
        let op = MetaOp::Put {
            table: EXCHANGES,
            key: exchange.name.as_bytes().to_vec(),
            value: encode(exchange),
        };
        Ok(self.meta.write(&[op], true)?)
    }

    pub fn delete_exchange(&self, name: &str) -> Result<()> {
        let op = MetaOp::Delete {
            table: EXCHANGES,
            key: name.as_bytes().to_vec(),
        };
        Ok(self.meta.write(&[op], true)?)
    }

    pub fn subscriptions(&self) -> Result<Vec<SubscriptionRecord>> {
        self.meta
            .scan(SUBSCRIPTIONS, b"")?
            .into_iter()
            .map(|(_, value)| decode("subscription", &value))
            .collect()
    }

    pub fn save_subscription(&self, record: &SubscriptionRecord) -> Result<()> {
        let op = MetaOp::Put {
            table: SUBSCRIPTIONS,
            key: subscription_key(&record.topic, &record.group),
            value: encode(record),
        };
        Ok(self.meta.write(&[op], true)?)
    }

    pub fn delete_subscription(&self, topic: &str, group: &str) -> Result<()> {
        let mut ops = vec![
            MetaOp::Delete {
                table: SUBSCRIPTIONS,
                key: subscription_key(topic, group),
            },
            MetaOp::Delete {
                table: DEAD_LETTER_MARKS,
                key: subscription_key(topic, group),
            },
        ];
        let mut prefix = subscription_key(topic, group);
        prefix.push(0);
        for (key, _) in self.meta.scan(POSITIONS, &prefix)? {
            ops.push(MetaOp::Delete {
                table: POSITIONS,
                key,
            });
        }
        Ok(self.meta.write(&ops, true)?)
    }

    /// The alert rules saved by an edit, if there ever was one.
    pub fn alert_rules(&self) -> Result<Option<Vec<AlertRule>>> {
        self.meta
            .get(ALERT_RULES, b"rules")?
            .map(|bytes| decode("alert rules", &bytes))
            .transpose()
    }

    pub fn save_alert_rules(&self, rules: &[AlertRule]) -> Result<()> {
        let op = MetaOp::Put {
            table: ALERT_RULES,
            key: b"rules".to_vec(),
            value: encode(&rules),
        };
        Ok(self.meta.write(&[op], true)?)
    }

    pub fn idempotency_key<T: for<'a> Deserialize<'a>>(&self, key: &str) -> Result<Option<T>> {
        self.meta
            .get(IDEMPOTENCY_KEYS, key.as_bytes())?
            .map(|bytes| decode("idempotency key", &bytes))
            .transpose()
    }

    /// Saves (`Some`) or forgets (`None`) an idempotency key; `durable` waits for the disk.
    pub fn save_idempotency_key<T: Serialize>(
        &self,
        key: &str,
        value: Option<&T>,
        durable: bool,
    ) -> Result<()> {
        let key = key.as_bytes().to_vec();
        let op = match value {
            Some(value) => MetaOp::Put {
                table: IDEMPOTENCY_KEYS,
                key,
                value: encode(value),
            },
            None => MetaOp::Delete {
                table: IDEMPOTENCY_KEYS,
                key,
            },
        };
        Ok(self.meta.write(&[op], durable)?)
    }

    /// Every idempotency key, for expiring them.
    pub fn idempotency_keys<T: for<'a> Deserialize<'a>>(&self) -> Result<Vec<(String, T)>> {
        self.meta
            .scan(IDEMPOTENCY_KEYS, b"")?
            .into_iter()
            .map(|(key, value)| {
                Ok((
                    String::from_utf8_lossy(&key).into_owned(),
                    decode("idempotency key", &value)?,
                ))
            })
            .collect()
    }

    /// The stored position of one partition of a subscription.
    pub fn position<T: for<'a> Deserialize<'a>>(
        &self,
        topic: &str,
        group: &str,
        partition: u32,
    ) -> Result<Option<T>> {
        self.meta
            .get(POSITIONS, &position_key(topic, group, partition))?
            .map(|bytes| decode("subscription position", &bytes))
            .transpose()
    }

    pub fn position_op<T: Serialize>(
        topic: &str,
        group: &str,
        partition: u32,
        value: &T,
    ) -> MetaOp {
        MetaOp::Put {
            table: POSITIONS,
            key: position_key(topic, group, partition),
            value: encode(value),
        }
    }

    /// Writes positions; durable, so what a consumer acked before survives power loss once
    /// this returns.
    pub fn dead_letter_marks(&self) -> Result<Vec<DeadLetterMark>> {
        self.meta
            .scan(DEAD_LETTER_MARKS, b"")?
            .into_iter()
            .map(|(_, value)| decode("dead-letter mark", &value))
            .collect()
    }

    pub fn dead_letter_mark_op(mark: &DeadLetterMark) -> MetaOp {
        MetaOp::Put {
            table: DEAD_LETTER_MARKS,
            key: subscription_key(&mark.topic, &mark.group),
            value: encode(mark),
        }
    }

    pub fn save_positions(&self, ops: &[MetaOp]) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        Ok(self.meta.write(ops, true)?)
    }
}
