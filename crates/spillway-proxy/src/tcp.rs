//! TCP (L4) mode: `[[tcp]]` listeners proxy raw bytes to an upstream, for protocols the proxy
//! does not speak (databases, brokers, anything over TCP).
//!
//! Backpressure without a protocol:
//! - a connection limit over all workers; past it a connection waits unread in a bounded queue
//!   (its bytes stay in the kernel, whose window pushes back on the client) or, with
//!   `queue = 0` or after `queue_timeout`, is closed at once;
//! - one buffer of `buffer` bytes per direction per connection: when a side stops reading,
//!   its buffer fills and the proxy stops reading the other side, so TCP carries the
//!   backpressure end to end and memory stays at `2 × buffer` per connection.

use crate::config::TcpConfig;
use crate::metrics::{Metrics, TcpMetrics};
use crate::policy::ProxyClock;
use spillway::limit::ConcurrencyLimiter;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::TcpStream;

/// One `[[tcp]]` listener's shared state: its limit and its metrics.
#[derive(Debug)]
pub(crate) struct TcpProxy {
    pub(crate) config: TcpConfig,
    limiter: ConcurrencyLimiter<ProxyClock>,
    next: AtomicUsize,
    metrics: TcpMetrics,
}

impl TcpProxy {
    pub(crate) fn new(config: TcpConfig, metrics: &Metrics) -> Self {
        let limiter = ConcurrencyLimiter::builder_with_clock(config.max_connections, ProxyClock::new())
            .queue(config.queue)
            .queue_timeout(config.queue_timeout)
            .build();
        let metrics = metrics.tcp(&config.name);
        Self { config, limiter, next: AtomicUsize::new(0), metrics }
    }

    /// Proxies one accepted connection until both sides are done; `_open` is held meanwhile
    /// (the worker's drain counts them).
    pub(crate) async fn serve(self: Arc<Self>, mut client: TcpStream, _open: Arc<()>) {
        let Ok(_slot) = self.limiter.acquire().await else {
            self.metrics.rejected.inc();
            // Dropping the stream closes it; nothing of it was read.
            return;
        };
        let addrs = &self.config.addrs;
        let addr = addrs[self.next.fetch_add(1, Ordering::Relaxed) % addrs.len()];
        let mut upstream =
            match tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                _ => {
                    self.metrics.upstream_error.inc();
                    return;
                }
            };
        let _ = upstream.set_nodelay(true);
        self.metrics.accepted.inc();
        let _open = Open::new(&self.metrics);
        let size = self.config.buffer;
        // Errors (a reset, say) end the connection like a close does: there is no one to tell.
        let _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, size, size).await;
    }
}

/// Counts an open connection in the gauge until dropped (also when a drain cuts it short).
struct Open<'a>(&'a TcpMetrics);

impl<'a> Open<'a> {
    fn new(m: &'a TcpMetrics) -> Self {
        m.open.inc();
        Self(m)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.dec();
    }
}
