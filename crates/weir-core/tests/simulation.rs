//! A seeded, deterministic simulation of the whole broker under faults, checked after every
//! step against a model of what the broker promises (issue 10, part 2).
//!
//! One current-thread runtime, a manual clock, timers only when the simulation calls `tick()`
//! (`background_timers` off), and every file on a simulated machine (`SimStorage`): the
//! partition logs and the metadata store see the same disk-full, failed-fsync, torn-write and
//! crash faults. Several producers and consumers act in a random order drawn from the seed.
//! A quarter of the steps go beyond the one queue: exchanges, stream subscriptions, DLQ
//! redrive and retention (the section at the end, with its own model, `Coverage`).
//!
//! - `SEED=123 cargo test -p weir-core --test simulation` replays one seed;
//! - `SIM_SEEDS=10000` runs that many seeds (default [`DEFAULT_SEEDS`]), from `SIM_FIRST_SEED`
//!   (default 0);
//! - `SIM_STEPS=…` sets the operations per seed.
//!
//! A failure prints the seed and the last steps. Guarantees that one of issue 10's listed
//! defects breaks are checked strictly only once its `KNOWN_DEFECT_*_FIXED` flag below is
//! true; until then the model allows exactly what that defect does and no more.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use weir_core::{
    Binding, Broker, BrokerConfig, Consumer, ConsumerId, Delivery, ExchangeKind, FsyncPolicy,
    ManualClock, Message, QueueSettings, Settlement, StartPosition, SubscribeOptions,
    SubscriptionKind, TopicConfig,
};
use weir_storage::io::sim::{CrashMode, SimStorage};

// ---- Known defects of issue 10 (part 1), fixed elsewhere. Set a flag to true once its fix is
// merged: the check it relaxes becomes strict.

/// #4: a consumer lost while holding a message, and a restart, do not raise its delivery count.
/// While false, a delivery's count may be lower than the deliveries the model counted after a
/// consumer loss or a restart (so dead-lettering may need more deliveries).
const KNOWN_DEFECT_4_FIXED: bool = true;
/// #22: an ack is answered before it is durable. While false, a message acked before a crash
/// may be delivered again after it (once per crash; it must then be acked again). Once true,
/// only a settlement answered with an error may be forgotten by a crash, and delivery counts
/// (saved with every settlement and by the timer, not before a hand-out) are at least what
/// the last successful settlement saved.
const KNOWN_DEFECT_22_FIXED: bool = true;

/// #11: dedup state is recorded before the commit, so after a failed write the retry of a
/// message with an id can be confirmed as a duplicate of whatever later took its offset. While
/// false, such a confirm is allowed (the message is then simply not stored) — found by the
/// simulation on seed 29. A transaction whose commit failed may end partly visible (seeds 393,
/// 484, 937). A delayed message whose hand-over failed is lost the same way (may
/// never be delivered while false; seeds 592, 678, 5068, 5104, 5162; `sim_regressions.rs`).
const KNOWN_DEFECT_11_FIXED: bool = true;

/// #2: a delayed message handed over more than the dedup window before a restart is handed
/// over again after it. While false, a delayed message may be stored twice after a restart
/// (never more often than the restarts since its hand-over, and never early).
const KNOWN_DEFECT_2_FIXED: bool = true;

// Found by this simulation and fixed since (each seed is a regression): a cancel after a
// failed hand-over (seed 102), a dead letter stored twice after an append or settlement in
// doubt (seeds 95, 4183, 8892), a commit applied again after a failed append (seeds 128, 9150).

/// Seeds run by default (CI): a few hundred, well under a minute.
const DEFAULT_SEEDS: u64 = 200;
/// Operations per seed by default.
const DEFAULT_STEPS: usize = 120;

const START_MS: i64 = 1_700_000_000_000;
const TOPIC: &str = "orders";
const QUEUE_GROUP: &str = "workers";
const DLQ_TOPIC: &str = "orders.workers.dlq";
const PARTITIONS: u32 = 2;
const KEYS: u64 = 4;
const MAX_DELIVERIES: u32 = 3;
const ACK_TIMEOUT_MS: i64 = 2_000;
const CONSUMERS: usize = 3;

// ---- Randomness: SplitMix64, so a seed means the same run on every platform.

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---- What happened, counted.

#[derive(Default, Debug, Clone)]
struct Counts {
    seeds: u64,
    steps: u64,
    operations: BTreeMap<&'static str, u64>,
    faults: BTreeMap<&'static str, u64>,
    published: u64,
    delivered: u64,
    acked: u64,
    dead_lettered: u64,
    routed: u64,
    stream_delivered: u64,
    redriven: u64,
    retention_vanished: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        self.seeds += other.seeds;
        self.steps += other.steps;
        for (name, count) in &other.operations {
            *self.operations.entry(name).or_default() += count;
        }
        for (name, count) in &other.faults {
            *self.faults.entry(name).or_default() += count;
        }
        self.published += other.published;
        self.delivered += other.delivered;
        self.acked += other.acked;
        self.dead_lettered += other.dead_lettered;
        self.routed += other.routed;
        self.stream_delivered += other.stream_delivered;
        self.redriven += other.redriven;
        self.retention_vanished += other.retention_vanished;
    }
}

// ---- The model of one queue subscription's view of one message.

#[derive(Debug, Clone, Default)]
struct Tracked {
    /// Where the message was delivered from.
    place: Option<(u32, u64)>,
    /// Deliveries so far that count (released ones excluded).
    counted: u32,
    /// The count the broker gave its last delivery (less one if it was released): what it
    /// decides dead-lettering by.
    last_count: u32,
    /// A crash since the last delivery: the broker's count may be higher than `counted` (an
    /// upper bound survives restarts).
    crashed: bool,
    /// The consumer holding it and when its ack timeout runs out.
    in_flight: Option<(usize, i64)>,
    acked: bool,
    /// Acked, but a crash since then may have forgotten it (`KNOWN_DEFECT_22_FIXED`).
    ack_may_be_lost: bool,
    /// Deliveries counted when a settlement last answered success: its save wrote every count
    /// taken before it, so after a crash the broker's count is at least this.
    durable_counted: u32,
    /// Acked, but the answer was an error (its save failed): not durable until a later save
    /// succeeds.
    ack_unsaved: bool,
    /// Dead (rejected or out of deliveries) and not saved as such by a successful settlement
    /// since: a crash may forget it, so it may be delivered again.
    dead_unsaved: bool,
    /// Rejected or out of deliveries: must reach the dead-letter topic, and never come back.
    dead: bool,
    /// Seen in the dead-letter topic.
    dead_stored: bool,
    /// Was due for the dead-letter topic at some point (a failed append of it may be stored).
    dead_once: bool,
    /// Not deliverable before this time (nack with delay).
    not_before_ms: i64,
    /// The highest count a released delivery of it had. A release is saved with the acks, so
    /// until #22 is fixed a crash may forget it: the broker then goes on from this count (an
    /// upper bound, as promised) and may dead-letter the message at its next delivery.
    released_count: u32,
}

#[derive(Debug, Clone)]
struct Sent {
    key: u64,
    id: Option<String>,
    /// Where the confirm said it is; `None` while only maybe stored (the publish failed).
    place: Option<(u32, u64)>,
    /// The order of confirms, for per-key order.
    confirm_serial: Option<u64>,
    /// Given up on: confirmed as a duplicate of another message (defect 11).
    abandoned: bool,
    /// A publish of it failed: its place says nothing about order (the failed attempt may
    /// have been stored before messages confirmed since, or not).
    retried: bool,
    /// Scheduled for later rather than published.
    delayed: Option<Delayed>,
    /// When it was first sent: a retry with its id is deduplicated only within the window.
    first_sent_ms: i64,
}

#[derive(Debug, Clone)]
struct Delayed {
    due_ms: i64,
    /// The schedule id, once a `schedule` call answered.
    id: Option<u64>,
    /// The schedule call succeeded and no cancel did: it must be delivered.
    promised: bool,
    /// A cancel succeeded: it must never be delivered.
    cancelled: bool,
    /// First seen in the topic.
    seen: bool,
    /// Restarts since it was first seen (defect 2 may store it again after each).
    restarts_since_seen: u32,
    /// Was due during a tick with faults armed: a failed hand-over may have stored it.
    handover_in_doubt: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxnState {
    Open,
    /// A commit (or a check-back answer "commit") succeeded: every half sent must be visible.
    Committed,
    /// A rollback succeeded: none may ever be visible.
    RolledBack,
    /// A decision failed: all or none.
    InDoubt,
}

#[derive(Debug, Clone)]
struct Txn {
    id: u64,
    /// Halves whose `send_half` succeeded.
    sent: Vec<u64>,
    /// Halves whose `send_half` failed (stored or not).
    maybe: Vec<u64>,
    /// What the producer will answer a check with.
    commit_on_check: bool,
    state: TxnState,
}

/// An idempotent producer writing to one partition: sequences per record, a failed batch
/// retried with the same sequence before anything new.
#[derive(Debug, Clone)]
struct Producer {
    id: u64,
    partition: u32,
    next_sequence: u32,
    /// The batch whose publish failed: (base sequence, messages, first sent).
    pending: Option<(u32, Vec<u64>, i64)>,
    /// A retry was confirmed at places holding other messages (defect 11): the broker's
    /// sequence state and the producer's disagree from then on.
    defect_11_seen: bool,
}

struct Model {
    producers: Vec<Producer>,
    transactions: Vec<Txn>,
    /// Every message ever sent, by number (its payload is `m<number>`).
    sent: BTreeMap<u64, Sent>,
    /// Per queue message number.
    queue: HashMap<u64, Tracked>,
    confirm_serial: u64,
}

impl Model {
    fn tracked(&mut self, number: u64) -> &mut Tracked {
        self.queue.entry(number).or_default()
    }

