//! The timer's background steps that can fail (storing dead letters, delivering due scheduled
//! messages, checking transactions, expiring idempotency keys, retention): a step that fails
//! backs off before its next attempt and logs at most one line every few seconds
//! ([`crate::retry::Retry`]), and every failed attempt is counted in
//! `stats().background_failures`, by step.

use std::collections::{BTreeMap, HashMap};

use super::{Broker, lock};
use crate::error::Result;
use crate::retry::Retry;

/// Background steps failing now, and failures counted since start.
#[derive(Debug, Default)]
pub(super) struct Background {
    /// By step and scope (a subscription `topic/group`, a partition `topic/partition`, or
    /// empty): only the steps whose last attempt failed, so the common case is an empty map.
    failing: HashMap<(&'static str, String), Retry>,
    /// Failed attempts since start, by step.
    failures: BTreeMap<&'static str, u64>,
}

impl Broker {
    /// Whether `step` (for `scope`) may be attempted now: it is not backing off. `scope` is
    /// only built while some step is failing.
    pub(super) fn background_due(
        &self,
        step: &'static str,
        scope: impl FnOnce() -> String,
        now_ms: i64,
    ) -> bool {
        let background = lock(&self.inner.background);
        background.failing.is_empty()
            || background
                .failing
                .get(&(step, scope()))
                .is_none_or(|retry| retry.due(now_ms))
    }

    /// Records how an attempt at `step` (doing `what`, for `scope`) went: a failure is
    /// counted, backs the step off and is logged unless a line was logged lately.
    pub(super) fn background_done<T>(
        &self,
        step: &'static str,
        scope: impl FnOnce() -> String,
        what: &str,
        result: &Result<T>,
        now_ms: i64,
    ) {
        let mut background = lock(&self.inner.background);
        match result {
            Ok(_) if background.failing.is_empty() => {}
            Ok(_) => {
                let scope = scope();
                if let Some(mut retry) = background.failing.remove(&(step, scope.clone())) {
                    let failures = retry.succeeded();
                    tracing::info!(step, scope, failures, "{what} works again");
                }
            }
            Err(error) => {
                *background.failures.entry(step).or_default() += 1;
                let scope = scope();
                let retry = background.failing.entry((step, scope.clone())).or_default();
                if let Some(line) = retry.failed(now_ms) {
                    tracing::warn!(
                        step,
                        scope,
                        %error,
                        failures = line.failures,
                        not_logged = line.unlogged,
                        retry_in_ms = line.retry_in_ms,
                        "{what} failed; will retry"
                    );
                }
            }
        }
    }

    /// Failed attempts of background steps since start, by step, every step listed.
    pub(super) fn background_failures(&self) -> BTreeMap<String, u64> {
        let background = lock(&self.inner.background);
        crate::metrics::BACKGROUND_STEPS
            .iter()
            .map(|step| {
                let count = background.failures.get(step).copied().unwrap_or(0);
                ((*step).to_owned(), count)
            })
            .collect()
    }
}
