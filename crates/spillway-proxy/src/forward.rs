//! One request's path through the proxy: route, cap, admit, forward, answer.

use crate::Shared;
use crate::body::{BadBody, ProxyBody, TooLarge};
use crate::config::Protocol;
use crate::deadline::Deadlines;
use crate::error::ProxyError;
use crate::hop;
use crate::metrics::{Outcome, RouteMetrics};
use crate::policy::Admitted;
use crate::server::Streams;
use crate::state::Route;
use crate::upstream::{Reply, Upgraded};
use crate::ws;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use spillway_tower::http::is_grpc;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// What each request needs from its client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) worker: usize,
    pub(crate) listener: usize,
    pub(crate) peer: SocketAddr,
    /// HTTP/1.1: the connection's swept deadlines. HTTP/2 streams use tokio's timers.
    pub(crate) deadlines: Option<Arc<Deadlines>>,
    /// For WebSocket relays, which outlive their request.
    pub(crate) streams: Streams,
}

/// Serves one request that arrived on `conn`.
///
/// The request's head is kept once, in this future; everything below borrows it. (An `async
/// fn` keeps a second copy of each argument it takes by value, and hyper moves this future
/// once per request: its size is paid in copies.)
pub(crate) fn handle(
    conn: Arc<Conn>,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<ProxyBody>, Infallible>> + Send + 'static {
    if let Some(d) = &conn.deadlines {
        d.busy();
    }
    let grpc = is_grpc(&req);
    let (mut parts, body) = req.into_parts();
    async move {
        let mut resp = serve(&conn, &mut parts, body, grpc).await;
        if conn.deadlines.is_some() {
            // The next head's deadline starts when this response is done with.
            resp.body_mut().on_drop(conn);
        }
        Ok(resp)
    }
}

async fn serve(conn: &Conn, parts: &mut Parts, body: Incoming, grpc: bool) -> Response<ProxyBody> {
    let (shared, worker, peer) = (&conn.shared, conn.worker, conn.peer);
    // A guard, not a clone of the Arc: no shared reference count touched per request.
    let state = shared.state.load();
    let Some(route) = state.route(conn.listener, parts) else {
        return ProxyError::NoRoute.response(grpc);
    };
    let metrics = &route.metrics;
    let cap = route.config.max_body_bytes;
    let declared =
        parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        metrics.outcome(Outcome::invalid);
        return ProxyError::BodyTooLarge(cap).response(grpc);
    }
    let hop_fields = hop::scan(&parts.headers);
    if hop_fields & hop::TRANSFER_ENCODING != 0 && !hop::chunked_only(&parts.headers) {
        metrics.outcome(Outcome::invalid);
        return ProxyError::UnsupportedCoding.response(grpc);
    }
    let listener = &state.listeners[conn.listener];
    let upstream = &route.upstream;
    let mut admitted = match route
        .policy
        .admit(parts, peer, &listener.client_ip, upstream.breaker.as_ref(), metrics)
        .await
    {
        Ok(a) => a,
        Err(refused) => return ProxyError::Overloaded(refused).response(grpc),
    };
    let started = Instant::now();

    let websocket = hop_fields & hop::UPGRADE != 0
        && upstream.config.protocol == Protocol::Http1
        && ws::is_upgrade(parts);
    hop::strip_seen(&mut parts.headers, hop_fields);
    if listener.config.forwarded_for {
        append_forwarded_for(&mut parts.headers, peer);
    }
    if upstream.config.protocol == Protocol::Http1 {
        // HTTP/1.1 upstreams take origin-form; an h2 client's authority becomes Host.
        if let Some(authority) = parts.uri.authority()
            && !parts.headers.contains_key(header::HOST)
            && let Ok(host) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, host);
        }
        if parts.uri.scheme().is_some() {
            let mut p = http::uri::Parts::default();
            p.path_and_query = parts.uri.path_and_query().cloned();
            parts.uri = Uri::from_parts(p).unwrap_or_default();
        }
        parts.version = http::Version::HTTP_11;
    } else {
        parts.version = http::Version::HTTP_2;
        if parts.uri.authority().is_none() {
            parts.uri = absolute(&parts.uri, &parts.headers, upstream.config.addrs[0]);
        }
    }
    if websocket {
        // Boxed: a rare path whose future the other requests should not carry.
        return Box::pin(upgrade(route, conn, parts, admitted, grpc, started)).await;
    }
    // Pinned here, so that the timeouts below hold a pointer to it, not a copy.
    let send = std::pin::pin!(upstream.send(worker, parts, body, cap));
    let sent = match &conn.deadlines {
        Some(d) => d.within(route.config.timeout, send).await,
        None => tokio::time::timeout(route.config.timeout, send).await.map_err(drop),
    };
    let result = sent.unwrap_or(Err(ProxyError::UpstreamTimeout));
    match result {
        Ok(resp) => {
            answered(metrics, &mut admitted, resp.status(), started);
            let (mut parts, body) = resp.into_parts();
            if !matches!(body, Reply::H1(_)) {
                // (The HTTP/1.1 exchange never keeps them.)
                hop::strip(&mut parts.headers);
            }
            Response::from_parts(parts, ProxyBody::upstream(body, admitted))
        }
        Err(e) => {
            if let Some(fault) = client_fault(&e, cap) {
                // The client's body failed the upstream exchange: the client's fault.
                metrics.outcome(Outcome::invalid);
                return fault.response(grpc);
            }
            tracing::debug!(route = %route.config.name, error = %e, "upstream failed");
            failed(metrics, &mut admitted, &e);
            e.response(grpc)
        }
    }
}

