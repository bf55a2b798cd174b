//! The durable schedule, in tables of the metadata store (keys big-endian, so byte order is
//! number order):
//! - `schedule_entries`: storage key → entry (due time, id, topic, partition, business key,
//!   batch). A storage key is `bucket(due) << 34 | serial`: a bucket's entries are one key
//!   range, so a call's inserts append at the end of the few buckets its due times fall in, a
//!   bucket loads with one range scan, and a delivered bucket is removed as one range;
//! - `schedule_keys`: business key → id, to cancel by business key;
//! - `schedule_moved`: id → storage key, for rescheduled entries only (an entry's id, which
//!   users see, is the storage key it was first written under, and never changes);
//! - `schedule_state`: `serial_limit` → the serials below it may be in use;
//! - `schedule_handed_over`: (bucket, topic) → the end offset of each of the topic's
//!   partitions before the first entry of that bucket was handed over to it (see the broker's
//!   `schedule` module for the invariant it keeps);
//! - `schedule_quarantine`: storage key → an entry value that does not decode, set aside so
//!   that no pass over due entries trips on it again.
//!
//! Invariant: an entry, its business key and its move are written and removed together; a
//! bucket's hand-over marks are removed in the write that removes the last of its entries.

use std::collections::HashSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use weir_storage::{MetaOp, MetaStore};

use super::bucket_of;
use crate::error::{Error, Result};

const ENTRIES: &str = "schedule_entries";
const BUSINESS_KEYS: &str = "schedule_keys";
const MOVED: &str = "schedule_moved";
const STATE: &str = "schedule_state";
const SERIAL_LIMIT: &[u8] = b"serial_limit";
const HANDED_OVER: &str = "schedule_handed_over";
const QUARANTINE: &str = "schedule_quarantine";

/// Bits of a storage key below its bucket.
const SERIAL_BITS: u32 = 34;
const SERIAL_MASK: u64 = (1 << SERIAL_BITS) - 1;

/// The storage key of the entry with `serial` due at `due_ms`. Serials wrap after 2^34
/// (17 billion) entries: a key repeats only if an entry that old is still pending in the same
/// 8-second bucket.
#[must_use]
pub fn storage_key(due_ms: i64, serial: u64) -> u64 {
    (bucket_of(due_ms) << SERIAL_BITS) | (serial & SERIAL_MASK)
}

/// The bucket a storage key is in.
#[must_use]
pub fn bucket_of_key(key: u64) -> u64 {
    key >> SERIAL_BITS
}

fn bucket_start_key(bucket: u64) -> [u8; 8] {
    (bucket << SERIAL_BITS).to_be_bytes()
}

/// A scheduled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEntry {
    /// What users name it by: its first storage key.
    pub id: u64,
    /// Where it is stored now (differs from `id` once rescheduled).
    pub key: u64,
    pub due_ms: i64,
    pub topic: String,
    pub partition: Option<u32>,
    pub business_key: Option<String>,
    /// The encoded batch, as published.
    pub batch: Bytes,
}

/// What identifies an entry in every table: enough to remove it without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    pub id: u64,
    pub key: u64,
    pub business_key: Option<String>,
}

impl ScheduledEntry {
    #[must_use]
    pub fn removal(&self) -> Removal {
        Removal {
            id: self.id,
            key: self.key,
            business_key: self.business_key.clone(),
        }
    }
}

fn corrupt() -> Error {
    Error::Storage("unreadable schedule entry".into())
}

/// The length of a string field, which the layout stores in 16 bits: refused rather than
/// truncated, since a truncated length makes the entry undecodable.
fn short_length(what: &str, text: &str) -> Result<u16> {
    u16::try_from(text.len()).map_err(|_| {
        Error::InvalidArgument(format!(
            "a scheduled message's {what} of {} bytes is too long to store",
            text.len()
        ))
    })
}

