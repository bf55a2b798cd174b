//! `weir schedule list|show|cancel|reschedule`: delayed messages the broker holds until they
//! are due (published with `weir pub --delay` or `--at`).

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use weir_client::{DeliveryTime, ScheduledInfo, ScheduledSelector};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::duration::{DURATION_HELP, parse_duration};
use crate::cli::output::{
    format_duration_ms, json_bytes, write_fields, write_json_pretty, write_table,
};
use crate::cli::position::{format_rfc3339, parse_rfc3339};

const EXAMPLES: &str = "\
Examples:
  weir pub order-timeouts 'cancel order 42' --delay 30m --business-key order-42
  weir schedule list --topic order-timeouts
  weir schedule show 17
  weir schedule cancel --business-key order-42      # order 42 was paid
  weir schedule reschedule 17 --delay 1h";

/// Pages asked for at once when listing.
const PAGE: u32 = 1000;

/// List, inspect, cancel and reschedule delayed messages.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ScheduleArguments {
    #[command(subcommand)]
    command: ScheduleCommand,

    #[command(flatten)]
    server: ServerArgument,
}

#[derive(Debug, clap::Subcommand)]
enum ScheduleCommand {
    /// List pending delayed batches in due order
    #[command(after_help = "Example:\n  weir schedule list --topic order-timeouts --limit 20")]
    List(ListArguments),
    /// Show one pending batch and its messages
    #[command(after_help = "Example:\n  weir schedule show 17 --json")]
    Show(ShowArguments),
    /// Cancel a pending batch by id or by business key: it will not be delivered
    #[command(
        after_help = "Examples:\n  weir schedule cancel 17\n  weir schedule cancel --business-key order-42"
    )]
    Cancel(CancelArguments),
    /// Move a pending batch to another time
    #[command(
        after_help = "Examples:\n  weir schedule reschedule 17 --delay 1h\n  weir schedule reschedule 17 --at 2026-12-24T18:00:00Z"
    )]
    Reschedule(RescheduleArguments),
}

#[derive(Debug, clap::Args)]
struct ListArguments {
    /// Only this topic's
    #[arg(long)]
    topic: Option<String>,

    /// At most this many
    #[arg(long, value_name = "N", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..))]
    limit: u64,

    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct ShowArguments {
    /// The batch's id, as `weir schedule list` shows it
    id: u64,

    /// Print JSON
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct CancelArguments {
    /// The batch's id
    #[arg(
        required_unless_present = "business_key",
        conflicts_with = "business_key"
    )]
    id: Option<u64>,

    /// The business key it was published with
    #[arg(long, value_name = "KEY")]
    business_key: Option<String>,
}

#[derive(Debug, clap::Args)]
struct RescheduleArguments {
    /// The batch's id
    id: u64,

    /// Deliver this long from now (broker clock), e.g. 30m
    #[arg(long, value_name = "DURATION", value_parser = parse_duration,
          required_unless_present = "at", long_help = format!("Deliver this long from now, by the broker's clock: {DURATION_HELP}"))]
    delay: Option<Duration>,

    /// Deliver at this RFC 3339 time
    #[arg(long, value_name = "TIME", value_parser = parse_rfc3339, conflicts_with = "delay")]
    at: Option<i64>,
}

