//! `weir serve`: open the broker on a data directory and serve the native protocol and the
//! HTTP API until SIGINT or SIGTERM, then shut down gracefully.
//!
//! Every setting comes from, in order of precedence: a flag, its `WEIR_*` environment
//! variable, the TOML file given by `--config`, the built-in default (DESIGN.md §4: data in
//! `./weir-data`, native protocol on 127.0.0.1:5680, HTTP on 127.0.0.1:15680). Flags and
//! variables are `clap`'s job; this module merges the result with the file ([`resolve`], a
//! pure function) and runs the server. It logs exactly one `native listener on ADDR` and one
//! `http listener on ADDR` line with the bound addresses, which scripts and tests read to
//! learn the ports when they were 0.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;
use tokio::signal::unix::{SignalKind, signal};
use weir_core::{AlertMetric, AlertRule, Broker, BrokerConfig, Comparison, FsyncPolicy};
use weir_server::{Server, ServerConfig};

const DEFAULT_DATA_DIR: &str = "./weir-data";
const DEFAULT_NATIVE_ADDR: &str = "127.0.0.1:5680";
const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:15680";

const EXAMPLES: &str = "\
Examples:
  weir serve
  weir serve --data-dir /var/lib/weir --native-addr 0.0.0.0:5680
  WEIR_DEFAULT_FSYNC=os weir serve --config weir.toml