fn encode(entry: &ScheduledEntry) -> Result<Vec<u8>> {
    let business_key = entry.business_key.as_deref().unwrap_or("");
    let topic_length = short_length("topic", &entry.topic)?;
    let business_key_length = short_length("business key", business_key)?;
    let mut value =
        BytesMut::with_capacity(32 + entry.topic.len() + business_key.len() + entry.batch.len());
    value.put_i64_le(entry.due_ms);
    value.put_u64_le(entry.id);
    value.put_u16_le(topic_length);
    value.put_slice(entry.topic.as_bytes());
    value.put_u32_le(entry.partition.unwrap_or(u32::MAX));
    value.put_u8(u8::from(entry.business_key.is_some()));
    value.put_u16_le(business_key_length);
    value.put_slice(business_key.as_bytes());
    value.put_slice(&entry.batch);
    Ok(value.to_vec())
}

/// An entry's value, parsed in place.
struct Parsed<'a> {
    due_ms: i64,
    id: u64,
    topic: &'a str,
    partition: Option<u32>,
    business_key: Option<&'a str>,
    batch: &'a [u8],
}

fn take_str<'a>(cursor: &mut &'a [u8], length: usize) -> Result<&'a str> {
    let (text, rest) = cursor.split_at_checked(length).ok_or_else(corrupt)?;
    *cursor = rest;
    std::str::from_utf8(text).map_err(|_| corrupt())
}

fn parse(value: &[u8]) -> Result<Parsed<'_>> {
    let mut cursor = value;
    if cursor.len() < 18 {
        return Err(corrupt());
    }
    let due_ms = cursor.get_i64_le();
    let id = cursor.get_u64_le();
    let topic_length = cursor.get_u16_le() as usize;
    let topic = take_str(&mut cursor, topic_length)?;
    if cursor.len() < 7 {
        return Err(corrupt());
    }
    let partition = Some(cursor.get_u32_le()).filter(|&partition| partition != u32::MAX);
    let has_business_key = cursor.get_u8() == 1;
    let business_key_length = cursor.get_u16_le() as usize;
    let business_key = take_str(&mut cursor, business_key_length)?;
    Ok(Parsed {
        due_ms,
        id,
        topic,
        partition,
        business_key: has_business_key.then_some(business_key),
        batch: cursor,
    })
}

fn decode(key: u64, value: &[u8]) -> Result<ScheduledEntry> {
    let parsed = parse(value)?;
    Ok(ScheduledEntry {
        id: parsed.id,
        key,
        due_ms: parsed.due_ms,
        topic: parsed.topic.to_owned(),
        partition: parsed.partition,
        business_key: parsed.business_key.map(str::to_owned),
        batch: Bytes::copy_from_slice(parsed.batch),
    })
}

/// What removing the entry stored as `key` takes, without copying its batch.
fn decode_removal(key: &[u8], value: &[u8]) -> Result<Removal> {
    let parsed = parse(value)?;
    Ok(Removal {
        id: parsed.id,
        key: decode_u64(key)?,
        business_key: parsed.business_key.map(str::to_owned),
    })
}

fn decode_u64(bytes: &[u8]) -> Result<u64> {
    Ok(u64::from_be_bytes(bytes.try_into().map_err(|_| corrupt())?))
}

fn removal_ops(removal: &Removal, ops: &mut Vec<MetaOp>) {
    ops.push(MetaOp::Delete {
        table: ENTRIES,
        key: removal.key.to_be_bytes().to_vec(),
    });
    if removal.key != removal.id {
        ops.push(MetaOp::Delete {
            table: MOVED,
            key: removal.id.to_be_bytes().to_vec(),
        });
    }
    if let Some(business_key) = &removal.business_key {
        ops.push(MetaOp::Delete {
            table: BUSINESS_KEYS,
            key: business_key.as_bytes().to_vec(),
        });
    }
}

fn put_entry(entry: &ScheduledEntry) -> Result<MetaOp> {
    Ok(MetaOp::Put {
        table: ENTRIES,
        key: entry.key.to_be_bytes().to_vec(),
        value: encode(entry)?,
    })
}

/// The serial limit last written: every serial in use is below it.
pub fn serial_limit(meta: &MetaStore) -> Result<u64> {
    meta.get(STATE, SERIAL_LIMIT)?
        .map_or(Ok(0), |bytes| decode_u64(&bytes))
}

