//! The record batch: one byte layout on the wire and on disk.
//!
//! A producer encodes its messages into a [`Batch`] with a [`BatchBuilder`]; the same bytes
//! travel in the native protocol's publish request and are written to the partition log. The
//! broker only rewrites the 8-byte `base_offset`, which sits outside the CRC, so storing a
//! client's batch costs one CRC check and no re-encoding (Kafka's record batch does the same).
//!
//! ```
//! use weir_batch::{Batch, BatchBuilder};
//! let mut builder = BatchBuilder::new();
//! builder.push(1_700_000_000_000, Some(b"order-1"), &[("type", b"vip")], b"hello");
//! let mut bytes = builder.finish().to_vec();
//! Batch::set_base_offset(&mut bytes, 42);
//! let batch = Batch::parse(bytes.into(), 1 << 20).unwrap();
//! let record = batch.records().next().unwrap().unwrap();
//! assert_eq!(record.offset, 42);
//! assert_eq!(&record.value[..], b"hello");
//! ```
//!
//! The byte layout is documented in `docs/storage-format.md`. Invariant: a [`Batch`] value has a
//! valid header and CRC; its records were checked by [`Batch::parse`] to be exactly
//! `record_count` well-formed records, so iterating them cannot fail on a parsed batch.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes before the records: see the table in `docs/storage-format.md`.
pub const HEADER_LEN: usize = 52;
/// Format version written in every batch.
pub const MAGIC: u8 = 1;
/// Offset of the `length` field; `length` counts the bytes after it.
const LENGTH_END: usize = 12;
/// The CRC covers everything after the CRC field.
const CRC_END: usize = 16;

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// Fewer bytes than the header or the declared length; read more and retry.
    #[error("incomplete batch: need {needed} bytes, have {available}")]
    Incomplete { needed: usize, available: usize },
    /// The declared length is larger than the caller's limit.
    #[error("batch of {length} bytes exceeds the limit of {limit}")]
    TooLarge { length: usize, limit: usize },
    #[error("unknown batch format version {0}")]
    BadMagic(u8),
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    /// The records section does not decode into `record_count` records.
    #[error("malformed record {index} at byte {position}: {reason}")]
    Record {
        index: u32,
        position: usize,
        reason: &'static str,
    },
    #[error("a batch holds 1 to {max} records, this one {count}")]
    RecordCount { count: u32, max: u32 },
}

/// The fixed fields at the front of every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Bytes after the length field: `total_len() - 12`.
    pub length: u32,
    pub crc: u32,
    pub magic: u8,
    pub attributes: u16,
    pub record_count: u32,
    pub first_timestamp_ms: i64,
    pub max_timestamp_ms: i64,
    /// 0 when the producer is not idempotent.
    pub producer_id: u64,
    pub base_sequence: u32,
}

/// The header naming a producer-supplied message id, used for deduplication.
pub const MESSAGE_ID_HEADER: &str = "weir.id";
/// Attribute bit: some record carries a [`MESSAGE_ID_HEADER`]. Set by [`BatchBuilder`], so the
/// broker looks for ids only in batches that have them.
pub const ATTRIBUTE_MESSAGE_IDS: u16 = 1;

/// Most records one batch may hold; keeps per-batch bookkeeping bounded.
pub const MAX_RECORDS: u32 = 1 << 20;

impl BatchHeader {
    /// Reads the header from the front of `buf` without checking the CRC.
    pub fn read(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < HEADER_LEN {
            return Err(BatchError::Incomplete {
                needed: HEADER_LEN,
                available: buf.len(),
            });
        }
        let mut b = &buf[..HEADER_LEN];
        Ok(BatchHeader {
            base_offset: b.get_u64_le(),
            length: b.get_u32_le(),
            crc: b.get_u32_le(),
            magic: b.get_u8(),
            attributes: {
                b.advance(1);
                b.get_u16_le()
            },
            record_count: b.get_u32_le(),
            first_timestamp_ms: b.get_i64_le(),
            max_timestamp_ms: b.get_i64_le(),
            producer_id: b.get_u64_le(),
            base_sequence: b.get_u32_le(),
        })
    }

    /// Whole batch size in bytes.
    pub fn total_len(&self) -> usize {
        LENGTH_END + self.length as usize
    }

    /// Offset of the last record.
    pub fn last_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count.max(1)) - 1
    }
}

