//! The wire form of the broker's alerts (`Alerts`), for `weir stats` and `weir top`.
//!
//! The broker evaluates its alert rules on its own timer; this module only says how the
//! alerts that are pending or firing at one moment travel. Layouts are in `docs/protocol.md`
//! §5.

use crate::error::DecodeError;
use crate::wire::{Reader, put_string};
use bytes::{BufMut, BytesMut};

/// What an alert rule measures, per subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertMetric {
    /// Messages published and not yet acked (queue) or committed (stream). Tag 0.
    Backlog,
    /// Acks ÷ (acks + failures) over the last minute, 0 to 1. Tag 1.
    SuccessRate,
    /// Delivered and not yet settled. Tag 2.
    InFlight,
    /// Publish → ack latency p99, in milliseconds. Tag 3.
    LatencyP99Ms,
    /// Consumers attached. Tag 4.
    Consumers,
    /// Messages moved to the dead-letter topic since the broker started. Tag 5.
    DeadLettered,
    /// 1 while a partition refuses writes until the broker restarts (its storage failed);
    /// scoped `topic/partition-N`. Tag 6, since protocol version 2.
    PoisonedPartition,
}

impl AlertMetric {
    /// The `snake_case` name the HTTP API, the configuration file and the CLI use.
    pub const fn name(self) -> &'static str {
        match self {
            AlertMetric::Backlog => "backlog",
            AlertMetric::SuccessRate => "success_rate",
            AlertMetric::InFlight => "in_flight",
            AlertMetric::LatencyP99Ms => "latency_p99_ms",
            AlertMetric::Consumers => "consumers",
            AlertMetric::DeadLettered => "dead_lettered",
            AlertMetric::PoisonedPartition => "poisoned_partition",
        }
    }

    /// The first protocol version whose decoders know this metric's tag: an alert of a
    /// newer metric is left out of the answer to an older peer, which would refuse it.
    pub const fn since_version(self) -> u16 {
        match self {
            AlertMetric::PoisonedPartition => 2,
            _ => 1,
        }
    }

    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u8(match self {
            AlertMetric::Backlog => 0,
            AlertMetric::SuccessRate => 1,
            AlertMetric::InFlight => 2,
            AlertMetric::LatencyP99Ms => 3,
            AlertMetric::Consumers => 4,
            AlertMetric::DeadLettered => 5,
            AlertMetric::PoisonedPartition => 6,
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<AlertMetric, DecodeError> {
        Ok(
            match reader.tag(
                6,
                "alert metric (0 backlog, 1 success_rate, 2 in_flight, 3 latency_p99_ms, \
                 4 consumers, 5 dead_lettered, 6 poisoned_partition)",
            )? {
                0 => AlertMetric::Backlog,
                1 => AlertMetric::SuccessRate,
                2 => AlertMetric::InFlight,
                3 => AlertMetric::LatencyP99Ms,
                4 => AlertMetric::Consumers,
                5 => AlertMetric::DeadLettered,
                _ => AlertMetric::PoisonedPartition,
            },
        )
    }
}

/// Where an active alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for` duration. Tag 0.
    Pending,
    /// The condition has held for the rule's `for` duration. Tag 1.
    Firing,
}

impl AlertState {
    pub(crate) fn put(self, buf: &mut BytesMut) {
        buf.put_u8(match self {
            AlertState::Pending => 0,
            AlertState::Firing => 1,
        });
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<AlertState, DecodeError> {
        Ok(match reader.tag(1, "alert state (0 pending, 1 firing)")? {
            0 => AlertState::Pending,
            _ => AlertState::Firing,
        })
    }
}

/// One alert rule applied to one subscription, while its condition holds.
///
/// `value` and `threshold` are finite: the decoder refuses NaN and infinities, which is what
/// makes the `Eq` below lawful (NaN is the only `f64` not equal to itself).
#[derive(Debug, Clone, PartialEq)]
pub struct AlertInfo {
    /// The rule's name.
    pub rule: String,
    /// The subscription, `topic/subscription`.
    pub scope: String,
    /// What the rule measures.
    pub metric: AlertMetric,
    /// Pending or firing.
    pub state: AlertState,
    /// The metric's value at the last evaluation.
    pub value: f64,
    /// The rule's threshold. An active alert's condition holds, so `value > threshold` means
    /// the rule fires above it and `value < threshold` below it.
    pub threshold: f64,
    /// When the condition started holding, in milliseconds since the Unix epoch.
    pub since_ms: i64,
    /// The rule's message for the operator.
    pub message: String,
}

impl Eq for AlertInfo {}

impl AlertInfo {
    /// Two string lengths, metric, state, value, threshold, since, a string length.
    pub(crate) const MINIMUM_BYTES: usize = 4 + 4 + 1 + 1 + 8 + 8 + 8 + 4;

    pub(crate) fn put(&self, buf: &mut BytesMut) {
        put_string(buf, &self.rule);
        put_string(buf, &self.scope);
        self.metric.put(buf);
        self.state.put(buf);
        buf.put_f64_le(self.value);
        buf.put_f64_le(self.threshold);
        buf.put_i64_le(self.since_ms);
        put_string(buf, &self.message);
    }

    pub(crate) fn read(reader: &mut Reader) -> Result<AlertInfo, DecodeError> {
        Ok(AlertInfo {
            rule: reader.string("alert rule name")?,
            scope: reader.string("alert scope")?,
            metric: AlertMetric::read(reader)?,
            state: AlertState::read(reader)?,
            value: reader.finite_f64("alert value (a finite f64)")?,
            threshold: reader.finite_f64("alert threshold (a finite f64)")?,
            since_ms: reader.i64("alert since, in milliseconds")?,
            message: reader.string("alert message")?,
        })
    }
}
