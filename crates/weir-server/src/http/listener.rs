//! The HTTP listener's connection and byte counters (`listener="http"` in `GET /metrics`).
//!
//! axum and hyper own the HTTP connections, so they are counted where they start: a
//! [`CountingListener`] hands axum each accepted socket wrapped in a [`CountedStream`], which
//! adds what each `read` and `write` call moved to the listener's relaxed atomics (once per
//! call, as on the native listener, never per request) and counts the connection open until
//! hyper drops it. Bytes are what crossed the socket: request and response heads included,
//! every protocol byte counted the same way as on the native listener.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::{ListenerMetrics, OpenConnection};

/// A TCP listener whose connections count themselves in `metrics`.
pub(crate) struct CountingListener {
    listener: TcpListener,
    metrics: Arc<ListenerMetrics>,
}

impl CountingListener {
    pub(crate) fn new(listener: TcpListener, metrics: Arc<ListenerMetrics>) -> CountingListener {
        CountingListener { listener, metrics }
    }
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedStream, SocketAddr) {
        // axum's own accept for a TcpListener: it logs and retries failed accepts.
        let (stream, peer) = axum::serve::Listener::accept(&mut self.listener).await;
        let stream = CountedStream {
            stream,
            open: self.metrics.connection_opened(),
        };
        (stream, peer)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

/// An accepted socket that counts the bytes through it, and itself as open until dropped.
pub(crate) struct CountedStream {
    stream: TcpStream,
    open: OpenConnection,
}

impl CountedStream {
    fn count_sent(&self, written: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(bytes)) = written {
            self.open.listener().sent(*bytes);
        }
    }
}

impl AsyncRead for CountedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(context, buf);
        if let Poll::Ready(Ok(())) = read {
            this.open.listener().received(buf.filled().len() - before);
        }
        read
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write(context, buf);
        this.count_sent(&written);
        written
    }

    // hyper writes a response's head and body in one vectored call when the socket supports
    // it (a TcpStream does): forwarded, so wrapping costs no extra system call.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffers: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.stream).poll_write_vectored(context, buffers);
        this.count_sent(&written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(context)
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(context)
    }
}
