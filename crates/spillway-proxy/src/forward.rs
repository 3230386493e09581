//! One request's path through the proxy: route, cap, admit, forward, answer.

use crate::Shared;
use crate::body::{ProxyBody, TooLarge, UpstreamBody};
use crate::config::Protocol;
use crate::error::ProxyError;
use crate::metrics::Outcome;
use crate::policy::Admitted;
use crate::upstream::Pooled;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use spillway_tower::http::is_grpc;
use std::net::SocketAddr;

/// What a streamed response holds until its last frame: the request's admission (permits,
/// bulkhead slot) and the upstream connection, which goes back to the pool only after a
/// clean end.
#[derive(Debug)]
pub(crate) struct Held {
    admitted: Admitted,
    pooled: Option<Pooled>,
}

impl Held {
    pub(crate) fn end(&mut self, clean: bool) {
        if let Some(p) = self.pooled.take()
            && clean
        {
            p.release();
        }
        drop(std::mem::take(&mut self.admitted));
    }
}

/// Hop-by-hop fields, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds which are present; most messages carry at most
    // `Connection`, so the removals below are one or two lookups, not eight.
    let (mut seen, mut te) = (0u8, false);
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            seen |= 1 << i;
        }
        te |= name == header::TE;
    }
    if seen != 0 {
        // Fields named by Connection are hop-by-hop too.
        if let Some(conn) = headers.remove(header::CONNECTION)
            && let Ok(conn) = conn.to_str()
        {
            for name in conn.split(',').map(str::trim) {
                if !name.eq_ignore_ascii_case("keep-alive")
                    && !name.eq_ignore_ascii_case("close")
                    && !name.is_empty()
                {
                    headers.remove(name);
                }
            }
        }
        for (i, name) in HOP_BY_HOP.iter().enumerate().skip(1) {
            if seen & (1 << i) != 0 {
                headers.remove(name);
            }
        }
    }
    // `TE: trailers` is what gRPC needs end to end; any other TE is hop-by-hop.
    if te && headers.get(header::TE).is_some_and(|v| v != "trailers") {
        headers.remove(header::TE);
    }
}

/// Serves one request that arrived on listener `listener` of worker `worker` from `peer`.
pub(crate) async fn handle(
    shared: &Shared,
    worker: usize,
    listener: usize,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let grpc = is_grpc(&req);
    // A guard, not a clone of the Arc: no shared reference count touched per request.
    let state = shared.state.load();
    let (mut parts, body) = req.into_parts();
    let Some(route) = state.route(listener, &parts) else {
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
    let listener = &state.listeners[listener];
    let upstream = &route.upstream;
    let mut admitted =
        match route.policy.admit(&parts, peer, &listener.client_ip, upstream.breaker.as_ref(), metrics).await
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
    let req = Request::from_parts(parts, UpstreamBody::new(body, cap));
    let sent = tokio::time::timeout(route.config.timeout, upstream.send(worker, req)).await;
    let result = match sent {
        Ok(r) => r,
        Err(_) => Err(ProxyError::UpstreamTimeout),
    };
    match result {
        Ok((resp, pooled)) => {
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
            Response::from_parts(parts, ProxyBody::upstream(body, Held { admitted, pooled }))
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
