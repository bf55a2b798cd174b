//! `weir bench`: the broker workloads W1–W4 of `../shared/bench/README.md`, run against a live
//! broker through `weir-client` exactly as an application would use it, printed as a summary
//! table and written as the same JSONL records as the peers' harness (`peerbench`), so that
//! `peerbench table peers.jsonl weir.jsonl` puts Weir beside Redis, NATS and RabbitMQ.
//!
//! What each workload does (the README is the definition; this is how it maps onto Weir):
//!
//! - **W1 publish**: a fresh one-partition topic with the chosen fsync policy, one [`Producer`]
//!   on its own connection, at most `--inflight` messages sent and not yet confirmed (a sliding
//!   window over the per-message [`ConfirmFuture`]s). Elapsed = first send → last confirm.
//! - **W2 consume**: right after W1, a queue subscription from the earliest message on W1's
//!   topic, one [`Consumer`] on its own connection with prefetch `--prefetch`, every message
//!   acked by its own id. Elapsed = just before the first receive → last message received and
//!   its ack answered by the broker.
//! - **W3 latency**: a fresh topic; the consumer subscribes first; 300 ms later the producer
//!   releases message k at `start + k / rate`. Latency = when the client hands the message to
//!   the bench − the send timestamp in its payload, in an HDR histogram (1 µs … 10 min, 3
//!   significant digits).
//! - **W4 fan-out**: a fresh topic with `--w4-groups` queue subscriptions, one consumer each,
//!   all joined before the producer publishes `count / 4` messages. Rate = deliveries / (first
//!   send → the last consumer has its last message and its acks answered).
//!
//! Payloads are exactly `--payload` bytes: the sequence number (u64 LE), the send time (u64 LE
//! nanoseconds of a monotonic clock shared by producer and consumer, which live in this one
//! process), then filler `x`. The client runtime is tokio's `current_thread` unless `--threads`
//! asks for more, as in peerbench, so the broker keeps the other core.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use weir_client::{
    Client, ConfirmFuture, Consumer, Durability, ErrorCode, Fsync, LANE_IN_FLIGHT, Message,
    Producer, ProducerOptions, Start, SubscribeOptions, SubscriptionMode, TopicOptions,
};

mod embedded;

const EXAMPLES: &str = "\
Examples:
  weir bench --server 127.0.0.1:5680
  weir bench --fsync os --runs 3 --out weir.jsonl --server-pid $(pgrep -n weir)
  weir bench --workloads w1,w2 --count 200000
  weir bench --embedded --data-dir /var/tmp    # schedule, transactions, publish-pending in process
  peerbench table peers.jsonl weir.jsonl     # Weir beside the peers (../shared/bench)";

/// The workloads, named as in the README and the JSONL records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Workload {
    W1,
    W2,
    W3,
    W4,
    /// Embedded: N delayed messages, scheduling rate and delivery lateness
    Schedule,
    /// Embedded: transactions of --half-messages half messages each
    Transactions,
    /// Embedded: publishing with none and with N scheduled messages pending
    PublishPending,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::Schedule => "schedule",
            Workload::Transactions => "transactions",
            Workload::PublishPending => "publish-pending",
        }
    }
}

/// The topic's fsync policy, which is what a confirm promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FsyncChoice {
    /// fdatasync before every confirm (group commit).
    Always,
    /// Confirm once written to the page cache; the operating system flushes.
    Os,
}

impl FsyncChoice {
    fn policy(self) -> Fsync {
        match self {
            FsyncChoice::Always => Fsync::Always,
            FsyncChoice::Os => Fsync::Os,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FsyncChoice::Always => "always",
            FsyncChoice::Os => "os",
        }
    }

    fn durability_text(self) -> &'static str {
        match self {
            FsyncChoice::Always => {
                "topic fsync=always: fdatasync before the confirm (group commit of the batches queued meanwhile)"
            }
            FsyncChoice::Os => {
                "topic fsync=os: confirm after write() to the page cache; no fsync (the OS flushes)"
            }
        }
    }
}

