//! The wire form of delayed messages: when to deliver, how to name a scheduled batch, and how
//! one is described.
//!
//! Keeping the schedule durable and handing batches over exactly once is the broker's job;
//! this module only says how the values travel. Layouts are in `docs/protocol.md` §5.

use crate::error::DecodeError;
use crate::wire::{Reader, put_option, put_string};
use bytes::{BufMut, BytesMut};

/// When a scheduled batch becomes visible in its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScheduleTime {
    /// This many milliseconds after the broker receives the request, by the broker's clock
    /// (so the producer's clock does not matter). Tag 0, then `u64`.
    DelayMs(u64),
    /// At this instant, in milliseconds since the Unix epoch; a past instant means now.
    /// Tag 1, then `i64`.
    AtMs(i64),
}

impl ScheduleTime {
    pub(crate) fn put(self, buf: &mut BytesMut) {
        match self {
            ScheduleTime::DelayMs(delay) => {
                buf.put_u8(0);
                buf.put_u64_le(delay);
            }
            ScheduleTime::AtMs(at) => {
                buf.put_u8(1);
                buf.put_i64_le(at);
            }
        }
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<ScheduleTime, DecodeError> {
        Ok(
            match reader.tag(1, "schedule time (0 delay, 1 absolute time)")? {
                0 => ScheduleTime::DelayMs(reader.u64("delay in milliseconds")?),
                _ => ScheduleTime::AtMs(reader.i64("delivery time in milliseconds")?),
            },
        )
    }
}

/// Names one scheduled batch: by the id the broker gave it, or by the business key the
/// producer gave it (an order number, say).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScheduledSelector {
    /// Tag 0, then `u64`.
    Id(u64),
    /// Tag 1, then `string`.
    BusinessKey(String),
}

impl ScheduledSelector {
    pub(crate) fn put(&self, buf: &mut BytesMut) {
        match self {
            ScheduledSelector::Id(id) => {
                buf.put_u8(0);
                buf.put_u64_le(*id);
            }
            ScheduledSelector::BusinessKey(key) => {
                buf.put_u8(1);
                put_string(buf, key);
            }
        }
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<ScheduledSelector, DecodeError> {
        Ok(
            match reader.tag(1, "scheduled message selector (0 id, 1 business key)")? {
                0 => ScheduledSelector::Id(reader.u64("scheduled message id")?),
                _ => ScheduledSelector::BusinessKey(reader.string("business key")?),
            },
        )
    }
}

/// A scheduled batch, as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScheduledInfo {
    /// The id the broker gave it.
    pub id: u64,
    /// The topic it goes to.
    pub topic: String,
    /// The partition it goes to; `None` for the broker's choice per message.
    pub partition: Option<u32>,
    /// When it becomes visible, in milliseconds since the Unix epoch.
    pub deliver_at_ms: i64,
    /// The key it can be cancelled by, if the producer gave one.
    pub business_key: Option<String>,
    /// Messages in the batch.
    pub message_count: u32,
}

impl ScheduledInfo {
    /// id, name length, option tag, time, option tag, count.
    pub(crate) const MINIMUM_BYTES: usize = 8 + 4 + 1 + 8 + 1 + 4;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        buf.put_u64_le(self.id);
        put_string(buf, &self.topic);
        put_option(buf, self.partition, BytesMut::put_u32_le);
        buf.put_i64_le(self.deliver_at_ms);
        put_option(buf, self.business_key.as_deref(), put_string);
        buf.put_u32_le(self.message_count);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<ScheduledInfo, DecodeError> {
        Ok(ScheduledInfo {
            id: reader.u64("scheduled message id")?,
            topic: reader.string("scheduled topic name")?,
            partition: reader.option("scheduled partition option", |reader| {
                reader.u32("scheduled partition")
            })?,
            deliver_at_ms: reader.i64("delivery time in milliseconds")?,
            business_key: reader.option("business key option", |reader| {
                reader.string("business key")
            })?,
            message_count: reader.u32("scheduled message count")?,
        })
    }
}
