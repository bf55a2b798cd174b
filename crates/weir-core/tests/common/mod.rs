//! What the core's integration tests share: a broker on a temporary directory with a manual
//! clock whose timers run only when a test calls `tick()`.

#![allow(dead_code)] // Each test file uses a different part of this module.

use std::sync::Arc;
use std::time::Duration;

use weir_core::{Broker, BrokerConfig, ManualClock};

/// A moment far from the epoch, so "a minute ago" is a valid timestamp.
pub const START_MS: i64 = 1_700_000_000_000;

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
            clock: Arc::new(ManualClock::new(START_MS)),
        }
    }

    pub fn config(&self) -> BrokerConfig {
        let mut config = BrokerConfig::new(self.dir.path());
        config.clock = self.clock.clone();
        // Timers run only when a test calls tick().
        config.tick_interval = Duration::from_secs(3600);
        config
    }

    pub async fn open(&self) -> Broker {
        self.open_with(self.config()).await
    }

    /// Opens the broker. A test "crashes" a broker by dropping it without shutdown; a
    /// background step it was running (a tick, a hand-over pass) may still hold the metadata
    /// store for a moment, which a real crash ends with the process. So the store being open
    /// still is waited out, briefly; any other error fails the test.
    pub async fn open_with(&self, config: BrokerConfig) -> Broker {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Broker::open(config.clone()).await {
                Ok(broker) => return broker,
                Err(error)
                    if error.to_string().contains("already open")
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => panic!("broker opens: {error}"),
            }
        }
    }
}

/// An encoded batch of text messages stamped at `START_MS`.
pub fn batch(values: &[&str]) -> bytes::Bytes {
    let mut builder = weir_core::BatchBuilder::new();
    for value in values {
        builder.push(START_MS, None, &[], value.as_bytes());
    }
    builder.finish()
}