A config file holds any of these keys (flags and WEIR_* variables win over it):
  data_dir = \"./weir-data\"
  native_addr = \"127.0.0.1:5680\"
  http_addr = \"127.0.0.1:15680\"
  auto_create_topics = true
  default_ack_timeout_ms = 30000
  default_partitions = 1
  default_fsync = \"always\"        # or \"os\", or \"interval(10)\" (milliseconds)
  max_frame_bytes = 16777216
  max_connections = 1024
  handshake_timeout_ms = 10000           # a native client must say hello within this
  idle_timeout_ms = 600000               # a native connection with nothing open or in flight
  http_max_connections = 1024
  reserved_files = 256                   # open files kept from connections for storage
                                         # [default: a quarter of the limit, at least 64]
  http_header_timeout_ms = 10000         # to send a whole request head
  http_idle_timeout_ms = 60000           # a keep-alive connection between requests
  http_allowed_hosts = [\"weir.example.com\"]  # Host/Origin names besides IPs and localhost
  transaction_timeout_ms = 6000          # undecided this long, a transaction is checked back
  transaction_check_interval_ms = 6000   # between two checks of one transaction
  alert_webhook = \"http://127.0.0.1:9000/alerts\"

and alert rules, which replace the two defaults (backlog above 10000, success rate below
0.95) until rules are first edited through the HTTP API (/v1/alert-rules); from then on the
edited set, kept in the data directory, wins:
  [[alert_rules]]
  name = \"backlog-high\"
  metric = \"backlog\"        # success_rate, in_flight, latency_p99_ms, consumers, dead_lettered
  scope = \"orders/*\"        # topic/subscription, * matches anything [default: *]
  comparison = \"above\"      # or below
  threshold = 10000
  for_ms = 0                # how long it must hold before firing [default: 0]
  message = \"backlog too high, add consumers\"";

/// Run the broker until Ctrl-C or SIGTERM.
#[derive(Debug, Default, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct ServeArguments {
    /// Directory of the broker's data [default: ./weir-data]
    #[arg(long, env = "WEIR_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Address of the native protocol listener; port 0 picks a free port [default:
    /// 127.0.0.1:5680]
    #[arg(long, env = "WEIR_NATIVE_ADDR", value_name = "HOST:PORT")]
    native_addr: Option<String>,

    /// Address of the HTTP API listener; port 0 picks a free port [default: 127.0.0.1:15680]
    #[arg(long, env = "WEIR_HTTP_ADDR", value_name = "HOST:PORT")]
    http_addr: Option<String>,

    /// TOML file with defaults for any of these settings
    #[arg(long, env = "WEIR_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Create a topic on the first publish or subscribe that names it [default: true]
    #[arg(long, env = "WEIR_AUTO_CREATE_TOPICS", value_name = "BOOL")]
    auto_create_topics: Option<bool>,

    /// Queue subscriptions created without their own ack timeout redeliver after this long
    /// [default: 30000]
    #[arg(long, env = "WEIR_DEFAULT_ACK_TIMEOUT_MS", value_name = "MS")]
    default_ack_timeout_ms: Option<u64>,

    /// Partitions of a topic created without saying [default: 1]
    #[arg(long, env = "WEIR_DEFAULT_PARTITIONS", value_name = "N")]
    default_partitions: Option<u32>,

    /// Fsync policy of a topic created without saying: always, os, or interval(MS)
    /// [default: always]
    #[arg(long, env = "WEIR_DEFAULT_FSYNC", value_name = "POLICY")]
    default_fsync: Option<String>,

    /// Largest frame a client may send, in bytes [default: 16777216]
    #[arg(long, env = "WEIR_MAX_FRAME_BYTES", value_name = "BYTES")]
    max_frame_bytes: Option<usize>,

    /// Most client connections at once [default: 1024]
    #[arg(long, env = "WEIR_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,

    /// Close a native connection that has not said hello this long after connecting
    /// [default: 10000]
    #[arg(long, env = "WEIR_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    handshake_timeout_ms: Option<u64>,

    /// Close a native connection without a request for this long, unless it has a
    /// subscription, a transaction checker or a publish in flight [default: 600000]
    #[arg(long, env = "WEIR_IDLE_TIMEOUT_MS", value_name = "MS")]
    idle_timeout_ms: Option<u64>,

    /// Most HTTP connections at once [default: 1024]
    #[arg(long, env = "WEIR_HTTP_MAX_CONNECTIONS", value_name = "N")]
    http_max_connections: Option<usize>,

    /// Open files kept free of connections, for storage (segments, indexes, the metadata
    /// store): each listener's connection limit is lowered to fit the rest of the open-files
    /// limit [default: a quarter of that limit, at least 64]
    #[arg(long, env = "WEIR_RESERVED_FILES", value_name = "N")]
    reserved_files: Option<u64>,

    /// Close an HTTP connection whose request head is not complete this long after it began
    /// [default: 10000]
    #[arg(long, env = "WEIR_HTTP_HEADER_TIMEOUT_MS", value_name = "MS")]
    http_header_timeout_ms: Option<u64>,

    /// Close a keep-alive HTTP connection idle between requests for this long [default: 60000]
    #[arg(long, env = "WEIR_HTTP_IDLE_TIMEOUT_MS", value_name = "MS")]
    http_idle_timeout_ms: Option<u64>,

    /// Host names the HTTP API answers to besides IP addresses and localhost (a reverse
    /// proxy's name), comma-separated; * allows any [default: none]
    #[arg(
        long,
        env = "WEIR_HTTP_ALLOWED_HOSTS",
        value_name = "NAMES",
        value_delimiter = ','
    )]
    http_allowed_hosts: Option<Vec<String>>,

    /// POST every alert that fires or resolves, as JSON, to this http:// URL [default: none]
    #[arg(long, env = "WEIR_ALERT_WEBHOOK", value_name = "URL")]
    alert_webhook: Option<String>,

    /// A transaction left undecided this long is checked back with a live producer of its
    /// group [default: 6000]
    #[arg(long, env = "WEIR_TRANSACTION_TIMEOUT_MS", value_name = "MS")]
    transaction_timeout_ms: Option<u64>,

    /// Time between two check-backs of one transaction [default: 6000]
    #[arg(long, env = "WEIR_TRANSACTION_CHECK_INTERVAL_MS", value_name = "MS")]
    transaction_check_interval_ms: Option<u64>,
}