    /// A settlement was answered with success: its save covered every change made before
    /// it, and wrote whatever an earlier failed save could not.
    fn settlements_saved(&mut self) {
        if !KNOWN_DEFECT_22_FIXED {
            return;
        }
        for tracked in self.queue.values_mut() {
            // After a crash the broker's count is its own until the next delivery shows it.
            if !tracked.crashed {
                tracked.durable_counted = tracked.counted;
            }
            tracked.ack_unsaved = false;
            tracked.dead_unsaved = false;
        }
    }
}

struct SimConsumer {
    consumer: Consumer,
    held: Vec<Delivery>,
}

const PRODUCER_GROUP: &str = "billing";

struct Sim {
    checker: Option<weir_core::TransactionChecker>,
    seed: u64,
    rng: Rng,
    storage: Arc<SimStorage>,
    clock: Arc<ManualClock>,
    broker: Option<Broker>,
    consumers: Vec<Option<SimConsumer>>,
    model: Model,
    counts: Counts,
    trace: VecDeque<String>,
    next_number: u64,
    /// Faults are armed: operations may fail until the next restart.
    faulty: bool,
    dedup_window_ms: i64,
    /// Exchanges, streams, redrive and retention (see `Coverage`).
    cov: Coverage,
}

fn parse_number(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value)
        .ok()?
        .strip_prefix('m')?
        .parse()
        .ok()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        Sim {
            seed,
            rng: Rng(seed),
            storage: SimStorage::new(seed),
            clock: Arc::new(ManualClock::new(START_MS)),
            broker: None,
            checker: None,
            consumers: (0..CONSUMERS).map(|_| None).collect(),
            model: Model {
                producers: Vec::new(),
                transactions: Vec::new(),
                sent: BTreeMap::new(),
                queue: HashMap::new(),
                confirm_serial: 0,
            },
            counts: Counts {
                seeds: 1,
                ..Counts::default()
            },
            trace: VecDeque::new(),
            next_number: 0,
            faulty: false,
            dedup_window_ms: 0,
            cov: Coverage::default(),
        }
    }

    fn note(&mut self, line: String) {
        self.trace.push_back(line);
    }

    fn fail(&self, what: String) -> ! {
        // The whole run when replaying one seed, else its end.
        let keep = if env_u64("SEED").is_some() {
            usize::MAX
        } else {
            40
        };
        let skip = self.trace.len().saturating_sub(keep);
        let trace: Vec<&str> = self.trace.iter().skip(skip).map(String::as_str).collect();
        panic!(
            "seed {}: {what}\nreplay: SEED={} cargo test -p weir-core --test simulation\nlast steps:\n  {}",
            self.seed,
            self.seed,
            trace.join("\n  ")
        );
    }

    fn count(&mut self, operation: &'static str) {
        *self.counts.operations.entry(operation).or_default() += 1;
    }

    fn fault(&mut self, fault: &'static str) {
        *self.counts.faults.entry(fault).or_default() += 1;
    }

    fn now(&self) -> i64 {
        use weir_core::Clock;
        self.clock.now_ms()
    }

    fn broker(&self) -> &Broker {
        self.broker.as_ref().expect("the broker is open")
    }

    fn config(&self) -> BrokerConfig {
        let mut config = BrokerConfig::new(PathBuf::from("/sim"));
        config.clock = self.clock.clone();
        config.storage = self.storage.clone();
        config.background_timers = false;
        config.default_ack_timeout = Duration::from_millis(ACK_TIMEOUT_MS as u64);
        config.default_topic = TopicConfig {
            partitions: 1,
            fsync: FsyncPolicy::Always,
            segment_bytes: 4096,
            ..TopicConfig::default()
        };
        config
    }

    fn queue_options(&self) -> SubscribeOptions {
        SubscribeOptions {
            kind: SubscriptionKind::Queue,
            prefetch: 4,
            ack_timeout: Some(Duration::from_millis(ACK_TIMEOUT_MS as u64)),
            queue: QueueSettings {
                max_deliveries: Some(MAX_DELIVERIES),
                ..QueueSettings::default()
            },
            ..SubscribeOptions::default()
        }
    }

    /// Opens the broker; after a crash with faults still armed it may fail, so faults are
    /// cleared first (a restart is the operator's answer to a poisoned store).
    async fn open(&mut self) {
        self.storage.clear_faults();
        self.faulty = false;
        // A restart takes time. (At the very same millisecond, transaction ids repeat: they
        // start from the clock, not above the stored ones — seed 573, noted in the report.)
        self.clock
            .advance(Duration::from_millis(1 + self.rng.below(50)));
        let broker = match Broker::open(self.config()).await {
            Ok(broker) => broker,
            Err(error) => self.fail(format!("the broker does not open: {error}")),
        };
        self.checker = Some(broker.register_transaction_checker(PRODUCER_GROUP));
        self.broker = Some(broker);
        self.coverage_after_open();
    }

    async fn setup(&mut self) {
        self.open().await;
        // A short dedup window in some runs, so restarts come after it.
        let dedup_window_ms = if self.rng.chance(30) { 3_000 } else { 120_000 };
        self.dedup_window_ms = dedup_window_ms as i64;
        let topic = TopicConfig {
            partitions: PARTITIONS,
            fsync: FsyncPolicy::Always,
            segment_bytes: 4096,
            dedup_window_ms,
            ..TopicConfig::default()
        };
        if let Err(error) = self.broker().create_topic(TOPIC, topic).await {
            self.fail(format!("create topic: {error}"));
        }
        let options = self.queue_options();
        match self.broker().subscribe(TOPIC, QUEUE_GROUP, options).await {
            Ok(consumer) => drop(consumer),
            Err(error) => self.fail(format!("create subscription: {error}")),
        }
        self.setup_coverage().await;
    }

    // ---- Operations.

    async fn step(&mut self) {
        self.counts.steps += 1;
        if self.rng.chance(COVERAGE_PERCENT) {
            self.coverage_step().await;
            self.check().await;
            return;
        }
        let roll = self.rng.below(100);
        match roll {
            0..=14 => self.publish().await,
            15..=19 => self.publish_idempotent().await,
            20..=21 => self.schedule().await,
            22 => self.cancel().await,
            23 => self.begin_transaction().await,
            24 => self.decide_transaction().await,
            25..=34 => self.attach().await,
            35..=54 => self.fetch(),
            55..=69 => self.settle().await,
            70..=74 => self.lose_consumer(),
            75..=86 => self.advance().await,
            87..=92 => self.inject_fault(),
            93..=96 => self.crash().await,
            _ => self.restart().await,
        }
        self.check().await;
    }

    async fn publish(&mut self) {
        self.count("publish");
        let now = self.now();
        // A retry of a publish that failed, with its message id, or something new.
        let retry = self
            .model
            .sent
            .iter()
            .filter(|(_, sent)| {
                sent.place.is_none()
                    && sent.id.is_some()
                    && !sent.abandoned
                    && now < sent.first_sent_ms + self.dedup_window_ms - 1_000
            })
            .map(|(number, _)| *number)
            .next();
        let numbers: Vec<u64> = match retry {
            Some(number) if self.rng.chance(60) => {
                self.count("publish retry with id");
                vec![number]
            }
            _ => {
                let with_id = self.rng.chance(40);
                let count = if with_id { 1 } else { 1 + self.rng.below(3) };
                let key = self.rng.below(KEYS);
                (0..count)
                    .map(|_| {
                        let number = self.next_number;
                        self.next_number += 1;
                        let id = with_id.then(|| format!("id-{number}"));
                        self.model.sent.insert(
                            number,
                            Sent {
                                key,
                                id,
                                place: None,
                                confirm_serial: None,
                                abandoned: false,
                                retried: false,
                                delayed: None,
                                first_sent_ms: now,
                            },
                        );
                        number
                    })
                    .collect()
            }
        };
        let messages: Vec<Message> = numbers
            .iter()
            .map(|number| {
                let sent = &self.model.sent[number];
                let mut message =
                    Message::new(format!("m{number}")).with_key(format!("k{}", sent.key));
                if let Some(id) = &sent.id {
                    message = message.with_header("weir.id", id.clone());
                }
                message
            })
            .collect();
        let result = self.broker().publish_messages(TOPIC, None, &messages).await;
        match result {
            Ok(confirm) => {
                self.note(format!("publish {numbers:?} -> {confirm:?}"));
                self.counts.published += numbers.len() as u64;
                let duplicates = confirm.duplicates.len();
                let appended: Vec<(u32, u64)> = confirm
                    .ranges
                    .iter()
                    .flat_map(|range| {
                        (range.base_offset..=range.last_offset)
                            .map(|offset| (range.partition, offset))
                    })
                    .collect();
                if appended.len() + duplicates != numbers.len() {
                    self.fail(format!("publish of {numbers:?} confirmed {confirm:?}"));
                }
                let places: Vec<(u32, u64)> = if duplicates == 0 {
                    appended
                } else {
                    // Only single-message batches carry ids.
                    vec![(
                        confirm.duplicates[0].partition,
                        confirm.duplicates[0].offset,
                    )]
                };
                for (number, place) in numbers.iter().zip(places) {
                    if duplicates > 0 && self.number_at(place) != Some(*number) {
                        if KNOWN_DEFECT_11_FIXED {
                            self.fail(format!(
                                "m{number} confirmed as a duplicate at {place:?}, which holds {:?}",
                                self.number_at(place)
                            ));
                        }
                        self.note(format!("defect 11: m{number} confirmed as another message"));
                        self.count("defect 11 seen");
                        self.model.sent.get_mut(number).expect("sent").abandoned = true;
                        continue;
                    }
                    self.model.confirm_serial += 1;
                    let serial = self.model.confirm_serial;
                    let sent = self.model.sent.get_mut(number).expect("sent");
                    if let Some(earlier) = sent.place
                        && earlier != place
                    {
                        let message = format!(
                            "m{number} was confirmed at {earlier:?}, its retry at {place:?}"
                        );
                        self.fail(message);
                    }
                    sent.place = Some(place);
                    sent.confirm_serial.get_or_insert(serial);
                }
            }
            Err(error) => {
                self.note(format!("publish {numbers:?} failed: {error}"));
                for number in &numbers {
                    let sent = self.model.sent.get_mut(number).expect("sent");
                    sent.retried = true;
                }
                if !self.faulty {
                    self.fail(format!("publish failed with no fault armed: {error}"));
                }
            }
        }
    }

    /// An idempotent producer sends a batch (or retries its failed one).
    async fn publish_idempotent(&mut self) {
        if self.model.producers.is_empty() || self.rng.chance(5) {
            let id = 1 + self.model.producers.len() as u64 + 1000 * self.seed;
            let partition = self.rng.below(u64::from(PARTITIONS)) as u32;
            self.model.producers.push(Producer {
                id,
                partition,
                next_sequence: 0,
                pending: None,
                defect_11_seen: false,
            });
        }
        let index = self.rng.below(self.model.producers.len() as u64) as usize;
        let now = self.now();
        let mut producer = self.model.producers[index].clone();
        // A failed batch older than the dedup window cannot be retried safely: start afresh.
        if producer
            .pending
            .as_ref()
            .is_some_and(|(_, _, sent_ms)| now >= sent_ms + self.dedup_window_ms - 1_000)
        {
            producer.pending = None;
            producer.id += 1_000_000;
            producer.next_sequence = 0;
        }
        let (base_sequence, numbers) = match producer.pending.clone() {
            Some((base_sequence, numbers, _)) => {
                self.count("idempotent producer retry");
                (base_sequence, numbers)
            }
            None => {
                self.count("idempotent producer batch");
                let count = 1 + self.rng.below(3);
                let numbers: Vec<u64> = (0..count)
                    .map(|_| {
                        let number = self.new_message(100 + producer.id);
                        self.model.sent.get_mut(&number).expect("sent").retried = false;
                        number
                    })
                    .collect();
                producer.pending = Some((producer.next_sequence, numbers.clone(), now));
                (producer.next_sequence, numbers)
            }
        };
        let mut builder = weir_core::BatchBuilder::new();
        builder.producer(producer.id, base_sequence);
        for number in &numbers {
            builder.push(now, None, &[], format!("m{number}").as_bytes());
        }
        let result = self
            .broker()
            .publish(TOPIC, Some(producer.partition), builder.finish())
            .await;
        self.note(format!(
            "producer {} seq {base_sequence} {numbers:?} to {}: {result:?}",
            producer.id, producer.partition
        ));
        match result {
            Ok(confirm) => {
                let mut places: Vec<(u32, u64)> = confirm
                    .ranges
                    .iter()
                    .flat_map(|range| {
                        (range.base_offset..=range.last_offset)
                            .map(|offset| (range.partition, offset))
                    })
                    .collect();
                places.extend(
                    confirm
                        .duplicates
                        .iter()
                        .map(|duplicate| (duplicate.partition, duplicate.offset)),
                );
                if places.len() != numbers.len() {
                    self.fail(format!("producer batch {numbers:?} confirmed {confirm:?}"));
                }
                producer.pending = None;
                producer.next_sequence = base_sequence + numbers.len() as u32;
                self.counts.published += numbers.len() as u64;
                for (number, place) in numbers.iter().zip(places) {
                    if !confirm.duplicates.is_empty() && self.number_at(place) != Some(*number) {
                        if KNOWN_DEFECT_11_FIXED {
                            self.fail(format!(
                                "m{number} confirmed as a retry at {place:?}, which holds {:?}",
                                self.number_at(place)
                            ));
                        }
                        self.note(format!("defect 11: m{number} confirmed as another message"));
                        self.model.sent.get_mut(number).expect("sent").abandoned = true;
                        producer.defect_11_seen = true;
                        continue;
                    }
                    self.model.confirm_serial += 1;
                    let serial = self.model.confirm_serial;
                    let sent = self.model.sent.get_mut(number).expect("sent");
                    if let Some(earlier) = sent.place
                        && earlier != place
                    {
                        let message = format!(
                            "m{number} was confirmed at {earlier:?}, its retry at {place:?}"
                        );
                        self.fail(message);
                    }
                    sent.place = Some(place);
                    sent.confirm_serial.get_or_insert(serial);
                }
            }
            Err(weir_core::Error::InvalidArgument(_))
                if producer.defect_11_seen && !KNOWN_DEFECT_11_FIXED =>
            {
                // Defect 11 told it a batch was stored that was not: start afresh.
                producer.pending = None;
                producer.id += 1_000_000;
                producer.next_sequence = 0;
                producer.defect_11_seen = false;
            }
            Err(error) => {
                if !self.faulty {
                    self.fail(format!(
                        "producer publish failed with no fault armed: {error}"
                    ));
                }
                for number in &numbers {
                    self.model.sent.get_mut(number).expect("sent").retried = true;
                }
            }
        }
        self.model.producers[index] = producer;
    }

    /// A producer schedules a message for later.
    async fn schedule(&mut self) {
        self.count("schedule delayed");
        let number = self.next_number;
        self.next_number += 1;
        let key = self.rng.below(KEYS);
        let delay = self.rng.below(8_000);
        let now = self.now();
        self.model.sent.insert(
            number,
            Sent {
                key,
                id: None,
                place: None,
                confirm_serial: None,
                abandoned: false,
                retried: true,
                delayed: Some(Delayed {
                    due_ms: now + delay as i64,
                    id: None,
                    promised: false,
                    cancelled: false,
                    seen: false,
                    restarts_since_seen: 0,
                    handover_in_doubt: false,
                }),
                first_sent_ms: now,
            },
        );
        let mut builder = weir_core::BatchBuilder::new();
        let key_bytes = format!("k{key}");
        builder.push(
            now,
            Some(key_bytes.as_bytes()),
            &[],
            format!("m{number}").as_bytes(),
        );
        let result = self
            .broker()
            .publish_delayed(
                TOPIC,
                None,
                builder.finish(),
                Duration::from_millis(delay),
                None,
            )
            .await;
        self.note(format!("schedule m{number} in {delay} ms: {result:?}"));
        match result {
            Ok(scheduled) => {
                if scheduled.deliver_at_ms != now + delay as i64 {
                    self.fail(format!(
                        "m{number} scheduled at the wrong time: {scheduled:?}"
                    ));
                }
                let delayed = self
                    .model
                    .sent
                    .get_mut(&number)
                    .and_then(|sent| sent.delayed.as_mut());
                let delayed = delayed.expect("delayed");
                delayed.id = Some(scheduled.id);
                delayed.promised = true;
            }
            Err(error) if !self.faulty => {
                self.fail(format!("schedule failed with no fault armed: {error}"))
            }
            Err(_) => {}
        }
    }

    /// A producer cancels a scheduled message that may not be due yet.
    async fn cancel(&mut self) {
        let candidates: Vec<(u64, u64)> = self
            .model
            .sent
            .iter()
            .filter_map(|(number, sent)| {
                let delayed = sent.delayed.as_ref()?;
                (delayed.promised && !delayed.seen).then_some((*number, delayed.id?))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        self.count("cancel delayed");
        let (number, id) = candidates[self.rng.below(candidates.len() as u64) as usize];
        let result = self.broker().cancel_scheduled(id).await;
        self.note(format!("cancel m{number} (schedule {id}): {result:?}"));
        let faulty = self.faulty;
        let delayed = self
            .model
            .sent
            .get_mut(&number)
            .and_then(|sent| sent.delayed.as_mut());
        let delayed = delayed.expect("delayed");
        match result {
            Ok(_) => {
                delayed.promised = false;
                delayed.cancelled = true;
            }
            // Too late (being handed over) or already handed over: it must arrive.
            Err(weir_core::Error::NotFound(_)) => {}
            // Failed: it may or may not be cancelled.
            Err(error) => {
                delayed.promised = false;
                if !faulty {
                    self.fail(format!("cancel failed with no fault armed: {error}"));
                }
            }
        }
    }

    fn new_message(&mut self, key: u64) -> u64 {
        let number = self.next_number;
        self.next_number += 1;
        let now = self.now();
        self.model.sent.insert(
            number,
            Sent {
                key,
                id: None,
                place: None,
                confirm_serial: None,
                abandoned: false,
                retried: true,
                delayed: None,
                first_sent_ms: now,
            },
        );
        number
    }

    /// A producer starts a transaction and sends one or two half messages.
    async fn begin_transaction(&mut self) {
        self.count("transaction begin and send halves");
        let timeout = Duration::from_millis(1_000 + self.rng.below(3_000));
        let id = match self
            .broker()
            .begin_transaction(PRODUCER_GROUP, Some(timeout))
        {
            Ok(id) => id,
            Err(error) if !self.faulty => self.fail(format!("begin transaction: {error}")),
            Err(_) => return,
        };
        let mut txn = Txn {
            id,
            sent: Vec::new(),
            maybe: Vec::new(),
            commit_on_check: self.rng.chance(50),
            state: TxnState::Open,
        };
        for _ in 0..1 + self.rng.below(2) {
            let key = self.rng.below(KEYS);
            let number = self.new_message(key);
            let mut builder = weir_core::BatchBuilder::new();
            let key_bytes = format!("k{key}");
            builder.push(
                self.now(),
                Some(key_bytes.as_bytes()),
                &[],
                format!("m{number}").as_bytes(),
            );
            let result = self
                .broker()
                .send_half(id, TOPIC, None, builder.finish())
                .await;
            self.note(format!("transaction {id} half m{number}: {result:?}"));
            match result {
                Ok(()) => txn.sent.push(number),
                Err(error) if !self.faulty => {
                    self.fail(format!("send_half failed with no fault armed: {error}"))
                }
                Err(_) => txn.maybe.push(number),
            }
        }
        self.model.transactions.push(txn);
    }

    /// A producer commits or rolls back one of its open transactions.
    async fn decide_transaction(&mut self) {
        let open: Vec<usize> = (0..self.model.transactions.len())
            .filter(|&index| self.model.transactions[index].state == TxnState::Open)
            .collect();
        if open.is_empty() {
            return;
        }
        let index = open[self.rng.below(open.len() as u64) as usize];
        let commit = self.rng.chance(60);
        self.decide(index, commit, "producer").await;
    }

    async fn decide(&mut self, index: usize, commit: bool, who: &'static str) {
        let id = self.model.transactions[index].id;
        self.count(if commit {
            "transaction commit"
        } else {
            "transaction rollback"
        });
        let result = if commit {
            self.broker().commit_transaction(id).await.map(|_| ())
        } else {
            self.broker().rollback_transaction(id).await
        };
        self.note(format!(
            "{who}: transaction {id} commit={commit}: {result:?}"
        ));
        let txn = &mut self.model.transactions[index];
        match result {
            Ok(()) => {
                txn.state = if commit {
                    TxnState::Committed
                } else {
                    TxnState::RolledBack
                };
            }
            // Settled already (by a check-back rollback, or a lost open after a crash).
            Err(weir_core::Error::NotFound(_) | weir_core::Error::InvalidArgument(_)) => {
                if txn.state == TxnState::Open {
                    txn.state = TxnState::InDoubt;
                }
            }
            Err(error) => {
                txn.state = TxnState::InDoubt;
                if !self.faulty {
                    self.fail(format!(
                        "{who} decision failed with no fault armed: {error}"
                    ));
                }
            }
        }
    }

    /// The producer group answers the broker's check-backs.
    async fn answer_checks(&mut self) {
        while let Some(id) = self.checker.as_mut().and_then(|checker| checker.try_next()) {
            self.count("transaction check-back");
            let Some(index) = self.model.transactions.iter().position(|txn| txn.id == id) else {
                self.fail(format!("check-back of unknown transaction {id}"));
            };
            if self.model.transactions[index].state != TxnState::Open {
                continue;
            }
            let commit = self.model.transactions[index].commit_on_check;
            self.decide(index, commit, "check-back").await;
        }
    }

    async fn attach(&mut self) {
        let slot = self.rng.below(CONSUMERS as u64) as usize;
        if self.consumers[slot].is_some() {
            return self.fetch_from(slot);
        }
        self.count("consumer attach");
        let options = self.queue_options();
        match self.broker().subscribe(TOPIC, QUEUE_GROUP, options).await {
            Ok(consumer) => {
                self.note(format!("consumer {slot} attached"));
                self.consumers[slot] = Some(SimConsumer {
                    consumer,
                    held: Vec::new(),
                });
            }
            Err(error) => self.fail(format!("subscribe failed: {error}")),
        }
    }

    fn fetch(&mut self) {
        let slot = self.rng.below(CONSUMERS as u64) as usize;
        self.fetch_from(slot);
    }

    fn fetch_from(&mut self, slot: usize) {
        if self.consumers[slot].is_none() {
            return;
        }
        self.count("fetch");
        let max = 1 + self.rng.below(4) as usize;
        let consumer = &self.consumers[slot].as_ref().expect("present").consumer;
        let deliveries = match consumer.try_next(max) {
            Ok(deliveries) => deliveries,
            Err(error) => {
                self.note(format!("consumer {slot} fetch failed: {error}"));
                if !self.faulty {
                    self.fail(format!("fetch failed with no fault armed: {error}"));
                }
                return;
            }
        };
        let now = self.now();
        for delivery in &deliveries {
            self.counts.delivered += 1;
            self.on_delivery(slot, delivery, now);
        }
        if let Some(consumer) = &mut self.consumers[slot] {
            consumer.held.extend(deliveries);
        }
    }

    /// Checks one delivery against the model and records it.
    fn on_delivery(&mut self, slot: usize, delivery: &Delivery, now: i64) {
        let Some(number) = parse_number(&delivery.record.value) else {
            self.fail(format!(
                "delivered a message that was never sent: {delivery:?}"
            ));
        };
        let place = (delivery.partition, delivery.record.offset);
        self.note(format!(
            "consumer {slot} got m{number} at {place:?} count {}",
            delivery.delivery_count
        ));
        let Some(sent) = self.model.sent.get(&number) else {
            self.fail(format!("delivered m{number}, never sent"));
        };
        if let Some(confirmed) = sent.place
            && confirmed != place
        {
            self.fail(format!(
                "m{number} delivered from {place:?}, confirmed at {confirmed:?}"
            ));
        }
        let is_delayed = sent.delayed.is_some();
        let mut tracked = self.model.tracked(number).clone();
        if tracked.place.is_some_and(|earlier| earlier != place) {
            // Only a delayed message stored twice (defect 2) has two places; the queue tracks
            // each copy, so start over with this one.
            if !self.may_be_stored_twice(is_delayed) {
                self.fail(format!(
                    "m{number} delivered from {place:?} and before from {:?}",
                    tracked.place
                ));
            }
            self.note(format!(
                "defect 2: m{number} delivered from its second copy"
            ));
            // The copies share a number but not a delivery count: counts say nothing here.
            tracked = Tracked {
                crashed: true,
                ..Tracked::default()
            };
            *self.model.tracked(number) = tracked.clone();
        }
        self.model.tracked(number).place = Some(place);
        if tracked.dead {
            self.fail(format!(
                "m{number} delivered again after it was dead-lettered"
            ));
        }
        if tracked.acked && !tracked.ack_may_be_lost {
            self.fail(format!("m{number} delivered again after it was acked"));
        }
        if let Some((holder, deadline)) = tracked.in_flight
            && now < deadline
        {
            self.fail(format!(
                "m{number} delivered to consumer {slot} while consumer {holder} holds it until {deadline} (now {now})"
            ));
        }
        if now < tracked.not_before_ms {
            self.fail(format!(
                "m{number} redelivered at {now}, before its nack delay ends at {}",
                tracked.not_before_ms
            ));
        }
        let count = delivery.delivery_count;
        if count == 0 || count > MAX_DELIVERIES {
            self.fail(format!(
                "m{number} delivered with count {count}; max_deliveries is {MAX_DELIVERIES}"
            ));
        }
        let expected = tracked.counted + 1;
        let right = if !KNOWN_DEFECT_4_FIXED {
            // The broker may forget deliveries, never invent them.
            count <= expected || tracked.crashed
        } else if tracked.crashed {
            // Counts are saved with every settlement (and by the timer), not before a
            // hand-out: a crash may forget the hand-outs since the last successful settlement.
            // Until acks are durable before their answer (#22) it may forget more.
            count > tracked.durable_counted || !KNOWN_DEFECT_22_FIXED
        } else {
            count == expected
        };
        if !right {
            self.fail(format!(
                "m{number} delivered with count {count}; it was delivered {} times before (last count {})",
                tracked.counted, tracked.last_count
            ));
        }
        let tracked = self.model.tracked(number);
        // After a crash the broker's count is the one to go on from (an upper bound once
        // #22 makes saves durable before answers; until then it may be lower).
        tracked.counted = if tracked.crashed {
            count
        } else {
            tracked.counted + 1
        };
        tracked.last_count = count;
        tracked.crashed = false;
        tracked.in_flight = Some((slot, now + ACK_TIMEOUT_MS));
        if tracked.acked {
            // Its ack was lost in a crash (allowed while defect 22 is open): ack it again.
            tracked.acked = false;
            tracked.ack_may_be_lost = false;
        }
    }

    /// A consumer acks, nacks, rejects or releases some of what it holds.
    async fn settle(&mut self) {
        let slot = self.rng.below(CONSUMERS as u64) as usize;
        let now = self.now();
        let Some(consumer) = &mut self.consumers[slot] else {
            return;
        };
        // Deliveries whose ack timeout ran out are not the consumer's any more.
        consumer.held.retain(|delivery| {
            parse_number(&delivery.record.value).is_some_and(|number| {
                self.model
                    .queue
                    .get(&number)
                    .and_then(|tracked| tracked.in_flight)
                    .is_some_and(|(holder, deadline)| holder == slot && now < deadline)
            })
        });
        if consumer.held.is_empty() {
            return;
        }
        let index = self.rng.below(consumer.held.len() as u64) as usize;
        let delivery = consumer.held.remove(index);
        let number = parse_number(&delivery.record.value).expect("checked on delivery");
        let id = delivery.id();
        let action = self.rng.below(100);
        let consumer = &self.consumers[slot].as_ref().expect("present").consumer;
        // A held delivery was delivered, so no answer may call it unknown.
        let known = |result: weir_core::Result<Vec<Settlement>>| -> Result<(), String> {
            match result {
                Ok(settlements) if settlements.contains(&Settlement::Unknown) => Err(format!(
                    "a held delivery was reported unknown: {settlements:?}"
                )),
                Ok(_) => Ok(()),
                Err(error) => Err(error.to_string()),
            }
        };
        let (name, result) = match action {
            0..=59 => ("ack", known(consumer.ack(&[id]).await)),
            60..=79 => {
                let delay = if self.rng.chance(50) {
                    0
                } else {
                    1 + self.rng.below(3_000)
                };
                let result = known(
                    consumer
                        .nack(&[id], true, Duration::from_millis(delay))
                        .await,
                );
                if result.is_ok() {
                    let tracked = self.model.tracked(number);
                    tracked.not_before_ms = now + delay as i64;
                }
                ("nack", result)
            }
            80..=89 => (
                "reject",
                known(consumer.nack(&[id], false, Duration::ZERO).await),
            ),
            _ => (
                "release",
                consumer
                    .release(&[id])
                    .await
                    .map_err(|error| error.to_string()),
            ),
        };
        self.count(name);
        self.note(format!("consumer {slot} {name} m{number}: {result:?}"));
        // The change takes effect in memory either way; an error says it is not durable, and
        // only a fault may cause one (a failed save, or the store poisoned by one).
        let saved = result.is_ok();
        if let Err(error) = result
            && !self.faulty
        {
            self.fail(format!("{name} of a held delivery failed: {error}"));
        }
        let tracked = self.model.tracked(number);
        tracked.in_flight = None;
        match name {
            "ack" => {
                tracked.acked = true;
                tracked.ack_unsaved = !saved;
                self.counts.acked += 1;
            }
            "nack" => {
                if tracked.last_count >= MAX_DELIVERIES {
                    tracked.dead = true;
                    tracked.dead_unsaved = !saved;
                }
            }
            "reject" => {
                tracked.dead = true;
                tracked.dead_unsaved = !saved;
            }
            _ => {
                // Released: that delivery does not count.
                tracked.released_count = tracked.released_count.max(tracked.last_count);
                tracked.counted -= 1;
                tracked.last_count -= 1;
            }
        }
        if saved {
            self.model.settlements_saved();
        }
    }

    /// A consumer goes away holding what it holds (a crashed client).
    fn lose_consumer(&mut self) {
        let slot = self.rng.below(CONSUMERS as u64) as usize;
        let Some(consumer) = self.consumers[slot].take() else {
            return;
        };
        self.count("consumer lost");
        self.note(format!(
            "consumer {slot} lost holding {}",
            consumer.held.len()
        ));
        drop(consumer);
        for tracked in self.model.queue.values_mut() {
            if tracked.in_flight.is_some_and(|(holder, _)| holder == slot) {
                tracked.in_flight = None;
                if KNOWN_DEFECT_4_FIXED {
                    // A lost consumer's delivery counts like a failed one (saved later).
                    if !tracked.dead && tracked.last_count >= MAX_DELIVERIES {
                        tracked.dead = true;
                        tracked.dead_unsaved = true;
                    }
                } else {
                    // The broker may or may not count it (defect 4).
                    tracked.dead_once |= tracked.last_count >= MAX_DELIVERIES;
                }
            }
        }
    }

    async fn advance(&mut self) {
        self.count("advance clock and tick");
        let by = self.rng.below(1_500);
        self.clock.advance(Duration::from_millis(by));
        let now = self.now();
        self.note(format!("advance {by} ms to {now}; tick"));
        if self.faulty {
            for sent in self.model.sent.values_mut() {
                if let Some(delayed) = sent.delayed.as_mut()
                    && !delayed.seen
                    && delayed.due_ms <= now
                {
                    delayed.handover_in_doubt = true;
                }
            }
        }
        self.broker().tick().await;
        self.answer_checks().await;
        // Timed-out deliveries: counted; out of deliveries means dead.
        for tracked in self.model.queue.values_mut() {
            if tracked
                .in_flight
                .is_some_and(|(_, deadline)| now >= deadline)
            {
                tracked.in_flight = None;
                if !tracked.dead && tracked.last_count >= MAX_DELIVERIES {
                    tracked.dead = true;
                    tracked.dead_unsaved = true;
                }
            }
        }
    }

    fn inject_fault(&mut self) {
        let directories = self.storage.directories();
        if directories.is_empty() {
            return;
        }
        let (path, directory) = &directories[self.rng.below(directories.len() as u64) as usize];
        let kind = self.rng.below(3);
        let ahead = 1 + self.rng.below(6);
        match kind {
            0 => {
                self.fault("failed operation (fsync or write)");
                directory.fail_operation(directory.operation_count() + ahead);
            }
            1 => {
                self.fault("disk full at a write");
                directory.fail_write_with_storage_full(directory.write_count() + ahead);
            }
            _ => {
                self.fault("disk full (capacity)");
                directory.set_capacity(Some(directory.used_bytes() + self.rng.below(4096)));
            }
        }
        self.note(format!(
            "fault {kind} armed in {} at +{ahead}",
            path.display()
        ));
        self.faulty = true;
    }

    fn drop_consumers(&mut self) {
        self.drop_coverage_consumers();
        self.checker.take();
        for slot in &mut self.consumers {
            slot.take();
        }
    }

    /// A crash: power loss (unsynced data dropped or torn) or a killed process.
    async fn crash(&mut self) {
        let mode = match self.rng.below(3) {
            0 => CrashMode::DropUnsynced,
            1 => CrashMode::TearUnsynced,
            _ => CrashMode::KeepWritten,
        };
        self.fault(match mode {
            CrashMode::DropUnsynced => "crash: power loss",
            CrashMode::TearUnsynced => "crash: power loss, torn writes",
            _ => "crash: process killed",
        });
        self.note(format!("crash {mode:?}"));
        self.storage.crash(mode);
        // The old broker's handles are dead: nothing it does from now on reaches the disk.
        self.drop_consumers();
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
        self.after_restart(true);
        self.open().await;
    }

    async fn restart(&mut self) {
        self.count("clean restart");
        self.note("clean restart".into());
        self.drop_consumers();
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
        // A shutdown with faults armed may have lost something: count it as a crash.
        let crashed = self.faulty;
        self.after_restart(crashed);
        self.open().await;
    }

    /// What a restart may change in the model: nothing is in flight any more; after a crash,
    /// counts are at least what they were and (defect 22) acks may be forgotten.
    fn after_restart(&mut self, crashed: bool) {
        self.coverage_after_restart(crashed);
        for sent in self.model.sent.values_mut() {
            if let Some(delayed) = sent.delayed.as_mut()
                && delayed.seen
            {
                delayed.restarts_since_seen += 1;
            }
        }
        for tracked in self.model.queue.values_mut() {
            if tracked.in_flight.take().is_some() {
                // A delivery cut short by a restart counts like a lost consumer's: dead-lettered
                // once the broker reads its count, if that count was saved.
                if KNOWN_DEFECT_4_FIXED {
                    if !tracked.dead && tracked.last_count >= MAX_DELIVERIES {
                        tracked.dead = true;
                        tracked.dead_unsaved =
                            crashed && tracked.durable_counted < tracked.last_count;
                    }
                } else {
                    tracked.dead_once |= tracked.last_count >= MAX_DELIVERIES;
                }
            }
            if crashed || !KNOWN_DEFECT_4_FIXED {
                tracked.crashed = true;
            }
            // Nack delays live in memory: a restart may redeliver at once (at least once).
            tracked.not_before_ms = 0;
            if crashed
                && tracked.dead
                && !tracked.dead_stored
                && (tracked.dead_unsaved || !KNOWN_DEFECT_22_FIXED)
            {
                // A reject (or exhaustion) not stored yet is a settlement like an ack.
                tracked.dead = false;
                tracked.dead_once = true;
            }
            if crashed && !KNOWN_DEFECT_22_FIXED && tracked.released_count >= MAX_DELIVERIES {
                // Its release may be forgotten: out of deliveries, it may be dead-lettered
                // (seeds 1915, 8793, 8892, 9655).
                tracked.dead_once = true;
            }
            if crashed && tracked.acked && (tracked.ack_unsaved || !KNOWN_DEFECT_22_FIXED) {
                tracked.ack_may_be_lost = true;
                // Its last delivery then looks interrupted: out of deliveries, it may be
                // dead-lettered instead of delivered.
                tracked.dead_once |= tracked.last_count >= MAX_DELIVERIES;
            }
        }
    }

    // ---- Checks.

    /// Whether a known defect lets `number` be stored twice: a delayed message (#2).
    fn may_be_stored_twice(&self, is_delayed: bool) -> bool {
        is_delayed && !KNOWN_DEFECT_2_FIXED
    }

    fn number_at(&self, (partition, offset): (u32, u64)) -> Option<u64> {
        let records = self.broker().read(TOPIC, partition, offset, 1).ok()?;
        let record = records.first().filter(|record| record.offset == offset)?;
        parse_number(&record.value)
    }

    /// Every record of every partition of `topic`, as (partition, offset, number).
    fn read_topic(&self, topic: &str) -> Vec<(u32, u64, u64)> {
        let broker = self.broker();
        let Ok(info) = broker.topic(topic) else {
            return Vec::new();
        };
        let mut records = Vec::new();
        for partition in info.partitions {
            let mut offset = partition.start_offset;
            loop {
                let batch = match broker.read(topic, partition.partition, offset, 1000) {
                    Ok(batch) => batch,
                    Err(error) => {
                        self.fail(format!("reading {topic}/{}: {error}", partition.partition))
                    }
                };
                if batch.is_empty() {
                    break;
                }
                for record in batch {
                    offset = record.offset + 1;
                    let Some(number) = parse_number(&record.value) else {
                        self.fail(format!("unknown record in {topic}: {record:?}"));
                    };
                    records.push((partition.partition, record.offset, number));
                }
            }
        }
        records
    }

    async fn check(&mut self) {
        // Every confirmed message is stored once, at its confirmed place.
        let records = self.read_topic(TOPIC);
        let mut places: BTreeMap<u64, Vec<(u32, u64)>> = BTreeMap::new();
        for &(partition, offset, number) in &records {
            places.entry(number).or_default().push((partition, offset));
        }
        let now = self.now();
        for (number, found) in &places {
            let delayed = self
                .model
                .sent
                .get(number)
                .and_then(|sent| sent.delayed.clone());
            if found.len() > 1 {
                // Defect 2: handed over again after a restart beyond the dedup window, or
                // after a failed hand-over that was stored after all.
                let allowed = !KNOWN_DEFECT_2_FIXED
                    && delayed.as_ref().is_some_and(|delayed| {
                        found.len() as u32
                            <= 1 + delayed.restarts_since_seen
                                + u32::from(delayed.handover_in_doubt)
                    });
                if !allowed {
                    self.fail(format!(
                        "m{number} is stored {} times: {found:?}",
                        found.len()
                    ));
                }
            }
            if let Some(delayed) = delayed {
                if delayed.cancelled {
                    self.fail(format!(
                        "m{number} was delivered after its cancel succeeded"
                    ));
                }
                if !delayed.seen {
                    if now < delayed.due_ms {
                        self.fail(format!(
                            "m{number} was delivered at {now}, before it was due at {}",
                            delayed.due_ms
                        ));
                    }
                    let sent = self.model.sent.get_mut(number).expect("sent");
                    sent.delayed.as_mut().expect("delayed").seen = true;
                }
            }
        }
        let mut last_by_key: HashMap<u64, (u64, u32, u64)> = HashMap::new();
        let mut confirmed: Vec<(u64, u64)> = self
            .model
            .sent
            .iter()
            .filter_map(|(number, sent)| sent.confirm_serial.map(|serial| (serial, *number)))
            .collect();
        confirmed.sort_unstable();
        for (_, number) in confirmed {
            let sent = &self.model.sent[&number];
            let place = sent.place.expect("a confirmed message has a place");
            match places.get(&number) {
                Some(found) if found[0] == place => {}
                Some(found) => self.fail(format!(
                    "m{number} confirmed at {place:?} but stored at {found:?}"
                )),
                None => self.fail(format!("m{number} confirmed at {place:?} is lost")),
            }
            // Per-key order: confirms of one key land in one partition, in confirm order.
            if sent.retried {
                continue;
            }
            if let Some(&(earlier, partition, offset)) = last_by_key.get(&sent.key)
                && (partition != place.0 || offset >= place.1)
            {
                self.fail(format!(
                    "key k{}: m{earlier} at {:?} was confirmed before m{number} at {place:?}",
                    sent.key,
                    (partition, offset)
                ));
            }
            last_by_key.insert(sent.key, (number, place.0, place.1));
        }
        // Transactions: a committed one's halves are all visible, a rolled-back one's none.
        for txn in &self.model.transactions {
            let visible = txn
                .sent
                .iter()
                .filter(|number| places.contains_key(number))
                .count();
            let any_visible =
                visible > 0 || txn.maybe.iter().any(|number| places.contains_key(number));
            match txn.state {
                TxnState::Committed if visible != txn.sent.len() => self.fail(format!(
                    "transaction {} committed, but only {visible} of its {} halves are visible",
                    txn.id,
                    txn.sent.len()
                )),
                TxnState::RolledBack if any_visible => self.fail(format!(
                    "transaction {} rolled back, yet its messages are visible",
                    txn.id
                )),
                _ => {}
            }
        }
        // Dead letters: each message at most once, and only one that had to go there.
        let mut dead: BTreeMap<u64, usize> = BTreeMap::new();
        for (_, _, number) in self.read_topic(DLQ_TOPIC) {
            *dead.entry(number).or_default() += 1;
        }
        for (number, copies) in &dead {
            // Copies redriven to their origin left the DLQ, not its log: they are accounted.
            let copies = &copies.saturating_sub(self.redriven_to_origin(*number));
            if *copies == 0 {
                continue;
            }
            let stored = places.get(number).map_or(1, Vec::len);
            if *copies > stored {
                self.fail(format!("m{number} was dead-lettered {copies} times"));
            }
            let tracked = self.model.queue.get(number).cloned().unwrap_or_default();
            if tracked.acked && !tracked.ack_may_be_lost {
                self.fail(format!("m{number} was dead-lettered after its ack"));
            }
            if !tracked.dead && !tracked.dead_once {
                self.fail(format!(
                    "m{number} was dead-lettered before it was due: {tracked:?}"
                ));
            }
            if let Some(tracked) = self.model.queue.get_mut(number) {
                tracked.dead = true;
                tracked.dead_stored = true;
            }
        }
        self.counts.dead_lettered = dead.len() as u64;
        self.check_coverage(&records);
    }

    /// The end of a run: no more faults; time passes and consumers take and ack everything.
    /// Every stored message must then be acked or dead-lettered.
    async fn drain(&mut self) {
        self.note("drain".into());
        self.restart().await;
        self.drop_consumers();
        let options = self.queue_options();
        let consumer = match self.broker().subscribe(TOPIC, QUEUE_GROUP, options).await {
            Ok(consumer) => consumer,
            Err(error) => self.fail(format!("subscribe to drain: {error}")),
        };
        self.consumers[0] = Some(SimConsumer {
            consumer,
            held: Vec::new(),
        });
        for _ in 0..200 {
            self.clock
                .advance(Duration::from_millis(ACK_TIMEOUT_MS as u64));
            self.broker().tick().await;
            let now = self.now();
            for tracked in self.model.queue.values_mut() {
                if tracked
                    .in_flight
                    .is_some_and(|(_, deadline)| now >= deadline)
                {
                    tracked.in_flight = None;
                }
            }
            let deliveries = {
                let consumer = &self.consumers[0].as_ref().expect("drainer").consumer;
                consumer.try_next(100).unwrap_or_default()
            };
            self.counts.delivered += deliveries.len() as u64;
            self.counts.acked += deliveries.len() as u64;
            for delivery in &deliveries {
                self.on_delivery(0, delivery, now);
            }
            let ids: Vec<_> = deliveries.iter().map(Delivery::id).collect();
            if !ids.is_empty() {
                let consumer = &self.consumers[0].as_ref().expect("drainer").consumer;
                if let Err(error) = consumer.ack(&ids).await {
                    self.fail(format!("drain ack: {error}"));
                }
                for delivery in &deliveries {
                    let number = parse_number(&delivery.record.value).expect("checked");
                    let tracked = self.model.tracked(number);
                    tracked.acked = true;
                    tracked.in_flight = None;
                }
            }
            self.check().await;
        }
        let dead: BTreeSet<u64> = self
            .read_topic(DLQ_TOPIC)
            .into_iter()
            .map(|(_, _, number)| number)
            .collect();
        let stored_now: BTreeSet<u64> = self
            .read_topic(TOPIC)
            .into_iter()
            .map(|(_, _, number)| number)
            .collect();
        for txn in &self.model.transactions {
            let visible = txn
                .sent
                .iter()
                .filter(|number| stored_now.contains(number))
                .count();
            // Defect 11: re-applying a commit whose append failed can be "confirmed" as a
            // duplicate of nothing in one partition.
            let partial_allowed = !KNOWN_DEFECT_11_FIXED && txn.state == TxnState::InDoubt;
            if visible != 0 && visible != txn.sent.len() && !partial_allowed {
                self.fail(format!(
                    "transaction {} ended with {visible} of its {} halves visible",
                    txn.id,
                    txn.sent.len()
                ));
            }
        }
        let stored: BTreeSet<u64> = self
            .read_topic(TOPIC)
            .into_iter()
            .map(|(_, _, number)| number)
            .collect();
        for (number, sent) in &self.model.sent {
            if sent.delayed.as_ref().is_some_and(|delayed| {
                // Defect 11 loses a delayed message whose hand-over failed (its retry
                // looks like a duplicate of nothing).
                delayed.promised && (KNOWN_DEFECT_11_FIXED || !delayed.handover_in_doubt)
            }) && !stored.contains(number)
            {
                self.fail(format!("delayed m{number} was never delivered: {sent:?}"));
            }
        }
        for (_, _, number) in self.read_topic(TOPIC) {
            let tracked = self.model.queue.get(&number).cloned().unwrap_or_default();
            if !tracked.acked && !dead.contains(&number) {
                self.fail(format!(
                    "m{number} is stored but was neither acked nor dead-lettered: {tracked:?}"
                ));
            }
            if tracked.dead && !dead.contains(&number) {
                self.fail(format!(
                    "m{number} had to be dead-lettered and is not in the DLQ"
                ));
            }
        }
        self.drain_coverage().await;
        self.drop_consumers();
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await;
        }
    }
}

