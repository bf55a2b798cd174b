//! `weir topic create|list|describe|delete`: administer topics. Tables for people by default,
//! `--json` for scripts (the same fields, unabbreviated, sizes in bytes).

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};
use weir_client::{Fsync, TopicInfo, TopicOptions};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::output::{
    format_duration_ms, format_fsync, format_size, parse_fsync, write_fields, write_json_pretty,
    write_table,
};

const EXAMPLES: &str = "\
Examples:
  weir topic create orders --partitions 4 --fsync always --retention-ms 604800000
  weir topic list
  weir topic describe orders --json
  weir topic delete orders";

/// Create, list, describe and delete topics.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct TopicArguments {
    #[command(subcommand)]
    command: TopicCommand,

    #[command(flatten)]
    server: ServerArgument,
}

#[derive(Debug, clap::Subcommand)]
enum TopicCommand {
    /// Create a topic
    #[command(
        after_help = "Example:\n  weir topic create orders --partitions 4 --fsync interval:10"
    )]
    Create(CreateArguments),
    /// List every topic
    #[command(after_help = "Example:\n  weir topic list --json | jq -r '.[].name'")]
    List(JsonArgument),
    /// Show a topic's settings and each partition's offsets
    #[command(after_help = "Example:\n  weir topic describe orders")]
    Describe(NameArguments),
    /// Delete a topic with its messages and subscriptions
    #[command(after_help = "Example:\n  weir topic delete orders")]
    Delete(NameArguments),
}

#[derive(Debug, clap::Args)]
struct CreateArguments {
    /// The new topic's name
    name: String,

    /// How many partitions
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,

    /// When appends are fsynced: always (confirm after fdatasync), os (page cache only) or
    /// interval:MS (fdatasync every MS milliseconds, confirms do not wait)
    #[arg(long, value_name = "POLICY", default_value = "always", value_parser = parse_fsync)]
    fsync: Fsync,

    /// Delete messages older than this many milliseconds [default: the broker's]
    #[arg(long, value_name = "MS")]
    retention_ms: Option<u64>,

    /// Keep each partition under about this many bytes [default: the broker's]
    #[arg(long, value_name = "BYTES")]
    retention_bytes: Option<u64>,

    /// Roll segment files at this many bytes [default: the broker's]
    #[arg(long, value_name = "BYTES")]
    segment_bytes: Option<u64>,

    #[command(flatten)]
    json: JsonArgument,
}

#[derive(Debug, clap::Args)]
struct NameArguments {
    /// The topic's name
    name: String,

    #[command(flatten)]
    json: JsonArgument,
}