/// How many bytes the batch at the front of `buf` occupies, if it is all there.
///
/// Checks only the declared length against `limit`, before the caller allocates or waits for
/// more: the streaming counterpart of [`Batch::parse`].
pub fn check_len(buf: &[u8], limit: usize) -> Result<usize, BatchError> {
    if buf.len() < LENGTH_END {
        return Err(BatchError::Incomplete {
            needed: HEADER_LEN,
            available: buf.len(),
        });
    }
    let length = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    let total = LENGTH_END + length;
    if total > limit {
        return Err(BatchError::TooLarge {
            length: total,
            limit,
        });
    }
    if total < HEADER_LEN {
        return Err(BatchError::Record {
            index: 0,
            position: 8,
            reason: "declared length shorter than the header",
        });
    }
    if buf.len() < total {
        return Err(BatchError::Incomplete {
            needed: total,
            available: buf.len(),
        });
    }
    Ok(total)
}

/// A validated batch: header, CRC and every record checked. Cheap to clone (shares bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    bytes: Bytes,
    header: BatchHeader,
    /// Most headers any one record has, found while validating.
    max_record_headers: u32,
}

impl Batch {
    /// Validates exactly one batch occupying all of `bytes`.
    pub fn parse(bytes: Bytes, limit: usize) -> Result<Batch, BatchError> {
        let total = check_len(&bytes, limit)?;
        if total != bytes.len() {
            return Err(BatchError::Record {
                index: 0,
                position: bytes.len().min(total),
                reason: "trailing bytes after the batch",
            });
        }
        let header = BatchHeader::read(&bytes)?;
        if header.magic != MAGIC {
            return Err(BatchError::BadMagic(header.magic));
        }
        let computed = crc32c::crc32c(&bytes[CRC_END..]);
        if computed != header.crc {
            return Err(BatchError::Crc {
                stored: header.crc,
                computed,
            });
        }
        if header.record_count == 0 || header.record_count > MAX_RECORDS {
            return Err(BatchError::RecordCount {
                count: header.record_count,
                max: MAX_RECORDS,
            });
        }
        let mut batch = Batch {
            bytes,
            header,
            max_record_headers: 0,
        };
        let mut records = batch.records();
        let mut max_record_headers = 0;
        for _ in 0..header.record_count {
            match records.next() {
                Some(Ok(record)) => {
                    max_record_headers = max_record_headers.max(record.headers.len());
                }
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(BatchError::Record {
                        index: records.index,
                        position: records.position(),
                        reason: "fewer records than record_count",
                    });
                }
            }
        }
        if records.cursor.has_remaining() {
            return Err(BatchError::Record {
                index: records.index,
                position: records.position(),
                reason: "bytes after the last record",
            });
        }
        // Fewer headers than bytes in the batch, so this fits.
        batch.max_record_headers = u32::try_from(max_record_headers).unwrap_or(u32::MAX);
        Ok(batch)
    }

    /// Splits `bytes` into consecutive batches, validating each (a log segment read).
    pub fn parse_many(mut bytes: Bytes, limit: usize) -> Result<Vec<Batch>, BatchError> {
        let mut batches = Vec::new();
        while !bytes.is_empty() {
            let total = check_len(&bytes, limit)?;
            batches.push(Batch::parse(bytes.split_to(total), limit)?);
        }
        Ok(batches)
    }

    /// Writes `offset` into the `base_offset` field of an encoded batch. The CRC stays valid.
    ///
    /// # Panics
    /// If `buf` is shorter than a header: callers pass a batch they have length-checked.
    pub fn set_base_offset(buf: &mut [u8], offset: u64) {
        buf[..8].copy_from_slice(&offset.to_le_bytes());
    }

    /// The same batch with another base offset (copies the bytes once).
    pub fn with_base_offset(&self, offset: u64) -> Batch {
        let mut bytes = BytesMut::from(&self.bytes[..]);
        Batch::set_base_offset(&mut bytes, offset);
        Batch {
            bytes: bytes.freeze(),
            header: BatchHeader {
                base_offset: offset,
                ..self.header
            },
            max_record_headers: self.max_record_headers,
        }
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }
    pub fn base_offset(&self) -> u64 {
        self.header.base_offset
    }
    pub fn last_offset(&self) -> u64 {
        self.header.last_offset()
    }
    /// First offset after this batch.
    pub fn next_offset(&self) -> u64 {
        self.header.last_offset() + 1
    }
    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }
    /// Most headers any one record of the batch has (a publish limit checks it).
    pub fn max_record_headers(&self) -> u32 {
        self.max_record_headers
    }
    pub fn max_timestamp_ms(&self) -> i64 {
        self.header.max_timestamp_ms
    }
    pub fn first_timestamp_ms(&self) -> i64 {
        self.header.first_timestamp_ms
    }
    /// Whether some record may carry a message id ([`ATTRIBUTE_MESSAGE_IDS`]).
    pub fn has_message_ids(&self) -> bool {
        self.header.attributes & ATTRIBUTE_MESSAGE_IDS != 0
    }
    /// The idempotent producer's id and base sequence, if the batch has one.
    pub fn producer(&self) -> Option<(u64, u32)> {
        (self.header.producer_id != 0)
            .then_some((self.header.producer_id, self.header.base_sequence))
    }
    /// The encoded batch, as stored and sent.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The records, with absolute offsets and timestamps. Payloads share the batch's bytes.
    pub fn records(&self) -> Records {
        Records {
            cursor: self.bytes.slice(HEADER_LEN..),
            total: self.bytes.len(),
            base_offset: self.header.base_offset,
            first_timestamp_ms: self.header.first_timestamp_ms,
            index: 0,
            count: self.header.record_count,
        }
    }
}

