//! The `weir` binary: `weir serve` runs the broker; client verbs talk to a running one.
//!
//! Each verb is one module under `cli/` with its own `clap` arguments and an async `run`; this
//! file only parses the command line, installs the tracing subscriber, starts the runtime and
//! maps an error to the exit code. To add a verb: add `cli/<verb>.rs`, declare it in
//! `cli/mod.rs`, and add a variant to [`Command`] and a line to its `match` in [`main`].
//! `anyhow` lives here and nowhere else in the workspace.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// A durable message broker in one binary.
#[derive(Debug, Parser)]
#[command(
    name = "weir",
    version,
    after_help = "Example:\n  weir serve --data-dir /var/lib/weir --native-addr 0.0.0.0:5680"
)]
struct Arguments {
    /// What to log: a level (error, warn, info, debug, trace) or filter directives as in
    /// RUST_LOG (`weir_core=debug,info`). Wins over RUST_LOG.
    #[arg(long, global = true, env = "WEIR_LOG_LEVEL", value_name = "FILTER")]
    log_level: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker until Ctrl-C or SIGTERM.
    Serve(cli::serve::ServeArguments),
    /// Run the broker workloads W1–W4 against a running broker.
    Bench(cli::bench::BenchArguments),
    /// Publish messages: an argument, or each line of stdin.
    #[command(name = "pub")]
    Publish(cli::publish::PublishArguments),
    /// Consume messages from a topic and print one per line.
    #[command(name = "sub")]
    Subscribe(cli::subscribe::SubscribeArguments),
    /// Create, list, describe and delete topics.
    Topic(cli::topic::TopicArguments),
    /// Inspect and reset subscriptions (consumer groups).
    Group(cli::group::GroupArguments),
    /// Declare exchanges and bind topics to them.
    Exchange(cli::exchange::ExchangeArguments),
    /// Inspect, redrive and purge dead-letter queues.
    Dlq(cli::dlq::DlqArguments),
    /// List, inspect, cancel and reschedule delayed messages.
    Schedule(cli::schedule::ScheduleArguments),
    /// List undecided transactions; commit or roll one back.
    #[command(name = "txn")]
    Transaction(cli::transaction::TransactionArguments),
    /// Show the broker's numbers once: firing alerts, topics, subscriptions, rates, success,
    /// latency.
    Stats(cli::stats::StatsArguments),
    /// Watch the broker's firing alerts and numbers, refreshed every second, until Ctrl-C.
    Top(cli::top::TopArguments),
}

impl Command {
    /// The log filter when neither `--log-level` nor RUST_LOG says otherwise. The server
    /// reports its lifecycle at info; client verbs print their results on stdout and keep
    /// stderr for trouble.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Serve(_) => "info",
            Command::Bench(_) => "warn",
            // A refused batch is reported once, as the command's error, not also as a log line.
            Command::Publish(_) => "error",
            Command::Subscribe(_)
            | Command::Topic(_)
            | Command::Group(_)
            | Command::Exchange(_)
            | Command::Dlq(_)
            | Command::Schedule(_)
            | Command::Transaction(_)
            | Command::Stats(_)
            | Command::Top(_) => "warn",
        }
    }

    /// Worker threads of the runtime: `None` for one per core. The bench drives its client on
    /// one thread unless asked otherwise, leaving the other cores to the broker.
    fn runtime_threads(&self) -> Option<usize> {
        match self {
            Command::Bench(bench) => Some(bench.runtime_threads()),
            _ => None,
        }
    }
}

fn main() -> ExitCode {
    let arguments = match Arguments::try_parse() {
        Ok(arguments) => arguments,
        Err(error) => {
            // clap would exit with 2 on a usage error, but 2 means "the broker refused" here
            // (cli::connection): usage errors exit with 1, help and version with 0.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(cli::connection::USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(error) = install_tracing(
        arguments.log_level.as_deref(),
        arguments.command.default_log_filter(),
    ) {
        eprintln!("error: {error:#}");
        return ExitCode::FAILURE;
    }
    let mut builder = match arguments.command.runtime_threads() {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match arguments.command {
            Command::Serve(serve) => cli::serve::run(serve).await,
            Command::Bench(bench) => cli::bench::run(bench).await,
            Command::Publish(publish) => cli::publish::run(publish).await,
            Command::Subscribe(subscribe) => cli::subscribe::run(subscribe).await,
            Command::Topic(topic) => cli::topic::run(topic).await,
            Command::Group(group) => cli::group::run(group).await,
            Command::Exchange(exchange) => cli::exchange::run(exchange).await,
            Command::Dlq(dlq) => cli::dlq::run(dlq).await,
            Command::Schedule(schedule) => cli::schedule::run(schedule).await,
            Command::Transaction(transaction) => cli::transaction::run(transaction).await,
            Command::Stats(stats) => cli::stats::run(stats).await,
            Command::Top(top) => cli::top::run(top).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of stdout went away (`weir sub … | head`): it has all it wanted.
        Err(error) if cli::connection::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(cli::connection::exit_code(&error))
        }
    }
}

/// Logs go to stderr, so stdout stays clean for verbs that print results. Precedence:
/// `--log-level` (or WEIR_LOG_LEVEL), then RUST_LOG, then the verb's default.
fn install_tracing(flag: Option<&str>, default: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let filter = match flag {
        Some(directives) => EnvFilter::try_new(directives)
            .with_context(|| format!("invalid --log-level '{directives}'"))?,
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new(default))?,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only where a person reads them; log files and tests get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}
