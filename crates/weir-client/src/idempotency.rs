//! Consumer idempotency keys on [`Client`]: claim a business key before doing the work it
//! names, complete it after, release it on failure — the broker-kept form of Redis's
//! `SET processed:{id} NX EX 3600`, so a handler runs once per key across redeliveries and
//! competing consumers. A claim lapses after its TTL, so one held by a crashed consumer
//! expires.

use std::time::Duration;

use weir_proto::{ClaimOutcome, Request, Response};

use crate::client::{Client, milliseconds};
use crate::connection::unexpected;
use crate::error::Result;

impl Client {
    /// Claims `key` for `holder` for `ttl`: [`ClaimOutcome::Acquired`] (do the work, then
    /// [`Client::complete_key`]), [`ClaimOutcome::Busy`] (another holder has it), or
    /// [`ClaimOutcome::Completed`] (the work was done: skip it). Claiming a key one holds
    /// extends the claim.
    ///
    /// ```no_run
    /// # async fn run(client: weir_client::Client) -> weir_client::Result<()> {
    /// use std::time::Duration;
    /// use weir_client::ClaimOutcome;
    /// let hour = Duration::from_secs(3600);
    /// if let ClaimOutcome::Acquired { .. } = client.claim_key("payment-17", "worker-1", hour).await? {
    ///     // … charge the card …
    ///     client.complete_key("payment-17", "worker-1", hour).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn claim_key(&self, key: &str, holder: &str, ttl: Duration) -> Result<ClaimOutcome> {
        let request = Request::ClaimKey {
            key: key.to_owned(),
            holder: holder.to_owned(),
            ttl_ms: milliseconds(ttl),
        };
        match self.request(&request).await? {
            Response::Claimed(outcome) => Ok(outcome),
            other => Err(unexpected("Claimed", &other)),
        }
    }

    /// Marks the work for `key` done, remembered for `ttl`: later claims are told
    /// `Completed`. Refused with `invalid_argument` if another holder claimed it since.
    pub async fn complete_key(&self, key: &str, holder: &str, ttl: Duration) -> Result<()> {
        self.request_ok(&Request::CompleteKey {
            key: key.to_owned(),
            holder: holder.to_owned(),
            ttl_ms: milliseconds(ttl),
        })
        .await
    }

    /// Gives up a claim (the work failed and may be retried by anyone). A release by anyone
    /// but the holder changes nothing.
    pub async fn release_key(&self, key: &str, holder: &str) -> Result<()> {
        self.request_ok(&Request::ReleaseKey {
            key: key.to_owned(),
            holder: holder.to_owned(),
        })
        .await
    }
}