/// One message of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub headers: Vec<(String, Bytes)>,
    pub value: Bytes,
}

impl Record {
    /// The value of the first header named `name`.
    /// The producer-supplied message id, if any.
    pub fn message_id(&self) -> Option<&Bytes> {
        self.header(MESSAGE_ID_HEADER)
    }

    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }
}

/// Iterator over a batch's records.
#[derive(Debug, Clone)]
pub struct Records {
    cursor: Bytes,
    total: usize,
    base_offset: u64,
    first_timestamp_ms: i64,
    index: u32,
    count: u32,
}

impl Records {
    fn position(&self) -> usize {
        self.total - self.cursor.len()
    }

    fn malformed(&self, reason: &'static str) -> BatchError {
        BatchError::Record {
            index: self.index,
            position: self.position(),
            reason,
        }
    }

    fn decode(&mut self) -> Result<Record, BatchError> {
        let length = read_varint(&mut self.cursor).ok_or_else(|| self.malformed("bad length"))?;
        let length = usize::try_from(length).map_err(|_| self.malformed("length overflow"))?;
        if length > self.cursor.len() {
            return Err(self.malformed("record longer than the batch"));
        }
        let mut body = self.cursor.split_to(length);
        let bad = |reason| BatchError::Record {
            index: self.index,
            position: self.total - self.cursor.len() - length,
            reason,
        };
        let timestamp_delta =
            unzigzag(read_varint(&mut body).ok_or_else(|| bad("bad timestamp delta"))?);
        let key = match read_varint(&mut body).ok_or_else(|| bad("bad key length"))? {
            0 => None,
            n => Some(take(&mut body, n - 1).ok_or_else(|| bad("key past record end"))?),
        };
        let header_count = read_varint(&mut body).ok_or_else(|| bad("bad header count"))?;
        // Each header takes at least two bytes, so this bound stops a huge count early.
        if header_count > body.len() as u64 / 2 {
            return Err(bad("header count larger than the record"));
        }
        let mut headers = Vec::with_capacity(header_count as usize);
        for _ in 0..header_count {
            let name_len = read_varint(&mut body).ok_or_else(|| bad("bad header name length"))?;
            let name = take(&mut body, name_len).ok_or_else(|| bad("header name past end"))?;
            let name =
                String::from_utf8(name.to_vec()).map_err(|_| bad("header name not UTF-8"))?;
            let value_len = read_varint(&mut body).ok_or_else(|| bad("bad header value length"))?;
            let value = take(&mut body, value_len).ok_or_else(|| bad("header value past end"))?;
            headers.push((name, value));
        }
        let value_len = read_varint(&mut body).ok_or_else(|| bad("bad value length"))?;
        let value = take(&mut body, value_len).ok_or_else(|| bad("value past record end"))?;
        if body.has_remaining() {
            return Err(bad("bytes after the value"));
        }
        let record = Record {
            offset: self.base_offset + u64::from(self.index),
            timestamp_ms: self.first_timestamp_ms.wrapping_add(timestamp_delta),
            key,
            headers,
            value,
        };
        self.index += 1;
        Ok(record)
    }
}

