//! The producer's batching decisions, without I/O: which messages share a batch and when a
//! batch is ready to send.
//!
//! Messages are grouped per topic and target partition (`None`: the broker routes). A batch is
//! *sealed* — closed to new messages and queued to send — when the next message would push it
//! past `max_batch_bytes`, when it reaches `max_batch_messages` or `max_batch_bytes`, when it
//! has waited `linger` since its first message, or when the caller flushes. Time is passed in,
//! so linger is tested without sleeping. Each open batch carries a ticket (the producer's
//! in-flight permit) that travels with it until its answer, which is how the producer bounds
//! the batches it buffers; the accumulator only stores it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;
use weir_batch::BatchBuilder;

use crate::confirm::{BatchOutcome, ConfirmFuture};
use crate::message::Message;

/// When a batch is full or old enough to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    pub linger: Duration,
    pub max_batch_messages: usize,
    pub max_batch_bytes: usize,
}

/// A batch still taking messages.
#[derive(Debug)]
struct OpenBatch<Ticket> {
    partition: Option<u32>,
    builder: BatchBuilder,
    outcome: Arc<BatchOutcome>,
    opened_at: Instant,
    ticket: Ticket,
    /// Each message's routing key (key, else message id), kept only when the broker routes
    /// (`partition` is `None`): if it splits the batch by key, the keys tell which message
    /// went where.
    keys: Vec<Option<Bytes>>,
    /// Each message's id, once one message has one (empty before): the broker may confirm
    /// some of them at copies it already holds.
    ids: Vec<Option<Bytes>>,
}

/// A batch closed to new messages, ready to publish.
#[derive(Debug)]
pub(crate) struct SealedBatch<Ticket> {
    pub topic: String,
    pub partition: Option<u32>,
    pub bytes: Bytes,
    pub count: usize,
    pub outcome: Arc<BatchOutcome>,
    /// Held, never read: dropping the batch once it is answered gives the ticket back.
    #[allow(dead_code)]
    pub ticket: Ticket,
    /// Each message's routing key (key, else message id) when the broker routes the batch;
    /// empty otherwise.
    pub keys: Vec<Option<Bytes>>,
    /// Each message's id; empty when none has one.
    pub ids: Vec<Option<Bytes>>,
}

/// What [`Accumulator::try_push`] did.
#[derive(Debug)]
pub(crate) enum Pushed {
    /// The message is in a batch. `sealed` says a batch became ready to send.
    Added {
        confirm: ConfirmFuture,
        sealed: bool,
    },
    /// No open batch can take the message: open one ([`Accumulator::open`]) and try again.
    /// `sealed` says a full batch was sealed to make room.
    NeedsBatch { sealed: bool },
}

/// Open batches per topic and partition, and sealed ones waiting to be sent.
///
/// Invariant: an open batch is never empty and never at or past a limit; a full one is sealed
/// by the push that filled it.
#[derive(Debug)]
pub(crate) struct Accumulator<Ticket> {
    limits: Limits,
    /// Per topic, a short list of open batches, one per target partition. A list, not a map:
    /// a producer rarely writes to more than a few partitions of a topic at once.
    open: HashMap<String, Vec<OpenBatch<Ticket>>>,
    sealed: VecDeque<SealedBatch<Ticket>>,
}

impl<Ticket> Accumulator<Ticket> {
    pub(crate) fn new(limits: Limits) -> Accumulator<Ticket> {
        Accumulator {
            limits,
            open: HashMap::new(),
            sealed: VecDeque::new(),
        }
    }

    /// Adds `message` to the open batch for `topic` and `partition`, sealing that batch first
    /// if the message would push it past the byte limit, and after if it is then full.
    pub(crate) fn try_push(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        message: &Message,
        timestamp_ms: i64,
    ) -> Pushed {
        let limits = self.limits;
        let Some(batches) = self.open.get_mut(topic) else {
            return Pushed::NeedsBatch { sealed: false };
        };
        let Some(position) = batches
            .iter()
            .position(|batch| batch.partition == partition)
        else {
            return Pushed::NeedsBatch { sealed: false };
        };
        let batch = &mut batches[position];
        if !batch.builder.is_empty()
            && batch.builder.encoded_len() + message.encoded_len_bound() > limits.max_batch_bytes
        {
            let batch = batches.swap_remove(position);
            self.sealed.push_back(seal(topic, batch));
            return Pushed::NeedsBatch { sealed: true };
        }
        let index = batch.builder.len() as usize;
        push(&mut batch.builder, message, timestamp_ms);
        if batch.partition.is_none() {
            batch.keys.push(message.routing_key().cloned());
        }
        match message.id() {
            Some(id) => {
                batch.ids.resize(index, None);
                batch.ids.push(Some(id.clone()));
            }
            None if !batch.ids.is_empty() => batch.ids.push(None),
            None => {}
        }
        let confirm = ConfirmFuture::new(batch.outcome.clone(), index);
        let full = batch.builder.len() as usize >= limits.max_batch_messages
            || batch.builder.encoded_len() >= limits.max_batch_bytes;
        if full {
            let batch = batches.swap_remove(position);
            self.sealed.push_back(seal(topic, batch));
        }
        Pushed::Added {
            confirm,
            sealed: full,
        }
    }

