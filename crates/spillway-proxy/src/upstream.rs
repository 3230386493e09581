//! Upstreams: connection pools with keep-alive, a cap on open connections, a connect timeout,
//! and the upstream's circuit breaker.
//!
//! Each worker thread has its own idle list per upstream (its runtime is single-threaded, so
//! the lock is never contended): checking a connection out is a pop, giving it back a push.
//! HTTP/1.1 connections carry one request at a time and return to the list when the response
//! body has been read to its end; an h2c upstream has one multiplexed connection per worker.

use crate::body::UpstreamBody;
use crate::config::{Protocol, UpstreamConfig};
use crate::error::ProxyError;
use crate::policy::ProxyClock;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use spillway::breaker::CircuitBreaker;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One upstream's live state.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) config: UpstreamConfig,
    /// The breaker and whether it is dry-run.
    pub(crate) breaker: Option<(Arc<CircuitBreaker<ProxyClock>>, bool)>,
    next: AtomicUsize,
    open: Arc<AtomicUsize>,
    /// Per worker: idle HTTP/1.1 connections, or the h2c connection.
    idle: Box<[Mutex<Idle>]>,
}

#[derive(Debug, Default)]
struct Idle {
    h1: Vec<http1::SendRequest<UpstreamBody>>,
    h2: Option<http2::SendRequest<UpstreamBody>>,
}

/// A connection checked out for one request, given back by [`Pooled::release`].
#[derive(Debug)]
pub(crate) struct Pooled {
    upstream: Arc<Upstream>,
    worker: usize,
    sender: http1::SendRequest<UpstreamBody>,
}

impl Pooled {
    /// The response was read to its end: the connection can carry the next request.
    pub(crate) fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        let mut idle = self.upstream.idle[self.worker].lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: never more idle than may be open.
        if idle.h1.len() < self.upstream.config.max_connections {
            idle.h1.push(self.sender);
        }
    }
}

/// Counts an open connection until its task ends.
struct OpenGuard(Arc<AtomicUsize>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Upstream {
    pub(crate) fn new(config: UpstreamConfig, workers: usize) -> Self {
        let breaker = config.breaker.as_ref().map(|b| {
            let breaker = CircuitBreaker::with_clock(b.config, ProxyClock::new());
            if b.dry_run {
                breaker.metrics_only();
            }
            (Arc::new(breaker), b.dry_run)
        });
        Self {
            config,
            breaker,
            next: AtomicUsize::new(0),
            open: Arc::new(AtomicUsize::new(0)),
            idle: (0..workers).map(|_| Mutex::default()).collect(),
        }
    }

    /// Open connections, over all workers.
    pub(crate) fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Sends `req` on worker `worker`'s pool.
    pub(crate) async fn send(
        self: &Arc<Self>,
        worker: usize,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Option<Pooled>), ProxyError> {
        if self.config.protocol == Protocol::H2c {
            let mut sender = match self.h2_open(worker) {
                Some(s) => s,
                // Boxed, like every connect below: a rare path whose large future should not
                // be carried by every request.
                None => Box::pin(self.connect_h2(worker)).await?,
            };
            return sender.send_request(req).await.map(|r| (r, None)).map_err(ProxyError::Upstream);
        }
        // A pooled connection may have been closed by the upstream while idle; a request it
        // refused before sending anything is retried once on a fresh connection.
        for attempt in 0..2 {
            let (mut sender, reused) = match self.checkout(worker).await {
                Some(s) if attempt == 0 => (s, true),
                _ => (Box::pin(self.connect_h1()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return Ok((resp, Some(Pooled { upstream: self.clone(), worker, sender }))),
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(ProxyError::Upstream(e.into_error())),
                },
            }
        }
        unreachable!("the second attempt uses a fresh connection and returns")
    }

    /// An idle connection: most recently used first (warm, least likely closed by the peer).
    /// One given back a moment ago may still be finishing its last response; wait for that.
    async fn checkout(&self, worker: usize) -> Option<http1::SendRequest<UpstreamBody>> {
        loop {
            let mut s = self.idle[worker].lock().unwrap_or_else(|e| e.into_inner()).h1.pop()?;
            if s.is_ready() || (!s.is_closed() && s.ready().await.is_ok()) {
                return Some(s);
            }
        }
    }

    fn h2_open(&self, worker: usize) -> Option<http2::SendRequest<UpstreamBody>> {
        let idle = self.idle[worker].lock().unwrap_or_else(|e| e.into_inner());
        idle.h2.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    async fn connect_h2(&self, worker: usize) -> Result<http2::SendRequest<UpstreamBody>, ProxyError> {
        let (io, guard) = self.dial().await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(ProxyError::Upstream)?;
        tokio::spawn(async move {
            let _ = conn.await;
            drop(guard);
        });
        self.idle[worker].lock().unwrap_or_else(|e| e.into_inner()).h2 = Some(sender.clone());
        Ok(sender)
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<UpstreamBody>, ProxyError> {
        let (io, guard) = self.dial().await?;
        let (sender, conn) =
            http1::Builder::new().writev(false).handshake(io).await.map_err(ProxyError::Upstream)?;
        tokio::spawn(async move {
            let _ = conn.await;
            drop(guard);
        });
        Ok(sender)
    }

    async fn dial(&self) -> Result<(TokioIo<tokio::net::TcpStream>, OpenGuard), ProxyError> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.config.max_connections {
            self.open.fetch_sub(1, Ordering::Relaxed);
            return Err(ProxyError::PoolExhausted);
        }
        let guard = OpenGuard(self.open.clone());
        let addrs = &self.config.addrs;
        let addr = addrs[self.next.fetch_add(1, Ordering::Relaxed) % addrs.len()];
        let stream = tokio::time::timeout(self.config.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| ProxyError::ConnectTimeout)?
            .map_err(ProxyError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok((TokioIo::new(stream), guard))
    }
}