/// Removes `removals`, then adds `inserts` and records `serial_limit`, in one write. Fails,
/// writing nothing, if a business key of `inserts` is given twice or already names an entry
/// that is neither removed by this write nor `delivered` (by id; its key is reused).
pub fn write(
    meta: &MetaStore,
    inserts: &[ScheduledEntry],
    removals: &[Removal],
    delivered: impl Fn(u64) -> bool,
    serial_limit: u64,
    durable: bool,
) -> Result<()> {
    let freed: HashSet<&str> = removals
        .iter()
        .filter_map(|removal| removal.business_key.as_deref())
        .collect();
    let mut claimed = HashSet::new();
    for business_key in inserts
        .iter()
        .filter_map(|entry| entry.business_key.as_deref())
    {
        let taken = !freed.contains(business_key)
            && id_for_business_key(meta, business_key)?.is_some_and(|id| !delivered(id));
        if taken || !claimed.insert(business_key) {
            return Err(Error::InvalidArgument(format!(
                "a message with business key '{business_key}' is already scheduled"
            )));
        }
    }
    let mut ops = Vec::with_capacity(removals.len() * 2 + inserts.len() + 1);
    for removal in removals {
        removal_ops(removal, &mut ops);
    }
    let mut by_key: Vec<&ScheduledEntry> = inserts.iter().collect();
    by_key.sort_unstable_by_key(|entry| entry.key);
    for entry in by_key {
        ops.push(put_entry(entry)?);
    }
    ops.extend(inserts.iter().filter_map(|entry| {
        entry.business_key.as_ref().map(|business_key| MetaOp::Put {
            table: BUSINESS_KEYS,
            key: business_key.as_bytes().to_vec(),
            value: entry.id.to_be_bytes().to_vec(),
        })
    }));
    ops.push(MetaOp::Put {
        table: STATE,
        key: SERIAL_LIMIT.to_vec(),
        value: serial_limit.to_be_bytes().to_vec(),
    });
    Ok(meta.write(&ops, durable)?)
}

/// Moves `entry` to storage key `key` due at `due_ms`, durably; its id stays.
pub fn reschedule(
    meta: &MetaStore,
    entry: &ScheduledEntry,
    due_ms: i64,
    key: u64,
    serial_limit: u64,
) -> Result<ScheduledEntry> {
    let moved = ScheduledEntry {
        due_ms,
        key,
        ..entry.clone()
    };
    let mut ops = vec![MetaOp::Delete {
        table: ENTRIES,
        key: entry.key.to_be_bytes().to_vec(),
    }];
    ops.push(put_entry(&moved)?);
    ops.push(MetaOp::Put {
        table: MOVED,
        key: entry.id.to_be_bytes().to_vec(),
        value: key.to_be_bytes().to_vec(),
    });
    ops.push(MetaOp::Put {
        table: STATE,
        key: SERIAL_LIMIT.to_vec(),
        value: serial_limit.to_be_bytes().to_vec(),
    });
    meta.write(&ops, true)?;
    Ok(moved)
}

/// The entry with id `id`, if scheduled.
pub fn get(meta: &MetaStore, id: u64) -> Result<Option<ScheduledEntry>> {
    let key = match meta.get(MOVED, &id.to_be_bytes())? {
        Some(bytes) => decode_u64(&bytes)?,
        None => id,
    };
    let Some(value) = meta.get(ENTRIES, &key.to_be_bytes())? else {
        return Ok(None);
    };
    let entry = decode(key, &value)?;
    // A storage key reused as an id by a later entry is not the entry moved away from it.
    Ok((entry.id == id).then_some(entry))
}

/// The entries stored under `keys`, in order, from one snapshot (`None` where absent, an
/// error where the stored value does not decode).
pub fn get_many(meta: &MetaStore, keys: &[u64]) -> Result<Vec<Option<Result<ScheduledEntry>>>> {
    let raw: Vec<[u8; 8]> = keys.iter().map(|key| key.to_be_bytes()).collect();
    Ok(meta
        .get_many(ENTRIES, &raw)?
        .into_iter()
        .zip(keys)
        .map(|(value, &key)| value.map(|value| decode(key, &value)))
        .collect())
}