    /// Opens an empty batch for `topic` and `partition` holding `ticket`. If one is already
    /// open (another sender got there first) the ticket is handed back unused.
    ///
    /// The batch counts as opened `now` for linger. It stays empty only until the caller's
    /// retried push, which always fits an empty batch.
    pub(crate) fn open(
        &mut self,
        topic: &str,
        partition: Option<u32>,
        ticket: Ticket,
        now: Instant,
    ) -> Option<Ticket> {
        let batches = self.open.entry(topic.to_owned()).or_default();
        if batches.iter().any(|batch| batch.partition == partition) {
            return Some(ticket);
        }
        batches.push(OpenBatch {
            partition,
            builder: BatchBuilder::with_capacity(self.limits.max_batch_bytes.min(16 * 1024)),
            outcome: Arc::new(BatchOutcome::default()),
            opened_at: now,
            ticket,
            keys: Vec::new(),
            ids: Vec::new(),
        });
        None
    }

    /// Seals every open batch (a flush).
    pub(crate) fn seal_all(&mut self) {
        for (topic, batches) in self.open.drain() {
            for batch in batches {
                if !batch.builder.is_empty() {
                    self.sealed.push_back(seal(&topic, batch));
                }
            }
        }
    }

    /// Seals the batches that have lingered long enough by `now`, and returns every sealed
    /// batch in the order it was sealed.
    pub(crate) fn take_ready(&mut self, now: Instant) -> Vec<SealedBatch<Ticket>> {
        let linger = self.limits.linger;
        for (topic, batches) in &mut self.open {
            let mut index = 0;
            while index < batches.len() {
                let batch = &batches[index];
                if !batch.builder.is_empty() && batch.opened_at + linger <= now {
                    let batch = batches.remove(index);
                    self.sealed.push_back(seal(topic, batch));
                } else {
                    index += 1;
                }
            }
        }
        self.open.retain(|_, batches| !batches.is_empty());
        self.sealed.drain(..).collect()
    }

    /// When the oldest open batch will have lingered enough.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.open
            .values()
            .flatten()
            .map(|batch| batch.opened_at + self.limits.linger)
            .min()
    }

    /// Whether no message waits to be sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.sealed.is_empty() && self.open.values().all(|batches| batches.is_empty())
    }
}

fn seal<Ticket>(topic: &str, mut batch: OpenBatch<Ticket>) -> SealedBatch<Ticket> {
    let count = batch.builder.len() as usize;
    SealedBatch {
        topic: topic.to_owned(),
        partition: batch.partition,
        bytes: batch.builder.finish(),
        count,
        outcome: batch.outcome,
        ticket: batch.ticket,
        keys: batch.keys,
        ids: batch.ids,
    }
}

/// Encodes `messages` as one batch, stamping those without a timestamp with `timestamp_ms`.
/// `None` for no messages.
pub(crate) fn encode_messages(messages: &[Message], timestamp_ms: i64) -> Option<Bytes> {
    if messages.is_empty() {
        return None;
    }
    let bytes = messages
        .iter()
        .map(Message::encoded_len_bound)
        .sum::<usize>();
    let mut builder = BatchBuilder::with_capacity(bytes + weir_batch::HEADER_LEN);
    for message in messages {
        push(
            &mut builder,
            message,
            message.timestamp_ms.unwrap_or(timestamp_ms),
        );
    }
    Some(builder.finish())
}

