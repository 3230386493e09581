//! The admin listener: `/metrics` (Prometheus text), `/livez`, `/readyz`, and `/dashboard`, a
//! self-contained page that polls `/metrics` and charts each route live. Separate from the
//! traffic listeners and on loopback unless configured otherwise.

use crate::Shared;
use crate::body::ProxyBody;
use crate::metrics::Metrics;
use http::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Serves the admin endpoints on `listener` until `stop`.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => { tokio::time::sleep(Duration::from_millis(10)).await; continue } },
            () = crate::server::stopped(&mut stop) => return,
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(answer(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// For [`crate::fuzz`]: answers `req` as the admin listener would, for a proxy built once from
/// a small config (no listener bound).
pub(crate) fn fuzz_answer<B>(req: &Request<B>) {
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        let config = crate::Config::parse(
            "[admin]\n[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"app\"\n\
             addrs = [\"127.0.0.1:9\"]\n[upstreams.breaker]\n[[routes]]\nname = \"api\"\nlistener = \"web\"\n\
             upstream = \"app\"\n[routes.concurrency]\nmax = 4\nqueue = 4\n[[routes.rate]]\nkey = \"ip\"\nrate = 5\n",
            "fuzz.toml",
        )
        .expect("a valid config");
        let metrics = Metrics::new();
        let state = crate::state::State::build(config, None, &metrics, 1, None);
        Shared::new(state, metrics, 1, None)
    });
    let _ = answer(shared, req);
}

fn answer<B>(shared: &Shared, req: &Request<B>) -> Response<ProxyBody> {
    let text = |status: StatusCode, body: &'static str| {
        let mut r = Response::new(ProxyBody::text(body));
        *r.status_mut() = status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" => {
            if shared.draining.load(Ordering::Relaxed) {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else if saturated(shared) {
                text(StatusCode::SERVICE_UNAVAILABLE, "saturated\n")
            } else {
                text(StatusCode::OK, "ready\n")
            }
        }
        "/metrics" => {
            refresh_gauges(shared);
            let mut r = Response::new(ProxyBody::bytes(shared.metrics.encode()));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            r
        }
        "/dashboard" => {
            let mut r = text(StatusCode::OK, DASHBOARD);
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            // Nothing but this page and this listener's /metrics.
            h.insert(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; connect-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
                ),
            );
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found: try /metrics, /livez, /readyz, /dashboard\n"),
    }
}

/// A route is saturated when its limit is reached and requests are queued (the seeds'
/// `is_ready`: stop sending me traffic, I am full).
fn saturated(shared: &Shared) -> bool {
    let state = shared.state.load();
    if !state.config.admin.as_ref().is_some_and(|a| a.unready_when_saturated) {
        return false;
    }
    state.routes.iter().filter_map(|r| r.policy.limit.as_ref()).any(|l| {
        let s = l.limiter().stats();
        s.waiting > 0 && s.in_flight >= s.limit
    })
}

/// Copies limiter and breaker state into the gauges, at scrape time.
fn refresh_gauges(shared: &Shared) {
    let state = shared.state.load();
    let m = &shared.metrics;
    for r in &state.routes {
        let name = &r.config.name;
        if let Some(l) = &r.policy.limit {
            let s = l.limiter().stats();
            Metrics::set_route_gauge(&m.in_flight, name, s.in_flight as i64);
            Metrics::set_route_gauge(&m.limit, name, s.limit as i64);
            Metrics::set_route_gauge(&m.queue_depth, name, s.waiting as i64);
            Metrics::set_route_gauge(&m.queue_capacity, name, s.queue_capacity as i64);
        }
        if let Some((keys, evicted)) = r.policy.keyed_report() {
            Metrics::set_route_gauge(&m.keys, name, keys as i64);
            Metrics::add_route_count(&m.evictions, name, evicted);
        }
    }
    for u in &state.upstreams {
        Metrics::set_upstream_gauge(&m.upstream_connections, &u.config.name, u.open_connections() as i64);
        if let Some((b, _)) = &u.breaker {
            use spillway::breaker::BreakerState::*;
            let v = match b.state() {
                Closed => 0,
                Open => 1,
                HalfOpen => 2,
                _ => 3,
            };
            Metrics::set_upstream_gauge(&m.breaker_state, &u.config.name, v);
        }
    }
}