impl Iterator for Records {
    type Item = Result<Record, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let result = self.decode();
        if result.is_err() {
            // Stop after the first error: the rest of the cursor is meaningless.
            self.index = self.count;
        }
        Some(result)
    }
}

/// Encodes messages into one batch.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: BytesMut,
    scratch: BytesMut,
    count: u32,
    first_timestamp_ms: i64,
    max_timestamp_ms: i64,
    producer_id: u64,
    base_sequence: u32,
    attributes: u16,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        BatchBuilder::new()
    }
}

impl BatchBuilder {
    pub fn new() -> BatchBuilder {
        BatchBuilder::with_capacity(1024)
    }

    pub fn with_capacity(bytes: usize) -> BatchBuilder {
        let mut buf = BytesMut::with_capacity(bytes.max(HEADER_LEN));
        buf.put_bytes(0, HEADER_LEN);
        BatchBuilder {
            buf,
            scratch: BytesMut::new(),
            count: 0,
            first_timestamp_ms: 0,
            max_timestamp_ms: 0,
            producer_id: 0,
            base_sequence: 0,
            attributes: 0,
        }
    }

    /// Marks the batch as an idempotent producer's: `producer_id` (non-zero) and the sequence
    /// number of its first record in this partition.
    pub fn producer(&mut self, producer_id: u64, base_sequence: u32) -> &mut Self {
        self.producer_id = producer_id;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets attribute bits (in addition to those the builder sets itself).
    pub fn attributes(&mut self, attributes: u16) -> &mut Self {
        self.attributes |= attributes;
        self
    }

    pub fn len(&self) -> u32 {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    /// Bytes the batch would occupy if finished now.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Appends one record.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        headers: &[(&str, &[u8])],
        value: &[u8],
    ) -> &mut Self {
        if self.count == 0 {
            self.first_timestamp_ms = timestamp_ms;
            self.max_timestamp_ms = timestamp_ms;
        }
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        let body = &mut self.scratch;
        body.clear();
        put_varint(
            body,
            zigzag(timestamp_ms.wrapping_sub(self.first_timestamp_ms)),
        );
        match key {
            None => put_varint(body, 0),
            Some(key) => {
                put_varint(body, key.len() as u64 + 1);
                body.put_slice(key);
            }
        }
        put_varint(body, headers.len() as u64);
        if headers.iter().any(|(name, _)| *name == MESSAGE_ID_HEADER) {
            self.attributes |= ATTRIBUTE_MESSAGE_IDS;
        }
        for (name, value) in headers {
            put_varint(body, name.len() as u64);
            body.put_slice(name.as_bytes());
            put_varint(body, value.len() as u64);
            body.put_slice(value);
        }
        put_varint(body, value.len() as u64);
        body.put_slice(value);
        put_varint(&mut self.buf, body.len() as u64);
        self.buf.put_slice(body);
        self.count += 1;
        self
    }

    /// Fills in the header (base offset 0) and CRC, and returns the encoded batch. The builder
    /// is left empty for reuse.
    ///
    /// # Panics
    /// If no record was pushed: an empty batch is a programming error.
    pub fn finish(&mut self) -> Bytes {
        assert!(self.count > 0, "a batch needs at least one record");
        let length = (self.buf.len() - LENGTH_END) as u32;
        let mut header = &mut self.buf[..HEADER_LEN];
        header.put_u64_le(0);
        header.put_u32_le(length);
        header.put_u32_le(0);
        header.put_u8(MAGIC);
        header.put_u8(0);
        header.put_u16_le(self.attributes);
        header.put_u32_le(self.count);
        header.put_i64_le(self.first_timestamp_ms);
        header.put_i64_le(self.max_timestamp_ms);
        header.put_u64_le(self.producer_id);
        header.put_u32_le(self.base_sequence);
        let crc = crc32c::crc32c(&self.buf[CRC_END..]);
        self.buf[LENGTH_END..CRC_END].copy_from_slice(&crc.to_le_bytes());
        let bytes = self.buf.split().freeze();
        self.buf.put_bytes(0, HEADER_LEN);
        self.count = 0;
        self.producer_id = 0;
        self.base_sequence = 0;
        self.attributes = 0;
        bytes
    }
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

/// Unsigned LEB128.
pub fn put_varint(buf: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

/// Unsigned LEB128; `None` on truncation or more than 10 bytes.
pub fn read_varint(buf: &mut impl Buf) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !buf.has_remaining() {
            return None;
        }
        let byte = buf.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take(buf: &mut Bytes, len: u64) -> Option<Bytes> {
    let len = usize::try_from(len).ok()?;
    (len <= buf.len()).then(|| buf.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Message = (i64, Option<Vec<u8>>, Vec<(String, Vec<u8>)>, Vec<u8>);

    fn build(messages: &[Message]) -> Bytes {
        let mut builder = BatchBuilder::new();
        for (timestamp, key, headers, value) in messages {
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            builder.push(*timestamp, key.as_deref(), &headers, value);
        }
        builder.finish()
    }

    fn message() -> impl Strategy<Value = Message> {
        (
            0i64..4_000_000_000_000,
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            proptest::collection::vec(
                ("[a-z]{0,4}", proptest::collection::vec(any::<u8>(), 0..4)),
                0..3,
            ),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
    }

    proptest! {
        #[test]
        fn encoded_messages_decode_to_themselves(messages in proptest::collection::vec(message(), 1..20), base in 0u64..1 << 40) {
            let mut bytes = build(&messages).to_vec();
            Batch::set_base_offset(&mut bytes, base);
            let batch = Batch::parse(bytes.into(), usize::MAX).unwrap();
            prop_assert_eq!(batch.record_count() as usize, messages.len());
            prop_assert_eq!(batch.last_offset(), base + messages.len() as u64 - 1);
            prop_assert_eq!(batch.max_timestamp_ms(), messages.iter().map(|m| m.0).max().unwrap());
            for (index, (record, message)) in batch.records().zip(&messages).enumerate() {
                let record = record.unwrap();
                prop_assert_eq!(record.offset, base + index as u64);
                prop_assert_eq!(record.timestamp_ms, message.0);
                prop_assert_eq!(record.key.as_deref(), message.1.as_deref());
                prop_assert_eq!(record.headers.len(), message.2.len());
                for ((name, value), (expected_name, expected_value)) in record.headers.iter().zip(&message.2) {
                    prop_assert_eq!(name, expected_name);
                    prop_assert_eq!(&value[..], &expected_value[..]);
                }
                prop_assert_eq!(&record.value[..], &message.3[..]);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Batch::parse(Bytes::from(bytes.clone()), 1 << 16);
            let _ = Batch::parse_many(Bytes::from(bytes), 1 << 16);
        }

        #[test]
        fn any_flipped_byte_after_the_offset_is_detected(messages in proptest::collection::vec(message(), 1..5), position in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = build(&messages).to_vec();
            let position = 8 + position.index(bytes.len() - 8);
            bytes[position] ^= 1 << bit;
            prop_assert!(Batch::parse(bytes.into(), usize::MAX).is_err());
        }
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_reading_more() {
        let bytes = build(&[(1, None, vec![], vec![0; 100])]);
        assert_eq!(
            check_len(&bytes[..12], 64),
            Err(BatchError::TooLarge {
                length: bytes.len(),
                limit: 64
            })
        );
        assert!(matches!(
            check_len(&bytes[..20], 1 << 20),
            Err(BatchError::Incomplete { .. })
        ));
    }

    #[test]
    fn several_batches_split_in_order() {
        let mut first = build(&[(1, None, vec![], b"a".to_vec())]).to_vec();
        Batch::set_base_offset(&mut first, 0);
        let mut second = build(&[
            (2, None, vec![], b"b".to_vec()),
            (3, None, vec![], b"c".to_vec()),
        ])
        .to_vec();
        Batch::set_base_offset(&mut second, 1);
        first.extend_from_slice(&second);
        let batches = Batch::parse_many(first.into(), 1 << 20).unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].base_offset(), 1);
        assert_eq!(batches[1].next_offset(), 3);
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = build(&[(1, None, vec![], b"a".to_vec())]).to_vec();
        bytes.push(0);
        assert!(Batch::parse(bytes.into(), 1 << 20).is_err());
    }
}
