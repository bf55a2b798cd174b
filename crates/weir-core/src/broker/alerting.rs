//! Alert rules on the broker: evaluation on the timer, the rules' API, and the event stream.

use super::{Broker, lock, read, write};
use crate::alerts::{Alert, AlertRule, AlertState};
use crate::error::{Error, Result};

/// A scope is `topic/subscription` with wildcards: two names of at most 200 bytes and a slash.
const MAX_SCOPE_BYTES: usize = 401;

/// Longest message of a rule: it is logged and posted with every alert.
const MAX_MESSAGE_BYTES: usize = 4096;

impl Broker {
    /// Applies the rules to a fresh stats snapshot; logs and broadcasts what fired or resolved.
    pub(super) fn evaluate_alerts(&self) {
        let rules = read(&self.inner.alert_rules).clone();
        if rules.is_empty() {
            return;
        }
        let stats = self.stats();
        let changes = lock(&self.inner.alert_book).evaluate(&rules, &stats);
        for alert in changes {
            match alert.state {
                AlertState::Firing => tracing::warn!(
                    rule = %alert.rule,
                    scope = %alert.scope,
                    value = alert.value,
                    threshold = alert.threshold,
                    "alert firing: {}",
                    alert.message
                ),
                _ => tracing::info!(rule = %alert.rule, scope = %alert.scope, "alert resolved"),
            }
            // No receiver is fine: nobody listens.
            let _ = self.inner.alert_events.send(alert);
        }
    }

    /// Pending and firing alerts.
    pub fn alerts(&self) -> Vec<Alert> {
        lock(&self.inner.alert_book).active()
    }

    /// Every alert that fires or resolves from now on.
    pub fn alert_events(&self) -> tokio::sync::broadcast::Receiver<Alert> {
        self.inner.alert_events.subscribe()
    }

    pub fn alert_rules(&self) -> Vec<AlertRule> {
        read(&self.inner.alert_rules).clone()
    }

    /// Adds a rule or replaces the one with its name; saved, so it outlives a restart.
    pub fn set_alert_rule(&self, rule: AlertRule) -> Result<()> {
        // Names travel in URLs (`/v1/alerts/rules/{name}`) and metric labels: the same rule
        // as topics keeps them plain.
        crate::catalog::valid_name("alert rule", &rule.name)?;
        if !rule.threshold.is_finite() {
            return Err(Error::InvalidArgument(
                "an alert rule needs a finite threshold".into(),
            ));
        }
        if rule.scope.is_empty() || rule.scope.len() > MAX_SCOPE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "an alert rule's scope is 1 to {MAX_SCOPE_BYTES} bytes ('*' matches everything)"
            )));
        }
        if rule.message.len() > MAX_MESSAGE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "an alert rule's message is at most {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        let mut rules = write(&self.inner.alert_rules);
        let mut updated = rules.clone();
        match updated
            .iter_mut()
            .find(|existing| existing.name == rule.name)
        {
            Some(existing) => *existing = rule,
            None => updated.push(rule),
        }
        self.inner.catalog.save_alert_rules(&updated)?;
        *rules = updated;
        Ok(())
    }

    pub fn delete_alert_rule(&self, name: &str) -> Result<()> {
        let mut rules = write(&self.inner.alert_rules);
        if !rules.iter().any(|rule| rule.name == name) {
            return Err(Error::NotFound(format!("no alert rule '{name}'")));
        }
        let updated: Vec<AlertRule> = rules
            .iter()
            .filter(|rule| rule.name != name)
            .cloned()
            .collect();
        self.inner.catalog.save_alert_rules(&updated)?;
        *rules = updated;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::alerts::{AlertMetric, AlertState};
    use crate::{Broker, BrokerConfig, ManualClock, TopicConfig};

    /// Issue 10 #14: a poisoned partition refuses every write until the broker restarts, so
    /// the built-in rule `partition-poisoned` fires for it, naming the partition.
    #[tokio::test]
    async fn a_poisoned_partition_fires_the_built_in_alert() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = BrokerConfig::new(dir.path());
        config.clock = Arc::new(ManualClock::new(1_000_000));
        let broker = Broker::open(config).await.unwrap();
        let topic_config = TopicConfig {
            partitions: 3,
            ..TopicConfig::default()
        };
        broker.create_topic("orders", topic_config).await.unwrap();
        broker.evaluate_alerts();
        assert!(broker.alerts().is_empty(), "{:?}", broker.alerts());

        let topic = broker.find_topic("orders").unwrap();
        topic.partitions[1].inject_panic().await;
        // The writer thread poisons the partition as it unwinds.
        for _ in 0..200 {
            if topic.partitions[1].health.is_poisoned() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        broker.evaluate_alerts();
        let alerts = broker.alerts();
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let alert = &alerts[0];
        assert_eq!(alert.rule, "partition-poisoned");
        assert_eq!(alert.scope, "orders/partition-1");
        assert_eq!(alert.metric, AlertMetric::PoisonedPartition);
        assert_eq!(alert.state, AlertState::Firing);
        assert!(alert.message.contains("restart the broker"), "{alert:?}");
        drop(topic);
        broker.shutdown().await;
    }
}
