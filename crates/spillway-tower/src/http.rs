//! Rejections as answers: the one place where an [`Overloaded`] becomes an HTTP response.
//!
//! | reason | HTTP | gRPC (`grpc-status`) |
//! | --- | --- | --- |
//! | rate limited | 429 + `RateLimit`, `RateLimit-Policy` | 8 `RESOURCE_EXHAUSTED` |
//! | at capacity, queue full, shed, bulkhead full, breaker open, deadline unreachable | 503 | 14 `UNAVAILABLE` |
//! | waited the whole queue timeout | 504 | 14 `UNAVAILABLE` |
//!
//! Every answer carries `Retry-After` (whole seconds, rounded up, at least 1); gRPC answers are
//! trailers-only (status 200, `grpc-status` in the headers, empty body) with
//! `grpc-retry-pushback-ms`.

use crate::{BoxError, Overloaded, Reason};
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use spillway::limit::RejectReason;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tower_layer::Layer;
use tower_service::Service;

/// The response for a refused request (`grpc`: the request was gRPC).
///
/// ```
/// use spillway_tower::http::rejection_response;
/// # use spillway_tower::Overloaded;
/// # fn demo(o: &Overloaded) {
/// let resp: http::Response<String> = rejection_response(o, false);
/// assert!(resp.headers().contains_key(http::header::RETRY_AFTER));
/// # }
/// ```
pub fn rejection_response<B: Default>(err: &Overloaded, grpc: bool) -> Response<B> {
    let retry_secs = err.retry_after().as_secs_f64().ceil().max(1.0) as u64;
    let mut resp = Response::new(B::default());
    let headers = resp.headers_mut();
    headers.insert(RETRY_AFTER, HeaderValue::from(retry_secs));
    if let Reason::RateLimited { limit, reset } = err.reason() {
        let reset = reset.as_secs_f64().ceil() as u64;
        headers.insert(
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_str(&format!("\"default\";q={limit}")).expect("a valid header value"),
        );
        headers.insert(
            HeaderName::from_static("ratelimit"),
            HeaderValue::from_str(&format!("\"default\";r=0;t={reset}")).expect("a valid header value"),
        );
    }
    if grpc {
        let code = if err.is_rate_limited() { "8" } else { "14" };
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(HeaderName::from_static("grpc-status"), HeaderValue::from_static(code));
        headers.insert(HeaderName::from_static("grpc-message"), HeaderValue::from_static("overloaded"));
        headers.insert(
            HeaderName::from_static("grpc-retry-pushback-ms"),
            HeaderValue::from(err.retry_after().as_millis().min(u128::from(u64::MAX)) as u64),
        );
        return resp;
    }
    *resp.status_mut() = match err.reason() {
        Reason::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Reason::Concurrency(RejectReason::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    resp
}

/// Whether a request is gRPC (by its content type).
pub fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Turns [`Overloaded`] errors from the layers below into responses (other errors pass
/// through): put it outermost, so that axum or hyper see an answer, not an error.
///
/// ```
/// use spillway::rate::{Gcra, KeyedLimiter, Quota};
/// use spillway_tower::{RateLimitLayer, http::OverloadResponseLayer};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let svc = ServiceBuilder::new()
///     .layer(OverloadResponseLayer)
///     .layer(RateLimitLayer::new(KeyedLimiter::new(Gcra::new(Quota::per_hour(1).unwrap()), 64), |_: &http::Request<String>| ()))
///     .service_fn(|_req: http::Request<String>| async { Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hi"))) });
/// assert_eq!(svc.clone().oneshot(http::Request::new(String::new())).await.unwrap().status(), 200);
/// let refused = svc.oneshot(http::Request::new(String::new())).await.unwrap();
/// assert_eq!(refused.status(), 429);
/// assert_eq!(refused.headers()["retry-after"], "3600");
/// # });
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct OverloadResponseLayer;

impl<S> Layer<S> for OverloadResponseLayer {
    type Service = OverloadResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        OverloadResponse { inner }
    }
}

/// See [`OverloadResponseLayer`].
#[derive(Debug, Clone)]
pub struct OverloadResponse<S> {
    inner: S,
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for OverloadResponse<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let grpc = is_grpc(&req);
        ResponseFuture { inner: self.inner.call(req), grpc }
    }
}

pin_project! {
    /// The response future of [`OverloadResponse`].
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        grpc: bool,
    }
}

