//! `weir pub`: publish one message given as an argument, or one message per line of stdin,
//! and print where each was stored and how durably.
//!
//! Lines go through the client's batching [`Producer`], so a pipe of a million lines travels
//! in large batches with many in flight, not one round trip per line. Confirms are printed in
//! the order the messages were read, by a separate task that awaits them one by one while the
//! reader keeps sending; a bounded channel between the two keeps memory flat however long the
//! input is.

use anyhow::Context;
use bytes::Bytes;
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};
use weir_client::{Client, ConfirmFuture, ErrorCode, Message, Producer, ProducerOptions};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::output::{format_durability, write_json_line};

const EXAMPLES: &str = "\
Examples:
  weir pub orders 'order 1 created'
  weir pub orders 'order 2 created' --key customer-7 --header source=web
  seq 1000000 | weir pub numbers --partitions 4 --quiet

Each message's confirm is printed as `partition=P offset=O durability=D`, where durability
is `fsynced` (survives a power loss) or `os` (survives a crash of the broker).";

/// Confirms awaited but not yet printed, at most: enough to cover every message the producer
/// can have in flight, so the reader never waits on the printer in a healthy pipeline.
const CONFIRMS_QUEUED_MAX: usize = 1 << 17;

/// Publish messages: the MESSAGE argument, or each line of stdin.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct PublishArguments {
    /// The topic to publish to
    topic: String,

    /// The message; without it, each line of stdin is one message
    message: Option<String>,

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

pub async fn run(arguments: PublishArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    if let Some(partitions) = arguments.partitions {
        ensure_topic(&client, &arguments.topic, partitions).await?;
    }
    let producer = client.producer(ProducerOptions::default());
    let (confirms, queued) = tokio::sync::mpsc::channel(CONFIRMS_QUEUED_MAX);
    let printer = tokio::spawn(print_confirms(queued, arguments.quiet, arguments.json));

    let sent = match &arguments.message {
        Some(message) => {
            let message = message_for(&arguments, Bytes::copy_from_slice(message.as_bytes()));
            send(&producer, &arguments.topic, message, &confirms).await
        }
        None => send_lines(&arguments, &producer, &confirms).await,
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
        .with_context(|| format!("cannot publish to '{}'", arguments.topic))
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
            send(producer, &arguments.topic, message, confirms).await?;
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
            write_json_line(
                &mut output,
                &json!({
                    "partition": confirm.partition,
                    "offset": confirm.offset,
                    "durability": format_durability(confirm.durability),
                }),
            )
        } else {
            writeln!(
                output,
                "partition={} offset={} durability={}",
                confirm.partition,
                confirm.offset,
                format_durability(confirm.durability)
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
