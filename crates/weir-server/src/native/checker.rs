//! A transaction checker's task: forward the broker's check-back questions to the peer.
//!
//! A connection that sent `RegisterTransactionChecker` is a live producer of that group. The
//! core hands its questions (transaction ids) to the group's registered
//! [`TransactionChecker`]s; this task writes each one out as a `CheckTransaction` push with
//! correlation id 0. The peer answers, when it knows, with an ordinary `ResolveTransaction`
//! request, which `handle.rs` takes to the broker like any other; not answering is "unknown",
//! and the broker asks again after its check interval. The task ends when the writer is gone;
//! it is aborted when the connection closes, and dropping the checker then unregisters it, so
//! the broker stops asking a producer that left.

use bytes::BytesMut;
use weir_core::TransactionChecker;
use weir_proto::Response;

use super::connection::Outgoing;

/// Runs until the writer is gone (or the broker drops the checker's channel).
pub(crate) async fn forward_checks(
    mut checker: TransactionChecker,
    producer_group: String,
    outgoing: Outgoing,
) {
    let mut buffer = BytesMut::new();
    while let Some(transaction) = checker.next().await {
        tracing::debug!(transaction, group = %producer_group, "asking the producer to check");
        let check = Response::CheckTransaction {
            transaction,
            producer_group: producer_group.clone(),
        };
        if outgoing
            .send_response(&mut buffer, 0, &check)
            .await
            .is_err()
        {
            return;
        }
    }
}
