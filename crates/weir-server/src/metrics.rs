//! What the front ends measure themselves: the numbers the core cannot see because they are
//! about sockets, not messages. Relaxed atomics bumped once per `read`/`write` call (a read
//! fills a 16 KiB buffer with many frames, a write flushes a batch of frames), never once per
//! message, so they cost nothing measurable on the hot path. The native listener bumps them
//! in its connection loop; the HTTP listener through the counting socket wrapper of
//! `http/listener.rs`. Rendered by `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one listener, shared by its accept loop and its connection tasks.
#[derive(Debug, Default)]
pub struct ListenerMetrics {
    connections_open: AtomicU64,
    connections_accepted: AtomicU64,
    connections_refused: AtomicU64,
    received_bytes: AtomicU64,
    sent_bytes: AtomicU64,
}

/// A listener's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerSnapshot {
    pub connections_open: u64,
    /// Since the server started.
    pub connections_accepted: u64,
    /// Turned away over the connection limit, since the server started.
    pub connections_refused: u64,
    /// Bytes read from clients' sockets, since the server started.
    pub received_bytes: u64,
    /// Bytes written to clients' sockets, since the server started.
    pub sent_bytes: u64,
}

impl ListenerMetrics {
    /// Counts a connection as accepted and open until the returned guard is dropped: dropping
    /// is what every way a connection task can end has in common (even being aborted).
    pub(crate) fn connection_opened(self: &Arc<Self>) -> OpenConnection {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection {
            metrics: self.clone(),
        }
    }

    pub(crate) fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn received(&self, bytes: usize) {
        self.received_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.sent_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> ListenerSnapshot {
        ListenerSnapshot {
            connections_open: self.connections_open.load(Ordering::Relaxed),
            connections_accepted: self.connections_accepted.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
        }
    }
}

/// An open connection, counted until dropped.
pub(crate) struct OpenConnection {
    metrics: Arc<ListenerMetrics>,
}

impl OpenConnection {
    /// The counters of the listener that accepted it, for its bytes.
    pub(crate) fn listener(&self) -> &ListenerMetrics {
        &self.metrics
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics
            .connections_open
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every listener's counters. One per [`crate::Server`]; the HTTP API renders it.
#[derive(Debug, Default)]
pub struct ServerMetrics {
    /// The native protocol listener.
    pub native: Arc<ListenerMetrics>,
    /// The HTTP listener (API and `/metrics` itself), counted by
    /// [`crate::http::HttpApi::serve`].
    pub http: Arc<ListenerMetrics>,
}
