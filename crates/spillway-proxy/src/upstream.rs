//! Upstreams: connection pools with keep-alive, a cap on open connections, a connect timeout,
//! and the upstream's circuit breaker.
//!
//! Each worker thread has its own idle list per upstream (its runtime is single-threaded, so
//! the lock is never contended): checking a connection out is a pop, giving it back a push.
//! HTTP/1.1 connections carry one request at a time and return to the list when the response
//! body has been read to its end; an h2c upstream has one multiplexed connection per worker.
//!
//! A request without a body to an HTTP/1.1 upstream is exchanged in its own task ([`crate::h1`]);
//! one with a body goes through hyper's client, which writes the body while it watches for an
//! early answer. Each kind keeps its own idle list.

use crate::body::UpstreamBody;
use crate::config::{Protocol, UpstreamConfig};
use crate::error::ProxyError;
use crate::h1;
use crate::policy::ProxyClock;
use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response, request};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use spillway::breaker::CircuitBreaker;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

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
    /// For requests without a body.
    h1: Vec<h1::Conn>,
    /// For requests with one, driven by hyper.
    h1_hyper: Vec<http1::SendRequest<UpstreamBody>>,
    h2: Option<http2::SendRequest<UpstreamBody>>,
}

/// An upstream's answer body; the connection it came on goes back to the pool after a clean
/// end.
#[derive(Debug)]
pub(crate) enum Reply {
    H1(h1::Body),
    Hyper { body: Incoming, pooled: Option<Pooled> },
}

/// The upstream's answer to an upgrade request.
#[derive(Debug)]
pub(crate) enum Upgraded {
    /// 101, with the connection: its socket, bytes read past the head, its open count.
    Switched(Response<()>, (tokio::net::TcpStream, bytes::BytesMut, OpenGuard)),
    /// Any other answer.
    Answered(Response<Reply>),
}

/// A failure of either kind of reply body.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Body for Reply {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Reply::H1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Reply::Hyper { body, pooled } => {
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                let clean = frame.is_none() || (matches!(frame, Some(Ok(_))) && body.is_end_stream());
                if (clean || matches!(frame, Some(Err(_))))
                    && let Some(p) = pooled.take()
                    && clean
                {
                    p.release();
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::H1(body) => body.is_end_stream(),
            Reply::Hyper { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::H1(body) => body.size_hint(),
            Reply::Hyper { body, .. } => body.size_hint(),
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        // hyper stops polling once `is_end_stream` says so: that is a clean end too.
        if let Reply::Hyper { body, pooled } = self
            && body.is_end_stream()
            && let Some(p) = pooled.take()
        {
            p.release();
        }
    }
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
        if idle.h1_hyper.len() < self.upstream.config.max_connections {
            idle.h1_hyper.push(self.sender);
        }
    }
}

/// Counts an open connection until it closes.
#[derive(Debug)]
pub(crate) struct OpenGuard(Arc<AtomicUsize>);

