//! `weir sub`: consume a topic and print each message on a line of its own.
//!
//! Two ways in, as Kafka and RabbitMQ users expect. With `--group G` the consumer joins a
//! named, durable subscription: a queue by default (competing consumers, per-message ack, the
//! RabbitMQ queue), or a stream (committed offsets, the Kafka consumer group); what it acks is
//! done for good, and the next `weir sub --group G` carries on where it stopped. Without a
//! group it reads every partition by position from `--from` (default `latest`, like `tail -f`
//! and Kafka's console consumer), keeping each partition's next offset itself: the broker keeps
//! no group or state for it, and nothing is acked, so it changes nobody's position.
//!
//! Each message is printed, then acked: a message is never acked before it was written out.
//! Output is flushed once per batch of deliveries, so a pipe gets large writes while a person
//! sees each message as it arrives.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use weir_client::{Client, Consumer, Delivery, ErrorCode, GroupInfo, Start, SubscribeOptions};
use weir_client::{MessageId, Overflow, SubscriptionMode};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::duration::parse_duration;
use crate::cli::output::{format_mode, json_bytes, stdout_closed, write_json_line};
use crate::cli::position::{POSITION_HELP, describe_position, format_rfc3339, parse_position};

const EXAMPLES: &str = "\
Examples:
  weir sub orders --group billing                 # a durable work queue, acked as printed
  weir sub orders --group audit --mode stream     # a Kafka-style consumer group
  weir sub orders --from earliest --count 10      # the first 10 messages, no group kept
  weir sub orders --from 2026-01-31T09:00:00Z --json | jq .payload

  weir sub orders --group billing --max-deliveries 5 --retry-backoff 1s,5s,30s
  weir sub orders --group shipping --ordered-by-key --max-backlog 10000 --overflow reject-publish

Without --group, every partition is read from --from (default latest) and followed, and
nothing is acked: the broker keeps no group or state for the reader.
--from and the queue settings (--max-deliveries … --retry-backoff) apply when a group is
created; move an existing group with `weir group reset`. A message delivered
--max-deliveries times without an ack goes to the dead-letter topic (`weir dlq list`).";

/// What a queue does when its backlog is full, as `--overflow` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OverflowArgument {
    /// Publishers get `backlog_full` until consumers catch up
    RejectPublish,
    /// The oldest waiting messages move to the dead-letter topic
    DeadLetterOldest,
}

impl From<OverflowArgument> for Overflow {
    fn from(overflow: OverflowArgument) -> Overflow {
        match overflow {
            OverflowArgument::RejectPublish => Overflow::RejectPublish,
            OverflowArgument::DeadLetterOldest => Overflow::DeadLetterOldest,
        }
    }
}

/// The delivery guarantees of a new queue group.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Queue settings (a new queue group)")]
struct QueueArguments {
    /// Dead-letter a message after N deliveries without an ack (1 or more) [default: no
    /// limit]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_deliveries: Option<u32>,

    /// Where dead letters go: a topic name other than the group's topic [default:
    /// <topic>.<group>.dlq]
    #[arg(long, value_name = "TOPIC")]
    dead_letter_topic: Option<String>,

    /// Dead-letter messages older than this (by publish time) instead of delivering them,
    /// e.g. 10m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    ttl: Option<Duration>,

    /// Never two messages with the same key in flight: each key in order, many consumers
    #[arg(long)]
    ordered_by_key: bool,

    /// Most messages waiting (not yet acked) before --overflow applies
    #[arg(long, value_name = "N")]
    max_backlog: Option<u64>,

    /// What a full backlog does
    #[arg(
        long,
        value_enum,
        value_name = "POLICY",
        requires = "max_backlog",
        default_value = "reject-publish"
    )]
    overflow: OverflowArgument,

    /// Waits before redelivering a nacked message: the n-th failure waits the n-th, the last
    /// repeating, e.g. 1s,5s,30s
    #[arg(long, value_name = "DURATIONS", value_parser = parse_duration, value_delimiter = ',')]
    retry_backoff: Option<Vec<Duration>>,
}

