//! Alert rules, evaluated by the broker itself on its own metrics (the guide's §6.4: "backlog
//! too high, add consumers"; "success rate too low, check the business logic").
//!
//! A rule names a metric, a scope pattern (`topic/subscription`, or `topic/partition-N` for
//! the partition metric; `*` matching any run of characters), a comparison, a threshold and a `for` duration: the condition must hold that
//! long before the alert fires, and it resolves as soon as it stops holding. Evaluation is a
//! pure function of the stats snapshot and the time, so tests drive it with a manual clock.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::metrics::{BrokerStats, SubscriptionStats};

/// What a rule measures, per subscription (`PoisonedPartition`: per partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetric {
    /// Messages published and not yet acked/committed.
    Backlog,
    /// acks ÷ (acks + failures) over the last minute, 0 to 1 (no value when idle).
    SuccessRate,
    InFlight,
    /// Publish → ack latency p99, in milliseconds.
    LatencyP99Ms,
    Consumers,
    DeadLettered,
    /// 1 while a partition's storage failed (a writer panic or a failed fsync): it refuses
    /// writes until the broker restarts. Scoped `topic/partition-N`.
    PoisonedPartition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    Above,
    Below,
}

/// One alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub name: String,
    pub metric: AlertMetric,
    /// `topic/subscription`, with `*` wildcards; `*` alone matches everything.
    #[serde(default = "everything")]
    pub scope: String,
    pub comparison: Comparison,
    pub threshold: f64,
    /// How long the condition must hold before the alert fires.
    #[serde(default)]
    pub for_ms: u64,
    /// What to tell the operator.
    #[serde(default)]
    pub message: String,
}

fn everything() -> String {
    "*".into()
}

impl AlertRule {
    /// The two rules from the guide and `partition-poisoned`, active unless the configuration
    /// replaces them.
    pub fn defaults() -> Vec<AlertRule> {
        vec![
            AlertRule {
                name: "backlog-high".into(),
                metric: AlertMetric::Backlog,
                scope: everything(),
                comparison: Comparison::Above,
                threshold: 10_000.0,
                for_ms: 0,
                message: "队列积压过多，请增加消费者 / backlog too high, add consumers".into(),
            },
            AlertRule {
                name: "success-rate-low".into(),
                metric: AlertMetric::SuccessRate,
                scope: everything(),
                comparison: Comparison::Below,
                threshold: 0.95,
                for_ms: 0,
                message:
                    "成功率过低，请检查业务逻辑 / success rate too low, check the business logic"
                        .into(),
            },
            AlertRule {
                name: "partition-poisoned".into(),
                metric: AlertMetric::PoisonedPartition,
                scope: everything(),
                comparison: Comparison::Above,
                threshold: 0.0,
                for_ms: 0,
                message:
                    "分区存储故障，修复磁盘后重启 broker / the partition's storage failed and it \
                          refuses writes: fix the disk, then restart the broker"
                        .into(),
            },
        ]
    }

    fn holds(&self, value: f64) -> bool {
        match self.comparison {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }
}

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// The condition holds, not yet for the rule's `for` duration.
    Pending,
    Firing,
    Resolved,
}

/// One rule applied to one subscription.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub rule: String,
    /// `topic/subscription`.
    pub scope: String,
    pub metric: AlertMetric,
    pub value: f64,
    pub threshold: f64,
    pub state: AlertState,
    /// When the condition started holding (pending, firing) or stopped (resolved).
    pub since_ms: i64,
    pub message: String,
}

/// `*` matches any run of characters, everything else itself.
pub fn scope_matches(pattern: &str, scope: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == scope;
    }
    let mut rest = scope;
    for (index, part) in parts.iter().enumerate() {
        if index == 0 {
            let Some(stripped) = rest.strip_prefix(part) else {
                return false;
            };
            rest = stripped;
        } else if index == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(position) => rest = &rest[position + part.len()..],
                None => return false,
            }
        }
    }
    true
}

/// The metric's value for one subscription; `None` when it has none (idle, or a metric of
/// partitions).
fn value(metric: AlertMetric, subscription: &SubscriptionStats) -> Option<f64> {
    Some(match metric {
        AlertMetric::Backlog => subscription.backlog as f64,
        AlertMetric::SuccessRate => subscription.success_rate?,
        AlertMetric::InFlight => subscription.in_flight as f64,
        AlertMetric::LatencyP99Ms => {
            if subscription.latency.count == 0 {
                return None;
            }
            subscription.latency.p99_us as f64 / 1000.0
        }
        AlertMetric::Consumers => subscription.consumers.len() as f64,
        AlertMetric::DeadLettered => subscription.counters.dead_lettered as f64,
        AlertMetric::PoisonedPartition => return None,
    })
}

/// Every `(scope, value)` a rule on `metric` is checked against.
fn measurements(metric: AlertMetric, stats: &BrokerStats) -> Vec<(String, f64)> {
    if metric == AlertMetric::PoisonedPartition {
        return stats
            .topics
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().map(|partition| {
                    (
                        format!("{}/partition-{}", topic.name, partition.partition),
                        if partition.poisoned { 1.0 } else { 0.0 },
                    )
                })
            })
            .collect();
    }
    stats
        .subscriptions
        .iter()
        .filter_map(|subscription| {
            let scope = format!("{}/{}", subscription.topic, subscription.group);
            Some((scope, value(metric, subscription)?))
        })
        .collect()
}

/// The live alerts of every rule, keyed by (rule, scope).
#[derive(Debug, Default)]
pub struct AlertBook {
    active: BTreeMap<(String, String), Alert>,
}

