//! `weir bench --embedded`: the delayed- and transactional-message workloads (issue 5), run on
//! brokers embedded in this process (`weir-core` on a data directory, no socket):
//!
//! - **schedule**: N messages of `--payload` bytes, each its own delayed batch with a delay
//!   uniform in [0, `--spread-secs`], handed to [`Broker::schedule`] `--schedule-batch` requests
//!   per call (one durable metadata write each) from `--tasks` concurrent tasks. Reports the
//!   scheduling rate (first call → last call returned), then waits for every delivery on a stream
//!   subscription of the target topic (opened before scheduling, read with `Consumer::next`) and
//!   reports the delivery lateness, receive time − due time (both wall-clock; the due time, in
//!   ms, is in the payload), in an HDR histogram; duplicates and early deliveries are counted.
//!   RSS (VmRSS of this process, broker and bench together) before scheduling, when the last
//!   call returns (the most messages pending), the most seen while delivering, and after.
//! - **transactions**: `--transactions` transactions from `--tasks` concurrent tasks, each
//!   `begin_transaction`, `--half-messages` × `send_half` of one message, `commit_transaction`;
//!   transactions/s, messages/s, commit latency. Then a stream consumer checks every committed
//!   message is visible.
//! - **publish-pending**: a W1-like publish loop (`publish_messages` of `--batch-messages`
//!   messages from `--inflight / --batch-messages` concurrent tasks, so as many messages are in
//!   flight as W1's window) of N messages on two brokers in this process, one with nothing
//!   scheduled and one with `--pending` messages scheduled an hour ahead (so they stay pending),
//!   alternating for `--publish-rounds` rounds (which goes first switches every round) after a
//!   warm-up loop on each; the ratio of the two rates is what the pending schedule costs plain
//!   publishing.
//!
//! Every workload opens its brokers on fresh directories under `--data-dir`, removed
//! afterwards; topics have one partition and `--fsync`'s policy. Disk flushes and bytes written
//! come from /proc/diskstats for the data directory's device: machine-wide, so another
//! process's fsyncs count too. RSS is the whole process's, so a growth is recorded only for the
//! first broker a process opens (later ones start from what the allocator kept): run one
//! workload per process to measure it.
//!
//! The native client schedules and runs transactions too, but one delayed batch per request
//! (one durable metadata write per individually delayed message), so these rates are the
//! core's, without the network; `docs/benchmarks.md` says more.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::watch;
use weir_core::{
    BatchBuilder, Broker, BrokerConfig, FsyncPolicy, Message, ScheduleRequest, StartPosition,
    SubscribeOptions, SubscriptionKind, TopicConfig,
};

use super::{
    BenchArguments, CpuMark, FsyncChoice, Record, Workload, cell, new_histogram, progress_bar,
    quantiles,
};

/// Workloads that run on an embedded broker, in the order they run.
const EMBEDDED: [Workload; 3] = [
    Workload::Schedule,
    Workload::Transactions,
    Workload::PublishPending,
];

/// The targets (issue 5): scheduling rate, lateness p99, RSS growth with N pending,
/// publishing slowed by at most 10%.
const TARGET_SCHEDULE_PER_SECOND: f64 = 200_000.0;
const TARGET_LATENESS_P99_MS: f64 = 10.0;
const TARGET_RSS_GROWTH_MIB: f64 = 128.0;
const TARGET_PUBLISH_RATIO: f64 = 0.90;

/// Delay of publish-pending's scheduled messages: long enough that none falls due meanwhile.
const PENDING_DELAY_MS: i64 = 3_600_000;

/// Options of the embedded workloads (`--workloads schedule,transactions,publish-pending`).
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Embedded workloads (schedule, transactions, publish-pending)")]
pub struct EmbeddedArguments {
    /// Run schedule, transactions and publish-pending (or those of --workloads) on a broker
    /// embedded in this process (weir-core, no network) instead of W1–W4 against --server.
    /// Naming only embedded workloads in --workloads implies it. Uses at least 2 runtime
    /// threads, as `weir serve` would on this machine
    #[arg(long)]
    embedded: bool,

    /// Parent of the embedded brokers' data directories (a fresh one per workload and run,
    /// removed afterwards); put it on the disk under test, not on tmpfs [default: the system's
    /// temporary directory]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// schedule: delays are uniform in [0, this many seconds] (publish-pending: an hour plus
    /// as much)
    #[arg(long, default_value_t = 60.0, value_name = "SECONDS")]
    spread_secs: f64,

    /// schedule, publish-pending: delayed batches per Broker::schedule call (one durable
    /// metadata write)
    #[arg(long, default_value_t = 1000, value_name = "REQUESTS")]
    schedule_batch: usize,

    /// schedule, transactions, publish-pending: concurrent tasks scheduling or running
    /// transactions
    #[arg(long, default_value_t = 4)]
    tasks: usize,

    /// transactions: how many to run
    #[arg(long, default_value_t = 10_000)]
    transactions: u64,

    /// transactions: half messages per transaction, each sent on its own
    #[arg(long, default_value_t = 10)]
    half_messages: u32,

    /// publish-pending: messages scheduled an hour ahead on the broker under test [default: N]
    #[arg(long)]
    pending: Option<u64>,

    /// publish-pending: publish loops of N messages on each broker (with none and with
    /// --pending scheduled), alternating, the first broker to go switching every round
    #[arg(long, default_value_t = 4, value_name = "ROUNDS")]
    publish_rounds: u64,
}

impl EmbeddedArguments {
    /// Runtime worker threads the embedded workloads need: the broker's tasks do blocking
    /// metadata writes, so one thread would serialise them with the bench.
    pub fn minimum_threads(&self, workloads: &[Workload]) -> usize {
        if self.embedded || workloads.iter().any(|workload| EMBEDDED.contains(workload)) {
            2
        } else {
            1
        }
    }
}

