//! One request's path through the proxy: route, cap, admit, forward, answer.

use crate::Shared;
use crate::body::{ProxyBody, TooLarge};
use crate::config::Protocol;
use crate::deadline::Deadlines;
use crate::error::ProxyError;
use crate::metrics::Outcome;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use spillway_tower::http::is_grpc;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

/// Hop-by-hop fields, never forwarded (RFC 9110 §7.6.1), each with its bit; `te` is kept when
/// it says `trailers`, which gRPC needs end to end.
const HOP_BY_HOP: [&str; 7] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "trailer", "te"];
const TE: u8 = 1 << 6;

/// The bit of a hop-by-hop field name: a switch on the length first, so most names cost no
/// string comparison at all.
fn hop_bit(name: &str) -> u8 {
    let i = match name.len() {
        2 => 6,
        7 => 4 + usize::from(name.as_bytes()[0] == b't'),
        10 => usize::from(name.as_bytes()[0] == b'k'),
        16 => 2,
        17 => 3,
        _ => return 0,
    };
    if name == HOP_BY_HOP[i] { 1 << i } else { 0 }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present; most messages carry at most
    // `Connection`, so what follows is one or two removals.
    let seen = headers.keys().fold(0u8, |seen, name| seen | hop_bit(name.as_str()));
    if seen == 0 {
        return;
    }
    if seen & 1 != 0
        && let Some(conn) = headers.remove(header::CONNECTION)
        && let Ok(conn) = conn.to_str()
    {
        // Fields named by Connection are hop-by-hop too.
        for name in conn.split(',').map(str::trim) {
            if !name.is_empty()
                && !name.eq_ignore_ascii_case("keep-alive")
                && !name.eq_ignore_ascii_case("close")
            {
                headers.remove(name);
            }
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
        if seen & (1 << i) != 0 && (1 << i != TE || headers.get(header::TE).is_some_and(|v| v != "trailers"))
        {
            headers.remove(*name);
        }
    }
}

/// What each request needs from its client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) worker: usize,
    pub(crate) listener: usize,
    pub(crate) peer: SocketAddr,
    /// HTTP/1.1: the connection's swept deadlines. HTTP/2 streams use tokio's timers.
    pub(crate) deadlines: Option<Arc<Deadlines>>,
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
    let started = tokio::time::Instant::now();

    strip_hop_by_hop(&mut parts.headers);
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
    // Pinned here, so that the timeouts below hold a pointer to it, not a copy.
    let send = std::pin::pin!(upstream.send(worker, parts, body, cap));
    let sent = match &conn.deadlines {
        Some(d) => d.within(route.config.timeout, send).await,
        None => tokio::time::timeout(route.config.timeout, send).await.map_err(drop),
    };
    let result = sent.unwrap_or(Err(ProxyError::UpstreamTimeout));
    match result {
        Ok(resp) => {
            let status = resp.status();
            admitted.record(status.is_server_error());
            metrics.duration.observe(started.elapsed().as_secs_f64());
            metrics.outcome(if status.is_server_error() {
                Outcome::server_error
            } else if status.is_client_error() {
                Outcome::client_error
            } else {
                Outcome::success
            });
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, ProxyBody::upstream(body, admitted))
        }
        Err(e) => {
            if let ProxyError::Upstream(he) = &e
                && is_too_large(he)
            {
                metrics.outcome(Outcome::invalid);
                return ProxyError::BodyTooLarge(cap).response(grpc);
            }
            admitted.record(e.is_upstream_failure());
            metrics.outcome(Outcome::upstream_error);
            tracing::debug!(route = %route.config.name, error = %e, "upstream failed");
            e.response(grpc)
        }
    }
}

fn is_too_large(e: &hyper::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<TooLarge>() {
            return true;
        }
        source = s.source();
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_bits_name_exactly_the_hop_by_hop_fields() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_bit(name), 1 << i, "{name}");
        }
        for name in ["tz", "upgrad3", "trailex", "connectiox", "keep-alivf", "x-connection-abc", "host", ""] {
            assert_eq!(hop_bit(name), 0, "{name}");
        }
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_stripped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("x-kept", "1"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["x-kept"]);

        let mut grpc = HeaderMap::new();
        grpc.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut grpc);
        assert_eq!(grpc.get(header::TE).unwrap(), "trailers");
    }
}