impl AlertBook {
    /// Applies `rules` to `stats`; returns the alerts that fired or resolved now.
    pub fn evaluate(&mut self, rules: &[AlertRule], stats: &BrokerStats) -> Vec<Alert> {
        let now_ms = stats.now_ms;
        let mut changes = Vec::new();
        let mut seen = Vec::new();
        for rule in rules {
            for (scope, value) in measurements(rule.metric, stats) {
                if !scope_matches(&rule.scope, &scope) || !rule.holds(value) {
                    continue;
                }
                let key = (rule.name.clone(), scope.clone());
                seen.push(key.clone());
                let alert = self.active.entry(key).or_insert_with(|| Alert {
                    rule: rule.name.clone(),
                    scope,
                    metric: rule.metric,
                    value,
                    threshold: rule.threshold,
                    state: AlertState::Pending,
                    since_ms: now_ms,
                    message: rule.message.clone(),
                });
                alert.value = value;
                // A `for` past i64's range (from a careless rule) means "never", not a wrap to
                // a negative duration that would fire at once.
                let for_ms = i64::try_from(rule.for_ms).unwrap_or(i64::MAX);
                if alert.state == AlertState::Pending
                    && now_ms.saturating_sub(alert.since_ms) >= for_ms
                {
                    alert.state = AlertState::Firing;
                    changes.push(alert.clone());
                }
            }
        }
        let gone: Vec<(String, String)> = self
            .active
            .keys()
            .filter(|key| !seen.contains(key))
            .cloned()
            .collect();
        for key in gone {
            if let Some(mut alert) = self.active.remove(&key)
                && alert.state == AlertState::Firing
            {
                alert.state = AlertState::Resolved;
                alert.since_ms = now_ms;
                changes.push(alert);
            }
        }
        changes
    }

    /// Pending and firing alerts.
    pub fn active(&self) -> Vec<Alert> {
        self.active.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SubscriptionKind;
    use crate::metrics::{LatencySummary, SubscriptionCounters};

    fn stats(now_ms: i64, backlog: u64, success_rate: Option<f64>) -> BrokerStats {
        BrokerStats {
            now_ms,
            topics: Vec::new(),
            subscriptions: vec![SubscriptionStats {
                topic: "orders".into(),
                group: "shipping".into(),
                kind: SubscriptionKind::Queue,
                backlog,
                in_flight: 0,
                consumers: Vec::new(),
                counters: SubscriptionCounters::default(),
                success_rate,
                latency: LatencySummary::default(),
            }],
            fsync: LatencySummary::default(),
            disk_bytes: 0,
            scheduled: 0,
            scheduled_quarantined: 0,
            transactions: 0,
            unroutable_dropped: 0,
            background_failures: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn the_default_rules_fire_and_resolve() {
        let rules = AlertRule::defaults();
        let mut book = AlertBook::default();
        assert!(
            book.evaluate(&rules, &stats(0, 10_000, Some(0.95)))
                .is_empty(),
            "at the thresholds"
        );
        let fired = book.evaluate(&rules, &stats(1_000, 10_001, Some(0.5)));
        assert_eq!(fired.len(), 2);
        assert!(fired.iter().all(|alert| alert.state == AlertState::Firing));
        assert!(
            book.evaluate(&rules, &stats(2_000, 20_000, Some(0.5)))
                .is_empty(),
            "fires once"
        );
        let resolved = book.evaluate(&rules, &stats(3_000, 5, None));
        assert_eq!(resolved.len(), 2);
        assert!(
            resolved
                .iter()
                .all(|alert| alert.state == AlertState::Resolved && alert.since_ms == 3_000)
        );
        assert!(book.active().is_empty());
    }

    #[test]
    fn a_for_duration_delays_firing_and_a_scope_narrows_it() {
        let rules = vec![AlertRule {
            name: "slow".into(),
            metric: AlertMetric::Backlog,
            scope: "orders/*".into(),
            comparison: Comparison::Above,
            threshold: 100.0,
            for_ms: 5_000,
            message: String::new(),
        }];
        let mut book = AlertBook::default();
        assert!(book.evaluate(&rules, &stats(0, 500, None)).is_empty());
        assert_eq!(book.active()[0].state, AlertState::Pending);
        assert!(book.evaluate(&rules, &stats(4_999, 500, None)).is_empty());
        assert_eq!(book.evaluate(&rules, &stats(5_000, 500, None)).len(), 1);
        assert!(scope_matches("*", "a/b"));
        assert!(scope_matches("orders/*", "orders/shipping"));
        assert!(!scope_matches("orders/*", "payments/shipping"));
        assert!(scope_matches("*/ship*", "orders/shipping"));
        assert!(!scope_matches("orders/billing", "orders/shipping"));
        // A `for` beyond i64's range means never (ten years on here), not a negative duration.
        let forever = vec![AlertRule {
            for_ms: u64::MAX,
            ..rules[0].clone()
        }];
        let mut patient = AlertBook::default();
        assert!(patient.evaluate(&forever, &stats(0, 500, None)).is_empty());
        assert!(
            patient
                .evaluate(&forever, &stats(315_360_000_000, 500, None))
                .is_empty()
        );
        // A pending alert that stops holding goes away without a resolve event.
        let mut pending = AlertBook::default();
        pending.evaluate(&rules, &stats(0, 500, None));
        assert!(pending.evaluate(&rules, &stats(1, 5, None)).is_empty());
        assert!(pending.active().is_empty());
    }
}