// ---- Beyond one queue: exchanges, stream subscriptions, DLQ redrive and retention.
//
// These operations have a model of their own (`Coverage`), checked after every step by
// `check_coverage` and at the end by `drain_coverage`. Messages routed to `TOPIC` join the
// queue model above like any other; the rest live in the topics below.

/// Percent of steps that take one of these operations; the others keep their old weights.
const COVERAGE_PERCENT: u64 = 25;
const EXCHANGE: &str = "events";
/// Bound with `*.vip`. Keeps messages [`RETENTION_MS`], in small segments, so they roll.
const VIP_TOPIC: &str = "vip";
/// Bound with `#`, and unbound and bound again as the run goes.
const AUDIT_TOPIC: &str = "audit";
/// Where dead letters go when they are not redriven to their origin.
const RETRY_TOPIC: &str = "orders.retry";
const RETENTION_MS: i64 = 3_000;
/// `order.*` reaches `TOPIC`, `*.vip` reaches [`VIP_TOPIC`], `user.new` only the audit topic.
const ROUTING_KEYS: [&str; 4] = ["order.new", "order.vip", "user.vip", "user.new"];
/// A header that makes routed messages large enough for the retention topic to roll.
const PADDING_BYTES: usize = 400;
/// Stream subscriptions: one on the queue's topic, one on the retention topic.
const STREAMS: [(&str, &str); 2] = [(TOPIC, "auditors"), (VIP_TOPIC, "vip-readers")];
const STREAM_SLOTS: usize = 2;
/// A queue subscription on the retention topic: it must skip what retention deleted.
const VIP_QUEUE_GROUP: &str = "vip-workers";
const DLQ_HEADER_PREFIX: &str = "weir.dlq.";