pub async fn run(arguments: ScheduleArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    let mut output = std::io::stdout().lock();
    match arguments.command {
        ScheduleCommand::List(list) => {
            let mut entries: Vec<ScheduledInfo> = Vec::new();
            let mut after = None;
            while (entries.len() as u64) < list.limit {
                let wanted = u32::try_from(list.limit - entries.len() as u64)
                    .unwrap_or(PAGE)
                    .min(PAGE);
                let page = client
                    .scheduled(list.topic.as_deref(), after, wanted)
                    .await
                    .context("cannot list scheduled messages")?;
                let Some(last) = page.last() else { break };
                after = Some((last.deliver_at_ms, last.id));
                let full = page.len() == wanted as usize;
                entries.extend(page);
                if !full {
                    break;
                }
            }
            if list.json {
                let value: Vec<Value> = entries.iter().map(info_json).collect();
                return write_json_pretty(&mut output, &Value::Array(value))
                    .context("cannot write to stdout");
            }
            let now_ms = now_ms();
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|entry| {
                    vec![
                        entry.id.to_string(),
                        entry.topic.clone(),
                        entry
                            .partition
                            .map_or_else(|| "-".to_owned(), |partition| partition.to_string()),
                        format_rfc3339(entry.deliver_at_ms),
                        due_in(entry.deliver_at_ms, now_ms),
                        entry.business_key.clone().unwrap_or_else(|| "-".into()),
                        entry.message_count.to_string(),
                    ]
                })
                .collect();
            write_table(
                &mut output,
                &[
                    "ID",
                    "TOPIC",
                    "PARTITION",
                    "DELIVER_AT",
                    "IN",
                    "BUSINESS_KEY",
                    "MESSAGES",
                ],
                &rows,
            )
            .context("cannot write to stdout")
        }
        ScheduleCommand::Show(show) => {
            let batch = client
                .scheduled_batch(show.id)
                .await
                .with_context(|| format!("cannot show scheduled batch {}", show.id))?;
            if show.json {
                let mut value = info_json(&batch.info);
                let messages: Vec<Value> = batch
                    .messages
                    .iter()
                    .map(|message| {
                        let mut object = Map::new();
                        object.insert(
                            "timestamp".into(),
                            json!(format_rfc3339(message.timestamp_ms)),
                        );
                        if let Some(key) = &message.key {
                            let (field, value) = json_bytes("key", key);
                            object.insert(field, value);
                        }
                        let (field, value) = json_bytes("payload", &message.value);
                        object.insert(field, value);
                        Value::Object(object)
                    })
                    .collect();
                value["messages"] = Value::Array(messages);
                return write_json_pretty(&mut output, &value).context("cannot write to stdout");
            }
            let info = &batch.info;
            write_fields(
                &mut output,
                &[
                    ("id", info.id.to_string()),
                    ("topic", info.topic.clone()),
                    (
                        "partition",
                        info.partition
                            .map_or_else(|| "by key".to_owned(), |partition| partition.to_string()),
                    ),
                    (
                        "deliver at",
                        format!(
                            "{} (in {})",
                            format_rfc3339(info.deliver_at_ms),
                            due_in(info.deliver_at_ms, now_ms())
                        ),
                    ),
                    (
                        "business key",
                        info.business_key.clone().unwrap_or_else(|| "-".into()),
                    ),
                    ("messages", info.message_count.to_string()),
                ],
            )
            .context("cannot write to stdout")?;
            for message in &batch.messages {
                writeln!(output, "  {}", String::from_utf8_lossy(&message.value))
                    .context("cannot write to stdout")?;
            }
            Ok(())
        }
        ScheduleCommand::Cancel(cancel) => {
            let selector = match (cancel.id, cancel.business_key) {
                (Some(id), _) => ScheduledSelector::Id(id),
                (None, Some(key)) => ScheduledSelector::BusinessKey(key),
                (None, None) => bail!("give the batch's id or --business-key"),
            };
            let cancelled = client
                .cancel_scheduled(selector)
                .await
                .context("cannot cancel the scheduled batch")?;
            writeln!(
                output,
                "cancelled id={} topic={} messages={}",
                cancelled.id, cancelled.topic, cancelled.message_count
            )
            .context("cannot write to stdout")
        }
        ScheduleCommand::Reschedule(reschedule) => {
            let when = match (reschedule.delay, reschedule.at) {
                (Some(delay), _) => DeliveryTime::After(delay),
                (None, Some(at_ms)) => DeliveryTime::At(
                    UNIX_EPOCH + Duration::from_millis(u64::try_from(at_ms).unwrap_or(0)),
                ),
                (None, None) => bail!("give --delay or --at"),
            };
            let moved = client
                .reschedule(reschedule.id, when)
                .await
                .with_context(|| format!("cannot reschedule batch {}", reschedule.id))?;
            writeln!(
                output,
                "rescheduled id={} deliver_at={}",
                moved.id,
                format_rfc3339(moved.deliver_at_ms)
            )
            .context("cannot write to stdout")
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

/// `30m`, or `due` once the time has passed.
fn due_in(deliver_at_ms: i64, now_ms: i64) -> String {
    match u64::try_from(deliver_at_ms.saturating_sub(now_ms)) {
        Ok(ahead) if ahead > 0 => format_duration_ms(ahead),
        _ => "due".to_owned(),
    }
}

fn info_json(info: &ScheduledInfo) -> Value {
    json!({
        "id": info.id,
        "topic": info.topic,
        "partition": info.partition,
        "deliver_at": format_rfc3339(info.deliver_at_ms),
        "deliver_at_ms": info.deliver_at_ms,
        "business_key": info.business_key,
        "messages": info.message_count,
    })
}