/// The id scheduled under `business_key`, if any.
pub fn id_for_business_key(meta: &MetaStore, business_key: &str) -> Result<Option<u64>> {
    meta.get(BUSINESS_KEYS, business_key.as_bytes())?
        .map(|bytes| decode_u64(&bytes))
        .transpose()
}

/// A bucket, the `(due, storage key)` of its entries, and the storage keys of those that do
/// not decode.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BucketEntries {
    pub bucket: u64,
    pub due: Vec<(i64, u64)>,
    pub undecodable: Vec<u64>,
}

/// The first bucket at or after `from` that holds entries.
pub fn next_bucket(meta: &MetaStore, from: u64) -> Result<Option<BucketEntries>> {
    let Some((first, _)) = meta
        .scan_range(ENTRIES, &bucket_start_key(from), None, 1)?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let bucket = bucket_of_key(decode_u64(&first)?);
    let end = bucket.checked_add(1).map(bucket_start_key);
    // Each value parsed in place, not copied: a bucket's batches can be tens of MB. Parsing
    // it whole here finds an undecodable entry before a hand-over would trip on it.
    let rows = meta.scan_range_map(
        ENTRIES,
        &bucket_start_key(bucket),
        end.as_ref().map(|end| &end[..]),
        usize::MAX,
        |key, value| (decode_u64(key), parse(value).map(|parsed| parsed.due_ms)),
    )?;
    let mut entries = BucketEntries {
        bucket,
        ..BucketEntries::default()
    };
    for (key, due_ms) in rows {
        // A key that is not 8 bytes cannot have been written by `put_entry`.
        let key = key?;
        match due_ms {
            Ok(due_ms) => entries.due.push((due_ms, key)),
            Err(_) => entries.undecodable.push(key),
        }
    }
    Ok(Some(entries))
}

/// Every entry of `bucket`, leaving out those that do not decode (a load sets them aside).
pub fn bucket_entries(meta: &MetaStore, bucket: u64) -> Result<Vec<ScheduledEntry>> {
    let end = bucket.checked_add(1).map(bucket_start_key);
    let rows = meta.scan_range_map(
        ENTRIES,
        &bucket_start_key(bucket),
        end.as_ref().map(|end| &end[..]),
        usize::MAX,
        |key, value| decode(decode_u64(key)?, value),
    )?;
    Ok(rows.into_iter().filter_map(Result::ok).collect())
}

/// Moves the entries stored under `keys` that are still there to the quarantine table, in one
/// durable write. Returns how many were moved.
pub fn quarantine(meta: &MetaStore, keys: &[u64]) -> Result<usize> {
    let raw: Vec<[u8; 8]> = keys.iter().map(|key| key.to_be_bytes()).collect();
    let mut ops = Vec::new();
    for (key, value) in raw.iter().zip(meta.get_many(ENTRIES, &raw)?) {
        if let Some(value) = value {
            ops.push(MetaOp::Put {
                table: QUARANTINE,
                key: key.to_vec(),
                value,
            });
            ops.push(MetaOp::Delete {
                table: ENTRIES,
                key: key.to_vec(),
            });
        }
    }
    let moved = ops.len() / 2;
    if moved > 0 {
        meta.write(&ops, true)?;
    }
    Ok(moved)
}

/// How many undecodable entries have been set aside.
pub fn quarantined(meta: &MetaStore) -> Result<u64> {
    Ok(meta.count(QUARANTINE)?)
}

/// Where a topic's partitions ended (the next offset of each) before the first entry of
/// `bucket` was handed over to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOverMark {
    pub bucket: u64,
    pub topic: String,
    pub ends: Vec<u64>,
}

fn mark_key(bucket: u64, topic: &str) -> Vec<u8> {
    let mut key = bucket_start_key(bucket).to_vec();
    key.extend_from_slice(topic.as_bytes());
    key
}

