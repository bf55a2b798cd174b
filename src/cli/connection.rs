//! What every client verb shares: the `--server` flag, connecting, and how a failure becomes
//! an exit code.
//!
//! Exit codes are part of the CLI's contract with scripts: 0 success (a closed stdout, as when
//! piping into `head`, counts as success), [`USAGE`] for bad arguments and anything else,
//! [`SERVER`] when the broker refused a request, [`CANNOT_CONNECT`] when the broker could not
//! be reached. `main` asks [`exit_code`] which one an error means.

use anyhow::Context;
use weir_client::{Client, ClientOptions};

/// Bad arguments, or a failure that is neither the broker's answer nor the network.
pub const USAGE: u8 = 1;
/// The broker answered with an error (its name and message are printed).
pub const SERVER: u8 = 2;
/// The broker could not be reached, or the connection to it was lost.
pub const CANNOT_CONNECT: u8 = 3;

/// The broker's native address, shared by every client verb. `global` so that it may also be
/// written after a sub-verb (`weir topic list --server …`).
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgument {
    /// The broker's native protocol address
    #[arg(
        long,
        global = true,
        env = "WEIR_SERVER",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:5680"
    )]
    pub server: String,
}

/// Marks a failure to reach the broker, so that [`exit_code`] can tell it from a broker's
/// refusal however much context is added around it.
#[derive(Debug)]
pub struct CannotConnect {
    address: String,
}

impl std::fmt::Display for CannotConnect {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "cannot connect to the broker at {} (is `weir serve` running there? \
             choose another with --server or WEIR_SERVER)",
            self.address
        )
    }
}

impl std::error::Error for CannotConnect {}

/// Connects to the broker named by `--server`.
pub async fn connect(server: &ServerArgument) -> anyhow::Result<Client> {
    let options = ClientOptions {
        client_name: format!("weir-cli/{}", env!("CARGO_PKG_VERSION")),
        ..ClientOptions::default()
    };
    Client::connect_with(&server.server, options)
        .await
        .context(CannotConnect {
            address: server.server.clone(),
        })
}

/// The exit code an error means (see the module documentation).
pub fn exit_code(error: &anyhow::Error) -> u8 {
    // `downcast_ref` on the anyhow error (unlike on each cause of its chain) also finds a
    // value given as `.context(…)`, however many contexts were added after it.
    if error.downcast_ref::<CannotConnect>().is_some() {
        return CANNOT_CONNECT;
    }
    for cause in error.chain() {
        if let Some(client_error) = cause.downcast_ref::<weir_client::Error>() {
            return match client_error {
                weir_client::Error::Server { .. } => SERVER,
                // A broker that went away mid-command is as unreachable as one never reached.
                error if error.is_retryable() => CANNOT_CONNECT,
                _ => USAGE,
            };
        }
    }
    USAGE
}

/// Whether the error is stdout (or another pipe) closed by its reader: `weir sub … | head`
/// ends that way, and it is success, not a failure.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_refusal_under_context_exits_with_the_server_code() {
        let refused: anyhow::Result<()> = Err(weir_client::Error::Server {
            code: Some(weir_client::ErrorCode::UnknownTopic),
            raw_code: weir_client::ErrorCode::UnknownTopic.code(),
            message: "no topic 'x'".into(),
        })
        .context("cannot describe topic 'x'");
        let error = refused.expect_err("an error");
        assert_eq!(exit_code(&error), SERVER);
        assert!(format!("{error:#}").contains("unknown_topic"));
    }

    #[test]
    fn a_failed_connect_and_a_lost_connection_exit_with_the_connect_code() {
        let failed: anyhow::Result<()> =
            Err(weir_client::Error::Closed("reset".into())).context(CannotConnect {
                address: "127.0.0.1:1".into(),
            });
        let failed = failed.context("cannot list topics");
        assert_eq!(exit_code(&failed.expect_err("an error")), CANNOT_CONNECT);
        let lost = anyhow::Error::new(weir_client::Error::Closed("eof".into()));
        assert_eq!(exit_code(&lost), CANNOT_CONNECT);
    }

    #[test]
    fn anything_else_exits_with_the_usage_code_and_a_broken_pipe_is_recognised() {
        let other = anyhow::anyhow!("bad header");
        assert_eq!(exit_code(&other), USAGE);
        assert!(!is_broken_pipe(&other));
        let pipe = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            .context("cannot write to stdout");
        assert!(is_broken_pipe(&pipe));
    }
}
