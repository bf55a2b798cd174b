//! Consumer idempotency keys: the guide's `SET processed:{id} NX EX 3600`, kept by the broker.
//!
//! A handler claims a business key before acting. The first claim wins; while it is held, other
//! claims are told it is busy; once the holder completes it, every later claim is told it is
//! done, until its time to live ends. A claim whose holder crashed expires, so the work is not
//! stuck. Completions are written durably (they are the record that the work happened); claims
//! are not (after a broker crash a claim may be lost and the work retried, which is safe
//! because nothing was completed).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Broker, lock};
use crate::error::{Error, Result};

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This caller holds the key until `expires_at_ms`: do the work, then `complete_key`.
    Acquired { expires_at_ms: i64 },
    /// Someone else holds it; retry after it expires or completes.
    Busy { holder: String, expires_at_ms: i64 },
    /// The work was already done.
    Completed { completed_at_ms: i64 },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum KeyState {
    Claimed {
        holder: String,
        expires_at_ms: i64,
    },
    Completed {
        completed_at_ms: i64,
        expires_at_ms: i64,
    },
}

impl KeyState {
    fn expires_at_ms(&self) -> i64 {
        match self {
            KeyState::Claimed { expires_at_ms, .. } | KeyState::Completed { expires_at_ms, .. } => {
                *expires_at_ms
            }
        }
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.is_empty() || key.len() > 512 {
        return Err(Error::InvalidArgument(
            "an idempotency key has 1 to 512 bytes".into(),
        ));
    }
    Ok(())
}

impl Broker {
    fn live_key(&self, key: &str, now_ms: i64) -> Result<Option<KeyState>> {
        Ok(self
            .inner
            .catalog
            .idempotency_key::<KeyState>(key)?
            .filter(|state| state.expires_at_ms() > now_ms))
    }

    /// Claims `key` for `holder` for `ttl`. Claiming a key one already holds extends it.
    pub fn claim_key(&self, key: &str, holder: &str, ttl: Duration) -> Result<Claim> {
        check_key(key)?;
        let ttl_ms = crate::config::duration_ms("idempotency key ttl", ttl)? as i64;
        let _serial = lock(&self.inner.idempotency);
        let now_ms = self.inner.config.clock.now_ms();
        match self.live_key(key, now_ms)? {
            Some(KeyState::Completed {
                completed_at_ms, ..
            }) => Ok(Claim::Completed { completed_at_ms }),
            Some(KeyState::Claimed {
                holder: current,
                expires_at_ms,
            }) if current != holder => Ok(Claim::Busy {
                holder: current,
                expires_at_ms,
            }),
            _ => {
                let expires_at_ms = now_ms.saturating_add(ttl_ms);
                let state = KeyState::Claimed {
                    holder: holder.to_owned(),
                    expires_at_ms,
                };
                self.inner
                    .catalog
                    .save_idempotency_key(key, Some(&state), false)?;
                Ok(Claim::Acquired { expires_at_ms })
            }
        }
    }

    /// Marks `key` done (remembered for `ttl`). Fails if another holder has claimed it since.
    pub fn complete_key(&self, key: &str, holder: &str, ttl: Duration) -> Result<()> {
        check_key(key)?;
        let ttl_ms = crate::config::duration_ms("idempotency key ttl", ttl)? as i64;
        let _serial = lock(&self.inner.idempotency);
        let now_ms = self.inner.config.clock.now_ms();
        match self.live_key(key, now_ms)? {
            Some(KeyState::Claimed {
                holder: current, ..
            }) if current != holder => Err(Error::InvalidArgument(format!(
                "idempotency key '{key}' is held by '{current}'"
            ))),
            Some(KeyState::Completed { .. }) => Ok(()),
            _ => {
                let state = KeyState::Completed {
                    completed_at_ms: now_ms,
                    expires_at_ms: now_ms.saturating_add(ttl_ms),
                };
                self.inner
                    .catalog
                    .save_idempotency_key(key, Some(&state), true)
            }
        }
    }

    /// Gives up a claim (the work failed and may be retried by anyone).
    pub fn release_key(&self, key: &str, holder: &str) -> Result<()> {
        check_key(key)?;
        let _serial = lock(&self.inner.idempotency);
        let now_ms = self.inner.config.clock.now_ms();
        if let Some(KeyState::Claimed {
            holder: current, ..
        }) = self.live_key(key, now_ms)?
            && current == holder
        {
            self.inner
                .catalog
                .save_idempotency_key::<KeyState>(key, None, false)?;
        }
        Ok(())
    }

    /// Deletes expired keys. Runs on the timer, rarely.
    pub(super) fn expire_keys(&self, now_ms: i64) -> Result<usize> {
        let _serial = lock(&self.inner.idempotency);
        let expired: Vec<String> = self
            .inner
            .catalog
            .idempotency_keys::<KeyState>()?
            .into_iter()
            .filter(|(_, state)| state.expires_at_ms() <= now_ms)
            .map(|(key, _)| key)
            .collect();
        for key in &expired {
            self.inner
                .catalog
                .save_idempotency_key::<KeyState>(key, None, false)?;
        }
        Ok(expired.len())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{BrokerConfig, Clock, ManualClock};

    /// The guide's pattern: two consumers get the same message; the handler runs once.
    #[tokio::test]
    async fn a_key_is_processed_once_across_consumers_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(1_000_000));
        let mut config = BrokerConfig::new(dir.path());
        config.clock = clock.clone();
        let broker = Broker::open(config).await.unwrap();
        let hour = Duration::from_secs(3600);
        assert!(matches!(
            broker.claim_key("order-1", "worker-a", hour).unwrap(),
            Claim::Acquired { .. }
        ));
        assert!(
            matches!(broker.claim_key("order-1", "worker-b", hour).unwrap(), Claim::Busy { holder, .. } if holder == "worker-a")
        );
        broker.complete_key("order-1", "worker-a", hour).unwrap();
        assert!(matches!(
            broker.claim_key("order-1", "worker-b", hour).unwrap(),
            Claim::Completed { .. }
        ));
        clock.advance(hour + Duration::from_millis(1));
        assert!(matches!(
            broker.claim_key("order-1", "worker-b", hour).unwrap(),
            Claim::Acquired { .. }
        ));

        // A crashed holder's claim expires; a released one is free at once.
        assert!(matches!(
            broker
                .claim_key("order-2", "crashed", Duration::from_secs(30))
                .unwrap(),
            Claim::Acquired { .. }
        ));
        clock.advance(Duration::from_secs(31));
        assert!(matches!(
            broker.claim_key("order-2", "worker-b", hour).unwrap(),
            Claim::Acquired { .. }
        ));
        broker.release_key("order-2", "worker-b").unwrap();
        assert!(matches!(
            broker.claim_key("order-2", "worker-c", hour).unwrap(),
            Claim::Acquired { .. }
        ));
        assert!(broker.complete_key("order-2", "worker-a", hour).is_err());

        clock.advance(hour * 2);
        assert_eq!(broker.expire_keys(clock.now_ms()).unwrap(), 2);
        broker.shutdown().await;
    }
}
