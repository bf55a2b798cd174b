//! `weir pub`: publish one message given as an argument, or one message per line of stdin,
//! and print where each was stored and how durably. The same verb publishes through an
//! exchange (`--exchange X --routing-key K`) and publishes delayed messages (`--delay 30m`,
//! `--at TIME`, optionally with `--business-key K` to cancel by); those go as whole batches
//! (up to 1024 lines each) through the client's calls for them, not the producer.
//!
//! Lines go through the client's batching [`Producer`], so a pipe of a million lines travels
//! in large batches with many in flight, not one round trip per line. Confirms are printed in
//! the order the messages were read, by a separate task that awaits them one by one while the
//! reader keeps sending; a bounded channel between the two keeps memory flat however long the
//! input is.

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use std::time::{Duration, UNIX_EPOCH};
use weir_client::{
    Client, ConfirmFuture, DeliveryTime, ErrorCode, Message, Producer, ProducerOptions, Routed,
    Scheduled,
};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::duration::{DURATION_HELP, parse_duration};
use crate::cli::output::{format_durability, write_json_line};
use crate::cli::position::{format_rfc3339, parse_rfc3339};

const EXAMPLES: &str = "\
Examples:
  weir pub orders 'order 1 created'
  weir pub orders 'order 2 created' --key customer-7 --header source=web
  weir pub payments 'payment 17' --id payment-17        # stored once within the dedup window
  seq 1000000 | weir pub numbers --partitions 4 --quiet
  weir pub --exchange orders --routing-key order.vip.created 'order 3' --mandatory
  weir pub order-timeouts 'cancel order 4' --delay 30m --business-key order-4
  weir pub reports 'monthly report' --at 2026-12-01T09:00:00Z

Each message's confirm is printed as `partition=P offset=O durability=D`, where durability
is `fsynced` (survives a power loss) or `os` (survives a crash of the broker); a message the
broker already held under its --id is confirmed at that copy, with `duplicate=true`.
Through an exchange, one line per topic written: `topic=T partition=P offset=O …`.
A delayed publish prints `scheduled id=N deliver_at=TIME messages=N`; cancel it with
`weir schedule cancel N` or `weir schedule cancel --business-key K`.";

/// Confirms awaited but not yet printed, at most: enough to cover every message the producer
/// can have in flight, so the reader never waits on the printer in a healthy pipeline.
const CONFIRMS_QUEUED_MAX: usize = 1 << 17;

/// Publish messages: the MESSAGE argument, or each line of stdin.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct PublishArguments {
    /// The topic to publish to (not with --exchange, where the only argument is MESSAGE)
    #[arg(required_unless_present = "exchange")]
    topic: Option<String>,

    /// The message; without it, each line of stdin is one message
    message: Option<String>,

    /// Publish through this exchange instead of to a topic
    #[arg(long, value_name = "NAME", conflicts_with_all = ["partition", "partitions", "delay", "at"])]
    exchange: Option<String>,

    /// The routing key matched against the exchange's bindings [default: empty]
    #[arg(long, value_name = "KEY", requires = "exchange")]
    routing_key: Option<String>,

    /// Refuse the publish (exit 2, `unroutable`) if a message matches no binding and the
    /// exchange has no alternate topic, instead of dropping it
    #[arg(long, requires = "exchange")]
    mandatory: bool,

    /// Deliver after this long (broker clock), e.g. 30s, 30m, 1h30m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          long_help = format!("Deliver after this long, by the broker's clock: {DURATION_HELP}"))]
    delay: Option<Duration>,

    /// Deliver at this RFC 3339 time, e.g. 2026-12-01T09:00:00Z (a past time means now)
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339, conflicts_with = "delay")]
    at: Option<i64>,

    /// With --delay or --at: a key to cancel the delayed messages by (an order number, say);
    /// all of stdin then goes as one batch
    #[arg(long, value_name = "KEY")]
    business_key: Option<String>,

    /// The message id (header weir.id): the broker stores a message with an id it saw within
    /// the topic's dedup window only once. Needs the MESSAGE argument
    #[arg(long, value_name = "ID")]
    id: Option<String>,

    /// Partitioning key: messages with one key go to one partition, in order
    #[arg(long)]
    key: Option<String>,

    /// A header NAME=VALUE; repeat for more
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,

    /// Write to this partition instead of choosing by key
    #[arg(long, value_name = "N")]
    partition: Option<u32>,

    /// Create the topic with N partitions if it does not exist
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    partitions: Option<u32>,

    /// Print nothing on success
    #[arg(long, short)]
    quiet: bool,

    /// Print each confirm as a JSON object on its own line
    #[arg(long, conflicts_with = "quiet")]
    json: bool,

    #[command(flatten)]
    server: ServerArgument,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not a header NAME=VALUE")),
    }
}

