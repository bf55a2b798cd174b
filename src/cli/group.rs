//! `weir group list|describe|reset`: inspect subscriptions (consumer groups) and move them,
//! for instance back to the start to replay a topic.

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};
use weir_client::{GroupInfo, Start};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::output::{format_mode, write_fields, write_json_pretty, write_table};
use crate::cli::position::{POSITION_HELP, describe_position, parse_position};

const EXAMPLES: &str = "\
Examples:
  weir group list
  weir group list orders --json
  weir group describe orders billing
  weir group reset orders billing --to earliest   # replay everything retained
  weir group reset orders billing --to 2026-01-31T09:00:00Z";

/// Inspect and reset subscriptions (consumer groups).
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct GroupArguments {
    #[command(subcommand)]
    command: GroupCommand,

    #[command(flatten)]
    server: ServerArgument,
}

#[derive(Debug, clap::Subcommand)]
enum GroupCommand {
    /// List the groups of one topic, or of every topic
    #[command(after_help = "Example:\n  weir group list orders")]
    List(ListArguments),
    /// Show a group's position, backlog and messages in flight in each partition
    #[command(after_help = "Example:\n  weir group describe orders billing")]
    Describe(DescribeArguments),
    /// Move a group to another position, while its consumers run
    #[command(after_help = "Example:\n  weir group reset orders billing --to earliest")]
    Reset(ResetArguments),
}

#[derive(Debug, clap::Args)]
struct ListArguments {
    /// Only the groups of this topic
    topic: Option<String>,

    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct DescribeArguments {
    /// The topic
    topic: String,

    /// The group
    group: String,

    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ResetArguments {
    /// The topic
    topic: String,

    /// The group
    group: String,

    /// Where to move the group; an offset outside a partition's messages is clamped to them
    #[arg(long, value_name = "POSITION", value_parser = parse_position,
          long_help = format!("Where to move the group: {POSITION_HELP}. As with Kafka's \
              --reset-offsets, an offset past a partition's end (or no longer retained) is \
              clamped to it, with a warning; each partition's new offset is printed."))]
    to: Start,
}

pub async fn run(arguments: GroupArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    let mut output = std::io::stdout().lock();
    match arguments.command {
        GroupCommand::List(list) => {
            let mut groups =
                client
                    .groups(list.topic.as_deref())
                    .await
                    .with_context(|| match &list.topic {
                        Some(topic) => format!("cannot list the groups of '{topic}'"),
                        None => "cannot list groups".to_owned(),
                    })?;
            groups.sort_by(|left, right| {
                (&left.topic, &left.group).cmp(&(&right.topic, &right.group))
            });
            if list.json {
                let groups: Vec<Value> = groups.iter().map(group_json).collect();
                write_json_pretty(&mut output, &Value::Array(groups))
            } else {
                write_group_list(&mut output, &groups)
            }
        }
        GroupCommand::Describe(describe) => {
            let group = client
                .group(&describe.topic, &describe.group)
                .await
                .with_context(|| {
                    format!(
                        "cannot describe group '{}' on '{}'",
                        describe.group, describe.topic
                    )
                })?;
            if describe.json {
                write_json_pretty(&mut output, &group_json(&group))
            } else {
                write_group(&mut output, &group)
            }
        }
        GroupCommand::Reset(reset) => {
            client
                .reset_group(&reset.topic, &reset.group, reset.to)
                .await
                .with_context(|| {
                    format!("cannot reset group '{}' on '{}'", reset.group, reset.topic)
                })?;
            // The broker clamps a position to what each partition holds, as Kafka's
            // --reset-offsets does: show where the group really is, and say where it differs.
            let group = client
                .group(&reset.topic, &reset.group)
                .await
                .with_context(|| {
                    format!(
                        "cannot describe group '{}' on '{}' after its reset",
                        reset.group, reset.topic
                    )
                })?;
            for warning in clamp_warnings(reset.to, &group) {
                eprintln!("warning: {warning}");
            }
            write_reset(&mut output, reset.to, &group)
        }
    }
    .context("cannot write to stdout")
}

/// Where an offset asked for is not where a partition's group went: past the end, or no
/// longer retained.
fn clamp_warnings(to: Start, group: &GroupInfo) -> Vec<String> {
    let Start::Offset(asked) = to else {
        return Vec::new();
    };
    group
        .partitions
        .iter()
        .filter(|partition| partition.committed != asked)
        .map(|partition| {
            let why = if asked > partition.end_offset {
                "is past the end of"
            } else {
                "is no longer retained in"
            };
            format!(
                "offset {asked} {why} partition {}: the group is at offset {} there",
                partition.partition, partition.committed
            )
        })
        .collect()
}

/// What a reset did: per partition, the offset the group now reads from (as Kafka's
/// NEW-OFFSET) beside the partition's end.
fn write_reset(output: &mut impl Write, to: Start, group: &GroupInfo) -> std::io::Result<()> {
    writeln!(
        output,
        "group '{}' on '{}' reset to {}:",
        group.group,
        group.topic,
        describe_position(to)
    )?;
    let rows: Vec<Vec<String>> = group
        .partitions
        .iter()
        .map(|partition| {
            vec![
                partition.partition.to_string(),
                partition.committed.to_string(),
                partition.end_offset.to_string(),
            ]
        })
        .collect();
    write_table(output, &["PARTITION", "NEW-OFFSET", "END"], &rows)
}

fn write_group_list(output: &mut impl Write, groups: &[GroupInfo]) -> std::io::Result<()> {
    if groups.is_empty() {
        return writeln!(output, "no groups");
    }
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|group| {
            vec![
                group.topic.clone(),
                group.group.clone(),
                format_mode(group.mode).to_owned(),
                group.consumers.to_string(),
                group.backlog.to_string(),
            ]
        })
        .collect();
    write_table(
        output,
        &["TOPIC", "GROUP", "MODE", "CONSUMERS", "BACKLOG"],
        &rows,
    )
}

fn write_group(output: &mut impl Write, group: &GroupInfo) -> std::io::Result<()> {
    write_fields(
        output,
        &[
            ("topic", group.topic.clone()),
            ("group", group.group.clone()),
            ("mode", format_mode(group.mode).to_owned()),
            ("consumers", group.consumers.to_string()),
            ("backlog", group.backlog.to_string()),
        ],
    )?;
    writeln!(output)?;
    let rows: Vec<Vec<String>> = group
        .partitions
        .iter()
        .map(|partition| {
            vec![
                partition.partition.to_string(),
                partition.committed.to_string(),
                partition.end_offset.to_string(),
                partition
                    .end_offset
                    .saturating_sub(partition.committed)
                    .to_string(),
                partition.in_flight.to_string(),
            ]
        })
        .collect();
    write_table(
        output,
        &["PARTITION", "COMMITTED", "END", "BACKLOG", "IN-FLIGHT"],
        &rows,
    )
}

fn group_json(group: &GroupInfo) -> Value {
    let partitions: Vec<Value> = group
        .partitions
        .iter()
        .map(|partition| {
            json!({
                "partition": partition.partition,
                "committed": partition.committed,
                "end_offset": partition.end_offset,
                "backlog": partition.end_offset.saturating_sub(partition.committed),
                "in_flight": partition.in_flight,
            })
        })
        .collect();
    json!({
        "topic": group.topic,
        "group": group.group,
        "mode": format_mode(group.mode),
        "consumers": group.consumers,
        "backlog": group.backlog,
        "partitions": partitions,
    })
}