/// Whether to run the embedded workloads; an error if network and embedded ones are mixed.
pub fn requested(arguments: &BenchArguments) -> anyhow::Result<bool> {
    let embedded = arguments
        .workloads
        .iter()
        .any(|workload| EMBEDDED.contains(workload));
    let network: Vec<&str> = arguments
        .workloads
        .iter()
        .filter(|workload| !EMBEDDED.contains(workload))
        .map(|workload| workload.name())
        .collect();
    let default_list =
        arguments.workloads == [Workload::W1, Workload::W2, Workload::W3, Workload::W4];
    if (embedded || arguments.embedded.embedded)
        && !network.is_empty()
        && (embedded || !default_list)
    {
        bail!(
            "{} run against a server (--server); schedule, transactions and publish-pending run \
             embedded: run them separately",
            network.join(", ")
        );
    }
    Ok(embedded || arguments.embedded.embedded)
}

// ------------------------------------------------------------------------------ measurements

fn wall_clock_microseconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
        })
}

fn wall_clock_milliseconds() -> i64 {
    wall_clock_microseconds() / 1000
}

/// VmRSS of this process in MiB, from /proc/self/status.
fn resident_mebibytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kibibytes: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kibibytes / 1024.0)
}

/// Flushes completed and sectors written by the block device holding `path`, from
/// /proc/diskstats (`None` if the device is not listed there, e.g. an overlay filesystem).
#[derive(Debug, Clone, Copy)]
struct DiskCounters {
    flushes: u64,
    sectors_written: u64,
}

impl DiskCounters {
    fn read(path: &Path) -> Option<DiskCounters> {
        let device = std::fs::metadata(path).ok()?.dev();
        // glibc's gnu_dev_major / gnu_dev_minor.
        let major = ((device >> 32) & 0xffff_f000) | ((device >> 8) & 0x0000_0fff);
        let minor = ((device >> 12) & 0xffff_ff00) | (device & 0x0000_00ff);
        let stats = std::fs::read_to_string("/proc/diskstats").ok()?;
        stats.lines().find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.first()?.parse::<u64>().ok()? != major
                || fields.get(1)?.parse::<u64>().ok()? != minor
            {
                return None;
            }
            // After major, minor and name: field 7 is sectors written, 16 flushes completed.
            Some(DiskCounters {
                sectors_written: fields.get(3 + 6)?.parse().ok()?,
                flushes: fields.get(3 + 15)?.parse().ok()?,
            })
        })
    }

    /// Flushes and megabytes (10^6 B) written since `self`, named with `prefix`.
    fn since(&self, path: &Path, seconds: f64, prefix: &str) -> Vec<(String, f64)> {
        let Some(now) = DiskCounters::read(path) else {
            return Vec::new();
        };
        let flushes = now.flushes.saturating_sub(self.flushes) as f64;
        let megabytes =
            now.sectors_written.saturating_sub(self.sectors_written) as f64 * 512.0 / 1e6;
        let mut extras = vec![
            (format!("{prefix}disk_flushes"), flushes),
            (format!("{prefix}disk_written_mb"), megabytes),
        ];
        if seconds > 0.0 {
            extras.push((format!("{prefix}disk_flushes_per_s"), flushes / seconds));
        }
        extras
    }
}

/// CPU of this process (broker and bench) and of everything else, as the network bench records
/// the client's; here the "client" is the whole broker.
fn cpu_extras(mark: &CpuMark) -> Vec<(String, f64)> {
    mark.end()
        .into_iter()
        .map(|(key, value)| {
            if key == "client_cpu_s" {
                ("process_cpu_s".to_owned(), value)
            } else {
                (key, value)
            }
        })
        .collect()
}

fn insert_quantiles(record: &mut Record, prefix: &str, histogram: &Histogram<u64>) {
    let [p50, p99, p999, max] = quantiles(histogram);
    for (name, value) in [("p50", p50), ("p99", p99), ("p999", p999), ("max", max)] {
        record.extra.insert(format!("{prefix}_{name}_us"), value);
    }
}

