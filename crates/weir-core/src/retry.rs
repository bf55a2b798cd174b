//! Background steps that fail are tried again on the timer, which runs every few milliseconds:
//! [`Retry`] spaces the attempts of one step that keeps failing and its log lines, so that a
//! failure that does not go away (a dead-letter topic that cannot be written, a full disk)
//! neither spins nor floods the log. How many attempts failed is counted for `stats()`.

/// The first pause after a failure; each further failure doubles it.
const FIRST_PAUSE_MS: i64 = 100;
/// The longest pause between two attempts.
const MAX_PAUSE_MS: i64 = 30_000;
/// At most one log line per step this often; the failures in between are counted in it.
const LOG_EVERY_MS: i64 = 10_000;

/// One background step's failures in a row: when to try again, and when it may log again.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Retry {
    /// Failed attempts since the last success.
    failures: u64,
    next_attempt_ms: i64,
    logged_ms: Option<i64>,
    /// Failures since the last log line.
    unlogged: u64,
}

/// What a failure should say, when it is time to say something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogLine {
    /// Failures in a row, this one included.
    pub failures: u64,
    /// Failures not logged since the previous line.
    pub unlogged: u64,
    /// How long until the next attempt.
    pub retry_in_ms: i64,
}

impl Retry {
    /// Whether the step may be attempted at `now_ms`.
    pub fn due(&self, now_ms: i64) -> bool {
        now_ms >= self.next_attempt_ms
    }

    /// Records a failed attempt at `now_ms` and pushes the next one back. Returns what to log,
    /// or `None` when a line was logged too recently.
    pub fn failed(&mut self, now_ms: i64) -> Option<LogLine> {
        self.failures += 1;
        let doublings = u32::try_from(self.failures - 1).unwrap_or(u32::MAX).min(20);
        let pause = FIRST_PAUSE_MS
            .saturating_mul(1 << doublings)
            .min(MAX_PAUSE_MS);
        self.next_attempt_ms = now_ms.saturating_add(pause);
        if self
            .logged_ms
            .is_some_and(|logged| now_ms.saturating_sub(logged) < LOG_EVERY_MS)
        {
            self.unlogged += 1;
            return None;
        }
        self.logged_ms = Some(now_ms);
        Some(LogLine {
            failures: self.failures,
            unlogged: std::mem::take(&mut self.unlogged),
            retry_in_ms: pause,
        })
    }

    /// Records a success; returns how many attempts had failed before it.
    pub fn succeeded(&mut self) -> u64 {
        std::mem::take(self).failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_back_off_and_log_lines_are_rate_limited() {
        let mut retry = Retry::default();
        let mut now = 0;
        let mut attempts: u64 = 0;
        let mut lines = Vec::new();
        // A timer every 10 ms for two minutes, against a step that always fails.
        while now < 120_000 {
            if retry.due(now) {
                attempts += 1;
                lines.extend(retry.failed(now));
            }
            now += 10;
        }
        // 100 ms, 200 ms, … 25.6 s, then every 30 s: 12 attempts, not 12,000.
        assert_eq!(attempts, 12);
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert_eq!(lines[0].failures, 1);
        assert_eq!(
            lines.iter().map(|line| line.unlogged + 1).sum::<u64>() + retry.unlogged,
            attempts,
            "every failure is logged, or counted in a later line: {lines:?}"
        );
        assert_eq!(retry.succeeded(), 12);
        assert!(retry.due(now), "a success resets the pauses");
    }
}