/// The `--config` file. Unknown keys are refused, so a typo is an error, not a silent default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    native_addr: Option<String>,
    http_addr: Option<String>,
    auto_create_topics: Option<bool>,
    default_ack_timeout_ms: Option<u64>,
    default_partitions: Option<u32>,
    default_fsync: Option<String>,
    max_frame_bytes: Option<usize>,
    max_connections: Option<usize>,
    handshake_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    http_max_connections: Option<usize>,
    reserved_files: Option<u64>,
    http_header_timeout_ms: Option<u64>,
    http_idle_timeout_ms: Option<u64>,
    http_allowed_hosts: Option<Vec<String>>,
    alert_webhook: Option<String>,
    alert_rules: Option<Vec<FileAlertRule>>,
    transaction_timeout_ms: Option<u64>,
    transaction_check_interval_ms: Option<u64>,
}

/// One `[[alert_rules]]` table: [`weir_core::AlertRule`], with unknown keys refused like the
/// rest of the file (the core's type accepts them, for rules saved by other versions).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAlertRule {
    name: String,
    metric: AlertMetric,
    #[serde(default = "every_subscription")]
    scope: String,
    comparison: Comparison,
    threshold: f64,
    #[serde(default)]
    for_ms: u64,
    #[serde(default)]
    message: String,
}

fn every_subscription() -> String {
    "*".into()
}

/// The file's rules, checked as the broker checks rules set through the API.
fn alert_rules(rules: Vec<FileAlertRule>) -> anyhow::Result<Vec<AlertRule>> {
    let mut checked: Vec<AlertRule> = Vec::with_capacity(rules.len());
    for rule in rules {
        if rule.name.is_empty() {
            bail!("an alert rule in the config file has an empty name");
        }
        if checked.iter().any(|earlier| earlier.name == rule.name) {
            bail!(
                "two alert rules in the config file are named '{}'",
                rule.name
            );
        }
        if !rule.threshold.is_finite() {
            bail!("the alert rule '{}' needs a finite threshold", rule.name);
        }
        if rule.scope.is_empty() {
            bail!(
                "the alert rule '{}' has an empty scope ('*' matches everything)",
                rule.name
            );
        }
        checked.push(AlertRule {
            name: rule.name,
            metric: rule.metric,
            scope: rule.scope,
            comparison: rule.comparison,
            threshold: rule.threshold,
            for_ms: rule.for_ms,
            message: rule.message,
        });
    }
    Ok(checked)
}

/// Everything `serve` needs, merged and checked.
#[derive(Debug)]
struct Settings {
    broker: BrokerConfig,
    server: ServerConfig,
    /// Open files kept free of connections; `None`: derived from the limit.
    reserved_files: Option<u64>,
}

/// Smallest frame limit accepted: a handshake and an error frame must fit with room to spare.
const MIN_FRAME_BYTES: usize = 1024;

fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

/// Parses `always`, `os`, `interval(10)`, `interval(10ms)` or `interval:10`.
fn parse_fsync(text: &str) -> anyhow::Result<FsyncPolicy> {
    let text = text.trim();
    let interval = text
        .strip_prefix("interval(")
        .and_then(|rest| rest.strip_suffix(')'))
        .or_else(|| text.strip_prefix("interval:"))
        .map(|milliseconds| milliseconds.trim().trim_end_matches("ms"));
    match (text, interval) {
        ("always", _) => Ok(FsyncPolicy::Always),
        ("os", _) => Ok(FsyncPolicy::Os),
        (_, Some(milliseconds)) => match milliseconds.parse::<u32>() {
            Ok(milliseconds) if milliseconds > 0 => Ok(FsyncPolicy::IntervalMs(milliseconds)),
            _ => bail!("invalid fsync interval '{text}': expected interval(MS) with MS ≥ 1"),
        },
        _ => bail!("invalid fsync policy '{text}': expected always, os or interval(MS)"),
    }
}

