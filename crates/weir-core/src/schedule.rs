//! The schedule: delayed messages, stored durably until due, in the metadata store.
//!
//! Tables (keys big-endian so byte order is time order):
//! - `schedule`: `due_ms(u64) ‖ id(u64)` → entry (topic, partition, business key, batch);
//! - `schedule_ids`: `id` → the `schedule` key, to find an entry by id;
//! - `schedule_keys`: business key → `id`, to cancel by business key.
//!
//! Nothing is kept in memory but the earliest due time: the due entries are a range scan from
//! the start of `schedule`, so a million pending messages cost disk, not RAM.

use std::collections::HashSet;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use weir_storage::{MetaOp, MetaStore};

use crate::error::{Error, Result};

const SCHEDULE: &str = "schedule";
const SCHEDULE_IDS: &str = "schedule_ids";
const SCHEDULE_KEYS: &str = "schedule_keys";

/// A scheduled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledEntry {
    pub id: u64,
    pub due_ms: i64,
    pub topic: String,
    pub partition: Option<u32>,
    pub business_key: Option<String>,
    /// The encoded batch, as published.
    pub batch: Bytes,
}

fn schedule_key(due_ms: i64, id: u64) -> [u8; 16] {
    let mut key = [0; 16];
    key[..8].copy_from_slice(&(due_ms.max(0) as u64).to_be_bytes());
    key[8..].copy_from_slice(&id.to_be_bytes());
    key
}

fn encode(entry: &ScheduledEntry) -> Vec<u8> {
    let business_key = entry.business_key.as_deref().unwrap_or("");
    let mut value =
        BytesMut::with_capacity(16 + entry.topic.len() + business_key.len() + entry.batch.len());
    value.put_u16_le(entry.topic.len() as u16);
    value.put_slice(entry.topic.as_bytes());
    value.put_u32_le(entry.partition.unwrap_or(u32::MAX));
    value.put_u8(u8::from(entry.business_key.is_some()));
    value.put_u16_le(business_key.len() as u16);
    value.put_slice(business_key.as_bytes());
    value.put_slice(&entry.batch);
    value.to_vec()
}

fn decode(key: &[u8], value: &[u8]) -> Result<ScheduledEntry> {
    let corrupt = || Error::Storage("unreadable schedule entry".into());
    if key.len() != 16 {
        return Err(corrupt());
    }
    let due_ms = u64::from_be_bytes(key[..8].try_into().map_err(|_| corrupt())?) as i64;
    let id = u64::from_be_bytes(key[8..].try_into().map_err(|_| corrupt())?);
    let mut cursor = value;
    let take_string = |cursor: &mut &[u8], length: usize| -> Result<String> {
        if cursor.len() < length {
            return Err(corrupt());
        }
        let text = std::str::from_utf8(&cursor[..length])
            .map_err(|_| corrupt())?
            .to_owned();
        cursor.advance(length);
        Ok(text)
    };
    if cursor.len() < 2 {
        return Err(corrupt());
    }
    let topic_length = cursor.get_u16_le() as usize;
    let topic = take_string(&mut cursor, topic_length)?;
    if cursor.len() < 7 {
        return Err(corrupt());
    }
    let partition = Some(cursor.get_u32_le()).filter(|&partition| partition != u32::MAX);
    let has_business_key = cursor.get_u8() == 1;
    let business_key_length = cursor.get_u16_le() as usize;
    let business_key = take_string(&mut cursor, business_key_length)?;
    Ok(ScheduledEntry {
        id,
        due_ms,
        topic,
        partition,
        business_key: has_business_key.then_some(business_key),
        batch: Bytes::copy_from_slice(cursor),
    })
}

