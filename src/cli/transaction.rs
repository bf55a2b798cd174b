//! `weir txn list|show|commit|rollback`: undecided transactions, and an operator's decision on
//! one whose producers are gone (the broker otherwise checks back with a live producer of the
//! group, and settles it by its configured outcome after the last check).

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};
use weir_client::{TransactionInfo, TransactionState};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::output::{format_duration_ms, write_fields, write_json_pretty, write_table};
use crate::cli::position::format_rfc3339;

const EXAMPLES: &str = "\
Examples:
  weir txn list
  weir txn show 12
  weir txn commit 12        # the local transaction did commit: make its messages visible
  weir txn rollback 13      # it did not: discard its half messages";

/// List undecided transactions, and commit or roll one back.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct TransactionArguments {
    #[command(subcommand)]
    command: TransactionCommand,

    #[command(flatten)]
    server: ServerArgument,
}

#[derive(Debug, clap::Subcommand)]
enum TransactionCommand {
    /// List undecided transactions, oldest first
    #[command(after_help = "Example:\n  weir txn list --json")]
    List(JsonFlag),
    /// Show one undecided transaction
    #[command(after_help = "Example:\n  weir txn show 12")]
    Show(IdArguments),
    /// Commit a transaction: every half message becomes visible at once
    #[command(after_help = "Example:\n  weir txn commit 12")]
    Commit(IdArguments),
    /// Roll a transaction back: its half messages are discarded
    #[command(after_help = "Example:\n  weir txn rollback 12")]
    Rollback(IdArguments),
}

#[derive(Debug, clap::Args)]
struct JsonFlag {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct IdArguments {
    /// The transaction's id, as `weir txn list` shows it
    id: u64,

    /// Print JSON
    #[arg(long)]
    json: bool,
}

pub async fn run(arguments: TransactionArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    let mut output = std::io::stdout().lock();
    match arguments.command {
        TransactionCommand::List(list) => {
            let transactions = client
                .transactions()
                .await
                .context("cannot list transactions")?;
            if list.json {
                let value: Vec<Value> = transactions.iter().map(info_json).collect();
                return write_json_pretty(&mut output, &Value::Array(value))
                    .context("cannot write to stdout");
            }
            let now_ms = now_ms();
            let rows: Vec<Vec<String>> = transactions
                .iter()
                .map(|info| {
                    vec![
                        info.id.to_string(),
                        info.producer_group.clone(),
                        state_name(info.state).to_owned(),
                        format_duration_ms(u64::try_from(now_ms - info.created_ms).unwrap_or(0)),
                        info.checks.to_string(),
                        info.parts.to_string(),
                    ]
                })
                .collect();
            write_table(
                &mut output,
                &["ID", "PRODUCER_GROUP", "STATE", "AGE", "CHECKS", "PARTS"],
                &rows,
            )
            .context("cannot write to stdout")
        }
        TransactionCommand::Show(show) => {
            let transactions = client
                .transactions()
                .await
                .context("cannot list transactions")?;
            let Some(info) = transactions.iter().find(|info| info.id == show.id) else {
                // The broker's list is its answer: a missing transaction is a refusal (exit
                // 2, as for `commit` of one), not a usage error.
                let code = weir_client::ErrorCode::NotFound;
                return Err(weir_client::Error::Server {
                    code: Some(code),
                    raw_code: code.code(),
                    message: format!(
                        "no undecided transaction {} (decided already, or never begun)",
                        show.id
                    ),
                })
                .context(format!("cannot show transaction {}", show.id));
            };
            if show.json {
                return write_json_pretty(&mut output, &info_json(info))
                    .context("cannot write to stdout");
            }
            write_fields(
                &mut output,
                &[
                    ("id", info.id.to_string()),
                    ("producer group", info.producer_group.clone()),
                    ("state", state_name(info.state).to_owned()),
                    ("created", format_rfc3339(info.created_ms)),
                    ("checks", info.checks.to_string()),
                    ("parts", info.parts.to_string()),
                ],
            )
            .context("cannot write to stdout")
        }
        TransactionCommand::Commit(commit) => {
            let targets = client
                .commit_transaction(commit.id)
                .await
                .with_context(|| format!("cannot commit transaction {}", commit.id))?;
            if commit.json {
                let value: Vec<Value> = targets
                    .iter()
                    .flat_map(|target| {
                        target.partitions.iter().map(|range| {
                            json!({
                                "topic": target.topic,
                                "partition": range.partition,
                                "first_offset": range.base_offset,
                                "last_offset": range.last_offset,
                            })
                        })
                    })
                    .collect();
                return write_json_pretty(
                    &mut output,
                    &json!({"id": commit.id, "committed": value}),
                )
                .context("cannot write to stdout");
            }
            writeln!(output, "committed transaction {}", commit.id)
                .context("cannot write to stdout")?;
            for target in &targets {
                for range in &target.partitions {
                    writeln!(
                        output,
                        "topic={} partition={} offsets={}-{}",
                        target.topic, range.partition, range.base_offset, range.last_offset
                    )
                    .context("cannot write to stdout")?;
                }
            }
            Ok(())
        }
        TransactionCommand::Rollback(rollback) => {
            client
                .rollback_transaction(rollback.id)
                .await
                .with_context(|| format!("cannot roll back transaction {}", rollback.id))?;
            writeln!(output, "rolled back transaction {}", rollback.id)
                .context("cannot write to stdout")
        }
    }
}

fn state_name(state: TransactionState) -> &'static str {
    match state {
        TransactionState::Open => "open",
        TransactionState::Committing => "committing",
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        })
}

fn info_json(info: &TransactionInfo) -> Value {
    json!({
        "id": info.id,
        "producer_group": info.producer_group,
        "state": state_name(info.state),
        "created": format_rfc3339(info.created_ms),
        "created_ms": info.created_ms,
        "checks": info.checks,
        "parts": info.parts,
    })
}