/// A deterministic spread of delays without a random-number dependency (splitmix64).
fn mix(mut value: u64) -> u64 {
    value = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

/// `size` bytes (at least 16): the due time (i64 LE ms) and the sequence number, then filler.
fn delayed_payload(size: usize, due_ms: i64, sequence: u64) -> Vec<u8> {
    let mut value = vec![b'x'; size.max(16)];
    value[0..8].copy_from_slice(&due_ms.to_le_bytes());
    value[8..16].copy_from_slice(&sequence.to_le_bytes());
    value
}

fn read_payload(value: &[u8]) -> Option<(i64, u64)> {
    let due_ms = i64::from_le_bytes(value.get(0..8)?.try_into().ok()?);
    let sequence = u64::from_le_bytes(value.get(8..16)?.try_into().ok()?);
    Some((due_ms, sequence))
}

fn one_message_batch(timestamp_ms: i64, value: &[u8]) -> Bytes {
    let mut builder = BatchBuilder::with_capacity(value.len() + 64);
    builder.push(timestamp_ms, None, &[], value);
    builder.finish()
}

// ------------------------------------------------------------------------------------ broker

/// A broker on a fresh directory, removed when done.
struct Embedded {
    broker: Broker,
    directory: PathBuf,
    /// The first broker this process opened: its RSS growth is the broker's alone (later ones
    /// start from the memory the allocator kept from earlier workloads).
    first_in_process: bool,
}

static BROKER_OPENED: AtomicBool = AtomicBool::new(false);

impl Embedded {
    async fn open(arguments: &BenchArguments, run: u32, name: &str) -> anyhow::Result<Embedded> {
        let parent = arguments
            .embedded
            .data_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let directory = parent.join(format!("weir-bench-{}-r{run}-{}", std::process::id(), name));
        if directory.exists() {
            std::fs::remove_dir_all(&directory)
                .with_context(|| format!("removing the leftover {}", directory.display()))?;
        }
        std::fs::create_dir_all(&directory)
            .with_context(|| format!("creating {}", directory.display()))?;
        let mut config = BrokerConfig::new(&directory);
        config.default_topic = topic_config(arguments.fsync);
        let broker = Broker::open(config)
            .await
            .with_context(|| format!("opening a broker on {}", directory.display()))?;
        Ok(Embedded {
            broker,
            directory,
            first_in_process: !BROKER_OPENED.swap(true, Ordering::Relaxed),
        })
    }

    async fn create_topic(&self, name: &str, fsync: FsyncChoice) -> anyhow::Result<()> {
        self.broker
            .create_topic(name, topic_config(fsync))
            .await
            .with_context(|| format!("creating topic {name}"))?;
        Ok(())
    }

    async fn close(self) -> anyhow::Result<()> {
        self.broker.shutdown().await;
        drop(self.broker);
        std::fs::remove_dir_all(&self.directory)
            .with_context(|| format!("removing {}", self.directory.display()))
    }
}

fn topic_config(fsync: FsyncChoice) -> TopicConfig {
    TopicConfig {
        partitions: 1,
        fsync: match fsync {
            FsyncChoice::Always => FsyncPolicy::Always,
            FsyncChoice::Os => FsyncPolicy::Os,
        },
        ..TopicConfig::default()
    }
}

// -------------------------------------------------------------------------------- scheduling

/// How a scheduling phase runs.
struct Scheduling {
    topic: String,
    count: u64,
    payload: usize,
    /// Every due time is now + base + a delay uniform in [0, spread].
    base_delay_ms: i64,
    spread_ms: i64,
    per_call: usize,
    tasks: usize,
    progress: ProgressBar,
}

/// What a scheduling phase did.
struct Scheduled {
    messages: u64,
    calls: u64,
    seconds: f64,
    /// Duration of each `schedule` call, µs.
    call_latency: Histogram<u64>,
}

/// Schedules `count` one-message batches, `per_call` per `Broker::schedule` call, from `tasks`
/// concurrent tasks taking the next slice of sequence numbers.
async fn schedule_all(broker: &Broker, scheduling: Scheduling) -> anyhow::Result<Scheduled> {
    let next = Arc::new(AtomicU64::new(0));
    let scheduling = Arc::new(scheduling);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..scheduling.tasks.max(1) {
        let broker = broker.clone();
        let next = next.clone();
        let scheduling = scheduling.clone();
        tasks.push(tokio::spawn(async move {
            let per_call = scheduling.per_call.max(1) as u64;
            let mut call_latency = new_histogram()?;
            let (mut messages, mut calls) = (0u64, 0u64);
            loop {
                let first = next.fetch_add(per_call, Ordering::Relaxed);
                if first >= scheduling.count {
                    break;
                }
                let last = (first + per_call).min(scheduling.count);
                let now_ms = wall_clock_milliseconds();
                let requests: Vec<ScheduleRequest> = (first..last)
                    .map(|sequence| {
                        let delay_ms =
                            (mix(sequence) % (scheduling.spread_ms.max(0) as u64 + 1)) as i64;
                        let due_ms = now_ms + scheduling.base_delay_ms + delay_ms;
                        let value = delayed_payload(scheduling.payload, due_ms, sequence);
                        ScheduleRequest {
                            topic: scheduling.topic.clone(),
                            partition: None,
                            batch: one_message_batch(now_ms, &value),
                            deliver_at_ms: due_ms,
                            business_key: None,
                        }
                    })
                    .collect();
                let called = Instant::now();
                let scheduled = broker
                    .schedule(requests)
                    .await
                    .context("scheduling a batch of delayed messages")?;
                let _ = call_latency.record(
                    u64::try_from(called.elapsed().as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                );
                messages += scheduled.len() as u64;
                calls += 1;
                scheduling.progress.inc(last - first);
            }
            anyhow::Ok((messages, calls, call_latency))
        }));
    }
    let mut scheduled = Scheduled {
        messages: 0,
        calls: 0,
        seconds: 0.0,
        call_latency: new_histogram()?,
    };
    for task in tasks {
        let (messages, calls, call_latency) = task.await.context("a scheduling task")??;
        scheduled.messages += messages;
        scheduled.calls += calls;
        scheduled
            .call_latency
            .add(&call_latency)
            .context("merging histograms")?;
    }
    scheduled.seconds = start.elapsed().as_secs_f64();
    Ok(scheduled)
}

/// What the schedule workload's consumer saw.
struct Deliveries {
    /// Distinct messages received.
    received: u64,
    duplicates: u64,
    /// Received before their due time (by the wall clock).
    early: u64,
    /// Receive − due, µs.
    lateness: Histogram<u64>,
    /// The same, of the messages due after the last `schedule` call returned: the hand-over
    /// alone, without scheduling competing for the metadata store.
    quiet_lateness: Histogram<u64>,
    /// When the last new message arrived.
    last_at: Instant,
    /// The most VmRSS seen while receiving, MiB.
    peak_resident: f64,
}

/// Wall-clock ms when scheduling ended and when to stop waiting; both unknown (`i64::MAX`)
/// while scheduling.
#[derive(Debug, Clone, Copy)]
struct Phase {
    scheduling_ended_ms: i64,
    deadline_ms: i64,
}

/// Reads the target topic until all `count` messages arrived or the wall clock passes the
/// deadline (set once scheduling ends).
async fn receive_all(
    broker: Broker,
    topic: String,
    count: u64,
    phase: watch::Receiver<Phase>,
    progress: ProgressBar,
) -> anyhow::Result<Deliveries> {
    let options = SubscribeOptions {
        kind: SubscriptionKind::Stream,
        start: StartPosition::Earliest,
        ..SubscribeOptions::default()
    };
    let consumer = broker
        .subscribe(&topic, "bench", options)
        .await
        .context("subscribing to the delayed messages' topic")?;
    let mut seen = vec![0u64; usize::try_from(count.div_ceil(64)).unwrap_or(usize::MAX)];
    let mut deliveries = Deliveries {
        received: 0,
        duplicates: 0,
        early: 0,
        lateness: new_histogram()?,
        quiet_lateness: new_histogram()?,
        last_at: Instant::now(),
        peak_resident: resident_mebibytes().unwrap_or(0.0),
    };
    let mut resident_sampled = Instant::now();
    while deliveries.received < count && wall_clock_milliseconds() < phase.borrow().deadline_ms {
        let batch =
            match tokio::time::timeout(Duration::from_millis(200), consumer.next(1000)).await {
                Ok(batch) => batch.context("receiving delayed messages")?,
                Err(_) => Vec::new(),
            };
        let received_us = wall_clock_microseconds();
        let scheduling_ended_ms = phase.borrow().scheduling_ended_ms;
        let mut new = 0;
        for delivery in &batch {
            let Some((due_ms, sequence)) = read_payload(&delivery.record.value) else {
                bail!("a delivered message without the bench's payload");
            };
            let (word, bit) = ((sequence / 64) as usize, 1u64 << (sequence % 64));
            match seen.get_mut(word) {
                Some(slot) if *slot & bit == 0 => *slot |= bit,
                Some(_) => {
                    deliveries.duplicates += 1;
                    continue;
                }
                None => bail!("a delivered message with sequence {sequence} beyond {count}"),
            }
            new += 1;
            let lateness_us = received_us - due_ms * 1000;
            if lateness_us < 0 {
                deliveries.early += 1;
            }
            let lateness_us = u64::try_from(lateness_us).unwrap_or(0).max(1);
            let _ = deliveries.lateness.record(lateness_us);
            if due_ms > scheduling_ended_ms {
                let _ = deliveries.quiet_lateness.record(lateness_us);
            }
        }
        if let Some(last) = batch.last() {
            consumer
                .ack(&[last.id()])
                .await
                .context("committing the stream position")?;
        }
        if new > 0 {
            deliveries.received += new;
            deliveries.last_at = Instant::now();
            progress.inc(new);
        }
        if resident_sampled.elapsed() >= Duration::from_millis(100) {
            resident_sampled = Instant::now();
            if let Some(resident) = resident_mebibytes() {
                deliveries.peak_resident = deliveries.peak_resident.max(resident);
            }
        }
    }
    Ok(deliveries)
}

// --------------------------------------------------------------------------------- workloads

/// schedule: N delayed messages, then every delivery.
async fn schedule(arguments: &BenchArguments, run: u32) -> anyhow::Result<Record> {
    let options = &arguments.embedded;
    let count = arguments.count.max(1);
    let spread_ms = (options.spread_secs.max(0.0) * 1000.0).round() as i64;
    let embedded = Embedded::open(arguments, run, Workload::Schedule.name()).await?;
    let topic = "bench_scheduled";
    embedded.create_topic(topic, arguments.fsync).await?;
    let resident_before = resident_mebibytes().unwrap_or(0.0);
    let (phase_sender, phase) = watch::channel(Phase {
        scheduling_ended_ms: i64::MAX,
        deadline_ms: i64::MAX,
    });
    let delivering = progress_bar(count, format!("run {run} delivered"));
    let receiving = tokio::spawn(receive_all(
        embedded.broker.clone(),
        topic.to_owned(),
        count,
        phase,
        delivering.clone(),
    ));
    let disk = DiskCounters::read(&embedded.directory);
    let cpu = CpuMark::start(None);
    let scheduling = progress_bar(count, format!("run {run} scheduled"));
    let scheduled = schedule_all(
        &embedded.broker,
        Scheduling {
            topic: topic.to_owned(),
            count,
            payload: arguments.payload,
            base_delay_ms: 0,
            spread_ms,
            per_call: options.schedule_batch,
            tasks: options.tasks,
            progress: scheduling.clone(),
        },
    )
    .await?;
    let scheduling_ended = Instant::now();
    let mut record = Record::new(arguments, run, Workload::Schedule);
    record.label = label(arguments);
    if let Some(disk) = disk {
        record
            .extra
            .extend(disk.since(&embedded.directory, scheduled.seconds, "schedule_"));
    }
    record.extra.extend(
        cpu_extras(&cpu)
            .into_iter()
            .map(|(key, value)| (format!("schedule_{key}"), value)),
    );
    let resident_pending = resident_mebibytes().unwrap_or(0.0);
    let pending = embedded.broker.scheduled_count().unwrap_or(0);
    scheduling.finish_and_clear();
    // Every due time is at most `spread` after the last call; then 30 s of grace.
    let now_ms = wall_clock_milliseconds();
    phase_sender.send_replace(Phase {
        scheduling_ended_ms: now_ms,
        deadline_ms: now_ms + spread_ms + 30_000,
    });
    let deliveries = receiving.await.context("the consumer task")??;
    delivering.finish_and_clear();
    let resident_after = resident_mebibytes().unwrap_or(0.0);
    let first_in_process = embedded.first_in_process;
    embedded.close().await?;

    record.target = count;
    record.set_rate(scheduled.messages, scheduled.seconds, arguments.payload);
    record.set_latency(&deliveries.lateness);
    record.complete = scheduled.messages == count
        && deliveries.received == count
        && deliveries.duplicates == 0
        && deliveries.early == 0;
    let extra = &mut record.extra;
    extra.insert("schedule_calls".to_owned(), scheduled.calls as f64);
    extra.insert(
        "schedule_calls_per_s".to_owned(),
        scheduled.calls as f64 / scheduled.seconds.max(1e-9),
    );
    extra.insert("spread_s".to_owned(), options.spread_secs);
    extra.insert("tasks".to_owned(), options.tasks.max(1) as f64);
    extra.insert("delivered".to_owned(), deliveries.received as f64);
    extra.insert("duplicates".to_owned(), deliveries.duplicates as f64);
    extra.insert("early".to_owned(), deliveries.early as f64);
    extra.insert(
        "last_delivery_after_scheduling_s".to_owned(),
        deliveries
            .last_at
            .saturating_duration_since(scheduling_ended)
            .as_secs_f64(),
    );
    extra.insert("pending_at_peak".to_owned(), pending as f64);
    extra.insert("rss_before_mib".to_owned(), resident_before);
    extra.insert("rss_peak_pending_mib".to_owned(), resident_pending);
    if first_in_process {
        extra.insert(
            "rss_growth_mib".to_owned(),
            resident_pending - resident_before,
        );
    }
    extra.insert(
        "rss_max_delivering_mib".to_owned(),
        deliveries.peak_resident.max(resident_pending),
    );
    extra.insert("rss_after_mib".to_owned(), resident_after);
    extra.insert(
        "quiet_delivered".to_owned(),
        deliveries.quiet_lateness.len() as f64,
    );
    insert_quantiles(&mut record, "schedule_call", &scheduled.call_latency);
    if !deliveries.quiet_lateness.is_empty() {
        insert_quantiles(&mut record, "quiet_lateness", &deliveries.quiet_lateness);
    }
    Ok(record)
}

/// transactions: begin, half messages, commit, from concurrent tasks.
async fn transactions(arguments: &BenchArguments, run: u32) -> anyhow::Result<Record> {
    let options = &arguments.embedded;
    let total = options.transactions.max(1);
    let half_messages = options.half_messages.max(1);
    let embedded = Embedded::open(arguments, run, Workload::Transactions.name()).await?;
    let topic = "bench_transactional";
    embedded.create_topic(topic, arguments.fsync).await?;
    let progress = progress_bar(total, format!("run {run} transactions"));
    let disk = DiskCounters::read(&embedded.directory);
    let cpu = CpuMark::start(None);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..options.tasks.max(1) {
        let broker = embedded.broker.clone();
        let next = next.clone();
        let progress = progress.clone();
        let payload = arguments.payload;
        tasks.push(tokio::spawn(async move {
            let mut commit_latency = new_histogram()?;
            let mut transaction_latency = new_histogram()?;
            let mut committed = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let began = Instant::now();
                let transaction = broker
                    .begin_transaction("bench", None)
                    .context("beginning a transaction")?;
                for index in 0..half_messages {
                    let now_ms = wall_clock_milliseconds();
                    let value = delayed_payload(payload, now_ms, u64::from(index));
                    broker
                        .send_half(transaction, topic, None, one_message_batch(now_ms, &value))
                        .await
                        .context("sending a half message")?;
                }
                let committing = Instant::now();
                broker
                    .commit_transaction(transaction)
                    .await
                    .context("committing a transaction")?;
                let microseconds = |since: Instant| {
                    u64::try_from(since.elapsed().as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1)
                };
                let _ = commit_latency.record(microseconds(committing));
                let _ = transaction_latency.record(microseconds(began));
                committed += 1;
                progress.inc(1);
            }
            anyhow::Ok((committed, commit_latency, transaction_latency))
        }));
    }
    let mut committed = 0;
    let mut commit_latency = new_histogram()?;
    let mut transaction_latency = new_histogram()?;
    for task in tasks {
        let (done, commits, whole) = task.await.context("a transaction task")??;
        committed += done;
        commit_latency.add(&commits).context("merging histograms")?;
        transaction_latency
            .add(&whole)
            .context("merging histograms")?;
    }
    let seconds = start.elapsed().as_secs_f64();
    progress.finish_and_clear();
    let mut record = Record::new(arguments, run, Workload::Transactions);
    record.label = label(arguments);
    record.extra.extend(cpu_extras(&cpu));
    if let Some(disk) = disk {
        record
            .extra
            .extend(disk.since(&embedded.directory, seconds, ""));
    }
    // Every committed message is visible, once.
    let expected = committed * u64::from(half_messages);
    let visible = count_visible(&embedded.broker, topic, expected).await?;
    embedded.close().await?;

    record.target = total * u64::from(half_messages);
    record.set_rate(expected, seconds, arguments.payload);
    record.complete = committed == total && visible == expected;
    let extra = &mut record.extra;
    extra.insert("transactions".to_owned(), committed as f64);
    extra.insert(
        "transactions_per_s".to_owned(),
        committed as f64 / seconds.max(1e-9),
    );
    extra.insert("half_messages".to_owned(), f64::from(half_messages));
    extra.insert("tasks".to_owned(), options.tasks.max(1) as f64);
    extra.insert("visible".to_owned(), visible as f64);
    insert_quantiles(&mut record, "commit", &commit_latency);
    insert_quantiles(&mut record, "transaction", &transaction_latency);
    Ok(record)
}

/// Messages a stream subscription from the start of `topic` reads, up to `expected` (waits at
/// most 10 s for them).
async fn count_visible(broker: &Broker, topic: &str, expected: u64) -> anyhow::Result<u64> {
    let options = SubscribeOptions {
        kind: SubscriptionKind::Stream,
        start: StartPosition::Earliest,
        ..SubscribeOptions::default()
    };
    let consumer = broker
        .subscribe(topic, "bench_check", options)
        .await
        .context("subscribing to check visibility")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut visible = 0;
    while visible < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), consumer.next(10_000)).await {
            Ok(batch) => visible += batch.context("reading committed messages")?.len() as u64,
            Err(_) => continue,
        }
    }
    Ok(visible)
}

