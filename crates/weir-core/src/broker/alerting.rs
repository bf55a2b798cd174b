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
