//! A topic: a named set of partitions and the routing of a published batch to them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use tokio::sync::Notify;
use weir_batch::{Batch, BatchBuilder};
use weir_storage::io::Storage;

use crate::clock::Clock;
use crate::config::TopicConfig;
use crate::error::{Error, Result};
use crate::metrics::BrokerMetrics;
use crate::partition::{Confirmed, Partition, PendingConfirm};

pub(crate) struct Topic {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<Partition>,
    pub dir: PathBuf,
    /// Notified whenever any partition makes new batches visible.
    pub data: Arc<Notify>,
    /// Picks the partition of a batch without keys.
    round_robin: AtomicU32,
}

/// The partition of a keyed message: CRC32C of the key bytes modulo the partition count.
/// Stable across versions and languages (documented in docs/protocol.md), so a client can
/// compute it too.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    crc32c::crc32c(key) % partitions.max(1)
}

/// Splits `batch` into one batch per distinct value of `groups` (one entry per record), in
/// group order. Records keep their order within each part.
pub(crate) fn split_batch(
    batch: &Batch,
    groups: &[u32],
    group_count: u32,
) -> Result<Vec<(u32, Batch)>> {
    let mut builders: Vec<Option<BatchBuilder>> = (0..group_count).map(|_| None).collect();
    for (record, &group) in batch.records().zip(groups) {
        let record = record?;
        let headers: Vec<(&str, &[u8])> = record
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), &value[..]))
            .collect();
        builders[group as usize]
            .get_or_insert_with(BatchBuilder::new)
            .push(
                record.timestamp_ms,
                record.key.as_deref(),
                &headers,
                &record.value,
            );
    }
    let mut parts = Vec::new();
    for (group, builder) in builders.iter_mut().enumerate() {
        if let Some(builder) = builder {
            parts.push((group as u32, Batch::parse(builder.finish(), usize::MAX)?));
        }
    }
    Ok(parts)
}

/// Waits for every pending confirm.
pub(crate) async fn wait_all(pending: Vec<PendingConfirm>) -> Result<Vec<Confirmed>> {
    let mut confirms = Vec::with_capacity(pending.len());
    for confirm in pending {
        confirms.push(confirm.wait().await?);
    }
    Ok(confirms)
}

impl Topic {
    pub fn open(
        storage: &dyn Storage,
        root: &Path,
        name: &str,
        config: TopicConfig,
        clock: &Arc<dyn Clock>,
        metrics: &Arc<BrokerMetrics>,
    ) -> Result<Topic> {
        if config.partitions == 0 || config.partitions > 4096 {
            return Err(Error::InvalidArgument(format!(
                "a topic has 1 to 4096 partitions, not {}",
                config.partitions
            )));
        }
        let dir = root.join(name);
        let data = Arc::new(Notify::new());
        let partitions = (0..config.partitions)
            .map(|id| {
                Partition::open(
                    storage.directory(&dir.join(id.to_string()))?,
                    id,
                    name,
                    &config,
                    data.clone(),
                    clock.clone(),
                    metrics.clone(),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            name: name.to_owned(),
            config,
            partitions,
            dir,
            data,
            round_robin: AtomicU32::new(0),
        })
    }

    pub fn partition(&self, id: u32) -> Result<&Partition> {
        self.partitions.get(id as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "topic '{}' has {} partitions; there is no partition {id}",
                self.name,
                self.partitions.len()
            ))
        })
    }

    /// Queues `batch` for `partition`, or routes it: by key hash when records carry keys,
    /// otherwise the whole batch to the next partition in turn. Splitting re-encodes only when
    /// one batch's keys land in several partitions.
    pub async fn submit(
        &self,
        partition: Option<u32>,
        batch: Batch,
    ) -> Result<Vec<PendingConfirm>> {
        let count = self.partitions.len() as u32;
        if let Some(partition) = partition {
            return Ok(vec![self.partition(partition)?.submit(batch).await?]);
        }
        if count == 1 {
            return Ok(vec![self.partitions[0].submit(batch).await?]);
        }
        let default = self.round_robin.fetch_add(1, Ordering::Relaxed) % count;
        let targets: Vec<u32> = batch
            .records()
            .map(|record| {
                // A message id without a key also picks the partition, so a retried message
                // meets its earlier copy in the same partition's dedup window.
                record.map(
                    |record| match record.key.as_ref().or_else(|| record.message_id()) {
                        Some(key) => partition_for_key(key, count),
                        None => default,
                    },
                )
            })
            .collect::<std::result::Result<_, _>>()?;
        if targets.iter().all(|&target| target == targets[0]) {
            return Ok(vec![
                self.partitions[targets[0] as usize].submit(batch).await?,
            ]);
        }
        let mut pending = Vec::new();
        for (target, part) in split_batch(&batch, &targets, count)? {
            pending.push(self.partitions[target as usize].submit(part).await?);
        }
        Ok(pending)
    }

    /// Which of the message ids `wanted` the log holds from `marks` on: per partition, an
    /// offset taken before anything of interest was appended (a hand-over or commit mark). A
    /// mark past the end means the topic was made again since, so its whole log is new and
    /// read. Blocking reads; what was appended since the marks.
    pub fn find_message_ids(
        &self,
        marks: &[u64],
        wanted: &HashSet<Bytes>,
    ) -> Result<HashSet<Bytes>> {
        let mut found = HashSet::new();
        if wanted.is_empty() {
            return Ok(found);
        }
        for partition in &self.partitions {
            let reader = &partition.reader;
            let (start, end) = (reader.start_offset(), reader.end_offset());
            let mark = marks.get(partition.id as usize).copied().unwrap_or(0);
            let mut next = if mark > end { start } else { mark.max(start) };
            while next < end {
                let batches = reader.read(next, 1 << 20)?;
                let Some(last) = batches.last() else { break };
                next = last.next_offset();
                for batch in batches.iter().filter(|batch| batch.has_message_ids()) {
                    for record in batch.records() {
                        if let Some(id) = record?.message_id().filter(|id| wanted.contains(*id)) {
                            found.insert(id.clone());
                        }
                    }
                }
            }
        }
        Ok(found)
    }

    /// The ends of the partitions now: a mark for [`Topic::find_message_ids`].
    pub fn ends(&self) -> Vec<u64> {
        self.partitions
            .iter()
            .map(|partition| partition.reader.end_offset())
            .collect()
    }

    pub async fn close(&self) {
        for partition in &self.partitions {
            partition.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_hash_is_stable() {
        // Pinned: clients in other languages compute the same partition.
        assert_eq!(
            crc32c::crc32c(b"order-1"),
            partition_for_key(b"order-1", u32::MAX)
        );
        assert_eq!(partition_for_key(b"order-1", 1), 0);
        let spread: std::collections::BTreeSet<u32> = (0..100)
            .map(|key| partition_for_key(format!("key-{key}").as_bytes(), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