/// What a publish loop did.
struct Published {
    messages: u64,
    seconds: f64,
    /// publish_messages call → confirm, µs.
    confirm_latency: Histogram<u64>,
}

/// W1 embedded: `count` messages in batches of `--batch-messages` from as many concurrent
/// tasks as W1's window holds batches.
async fn publish_all(
    arguments: &BenchArguments,
    broker: &Broker,
    topic: &str,
    count: u64,
    progress: ProgressBar,
) -> anyhow::Result<Published> {
    let batch_messages = arguments.batch_messages.max(1) as u64;
    let concurrency = (arguments.inflight.max(1) as u64).div_ceil(batch_messages);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let broker = broker.clone();
        let next = next.clone();
        let topic = topic.to_owned();
        let progress = progress.clone();
        let payload = arguments.payload;
        tasks.push(tokio::spawn(async move {
            let mut confirm_latency = new_histogram()?;
            let mut published = 0u64;
            loop {
                let first = next.fetch_add(batch_messages, Ordering::Relaxed);
                if first >= count {
                    break;
                }
                let last = (first + batch_messages).min(count);
                let now_ms = wall_clock_milliseconds();
                let messages: Vec<Message> = (first..last)
                    .map(|sequence| Message::new(delayed_payload(payload, now_ms, sequence)))
                    .collect();
                let sent = Instant::now();
                broker
                    .publish_messages(&topic, None, &messages)
                    .await
                    .context("publishing")?;
                let _ = confirm_latency.record(
                    u64::try_from(sent.elapsed().as_micros())
                        .unwrap_or(u64::MAX)
                        .max(1),
                );
                published += last - first;
                progress.inc(last - first);
            }
            anyhow::Ok((published, confirm_latency))
        }));
    }
    let mut published = Published {
        messages: 0,
        seconds: 0.0,
        confirm_latency: new_histogram()?,
    };
    for task in tasks {
        let (messages, confirm_latency) = task.await.context("a publishing task")??;
        published.messages += messages;
        published
            .confirm_latency
            .add(&confirm_latency)
            .context("merging histograms")?;
    }
    published.seconds = start.elapsed().as_secs_f64();
    Ok(published)
}