/// Run the broker workloads W1–W4 (../shared/bench/README.md) against a running broker.
#[derive(Debug, clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct BenchArguments {
    /// Native address of the broker
    #[arg(
        long,
        env = "WEIR_SERVER",
        default_value = "127.0.0.1:5680",
        value_name = "HOST:PORT"
    )]
    server: String,

    /// Comma-separated subset of w1,w2,w3,w4 (w2 drains W1's messages, so it publishes them
    /// first even without w1), or of the embedded schedule,transactions,publish-pending
    #[arg(long, value_enum, value_delimiter = ',', default_value = "w1,w2,w3,w4")]
    workloads: Vec<Workload>,

    /// N: messages for W1 and W2; W4 publishes N / 4 unless --w4-count; messages scheduled by
    /// schedule, published per round and broker by publish-pending
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,

    /// Fsync policy of the topics under test
    #[arg(long, value_enum, default_value = "always")]
    fsync: FsyncChoice,

    /// Repetitions of every workload
    #[arg(long, default_value_t = 1)]
    runs: u32,

    /// Number of the first run, in the records (to add runs to an earlier file)
    #[arg(long, default_value_t = 1)]
    first_run: u32,

    /// Append one JSONL record per workload and run to this file (peerbench's format)
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Row label in the records [default: weir-<fsync>]
    #[arg(long)]
    label: Option<String>,

    /// PID of the broker, to record its CPU time per workload (from /proc/PID/stat)
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Client runtime threads: 1 is tokio's current_thread runtime (leaves the other core to
    /// the broker), more is a multi-thread runtime with that many workers
    #[arg(long, default_value_t = 1)]
    threads: usize,

    /// Payload bytes (at least 16: sequence number and timestamp)
    #[arg(long, default_value_t = 100)]
    payload: usize,

    /// Most messages sent and not yet confirmed
    #[arg(long, default_value_t = 1000)]
    inflight: usize,

    /// Consumer prefetch (deliveries unacked at once)
    #[arg(long, default_value_t = 1000)]
    prefetch: u32,

    /// Messages per producer batch (the client's `max_batch_messages`). W1–W4 raise it to
    /// --inflight / LANE_IN_FLIGHT (200 for a window of 1,000): the idempotent producer keeps at
    /// most LANE_IN_FLIGHT (5) batches of a partition in flight, and smaller batches would cap
    /// the messages in flight below the window
    #[arg(long, default_value_t = 100)]
    batch_messages: usize,

    /// Producer linger in microseconds: 0 sends a batch as soon as the sending task yields
    #[arg(long, default_value_t = 0)]
    linger_us: u64,

    /// W3 producer rate, messages per second
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,

    /// W3 duration of the paced producer, seconds
    #[arg(long, default_value_t = 10.0)]
    w3_secs: f64,

    /// W4 messages published [default: N / 4]
    #[arg(long)]
    w4_count: Option<u64>,

    /// W4 subscriptions, each receiving every message
    #[arg(long, default_value_t = 4)]
    w4_groups: usize,

    /// Cap on each publish phase, seconds (W2 gets twice this; W3/W4 consumers this + 30 s)
    #[arg(long, default_value_t = 12.0)]
    max_secs: f64,

    #[command(flatten)]
    embedded: embedded::EmbeddedArguments,
}

impl BenchArguments {
    /// Worker threads the runtime should have: 1 means a `current_thread` runtime.
    pub fn runtime_threads(&self) -> usize {
        self.threads
            .max(self.embedded.minimum_threads(&self.workloads))
    }

    /// The producer's batch size in W1–W4: `--batch-messages`, but large enough that the
    /// whole window fits in the batches the producer keeps in flight per partition.
    fn producer_batch_messages(&self) -> usize {
        self.batch_messages
            .max(self.inflight.max(1).div_ceil(LANE_IN_FLIGHT))
            .max(1)
    }

    fn label(&self) -> String {
        self.label
            .clone()
            .unwrap_or_else(|| format!("weir-{}", self.fsync.name()))
    }
}

// ------------------------------------------------------------------------------------- clock

static CLOCK_BASE: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since a process-wide monotonic base: producer and consumer share it.
fn now_nanoseconds() -> u64 {
    u64::try_from(CLOCK_BASE.get_or_init(Instant::now).elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Microseconds from `sent` (ns) to now, at least 1 (the histogram's lowest value).
fn microseconds_since(sent: u64) -> u64 {
    (now_nanoseconds().saturating_sub(sent) / 1000).max(1)
}

/// The payload of message `sequence` and its send timestamp.
fn payload(size: usize, sequence: u64) -> (Bytes, u64) {
    let mut bytes = vec![b'x'; size.max(16)];
    bytes[0..8].copy_from_slice(&sequence.to_le_bytes());
    let sent = now_nanoseconds();
    bytes[8..16].copy_from_slice(&sent.to_le_bytes());
    (Bytes::from(bytes), sent)
}

/// The send timestamp in a payload, if it is long enough to have one.
fn payload_timestamp(value: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = value.get(8..16)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).context("creating a latency histogram")
}

fn quantiles(histogram: &Histogram<u64>) -> [f64; 4] {
    [
        histogram.value_at_quantile(0.50) as f64,
        histogram.value_at_quantile(0.99) as f64,
        histogram.value_at_quantile(0.999) as f64,
        histogram.max() as f64,
    ]
}

// --------------------------------------------------------------------------------------- CPU

/// User plus system CPU seconds of a process (`None`: this one), from /proc/PID/stat.
fn process_cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name may contain spaces; the fields after its closing parenthesis start at
    // field 3 (state), so utime (14) and stime (15) are the 12th and 13th of them.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(11)?.parse().ok()?;
    let system: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((user + system) / 100.0)
}

/// Machine-wide busy, steal and iowait CPU seconds, from the `cpu` line of /proc/stat.
fn machine_cpu_seconds() -> Option<(f64, f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let values: Vec<f64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let [user, nice, system, _idle, iowait, irq, softirq, steal, ..] = values[..] else {
        return None;
    };
    Some((
        (user + nice + system + irq + softirq) / 100.0,
        steal / 100.0,
        iowait / 100.0,
    ))
}

/// CPU used by the broker, by this client, and by everything else on the machine (the noise
/// from other tenants) between `start` and `end`, as peerbench records it.
struct CpuMark {
    pid: Option<u32>,
    server: Option<f64>,
    client: Option<f64>,
    machine: Option<(f64, f64, f64)>,
}

impl CpuMark {
    fn start(pid: Option<u32>) -> CpuMark {
        CpuMark {
            pid,
            server: pid.and_then(|pid| process_cpu_seconds(Some(pid))),
            client: process_cpu_seconds(None),
            machine: machine_cpu_seconds(),
        }
    }

    fn end(&self) -> Vec<(String, f64)> {
        let mut used = Vec::new();
        let mut ours = 0.0;
        if let (Some(before), Some(after)) = (
            self.server,
            self.pid.and_then(|pid| process_cpu_seconds(Some(pid))),
        ) {
            used.push(("server_cpu_s".to_owned(), after - before));
            ours += after - before;
        }
        if let (Some(before), Some(after)) = (self.client, process_cpu_seconds(None)) {
            used.push(("client_cpu_s".to_owned(), after - before));
            ours += after - before;
        }
        if let (Some(before), Some(after)) = (self.machine, machine_cpu_seconds()) {
            used.push((
                "others_cpu_s".to_owned(),
                ((after.0 - before.0) - ours).max(0.0),
            ));
            used.push(("steal_s".to_owned(), after.1 - before.1));
            used.push(("iowait_s".to_owned(), after.2 - before.2));
        }
        used
    }
}

// ----------------------------------------------------------------------------------- records

/// One workload of one run: peerbench's record, field for field.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    label: String,
    peer: String,
    durability: String,
    run: u32,
    workload: String,
    /// W1: confirmed; W2: consumed; W3: received; W4: deliveries over all subscriptions.
    msgs: u64,
    /// What the workload meant to do (`msgs == target` when it completed).
    target: u64,
    secs: f64,
    msgs_per_s: f64,
    /// Payload megabytes (10^6 B) per second.
    mb_per_s: f64,
    complete: bool,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
    p999_us: Option<f64>,
    max_us: Option<f64>,
    extra: BTreeMap<String, f64>,
    unix_time: u64,
}