/// Counts an upstream's answer: for the admission (adaptive limit, breaker), the duration
/// histogram and the outcome.
fn answered(metrics: &RouteMetrics, admitted: &mut Admitted, status: StatusCode, started: Instant) {
    admitted.record(status.is_server_error());
    metrics.duration.observe(started.elapsed().as_secs_f64());
    metrics.outcome(if status.is_server_error() {
        Outcome::server_error
    } else if status.is_client_error() {
        Outcome::client_error
    } else {
        Outcome::success
    });
}

/// Counts an upstream that failed to answer.
fn failed(metrics: &RouteMetrics, admitted: &mut Admitted, e: &ProxyError) {
    admitted.record(e.is_upstream_failure());
    metrics.outcome(Outcome::upstream_error);
}

/// A WebSocket upgrade: passed to the upstream on a fresh connection; on 101 the relay takes
/// both sides over (see `ws`), and the request's admission ends with the 101.
async fn upgrade(
    route: &Route,
    conn: &Conn,
    parts: &mut Parts,
    mut admitted: Admitted,
    grpc: bool,
    started: Instant,
) -> Response<ProxyBody> {
    let (config, metrics) = (route.config.websocket, &route.metrics);
    // A slot is taken before the upstream is asked, so that a burst cannot pass the limit.
    let Some(slot) = ws::Slot::take(&metrics.ws.open, config.max_connections) else {
        metrics.outcome(Outcome::rejected);
        return ProxyError::WebSocketsFull.response(grpc);
    };
    let Some(client) = ws::take_client(parts) else {
        metrics.outcome(Outcome::invalid);
        return ProxyError::NoRoute.response(grpc);
    };
    ws::restore_upgrade_fields(&mut parts.headers);
    let answer = tokio::time::timeout(route.config.timeout, route.upstream.upgrade(conn.worker, parts)).await;
    match answer.unwrap_or(Err(ProxyError::UpstreamTimeout)) {
        Ok(Upgraded::Switched(head, io)) => {
            answered(metrics, &mut admitted, head.status(), started);
            let relay = ws::Relay {
                slot,
                client,
                upstream: io,
                config,
                metrics: metrics.ws.clone(),
                streams: conn.streams.clone(),
            };
            tokio::spawn(relay.run());
            let (mut head, ()) = head.into_parts();
            ws::restore_upgrade_fields(&mut head.headers);
            Response::from_parts(head, ProxyBody::empty())
        }
        Ok(Upgraded::Answered(resp)) => {
            answered(metrics, &mut admitted, resp.status(), started);
            resp.map(|body| ProxyBody::upstream(body, admitted))
        }
        Err(e) => {
            failed(metrics, &mut admitted, &e);
            e.response(grpc)
        }
    }
}

/// An upstream exchange that failed because of the client's body: over the cap (413), or
/// unreadable (400).
fn client_fault(e: &ProxyError, cap: u64) -> Option<ProxyError> {
    let ProxyError::Upstream(e) = e else { return None };
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<TooLarge>() {
            return Some(ProxyError::BodyTooLarge(cap));
        }
        if s.is::<BadBody>() {
            return Some(ProxyError::BadBody);
        }
        source = s.source();
    }
    None
}

/// Appends the peer to `X-Forwarded-For` (formatted on the stack).
fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    use std::io::Write;
    let mut buf = [0u8; 128];
    let mut w = &mut buf[..];
    let prior = headers.get(header::HeaderName::from_static("x-forwarded-for"));
    let ok = match prior {
        Some(p) => w.write_all(p.as_bytes()).and_then(|()| write!(w, ", {}", peer.ip())),
        None => write!(w, "{}", peer.ip()),
    };
    let len = 128 - w.len();
    if ok.is_ok()
        && let Ok(v) = HeaderValue::from_bytes(&buf[..len])
    {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
}

fn absolute(uri: &Uri, headers: &HeaderMap, fallback: SocketAddr) -> Uri {
    let authority = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .unwrap_or_else(|| fallback.to_string().parse().expect("a socket address is an authority"));
    let mut p = http::uri::Parts::default();
    p.scheme = Some(http::uri::Scheme::HTTP);
    p.authority = Some(authority);
    p.path_and_query =
        uri.path_and_query().cloned().or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
    Uri::from_parts(p).unwrap_or_default()
}