/// publish-pending: the publish loop on a broker with nothing scheduled and on one with
/// `--pending` messages scheduled an hour ahead, alternating, `--publish-rounds` times each.
async fn publish_pending(arguments: &BenchArguments, run: u32) -> anyhow::Result<Record> {
    let options = &arguments.embedded;
    let count = arguments.count.max(1);
    let pending_target = options.pending.unwrap_or(count);
    let rounds = options.publish_rounds.max(1);
    let none = Embedded::open(arguments, run, "publish-none-pending").await?;
    let loaded = Embedded::open(arguments, run, "publish-pending").await?;
    loaded.create_topic("bench_later", arguments.fsync).await?;

    let progress = progress_bar(pending_target, format!("run {run} scheduled"));
    let resident_before_scheduling = resident_mebibytes().unwrap_or(0.0);
    let disk = DiskCounters::read(&loaded.directory);
    let cpu = CpuMark::start(None);
    let scheduled = schedule_all(
        &loaded.broker,
        Scheduling {
            topic: "bench_later".to_owned(),
            count: pending_target,
            payload: arguments.payload,
            base_delay_ms: PENDING_DELAY_MS,
            spread_ms: (options.spread_secs.max(0.0) * 1000.0).round() as i64,
            per_call: options.schedule_batch,
            tasks: options.tasks,
            progress: progress.clone(),
        },
    )
    .await?;
    let cpu_scheduling = cpu_extras(&cpu);
    let scheduling_disk = disk.map_or_else(Vec::new, |disk| {
        disk.since(&loaded.directory, scheduled.seconds, "scheduling_")
    });
    progress.finish_and_clear();
    let pending = loaded.broker.scheduled_count().unwrap_or(0);
    let resident_pending = resident_mebibytes().unwrap_or(0.0);

    // A tenth of N on each first, so neither side pays for first use (threads, files, pages).
    for embedded in [&none, &loaded] {
        embedded
            .create_topic("bench_warm_up", arguments.fsync)
            .await?;
        publish_all(
            arguments,
            &embedded.broker,
            "bench_warm_up",
            (count / 10).max(1),
            ProgressBar::hidden(),
        )
        .await?;
    }
    let mut sides = [PublishSide::new()?, PublishSide::new()?];
    for round in 1..=rounds {
        // The second loop of a round runs faster (by ~10% here): alternate which goes first.
        let mut order: Vec<(&mut PublishSide, &Embedded)> =
            sides.iter_mut().zip([&none, &loaded]).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for (side, embedded) in order {
            let topic = format!("bench_plain_{round}");
            embedded.create_topic(&topic, arguments.fsync).await?;
            let progress = progress_bar(
                count,
                format!(
                    "run {run} round {round}, {} pending",
                    embedded.broker.scheduled_count().unwrap_or(0)
                ),
            );
            let cpu = CpuMark::start(None);
            let published =
                publish_all(arguments, &embedded.broker, &topic, count, progress.clone()).await?;
            progress.finish_and_clear();
            side.add(&published, &cpu_extras(&cpu))?;
        }
    }
    let resident_after = resident_mebibytes().unwrap_or(0.0);
    let first_in_process = none.first_in_process || loaded.first_in_process;
    none.close().await?;
    loaded.close().await?;

    let [without, with] = sides;
    let mut record = Record::new(arguments, run, Workload::PublishPending);
    record.label = label(arguments);
    record.target = count * rounds;
    record.set_rate(with.messages, with.seconds, arguments.payload);
    record.complete = without.messages == count * rounds
        && with.messages == count * rounds
        && pending == pending_target;
    let extra = &mut record.extra;
    extra.extend(scheduling_disk);
    for (key, value) in cpu_scheduling {
        extra.insert(format!("scheduling_{key}"), value);
    }
    extra.insert("pending".to_owned(), pending as f64);
    extra.insert("rounds".to_owned(), rounds as f64);
    let rate_without = without.messages as f64 / without.seconds.max(1e-9);
    extra.insert("none_pending_msgs_per_s".to_owned(), rate_without);
    extra.insert(
        "ratio_to_none_pending".to_owned(),
        record.msgs_per_s / rate_without.max(1e-9),
    );
    for (round, (left, right)) in without.rates.iter().zip(&with.rates).enumerate() {
        extra.insert(format!("round{}_ratio", round + 1), right / left.max(1e-9));
    }
    extra.insert(
        "scheduling_msgs_per_s".to_owned(),
        scheduled.messages as f64 / scheduled.seconds.max(1e-9),
    );
    extra.insert(
        "rss_before_scheduling_mib".to_owned(),
        resident_before_scheduling,
    );
    extra.insert("rss_pending_mib".to_owned(), resident_pending);
    if first_in_process {
        extra.insert(
            "rss_growth_mib".to_owned(),
            resident_pending - resident_before_scheduling,
        );
    }
    extra.insert("rss_after_mib".to_owned(), resident_after);
    extra.insert(
        "publish_concurrency".to_owned(),
        (arguments.inflight.max(1) as f64 / arguments.batch_messages.max(1) as f64).ceil(),
    );
    for (key, value) in &without.cpu {
        extra.insert(format!("none_pending_{key}"), *value);
    }
    for (key, value) in &with.cpu {
        extra.insert(key.clone(), *value);
    }
    insert_quantiles(
        &mut record,
        "none_pending_confirm",
        &without.confirm_latency,
    );
    insert_quantiles(&mut record, "confirm", &with.confirm_latency);
    Ok(record)
}

