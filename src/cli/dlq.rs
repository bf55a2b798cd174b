//! `weir dlq list|show|redrive|purge`: the dead-letter queues. A queue group dead-letters a
//! message after `--max-deliveries` failed deliveries, a reject (nack without requeue), an
//! expired TTL or a backlog overflow; each dead letter keeps its payload, key and headers and
//! gains `weir.dlq.*` headers saying why and from where.

use std::io::Write;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use weir_client::{Delivery, MessageId, delivery_header};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::output::{json_bytes, write_json_line, write_json_pretty, write_table};
use crate::cli::position::format_rfc3339;

const EXAMPLES: &str = "\
Examples:
  weir dlq list
  weir dlq show orders.billing.dlq
  weir dlq redrive orders.billing.dlq                  # every dead letter, back where it came from
  weir dlq redrive orders.billing.dlq --id 0:17 --to orders-retry
  weir dlq purge orders.billing.dlq";

/// Inspect, redrive and purge dead-letter queues.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct DlqArguments {
    #[command(subcommand)]
    command: DlqCommand,

    #[command(flatten)]
    server: ServerArgument,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// List the dead-letter topics and how many dead letters each holds
    #[command(after_help = "Example:\n  weir dlq list --json")]
    List(JsonFlag),
    /// Show the oldest dead letters of a dead-letter topic, with why and from where
    #[command(after_help = "Example:\n  weir dlq show orders.billing.dlq --max 10 --json")]
    Show(ShowArguments),
    /// Publish dead letters again (without their weir.dlq.* headers) and remove them
    #[command(
        after_help = "Examples:\n  weir dlq redrive orders.billing.dlq\n  weir dlq redrive orders.billing.dlq --id 0:17 --id 0:18 --to orders"
    )]
    Redrive(RedriveArguments),
    /// Drop every dead letter of a dead-letter topic
    #[command(after_help = "Example:\n  weir dlq purge orders.billing.dlq")]
    Purge(TopicArgument),
}

#[derive(Debug, clap::Args)]
struct JsonFlag {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct TopicArgument {
    /// The dead-letter topic (e.g. orders.billing.dlq)
    topic: String,
}

#[derive(Debug, clap::Args)]
struct ShowArguments {
    /// The dead-letter topic (e.g. orders.billing.dlq)
    topic: String,

    /// At most this many, oldest first
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    max: u32,