fn resolve_address(text: &str) -> anyhow::Result<SocketAddr> {
    text.to_socket_addrs()
        .with_context(|| format!("invalid listener address '{text}': expected HOST:PORT"))?
        .next()
        .with_context(|| format!("'{text}' resolves to no address"))
}

/// Merges flags (already merged with the environment by clap) over the file over defaults.
fn resolve(arguments: &ServeArguments, file: FileConfig) -> anyhow::Result<Settings> {
    let data_dir = arguments
        .data_dir
        .clone()
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let native_addr = resolve_address(
        arguments
            .native_addr
            .as_deref()
            .or(file.native_addr.as_deref())
            .unwrap_or(DEFAULT_NATIVE_ADDR),
    )?;
    let http_addr = resolve_address(
        arguments
            .http_addr
            .as_deref()
            .or(file.http_addr.as_deref())
            .unwrap_or(DEFAULT_HTTP_ADDR),
    )?;

    let mut broker = BrokerConfig::new(data_dir);
    if let Some(auto_create) = arguments.auto_create_topics.or(file.auto_create_topics) {
        broker.auto_create_topics = auto_create;
    }
    if let Some(timeout_ms) = arguments
        .default_ack_timeout_ms
        .or(file.default_ack_timeout_ms)
    {
        if timeout_ms == 0 {
            bail!("the default ack timeout must be at least 1 ms");
        }
        broker.default_ack_timeout = Duration::from_millis(timeout_ms);
    }
    if let Some(partitions) = arguments.default_partitions.or(file.default_partitions) {
        if partitions == 0 {
            bail!("a topic needs at least 1 partition");
        }
        broker.default_topic.partitions = partitions;
    }
    if let Some(fsync) = arguments
        .default_fsync
        .as_deref()
        .or(file.default_fsync.as_deref())
    {
        broker.default_topic.fsync = parse_fsync(fsync)?;
    }
    if let Some(rules) = file.alert_rules {
        broker.alert_rules = alert_rules(rules)?;
    }
    if let Some(timeout_ms) = arguments
        .transaction_timeout_ms
        .or(file.transaction_timeout_ms)
    {
        if timeout_ms == 0 {
            bail!("the transaction timeout must be at least 1 ms");
        }
        broker.transactions.timeout_ms = timeout_ms;
    }
    if let Some(interval_ms) = arguments
        .transaction_check_interval_ms
        .or(file.transaction_check_interval_ms)
    {
        if interval_ms == 0 {
            bail!("the transaction check interval must be at least 1 ms");
        }
        broker.transactions.check_interval_ms = interval_ms;
    }

    let mut server = ServerConfig {
        native_addr,
        http_addr: Some(http_addr),
        ..ServerConfig::default()
    };
    if let Some(max_frame_bytes) = arguments.max_frame_bytes.or(file.max_frame_bytes) {
        if !(MIN_FRAME_BYTES..=u32::MAX as usize).contains(&max_frame_bytes) {
            bail!(
                "the maximum frame size must be between {MIN_FRAME_BYTES} and {} bytes",
                u32::MAX
            );
        }
        server.max_frame_bytes = max_frame_bytes;
    }
    if let Some(max_connections) = arguments.max_connections.or(file.max_connections) {
        if max_connections == 0 {
            bail!("the server must allow at least 1 connection");
        }
        server.max_connections = max_connections;
    }
    let timeouts = [
        (
            "handshake timeout",
            arguments.handshake_timeout_ms.or(file.handshake_timeout_ms),
            &mut server.handshake_timeout,
        ),
        (
            "idle timeout",
            arguments.idle_timeout_ms.or(file.idle_timeout_ms),
            &mut server.idle_timeout,
        ),
        (
            "HTTP header timeout",
            arguments
                .http_header_timeout_ms
                .or(file.http_header_timeout_ms),
            &mut server.http.header_timeout,
        ),
        (
            "HTTP idle timeout",
            arguments.http_idle_timeout_ms.or(file.http_idle_timeout_ms),
            &mut server.http.idle_timeout,
        ),
    ];
    for (what, milliseconds, setting) in timeouts {
        if let Some(milliseconds) = milliseconds {
            if milliseconds == 0 {
                bail!("the {what} must be at least 1 ms");
            }
            *setting = Duration::from_millis(milliseconds);
        }
    }
    if let Some(max_connections) = arguments.http_max_connections.or(file.http_max_connections) {
        if max_connections == 0 {
            bail!("the HTTP listener must allow at least 1 connection");
        }
        server.http.max_connections = max_connections;
    }
    if let Some(hosts) = arguments
        .http_allowed_hosts
        .clone()
        .or(file.http_allowed_hosts)
    {
        server.http.allowed_hosts = hosts
            .into_iter()
            .map(|host| host.trim().to_owned())
            .filter(|host| !host.is_empty())
            .collect();
    }
    if let Some(url) = arguments.alert_webhook.clone().or(file.alert_webhook) {
        weir_server::check_alert_webhook(&url).map_err(anyhow::Error::msg)?;
        server.alert_webhook = Some(url);
    }
    // A batch travels in one publish frame, so a batch limit above the frame limit could never
    // be reached; keeping them consistent makes the frame limit the one knob.
    broker.max_batch_bytes = broker.max_batch_bytes.min(server.max_frame_bytes);
    Ok(Settings {
        broker,
        server,
        reserved_files: arguments.reserved_files.or(file.reserved_files),
    })
}

