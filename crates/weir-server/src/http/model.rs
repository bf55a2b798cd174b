//! The JSON shapes shared by several endpoints — a message to publish, a stored message, a
//! delivery and its id, a start position, a durability — and their conversions to and from
//! `weir-core` types. Shapes used by one endpoint only live beside its handler.
//!
//! Payloads, keys and header values are bytes in the broker; JSON carries them as text when
//! they are UTF-8 and as base64 (`payload_base64`, `key_base64`) otherwise, so any byte string
//! round-trips and the common case stays readable.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_core::{Delivery, Durability, Message, MessageId, PublishedRange, Record, StartPosition};

use super::error::ApiError;

/// The OpenAPI schema of a topic, subscription or exchange name, so that generated clients and
/// fuzzers know the rule the broker applies: 1 to 200 of `A-Z a-z 0-9 . _ -`.
pub struct Name;

impl utoipa::PartialSchema for Name {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[A-Za-z0-9._-]{1,200}$"))
            .examples([serde_json::json!("orders")])
            .into()
    }
}

impl ToSchema for Name {}

/// The OpenAPI schema of a delivery id, `"<partition>-<offset>"`.
pub struct DeliveryId;

impl utoipa::PartialSchema for DeliveryId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]{1,10}-[0-9]{1,20}$"))
            .examples([serde_json::json!("0-42")])
            .into()
    }
}

impl ToSchema for DeliveryId {}

/// The header that carries a producer-supplied message id; the broker deduplicates by it.
pub const MESSAGE_ID_HEADER: &str = "weir.id";

/// A message to publish.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    /// The payload as UTF-8 text. Give this or `payload_base64`, not both.
    #[schema(example = "order 1 created")]
    pub payload: Option<String>,
    /// The payload as base64 (standard alphabet, padded), for binary payloads.
    pub payload_base64: Option<String>,
    /// Messages with one key go to one partition, in order.
    #[schema(example = "order-1")]
    pub key: Option<String>,
    /// Text headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A producer-supplied message id (stored as header `weir.id`): the broker's dedup key.
    #[schema(example = "m-1")]
    pub id: Option<String>,
    /// Deliver this many milliseconds from now (at most 366 days) instead of at once: the
    /// message is stored durably in the broker's schedule and appended to the topic when due.
    /// Topics only; an exchange publish refuses delays.
    #[serde(default)]
    pub delay_ms: u64,
    /// With `delay_ms`: a key to find or cancel the scheduled message by (unique among
    /// scheduled messages), e.g. `"auto-cancel:order-1"`.
    pub business_key: Option<String>,
}

/// A message to publish now, or to schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub message: Message,
    /// Zero: publish now.
    pub delay: Duration,
    pub business_key: Option<String>,
}

impl MessageInput {
    /// The core message with its delay, or why this one (the `index`-th of its request) is
    /// refused.
    pub fn into_outgoing(self, index: usize) -> Result<Outgoing, ApiError> {
        let refuse =
            |reason: &str| ApiError::invalid_argument(format!("messages[{index}]: {reason}"));
        if self.delay_ms > MAX_DELAY_MS {
            return Err(refuse(&format!("delay_ms is at most {MAX_DELAY_MS}")));
        }
        if self.business_key.is_some() && self.delay_ms == 0 {
            return Err(refuse(
                "a business_key names a delayed message: give delay_ms too",
            ));
        }
        if self.business_key.as_ref().is_some_and(String::is_empty) {
            return Err(refuse("a business_key cannot be empty"));
        }
        let value = match (self.payload, self.payload_base64) {
            (Some(text), None) => Bytes::from(text),
            (None, Some(encoded)) => BASE64
                .decode(encoded.as_bytes())
                .map(Bytes::from)
                .map_err(|error| refuse(&format!("payload_base64 is not base64: {error}")))?,
            (Some(_), Some(_)) => return Err(refuse("give payload or payload_base64, not both")),
            (None, None) => return Err(refuse("a message needs payload or payload_base64")),
        };
        let mut message = Message::new(value);
        message.key = self.key.map(Bytes::from);
        message.headers = self
            .headers
            .into_iter()
            .filter(|(name, _)| self.id.is_none() || name != MESSAGE_ID_HEADER)
            .map(|(name, value)| (name, Bytes::from(value)))
            .collect();
        if let Some(id) = self.id {
            if id.is_empty() {
                return Err(refuse("a message id cannot be empty"));
            }
            message
                .headers
                .push((MESSAGE_ID_HEADER.to_owned(), Bytes::from(id)));
        }
        Ok(Outgoing {
            message,
            delay: Duration::from_millis(self.delay_ms),
            business_key: self.business_key,
        })
    }
}

/// The longest delay, in milliseconds: the broker's limit.
pub const MAX_DELAY_MS: u64 = weir_core::MAX_DELAY.as_millis() as u64;