impl Record {
    fn new(arguments: &BenchArguments, run: u32, workload: Workload) -> Record {
        Record {
            label: arguments.label(),
            peer: "weir".to_owned(),
            durability: arguments.fsync.durability_text().to_owned(),
            run,
            workload: workload.name().to_owned(),
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            ..Record::default()
        }
    }

    fn set_rate(&mut self, messages: u64, seconds: f64, payload: usize) {
        self.msgs = messages;
        self.secs = seconds;
        self.msgs_per_s = if seconds > 0.0 {
            messages as f64 / seconds
        } else {
            0.0
        };
        self.mb_per_s = self.msgs_per_s * payload.max(16) as f64 / 1e6;
    }

    fn set_confirm_latency(&mut self, histogram: &Histogram<u64>) {
        let [p50, p99, p999, max] = quantiles(histogram);
        self.extra.insert("confirm_p50_us".to_owned(), p50);
        self.extra.insert("confirm_p99_us".to_owned(), p99);
        self.extra.insert("confirm_p999_us".to_owned(), p999);
        self.extra.insert("confirm_max_us".to_owned(), max);
    }

    fn set_latency(&mut self, histogram: &Histogram<u64>) {
        let [p50, p99, p999, max] = quantiles(histogram);
        self.p50_us = Some(p50);
        self.p99_us = Some(p99);
        self.p999_us = Some(p999);
        self.max_us = Some(max);
    }

    /// One line for the log, as the workload ends.
    fn describe(&self) -> String {
        let latency = match (self.p50_us, self.p99_us, self.p999_us, self.max_us) {
            (Some(p50), Some(p99), Some(p999), Some(max)) => {
                format!(" e2e p50/p99/p99.9/max = {p50:.0}/{p99:.0}/{p999:.0}/{max:.0} µs")
            }
            _ => String::new(),
        };
        let confirm = match (
            self.extra.get("confirm_p50_us"),
            self.extra.get("confirm_p99_us"),
        ) {
            (Some(p50), Some(p99)) => format!(" confirm p50/p99 = {p50:.0}/{p99:.0} µs"),
            _ => String::new(),
        };
        let cpu = match self.extra.get("server_cpu_s") {
            Some(seconds) if self.msgs > 0 => {
                format!(" broker {:.2} µs/msg", seconds * 1e6 / self.msgs as f64)
            }
            _ => String::new(),
        };
        format!(
            "{} run {} {}: {}/{} msgs in {:.2} s = {:.0} msg/s ({:.1} MB/s){latency}{confirm}{cpu}{}",
            self.label,
            self.run,
            self.workload,
            self.msgs,
            self.target,
            self.secs,
            self.msgs_per_s,
            self.mb_per_s,
            if self.complete { "" } else { " INCOMPLETE" }
        )
    }
}

// ---------------------------------------------------------------------------------- progress

fn progress_bar(length: u64, prefix: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix:>16} [{bar:30}] {human_pos}/{human_len} {per_sec:>14} {elapsed_precise}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(prefix);
    bar
}

