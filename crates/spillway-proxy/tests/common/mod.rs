//! Test servers and clients on 127.0.0.1:0: a real hyper upstream, the proxy in-process, and
//! a pooled hyper client.
#![allow(dead_code, unreachable_pub)]

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Counts what the upstream saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub requests: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
}

/// An HTTP/1.1 + h2c upstream. Paths: `/delay/MS`, `/status/CODE`, `/big/BYTES` (streamed in
/// 64 KiB chunks), `/echo` (the request body back, `x-seen-xff` = its X-Forwarded-For),
/// anything else: 200 `hello`. A `?delay=MS` query delays any of them.
pub async fn upstream() -> (SocketAddr, Arc<Seen>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let s = s.clone();
                    async move { Ok::<_, Infallible>(serve(&s, req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn serve(seen: &Seen, req: Request<Incoming>) -> Response<Body> {
    seen.requests.fetch_add(1, Ordering::Relaxed);
    let now = seen.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    seen.max_in_flight.fetch_max(now, Ordering::Relaxed);
    let path = req.uri().path().to_string();
    if let Some(ms) = req.uri().query().and_then(|q| q.strip_prefix("delay=")) {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
    }
    let resp = if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        text(StatusCode::OK, "ok")
    } else if let Some(code) = path.strip_prefix("/status/") {
        text(StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap(), "status")
    } else if let Some(n) = path.strip_prefix("/big/") {
        let total: u64 = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 64 << 10]);
        let chunks = total / (64 << 10);
        let stream = futures_util::stream::iter(
            (0..chunks).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
        );
        Response::new(BodyExt::boxed(StreamBody::new(stream)))
    } else if path == "/echo" {
        let xff = req.headers().get("x-forwarded-for").cloned();
        let conn = req.headers().get("connection").cloned();
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let mut r = Response::new(Full::new(body).boxed());
        if let Some(x) = xff {
            r.headers_mut().insert("x-seen-xff", x);
        }
        if let Some(c) = conn {
            r.headers_mut().insert("x-seen-connection", c);
        }
        r
    } else {
        text(StatusCode::OK, "hello")
    };
    seen.in_flight.fetch_sub(1, Ordering::Relaxed);
    resp
}

fn text(status: StatusCode, s: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(s.as_bytes())).boxed());
    *r.status_mut() = status;
    r
}

/// The proxy in-process, from a config whose `{UP}` is replaced by the upstream's address.
pub fn proxy(config: &str, upstream: SocketAddr) -> spillway_proxy::Proxy {
    let config = config.replace("{UP}", &upstream.to_string());
    let config = spillway_proxy::Config::parse(&config, "test.toml").unwrap();
    spillway_proxy::Proxy::start(config).unwrap()
}

/// Drains and stops the proxy (a blocking call, off the test's runtime).
pub async fn stop(proxy: spillway_proxy::Proxy) {
    tokio::task::spawn_blocking(move || proxy.shutdown().unwrap()).await.unwrap();
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// GET `path` on `addr`; the status, headers and body.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap, Bytes) {
    send(&client(), Request::get(format!("http://{addr}{path}")).body(Full::default()).unwrap()).await
}

pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let resp = client.request(req).await.expect("a response");
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

/// The value of the metric line starting with `prefix` (e.g. `spillway_requests_total{route="r",outcome="success"}`).
pub async fn metric(admin: SocketAddr, prefix: &str) -> f64 {
    let (_, _, body) = get(admin, "/metrics").await;
    let text = String::from_utf8_lossy(&body).to_string();
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
}
