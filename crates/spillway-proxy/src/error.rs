//! The one place where a failed request becomes an answer.
//!
//! | error | HTTP | gRPC (`grpc-status`) |
//! | --- | --- | --- |
//! | rate limited | 429 + `Retry-After`, `RateLimit`, `RateLimit-Policy` | 8 |
//! | shed, queue full, at capacity, bulkhead full, breaker open | 503 + `Retry-After` | 14 |
//! | queue timeout, upstream timeout | 504 | 14 (4 for the upstream timeout) |
//! | upstream connect failure, broken upstream | 502 | 14 |
//! | upstream connections or the route's WebSockets at their limit | 503 + `Retry-After` | 14 |
//! | no route | 404 | 12 |
//! | body over the cap | 413 | 8 |
//!
//! Refusals by a policy are [`Overloaded`] values, answered by `spillway-tower`'s
//! `rejection_response`, exactly as the tower layers answer them.

use crate::body::ProxyBody;
use http::header::{CONNECTION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use spillway_tower::Overloaded;
use spillway_tower::http::rejection_response;

/// Why the proxy answered instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyError {
    #[error("refused: {0}")]
    Overloaded(#[from] Overloaded),
    #[error("no route matches")]
    NoRoute,
    #[error("request body over the {0}-byte cap")]
    BodyTooLarge(u64),
    #[error("the request body could not be read")]
    BadBody,
    #[error("a transfer coding other than chunked")]
    UnsupportedCoding,
    #[error("upstream connect failed: {0}")]
    Connect(std::io::Error),
    #[error("upstream connect timed out")]
    ConnectTimeout,
    #[error("no upstream connection free")]
    PoolExhausted,
    #[error("the route's WebSocket connections are at their limit")]
    WebSocketsFull,
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream failed: {0}")]
    Upstream(hyper::Error),
    #[error("upstream failed: {0}")]
    Exchange(crate::h1::Error),
}

impl ProxyError {
    /// The answer for this error (`grpc`: the request was gRPC).
    pub(crate) fn response(&self, grpc: bool) -> Response<ProxyBody> {
        if let ProxyError::Overloaded(o) = self {
            return rejection_response(o, grpc);
        }
        let (status, grpc_status, text) = match self {
            ProxyError::Overloaded(_) => unreachable!("answered above"),
            ProxyError::NoRoute => (StatusCode::NOT_FOUND, "12", "no route\n"),
            ProxyError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "8", "request body too large\n"),
            ProxyError::BadBody => (StatusCode::BAD_REQUEST, "3", "malformed request body\n"),
            ProxyError::UnsupportedCoding => {
                (StatusCode::NOT_IMPLEMENTED, "12", "transfer coding not supported: use chunked\n")
            }
            ProxyError::Connect(_) | ProxyError::ConnectTimeout => {
                (StatusCode::BAD_GATEWAY, "14", "upstream unreachable\n")
            }
            ProxyError::PoolExhausted => {
                (StatusCode::SERVICE_UNAVAILABLE, "14", "upstream connections exhausted\n")
            }
            ProxyError::WebSocketsFull => {
                (StatusCode::SERVICE_UNAVAILABLE, "14", "too many WebSocket connections\n")
            }
            ProxyError::UpstreamTimeout => (StatusCode::GATEWAY_TIMEOUT, "4", "upstream timed out\n"),
            ProxyError::Upstream(_) | ProxyError::Exchange(_) => {
                (StatusCode::BAD_GATEWAY, "14", "upstream failed\n")
            }
        };
        let mut resp = if grpc {
            let mut r = Response::new(ProxyBody::empty());
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
            h.insert(HeaderName::from_static("grpc-status"), HeaderValue::from_static(grpc_status));
            h.insert(HeaderName::from_static("grpc-message"), HeaderValue::from_static("proxy error"));
            r
        } else {
            let mut r = Response::new(ProxyBody::text(text));
            *r.status_mut() = status;
            r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            r
        };
        if matches!(self, ProxyError::PoolExhausted | ProxyError::WebSocketsFull) {
            resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ProxyError::BodyTooLarge(_) | ProxyError::BadBody | ProxyError::UnsupportedCoding) {
            // The rest of the body is not read (or not understood): the connection cannot be
            // reused.
            resp.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }

    /// Whether this counts against the upstream (for its breaker and the adaptive limit).
    pub(crate) fn is_upstream_failure(&self) -> bool {
        matches!(
            self,
            ProxyError::Connect(_)
                | ProxyError::ConnectTimeout
                | ProxyError::UpstreamTimeout
                | ProxyError::Upstream(_)
                | ProxyError::Exchange(_)
        )
    }
}