/// Writes `marks` durably.
pub fn put_marks(meta: &MetaStore, marks: &[HandOverMark]) -> Result<()> {
    let ops: Vec<MetaOp> = marks
        .iter()
        .map(|mark| MetaOp::Put {
            table: HANDED_OVER,
            key: mark_key(mark.bucket, &mark.topic),
            value: mark.ends.iter().flat_map(|end| end.to_le_bytes()).collect(),
        })
        .collect();
    Ok(meta.write(&ops, true)?)
}

/// Every hand-over mark, by bucket. A value that does not decode reads as "from the start of
/// each partition", which is always safe.
pub fn marks(meta: &MetaStore) -> Result<Vec<HandOverMark>> {
    let rows = meta.scan_range_map(HANDED_OVER, &[], None, usize::MAX, |key, value| {
        let (bucket, topic) = key.split_at_checked(8)?;
        Some(HandOverMark {
            bucket: decode_u64(bucket).ok()? >> SERIAL_BITS,
            topic: std::str::from_utf8(topic).ok()?.to_owned(),
            ends: value
                .chunks_exact(8)
                .map(|end| u64::from_le_bytes(end.try_into().unwrap_or_default()))
                .collect(),
        })
    })?;
    Ok(rows.into_iter().flatten().collect())
}

/// Deletes of every hand-over mark of a bucket below `until` (all of them with `None`).
fn mark_deletes(meta: &MetaStore, until: Option<u64>, ops: &mut Vec<MetaOp>) -> Result<()> {
    let end = until.map(bucket_start_key);
    let keys = meta.scan_range_map(
        HANDED_OVER,
        &[],
        end.as_ref().map(|end| &end[..]),
        usize::MAX,
        |key, _| key.to_vec(),
    )?;
    ops.extend(keys.into_iter().map(|key| MetaOp::Delete {
        table: HANDED_OVER,
        key,
    }));
    Ok(())
}

/// What a start found of the hand-overs an earlier run left unsettled.
#[derive(Debug, Default)]
pub struct Settled {
    /// Entries wholly in the log: removed.
    pub delivered: Vec<Removal>,
    /// Entries partly in the log: stored again with only the records still to deliver.
    pub partly_delivered: Vec<ScheduledEntry>,
}

/// Applies `settled` and deletes every hand-over mark, in one durable write.
pub fn settle(meta: &MetaStore, settled: Settled) -> Result<()> {
    let mut ops = Vec::new();
    for mut removal in settled.delivered {
        if let Some(business_key) = &removal.business_key
            && id_for_business_key(meta, business_key)? != Some(removal.id)
        {
            removal.business_key = None;
        }
        removal_ops(&removal, &mut ops);
    }
    for entry in &settled.partly_delivered {
        ops.push(put_entry(entry)?);
    }
    mark_deletes(meta, None, &mut ops)?;
    Ok(meta.write(&ops, true)?)
}

/// Entries removed per write by [`remove_buckets`], so removing a bucket of any size (a
/// million messages due during a downtime, say) holds a bounded amount in memory.
const REMOVE_CHUNK: usize = 4096;

/// Removes every entry in buckets `from..until`, with their business keys and moves, in writes
/// of at most [`REMOVE_CHUNK`] entries (each entry leaves with its keys in one write), the
/// last one durable if `durable` and also deleting the hand-over marks of every bucket below
/// `until` (the caller knows no entry is left below `from`). An entry that does not decode is
/// moved to the quarantine table instead. Returns the storage keys removed.
pub fn remove_buckets(meta: &MetaStore, from: u64, until: u64, durable: bool) -> Result<Vec<u64>> {
    let mut removed = Vec::new();
    if from >= until {
        return Ok(removed);
    }
    let (start, end) = (bucket_start_key(from), bucket_start_key(until));
    loop {
        let rows =
            meta.scan_range_map(ENTRIES, &start, Some(&end), REMOVE_CHUNK, |key, value| {
                decode_removal(key, value).map_err(|_| (key.to_vec(), value.to_vec()))
            })?;
        let mut ops = Vec::with_capacity(rows.len());
        let last = rows.len() < REMOVE_CHUNK;
        for removal in rows {
            let mut removal = match removal {
                Ok(removal) => removal,
                Err((key, value)) => {
                    ops.push(MetaOp::Put {
                        table: QUARANTINE,
                        key: key.clone(),
                        value,
                    });
                    ops.push(MetaOp::Delete {
                        table: ENTRIES,
                        key,
                    });
                    continue;
                }
            };
            let key = removal.key;
            // A delivered entry's business key may name a newer entry by now.
            if let Some(business_key) = &removal.business_key
                && id_for_business_key(meta, business_key)? != Some(removal.id)
            {
                removal.business_key = None;
            }
            removal_ops(&removal, &mut ops);
            removed.push(key);
        }
        if last {
            mark_deletes(meta, Some(until), &mut ops)?;
        }
        meta.write(&ops, durable && last)?;
        if last {
            return Ok(removed);
        }
    }
}