/// One message published through the exchange.
#[derive(Debug, Clone, Default)]
struct Routed {
    key: u64,
    routing_key: &'static str,
    id: Option<String>,
    first_sent_ms: i64,
    /// Every topic an attempt to publish it was routed to: it may be stored there, nowhere
    /// else.
    allowed: BTreeSet<&'static str>,
    /// Where a confirm placed it, per topic.
    places: BTreeMap<&'static str, (u32, u64)>,
    /// Its last publish failed; it is retried with its id within the dedup window.
    failed: bool,
}

struct StreamSlot {
    consumer: Consumer,
    held: Vec<Delivery>,
}

/// One stream subscription: positions per partition.
struct StreamModel {
    topic: &'static str,
    group: &'static str,
    slots: Vec<Option<StreamSlot>>,
    /// The committed offsets as the running broker holds them.
    committed: Vec<u64>,
    /// Committed offsets no crash may take back: what a clean shutdown saved (and, once #22
    /// is fixed, every commit answered).
    durable: Vec<u64>,
    /// The offset of the partition's next delivery, unless retention deleted it since.
    next: Vec<u64>,
    owners: Vec<Option<ConsumerId>>,
}

#[derive(Default)]
struct Coverage {
    ready: bool,
    routed: BTreeMap<u64, Routed>,
    audit_bound: bool,
    /// A bind or unbind failed: after a restart the binding is what the broker says.
    audit_in_doubt: bool,
    streams: Vec<StreamModel>,
    vip_queue: Option<Consumer>,
    /// Per message: its DLQ copies redriven to the origin (they stay in the DLQ's log).
    redriven_to_origin: BTreeMap<u64, usize>,
    /// Per message: copies the retry topic must hold at least, and may hold at most.
    retry_copies: BTreeMap<u64, (usize, usize)>,
}