// ---------------------------------------------------------------------------------- producer

/// What a publish phase did.
struct Produced {
    confirmed: u64,
    seconds: f64,
    complete: bool,
    /// Publish → confirm, µs.
    confirm_latency: Histogram<u64>,
    /// How far a paced producer fell behind its schedule, µs.
    max_lag_us: f64,
}

/// How a publish phase runs.
struct Publishing<'a> {
    producer: &'a Producer,
    topic: &'a str,
    total: u64,
    payload: usize,
    inflight: usize,
    /// Messages per second, or as fast as the window allows.
    rate: Option<f64>,
    /// Stop sending after this long.
    cap: Duration,
    /// Confirms must promise at least this.
    durability: Durability,
    progress: &'a ProgressBar,
}

/// Polls a future once without a real waker: `Some` if it is already done. Used to collect the
/// confirms that arrived together (a batch resolves all its messages at once) without one
/// scheduler round trip per message.
fn poll_now<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    let mut context = TaskContext::from_waker(Waker::noop());
    match Pin::new(future).poll(&mut context) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// Sends `total` messages with at most `inflight` unconfirmed (a sliding window over the
/// per-message confirms, which for one partition arrive in send order).
async fn produce(publishing: Publishing<'_>) -> anyhow::Result<Produced> {
    let start = Instant::now();
    let deadline = start + publishing.cap;
    let inflight = publishing.inflight.max(1);
    let mut window: VecDeque<(ConfirmFuture, u64)> = VecDeque::with_capacity(inflight);
    let mut confirm_latency = new_histogram()?;
    let (mut sent, mut confirmed) = (0u64, 0u64);
    let mut stop_sending = false;
    let mut max_lag_us: f64 = 0.0;
    let stall = Duration::from_secs(60);
    let mut last_progress = 0u64;
    loop {
        let now = Instant::now();
        if now >= deadline {
            stop_sending = true;
        }
        let allowed = match publishing.rate {
            Some(rate) => {
                ((now.duration_since(start).as_secs_f64() * rate) as u64 + 1).min(publishing.total)
            }
            None => publishing.total,
        };
        if let Some(rate) = publishing.rate
            && sent < allowed
        {
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            max_lag_us = max_lag_us.max(now.saturating_duration_since(due).as_secs_f64() * 1e6);
        }
        while !stop_sending && sent < allowed && window.len() < inflight {
            let (value, sent_at) = payload(publishing.payload, sent);
            let confirm = publishing
                .producer
                .send(publishing.topic, Message::new(value))
                .await
                .context("sending a message")?;
            window.push_back((confirm, sent_at));
            sent += 1;
        }
        let sending_done = stop_sending || sent >= publishing.total;
        if sending_done && window.is_empty() {
            break;
        }
        // Wait for the oldest confirm, or (paced, with room in the window) the next due time.
        let paced_wake = match publishing.rate {
            Some(rate) if !sending_done && window.len() < inflight => {
                Some(start + Duration::from_secs_f64(sent as f64 / rate))
            }
            _ => None,
        };
        let first = match (window.front_mut(), paced_wake) {
            (Some((confirm, _)), Some(wake)) => tokio::select! {
                result = confirm => Some(result),
                () = tokio::time::sleep_until(wake.into()) => None,
            },
            (Some((confirm, _)), None) => match tokio::time::timeout(stall, confirm).await {
                Ok(result) => Some(result),
                Err(_) => bail!("the producer stalled: no confirm for {stall:?}"),
            },
            (None, Some(wake)) => {
                tokio::time::sleep_until(wake.into()).await;
                None
            }
            (None, None) => None,
        };
        let Some(first) = first else { continue };
        let mut result = first;
        loop {
            let Some((_, sent_at)) = window.pop_front() else {
                break;
            };
            let confirm = result.context("a publish failed")?;
            if publishing.durability == Durability::Fsynced
                && confirm.durability != Durability::Fsynced
            {
                bail!(
                    "the topic has fsync=always but a confirm promised only {:?}",
                    confirm.durability
                );
            }
            confirm_latency.saturating_record(microseconds_since(sent_at));
            confirmed += 1;
            match window.front_mut().and_then(|(next, _)| poll_now(next)) {
                Some(next) => result = next,
                None => break,
            }
        }
        if confirmed - last_progress >= 1000 || window.is_empty() {
            publishing.progress.set_position(confirmed);
            last_progress = confirmed;
        }
    }
    Ok(Produced {
        confirmed,
        seconds: start.elapsed().as_secs_f64(),
        complete: confirmed == publishing.total,
        confirm_latency,
        max_lag_us,
    })
}

// ---------------------------------------------------------------------------------- consumer

/// What a consumer did.
struct Consumed {
    received: u64,
    /// Deliveries with a delivery count above 1 (sent again by the broker).
    redelivered: u64,
    /// When the last message had arrived and its acks were answered.
    done_at: Instant,
    complete: bool,
    /// Send → handed to the bench, µs (W3 only).
    latency: Option<Histogram<u64>>,
}