    /// Print each dead letter as a JSON object on its own line
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct RedriveArguments {
    /// The dead-letter topic (e.g. orders.billing.dlq)
    topic: String,

    /// Publish copies to this topic instead of giving each dead letter back to the
    /// subscription it came from (and only to it)
    #[arg(long, value_name = "TOPIC")]
    to: Option<String>,

    /// Only this dead letter, PARTITION:OFFSET as `weir dlq show` prints it; repeat for more
    #[arg(long = "id", value_name = "PARTITION:OFFSET", value_parser = parse_id)]
    ids: Vec<MessageId>,
}

fn parse_id(text: &str) -> Result<MessageId, String> {
    let parsed = text
        .split_once(':')
        .and_then(|(partition, offset)| Some((partition.parse().ok()?, offset.parse().ok()?)));
    match parsed {
        Some((partition, offset)) => Ok(MessageId { partition, offset }),
        None => Err(format!("'{text}' is not PARTITION:OFFSET (e.g. 0:17)")),
    }
}

pub async fn run(arguments: DlqArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    let mut output = std::io::stdout().lock();
    match arguments.command {
        DlqCommand::List(list) => {
            let queues = client
                .dead_letter_queues()
                .await
                .context("cannot list dead-letter queues")?;
            if list.json {
                let value: Vec<Value> = queues
                    .iter()
                    .map(|queue| json!({"topic": queue.topic, "pending": queue.pending}))
                    .collect();
                return write_json_pretty(&mut output, &Value::Array(value))
                    .context("cannot write to stdout");
            }
            let rows: Vec<Vec<String>> = queues
                .iter()
                .map(|queue| vec![queue.topic.clone(), queue.pending.to_string()])
                .collect();
            write_table(&mut output, &["TOPIC", "PENDING"], &rows).context("cannot write to stdout")
        }
        DlqCommand::Show(show) => {
            let letters = client
                .dead_letters(&show.topic, show.max)
                .await
                .with_context(|| format!("cannot read dead letters of '{}'", show.topic))?;
            if show.json {
                for letter in &letters {
                    write_json_line(&mut output, &letter_json(letter))
                        .context("cannot write to stdout")?;
                }
                return Ok(());
            }
            let rows: Vec<Vec<String>> = letters.iter().map(letter_row).collect();
            write_table(
                &mut output,
                &[
                    "ID",
                    "REASON",
                    "DELIVERIES",
                    "FROM",
                    "LAST_DELIVERY",
                    "ERROR",
                    "PAYLOAD",
                ],
                &rows,
            )
            .context("cannot write to stdout")
        }
        DlqCommand::Redrive(redrive) => {
            let count = if redrive.ids.is_empty() {
                client
                    .redrive_all(&redrive.topic, redrive.to.as_deref())
                    .await
            } else {
                let max = u32::try_from(redrive.ids.len()).unwrap_or(u32::MAX);
                if max > weir_client::DEAD_LETTERS_PER_REQUEST {
                    bail!(
                        "at most {} --id at once",
                        weir_client::DEAD_LETTERS_PER_REQUEST
                    );
                }
                client
                    .redrive(
                        &redrive.topic,
                        redrive.to.as_deref(),
                        Some(&redrive.ids),
                        weir_client::DEAD_LETTERS_PER_REQUEST,
                    )
                    .await
            }
            .with_context(|| format!("cannot redrive dead letters of '{}'", redrive.topic))?;
            writeln!(output, "redrove {count} dead letters").context("cannot write to stdout")
        }
        DlqCommand::Purge(purge) => {
            let count = client
                .purge_dead_letters(&purge.topic)
                .await
                .with_context(|| format!("cannot purge '{}'", purge.topic))?;
            writeln!(output, "purged {count} dead letters").context("cannot write to stdout")
        }
    }
}

fn header_text(letter: &Delivery, name: &str) -> Option<String> {
    delivery_header(letter, name).map(|value| String::from_utf8_lossy(value).into_owned())
}

fn time_header(letter: &Delivery, name: &str) -> Option<String> {
    header_text(letter, name)
        .and_then(|text| text.parse::<i64>().ok())
        .map(format_rfc3339)
}

/// At most `limit` characters, with `…` when cut.
fn shorten(text: &str, limit: usize) -> String {
    let mut characters = text.chars();
    let short: String = characters.by_ref().take(limit).collect();
    if characters.next().is_some() {
        format!("{short}…")
    } else {
        short
    }
}

fn letter_row(letter: &Delivery) -> Vec<String> {
    let origin = match (
        header_text(letter, weir_client::DEAD_LETTER_TOPIC_HEADER),
        header_text(letter, weir_client::DEAD_LETTER_PARTITION_HEADER),
        header_text(letter, weir_client::DEAD_LETTER_OFFSET_HEADER),
    ) {
        (Some(topic), Some(partition), Some(offset)) => format!("{topic}:{partition}:{offset}"),
        (Some(topic), _, _) => topic,
        _ => "-".into(),
    };
    let dash = || "-".to_owned();
    vec![
        format!("{}:{}", letter.partition, letter.offset),
        header_text(letter, weir_client::DEAD_LETTER_REASON_HEADER).unwrap_or_else(dash),
        header_text(letter, weir_client::DEAD_LETTER_DELIVERY_COUNT_HEADER).unwrap_or_else(dash),
        origin,
        time_header(letter, weir_client::DEAD_LETTER_LAST_DELIVERY_HEADER).unwrap_or_else(dash),
        shorten(
            &header_text(letter, weir_client::DEAD_LETTER_ERROR_HEADER).unwrap_or_default(),
            40,
        ),
        shorten(&String::from_utf8_lossy(&letter.value), 40),
    ]
}

fn letter_json(letter: &Delivery) -> Value {
    let mut object = Map::new();
    object.insert(
        "id".into(),
        json!(format!("{}:{}", letter.partition, letter.offset)),
    );
    object.insert("partition".into(), json!(letter.partition));
    object.insert("offset".into(), json!(letter.offset));
    object.insert(
        "timestamp".into(),
        json!(format_rfc3339(letter.timestamp_ms)),
    );
    if let Some(key) = &letter.key {
        let (field, value) = json_bytes("key", key);
        object.insert(field, value);
    }
    let headers: Map<String, Value> = letter
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), json!(String::from_utf8_lossy(value))))
        .collect();
    object.insert("headers".into(), Value::Object(headers));
    let (field, value) = json_bytes("payload", &letter.value);
    object.insert(field, value);
    Value::Object(object)
}