impl Sim {
    async fn setup_coverage(&mut self) {
        let dedup_window_ms = self.dedup_window_ms as u64;
        let topic = |partitions, retention_ms| TopicConfig {
            partitions,
            fsync: FsyncPolicy::Always,
            segment_bytes: 4096,
            dedup_window_ms,
            retention_ms,
            ..TopicConfig::default()
        };
        let topics = [
            (VIP_TOPIC, topic(PARTITIONS, Some(RETENTION_MS as u64))),
            (AUDIT_TOPIC, topic(1, None)),
            (RETRY_TOPIC, topic(1, None)),
        ];
        for (name, config) in topics {
            if let Err(error) = self.broker().create_topic(name, config).await {
                self.fail(format!("create topic {name}: {error}"));
            }
        }
        let broker = self.broker();
        let created = broker
            .create_exchange(EXCHANGE, ExchangeKind::Topic, None)
            .await
            .map(drop);
        if let Err(error) = created {
            self.fail(format!("create exchange: {error}"));
        }
        self.cov.audit_bound = self.rng.chance(50);
        let mut bindings = vec![binding(TOPIC, "order.*"), binding(VIP_TOPIC, "*.vip")];
        if self.cov.audit_bound {
            bindings.push(binding(AUDIT_TOPIC, "#"));
        }
        for binding in bindings {
            if let Err(error) = self.broker().bind(EXCHANGE, binding).await {
                self.fail(format!("bind: {error}"));
            }
        }
        for (topic, group) in STREAMS {
            if let Err(error) = self
                .broker()
                .subscribe(topic, group, stream_options())
                .await
            {
                self.fail(format!("create stream subscription {group}: {error}"));
            }
            let partitions = self
                .broker()
                .topic(topic)
                .map_or(0, |info| info.partitions.len());
            self.cov.streams.push(StreamModel {
                topic,
                group,
                slots: (0..STREAM_SLOTS).map(|_| None).collect(),
                committed: vec![0; partitions],
                durable: vec![0; partitions],
                next: vec![0; partitions],
                owners: vec![None; partitions],
            });
        }
        let options = SubscribeOptions {
            prefetch: 8,
            ..SubscribeOptions::default()
        };
        if let Err(error) = self
            .broker()
            .subscribe(VIP_TOPIC, VIP_QUEUE_GROUP, options)
            .await
        {
            self.fail(format!("create subscription {VIP_QUEUE_GROUP}: {error}"));
        }
        self.cov.ready = true;
    }