impl QueueArguments {
    fn apply(&self, options: &mut SubscribeOptions) {
        options.max_deliveries = self.max_deliveries;
        options
            .dead_letter_topic
            .clone_from(&self.dead_letter_topic);
        options.message_ttl = self.ttl;
        options.ordered_by_key = self.ordered_by_key;
        options.max_backlog = self.max_backlog;
        options.overflow = self.overflow.into();
        options.retry_backoff = self.retry_backoff.clone().unwrap_or_default();
    }
}

/// How long closing may take after the last message (sending the last acks, leaving the
/// group) before the command exits anyway.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The two kinds of subscription, as `--mode` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArgument {
    /// Competing consumers, per-message ack, redelivery
    Queue,
    /// Committed offsets per partition, replay
    Stream,
}

impl From<ModeArgument> for SubscriptionMode {
    fn from(mode: ModeArgument) -> SubscriptionMode {
        match mode {
            ModeArgument::Queue => SubscriptionMode::Queue,
            ModeArgument::Stream => SubscriptionMode::Stream,
        }
    }
}

/// Consume messages from a topic and print one per line.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct SubscribeArguments {
    /// The topic to consume
    topic: String,

    /// Join this durable group (subscription); without it, read without a group
    #[arg(long)]
    group: Option<String>,

    /// The kind of a new group [default: queue, or the existing group's kind]
    #[arg(long, value_enum)]
    mode: Option<ModeArgument>,

    /// Where to start a new group, or the read without one [default: earliest with --group,
    /// latest without]
    #[arg(long, value_name = "POSITION", value_parser = parse_position, long_help = format!(
        "Where to start a new group, or the read without one: {POSITION_HELP}. \
         [default: earliest with --group, latest without]"
    ))]
    from: Option<Start>,

    /// Exit after N messages
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Do not ack: in a queue the messages stay unacked and are delivered again later
    #[arg(long)]
    no_ack: bool,

    /// Print each message as a JSON object (topic, partition, offset, key, headers,
    /// timestamp, delivery_count, payload) on its own line
    #[arg(long)]
    json: bool,

    /// Most messages delivered ahead of processing
    #[arg(long, value_name = "N", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..))]
    prefetch: u32,

    #[command(flatten)]
    queue: QueueArguments,

    #[command(flatten)]
    server: ServerArgument,
}

/// Which subscription to join, worked out from the flags and what the broker has.
struct Plan {
    group: String,
    options: SubscribeOptions,
    /// Whether to ack what is printed.
    acking: bool,
}

/// Most messages one read of a partition asks for (the broker's limit).
const MAX_READ: u32 = 1000;
/// Pauses between rounds of reads that found nothing new: short at first, so a reader keeps up
/// with a busy topic, longer while it stays quiet.
const IDLE_PAUSE_MIN: Duration = Duration::from_millis(20);
const IDLE_PAUSE_MAX: Duration = Duration::from_millis(250);
/// Between two looks for a topic that does not exist yet.
const TOPIC_WAIT: Duration = Duration::from_millis(500);

pub async fn run(arguments: SubscribeArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    if arguments.group.is_none() {
        check_read_arguments(&arguments)?;
        return read(&client, &arguments).await;
    }
    let plan = plan(&client, &arguments).await?;
    let mut consumer = client
        .subscribe(&arguments.topic, &plan.group, plan.options)
        .await
        .with_context(|| format!("cannot subscribe to topic '{}'", arguments.topic))?;
    let consumed = consume(&mut consumer, &arguments, plan.acking).await;
    // Leave the group either way, so that what was received and not acked goes back to it
    // now rather than after the ack timeout. A close that does not finish in time loses
    // nothing: the broker redelivers what it did not hear acked.
    let closed = match tokio::time::timeout(CLOSE_TIMEOUT, consumer.close()).await {
        Ok(closed) => closed.context("cannot send the last acks"),
        Err(_) => Ok(()),
    };
    consumed?;
    closed
}