/// Adds entries in one durable write. Fails if a business key is already scheduled, or given
/// twice among `entries`.
///
/// The write holds one run of operations per table, the `schedule` keys in key order: the
/// store keeps a table open across consecutive operations on the same table (alternating
/// tables reopened it once per operation), and neighbouring keys share B-tree pages.
pub fn insert(meta: &MetaStore, entries: &[ScheduledEntry]) -> Result<()> {
    let mut business_keys = Vec::new();
    let mut claimed = HashSet::new();
    for entry in entries {
        let Some(business_key) = &entry.business_key else {
            continue;
        };
        if !claimed.insert(business_key.as_str())
            || meta.get(SCHEDULE_KEYS, business_key.as_bytes())?.is_some()
        {
            return Err(Error::InvalidArgument(format!(
                "a message with business key '{business_key}' is already scheduled"
            )));
        }
        business_keys.push(MetaOp::Put {
            table: SCHEDULE_KEYS,
            key: business_key.as_bytes().to_vec(),
            value: entry.id.to_be_bytes().to_vec(),
        });
    }
    let mut keyed: Vec<([u8; 16], &ScheduledEntry)> = entries
        .iter()
        .map(|entry| (schedule_key(entry.due_ms, entry.id), entry))
        .collect();
    let mut ops = business_keys;
    ops.reserve(entries.len() * 2);
    // Ids in the order given (ascending, as the broker hands them out).
    ops.extend(keyed.iter().map(|(key, entry)| MetaOp::Put {
        table: SCHEDULE_IDS,
        key: entry.id.to_be_bytes().to_vec(),
        value: key.to_vec(),
    }));
    keyed.sort_unstable_by_key(|(key, _)| *key);
    ops.extend(keyed.iter().map(|(key, entry)| MetaOp::Put {
        table: SCHEDULE,
        key: key.to_vec(),
        value: encode(entry),
    }));
    Ok(meta.write(&ops, true)?)
}

/// Entries due at or before `now_ms`, earliest first, at most `limit`.
pub fn due(meta: &MetaStore, now_ms: i64, limit: usize) -> Result<Vec<ScheduledEntry>> {
    let end = schedule_key(now_ms.saturating_add(1), 0);
    meta.scan_range(SCHEDULE, &[], Some(&end), limit)?
        .iter()
        .map(|(key, value)| decode(key, value))
        .collect()
}

/// Entries in due order after `(after_due_ms, after_id)`, optionally of one topic.
pub fn list(
    meta: &MetaStore,
    topic: Option<&str>,
    after: Option<(i64, u64)>,
    limit: usize,
) -> Result<Vec<ScheduledEntry>> {
    let mut start = after.map_or([0; 16], |(due_ms, id)| {
        schedule_key(due_ms, id.saturating_add(1))
    });
    let mut found = Vec::new();
    // Pages through the table so a topic filter does not load everything at once.
    loop {
        let page = meta.scan_range(SCHEDULE, &start, None, 1024)?;
        let Some((last_key, _)) = page.last() else {
            break;
        };
        let mut next = [0u8; 16];
        next.copy_from_slice(last_key);
        let next_id = u64::from_be_bytes(
            next[8..]
                .try_into()
                .map_err(|_| Error::Storage("bad key".into()))?,
        );
        next[8..].copy_from_slice(&next_id.saturating_add(1).to_be_bytes());
        for (key, value) in &page {
            let entry = decode(key, value)?;
            if topic.is_none_or(|topic| topic == entry.topic) {
                found.push(entry);
                if found.len() >= limit {
                    return Ok(found);
                }
            }
        }
        if page.len() < 1024 {
            break;
        }
        start = next;
    }
    Ok(found)
}

/// The entry with `id`, if scheduled.
pub fn get(meta: &MetaStore, id: u64) -> Result<Option<ScheduledEntry>> {
    let Some(key) = meta.get(SCHEDULE_IDS, &id.to_be_bytes())? else {
        return Ok(None);
    };
    meta.get(SCHEDULE, &key)?
        .map(|value| decode(&key, &value))
        .transpose()
}

/// The id scheduled under `business_key`, if any.
pub fn id_for_business_key(meta: &MetaStore, business_key: &str) -> Result<Option<u64>> {
    Ok(meta
        .get(SCHEDULE_KEYS, business_key.as_bytes())?
        .and_then(|bytes| bytes.try_into().ok().map(u64::from_be_bytes)))
}

/// Operations that remove `entry` from all three tables.
pub fn remove_ops(entry: &ScheduledEntry) -> Vec<MetaOp> {
    let mut ops = vec![
        MetaOp::Delete {
            table: SCHEDULE,
            key: schedule_key(entry.due_ms, entry.id).to_vec(),
        },
        MetaOp::Delete {
            table: SCHEDULE_IDS,
            key: entry.id.to_be_bytes().to_vec(),
        },
    ];
    if let Some(business_key) = &entry.business_key {
        ops.push(MetaOp::Delete {
            table: SCHEDULE_KEYS,
            key: business_key.as_bytes().to_vec(),
        });
    }
    ops
}

