//! The wire form of exchanges: their kind, their bindings, and their description.
//!
//! Matching a routing key against bindings is the broker's job; this module only says how an
//! exchange's definition travels. Layouts are in `docs/protocol.md` §5.

use crate::error::DecodeError;
use crate::wire::{Reader, put_bool, put_list, put_option, put_string};
use bytes::{BufMut, BytesMut};

/// How an exchange matches its bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    /// The binding key equals the routing key. Tag 0.
    Direct,
    /// Dot-separated words; in a binding key `*` matches one word, `#` zero or more. Tag 1.
    Topic,
    /// Every binding, whatever the routing key. Tag 2.
    Fanout,
    /// The message's headers match the binding's (all of them, or any). Tag 3.
    Headers,
}

impl ExchangeKind {
    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u8(match self {
            ExchangeKind::Direct => 0,
            ExchangeKind::Topic => 1,
            ExchangeKind::Fanout => 2,
            ExchangeKind::Headers => 3,
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<ExchangeKind, DecodeError> {
        Ok(
            match reader.tag(3, "exchange kind (0 direct, 1 topic, 2 fanout, 3 headers)")? {
                0 => ExchangeKind::Direct,
                1 => ExchangeKind::Topic,
                2 => ExchangeKind::Fanout,
                _ => ExchangeKind::Headers,
            },
        )
    }
}

/// A binding from an exchange to a topic.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Binding {
    /// The topic messages are routed to.
    pub topic: String,
    /// The routing key (direct) or pattern (topic); ignored by fanout and headers exchanges.
    pub key: String,
    /// Header pairs a headers exchange matches on (values compared as UTF-8 text).
    pub headers: Vec<(String, String)>,
    /// Headers exchange: every pair must match (`true`) or any one (`false`).
    pub match_all: bool,
}

impl Binding {
    /// Two string lengths, a header count, the flag.
    pub(crate) const MINIMUM_BYTES: usize = 4 + 4 + 4 + 1;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.topic);
        put_string(buf, &self.key);
        put_list(buf, &self.headers, |buf, (name, value)| {
            put_string(buf, name);
            put_string(buf, value);
        });
        put_bool(buf, self.match_all);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<Binding, DecodeError> {
        Ok(Binding {
            topic: reader.string("binding topic")?,
            key: reader.string("binding key")?,
            headers: reader.list("binding header list", 4 + 4, |reader| {
                Ok((
                    reader.string("binding header name")?,
                    reader.string("binding header value")?,
                ))
            })?,
            match_all: reader.bool("match_all flag (0 or 1)")?,
        })
    }
}

/// An exchange's definition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExchangeInfo {
    /// Its name.
    pub name: String,
    /// How it matches.
    pub kind: ExchangeKind,
    /// Where messages no binding matches go; `None` to refuse (mandatory) or drop them.
    pub alternate_topic: Option<String>,
    /// Its bindings, in the order they were made.
    pub bindings: Vec<Binding>,
}

impl ExchangeInfo {
    /// Name length, kind, option tag, binding count.
    pub(crate) const MINIMUM_BYTES: usize = 4 + 1 + 1 + 4;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.name);
        self.kind.put(buf);
        put_option(buf, self.alternate_topic.as_deref(), put_string);
        put_list(buf, &self.bindings, |buf, binding| binding.put(buf));
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<ExchangeInfo, DecodeError> {
        Ok(ExchangeInfo {
            name: reader.string("exchange name")?,
            kind: ExchangeKind::read(reader)?,
            alternate_topic: reader.option("alternate topic option", |reader| {
                reader.string("alternate topic name")
            })?,
            bindings: reader.list("binding list", Binding::MINIMUM_BYTES, Binding::read)?,
        })
    }
}