/// Raises the soft limit on open files to the hard limit: every partition, connection and
/// segment being read holds a descriptor, and many systems start processes at a soft 1,024.
/// Returns the limit now in force; `None` when unlimited.
fn raise_open_files_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    // `None` is unlimited.
    let (Some(current), maximum) = (limit.current, limit.maximum) else {
        return None;
    };
    if maximum.is_some_and(|maximum| current >= maximum) {
        tracing::info!(open_files = current, "open files limit");
        return Some(current);
    }
    let raised = rustix::process::Rlimit {
        current: maximum,
        maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => {
            tracing::info!(from = current, to = ?maximum, "raised the open files limit");
            maximum
        }
        Err(error) => {
            tracing::warn!(limit = current, %error, "cannot raise the open files limit");
            Some(current)
        }
    }
}

/// The default of `--reserved-files`: a quarter of the open-files limit, at least 64.
fn default_reserved_files(open_files: u64) -> u64 {
    (open_files / 4).max(64)
}

/// Lowers the listeners' connection limits so that connections alone can never take the
/// open files storage needs: together they get what the limit leaves after `reserved`,
/// shared equally (at least one connection each). With the descriptors exhausted, a segment
/// roll or a new topic fails and `accept` spins on EMFILE, which is what the reserve prevents.
fn fit_connections_to_open_files(
    server: &mut ServerConfig,
    open_files: Option<u64>,
    reserved: Option<u64>,
) {
    let Some(open_files) = open_files else {
        return;
    };
    let reserved = reserved.unwrap_or_else(|| default_reserved_files(open_files));
    let listeners = if server.http_addr.is_some() { 2 } else { 1 };
    let share = usize::try_from(open_files.saturating_sub(reserved) / listeners)
        .unwrap_or(usize::MAX)
        .max(1);
    for (name, limit) in [
        ("native", &mut server.max_connections),
        ("http", &mut server.http.max_connections),
    ] {
        if *limit > share {
            tracing::warn!(
                listener = name,
                configured = *limit,
                open_files,
                reserved,
                "connection limit lowered to {share} so that {reserved} open files stay free for storage"
            );
            *limit = share;
        }
    }
}