    async fn coverage_step(&mut self) {
        match self.rng.below(100) {
            0..=29 => self.publish_to_exchange().await,
            30..=34 => self.toggle_audit_binding().await,
            35..=54 => self.stream_fetch().await,
            55..=69 => self.stream_settle().await,
            70..=74 => self.stream_lose(),
            75..=80 => self.retention_queue_fetch().await,
            81..=86 => self.reject_held().await,
            87..=96 => self.redrive().await,
            _ => self.read_from_position(),
        }
    }

    /// The topics a message with `routing_key` goes to now.
    fn routes(&self, routing_key: &str) -> BTreeSet<&'static str> {
        let mut targets = BTreeSet::new();
        if routing_key.starts_with("order.") {
            targets.insert(TOPIC);
        }
        if routing_key.ends_with(".vip") {
            targets.insert(VIP_TOPIC);
        }
        if self.cov.audit_bound {
            targets.insert(AUDIT_TOPIC);
        }
        targets
    }

    /// A producer publishes through the exchange (or retries a failed publish with its id).
    async fn publish_to_exchange(&mut self) {
        let now = self.now();
        let window = self.dedup_window_ms;
        let retry = self
            .cov
            .routed
            .iter()
            .filter(|(_, routed)| {
                routed.failed && routed.id.is_some() && now < routed.first_sent_ms + window - 1_000
            })
            .map(|(number, _)| *number)
            .next();
        let numbers: Vec<u64> = match retry {
            Some(number) if self.rng.chance(60) => {
                self.count("exchange publish retry with id");
                vec![number]
            }
            _ => {
                self.count("exchange publish");
                let routing_key = ROUTING_KEYS[self.rng.below(ROUTING_KEYS.len() as u64) as usize];
                let with_id = self.rng.chance(50);
                let count = if with_id { 1 } else { 1 + self.rng.below(3) };
                let key = self.rng.below(KEYS);
                (0..count)
                    .map(|_| {
                        let number = self.new_message(key);
                        let sent = self.model.sent.get_mut(&number).expect("sent");
                        // Its retries go through the exchange, never straight to the topic.
                        sent.abandoned = true;
                        sent.retried = false;
                        self.cov.routed.insert(
                            number,
                            Routed {
                                key,
                                routing_key,
                                id: with_id.then(|| format!("id-{number}")),
                                first_sent_ms: now,
                                ..Routed::default()
                            },
                        );
                        number
                    })
                    .collect()
            }
        };
        let routing_key = self.cov.routed[&numbers[0]].routing_key;
        let expected = self.routes(routing_key);
        let mandatory = self.rng.chance(30);
        let padding = "p".repeat(PADDING_BYTES);
        let mut builder = weir_core::BatchBuilder::new();
        for number in &numbers {
            let routed = self.cov.routed.get_mut(number).expect("routed");
            routed.allowed.extend(expected.iter().copied());
            let key = format!("k{}", routed.key);
            let mut headers: Vec<(&str, &[u8])> = vec![("pad", padding.as_bytes())];
            if let Some(id) = &routed.id {
                headers.push(("weir.id", id.as_bytes()));
            }
            builder.push(
                now,
                Some(key.as_bytes()),
                &headers,
                format!("m{number}").as_bytes(),
            );
        }
        let result = self
            .broker()
            .publish_to_exchange(EXCHANGE, routing_key, builder.finish(), mandatory)
            .await;
        self.note(format!(
            "exchange publish {numbers:?} key {routing_key} mandatory {mandatory} (routes {expected:?}): {result:?}"
        ));
        let confirm = match result {
            Ok(confirm) => confirm,
            Err(weir_core::Error::Unroutable { .. }) if mandatory && expected.is_empty() => {
                self.count("exchange publish refused as unroutable");
                for number in &numbers {
                    self.cov.routed.get_mut(number).expect("routed").failed = false;
                }
                return;
            }
            Err(error) => {
                if !self.faulty {
                    self.fail(format!(
                        "exchange publish failed with no fault armed: {error}"
                    ));
                }
                for number in &numbers {
                    self.cov.routed.get_mut(number).expect("routed").failed = true;
                    self.model.sent.get_mut(number).expect("sent").retried = true;
                }
                return;
            }
        };
        if mandatory && expected.is_empty() {
            self.fail(format!(
                "a mandatory unroutable publish was accepted: {confirm:?}"
            ));
        }
        let targets: BTreeSet<&str> = confirm
            .targets
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        let dropped = if expected.is_empty() {
            numbers.len()
        } else {
            0
        };
        if targets != expected || confirm.dropped as usize != dropped {
            self.fail(format!(
                "routing key {routing_key} should reach exactly {expected:?}: {confirm:?}"
            ));
        }
        self.counts.routed += numbers.len() as u64;
        for (name, target) in &confirm.targets {
            let topic = *expected.get(name.as_str()).expect("checked above");
            let appended: Vec<(u32, u64)> = target
                .ranges
                .iter()
                .flat_map(|range| {
                    (range.base_offset..=range.last_offset).map(|offset| (range.partition, offset))
                })
                .collect();
            if appended.len() + target.duplicates.len() != numbers.len() {
                self.fail(format!("{numbers:?} confirmed in {topic} as {target:?}"));
            }
            let places = if target.duplicates.is_empty() {
                appended
            } else {
                // Only single-message batches carry ids.
                vec![(target.duplicates[0].partition, target.duplicates[0].offset)]
            };
            for (number, place) in numbers.iter().zip(places) {
                // A duplicate names the stored copy (or a place retention deleted since).
                if !target.duplicates.is_empty()
                    && self.number_in(topic, place) != Some(*number)
                    && !(topic == VIP_TOPIC && place.1 < self.start_offset(topic, place.0))
                {
                    self.fail(format!(
                        "m{number} confirmed in {topic} as a duplicate at {place:?}, which holds {:?}",
                        self.number_in(topic, place)
                    ));
                }
                let routed = self.cov.routed.get_mut(number).expect("routed");
                if let Some(earlier) = routed.places.insert(topic, place)
                    && earlier != place
                {
                    self.fail(format!(
                        "m{number} was confirmed in {topic} at {earlier:?}, its retry at {place:?}"
                    ));
                }
                if topic == TOPIC {
                    self.model.confirm_serial += 1;
                    let serial = self.model.confirm_serial;
                    let sent = self.model.sent.get_mut(number).expect("sent");
                    sent.place = Some(place);
                    sent.confirm_serial.get_or_insert(serial);
                }
            }
        }
        for number in &numbers {
            self.cov.routed.get_mut(number).expect("routed").failed = false;
        }
    }

    /// The audit topic's binding comes and goes; routing follows at once.
    async fn toggle_audit_binding(&mut self) {
        let bound = self.cov.audit_bound;
        self.count(if bound {
            "exchange unbind"
        } else {
            "exchange bind"
        });
        let result = if bound {
            self.broker().unbind(EXCHANGE, AUDIT_TOPIC, None).await
        } else {
            self.broker()
                .bind(EXCHANGE, binding(AUDIT_TOPIC, "#"))
                .await
        };
        self.note(format!("audit binding {}: {result:?}", !bound));
        match result {
            Ok(exchange) => {
                self.cov.audit_bound = !bound;
                self.cov.audit_in_doubt = false;
                let now_bound = exchange.bindings.iter().any(|b| b.topic == AUDIT_TOPIC);
                if now_bound != self.cov.audit_bound {
                    self.fail(format!("the exchange after a (un)bind: {exchange:?}"));
                }
            }
            Err(error) => {
                if !self.faulty {
                    self.fail(format!("(un)bind failed with no fault armed: {error}"));
                }
                // Not applied now; its save may still be found after a restart.
                self.cov.audit_in_doubt = true;
            }
        }
    }

    /// After every open: bindings and stream positions are what was promised.
    fn coverage_after_open(&mut self) {
        if !self.cov.ready {
            return;
        }
        let exchange = match self.broker().exchange(EXCHANGE) {
            Ok(exchange) => exchange,
            Err(error) => self.fail(format!("the exchange is gone after a restart: {error}")),
        };
        let has = |topic: &str| exchange.bindings.iter().any(|b| b.topic == topic);
        if !has(TOPIC) || !has(VIP_TOPIC) {
            self.fail(format!("bindings lost in a restart: {exchange:?}"));
        }
        let audit_bound = has(AUDIT_TOPIC);
        if self.cov.audit_in_doubt {
            self.cov.audit_bound = audit_bound;
            self.cov.audit_in_doubt = false;
        } else if audit_bound != self.cov.audit_bound {
            self.fail(format!(
                "the audit binding is {audit_bound} after a restart, it was {}",
                self.cov.audit_bound
            ));
        }
        for index in 0..self.cov.streams.len() {
            let (topic, group) = (self.cov.streams[index].topic, self.cov.streams[index].group);
            let info = match self.broker().group(topic, group) {
                Ok(info) => info,
                Err(error) => self.fail(format!("stream {group} is gone after a restart: {error}")),
            };
            for partition in info.partitions {
                let p = partition.partition as usize;
                let start = self.start_offset(topic, partition.partition);
                let stream = &self.cov.streams[index];
                let (durable, committed) = (stream.durable[p], stream.committed[p]);
                if partition.committed < durable || partition.committed > committed.max(start) {
                    self.fail(format!(
                        "stream {group} restarts at {}:{} but committed {committed} (durably {durable}, start {start})",
                        partition.partition, partition.committed
                    ));
                }
                let stream = &mut self.cov.streams[index];
                stream.committed[p] = partition.committed;
                stream.next[p] = partition.committed;
            }
        }
    }

    fn drop_coverage_consumers(&mut self) {
        self.cov.vip_queue.take();
        for stream in &mut self.cov.streams {
            for slot in &mut stream.slots {
                slot.take();
            }
            stream.owners.fill(None);
        }
    }

    fn coverage_after_restart(&mut self, crashed: bool) {
        if crashed {
            return;
        }
        // A clean shutdown with no fault armed saved every position.
        for stream in &mut self.cov.streams {
            stream.durable = stream.committed.clone();
        }
    }

    /// Partition `p` goes to the `p mod n`-th consumer in id order; a partition that changes
    /// owner goes on from its committed offset.
    fn stream_rebalance(&mut self, index: usize) {
        let stream = &mut self.cov.streams[index];
        let mut ids: Vec<ConsumerId> = stream
            .slots
            .iter()
            .flatten()
            .map(|slot| slot.consumer.id())
            .collect();
        ids.sort_unstable();
        for p in 0..stream.owners.len() {
            let owner = (!ids.is_empty()).then(|| ids[p % ids.len()]);
            if stream.owners[p] != owner {
                stream.owners[p] = owner;
                stream.next[p] = stream.committed[p];
            }
        }
    }

    async fn stream_fetch(&mut self) {
        let index = self.rng.below(STREAMS.len() as u64) as usize;
        let slot = self.rng.below(STREAM_SLOTS as u64) as usize;
        if self.cov.streams[index].slots[slot].is_none() {
            self.count("stream consumer attach");
            let (topic, group) = STREAMS[index];
            let consumer = match self
                .broker()
                .subscribe(topic, group, stream_options())
                .await
            {
                Ok(consumer) => consumer,
                Err(error) => self.fail(format!("stream subscribe failed: {error}")),
            };
            self.note(format!("stream {group} consumer {slot} attached"));
            self.cov.streams[index].slots[slot] = Some(StreamSlot {
                consumer,
                held: Vec::new(),
            });
            self.stream_rebalance(index);
        }
        let max = 1 + self.rng.below(4) as usize;
        self.stream_fetch_from(index, slot, max);
    }

    /// Fetches from a stream consumer: each partition goes on in offset order from where it
    /// was, skipping only what retention deleted, and yields what the log holds there.
    fn stream_fetch_from(&mut self, index: usize, slot: usize, max: usize) -> usize {
        self.count("stream fetch");
        let (topic, group) = STREAMS[index];
        let stream_slot = self.cov.streams[index].slots[slot]
            .as_ref()
            .expect("attached");
        let id = stream_slot.consumer.id();
        let deliveries = match stream_slot.consumer.try_next(max) {
            Ok(deliveries) => deliveries,
            Err(error) => self.fail(format!("stream {group} fetch failed: {error}")),
        };
        for delivery in &deliveries {
            let p = delivery.partition as usize;
            let offset = delivery.record.offset;
            let number = parse_number(&delivery.record.value);
            self.note(format!(
                "stream {group} consumer {slot} got {number:?} at {p}:{offset}"
            ));
            let stream = &self.cov.streams[index];
            if stream.owners[p] != Some(id) {
                self.fail(format!(
                    "stream {group}: consumer {slot} got partition {p}, owned by {:?}",
                    stream.owners[p]
                ));
            }
            let expected = stream.next[p].max(self.start_offset(topic, delivery.partition));
            if offset != expected {
                self.fail(format!(
                    "stream {group} delivered {p}:{offset}; the partition was at {expected}"
                ));
            }
            if number.is_none() || self.number_in(topic, (delivery.partition, offset)) != number {
                self.fail(format!(
                    "stream {group} delivered {number:?} at {p}:{offset}, the log holds {:?}",
                    self.number_in(topic, (delivery.partition, offset))
                ));
            }
            self.cov.streams[index].next[p] = offset + 1;
            self.counts.stream_delivered += 1;
        }
        let count = deliveries.len();
        let stream_slot = self.cov.streams[index].slots[slot]
            .as_mut()
            .expect("attached");
        stream_slot.held.extend(deliveries);
        count
    }

    /// A stream consumer commits (acks), rewinds (nack with requeue) or skips (nack without).
    async fn stream_settle(&mut self) {
        let holding: Vec<(usize, usize)> = (0..STREAMS.len())
            .flat_map(|index| (0..STREAM_SLOTS).map(move |slot| (index, slot)))
            .filter(|&(index, slot)| {
                self.cov.streams[index].slots[slot]
                    .as_ref()
                    .is_some_and(|slot| !slot.held.is_empty())
            })
            .collect();
        if holding.is_empty() {
            return;
        }
        let (index, slot) = holding[self.rng.below(holding.len() as u64) as usize];
        for _ in 0..1 + self.rng.below(3) {
            self.stream_settle_one(index, slot).await;
        }
    }

    async fn stream_settle_one(&mut self, index: usize, slot: usize) {
        let stream_slot = self.cov.streams[index].slots[slot]
            .as_mut()
            .expect("attached");
        if stream_slot.held.is_empty() {
            return;
        }
        let held = stream_slot.held.len() as u64;
        let delivery = stream_slot.held.remove(self.rng.below(held) as usize);
        let action = self.rng.below(100);
        let group = STREAMS[index].1;
        let p = delivery.partition as usize;
        let offset = delivery.record.offset;
        let consumer = &self.cov.streams[index].slots[slot]
            .as_ref()
            .expect("attached")
            .consumer;
        let (name, result) = match action {
            0..=69 => ("stream commit", consumer.ack(&[delivery.id()]).await),
            70..=84 => (
                "stream rewind",
                consumer.nack(&[delivery.id()], true, Duration::ZERO).await,
            ),
            _ => (
                "stream skip",
                consumer.nack(&[delivery.id()], false, Duration::ZERO).await,
            ),
        };
        self.count(name);
        self.note(format!("stream {group} {name} {p}:{offset}: {result:?}"));
        let committed = self.cov.streams[index].committed[p];
        let expected = if offset < committed {
            Settlement::AlreadySettled
        } else {
            Settlement::Settled
        };
        // The settlement takes effect in memory either way; an error (only a fault may cause
        // one) says it is not durable yet.
        let saved = result.is_ok();
        match result {
            Ok(settlements) if settlements == [expected] => {}
            Err(_) if self.faulty => {}
            other => self.fail(format!(
                "stream {group} {name} of {p}:{offset} (committed {committed}): {other:?}, expected {expected:?}"
            )),
        }
        let stream = &mut self.cov.streams[index];
        if name == "stream rewind" {
            if offset < stream.next[p] {
                stream.next[p] = offset.max(committed);
            }
        } else if offset + 1 > committed {
            stream.committed[p] = offset + 1;
            if KNOWN_DEFECT_22_FIXED && saved {
                stream.durable[p] = offset + 1;
            }
        }
        if saved {
            self.model.settlements_saved();
        }
    }

    /// A stream consumer goes away; its partitions move to the others.
    fn stream_lose(&mut self) {
        let index = self.rng.below(STREAMS.len() as u64) as usize;
        let slot = self.rng.below(STREAM_SLOTS as u64) as usize;
        if self.cov.streams[index].slots[slot].take().is_some() {
            self.count("stream consumer lost");
            self.note(format!("stream {} consumer {slot} lost", STREAMS[index].1));
            self.stream_rebalance(index);
        }
    }

    /// A queue consumer of the retention topic takes and acks what is there: never a message
    /// retention deleted, never an error for one.
    async fn retention_queue_fetch(&mut self) {
        if self.cov.vip_queue.is_none() {
            self.count("retention queue attach");
            let options = SubscribeOptions {
                prefetch: 8,
                ..SubscribeOptions::default()
            };
            match self
                .broker()
                .subscribe(VIP_TOPIC, VIP_QUEUE_GROUP, options)
                .await
            {
                Ok(consumer) => self.cov.vip_queue = Some(consumer),
                Err(error) => self.fail(format!("subscribe {VIP_QUEUE_GROUP}: {error}")),
            }
        }
        self.count("retention queue fetch");
        let consumer = self.cov.vip_queue.as_ref().expect("attached");
        let deliveries = match consumer.try_next(1 + self.rng.below(8) as usize) {
            Ok(deliveries) => deliveries,
            Err(error) if !self.faulty => self.fail(format!(
                "{VIP_QUEUE_GROUP} fetch failed with no fault armed: {error}"
            )),
            Err(_) => return,
        };
        for delivery in &deliveries {
            let place = (delivery.partition, delivery.record.offset);
            let number = parse_number(&delivery.record.value);
            if number.is_none() || self.number_in(VIP_TOPIC, place) != number {
                self.fail(format!(
                    "{VIP_QUEUE_GROUP} got {number:?} at {place:?}, the log holds {:?}",
                    self.number_in(VIP_TOPIC, place)
                ));
            }
        }
        if deliveries.is_empty() || self.rng.chance(20) {
            return;
        }
        let ids: Vec<_> = deliveries.iter().map(Delivery::id).collect();
        let consumer = self.cov.vip_queue.as_ref().expect("attached");
        match consumer.ack(&ids).await {
            Ok(settlements) if !settlements.contains(&Settlement::Unknown) => {
                self.model.settlements_saved();
            }
            // Applied but not durable: only a fault may cause it.
            Err(_) if self.faulty => {}
            other => self.fail(format!("{VIP_QUEUE_GROUP} ack of {ids:?}: {other:?}")),
        }
    }

    /// A queue consumer rejects a message it holds (so the DLQ has letters to redrive).
    async fn reject_held(&mut self) {
        let now = self.now();
        let holding: Vec<(usize, usize)> = (0..CONSUMERS)
            .filter_map(|slot| Some((slot, self.consumers[slot].as_ref()?)))
            .flat_map(|(slot, consumer)| (0..consumer.held.len()).map(move |index| (slot, index)))
            .filter(|&(slot, index)| {
                let delivery = &self.consumers[slot].as_ref().expect("present").held[index];
                parse_number(&delivery.record.value)
                    .and_then(|number| self.model.queue.get(&number)?.in_flight)
                    .is_some_and(|(holder, deadline)| holder == slot && now < deadline)
            })
            .collect();
        if holding.is_empty() {
            return;
        }
        self.count("reject to redrive");
        let (slot, index) = holding[self.rng.below(holding.len() as u64) as usize];
        let consumer = self.consumers[slot].as_mut().expect("present");
        let delivery = consumer.held.remove(index);
        let number = parse_number(&delivery.record.value).expect("checked on delivery");
        let result = consumer
            .consumer
            .nack(&[delivery.id()], false, Duration::ZERO)
            .await;
        self.note(format!("consumer {slot} reject m{number}: {result:?}"));
        let saved = result.is_ok();
        match result {
            Ok(settlements) if settlements == [Settlement::Settled] => {}
            // Applied but not durable: only a fault may cause it.
            Err(_) if self.faulty => {}
            other => self.fail(format!("reject of a held delivery: {other:?}")),
        }
        let tracked = self.model.tracked(number);
        tracked.in_flight = None;
        tracked.dead = true;
        tracked.dead_unsaved = !saved;
        if saved {
            self.model.settlements_saved();
        }
    }

    /// An operator redrives one dead letter: to the subscription it came from (it becomes
    /// pending there again, only there, at its own place, with a fresh count), or to the retry
    /// topic (a copy without the `weir.dlq.*` headers).
    async fn redrive(&mut self) {
        let Ok(letters) = self.broker().dead_letters(DLQ_TOPIC, 10_000) else {
            return; // No dead letter yet.
        };
        if letters.is_empty() {
            return;
        }
        let letter = letters[self.rng.below(letters.len() as u64) as usize].clone();
        let Some(number) = parse_number(&letter.record.value) else {
            self.fail(format!("an unknown dead letter: {letter:?}"));
        };
        let copies = self
            .read_topic(DLQ_TOPIC)
            .iter()
            .filter(|(_, _, dead)| *dead == number)
            .count();
        let tracked = self.model.queue.get(&number).cloned().unwrap_or_default();
        // To the origin only when the model has it settled there as dead. If its dead-letter
        // append was in doubt, it may be unsettled there still: then what it does next is
        // checked loosely.
        let settled_dead =
            tracked.dead && tracked.dead_stored && !tracked.acked && tracked.in_flight.is_none();
        let exactly_known = copies == 1 + self.redriven_to_origin(number);
        let to_origin = settled_dead && self.rng.chance(75);
        let target = (!to_origin).then_some(RETRY_TOPIC);
        self.count(if to_origin {
            "redrive to origin"
        } else {
            "redrive to a topic"
        });
        let result = self
            .broker()
            .redrive(DLQ_TOPIC, target, Some(&[letter.id()]), 10_000)
            .await;
        self.note(format!("redrive m{number} to {target:?}: {result:?}"));
        match &result {
            Ok(1) => {
                self.counts.redriven += 1;
                let still = self.broker().dead_letters(DLQ_TOPIC, 10_000);
                if still.is_ok_and(|letters| letters.iter().any(|l| l.id() == letter.id())) {
                    self.fail(format!("m{number} is still in the DLQ after its redrive"));
                }
            }
            Ok(other) => self.fail(format!("redrive of one letter moved {other}")),
            Err(error) if !self.faulty => {
                self.fail(format!("redrive failed with no fault armed: {error}"))
            }
            Err(_) => {}
        }
        if to_origin {
            // Every copy in the DLQ's log now is accounted for; a new one is a new dead letter.
            self.cov.redriven_to_origin.insert(number, copies);
            // Pending again, at its own place, as if never delivered. A failed redrive may or
            // may not have done so, and a letter in doubt may still be on its way: counts are
            // then unknown, and a new dead letter allowed.
            let in_doubt = result.is_err() || !exactly_known;
            *self.model.tracked(number) = Tracked {
                place: tracked.place,
                crashed: in_doubt,
                dead_once: in_doubt,
                ..Tracked::default()
            };
        } else {
            let copies = self.cov.retry_copies.entry(number).or_default();
            copies.0 += usize::from(result.is_ok());
            copies.1 += 1;
        }
    }

    /// A reader without a group reads from a random position: exactly the stored messages
    /// from there, in order (from the start if the position was deleted).
    fn read_from_position(&mut self) {
        self.count("read from a position");
        let topic = if self.rng.chance(50) {
            TOPIC
        } else {
            VIP_TOPIC
        };
        let partition = self.rng.below(u64::from(PARTITIONS)) as u32;
        let Some(info) = self
            .broker()
            .topic(topic)
            .ok()
            .and_then(|info| info.partitions.get(partition as usize).cloned())
        else {
            self.fail(format!("{topic} has no partition {partition}"));
        };
        let from = self.rng.below(info.end_offset + 2);
        let max = 1 + self.rng.below(5) as usize;
        let (records, next) =
            match self
                .broker()
                .read_from(topic, partition, StartPosition::Offset(from), max)
            {
                Ok(read) => read,
                Err(error) => self.fail(format!("read {topic}/{partition} from {from}: {error}")),
            };
        let first = from.clamp(info.start_offset, info.end_offset);
        let offsets: Vec<u64> = records.iter().map(|record| record.offset).collect();
        let expected: Vec<u64> = (first..info.end_offset).take(max).collect();
        if offsets != expected || next != first + offsets.len() as u64 {
            self.fail(format!(
                "read {topic}/{partition} from {from} (log {}..{}): offsets {offsets:?}, next {next}",
                info.start_offset, info.end_offset
            ));
        }
        for record in &records {
            let number = parse_number(&record.value);
            if number.is_none() || self.number_in(topic, (partition, record.offset)) != number {
                self.fail(format!("read {topic}/{partition} gave {record:?}"));
            }
        }
    }

    fn redriven_to_origin(&self, number: u64) -> usize {
        self.cov
            .redriven_to_origin
            .get(&number)
            .copied()
            .unwrap_or(0)
    }

    fn number_in(&self, topic: &str, (partition, offset): (u32, u64)) -> Option<u64> {
        let records = self.broker().read(topic, partition, offset, 1).ok()?;
        let record = records.first().filter(|record| record.offset == offset)?;
        parse_number(&record.value)
    }

    fn start_offset(&self, topic: &str, partition: u32) -> u64 {
        self.broker()
            .topic(topic)
            .ok()
            .and_then(|info| {
                info.partitions
                    .get(partition as usize)
                    .map(|p| p.start_offset)
            })
            .unwrap_or(0)
    }

    /// `topic` read whole, checking that each partition holds one unbroken run of offsets
    /// from its start to its end: retention deletes whole segments, oldest first.
    fn read_retained(&self, topic: &str) -> Vec<(u32, u64, u64)> {
        let records = self.read_topic(topic);
        let Ok(info) = self.broker().topic(topic) else {
            return records;
        };
        for partition in info.partitions {
            let offsets: Vec<u64> = records
                .iter()
                .filter(|(p, _, _)| *p == partition.partition)
                .map(|(_, offset, _)| *offset)
                .collect();
            let expected: Vec<u64> = (partition.start_offset..partition.end_offset).collect();
            if offsets != expected {
                self.fail(format!(
                    "{topic}/{} holds offsets {offsets:?}, not {}..{}",
                    partition.partition, partition.start_offset, partition.end_offset
                ));
            }
        }
        records
    }

    /// After every step: routed messages only where they were routed, once each, at their
    /// confirmed place unless retention deleted it (whole and oldest first); stream positions
    /// never behind what was committed; the retry topic holds each redriven copy once, clean.
    fn check_coverage(&mut self, topic_records: &[(u32, u64, u64)]) {
        if !self.cov.ready {
            return;
        }
        let now = self.now();
        for topic in [TOPIC, VIP_TOPIC, AUDIT_TOPIC] {
            let records = match topic {
                TOPIC => topic_records.to_vec(),
                _ => self.read_retained(topic),
            };
            let mut found: BTreeMap<u64, Vec<(u32, u64)>> = BTreeMap::new();
            for (partition, offset, number) in records {
                found.entry(number).or_default().push((partition, offset));
                match self.cov.routed.get(&number) {
                    Some(routed) if !routed.allowed.contains(topic) => self.fail(format!(
                        "m{number} (routing key {}) reached {topic}, routed to {:?}",
                        routed.routing_key, routed.allowed
                    )),
                    None if topic != TOPIC => {
                        self.fail(format!("m{number} in {topic} was never routed there"))
                    }
                    _ => {}
                }
            }
            for (number, routed) in &self.cov.routed {
                let stored = found.get(number).map_or(&[][..], Vec::as_slice);
                if stored.len() > 1 {
                    self.fail(format!("m{number} is stored in {topic} at {stored:?}"));
                }
                let Some(&place) = routed.places.get(topic) else {
                    continue;
                };
                if stored.first() == Some(&place) {
                    continue;
                }
                let deleted = topic == VIP_TOPIC
                    && stored.is_empty()
                    && place.1 < self.start_offset(topic, place.0);
                if !deleted {
                    self.fail(format!(
                        "m{number} confirmed in {topic} at {place:?} is stored at {stored:?}"
                    ));
                }
                if routed.first_sent_ms >= now - RETENTION_MS {
                    self.fail(format!(
                        "m{number} sent at {} was deleted from {topic} at {now}, within retention",
                        routed.first_sent_ms
                    ));
                }
            }
        }
        for (index, (topic, group)) in STREAMS.into_iter().enumerate() {
            let info = match self.broker().group(topic, group) {
                Ok(info) => info,
                Err(error) => self.fail(format!("stream {group}: {error}")),
            };
            for partition in info.partitions {
                let p = partition.partition as usize;
                let start = self.start_offset(topic, partition.partition);
                let stream = &self.cov.streams[index];
                let committed = stream.committed[p];
                // Only retention moves a committed offset by itself, and only to the start.
                if partition.committed < committed || partition.committed > committed.max(start) {
                    self.fail(format!(
                        "stream {group} is at {p}:{}, committed {committed} (start {start})",
                        partition.committed
                    ));
                }
                self.cov.streams[index].committed[p] = partition.committed;
            }
        }
        let mut retried: BTreeMap<u64, usize> = BTreeMap::new();
        for record in self.read_records(RETRY_TOPIC) {
            let Some(number) = parse_number(&record.value) else {
                self.fail(format!("unknown record in {RETRY_TOPIC}: {record:?}"));
            };
            if record
                .headers
                .iter()
                .any(|(name, _)| name.starts_with(DLQ_HEADER_PREFIX))
            {
                self.fail(format!("m{number} redriven with its dead-letter headers"));
            }
            *retried.entry(number).or_default() += 1;
        }
        for (number, &(at_least, at_most)) in &self.cov.retry_copies {
            let copies = retried.remove(number).unwrap_or(0);
            if copies < at_least || copies > at_most {
                self.fail(format!(
                    "m{number} is in {RETRY_TOPIC} {copies} times; redriven there {at_least} to {at_most} times"
                ));
            }
        }
        if let Some((number, _)) = retried.first_key_value() {
            self.fail(format!(
                "m{number} in {RETRY_TOPIC} was never redriven there"
            ));
        }
    }

    /// Every record of `topic` (one partition is enough here).
    fn read_records(&self, topic: &str) -> Vec<weir_core::Record> {
        match self.broker().read(topic, 0, 0, 10_000) {
            Ok(records) => records,
            Err(error) => self.fail(format!("reading {topic}: {error}")),
        }
    }

    /// The end of a run: each stream reads on to the end of its log, and each message
    /// redriven to its origin ended acked or back in the DLQ.
    async fn drain_coverage(&mut self) {
        for (index, (topic, group)) in STREAMS.into_iter().enumerate() {
            for slot in 1..STREAM_SLOTS {
                self.cov.streams[index].slots[slot].take();
            }
            if self.cov.streams[index].slots[0].is_none() {
                let subscribed = self
                    .broker()
                    .subscribe(topic, group, stream_options())
                    .await;
                let consumer = match subscribed {
                    Ok(consumer) => consumer,
                    Err(error) => self.fail(format!("stream subscribe to drain: {error}")),
                };
                self.cov.streams[index].slots[0] = Some(StreamSlot {
                    consumer,
                    held: Vec::new(),
                });
            }
            self.stream_rebalance(index);
            while self.stream_fetch_from(index, 0, 100) > 0 {}
            let Ok(info) = self.broker().topic(topic) else {
                self.fail(format!("{topic} is gone"));
            };
            for partition in info.partitions {
                let next = self.cov.streams[index].next[partition.partition as usize];
                if next.max(partition.start_offset) != partition.end_offset {
                    self.fail(format!(
                        "stream {} stopped at {}:{next}, the log ends at {}",
                        group, partition.partition, partition.end_offset
                    ));
                }
            }
        }
        let pending: BTreeSet<u64> = self
            .broker()
            .dead_letters(DLQ_TOPIC, 100_000)
            .unwrap_or_default()
            .iter()
            .filter_map(|letter| parse_number(&letter.record.value))
            .collect();
        for number in self.cov.redriven_to_origin.keys() {
            let acked = self
                .model
                .queue
                .get(number)
                .is_some_and(|tracked| tracked.acked);
            // (A failed redrive leaves it in the DLQ, from where it may go to the retry topic.)
            let retried = self
                .cov
                .retry_copies
                .get(number)
                .is_some_and(|&(at_least, _)| at_least > 0);
            if !acked && !pending.contains(number) && !retried {
                self.fail(format!(
                    "m{number}, redriven to its origin, was neither acked nor dead-lettered again"
                ));
            }
        }
        for routed in self.cov.routed.values() {
            if let Some(&(partition, offset)) = routed.places.get(VIP_TOPIC)
                && offset < self.start_offset(VIP_TOPIC, partition)
            {
                self.counts.retention_vanished += 1;
            }
        }
    }
}