/// When a consumer stops, besides having received `target` messages.
struct Consuming {
    /// The messages to expect: `u64::MAX` until the producer knows how many it got confirmed.
    target: watch::Receiver<u64>,
    deadline: Instant,
    /// Give up after this long without a message.
    idle: Duration,
    latency: Option<Histogram<u64>>,
    progress: ProgressBar,
}

/// Receives and acks (each message by its own id) until `target` messages have arrived, the
/// deadline passes, or nothing arrives for `idle`; then waits for the acks' answers.
async fn consume(mut consumer: Consumer, mut consuming: Consuming) -> anyhow::Result<Consumed> {
    let mut received = 0u64;
    let mut redelivered = 0u64;
    let mut identifiers = Vec::new();
    let mut last_message = Instant::now();
    let mut target_open = true;
    loop {
        if received >= *consuming.target.borrow_and_update() {
            break;
        }
        let now = Instant::now();
        if now >= consuming.deadline || now.duration_since(last_message) > consuming.idle {
            break;
        }
        tokio::select! {
            batch = consumer.next_batch() => {
                let batch = batch.context("receiving messages")?;
                let handed_at = now_nanoseconds();
                identifiers.clear();
                for delivery in &batch {
                    if delivery.delivery_count > 1 {
                        redelivered += 1;
                    }
                    if let Some(histogram) = consuming.latency.as_mut()
                        && let Some(sent_at) = payload_timestamp(&delivery.value)
                    {
                        histogram.saturating_record((handed_at.saturating_sub(sent_at) / 1000).max(1));
                    }
                    identifiers.push(delivery.id());
                }
                received += identifiers.len() as u64;
                consumer.ack(&identifiers).await.context("acknowledging messages")?;
                last_message = Instant::now();
                consuming.progress.inc(identifiers.len() as u64);
            }
            changed = consuming.target.changed(), if target_open => {
                target_open = changed.is_ok();
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    consumer
        .flush_acks()
        .await
        .context("waiting for the acks' answers")?;
    let done_at = Instant::now();
    let complete = received >= *consuming.target.borrow();
    consumer.close().await.context("leaving the subscription")?;
    Ok(Consumed {
        received,
        redelivered,
        done_at,
        complete,
        latency: consuming.latency,
    })
}

// --------------------------------------------------------------------------------- workloads

/// One run's shared pieces: the admin connection and the settings.
struct Bench<'a> {
    arguments: &'a BenchArguments,
    admin: Client,
    run: u32,
}

impl Bench<'_> {
    fn topic_name(&self, workload: &str) -> String {
        let label: String = self
            .arguments
            .label()
            .chars()
            .map(|character| {
                if character.is_ascii_alphanumeric() {
                    character
                } else {
                    '_'
                }
            })
            .collect();
        format!("bench_{label}_r{}_{workload}", self.run)
    }

    /// A fresh one-partition topic: leftovers of an interrupted run are deleted first.
    async fn fresh_topic(&self, name: &str) -> anyhow::Result<()> {
        self.delete_topic(name).await?;
        let options = TopicOptions {
            partitions: 1,
            fsync: self.arguments.fsync.policy(),
            ..TopicOptions::default()
        };
        self.admin
            .create_topic(name, options)
            .await
            .with_context(|| format!("creating topic {name}"))?;
        Ok(())
    }

    async fn delete_topic(&self, name: &str) -> anyhow::Result<()> {
        match self.admin.delete_topic(name).await {
            Ok(()) => Ok(()),
            Err(error) if error.code() == Some(ErrorCode::UnknownTopic) => Ok(()),
            Err(error) => Err(error).with_context(|| format!("deleting topic {name}")),
        }
    }

    /// A producer on a connection of its own.
    async fn producer(&self) -> anyhow::Result<(Client, Producer)> {
        let client = Client::connect(&self.arguments.server)
            .await
            .with_context(|| format!("connecting to {}", self.arguments.server))?;
        let producer = client.producer(ProducerOptions {
            linger: Duration::from_micros(self.arguments.linger_us),
            max_batch_messages: self.arguments.producer_batch_messages(),
            // The bench's own window bounds the messages in flight; the producer never needs
            // to hold back more batches than that.
            max_in_flight: self.arguments.inflight.max(1),
            ..ProducerOptions::default()
        });
        Ok((client, producer))
    }

    async fn consumer(&self, topic: &str, group: &str) -> anyhow::Result<Consumer> {
        let options = SubscribeOptions {
            mode: SubscriptionMode::Queue,
            start: Start::Earliest,
            prefetch: self.arguments.prefetch.max(1),
            ack_timeout: None,
            ..SubscribeOptions::default()
        };
        self.admin
            .subscribe(topic, group, options)
            .await
            .with_context(|| format!("subscribing to {topic} as {group}"))
    }

    fn publishing<'a>(
        &'a self,
        producer: &'a Producer,
        topic: &'a str,
        total: u64,
        progress: &'a ProgressBar,
    ) -> Publishing<'a> {
        Publishing {
            producer,
            topic,
            total,
            payload: self.arguments.payload,
            inflight: self.arguments.inflight,
            rate: None,
            cap: Duration::from_secs_f64(self.arguments.max_secs.max(0.001)),
            durability: match self.arguments.fsync {
                FsyncChoice::Always => Durability::Fsynced,
                FsyncChoice::Os => Durability::Os,
            },
            progress,
        }
    }

    fn prefix(&self, workload: &str) -> String {
        format!("run {} {workload}", self.run)
    }

    /// W1 (recorded when asked) and W2 on its messages.
    async fn publish_and_consume(
        &self,
        record_publish: bool,
        consume_too: bool,
    ) -> anyhow::Result<Vec<Record>> {
        let arguments = self.arguments;
        let topic = self.topic_name("w12");
        self.fresh_topic(&topic).await?;
        let mut records = Vec::new();
        let (_client, producer) = self.producer().await?;
        let progress = progress_bar(arguments.count, self.prefix("W1 publish"));
        let cpu = CpuMark::start(arguments.server_pid);
        let produced =
            produce(self.publishing(&producer, &topic, arguments.count, &progress)).await?;
        let cpu_used = cpu.end();
        progress.finish_and_clear();
        producer.flush().await.context("flushing the producer")?;
        drop(producer);
        if record_publish {
            let mut record = Record::new(arguments, self.run, Workload::W1);
            record.extra.extend(cpu_used);
            record.target = arguments.count;
            record.set_rate(produced.confirmed, produced.seconds, arguments.payload);
            record.complete = produced.complete;
            record.set_confirm_latency(&produced.confirm_latency);
            records.push(record);
        }
        if consume_too {
            let consumer = self.consumer(&topic, "bench").await?;
            let (_target_sender, target) = watch::channel(produced.confirmed);
            let progress = progress_bar(produced.confirmed, self.prefix("W2 consume"));
            let cpu = CpuMark::start(arguments.server_pid);
            let start = Instant::now();
            let consumed = consume(
                consumer,
                Consuming {
                    target,
                    deadline: start + Duration::from_secs_f64(2.0 * arguments.max_secs),
                    idle: Duration::from_secs(10),
                    latency: None,
                    progress: progress.clone(),
                },
            )
            .await?;
            let cpu_used = cpu.end();
            progress.finish_and_clear();
            let mut record = Record::new(arguments, self.run, Workload::W2);
            record.extra.extend(cpu_used);
            record.target = produced.confirmed;
            record.set_rate(
                consumed.received,
                consumed.done_at.duration_since(start).as_secs_f64(),
                arguments.payload,
            );
            record.complete = consumed.complete && produced.complete;
            record
                .extra
                .insert("redelivered".to_owned(), consumed.redelivered as f64);
            records.push(record);
        }
        self.delete_topic(&topic).await?;
        Ok(records)
    }

    /// W3: a paced producer and one consumer subscribed before it starts.
    async fn latency(&self) -> anyhow::Result<Record> {
        let arguments = self.arguments;
        let topic = self.topic_name("w3");
        self.fresh_topic(&topic).await?;
        let total = (arguments.rate * arguments.w3_secs).round().max(1.0) as u64;
        let consumer = self.consumer(&topic, "bench").await?;
        let (target_sender, target) = watch::channel(u64::MAX);
        let progress = progress_bar(total, self.prefix("W3 latency"));
        let cpu = CpuMark::start(arguments.server_pid);
        let consuming = Consuming {
            target,
            deadline: Instant::now()
                + Duration::from_secs_f64(arguments.w3_secs + arguments.max_secs + 30.0),
            idle: Duration::from_secs(15),
            latency: Some(new_histogram()?),
            progress: progress.clone(),
        };
        let receiving = tokio::spawn(consume(consumer, consuming));
        let (_client, producer) = self.producer().await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let hidden = ProgressBar::hidden();
        let produced = produce(Publishing {
            rate: Some(arguments.rate),
            cap: Duration::from_secs_f64(arguments.w3_secs + 5.0),
            ..self.publishing(&producer, &topic, total, &hidden)
        })
        .await?;
        target_sender.send_replace(produced.confirmed);
        producer.flush().await.context("flushing the producer")?;
        drop(producer);
        let consumed = receiving.await.context("the W3 consumer task")??;
        let cpu_used = cpu.end();
        progress.finish_and_clear();
        self.delete_topic(&topic).await?;
        let mut record = Record::new(arguments, self.run, Workload::W3);
        record.extra.extend(cpu_used);
        record.target = total;
        record.set_rate(produced.confirmed, produced.seconds, arguments.payload);
        record.msgs = consumed.received;
        record.complete = consumed.complete && produced.complete;
        if let Some(latency) = &consumed.latency {
            record.set_latency(latency);
        }
        record.set_confirm_latency(&produced.confirm_latency);
        record
            .extra
            .insert("producer_max_lag_us".to_owned(), produced.max_lag_us);
        record
            .extra
            .insert("redelivered".to_owned(), consumed.redelivered as f64);
        Ok(record)
    }

    /// W4: one producer, several subscriptions each receiving everything.
    async fn fan_out(&self) -> anyhow::Result<Record> {
        let arguments = self.arguments;
        let groups = arguments.w4_groups.max(1);
        let topic = self.topic_name("w4");
        self.fresh_topic(&topic).await?;
        let count = arguments.w4_count.unwrap_or(arguments.count / 4).max(1);
        let group_count = u64::try_from(groups).unwrap_or(u64::MAX);
        let (target_sender, target) = watch::channel(u64::MAX);
        let progress = progress_bar(count.saturating_mul(group_count), self.prefix("W4 fan-out"));
        let deadline = Instant::now() + Duration::from_secs_f64(arguments.max_secs + 30.0);
        let mut receiving = Vec::with_capacity(groups);
        for group in 0..groups {
            let consumer = self.consumer(&topic, &format!("bench{group}")).await?;
            receiving.push(tokio::spawn(consume(
                consumer,
                Consuming {
                    target: target.clone(),
                    deadline,
                    idle: Duration::from_secs(15),
                    latency: None,
                    progress: progress.clone(),
                },
            )));
        }
        let (_client, producer) = self.producer().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu = CpuMark::start(arguments.server_pid);
        let start = Instant::now();
        let hidden = ProgressBar::hidden();
        let produced = produce(self.publishing(&producer, &topic, count, &hidden)).await?;
        target_sender.send_replace(produced.confirmed);
        producer.flush().await.context("flushing the producer")?;
        drop(producer);
        let mut deliveries = 0u64;
        let mut redelivered = 0u64;
        let mut end = start;
        let mut complete = produced.complete;
        for task in receiving {
            let consumed = task.await.context("a W4 consumer task")??;
            deliveries += consumed.received;
            redelivered += consumed.redelivered;
            end = end.max(consumed.done_at);
            complete &= consumed.complete;
        }
        let cpu_used = cpu.end();
        progress.finish_and_clear();
        self.delete_topic(&topic).await?;
        let mut record = Record::new(arguments, self.run, Workload::W4);
        record.extra.extend(cpu_used);
        record.target = count.saturating_mul(group_count);
        record.set_rate(
            deliveries,
            end.duration_since(start).as_secs_f64(),
            arguments.payload,
        );
        record.complete = complete;
        record.extra.insert("groups".to_owned(), groups as f64);
        record
            .extra
            .insert("published".to_owned(), produced.confirmed as f64);
        record.extra.insert(
            "publish_msgs_per_s".to_owned(),
            produced.confirmed as f64 / produced.seconds.max(1e-9),
        );
        record
            .extra
            .insert("redelivered".to_owned(), redelivered as f64);
        Ok(record)
    }
}