/// Entries in due order after `(after_due_ms, after_id)`, optionally of one topic, at most
/// `limit`, leaving out those `hidden` names (by storage key): bucket by bucket, each sorted.
pub fn list(
    meta: &MetaStore,
    topic: Option<&str>,
    after: Option<(i64, u64)>,
    limit: usize,
    hidden: impl Fn(u64) -> bool,
) -> Result<Vec<ScheduledEntry>> {
    let mut found = Vec::new();
    let mut from = after.map_or(0, |(due_ms, _)| bucket_of(due_ms));
    while found.len() < limit {
        let Some(BucketEntries {
            bucket, due: keys, ..
        }) = next_bucket(meta, from)?
        else {
            break;
        };
        // Sorted by (due, storage key) before reading any entry, so a page reads only as far as
        // it needs. A storage key equals the id except for rescheduled entries.
        let mut keys = keys;
        keys.retain(|&due_key| !hidden(due_key.1) && after.is_none_or(|after| due_key > after));
        keys.sort_unstable();
        for chunk in keys.chunks(256) {
            let chunk: Vec<u64> = chunk.iter().map(|&(_, key)| key).collect();
            // An entry that does not decode is not listed (a load sets it aside).
            for entry in get_many(meta, &chunk)?.into_iter().flatten().flatten() {
                if topic.is_none_or(|topic| topic == entry.topic) {
                    found.push(entry);
                    if found.len() >= limit {
                        return Ok(found);
                    }
                }
            }
        }
        let Some(next) = bucket.checked_add(1) else {
            break;
        };
        from = next;
    }
    Ok(found)
}