/// Converts a request's messages, refusing an empty list.
pub fn into_outgoing(inputs: Vec<MessageInput>) -> Result<Vec<Outgoing>, ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::invalid_argument(
            "messages is empty: nothing to publish",
        ));
    }
    inputs
        .into_iter()
        .enumerate()
        .map(|(index, input)| input.into_outgoing(index))
        .collect()
}

/// Converts a request's messages for a publish that cannot be delayed (through an exchange).
pub fn into_immediate_messages(inputs: Vec<MessageInput>) -> Result<Vec<Message>, ApiError> {
    into_outgoing(inputs)?
        .into_iter()
        .enumerate()
        .map(|(index, outgoing)| {
            if outgoing.delay.is_zero() {
                Ok(outgoing.message)
            } else {
                Err(ApiError::invalid_argument(format!(
                    "messages[{index}]: delayed messages are published to a topic, not through an exchange"
                )))
            }
        })
        .collect()
}

/// One batch of `messages`, stamped with `now_ms` where they carry no time, as
/// `Broker::publish_messages` would build it.
pub fn encode_batch(now_ms: i64, messages: &[&Message]) -> Bytes {
    let mut builder = weir_core::BatchBuilder::new();
    for message in messages {
        let headers: Vec<(&str, &[u8])> = message
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), &value[..]))
            .collect();
        builder.push(
            message.timestamp_ms.unwrap_or(now_ms),
            message.key.as_deref(),
            &headers,
            &message.value,
        );
    }
    builder.finish()
}

/// What a confirm promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DurabilityView {
    /// Written to the OS page cache: survives a crash of the broker, not a power loss.
    Os,
    /// fdatasync'd: survives a power loss.
    Fsynced,
}

impl From<Durability> for DurabilityView {
    fn from(durability: Durability) -> DurabilityView {
        match durability {
            Durability::Os => DurabilityView::Os,
            Durability::Fsynced => DurabilityView::Fsynced,
        }
    }
}

/// Offsets one publish received in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct RangeView {
    pub partition: u32,
    pub base_offset: u64,
    pub last_offset: u64,
}

impl From<&PublishedRange> for RangeView {
    fn from(range: &PublishedRange) -> RangeView {
        RangeView {
            partition: range.partition,
            base_offset: range.base_offset,
            last_offset: range.last_offset,
        }
    }
}

/// A stored message, as browsing and deliveries show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MessageView {
    pub partition: u32,
    pub offset: u64,
    /// Publish time, milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The producer-supplied message id (header `weir.id`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The key, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key as base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// Headers; a value that is not UTF-8 is shown with U+FFFD replacement characters. A name
    /// given more than once shows its first value here, and every header is in `header_list`.
    pub headers: BTreeMap<String, String>,
    /// Every header as `[name, value]` pairs in order, only when some name is given more than
    /// once (a JSON object cannot show that).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header_list: Option<Vec<(String, String)>>,
    /// The payload, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload as base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
}

/// `(text, base64)`: exactly one is set.
pub fn text_or_base64(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_owned()), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

impl MessageView {
    pub fn new(partition: u32, record: &Record) -> MessageView {
        let (key, key_base64) = match &record.key {
            Some(key) => text_or_base64(key),
            None => (None, None),
        };
        let (payload, payload_base64) = text_or_base64(&record.value);
        let pairs: Vec<(String, String)> = record
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), String::from_utf8_lossy(value).into_owned()))
            .collect();
        let mut headers = BTreeMap::new();
        for (name, value) in &pairs {
            headers.entry(name.clone()).or_insert_with(|| value.clone());
        }
        let header_list = (headers.len() < pairs.len()).then_some(pairs);
        MessageView {
            partition,
            offset: record.offset,
            timestamp_ms: record.timestamp_ms,
            id: record
                .header(MESSAGE_ID_HEADER)
                .map(|id| String::from_utf8_lossy(id).into_owned()),
            key,
            key_base64,
            headers,
            header_list,
            payload,
            payload_base64,
        }
    }
}

/// A message handed to a consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Names this delivery in `ack` and `nack`: `"<partition>-<offset>"`.
    #[schema(example = "0-42")]
    pub delivery_id: String,
    /// 1 on the first delivery, more on redeliveries.
    pub delivery_count: u32,
    #[serde(flatten)]
    pub message: MessageView,
}

impl From<&Delivery> for DeliveryView {
    fn from(delivery: &Delivery) -> DeliveryView {
        DeliveryView {
            delivery_id: format_delivery_id(delivery.id()),
            delivery_count: delivery.delivery_count,
            message: MessageView::new(delivery.partition, &delivery.record),
        }
    }
}

/// `"<partition>-<offset>"`: a delivery id is the message's place in the topic, so it stays
/// valid across redeliveries, consumers and restarts.
pub fn format_delivery_id(id: MessageId) -> String {
    format!("{}-{}", id.partition, id.offset)
}