// ---------------------------------------------------------------------------------- the verb

pub async fn run(arguments: BenchArguments) -> anyhow::Result<()> {
    now_nanoseconds();
    if arguments.runs == 0 {
        bail!("--runs must be at least 1");
    }
    if !(arguments.rate > 0.0 && arguments.w3_secs > 0.0) {
        bail!("--rate and --w3-secs must be positive");
    }
    if embedded::requested(&arguments)? {
        return embedded::run(&arguments).await;
    }
    let mut workloads = arguments.workloads.clone();
    workloads.sort();
    workloads.dedup();
    let admin = Client::connect(&arguments.server)
        .await
        .with_context(|| format!("connecting to {}", arguments.server))?;
    let mut output = match &arguments.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    eprintln!(
        "weir bench: {} at {}, fsync={}, N={}, payload {} B, window {}, prefetch {}, producer batches of {}, {} client thread(s), {} run(s)",
        arguments.label(),
        arguments.server,
        arguments.fsync.name(),
        arguments.count,
        arguments.payload,
        arguments.inflight,
        arguments.prefetch,
        arguments.producer_batch_messages(),
        arguments.runtime_threads(),
        arguments.runs
    );
    let has = |workload: Workload| workloads.contains(&workload);
    let mut records = Vec::new();
    for run in arguments.first_run..arguments.first_run.saturating_add(arguments.runs) {
        let bench = Bench {
            arguments: &arguments,
            admin: admin.clone(),
            run,
        };
        let mut finished = Vec::new();
        if has(Workload::W1) || has(Workload::W2) {
            finished.extend(
                bench
                    .publish_and_consume(has(Workload::W1), has(Workload::W2))
                    .await?,
            );
        }
        if has(Workload::W3) {
            finished.push(bench.latency().await?);
        }
        if has(Workload::W4) {
            finished.push(bench.fan_out().await?);
        }
        for record in finished {
            eprintln!("{}", record.describe());
            if let Some(file) = output.as_mut() {
                let line = serde_json::to_string(&record).context("encoding a record")?;
                writeln!(file, "{line}").context("writing a record")?;
                file.flush().context("writing a record")?;
            }
            records.push(record);
        }
    }
    print!("{}", summary(&records));
    Ok(())
}