impl<F, ResB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    ResB: Default,
{
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)).map_err(Into::into) {
            Err(e) => match e.downcast_ref::<Overloaded>() {
                Some(o) => Ok(rejection_response(o, *this.grpc)),
                None => Err(e),
            },
            ok => ok,
        })
    }
}

/// An address range, `10.0.0.0/8` or `2001:db8::/32` (a bare address is a single host).
///
/// ```
/// use spillway_tower::http::Cidr;
///
/// let net: Cidr = "10.0.0.0/8".parse().unwrap();
/// assert!(net.contains("10.1.2.3".parse().unwrap()));
/// assert!(!net.contains("11.0.0.1".parse().unwrap()));
/// assert!("10.0.0.0/33".parse::<Cidr>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

/// A malformed CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?} (expected an address, optionally /prefix)")]
pub struct InvalidCidr(String);

impl std::str::FromStr for Cidr {
    type Err = InvalidCidr;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidCidr(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in the range (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(V6(v6), V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                net.to_bits() & mask == ip.to_bits() & mask
            }
            _ => false,
        }
    }
}

/// The client address of a request, as a rate-limit key ([`spillway::rate::IpKey`]: IPv6 grouped
/// by /64).
///
/// The peer is the `SocketAddr` in the request's extensions (axum's `ConnectInfo` or your
/// accept loop puts it there). Forwarding headers are believed only from trusted peers: when the
/// peer is in `trusted`, `Forwarded` (`for=`) or else `X-Forwarded-For` is walked from the right,
/// skipping trusted proxies, and the first untrusted address is the client. From an untrusted
/// peer the headers are ignored, so a client cannot pick its own key.
///
/// ```
/// use spillway_tower::http::ClientIp;
/// use spillway_tower::KeyExtractor;
/// use std::net::SocketAddr;
///
/// let key = ClientIp::trusting(["10.0.0.0/8".parse().unwrap()]);
/// let mut req = http::Request::builder()
///     .header("x-forwarded-for", "203.0.113.9, 10.0.0.7")
///     .body(())
///     .unwrap();
/// req.extensions_mut().insert("10.0.0.2:5000".parse::<SocketAddr>().unwrap());
/// assert_eq!(key.key(&req), Some("203.0.113.9".parse::<std::net::IpAddr>().unwrap().into()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClientIp {
    trusted: std::sync::Arc<[Cidr]>,
}

impl ClientIp {
    /// Trusts forwarding headers from peers in `trusted` (empty: never).
    pub fn trusting(trusted: impl IntoIterator<Item = Cidr>) -> Self {
        Self { trusted: trusted.into_iter().collect() }
    }

    fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.trusted.iter().any(|c| c.contains(ip))
    }

    /// The client address of `req`, or `None` if the peer is unknown.
    pub fn client<B>(&self, req: &Request<B>) -> Option<std::net::IpAddr> {
        self.client_of(req.headers(), req.extensions().get())
    }

    /// [`client`](Self::client) from a request's parts: its headers and its peer.
    pub fn client_of(
        &self,
        headers: &http::HeaderMap,
        peer: Option<&std::net::SocketAddr>,
    ) -> Option<std::net::IpAddr> {
        let peer = peer?.ip();
        if !self.is_trusted(peer) {
            return Some(peer);
        }
        // Walk the hops from the right (nearest first), without collecting them: the first
        // untrusted one is the client; if all are trusted, the leftmost.
        let name = if headers.contains_key("forwarded") { "forwarded" } else { "x-forwarded-for" };
        let parse: fn(&str) -> Option<std::net::IpAddr> =
            if name == "forwarded" { forwarded_for } else { |a| a.trim().parse().ok() };
        let mut leftmost = None;
        for hop in headers
            .get_all(name)
            .iter()
            .rev()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(',').rev())
            .filter_map(parse)
        {
            if !self.is_trusted(hop) {
                return Some(hop);
            }
            leftmost = Some(hop);
        }
        Some(leftmost.unwrap_or(peer))
    }
}

