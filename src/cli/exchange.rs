//! `weir exchange create|delete|bind|unbind|list`: declare exchanges and bind topics to them.
//! Publish through one with `weir pub --exchange NAME --routing-key KEY`.

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};
use weir_client::{Binding, ExchangeInfo, ExchangeKind};

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::output::{write_json_pretty, write_table};

const EXAMPLES: &str = "\
Examples:
  weir exchange create orders --kind topic
  weir exchange bind orders vip-orders --key 'order.vip.*'
  weir exchange bind orders all-orders --key 'order.#'
  weir pub --exchange orders --routing-key order.vip.created 'order 7'
  weir exchange list

Kinds: direct (binding key = routing key), topic (dot-separated words; * is one word, # zero
or more), fanout (every binding), headers (--header NAME=VALUE pairs, --match all or any).";

/// Declare exchanges, bind topics to them, and list them.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ExchangeArguments {
    #[command(subcommand)]
    command: ExchangeCommand,

    #[command(flatten)]
    server: ServerArgument,
}

#[derive(Debug, clap::Subcommand)]
enum ExchangeCommand {
    /// Declare an exchange (declaring it again with the same settings changes nothing)
    #[command(
        after_help = "Example:\n  weir exchange create orders --kind topic --alternate-topic unrouted"
    )]
    Create(CreateArguments),
    /// Delete an exchange and its bindings (the topics stay)
    #[command(after_help = "Example:\n  weir exchange delete orders")]
    Delete(NameArgument),
    /// Route messages matching a key, pattern or headers to a topic
    #[command(
        after_help = "Examples:\n  weir exchange bind orders vip-orders --key 'order.vip.*'\n  weir exchange bind by-region eu --header region=eu --header tier=gold --match any"
    )]
    Bind(BindArguments),
    /// Remove an exchange's bindings to a topic (only those with --key, if given)
    #[command(
        after_help = "Example:\n  weir exchange unbind orders vip-orders --key 'order.vip.*'"
    )]
    Unbind(UnbindArguments),
    /// List every exchange with its bindings
    #[command(after_help = "Example:\n  weir exchange list --json")]
    List(JsonFlag),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KindArgument {
    Direct,
    Topic,
    Fanout,
    Headers,
}

impl From<KindArgument> for ExchangeKind {
    fn from(kind: KindArgument) -> ExchangeKind {
        match kind {
            KindArgument::Direct => ExchangeKind::Direct,
            KindArgument::Topic => ExchangeKind::Topic,
            KindArgument::Fanout => ExchangeKind::Fanout,
            KindArgument::Headers => ExchangeKind::Headers,
        }
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum MatchArgument {
    /// Every header pair must match
    All,
    /// Any one pair is enough
    Any,
}

#[derive(Debug, clap::Args)]
struct CreateArguments {
    /// The exchange's name
    name: String,

    /// How it matches bindings
    #[arg(long, value_enum, default_value = "direct")]
    kind: KindArgument,

    /// Where messages matching no binding go [default: refused or dropped]
    #[arg(long, value_name = "TOPIC")]
    alternate_topic: Option<String>,

    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Debug, clap::Args)]
struct NameArgument {
    /// The exchange's name
    name: String,
}

#[derive(Debug, clap::Args)]
struct BindArguments {
    /// The exchange
    exchange: String,

    /// The topic to route to
    topic: String,

    /// The routing key (direct) or pattern (topic); fanout and headers exchanges ignore it
    #[arg(long, default_value = "")]
    key: String,

    /// A header NAME=VALUE a headers exchange matches; repeat for more
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_pair)]
    headers: Vec<(String, String)>,

    /// Whether every header must match or any one
    #[arg(long = "match", value_enum, default_value = "all")]
    matching: MatchArgument,

    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Debug, clap::Args)]
struct UnbindArguments {
    /// The exchange
    exchange: String,

    /// The bound topic
    topic: String,

    /// Only the binding with this key [default: every binding to the topic]
    #[arg(long)]
    key: Option<String>,

    #[command(flatten)]
    json: JsonFlag,
}

#[derive(Debug, clap::Args)]
struct JsonFlag {
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("'{text}' is not a header NAME=VALUE")),
    }
}