#[cfg(test)]
impl OpenGuard {
    /// A guard over a count the caller has already raised.
    pub(crate) fn new(open: Arc<AtomicUsize>) -> Self {
        Self(open)
    }
}

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

    /// Sends a request on worker `worker`'s pool; its body is refused past `cap` bytes. The
    /// head is borrowed for a request without a body to an HTTP/1.1 upstream, taken otherwise.
    pub(crate) fn send<'a>(
        self: &'a Arc<Self>,
        worker: usize,
        parts: &'a mut request::Parts,
        body: Incoming,
        cap: u64,
    ) -> impl Future<Output = Result<Response<Reply>, ProxyError>> + Send + 'a {
        if self.config.protocol == Protocol::Http1 && body.is_end_stream() {
            return Either::Left(self.exchange_h1(worker, parts));
        }
        let parts = std::mem::replace(parts, Request::new(()).into_parts().0);
        // Boxed: hyper's client has a larger future, which the requests without a body, the
        // most common kind, should not carry.
        Either::Right(Box::pin(
            self.send_hyper(worker, Request::from_parts(parts, UpstreamBody::new(body, cap))),
        ))
    }

    /// Sends a request through hyper's client: to an h2c upstream, or one with a body.
    async fn send_hyper(
        self: &Arc<Self>,
        worker: usize,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Reply>, ProxyError> {
        if self.config.protocol == Protocol::H2c {
            let mut sender = match self.h2_open(worker) {
                Some(s) => s,
                // Boxed, like every connect below: a rare path whose large future should not
                // be carried by every request.
                None => Box::pin(self.connect_h2(worker)).await?,
            };
            let resp = sender.send_request(req).await.map_err(ProxyError::Upstream)?;
            return Ok(resp.map(|body| Reply::Hyper { body, pooled: None }));
        }
        // A pooled connection may have been closed by the upstream while idle; a request it
        // refused before sending anything is retried once on a fresh connection.
        for attempt in 0..2 {
            let (mut sender, reused) = match self.checkout_hyper(worker).await {
                Some(s) if attempt == 0 => (s, true),
                _ => (Box::pin(self.connect_h1()).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let pooled = Some(Pooled { upstream: self.clone(), worker, sender });
                    return Ok(resp.map(|body| Reply::Hyper { body, pooled }));
                }
                Err(mut e) => match e.take_message() {
                    Some(r) if reused => req = r,
                    _ => return Err(ProxyError::Upstream(e.into_error())),
                },
            }
        }
        unreachable!("the second attempt uses a fresh connection and returns")
    }

    /// A bodiless request to an HTTP/1.1 upstream, exchanged in the caller's task. A reused
    /// connection the upstream closed before answering is retried once on a fresh one, if
    /// the method is idempotent (RFC 9110 §9.2.2).
    async fn exchange_h1(
        self: &Arc<Self>,
        worker: usize,
        parts: &request::Parts,
    ) -> Result<Response<Reply>, ProxyError> {
        for attempt in 0..2 {
            let pooled = if attempt == 0 { self.checkout_h1(worker) } else { None };
            let reused = pooled.is_some();
            let mut conn = match pooled {
                Some(c) => c,
                None => {
                    let (io, open) = Box::pin(self.dial()).await?;
                    h1::Conn::new(io, open)
                }
            };
            match conn.exchange(parts).await {
                Ok(head) => {
                    return Ok(head.map(|framing| Reply::H1(conn.body(framing, self.clone(), worker))));
                }
                Err(h1::Error::Stale(_)) if reused && parts.method.is_idempotent() => {}
                Err(e) => return Err(ProxyError::Exchange(e)),
            }
        }
        unreachable!("the second attempt uses a fresh connection and returns")
    }

    /// An upgrade request (WebSocket), on a fresh connection: one that switches protocols is
    /// never pooled.
    pub(crate) async fn upgrade(
        self: &Arc<Self>,
        worker: usize,
        parts: &request::Parts,
    ) -> Result<Upgraded, ProxyError> {
        let (io, open) = Box::pin(self.dial()).await?;
        let mut conn = h1::Conn::new(io, open);
        Ok(match conn.upgrade(parts).await.map_err(ProxyError::Exchange)? {
            h1::Upgrade::Switched(head) => Upgraded::Switched(head, conn.into_parts()),
            h1::Upgrade::Answered(head) => {
                Upgraded::Answered(head.map(|framing| Reply::H1(conn.body(framing, self.clone(), worker))))
            }
        })
    }

    /// An idle connection for a bodiless request: most recently used first.
    fn checkout_h1(&self, worker: usize) -> Option<h1::Conn> {
        let mut idle = self.idle[worker].lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.h1.pop() {
            if c.is_usable() {
                return Some(c);
            }
        }
        None
    }

    /// An answer was read to its end: `conn` can carry the next request.
    pub(crate) fn give_back(&self, worker: usize, conn: h1::Conn) {
        let mut idle = self.idle[worker].lock().unwrap_or_else(|e| e.into_inner());
        // Bounded: never more idle than may be open.
        if idle.h1.len() < self.config.max_connections {
            idle.h1.push(conn);
        }
    }

    /// An idle hyper connection: most recently used first (warm, least likely closed by the
    /// peer). One given back a moment ago may still be finishing its last response; wait for
    /// that.
    async fn checkout_hyper(&self, worker: usize) -> Option<http1::SendRequest<UpstreamBody>> {
        loop {
            let mut s = self.idle[worker].lock().unwrap_or_else(|e| e.into_inner()).h1_hyper.pop()?;
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
            .initial_stream_window_size(self.config.h2_stream_window)
            .initial_connection_window_size(self.config.h2_connection_window)
            .handshake(TokioIo::new(io))
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
        let (sender, conn) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(io))
            .await
            .map_err(ProxyError::Upstream)?;
        tokio::spawn(async move {
            let _ = conn.await;
            drop(guard);
        });
        Ok(sender)
    }

    async fn dial(&self) -> Result<(tokio::net::TcpStream, OpenGuard), ProxyError> {
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
        Ok((stream, guard))
    }
}