/// The address in one `Forwarded` element's `for=` parameter (`for=192.0.2.1`,
/// `for="[2001:db8::1]:4711"`).
fn forwarded_for(element: &str) -> Option<std::net::IpAddr> {
    let value = element.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v.trim().trim_matches('"'))
    })?;
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    value.parse().ok().or_else(|| value.rsplit_once(':').and_then(|(a, _)| a.parse().ok()))
}

impl<B> crate::KeyExtractor<Request<B>> for ClientIp {
    type Key = Option<spillway::rate::IpKey>;

    fn key(&self, req: &Request<B>) -> Self::Key {
        self.client(req).map(spillway::rate::IpKey::from)
    }
}

/// A request header (an API key, a tenant id) as the rate-limit key; requests without it share
/// one key (`None`).
///
/// ```
/// use spillway_tower::http::HeaderKey;
/// use spillway_tower::KeyExtractor;
///
/// let key = HeaderKey::new(http::HeaderName::from_static("x-api-key"));
/// let req = http::Request::builder().header("x-api-key", "k-123").body(()).unwrap();
/// assert_eq!(key.key(&req).unwrap(), "k-123");
/// ```
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl<B> crate::KeyExtractor<Request<B>> for HeaderKey {
    type Key = Option<HeaderValue>;

    fn key(&self, req: &Request<B>) -> Self::Key {
        req.headers().get(&self.name).cloned()
    }
}

/// The route as the rate-limit key: the method and the first `segments` path segments
/// (`GET /api/users` for `GET /api/users/42?x=1` with 2 segments), so per-route limits need no
/// router support and ids in deeper segments do not multiply the keys.
///
/// ```
/// use spillway_tower::http::RouteKey;
/// use spillway_tower::KeyExtractor;
///
/// let key = RouteKey::new(2);
/// let a = http::Request::get("/api/users/42?x=1").body(()).unwrap();
/// let b = http::Request::get("/api/users/7").body(()).unwrap();
/// let c = http::Request::post("/api/users/7").body(()).unwrap();
/// assert_eq!(key.key(&a), key.key(&b));
/// assert_ne!(key.key(&a), key.key(&c));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RouteKey {
    segments: usize,
}

impl RouteKey {
    /// Keys by the method and the first `segments` path segments.
    pub fn new(segments: usize) -> Self {
        Self { segments }
    }

    /// Feeds the route of a request (its method and path) to `hasher`: for callers that hold a
    /// request's parts rather than the request, or hash with a hasher of their own.
    pub fn hash_route(&self, method: &http::Method, path: &str, hasher: &mut impl std::hash::Hasher) {
        use std::hash::Hash;
        method.hash(hasher);
        for segment in path.split('/').filter(|s| !s.is_empty()).take(self.segments) {
            segment.hash(hasher);
        }
    }
}

impl<B> crate::KeyExtractor<Request<B>> for RouteKey {
    /// A 64-bit hash of the method and the path prefix (no allocation per request).
    type Key = u64;

    fn key(&self, req: &Request<B>) -> u64 {
        use std::hash::Hasher;
        let mut h = std::hash::DefaultHasher::new();
        self.hash_route(req.method(), req.uri().path(), &mut h);
        h.finish()
    }
}