pub async fn run(arguments: ExchangeArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    let mut output = std::io::stdout().lock();
    match arguments.command {
        ExchangeCommand::Create(create) => {
            let exchange = client
                .create_exchange(
                    &create.name,
                    create.kind.into(),
                    create.alternate_topic.as_deref(),
                )
                .await
                .with_context(|| format!("cannot create exchange '{}'", create.name))?;
            show(&mut output, &[exchange], create.json.json, true)
        }
        ExchangeCommand::Delete(delete) => {
            client
                .delete_exchange(&delete.name)
                .await
                .with_context(|| format!("cannot delete exchange '{}'", delete.name))?;
            writeln!(output, "deleted exchange '{}'", delete.name).context("cannot write to stdout")
        }
        ExchangeCommand::Bind(bind) => {
            let binding = Binding {
                topic: bind.topic.clone(),
                key: bind.key.clone(),
                headers: bind.headers.clone(),
                match_all: matches!(bind.matching, MatchArgument::All),
            };
            let exchange = client
                .bind(&bind.exchange, binding)
                .await
                .with_context(|| {
                    format!(
                        "cannot bind '{}' to exchange '{}'",
                        bind.topic, bind.exchange
                    )
                })?;
            show(&mut output, &[exchange], bind.json.json, true)
        }
        ExchangeCommand::Unbind(unbind) => {
            let exchange = client
                .unbind(&unbind.exchange, &unbind.topic, unbind.key.as_deref())
                .await
                .with_context(|| {
                    format!(
                        "cannot unbind '{}' from exchange '{}'",
                        unbind.topic, unbind.exchange
                    )
                })?;
            show(&mut output, &[exchange], unbind.json.json, true)
        }
        ExchangeCommand::List(list) => {
            let exchanges = client.exchanges().await.context("cannot list exchanges")?;
            show(&mut output, &exchanges, list.json, false)
        }
    }
}

fn kind_name(kind: ExchangeKind) -> &'static str {
    match kind {
        ExchangeKind::Direct => "direct",
        ExchangeKind::Topic => "topic",
        ExchangeKind::Fanout => "fanout",
        ExchangeKind::Headers => "headers",
    }
}

fn binding_json(binding: &Binding) -> Value {
    json!({
        "topic": binding.topic,
        "key": binding.key,
        "headers": binding.headers.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>(),
        "match": if binding.match_all { "all" } else { "any" },
    })
}

/// What a binding matches, in one cell.
fn binding_match(kind: ExchangeKind, binding: &Binding) -> String {
    match kind {
        ExchangeKind::Fanout => "*".to_owned(),
        ExchangeKind::Headers => {
            let pairs: Vec<String> = binding
                .headers
                .iter()
                .map(|(name, value)| format!("{name}={value}"))
                .collect();
            let joiner = if binding.match_all { " & " } else { " | " };
            pairs.join(joiner)
        }
        ExchangeKind::Direct | ExchangeKind::Topic => binding.key.clone(),
    }
}

/// A table with one row per binding (an exchange without bindings gets one row), or JSON: an
/// object for the `single` exchange a change returns, else an array.
fn show(
    output: &mut impl Write,
    exchanges: &[ExchangeInfo],
    json: bool,
    single: bool,
) -> anyhow::Result<()> {
    if json {
        let value: Vec<Value> = exchanges
            .iter()
            .map(|exchange| {
                json!({
                    "name": exchange.name,
                    "kind": kind_name(exchange.kind),
                    "alternate_topic": exchange.alternate_topic,
                    "bindings": exchange.bindings.iter().map(binding_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        let value = match (single, value.as_slice()) {
            (true, [one]) => one.clone(),
            _ => Value::Array(value),
        };
        return write_json_pretty(output, &value).context("cannot write to stdout");
    }
    let mut rows = Vec::new();
    for exchange in exchanges {
        let alternate = exchange
            .alternate_topic
            .clone()
            .unwrap_or_else(|| "-".into());
        if exchange.bindings.is_empty() {
            rows.push(vec![
                exchange.name.clone(),
                kind_name(exchange.kind).to_owned(),
                alternate.clone(),
                "-".into(),
                "-".into(),
            ]);
        }
        for binding in &exchange.bindings {
            rows.push(vec![
                exchange.name.clone(),
                kind_name(exchange.kind).to_owned(),
                alternate.clone(),
                binding_match(exchange.kind, binding),
                binding.topic.clone(),
            ]);
        }
    }
    write_table(
        output,
        &["EXCHANGE", "KIND", "ALTERNATE", "MATCHES", "TOPIC"],
        &rows,
    )
    .context("cannot write to stdout")
}