#[derive(Debug, clap::Args)]
struct JsonArgument {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

pub async fn run(arguments: TopicArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    let mut output = std::io::stdout().lock();
    match arguments.command {
        TopicCommand::Create(create) => {
            let options = TopicOptions {
                partitions: create.partitions,
                fsync: create.fsync,
                retention: create.retention_ms.map(Duration::from_millis),
                retention_bytes: create.retention_bytes,
                segment_bytes: create.segment_bytes,
            };
            let topic = client
                .create_topic(&create.name, options)
                .await
                .with_context(|| format!("cannot create topic '{}'", create.name))?;
            if create.json.json {
                write_json_pretty(&mut output, &topic_json(&topic))
            } else {
                writeln!(
                    output,
                    "created topic '{}' with {} partition{}",
                    topic.name,
                    topic.partitions.len(),
                    if topic.partitions.len() == 1 { "" } else { "s" }
                )
            }
        }
        TopicCommand::List(json) => {
            let mut topics = client.topics().await.context("cannot list topics")?;
            topics.sort_by(|left, right| left.name.cmp(&right.name));
            if json.json {
                let topics: Vec<Value> = topics.iter().map(topic_json).collect();
                write_json_pretty(&mut output, &Value::Array(topics))
            } else {
                write_topic_list(&mut output, &topics)
            }
        }
        TopicCommand::Describe(describe) => {
            let topic = client
                .topic(&describe.name)
                .await
                .with_context(|| format!("cannot describe topic '{}'", describe.name))?;
            if describe.json.json {
                write_json_pretty(&mut output, &topic_json(&topic))
            } else {
                write_topic(&mut output, &topic)
            }
        }
        TopicCommand::Delete(delete) => {
            client
                .delete_topic(&delete.name)
                .await
                .with_context(|| format!("cannot delete topic '{}'", delete.name))?;
            if delete.json.json {
                write_json_pretty(&mut output, &json!({ "deleted": delete.name }))
            } else {
                writeln!(output, "deleted topic '{}'", delete.name)
            }
        }
    }
    .context("cannot write to stdout")
}

/// Messages retained: from each partition's start to its end.
fn message_count(topic: &TopicInfo) -> u64 {
    topic
        .partitions
        .iter()
        .map(|partition| partition.end_offset.saturating_sub(partition.start_offset))
        .sum()
}

/// A size for a table. The broker reports 0 when it does not know a partition's size, so 0
/// bytes holding messages is shown as unknown rather than as a wrong number.
fn size_text(size_bytes: u64, messages: u64) -> String {
    if size_bytes == 0 && messages > 0 {
        "-".to_owned()
    } else {
        format_size(size_bytes)
    }
}

fn retention_text(topic: &TopicInfo) -> String {
    match (topic.retention_ms, topic.retention_bytes) {
        (None, None) => "forever".to_owned(),
        (Some(milliseconds), None) => format_duration_ms(milliseconds),
        (None, Some(bytes)) => format!("{} per partition", format_size(bytes)),
        (Some(milliseconds), Some(bytes)) => format!(
            "{} or {} per partition",
            format_duration_ms(milliseconds),
            format_size(bytes)
        ),
    }
}

fn write_topic_list(output: &mut impl Write, topics: &[TopicInfo]) -> std::io::Result<()> {
    if topics.is_empty() {
        return writeln!(output, "no topics");
    }
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|topic| {
            let size: u64 = topic
                .partitions
                .iter()
                .map(|partition| partition.size_bytes)
                .sum();
            vec![
                topic.name.clone(),
                topic.partitions.len().to_string(),
                message_count(topic).to_string(),
                size_text(size, message_count(topic)),
                format_fsync(topic.fsync),
                retention_text(topic),
            ]
        })
        .collect();
    write_table(
        output,
        &[
            "TOPIC",
            "PARTITIONS",
            "MESSAGES",
            "SIZE",
            "FSYNC",
            "RETENTION",
        ],
        &rows,
    )
}

fn write_topic(output: &mut impl Write, topic: &TopicInfo) -> std::io::Result<()> {
    write_fields(
        output,
        &[
            ("topic", topic.name.clone()),
            ("partitions", topic.partitions.len().to_string()),
            ("messages", message_count(topic).to_string()),
            ("fsync", format_fsync(topic.fsync)),
            ("retention", retention_text(topic)),
        ],
    )?;
    writeln!(output)?;
    let rows: Vec<Vec<String>> = topic
        .partitions
        .iter()
        .map(|partition| {
            vec![
                partition.partition.to_string(),
                partition.start_offset.to_string(),
                partition.end_offset.to_string(),
                partition
                    .end_offset
                    .saturating_sub(partition.start_offset)
                    .to_string(),
                size_text(
                    partition.size_bytes,
                    partition.end_offset.saturating_sub(partition.start_offset),
                ),
            ]
        })
        .collect();
    write_table(
        output,
        &["PARTITION", "START", "END", "MESSAGES", "SIZE"],
        &rows,
    )
}

fn topic_json(topic: &TopicInfo) -> Value {
    let partitions: Vec<Value> = topic
        .partitions
        .iter()
        .map(|partition| {
            json!({
                "partition": partition.partition,
                "start_offset": partition.start_offset,
                "end_offset": partition.end_offset,
                "messages": partition.end_offset.saturating_sub(partition.start_offset),
                "size_bytes": partition.size_bytes,
            })
        })
        .collect();
    json!({
        "name": topic.name,
        "fsync": format_fsync(topic.fsync),
        "retention_ms": topic.retention_ms,
        "retention_bytes": topic.retention_bytes,
        "messages": message_count(topic),
        "partitions": partitions,
    })
}