/// Refuses group settings given for a read without a group.
fn check_read_arguments(arguments: &SubscribeArguments) -> anyhow::Result<()> {
    let mut options = SubscribeOptions::default();
    arguments.queue.apply(&mut options);
    if options.has_queue_settings() {
        bail!("the queue settings need --group: they belong to a named queue group");
    }
    if arguments.mode == Some(ModeArgument::Queue) {
        bail!("--mode queue needs --group: a queue is shared by the consumers of a named group");
    }
    Ok(())
}

/// Reads without a group: every partition from `--from`, following each by the next offset
/// the broker gives, until `--count` messages were printed, Ctrl-C, or stdout closes. Per
/// partition the messages come in order; partitions take turns.
async fn read(client: &Client, arguments: &SubscribeArguments) -> anyhow::Result<()> {
    let topic = &arguments.topic;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let closed = stdout_closed();
    tokio::pin!(closed);
    // Ctrl-C or a closed stdout ends the command normally, whatever it is waiting for.
    macro_rules! or_stop {
        ($future:expr) => {
            tokio::select! {
                value = $future => value,
                _ = &mut interrupted => return Ok(()),
                () = &mut closed => return Ok(()),
            }
        };
    }
    let mut waiting_noted = false;
    let partitions = loop {
        match or_stop!(client.topic(topic)) {
            Ok(info) => break info.partitions.len(),
            Err(error) if error.code() == Some(ErrorCode::UnknownTopic) => {
                if !waiting_noted {
                    eprintln!(
                        "note: topic '{topic}' does not exist yet; waiting for it (a read without a group does not create it)"
                    );
                    waiting_noted = true;
                }
                or_stop!(tokio::time::sleep(TOPIC_WAIT));
            }
            Err(error) => {
                return Err(error).with_context(|| format!("cannot describe topic '{topic}'"));
            }
        }
    };
    let partitions = u32::try_from(partitions).context("too many partitions")?;
    let mut positions = vec![arguments.from.unwrap_or(Start::Latest); partitions as usize];
    let mut output = std::io::BufWriter::new(std::io::stdout());
    let mut remaining = arguments.count;
    let mut pause = IDLE_PAUSE_MIN;
    loop {
        let mut read_any = false;
        for (partition, position) in (0..partitions).zip(positions.iter_mut()) {
            let max = remaining.map_or(arguments.prefetch, |remaining| {
                u32::try_from(remaining)
                    .unwrap_or(u32::MAX)
                    .min(arguments.prefetch)
            });
            let (messages, next_offset) =
                or_stop!(client.read(topic, partition, *position, max.min(MAX_READ)))
                    .with_context(|| format!("cannot read topic '{topic}'"))?;
            *position = Start::Offset(next_offset);
            read_any |= !messages.is_empty();
            print(&mut output, arguments, &messages)?;
            if let Some(remaining) = &mut remaining {
                *remaining = remaining.saturating_sub(messages.len() as u64);
                if *remaining == 0 {
                    return Ok(());
                }
            }
        }
        if read_any {
            pause = IDLE_PAUSE_MIN;
        } else {
            or_stop!(tokio::time::sleep(pause));
            pause = (pause * 2).min(IDLE_PAUSE_MAX);
        }
    }
}

async fn plan(client: &Client, arguments: &SubscribeArguments) -> anyhow::Result<Plan> {
    let topic = &arguments.topic;
    let mut options = SubscribeOptions {
        // No more in flight than will be printed: the rest would only go back to the group
        // with a higher delivery count.
        prefetch: arguments.count.map_or(arguments.prefetch, |count| {
            arguments
                .prefetch
                .min(u32::try_from(count).unwrap_or(u32::MAX))
        }),
        ..SubscribeOptions::default()
    };
    arguments.queue.apply(&mut options);
    let Some(group) = &arguments.group else {
        bail!("a group subscription needs --group");
    };
    let existing = existing_group(client, topic, group).await?;
    options.mode = match (arguments.mode, &existing) {
        (Some(mode), Some(info)) if SubscriptionMode::from(mode) != info.mode => bail!(
            "group '{group}' on '{topic}' is a {} subscription, not a {}; leave out --mode or choose another group",
            format_mode(info.mode),
            format_mode(mode.into())
        ),
        (Some(mode), _) => mode.into(),
        (None, Some(info)) => info.mode,
        (None, None) => SubscriptionMode::Queue,
    };
    options.start = arguments.from.unwrap_or(Start::Earliest);
    if options.has_queue_settings() && options.mode == SubscriptionMode::Stream {
        bail!("the queue settings apply to queue groups, not to a stream group");
    }
    if options.has_queue_settings() && existing.is_some() {
        eprintln!(
            "note: group '{group}' exists, so it keeps its settings and the queue settings given here do not apply"
        );
    }
    if let (Some(from), Some(_)) = (arguments.from, &existing) {
        eprintln!(
            "note: group '{group}' exists, so it continues from where it is and --from {} does not apply; \
             `weir group reset {topic} {group} --to …` moves it",
            describe_position(from)
        );
    }
    Ok(Plan {
        group: group.clone(),
        options,
        acking: !arguments.no_ack,
    })
}