fn binding(topic: &str, key: &str) -> Binding {
    Binding {
        topic: topic.to_owned(),
        key: key.to_owned(),
        headers: Vec::new(),
        match_all: true,
    }
}

fn stream_options() -> SubscribeOptions {
    SubscribeOptions {
        kind: SubscriptionKind::Stream,
        start: StartPosition::Earliest,
        prefetch: 100,
        ..SubscribeOptions::default()
    }
}

/// Runs one seed; returns what it did and its trace (every step and answer, in order).
async fn run_seed(seed: u64, steps: usize) -> (Counts, Vec<String>) {
    let mut sim = Sim::new(seed);
    sim.setup().await;
    for _ in 0..steps {
        sim.step().await;
    }
    sim.drain().await;
    (sim.counts, sim.trace.into_iter().collect())
}

fn run_seed_blocking(seed: u64, steps: usize) -> (Counts, Vec<String>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(run_seed(seed, steps))
}

/// The point of a seed: the same seed, the same run, answer for answer.
#[test]
fn a_seed_replays_exactly() {
    for seed in [3, 95, 128] {
        let (_, first) = run_seed_blocking(seed, DEFAULT_STEPS);
        let (_, second) = run_seed_blocking(seed, DEFAULT_STEPS);
        assert_eq!(first, second, "seed {seed} ran differently twice");
    }
}