/// Where the messages go, and the message argument, from the positional arguments.
enum Target<'a> {
    Topic(&'a str),
    Exchange(&'a str),
}

impl PublishArguments {
    /// The target and the message argument. With `--exchange` there is no topic, so a single
    /// positional argument is the message.
    fn target(&self) -> anyhow::Result<(Target<'_>, Option<&str>)> {
        match (&self.exchange, &self.topic, &self.message) {
            (Some(_), Some(_), Some(_)) => {
                bail!("with --exchange, give only the message (the bindings choose the topics)")
            }
            (Some(exchange), first, None) => Ok((Target::Exchange(exchange), first.as_deref())),
            (Some(exchange), None, Some(message)) => {
                Ok((Target::Exchange(exchange), Some(message)))
            }
            (None, Some(topic), message) => Ok((Target::Topic(topic), message.as_deref())),
            (None, None, _) => bail!("name the topic to publish to"),
        }
    }

    fn delivery_time(&self) -> Option<DeliveryTime> {
        match (self.delay, self.at) {
            (Some(delay), _) => Some(DeliveryTime::After(delay)),
            (None, Some(at_ms)) => Some(DeliveryTime::At(
                UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0)),
            )),
            (None, None) => None,
        }
    }
}

pub async fn run(arguments: PublishArguments) -> anyhow::Result<()> {
    let (target, message) = arguments.target()?;
    if arguments.business_key.is_some() && arguments.delivery_time().is_none() {
        bail!("--business-key names a delayed publish: add --delay or --at");
    }
    if arguments.id.is_some() && message.is_none() {
        bail!("--id needs the MESSAGE argument: one id belongs to one message");
    }
    let client = connect(&arguments.server).await?;
    let topic = match target {
        Target::Exchange(exchange) => {
            return publish_to_exchange(&client, &arguments, exchange, message).await;
        }
        Target::Topic(topic) => topic,
    };
    if let Some(partitions) = arguments.partitions {
        ensure_topic(&client, topic, partitions).await?;
    }
    if let Some(when) = arguments.delivery_time() {
        return publish_delayed(&client, &arguments, topic, message, when).await;
    }
    let producer = client.producer(ProducerOptions::default());
    let (confirms, queued) = tokio::sync::mpsc::channel(CONFIRMS_QUEUED_MAX);
    let printer = tokio::spawn(print_confirms(queued, arguments.quiet, arguments.json));

    let sent = match message {
        Some(message) => {
            let message = message_for(&arguments, Bytes::copy_from_slice(message.as_bytes()));
            send(&producer, topic, message, &confirms).await
        }
        None => send_lines(&arguments, topic, &producer, &confirms).await,
    };
    // Closing the channel lets the printer finish once every queued confirm is printed.
    drop(confirms);
    let printed = printer
        .await
        .context("the task printing confirms panicked")?;
    // A failure to read or to send is the first thing that went wrong; the printer's error
    // (a refused batch, a closed stdout) otherwise.
    sent?;
    printed?;
    producer
        .flush()
        .await
        .with_context(|| format!("cannot publish to '{topic}'"))
}