/// How many entries are stored (delivered ones included until their bucket is removed).
pub fn count(meta: &MetaStore) -> Result<u64> {
    Ok(meta.count(ENTRIES)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::BUCKET_MS;

    fn entry(serial: u64, due_ms: i64, business_key: Option<&str>) -> ScheduledEntry {
        let key = storage_key(due_ms, serial);
        ScheduledEntry {
            id: key,
            key,
            due_ms,
            topic: if serial.is_multiple_of(3) {
                "audit"
            } else {
                "orders"
            }
            .into(),
            partition: if serial.is_multiple_of(2) {
                Some(1)
            } else {
                None
            },
            business_key: business_key.map(str::to_owned),
            batch: Bytes::from(vec![serial as u8; 10]),
        }
    }

    fn open() -> (tempfile::TempDir, MetaStore) {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        (dir, meta)
    }

    fn ids(entries: &[ScheduledEntry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.id).collect()
    }

    #[test]
    fn entries_round_trip_and_buckets_list_them_by_due_time() {
        let (_dir, meta) = open();
        let far = 5 * BUCKET_MS + 7;
        let entries = [
            entry(1, far, Some("order-1")),
            entry(2, 100, None),
            entry(4, 200, Some("")),
            entry(5, 50, None),
        ];
        write(&meta, &entries, &[], |_| false, 6, true).unwrap();
        assert_eq!(serial_limit(&meta).unwrap(), 6);
        assert_eq!(
            get(&meta, entries[0].id).unwrap().as_ref(),
            Some(&entries[0])
        );
        assert_eq!(
            get(&meta, entries[2].id)
                .unwrap()
                .unwrap()
                .business_key
                .as_deref(),
            Some("")
        );
        let many = get_many(&meta, &[entries[3].key, storage_key(0, 3), entries[1].key]).unwrap();
        assert_eq!(
            many.into_iter()
                .map(|entry| entry.transpose().unwrap())
                .collect::<Vec<_>>(),
            vec![Some(entries[3].clone()), None, Some(entries[1].clone())]
        );
        let found = next_bucket(&meta, 0).unwrap().unwrap();
        let mut keys = found.due;
        keys.sort_unstable();
        assert_eq!(
            (found.bucket, keys),
            (
                0,
                vec![
                    (50, entries[3].key),
                    (100, entries[1].key),
                    (200, entries[2].key)
                ]
            )
        );
        assert_eq!(
            next_bucket(&meta, 1).unwrap(),
            Some(BucketEntries {
                bucket: 5,
                due: vec![(far, entries[0].key)],
                undecodable: Vec::new()
            }),
            "empty buckets are skipped"
        );
        assert_eq!(next_bucket(&meta, 6).unwrap(), None);
        let all = list(&meta, None, None, 10, |_| false).unwrap();
        assert_eq!(
            ids(&all),
            ids(&[
                entries[3].clone(),
                entries[1].clone(),
                entries[2].clone(),
                entries[0].clone()
            ])
        );
        let after = list(&meta, None, Some((100, entries[1].id)), 10, |_| false).unwrap();
        assert_eq!(ids(&after), vec![entries[2].id, entries[0].id]);
        let orders = list(&meta, Some("orders"), None, 2, |_| false).unwrap();
        assert_eq!(ids(&orders), vec![entries[3].id, entries[1].id]);
        let unhidden = list(&meta, None, None, 10, |key| key == entries[3].key).unwrap();
        assert_eq!(unhidden.len(), 3);
        assert_eq!(
            id_for_business_key(&meta, "order-1").unwrap(),
            Some(entries[0].id)
        );
        assert_eq!(count(&meta).unwrap(), 4);
    }

    #[test]
    fn business_keys_are_unique_unless_freed_by_the_same_write() {
        let (_dir, meta) = open();
        let first = entry(1, 300, Some("order-1"));
        write(&meta, std::slice::from_ref(&first), &[], |_| false, 2, true).unwrap();
        assert!(
            write(
                &meta,
                &[entry(2, 50, Some("order-1"))],
                &[],
                |_| false,
                3,
                true
            )
            .is_err(),
            "business keys are unique"
        );
        assert!(
            write(
                &meta,
                &[entry(3, 1, Some("order-9")), entry(4, 2, Some("order-9"))],
                &[],
                |_| false,
                5,
                true
            )
            .is_err(),
            "even within one write"
        );
        assert_eq!(count(&meta).unwrap(), 1, "a refused write stores nothing");
        // Handing over order-1 frees its key for a new message in the same write.
        let second = entry(5, 900, Some("order-1"));
        write(
            &meta,
            std::slice::from_ref(&second),
            &[first.removal()],
            |_| false,
            6,
            false,
        )
        .unwrap();
        assert_eq!(
            id_for_business_key(&meta, "order-1").unwrap(),
            Some(second.id)
        );
        assert_eq!(get(&meta, first.id).unwrap(), None);

        // Once delivered (still stored until its bucket goes), its key is free for a newer
        // entry, and removing the old bucket leaves the newer entry's key alone.
        let third = entry(6, 3 * BUCKET_MS, Some("order-1"));
        let refused = write(&meta, std::slice::from_ref(&third), &[], |_| false, 7, true);
        assert!(refused.is_err(), "not delivered: still taken");
        write(
            &meta,
            std::slice::from_ref(&third),
            &[],
            |id| id == second.id,
            7,
            true,
        )
        .unwrap();
        assert_eq!(remove_buckets(&meta, 0, 1, true).unwrap(), vec![second.key]);
        assert_eq!(
            id_for_business_key(&meta, "order-1").unwrap(),
            Some(third.id)
        );
    }

    #[test]
    fn a_rescheduled_entry_keeps_its_id_and_leaves_with_its_bucket() {
        let (_dir, meta) = open();
        let original = entry(7, 100, Some("k"));
        write(
            &meta,
            std::slice::from_ref(&original),
            &[],
            |_| false,
            8,
            true,
        )
        .unwrap();
        let later = 3 * BUCKET_MS;
        let moved = reschedule(&meta, &original, later, storage_key(later, 8), 9).unwrap();
        assert_eq!(moved.id, original.id);
        assert_eq!(get(&meta, original.id).unwrap(), Some(moved.clone()));
        assert_eq!(
            next_bucket(&meta, 0)
                .unwrap()
                .map(|found| (found.bucket, found.due)),
            Some((3, vec![(later, moved.key)]))
        );
        // Removing its bucket removes the move and the business key too.
        assert!(remove_buckets(&meta, 0, 3, true).unwrap().is_empty());
        assert_eq!(remove_buckets(&meta, 3, 4, true).unwrap(), vec![moved.key]);
        assert_eq!(get(&meta, original.id).unwrap(), None);
        assert_eq!(id_for_business_key(&meta, "k").unwrap(), None);
        assert_eq!(count(&meta).unwrap(), 0);
    }

    /// Issue 10 defect 12: a business key of 64 KiB or more had its length written in 16 bits
    /// and the entry failed every pass over due entries after that.
    #[test]
    fn what_the_layout_cannot_hold_is_refused_and_what_does_not_decode_is_set_aside() {
        let (_dir, meta) = open();
        let huge = "k".repeat(usize::from(u16::MAX) + 1);
        let refused = write(
            &meta,
            &[entry(1, 100, Some(&huge))],
            &[],
            |_| false,
            2,
            true,
        );
        assert!(
            matches!(refused, Err(Error::InvalidArgument(_))),
            "{refused:?}"
        );
        assert_eq!(count(&meta).unwrap(), 0, "nothing stored");

        // A hand-corrupted entry among good ones in one bucket, with a hand-over mark.
        let good = entry(2, 100, Some("good"));
        write(&meta, std::slice::from_ref(&good), &[], |_| false, 4, true).unwrap();
        let broken = storage_key(200, 3);
        meta.write(
            &[MetaOp::Put {
                table: ENTRIES,
                key: broken.to_be_bytes().to_vec(),
                value: vec![1, 2, 3],
            }],
            true,
        )
        .unwrap();
        let found = next_bucket(&meta, 0).unwrap().unwrap();
        assert_eq!(found.due, vec![(100, good.key)]);
        assert_eq!(found.undecodable, vec![broken]);
        assert_eq!(bucket_entries(&meta, 0).unwrap(), vec![good.clone()]);
        assert!(
            get_many(&meta, &[broken]).unwrap()[0]
                .as_ref()
                .unwrap()
                .is_err()
        );
        assert_eq!(
            list(&meta, None, None, 10, |_| false).unwrap(),
            vec![good.clone()]
        );
        assert_eq!(quarantine(&meta, &[broken, storage_key(0, 99)]).unwrap(), 1);
        assert_eq!(quarantined(&meta).unwrap(), 1);
        assert_eq!(
            next_bucket(&meta, 0).unwrap().unwrap().undecodable,
            Vec::<u64>::new()
        );

        // A bucket removal sets aside what it cannot decode too, and takes the bucket's marks.
        meta.write(
            &[MetaOp::Put {
                table: ENTRIES,
                key: broken.to_be_bytes().to_vec(),
                value: vec![4],
            }],
            true,
        )
        .unwrap();
        let mark = |bucket| HandOverMark {
            bucket,
            topic: "orders".into(),
            ends: vec![7, 9],
        };
        put_marks(&meta, &[mark(0), mark(1)]).unwrap();
        assert_eq!(marks(&meta).unwrap(), vec![mark(0), mark(1)]);
        assert_eq!(remove_buckets(&meta, 0, 1, true).unwrap(), vec![good.key]);
        assert_eq!(count(&meta).unwrap(), 0);
        assert_eq!(
            quarantined(&meta).unwrap(),
            1,
            "the same key, set aside again"
        );
        assert_eq!(marks(&meta).unwrap(), vec![mark(1)]);
        settle(&meta, Settled::default()).unwrap();
        assert!(marks(&meta).unwrap().is_empty());
    }
}