pub fn parse_delivery_id(text: &str) -> Result<MessageId, ApiError> {
    let refuse = || {
        ApiError::invalid_argument(format!(
            "'{text}' is not a delivery id (expected \"<partition>-<offset>\", as fetch returns)"
        ))
    };
    let (partition, offset) = text.split_once('-').ok_or_else(refuse)?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(partition) || !digits(offset) {
        return Err(refuse());
    }
    Ok(MessageId {
        partition: partition.parse().map_err(|_| refuse())?,
        offset: offset.parse().map_err(|_| refuse())?,
    })
}

/// Parses every id, refusing an empty list.
pub fn parse_delivery_ids(ids: &[String]) -> Result<Vec<MessageId>, ApiError> {
    if ids.is_empty() {
        return Err(ApiError::invalid_argument("delivery_ids is empty"));
    }
    ids.iter().map(|id| parse_delivery_id(id)).collect()
}

/// Where a subscription starts, or where a reset moves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PositionInput {
    /// `"earliest"` or `"latest"`.
    Named(NamedPosition),
    /// `{"offset": N}`: the same offset in every partition (clamped to what exists).
    Offset { offset: u64 },
    /// `{"timestamp_ms": T}`: the first message at or after this time in each partition.
    Timestamp { timestamp_ms: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NamedPosition {
    Earliest,
    Latest,
}

impl From<PositionInput> for StartPosition {
    fn from(position: PositionInput) -> StartPosition {
        match position {
            PositionInput::Named(NamedPosition::Earliest) => StartPosition::Earliest,
            PositionInput::Named(NamedPosition::Latest) => StartPosition::Latest,
            PositionInput::Offset { offset } => StartPosition::Offset(offset),
            PositionInput::Timestamp { timestamp_ms } => StartPosition::Timestamp(timestamp_ms),
        }
    }
}

impl From<StartPosition> for PositionInput {
    fn from(position: StartPosition) -> PositionInput {
        match position {
            StartPosition::Earliest => PositionInput::Named(NamedPosition::Earliest),
            StartPosition::Latest => PositionInput::Named(NamedPosition::Latest),
            StartPosition::Offset(offset) => PositionInput::Offset { offset },
            StartPosition::Timestamp(timestamp_ms) => PositionInput::Timestamp { timestamp_ms },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids_round_trip_and_garbage_is_refused() {
        let id = MessageId {
            partition: 3,
            offset: 42,
        };
        assert_eq!(parse_delivery_id(&format_delivery_id(id)), Ok(id));
        for bad in [
            "",
            "3",
            "3-",
            "-4",
            "a-1",
            "1-b",
            "1-2-3",
            "+1-2",
            "99999999999-1",
        ] {
            assert!(parse_delivery_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_message_needs_exactly_one_payload_and_a_delay_in_range() {
        let both = MessageInput {
            payload: Some("a".into()),
            payload_base64: Some("YQ==".into()),
            ..MessageInput::default()
        };
        assert!(both.into_outgoing(0).is_err());
        assert!(MessageInput::default().into_outgoing(0).is_err());
        let too_late = MessageInput {
            payload: Some("a".into()),
            delay_ms: MAX_DELAY_MS + 1,
            ..MessageInput::default()
        };
        let error = too_late.into_outgoing(3).expect_err("too long a delay");
        assert!(error.message.contains("messages[3]"), "{}", error.message);
        let key_without_delay = MessageInput {
            payload: Some("a".into()),
            business_key: Some("k".into()),
            ..MessageInput::default()
        };
        assert!(key_without_delay.into_outgoing(0).is_err());
        let binary = MessageInput {
            payload_base64: Some("AP8=".into()),
            id: Some("m-1".into()),
            ..MessageInput::default()
        };
        let message = binary.into_outgoing(0).expect("valid base64").message;
        assert_eq!(&message.value[..], &[0, 255]);
        assert_eq!(
            message.headers,
            vec![("weir.id".to_owned(), Bytes::from("m-1"))]
        );
    }

    /// Issue 10 defect 21: headers with a repeated name were collapsed into one object entry.
    /// Goal: a view shows every header; the object keeps the first value of a name.
    #[test]
    fn repeated_header_names_are_all_shown_in_the_header_list() {
        let record = |headers: &[(&str, &str)]| Record {
            offset: 7,
            timestamp_ms: 1,
            key: None,
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), Bytes::from(value.to_string())))
                .collect(),
            value: Bytes::from_static(b"v"),
        };
        let view = MessageView::new(0, &record(&[("a", "1"), ("", ""), ("a", "2"), ("", "")]));
        assert_eq!(view.headers.get("a").map(String::as_str), Some("1"));
        assert_eq!(view.headers.len(), 2);
        let list = view.header_list.expect("a header list when names repeat");
        assert_eq!(list.len(), 4);
        assert_eq!(list[2], ("a".to_owned(), "2".to_owned()));
        let json = serde_json::to_value(MessageView::new(0, &record(&[("a", "1")]))).unwrap();
        assert!(json.get("header_list").is_none(), "{json}");
    }
}