/// The messages to publish as batches: the argument alone, or stdin in chunks (all of it in
/// one chunk with `whole`).
async fn message_batches(
    arguments: &PublishArguments,
    message: Option<&str>,
    whole: bool,
    mut publish: impl AsyncFnMut(Vec<Message>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    if let Some(message) = message {
        let message = message_for(arguments, Bytes::copy_from_slice(message.as_bytes()));
        return publish(vec![message]).await;
    }
    if std::io::stdin().is_terminal() {
        eprintln!("reading messages from stdin, one per line; end with Ctrl-D");
    }
    let mut chunks = read_stdin_lines();
    let mut all = Vec::new();
    while let Some(chunk) = chunks.recv().await {
        let messages: Vec<Message> = chunk
            .context("cannot read stdin")?
            .into_iter()
            .map(|line| message_for(arguments, line))
            .collect();
        if whole {
            all.extend(messages);
        } else {
            publish(messages).await?;
        }
    }
    if whole && !all.is_empty() {
        publish(all).await?;
    }
    Ok(())
}

async fn publish_to_exchange(
    client: &Client,
    arguments: &PublishArguments,
    exchange: &str,
    message: Option<&str>,
) -> anyhow::Result<()> {
    let routing_key = arguments.routing_key.as_deref().unwrap_or("");
    let mut output = std::io::BufWriter::new(std::io::stdout());
    message_batches(arguments, message, false, async |messages| {
        let routed = client
            .publish_to_exchange(exchange, routing_key, arguments.mandatory, &messages)
            .await
            .with_context(|| {
                format!("cannot publish to exchange '{exchange}' with routing key '{routing_key}'")
            })?;
        if !arguments.quiet {
            write_routed(&mut output, &routed, arguments.json).context("cannot write to stdout")?;
        }
        Ok(())
    })
    .await?;
    output.flush().context("cannot write to stdout")
}

/// One line per topic and partition written (`offsets=A-B` for several messages), then the
/// messages dropped, if any.
fn write_routed(output: &mut impl Write, routed: &Routed, json: bool) -> std::io::Result<()> {
    if json {
        let targets: Vec<serde_json::Value> = routed
            .targets
            .iter()
            .flat_map(|target| {
                target.partitions.iter().map(|range| {
                    json!({
                        "topic": target.topic,
                        "partition": range.partition,
                        "first_offset": range.base_offset,
                        "last_offset": range.last_offset,
                        "durability": format_durability(target.durability),
                    })
                })
            })
            .collect();
        return write_json_line(
            output,
            &json!({ "targets": targets, "dropped": routed.dropped }),
        );
    }
    for target in &routed.targets {
        for range in &target.partitions {
            let offsets = if range.base_offset == range.last_offset {
                format!("offset={}", range.base_offset)
            } else {
                format!("offsets={}-{}", range.base_offset, range.last_offset)
            };
            writeln!(
                output,
                "topic={} partition={} {offsets} durability={}",
                target.topic,
                range.partition,
                format_durability(target.durability)
            )?;
        }
        if !target.duplicates.is_empty() {
            writeln!(
                output,
                "topic={} duplicates={} (already held, not stored again)",
                target.topic,
                target.duplicates.len()
            )?;
        }
    }
    if routed.dropped > 0 || routed.targets.is_empty() {
        writeln!(output, "dropped={} (matched no binding)", routed.dropped)?;
    }
    Ok(())
}

async fn publish_delayed(
    client: &Client,
    arguments: &PublishArguments,
    topic: &str,
    message: Option<&str>,
    when: DeliveryTime,
) -> anyhow::Result<()> {
    let business_key = arguments.business_key.as_deref();
    let mut output = std::io::BufWriter::new(std::io::stdout());
    message_batches(
        arguments,
        message,
        business_key.is_some(),
        async |messages| {
            let scheduled = client
                .publish_delayed(topic, &messages, when, business_key)
                .await
                .with_context(|| format!("cannot schedule messages for '{topic}'"))?;
            if !arguments.quiet {
                write_scheduled(&mut output, &scheduled, messages.len(), arguments.json)
                    .context("cannot write to stdout")?;
            }
            Ok(())
        },
    )
    .await?;
    output.flush().context("cannot write to stdout")
}

fn write_scheduled(
    output: &mut impl Write,
    scheduled: &Scheduled,
    messages: usize,
    json: bool,
) -> std::io::Result<()> {
    if json {
        write_json_line(
            output,
            &json!({
                "id": scheduled.id,
                "deliver_at": format_rfc3339(scheduled.deliver_at_ms),
                "deliver_at_ms": scheduled.deliver_at_ms,
                "messages": messages,
            }),
        )
    } else {
        writeln!(
            output,
            "scheduled id={} deliver_at={} messages={messages}",
            scheduled.id,
            format_rfc3339(scheduled.deliver_at_ms)
        )
    }
}

/// Creates the topic with `partitions` partitions unless it exists. An existing topic is
/// kept as it is; a different partition count is worth a warning, not a failure.
async fn ensure_topic(client: &Client, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let options = weir_client::TopicOptions {
        partitions,
        ..weir_client::TopicOptions::default()
    };
    match client.create_topic(topic, options).await {
        Ok(_) => Ok(()),
        Err(error) if error.code() == Some(ErrorCode::TopicExists) => {
            let existing = client
                .topic(topic)
                .await
                .with_context(|| format!("cannot describe topic '{topic}'"))?;
            if existing.partitions.len() != partitions as usize {
                eprintln!(
                    "warning: topic '{topic}' already exists with {} partitions; --partitions {partitions} is ignored",
                    existing.partitions.len()
                );
            }
            Ok(())
        }
        Err(error) => Err(error).with_context(|| format!("cannot create topic '{topic}'")),
    }
}

fn message_for(arguments: &PublishArguments, value: Bytes) -> Message {
    let mut message = Message::new(value);
    if let Some(key) = &arguments.key {
        message = message.with_key(Bytes::copy_from_slice(key.as_bytes()));
    }
    for (name, value) in &arguments.headers {
        message = message.with_header(name.clone(), Bytes::copy_from_slice(value.as_bytes()));
    }
    if let Some(partition) = arguments.partition {
        message = message.with_partition(partition);
    }
    if let Some(id) = &arguments.id {
        message = message.with_id(Bytes::copy_from_slice(id.as_bytes()));
    }
    message
}

async fn send(
    producer: &Producer,
    topic: &str,
    message: Message,
    confirms: &tokio::sync::mpsc::Sender<ConfirmFuture>,
) -> anyhow::Result<()> {
    let confirm = producer
        .send(topic, message)
        .await
        .with_context(|| format!("cannot publish to '{topic}'"))?;
    // The printer only stops early after an error of its own, which `run` reports.
    let _ = confirms.send(confirm).await;
    Ok(())
}

/// Publishes each line of stdin (without its `\n` or `\r\n`) as one message. Bytes need not
/// be UTF-8: a line is published as it was read.
async fn send_lines(
    arguments: &PublishArguments,
    topic: &str,
    producer: &Producer,
    confirms: &tokio::sync::mpsc::Sender<ConfirmFuture>,
) -> anyhow::Result<()> {
    if std::io::stdin().is_terminal() {
        eprintln!("reading messages from stdin, one per line; end with Ctrl-D");
    }
    let mut chunks = read_stdin_lines();
    while let Some(chunk) = chunks.recv().await {
        for line in chunk.context("cannot read stdin")? {
            let message = message_for(arguments, line);
            send(producer, topic, message, confirms).await?;
        }
        if confirms.is_closed() {
            // The printer failed (a refused batch, a closed stdout): stop reading.
            return Ok(());
        }
    }
    Ok(())
}

/// Lines handed over at once, at most: large enough that the channel costs nothing per line.
const LINES_PER_CHUNK: usize = 1024;

/// Reads stdin on a thread of its own (blocking reads have no place on the runtime's threads)
/// and hands lines over in chunks. A chunk goes out when full, or as soon as no more input is
/// buffered, so that a line typed by hand is published at once. The thread ends at the end of
/// input, on a read error (sent as the last item), or when the receiver is gone.
fn read_stdin_lines() -> tokio::sync::mpsc::Receiver<std::io::Result<Vec<Bytes>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
        let mut lines = Vec::with_capacity(LINES_PER_CHUNK);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    lines.push(Bytes::copy_from_slice(&line));
                    if (lines.len() >= LINES_PER_CHUNK || stdin.buffer().is_empty())
                        && sender
                            .blocking_send(Ok(std::mem::take(&mut lines)))
                            .is_err()
                    {
                        return;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            }
        }
        if !lines.is_empty() {
            let _ = sender.blocking_send(Ok(lines));
        }
    });
    receiver
}