/// The publish rounds of one side of publish-pending, added up.
struct PublishSide {
    messages: u64,
    seconds: f64,
    rates: Vec<f64>,
    confirm_latency: Histogram<u64>,
    cpu: BTreeMap<String, f64>,
}

impl PublishSide {
    fn new() -> anyhow::Result<PublishSide> {
        Ok(PublishSide {
            messages: 0,
            seconds: 0.0,
            rates: Vec::new(),
            confirm_latency: new_histogram()?,
            cpu: BTreeMap::new(),
        })
    }

    fn add(&mut self, published: &Published, cpu: &[(String, f64)]) -> anyhow::Result<()> {
        self.messages += published.messages;
        self.seconds += published.seconds;
        self.rates
            .push(published.messages as f64 / published.seconds.max(1e-9));
        self.confirm_latency
            .add(&published.confirm_latency)
            .context("merging histograms")?;
        for (key, value) in cpu {
            *self.cpu.entry(key.clone()).or_default() += value;
        }
        Ok(())
    }
}

fn label(arguments: &BenchArguments) -> String {
    arguments
        .label
        .clone()
        .unwrap_or_else(|| format!("weir-embedded-{}", arguments.fsync.name()))
}

// ---------------------------------------------------------------------------------- the verb

pub async fn run(arguments: &BenchArguments) -> anyhow::Result<()> {
    let options = &arguments.embedded;
    if !(options.spread_secs >= 0.0 && options.spread_secs.is_finite()) {
        bail!("--spread-secs must be a number of seconds, 0 or more");
    }
    let mut workloads: Vec<Workload> = EMBEDDED
        .into_iter()
        .filter(|workload| arguments.workloads.contains(workload))
        .collect();
    if workloads.is_empty() {
        workloads = EMBEDDED.to_vec();
    }
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
    let parent = options.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    eprintln!(
        "weir bench (embedded weir-core, no network): {} in {}, fsync={}, N={}, payload {} B, \
         delays over {} s, {} requests per schedule call, {} task(s), {} transactions of {} half \
         messages, publish batches of {}, {} run(s)",
        label(arguments),
        parent.display(),
        arguments.fsync.name(),
        arguments.count,
        arguments.payload,
        options.spread_secs,
        options.schedule_batch,
        options.tasks,
        options.transactions,
        options.half_messages,
        arguments.batch_messages,
        arguments.runs
    );
    let mut records = Vec::new();
    for run in arguments.first_run..arguments.first_run.saturating_add(arguments.runs) {
        for &workload in &workloads {
            let record = match workload {
                Workload::Schedule => schedule(arguments, run).await?,
                Workload::Transactions => transactions(arguments, run).await?,
                _ => publish_pending(arguments, run).await?,
            };
            eprintln!("{}", describe(&record));
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

/// One line for the log, as the workload ends.
fn describe(record: &Record) -> String {
    let extra = |key: &str| record.extra.get(key).copied().unwrap_or(f64::NAN);
    let milliseconds = |microseconds: Option<f64>| microseconds.unwrap_or(f64::NAN) / 1000.0;
    let incomplete = if record.complete { "" } else { " INCOMPLETE" };
    let head = format!("{} run {} {}", record.label, record.run, record.workload);
    match record.workload.as_str() {
        "schedule" => format!(
            "{head}: scheduled {}/{} in {:.2} s = {:.0} msg/s ({:.0} calls/s, {:.0} disk flushes/s); \
             delivered {} (dup {}, early {}), lateness p50/p99/p99.9/max = {:.1}/{:.1}/{:.1}/{:.1} ms \
             (p50/p99 {:.1}/{:.1} ms once scheduling ended); \
             RSS {:.0} → {:.0} MiB with {} pending (+{:.0}), {:.0} after{incomplete}",
            record.msgs,
            record.target,
            record.secs,
            record.msgs_per_s,
            extra("schedule_calls_per_s"),
            extra("schedule_disk_flushes_per_s"),
            extra("delivered"),
            extra("duplicates"),
            extra("early"),
            milliseconds(record.p50_us),
            milliseconds(record.p99_us),
            milliseconds(record.p999_us),
            milliseconds(record.max_us),
            extra("quiet_lateness_p50_us") / 1000.0,
            extra("quiet_lateness_p99_us") / 1000.0,
            extra("rss_before_mib"),
            extra("rss_peak_pending_mib"),
            extra("pending_at_peak"),
            extra("rss_growth_mib"),
            extra("rss_after_mib"),
        ),
        "transactions" => format!(
            "{head}: {} transactions × {} in {:.2} s = {:.0} txn/s, {:.0} msg/s; commit p50/p99 = \
             {:.1}/{:.1} ms, whole transaction p50/p99 = {:.1}/{:.1} ms; {:.0} disk flushes/s; \
             {} of {} visible{incomplete}",
            extra("transactions"),
            extra("half_messages"),
            record.secs,
            extra("transactions_per_s"),
            record.msgs_per_s,
            extra("commit_p50_us") / 1000.0,
            extra("commit_p99_us") / 1000.0,
            extra("transaction_p50_us") / 1000.0,
            extra("transaction_p99_us") / 1000.0,
            extra("disk_flushes_per_s"),
            extra("visible"),
            record.msgs,
        ),
        _ => format!(
            "{head}: publish {:.0} msg/s with none pending, {:.0} msg/s with {} pending (ratio {:.3}); \
             confirm p99 {:.0} / {:.0} µs; scheduled at {:.0} msg/s, RSS +{:.0} MiB{incomplete}",
            extra("none_pending_msgs_per_s"),
            record.msgs_per_s,
            extra("pending"),
            extra("ratio_to_none_pending"),
            extra("none_pending_confirm_p99_us"),
            extra("confirm_p99_us"),
            extra("scheduling_msgs_per_s"),
            extra("rss_growth_mib"),
        ),
    }
}

/// One row per measure with its target: medians over the runs.
fn summary(records: &[Record]) -> String {
    use std::fmt::Write as _;
    struct Row {
        workload: &'static str,
        measure: &'static str,
        value: fn(&Record) -> Option<f64>,
        decimals: usize,
        /// The target as text, and whether a median meets it.
        target: &'static str,
        meets: Option<fn(f64) -> bool>,
    }
    let extra = |record: &Record, key: &str| record.extra.get(key).copied();
    let rows: [Row; 16] = [
        Row {
            workload: "schedule",
            measure: "scheduling, msg/s",
            value: |record| Some(record.msgs_per_s),
            decimals: 0,
            target: "≥ 200,000",
            meets: Some(|value| value >= TARGET_SCHEDULE_PER_SECOND),
        },
        Row {
            workload: "schedule",
            measure: "durable metadata writes (schedule calls)/s",
            value: |record| record.extra.get("schedule_calls_per_s").copied(),
            decimals: 0,
            target: "",
            meets: None,
        },
        Row {
            workload: "schedule",
            measure: "disk flushes/s while scheduling",
            value: |record| record.extra.get("schedule_disk_flushes_per_s").copied(),
            decimals: 0,
            target: "",
            meets: None,
        },
        Row {
            workload: "schedule",
            measure: "lateness p50, ms",
            value: |record| record.p50_us.map(|value| value / 1000.0),
            decimals: 1,
            target: "",
            meets: None,
        },
        Row {
            workload: "schedule",
            measure: "lateness p99, ms",
            value: |record| record.p99_us.map(|value| value / 1000.0),
            decimals: 1,
            target: "≤ 10",
            meets: Some(|value| value <= TARGET_LATENESS_P99_MS),
        },
        Row {
            workload: "schedule",
            measure: "lateness p99.9, ms",
            value: |record| record.p999_us.map(|value| value / 1000.0),
            decimals: 1,
            target: "",
            meets: None,
        },
        Row {
            workload: "schedule",
            measure: "lateness max, ms",
            value: |record| record.max_us.map(|value| value / 1000.0),
            decimals: 1,
            target: "",
            meets: None,
        },
        Row {
            workload: "schedule",
            measure: "lateness p99 of messages due after scheduling ended, ms",
            value: |record| {
                record
                    .extra
                    .get("quiet_lateness_p99_us")
                    .map(|value| value / 1000.0)
            },
            decimals: 1,
            target: "",
            meets: None,
        },
        Row {
            workload: "schedule",
            measure: "RSS growth at peak pending, MiB",
            value: |record| record.extra.get("rss_growth_mib").copied(),
            decimals: 0,
            target: "< 128",
            meets: Some(|value| value < TARGET_RSS_GROWTH_MIB),
        },
        Row {
            workload: "transactions",
            measure: "transactions/s",
            value: |record| record.extra.get("transactions_per_s").copied(),
            decimals: 0,
            target: "",
            meets: None,
        },
        Row {
            workload: "transactions",
            measure: "messages/s",
            value: |record| Some(record.msgs_per_s),
            decimals: 0,
            target: "",
            meets: None,
        },
        Row {
            workload: "transactions",
            measure: "commit p50 / p99, ms",
            value: |record| {
                record
                    .extra
                    .get("commit_p99_us")
                    .map(|value| value / 1000.0)
            },
            decimals: 1,
            target: "",
            meets: None,
        },
        Row {
            workload: "publish-pending",
            measure: "publish msg/s, none → N pending",
            value: |record| Some(record.msgs_per_s),
            decimals: 0,
            target: "",
            meets: None,
        },
        Row {
            workload: "publish-pending",
            measure: "RSS growth by scheduling N (none due), MiB",
            value: |record| record.extra.get("rss_growth_mib").copied(),
            decimals: 0,
            target: "< 128",
            meets: Some(|value| value < TARGET_RSS_GROWTH_MIB),
        },
        Row {
            workload: "publish-pending",
            measure: "scheduling (an hour ahead), msg/s",
            value: |record| record.extra.get("scheduling_msgs_per_s").copied(),
            decimals: 0,
            target: "≥ 200,000",
            meets: Some(|value| value >= TARGET_SCHEDULE_PER_SECOND),
        },
        Row {
            workload: "publish-pending",
            measure: "ratio, N pending / none",
            value: |record| record.extra.get("ratio_to_none_pending").copied(),
            decimals: 3,
            target: "≥ 0.90",
            meets: Some(|value| value >= TARGET_PUBLISH_RATIO),
        },
    ];
    let mut text = String::new();
    let _ = writeln!(
        text,
        "\n| workload | measure | runs | median | target | met |\n|---|---|---|---|---|---|"
    );
    for row in rows {
        let runs: Vec<&Record> = records
            .iter()
            .filter(|record| record.workload == row.workload)
            .collect();
        if runs.is_empty() {
            continue;
        }
        let incomplete = runs.iter().any(|record| !record.complete);
        let values: Vec<f64> = runs
            .iter()
            .filter_map(|record| (row.value)(record))
            .collect();
        let mut shown = cell(&values, incomplete, row.decimals);
        // Two-valued rows show their first value too.
        if row.measure.starts_with("commit") {
            let p50: Vec<f64> = runs
                .iter()
                .filter_map(|record| extra(record, "commit_p50_us").map(|value| value / 1000.0))
                .collect();
            shown = format!("{} / {shown}", cell(&p50, false, 1));
        } else if row.measure.starts_with("publish msg/s") {
            let before: Vec<f64> = runs
                .iter()
                .filter_map(|record| extra(record, "none_pending_msgs_per_s"))
                .collect();
            shown = format!("{} → {shown}", cell(&before, false, 0));
        }
        let met = match row.meets {
            Some(meets) if !values.is_empty() => {
                if meets(super::median(&values)) {
                    "yes"
                } else {
                    "no"
                }
            }
            _ => "",
        };
        let _ = writeln!(
            text,
            "| {} | {} | {} | {shown} | {} | {met} |",
            row.workload,
            row.measure,
            runs.len(),
            row.target
        );
    }
    let _ = writeln!(
        text,
        "\nMedian over runs; ±h% = half the min–max range as % of the median; * = a run was \
         incomplete (a message not delivered or delivered twice or early, a transaction not \
         visible). Embedded broker: no network. Lateness = receive − due time, wall clock."
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delayed_payload_carries_its_due_time_and_sequence() {
        let value = delayed_payload(100, 1_700_000_000_123, 42);
        assert_eq!(value.len(), 100);
        assert_eq!(read_payload(&value), Some((1_700_000_000_123, 42)));
        assert!(value[16..].iter().all(|byte| *byte == b'x'));
        assert_eq!(read_payload(b"short"), None);
    }

    #[test]
    fn delays_spread_over_the_whole_range() {
        let spread = 60_000u64;
        let delays: Vec<u64> = (0..100_000)
            .map(|sequence| mix(sequence) % (spread + 1))
            .collect();
        let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
        assert!((mean - 30_000.0).abs() < 500.0, "mean {mean}");
        assert!(delays.iter().any(|&delay| delay < 100));
        assert!(delays.iter().any(|&delay| delay > spread - 100));
    }

    #[test]
    fn the_resident_size_is_read() {
        assert!(resident_mebibytes().is_some_and(|resident| resident > 0.0));
    }
}