fn push(builder: &mut BatchBuilder, message: &Message, timestamp_ms: i64) {
    if message.headers.is_empty() {
        builder.push(timestamp_ms, message.key.as_deref(), &[], &message.value);
    } else {
        let headers: Vec<(&str, &[u8])> = message
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), &value[..]))
            .collect();
        builder.push(
            timestamp_ms,
            message.key.as_deref(),
            &headers,
            &message.value,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_batch::Batch;

    fn limits() -> Limits {
        Limits {
            linger: Duration::from_millis(5),
            max_batch_messages: 3,
            max_batch_bytes: 1024,
        }
    }

    /// Pushes like the producer does: open a batch when asked to, then push again. Returns
    /// whether a batch was sealed.
    fn send(
        accumulator: &mut Accumulator<u32>,
        topic: &str,
        partition: Option<u32>,
        message: &Message,
        now: Instant,
    ) -> bool {
        let mut sealed_any = false;
        let mut ticket = 0;
        loop {
            match accumulator.try_push(topic, partition, message, 1_000) {
                Pushed::Added { sealed, .. } => return sealed_any || sealed,
                Pushed::NeedsBatch { sealed } => {
                    sealed_any |= sealed;
                    ticket += 1;
                    assert!(ticket < 3, "an empty batch always takes a message");
                    accumulator.open(topic, partition, ticket, now);
                }
            }
        }
    }

    #[test]
    fn a_batch_is_sealed_when_it_reaches_the_message_limit() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(limits());
        let message = Message::new("hello");
        for expected_sealed in [false, false, true, false] {
            let sealed = send(&mut accumulator, "orders", None, &message, start);
            assert_eq!(sealed, expected_sealed);
        }
        let ready = accumulator.take_ready(start);
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].count, 3);
        assert_eq!(ready[0].topic, "orders");
        let batch = Batch::parse(ready[0].bytes.clone(), usize::MAX).unwrap();
        assert_eq!(batch.record_count(), 3);
        // The fourth message waits in a new open batch.
        assert!(!accumulator.is_empty());
    }

    /// Goal: no batch grows past the byte limit, and a message bigger than the limit still
    /// goes out, alone. Method: 400-byte messages under a 1024-byte limit, then a 2000-byte one.
    #[test]
    fn a_batch_is_sealed_before_it_would_pass_the_byte_limit() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(Limits {
            max_batch_messages: 100,
            ..limits()
        });
        let message = Message::new(vec![7u8; 400]);
        for _ in 0..7 {
            send(&mut accumulator, "big", Some(0), &message, start);
        }
        send(
            &mut accumulator,
            "big",
            Some(0),
            &Message::new(vec![1u8; 2000]),
            start,
        );
        let mut ready = accumulator.take_ready(start);
        accumulator.seal_all();
        ready.extend(accumulator.take_ready(start));
        let counts: Vec<usize> = ready.iter().map(|batch| batch.count).collect();
        assert_eq!(counts, [2, 2, 2, 1, 1]);
        for batch in &ready[..4] {
            assert!(batch.bytes.len() <= 1024, "{} bytes", batch.bytes.len());
        }
        assert!(ready[4].bytes.len() > 2000);
    }

    #[test]
    fn a_batch_is_sealed_once_it_has_lingered() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(limits());
        send(
            &mut accumulator,
            "orders",
            Some(1),
            &Message::new("a"),
            start,
        );
        assert_eq!(
            accumulator.next_deadline(),
            Some(start + Duration::from_millis(5))
        );
        assert!(
            accumulator
                .take_ready(start + Duration::from_millis(4))
                .is_empty()
        );
        let ready = accumulator.take_ready(start + Duration::from_millis(5));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].partition, Some(1));
        assert!(accumulator.is_empty());
        assert_eq!(accumulator.next_deadline(), None);
    }

    /// Goal: messages for different partitions and topics never share a batch, and batches
    /// come out in the order they were sealed. Method: interleaved sends, then a flush.
    #[test]
    fn each_topic_and_partition_has_its_own_batch() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(limits());
        send(&mut accumulator, "a", Some(0), &Message::new("1"), start);
        send(&mut accumulator, "a", Some(1), &Message::new("2"), start);
        send(
            &mut accumulator,
            "b",
            None,
            &Message::new("3").with_key("k"),
            start,
        );
        send(&mut accumulator, "a", Some(0), &Message::new("4"), start);
        accumulator.seal_all();
        let mut ready: Vec<(String, Option<u32>, usize)> = accumulator
            .take_ready(start)
            .into_iter()
            .map(|batch| {
                if batch.partition.is_none() {
                    assert_eq!(batch.keys, vec![Some(Bytes::from_static(b"k"))]);
                } else {
                    assert!(batch.keys.is_empty());
                }
                (batch.topic, batch.partition, batch.count)
            })
            .collect();
        ready.sort();
        assert_eq!(
            ready,
            [
                ("a".to_owned(), Some(0), 2),
                ("a".to_owned(), Some(1), 1),
                ("b".to_owned(), None, 1)
            ]
        );
    }

    #[test]
    fn a_second_open_hands_the_ticket_back() {
        let start = Instant::now();
        let mut accumulator: Accumulator<u32> = Accumulator::new(limits());
        assert_eq!(accumulator.open("t", None, 1, start), None);
        assert_eq!(accumulator.open("t", None, 2, start), Some(2));
        // An open batch without messages is not sent.
        accumulator.seal_all();
        assert!(accumulator.take_ready(start).is_empty());
    }

    #[test]
    fn a_message_keeps_its_key_headers_and_timestamp() {
        let start = Instant::now();
        let mut accumulator = Accumulator::new(limits());
        let message = Message::new("body")
            .with_key("user-1")
            .with_header("type", "signup");
        send(&mut accumulator, "users", Some(0), &message, start);
        accumulator.seal_all();
        let ready = accumulator.take_ready(start);
        let batch = Batch::parse(ready[0].bytes.clone(), usize::MAX).unwrap();
        let record = batch.records().next().unwrap().unwrap();
        assert_eq!(record.key.as_deref(), Some(&b"user-1"[..]));
        assert_eq!(
            record.header("type").map(|value| &value[..]),
            Some(&b"signup"[..])
        );
        assert_eq!(&record.value[..], b"body");
        assert_eq!(record.timestamp_ms, 1_000);
    }
}