/// Seeds that found bugs outside the default range, replayed in every run (the default range
/// holds 95, 102 and 128): a released delivery counted again after a crash (1915, 8793, 8892,
/// 9655: the model was wrong), a dead letter stored twice (4183, 8892), a commit applied twice
/// (9150).
#[test]
fn seeds_that_found_bugs() {
    for seed in [1915, 4183, 8793, 8892, 9150, 9655] {
        run_seed_blocking(seed, DEFAULT_STEPS);
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

#[test]
fn simulation() {
    let steps = env_u64("SIM_STEPS").map_or(DEFAULT_STEPS, |steps| steps as usize);
    let seeds: Vec<u64> = match env_u64("SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env_u64("SIM_FIRST_SEED").unwrap_or(0);
            let count = env_u64("SIM_SEEDS").unwrap_or(DEFAULT_SEEDS);
            (first..first + count).collect()
        }
    };
    let mut total = Counts::default();
    let mut failed = Vec::new();
    for seed in seeds {
        // One runtime per seed, and a failing seed does not stop the others: a long run
        // reports every failing seed (each prints its replay line).
        match std::panic::catch_unwind(|| run_seed_blocking(seed, steps)) {
            Ok((counts, _)) => total.add(&counts),
            Err(_) => failed.push(seed),
        }
    }
    println!(
        "simulation: {} seeds, {} steps; published {}, delivered {}, acked {}, dead-lettered {}; \
         routed through an exchange {}, stream deliveries {}, redriven {}, deleted by retention {}",
        total.seeds,
        total.steps,
        total.published,
        total.delivered,
        total.acked,
        total.dead_lettered,
        total.routed,
        total.stream_delivered,
        total.redriven,
        total.retention_vanished
    );
    println!("operations: {:?}", total.operations);
    println!("faults: {:?}", total.faults);
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
}