/// Moves `entry` to `due_ms`, durably.
pub fn reschedule(meta: &MetaStore, entry: &ScheduledEntry, due_ms: i64) -> Result<ScheduledEntry> {
    let mut ops = remove_ops(entry);
    let moved = ScheduledEntry {
        due_ms,
        ..entry.clone()
    };
    let key = schedule_key(due_ms, moved.id);
    if let Some(business_key) = &moved.business_key {
        ops.push(MetaOp::Put {
            table: SCHEDULE_KEYS,
            key: business_key.as_bytes().to_vec(),
            value: moved.id.to_be_bytes().to_vec(),
        });
    }
    ops.push(MetaOp::Put {
        table: SCHEDULE_IDS,
        key: moved.id.to_be_bytes().to_vec(),
        value: key.to_vec(),
    });
    ops.push(MetaOp::Put {
        table: SCHEDULE,
        key: key.to_vec(),
        value: encode(&moved),
    });
    meta.write(&ops, true)?;
    Ok(moved)
}

/// How many entries are scheduled.
pub fn count(meta: &MetaStore) -> Result<u64> {
    Ok(meta.count(SCHEDULE)?)
}

/// The earliest due time, if anything is scheduled.
pub fn earliest(meta: &MetaStore) -> Result<Option<i64>> {
    Ok(meta
        .scan_range(SCHEDULE, &[], None, 1)?
        .first()
        .and_then(|(key, _)| key.get(..8).and_then(|bytes| bytes.try_into().ok()))
        .map(|bytes: [u8; 8]| u64::from_be_bytes(bytes) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_come_due_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let entry = |id: u64, due_ms: i64, business_key: Option<&str>| ScheduledEntry {
            id,
            due_ms,
            topic: "orders".into(),
            partition: if id.is_multiple_of(2) { Some(1) } else { None },
            business_key: business_key.map(str::to_owned),
            batch: Bytes::from(vec![id as u8; 10]),
        };
        insert(
            &meta,
            &[
                entry(1, 300, Some("order-1")),
                entry(2, 100, None),
                entry(3, 200, Some("")),
            ],
        )
        .unwrap();
        assert!(
            insert(&meta, &[entry(4, 50, Some("order-1"))]).is_err(),
            "business keys are unique"
        );
        let due_now = due(&meta, 200, 10).unwrap();
        assert_eq!(
            due_now.iter().map(|entry| entry.id).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(due_now[0], entry(2, 100, None));
        assert_eq!(due_now[1].business_key.as_deref(), Some(""));
        assert_eq!(get(&meta, 1).unwrap(), Some(entry(1, 300, Some("order-1"))));
        assert_eq!(id_for_business_key(&meta, "order-1").unwrap(), Some(1));
        let moved = reschedule(&meta, &entry(1, 300, Some("order-1")), 50).unwrap();
        assert_eq!(earliest(&meta).unwrap(), Some(50));
        meta.write(&remove_ops(&moved), true).unwrap();
        assert_eq!(id_for_business_key(&meta, "order-1").unwrap(), None);
        assert_eq!(count(&meta).unwrap(), 2);
        let page = list(&meta, Some("orders"), Some((100, 2)), 10).unwrap();
        assert_eq!(
            page.iter().map(|entry| entry.id).collect::<Vec<_>>(),
            vec![3]
        );
    }

    #[test]
    fn one_write_refuses_a_business_key_given_twice_and_keeps_every_entry_findable() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let entry = |id: u64, due_ms: i64, business_key: Option<&str>| ScheduledEntry {
            id,
            due_ms,
            topic: "orders".into(),
            partition: None,
            business_key: business_key.map(str::to_owned),
            batch: Bytes::from(vec![id as u8; 10]),
        };
        assert!(
            insert(
                &meta,
                &[
                    entry(1, 100, Some("order-1")),
                    entry(2, 50, Some("order-1"))
                ]
            )
            .is_err(),
            "a business key names one scheduled message, even within one write"
        );
        assert_eq!(count(&meta).unwrap(), 0, "a refused write stores nothing");
        assert_eq!(id_for_business_key(&meta, "order-1").unwrap(), None);

        // Given out of due order, with and without business keys: stored in due order, each
        // findable by id and by key.
        let entries: Vec<ScheduledEntry> = (10..20)
            .map(|id| {
                let key = format!("order-{id}");
                entry(
                    id,
                    1_000 - id as i64 * 7 % 5,
                    (id % 3 == 0).then_some(key.as_str()),
                )
            })
            .collect();
        insert(&meta, &entries).unwrap();
        let due_now = due(&meta, 1_000, 100).unwrap();
        let mut expected = entries.clone();
        expected.sort_by_key(|entry| (entry.due_ms, entry.id));
        assert_eq!(due_now, expected);
        for entry in &entries {
            assert_eq!(get(&meta, entry.id).unwrap().as_ref(), Some(entry));
            if let Some(business_key) = &entry.business_key {
                assert_eq!(
                    id_for_business_key(&meta, business_key).unwrap(),
                    Some(entry.id)
                );
            }
        }
    }
}