/// The group's description if it exists; `None` if it (or its topic) does not yet.
async fn existing_group(
    client: &Client,
    topic: &str,
    group: &str,
) -> anyhow::Result<Option<GroupInfo>> {
    match client.group(topic, group).await {
        Ok(info) => Ok(Some(info)),
        Err(error)
            if matches!(
                error.code(),
                Some(ErrorCode::NoSuchSubscription | ErrorCode::UnknownTopic)
            ) =>
        {
            Ok(None)
        }
        Err(error) => {
            Err(error).with_context(|| format!("cannot describe group '{group}' on '{topic}'"))
        }
    }
}

/// Prints and acks until `--count` messages were printed or Ctrl-C.
async fn consume(
    consumer: &mut Consumer,
    arguments: &SubscribeArguments,
    acking: bool,
) -> anyhow::Result<()> {
    let mut output = std::io::BufWriter::new(std::io::stdout());
    let mut remaining = arguments.count;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    let closed = stdout_closed();
    tokio::pin!(closed);
    // Whether the broker says per id what an ack did (one that predates it does not).
    let mut reporting = true;
    loop {
        let batch = tokio::select! {
            batch = consumer.next_batch() => batch
                .with_context(|| format!("cannot consume topic '{}'", arguments.topic))?,
            // Ctrl-C ends the command normally: what was printed is acked on close.
            _ = &mut interrupted => return Ok(()),
            // Nobody reads on: done, as after --count.
            () = &mut closed => return Ok(()),
        };
        // Past --count, the rest of the batch stays unacked and goes back to the group.
        let take = remaining.map_or(batch.len(), |remaining| {
            batch
                .len()
                .min(usize::try_from(remaining).unwrap_or(usize::MAX))
        });
        let printed = &batch[..take];
        print(&mut output, arguments, printed)?;
        if acking {
            let ids: Vec<MessageId> = printed.iter().map(Delivery::id).collect();
            ack(consumer, &ids, &mut reporting)
                .await
                .with_context(|| format!("cannot ack messages of '{}'", arguments.topic))?;
        }
        if let Some(remaining) = &mut remaining {
            *remaining -= take as u64;
            if *remaining == 0 {
                return Ok(());
            }
        }
    }
}

/// Acks what was printed and says on stderr when an ack did nothing: an id settled before
/// was acked by another consumer too (its ack timeout ran out while this one worked on it), so
/// it was processed twice. An id the broker never delivered fails the command: that is a bug.
async fn ack(
    consumer: &mut Consumer,
    ids: &[MessageId],
    reporting: &mut bool,
) -> anyhow::Result<()> {
    if *reporting {
        match consumer.ack_reporting(ids).await {
            Ok(settlements) => {
                for id in &settlements.already_settled {
                    eprintln!(
                        "warning: message {}:{} was already settled (acked by another consumer after its ack timeout ran out?)",
                        id.partition, id.offset
                    );
                }
                if let Some(id) = settlements.unknown.first() {
                    bail!(
                        "the broker says message {}:{} was never delivered to this group",
                        id.partition,
                        id.offset
                    );
                }
                return Ok(());
            }
            Err(error) if error.code() == Some(ErrorCode::UnsupportedRequest) => *reporting = false,
            Err(error) => return Err(error.into()),
        }
    }
    Ok(consumer.ack(ids).await?)
}