// ----------------------------------------------------------------------------------- summary

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        length if !length.is_multiple_of(2) => sorted[length / 2],
        length => (sorted[length / 2 - 1] + sorted[length / 2]) / 2.0,
    }
}

/// `12,345` for 12345.4.
fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "–".to_owned();
    }
    let digits = (value.round().abs() as u64).to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if value < -0.5 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// Median over runs, `±h%` (half the min–max range as a share of the median) when there are
/// several, `*` when a run was incomplete.
fn cell(values: &[f64], incomplete: bool, decimals: usize) -> String {
    if values.is_empty() {
        return "–".to_owned();
    }
    let middle = median(values);
    let number = if decimals == 0 {
        thousands(middle)
    } else {
        format!("{middle:.decimals$}")
    };
    let spread = if values.len() > 1 && middle > 0.0 {
        let low = values.iter().copied().fold(f64::INFINITY, f64::min);
        let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(" ±{:.0}%", (high - low) / 2.0 / middle * 100.0)
    } else {
        String::new()
    };
    format!("{number}{spread}{}", if incomplete { "*" } else { "" })
}

/// One row per workload: medians over the runs.
fn summary(records: &[Record]) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\n| workload | runs | msg/s | MB/s | p50 µs | p99 µs | p99.9 µs | max µs | broker CPU µs/msg | client CPU µs/msg | noise (others' CPU) |"
    );
    let _ = writeln!(text, "|---|---|---|---|---|---|---|---|---|---|---|");
    for workload in [Workload::W1, Workload::W2, Workload::W3, Workload::W4] {
        let runs: Vec<&Record> = records
            .iter()
            .filter(|record| record.workload == workload.name())
            .collect();
        if runs.is_empty() {
            continue;
        }
        let incomplete = runs.iter().any(|record| !record.complete);
        let values = |get: &dyn Fn(&Record) -> Option<f64>| -> Vec<f64> {
            runs.iter().filter_map(|record| get(record)).collect()
        };
        // W3's latency is end to end; the others' is publish → confirm (W2 has none).
        let latency = |quantile: &'static str, end_to_end: fn(&Record) -> Option<f64>| {
            move |record: &Record| {
                if record.workload == Workload::W3.name() {
                    end_to_end(record)
                } else {
                    record.extra.get(quantile).copied()
                }
            }
        };
        let per_message = |key: &'static str| {
            move |record: &Record| {
                let seconds = record.extra.get(key)?;
                (record.msgs > 0).then(|| seconds * 1e6 / record.msgs as f64)
            }
        };
        let noise = values(&|record| {
            let seconds = record.extra.get("others_cpu_s")?;
            (record.secs > 0.0).then(|| seconds / record.secs * 100.0)
        })
        .into_iter()
        .fold(f64::NAN, f64::max);
        let name = match workload {
            Workload::W1 => "W1 publish",
            Workload::W2 => "W2 consume",
            Workload::W3 => "W3 latency (e2e)",
            Workload::W4 => "W4 fan-out (deliveries)",
            // Embedded workloads have a table of their own (embedded::summary).
            Workload::Schedule | Workload::Transactions | Workload::PublishPending => continue,
        };
        let _ = writeln!(
            text,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            runs.len(),
            cell(&values(&|record| Some(record.msgs_per_s)), incomplete, 0),
            cell(&values(&|record| Some(record.mb_per_s)), incomplete, 1),
            cell(&values(&latency("confirm_p50_us", |r| r.p50_us)), false, 0),
            cell(&values(&latency("confirm_p99_us", |r| r.p99_us)), false, 0),
            cell(
                &values(&latency("confirm_p999_us", |r| r.p999_us)),
                false,
                0
            ),
            cell(&values(&latency("confirm_max_us", |r| r.max_us)), false, 0),
            cell(&values(&per_message("server_cpu_s")), false, 2),
            cell(&values(&per_message("client_cpu_s")), false, 2),
            if noise.is_nan() {
                "–".to_owned()
            } else {
                format!("{noise:.0}% of a core")
            },
        );
    }
    let _ = writeln!(
        text,
        "\nMedian over runs; ±h% = half the min–max range as % of the median; * = a run hit its cap \
         or lost messages. Latency: W1 publish → confirm, W3 send → handed to the consumer. Broker \
         CPU needs --server-pid; noise is the busiest CPU use of other processes during a workload."
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_sequence_and_send_time() {
        let before = now_nanoseconds();
        let (value, sent_at) = payload(100, 42);
        assert_eq!(value.len(), 100);
        assert_eq!(value.get(0..8), Some(&42u64.to_le_bytes()[..]));
        assert_eq!(payload_timestamp(&value), Some(sent_at));
        assert!(sent_at >= before);
        assert!(value[16..].iter().all(|byte| *byte == b'x'));
        assert_eq!(payload_timestamp(b"short"), None);
    }

    #[test]
    fn medians_and_cells_read_like_peerbench() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(cell(&[90.0, 110.0], false, 0), "100 ±10%");
        assert_eq!(cell(&[5.0], true, 1), "5.0*");
    }

    #[test]
    fn the_record_has_peerbench_field_names() {
        let record = Record {
            label: "weir-always".into(),
            ..Record::default()
        };
        let json = serde_json::to_value(&record).unwrap();
        for field in [
            "label",
            "peer",
            "durability",
            "run",
            "workload",
            "msgs",
            "target",
            "secs",
            "msgs_per_s",
            "mb_per_s",
            "complete",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
            "extra",
            "unix_time",
        ] {
            assert!(json.get(field).is_some(), "missing {field}");
        }
    }
}