/// Prints each confirm in the order the messages were sent. Stops at the first failure.
async fn print_confirms(
    mut queued: tokio::sync::mpsc::Receiver<ConfirmFuture>,
    quiet: bool,
    json: bool,
) -> anyhow::Result<()> {
    let mut output = std::io::BufWriter::new(std::io::stdout());
    let mut sequence: u64 = 0;
    while let Some(confirm) = queued.recv().await {
        sequence += 1;
        let confirm = match confirm.await {
            Ok(confirm) => confirm,
            Err(error) => {
                // What was confirmed before the failure has been printed: say so, then stop.
                let _ = output.flush();
                return Err(error).with_context(|| format!("message {sequence} was not stored"));
            }
        };
        if quiet {
            continue;
        }
        if json {
            let mut object = json!({
                "partition": confirm.partition,
                "offset": confirm.offset,
                "durability": format_durability(confirm.durability),
            });
            if confirm.duplicate {
                object["duplicate"] = json!(true);
            }
            write_json_line(&mut output, &object)
        } else {
            writeln!(
                output,
                "partition={} offset={} durability={}{}",
                confirm.partition,
                confirm.offset,
                format_durability(confirm.durability),
                if confirm.duplicate {
                    " duplicate=true"
                } else {
                    ""
                }
            )
        }
        .context("cannot write to stdout")?;
        // Flush when nothing else is ready, so that a person typing lines sees each confirm
        // at once while a pipe still gets large writes.
        if queued.is_empty() {
            output.flush().context("cannot write to stdout")?;
        }
    }
    output.flush().context("cannot write to stdout")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_header("trace=a=b"),
            Ok(("trace".to_owned(), "a=b".to_owned()))
        );
        assert_eq!(parse_header("empty="), Ok(("empty".into(), String::new())));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("=x").is_err());
    }
}