pub async fn run(arguments: ServeArguments) -> anyhow::Result<()> {
    let file = match &arguments.config {
        Some(path) => load_file(path)?,
        None => FileConfig::default(),
    };
    let mut settings = resolve(&arguments, file)?;

    // Handlers first: from here on a signal means "shut down gracefully", never the default
    // action of dying on the spot, even if it arrives while the broker is still opening.
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;

    let open_files = raise_open_files_limit();
    fit_connections_to_open_files(&mut settings.server, open_files, settings.reserved_files);
    let data_dir = settings.broker.data_dir.clone();
    let broker = Broker::open(settings.broker)
        .await
        .with_context(|| format!("cannot open the broker on {}", data_dir.display()))?;
    let native_addr = settings.server.native_addr;
    let http_addr = settings.server.http_addr;
    let server = match Server::bind(broker.clone(), settings.server).await {
        Ok(server) => server,
        Err(error) => {
            broker.shutdown().await;
            let addresses = match http_addr {
                Some(http_addr) => format!("{native_addr} (native protocol) or {http_addr} (HTTP)"),
                None => format!("{native_addr} (native protocol)"),
            };
            return Err(error).with_context(|| format!("cannot listen on {addresses}"));
        }
    };
    tracing::info!("native listener on {}", server.native_addr());
    if let Some(address) = server.http_addr() {
        tracing::info!("http listener on {address}");
    }

    let (first_signal, first_signal_received) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        tracing::info!(
            signal = name,
            "shutting down: finishing in-flight requests (signal again to stop at once)"
        );
        let _ = first_signal.send(());
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        // The operator insists. Everything confirmed is already durable; what is lost is only
        // the answers to requests still in flight.
        tracing::warn!("second signal: exiting without waiting");
        std::process::exit(1);
    });
    server
        .run(async {
            let _ = first_signal_received.await;
        })
        .await
        .context("the server failed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> FileConfig {
        toml::from_str(text).unwrap()
    }

    /// Issue 10 #18: connections alone cannot take the open files storage needs.
    #[test]
    fn connection_limits_leave_the_reserved_open_files_to_storage() {
        let mut server = ServerConfig {
            http_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..ServerConfig::default()
        };
        fit_connections_to_open_files(&mut server, Some(1024), None);
        // A quarter (256) kept, the rest shared by the two listeners.
        assert_eq!(server.max_connections, 384);
        assert_eq!(server.http.max_connections, 384);
        fit_connections_to_open_files(&mut server, Some(1024), Some(1000));
        assert_eq!(
            (server.max_connections, server.http.max_connections),
            (12, 12)
        );

        let mut native_only = ServerConfig::default();
        fit_connections_to_open_files(&mut native_only, Some(200), None);
        assert_eq!(native_only.max_connections, 136, "at least 64 kept");
        // A limit high enough leaves the configured limits alone, and so does no limit.
        let mut roomy = ServerConfig::default();
        fit_connections_to_open_files(&mut roomy, Some(1 << 20), None);
        fit_connections_to_open_files(&mut roomy, None, Some(10));
        assert_eq!(roomy.max_connections, 1024);
        // Never below one connection.
        fit_connections_to_open_files(&mut roomy, Some(10), None);
        assert_eq!(roomy.max_connections, 1);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = resolve(&ServeArguments::default(), FileConfig::default()).unwrap();
        assert_eq!(settings.broker.data_dir, PathBuf::from("./weir-data"));
        assert_eq!(
            settings.server.native_addr,
            "127.0.0.1:5680".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            settings.server.http_addr,
            Some("127.0.0.1:15680".parse::<SocketAddr>().unwrap())
        );
        assert_eq!(settings.broker.default_topic.fsync, FsyncPolicy::Always);
        assert!(settings.broker.auto_create_topics);
    }

    #[test]
    fn the_file_overrides_defaults_and_flags_override_the_file() {
        let file = file(
            r#"
            data_dir = "/from/file"
            native_addr = "127.0.0.1:7000"
            http_addr = "127.0.0.1:7001"
            auto_create_topics = false
            default_ack_timeout_ms = 250
            default_partitions = 4
            default_fsync = "interval(20)"
            max_frame_bytes = 65536
            max_connections = 8
            "#,
        );
        let arguments = ServeArguments {
            data_dir: Some("/from/flag".into()),
            default_partitions: Some(2),
            ..ServeArguments::default()
        };
        let settings = resolve(&arguments, file).unwrap();
        assert_eq!(settings.broker.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.broker.default_topic.partitions, 2);
        assert_eq!(settings.server.native_addr.port(), 7000);
        assert_eq!(
            settings.server.http_addr.map(|address| address.port()),
            Some(7001)
        );
        assert!(!settings.broker.auto_create_topics);
        assert_eq!(
            settings.broker.default_ack_timeout,
            Duration::from_millis(250)
        );
        assert_eq!(
            settings.broker.default_topic.fsync,
            FsyncPolicy::IntervalMs(20)
        );
        assert_eq!(settings.server.max_frame_bytes, 65536);
        assert_eq!(settings.broker.max_batch_bytes, 65536);
        assert_eq!(settings.server.max_connections, 8);
    }

    /// The connection limits and timeouts of issue 10 (defect 19) and the allowed host names
    /// (defect 24): documented defaults, the file, flags over the file, zero refused.
    #[test]
    fn connection_timeouts_limits_and_allowed_hosts_come_from_the_file_and_flags() {
        let defaults = resolve(&ServeArguments::default(), FileConfig::default()).unwrap();
        assert_eq!(defaults.server.handshake_timeout, Duration::from_secs(10));
        assert_eq!(defaults.server.idle_timeout, Duration::from_secs(600));
        assert_eq!(defaults.server.http.max_connections, 1024);
        assert_eq!(defaults.server.http.header_timeout, Duration::from_secs(10));
        assert_eq!(defaults.server.http.idle_timeout, Duration::from_secs(60));
        assert!(defaults.server.http.allowed_hosts.is_empty());

        let file = file(
            r#"
            handshake_timeout_ms = 1000
            idle_timeout_ms = 2000
            http_max_connections = 3
            http_header_timeout_ms = 4000
            http_idle_timeout_ms = 5000
            http_allowed_hosts = ["weir.example.com"]
            "#,
        );
        let arguments = ServeArguments {
            idle_timeout_ms: Some(7000),
            http_allowed_hosts: Some(vec!["proxy.internal".into(), " ".into()]),
            ..ServeArguments::default()
        };
        let settings = resolve(&arguments, file).unwrap();
        assert_eq!(settings.server.handshake_timeout, Duration::from_secs(1));
        assert_eq!(settings.server.idle_timeout, Duration::from_secs(7));
        assert_eq!(settings.server.http.max_connections, 3);
        assert_eq!(settings.server.http.header_timeout, Duration::from_secs(4));
        assert_eq!(settings.server.http.idle_timeout, Duration::from_secs(5));
        assert_eq!(settings.server.http.allowed_hosts, ["proxy.internal"]);

        for zero in [
            ServeArguments {
                handshake_timeout_ms: Some(0),
                ..ServeArguments::default()
            },
            ServeArguments {
                http_idle_timeout_ms: Some(0),
                ..ServeArguments::default()
            },
            ServeArguments {
                http_max_connections: Some(0),
                ..ServeArguments::default()
            },
        ] {
            assert!(resolve(&zero, FileConfig::default()).is_err(), "{zero:?}");
        }
    }

    #[test]
    fn alert_rules_and_the_webhook_come_from_the_file_and_flags() {
        let file = file(
            r#"
            alert_webhook = "http://127.0.0.1:9/from-file"

            [[alert_rules]]
            name = "backlog-high"
            metric = "backlog"
            comparison = "above"
            threshold = 50

            [[alert_rules]]
            name = "slow"
            metric = "latency_p99_ms"
            scope = "orders/*"
            comparison = "above"
            threshold = 250.5
            for_ms = 30000
            message = "orders are slow"
            "#,
        );
        let arguments = ServeArguments {
            alert_webhook: Some("http://127.0.0.1:9/from-flag".into()),
            ..ServeArguments::default()
        };
        let settings = resolve(&arguments, file).unwrap();
        assert_eq!(
            settings.server.alert_webhook.as_deref(),
            Some("http://127.0.0.1:9/from-flag")
        );
        let rules = &settings.broker.alert_rules;
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].scope, "*");
        assert_eq!(rules[0].threshold, 50.0);
        assert_eq!(rules[1].metric, AlertMetric::LatencyP99Ms);
        assert_eq!(rules[1].for_ms, 30_000);

        let defaults = resolve(&ServeArguments::default(), FileConfig::default()).unwrap();
        assert_eq!(defaults.broker.alert_rules, AlertRule::defaults());
        assert_eq!(defaults.server.alert_webhook, None);
    }

    #[test]
    fn bad_alert_rules_and_webhooks_are_refused() {
        assert!(
            toml::from_str::<FileConfig>(
                "[[alert_rules]]\nname = \"x\"\nmetric = \"mood\"\ncomparison = \"above\"\nthreshold = 1"
            )
            .is_err()
        );
        assert!(
            toml::from_str::<FileConfig>(
                "[[alert_rules]]\nname = \"x\"\nmetric = \"backlog\"\ncomparison = \"above\"\nthreshold = 1\nfor = 5"
            )
            .is_err(),
            "a misspelt key"
        );
        let duplicate = file(
            "[[alert_rules]]\nname = \"x\"\nmetric = \"backlog\"\ncomparison = \"above\"\nthreshold = 1\n\
             [[alert_rules]]\nname = \"x\"\nmetric = \"backlog\"\ncomparison = \"above\"\nthreshold = 2",
        );
        assert!(resolve(&ServeArguments::default(), duplicate).is_err());
        let infinite = file(
            "[[alert_rules]]\nname = \"x\"\nmetric = \"backlog\"\ncomparison = \"above\"\nthreshold = inf",
        );
        assert!(resolve(&ServeArguments::default(), infinite).is_err());
        let https = ServeArguments {
            alert_webhook: Some("https://alerts.example/hook".into()),
            ..ServeArguments::default()
        };
        assert!(resolve(&https, FileConfig::default()).is_err());
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error() {
        assert!(toml::from_str::<FileConfig>("data_directory = \"x\"").is_err());
    }

    #[test]
    fn fsync_policies_parse_in_every_documented_spelling() {
        assert_eq!(parse_fsync("always").unwrap(), FsyncPolicy::Always);
        assert_eq!(parse_fsync("os").unwrap(), FsyncPolicy::Os);
        assert_eq!(
            parse_fsync("interval(5)").unwrap(),
            FsyncPolicy::IntervalMs(5)
        );
        assert_eq!(
            parse_fsync("interval(5ms)").unwrap(),
            FsyncPolicy::IntervalMs(5)
        );
        assert_eq!(
            parse_fsync("interval:7").unwrap(),
            FsyncPolicy::IntervalMs(7)
        );
        assert!(parse_fsync("interval(0)").is_err());
        assert!(parse_fsync("sometimes").is_err());
    }

    #[test]
    fn out_of_range_values_are_refused() {
        let refused = |arguments: ServeArguments| resolve(&arguments, FileConfig::default());
        assert!(
            refused(ServeArguments {
                max_frame_bytes: Some(10),
                ..ServeArguments::default()
            })
            .is_err()
        );
        assert!(
            refused(ServeArguments {
                default_partitions: Some(0),
                ..ServeArguments::default()
            })
            .is_err()
        );
        assert!(
            refused(ServeArguments {
                native_addr: Some("no port".into()),
                ..ServeArguments::default()
            })
            .is_err()
        );
    }
}
