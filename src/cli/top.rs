//! `weir top`: the view of `weir stats`, redrawn every second (clear screen, the firing
//! alerts, then the tables) until Ctrl-C, with rates over the last refresh.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;

use crate::cli::connection::{ServerArgument, connect};
use crate::cli::duration::parse_duration;
use crate::cli::stats::{BrokerAlerts, render};

const EXAMPLES: &str = "\
Examples:
  weir top
  weir top --interval 5s
  WEIR_SERVER=broker-1:5680 weir top";

/// ANSI: clear the screen and move the cursor home.
const CLEAR: &str = "\x1b[2J\x1b[H";

/// Watch the broker's firing alerts and numbers, refreshed every second, until Ctrl-C.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct TopArguments {
    /// Time between refreshes
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    interval: Duration,

    #[command(flatten)]
    server: ServerArgument,
}

pub async fn run(arguments: TopArguments) -> anyhow::Result<()> {
    let client = connect(&arguments.server).await?;
    let interval = arguments.interval.max(Duration::from_millis(100));
    let mut previous = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One listener for the whole run, so that a Ctrl-C arriving while the screen is being
    // drawn is still seen at the next wait.
    let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = &mut interrupted => return Ok(()),
        }
        let mut screen = Vec::new();
        screen.extend_from_slice(CLEAR.as_bytes());
        match client.stats().await {
            Ok(current) => {
                let alerts = BrokerAlerts::fetch(&client).await;
                render(&mut screen, &current, previous.as_ref(), &alerts)?;
                previous = Some(current);
            }
            // The client reconnects by itself; say why the numbers are missing meanwhile.
            Err(error) => writeln!(screen, "cannot read the broker's stats: {error}")?,
        }
        writeln!(
            screen,
            "\nweir top — {} — every {}; Ctrl-C to quit",
            arguments.server.server,
            humantime::format_duration(interval)
        )?;
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(&screen)
            .context("cannot write to stdout")?;
        stdout.flush().context("cannot write to stdout")?;
    }
}