/// Prints `deliveries`, each on a line of its own, and flushes.
fn print(
    output: &mut impl Write,
    arguments: &SubscribeArguments,
    deliveries: &[Delivery],
) -> anyhow::Result<()> {
    for delivery in deliveries {
        if arguments.json {
            write_json_line(output, &delivery_json(&arguments.topic, delivery))
        } else {
            output
                .write_all(&delivery.value)
                .and_then(|()| output.write_all(b"\n"))
        }
        .context("cannot write to stdout")?;
    }
    output.flush().context("cannot write to stdout")
}

/// One delivery as the JSON object `--json` prints. Text stays text; bytes that are not
/// UTF-8 are given in base64 under a `_base64` name (see `output::json_bytes`).
fn delivery_json(topic: &str, delivery: &Delivery) -> Value {
    let mut headers = Map::new();
    for (name, value) in &delivery.headers {
        let value = match std::str::from_utf8(value) {
            Ok(text) => json!(text),
            Err(_) => json!({ "base64": json_bytes("value", value).1 }),
        };
        headers.insert(name.clone(), value);
    }
    let mut object = Map::new();
    object.insert("topic".into(), json!(topic));
    object.insert("partition".into(), json!(delivery.partition));
    object.insert("offset".into(), json!(delivery.offset));
    match &delivery.key {
        Some(key) => {
            let (name, value) = json_bytes("key", key);
            object.insert(name, value);
        }
        None => {
            object.insert("key".into(), Value::Null);
        }
    }
    object.insert("headers".into(), Value::Object(headers));
    object.insert(
        "timestamp".into(),
        json!(format_rfc3339(delivery.timestamp_ms)),
    );
    object.insert("timestamp_ms".into(), json!(delivery.timestamp_ms));
    object.insert("delivery_count".into(), json!(delivery.delivery_count));
    let (name, value) = json_bytes("payload", &delivery.value);
    object.insert(name, value);
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The arguments of `weir sub` alone, as the binary parses them.
    #[derive(Debug, clap::Parser)]
    struct Sub {
        #[command(flatten)]
        arguments: SubscribeArguments,
    }

    /// `--retry-backoff 1s,5s,30s` (the README's and the help's example) once panicked in clap:
    /// its value parser made a `Vec` per occurrence while the field asked for the items.
    #[test]
    fn a_retry_backoff_list_parses_into_its_durations() {
        use clap::Parser;
        let parsed = Sub::try_parse_from([
            "sub",
            "orders",
            "--group",
            "billing",
            "--retry-backoff",
            "1s,5s,30s",
        ])
        .expect("parses");
        assert_eq!(
            parsed.arguments.queue.retry_backoff,
            Some(vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30)
            ])
        );
        assert!(
            Sub::try_parse_from(["sub", "orders", "--retry-backoff", "1s,soon"]).is_err(),
            "a bad duration is a usage error"
        );
    }

    #[test]
    fn a_delivery_becomes_json_with_text_as_text_and_binary_as_base64() {
        let delivery = Delivery {
            partition: 2,
            offset: 7,
            delivery_count: 1,
            timestamp_ms: 1_767_225_600_000,
            key: Some(Bytes::from_static(b"customer-7")),
            headers: vec![
                ("source".into(), Bytes::from_static(b"web")),
                ("raw".into(), Bytes::from_static(&[0xff])),
            ],
            value: Bytes::from_static(&[0xfe, 0x00]),
        };
        let value = delivery_json("orders", &delivery);
        assert_eq!(
            value,
            json!({
                "topic": "orders",
                "partition": 2,
                "offset": 7,
                "key": "customer-7",
                "headers": {"source": "web", "raw": {"base64": "/w=="}},
                "timestamp": "2026-01-01T00:00:00.000Z",
                "timestamp_ms": 1_767_225_600_000_i64,
                "delivery_count": 1,
                "payload_base64": "/gA=",
            })
        );
    }
}
