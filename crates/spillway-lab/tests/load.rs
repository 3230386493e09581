//! The open-loop generator against real servers on 127.0.0.1: goodput and late requests against
//! the unprotected backend, a producer that honours `Retry-After`, a retry budget, a saturated
//! client, and the JSON report.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use spillway_lab::backend::{BackendOptions, spawn};
use spillway_lab::load::{LoadOptions, LoadReport, Profile, RetryMode, run};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;

/// A tiny server that refuses everything: 503 with `Retry-After: 1`.
async fn always_503() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let svc = service_fn(|_req| async {
                    let mut r = Response::new(Full::new(Bytes::from_static(b"busy\n")));
                    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    r.headers_mut().insert(header::RETRY_AFTER, "1".parse().unwrap());
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn opts(addr: SocketAddr, rate: f64, secs: f64, deadline_ms: u64) -> LoadOptions {
    LoadOptions {
        url: format!("http://{addr}/"),
        rate,
        duration: Duration::from_secs_f64(secs),
        deadline: Duration::from_millis(deadline_ms),
        connections: 1000,
        ..LoadOptions::default()
    }
}

fn check_conservation(r: &LoadReport) {
    let t = &r.totals;
    assert_eq!(t.offered, t.sent + t.deferred + t.dropped_by_client, "{t:?}");
    assert_eq!(t.sent, t.ok + t.rejected() + t.late + t.errors, "{t:?}");
    let series_sent: u64 = r.series.iter().map(|s| s.counts.sent).sum();
    assert_eq!(series_sent, t.sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_of_an_unprotected_backend_gives_capacity_and_late_requests() {
    // Capacity 200/s (2 workers x 10 ms), offered 400/s for 2 s with a 1 s deadline. Request sent
    // at t waits ~t (the queue grows by 200 a second), so the first second's 400 make it and the
    // second's 400 are late: goodput ~ capacity, and all the backend's later work is wasted.
    let backend_opts = BackendOptions { pool: 2, service: Duration::from_millis(10), ..Default::default() };
    let (addr, backend) = spawn(backend_opts).await.unwrap();
    let r = run(opts(addr, 400.0, 2.0, 1000)).await.unwrap();
    check_conservation(&r);
    let t = r.totals;
    assert_eq!(t.offered, 800);
    assert_eq!(t.sent, 800);
    assert!((150.0..=215.0).contains(&r.goodput_per_s), "goodput ~ capacity: {t:?}");
    assert!(t.late >= 300, "the queue makes later requests miss the deadline: {t:?}");
    assert_eq!(t.errors, 0, "{t:?}");
    assert!(r.ok_latency.p99_ms > 500.0 && r.ok_latency.max_ms <= 1100.0, "{:?}", r.ok_latency);
    // The second second is all late: the queue wait there exceeds the deadline.
    assert_eq!(r.series.len(), 2);
    assert!(r.series[1].counts.late > r.series[0].counts.late, "{:?}", r.series);
    let s = backend.stats();
    assert!(s.max_waiting > 100, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn honouring_retry_after_sends_far_less() {
    let addr = always_503().await;
    let ignore = run(opts(addr, 200.0, 2.0, 500)).await.unwrap();
    check_conservation(&ignore);
    assert_eq!(ignore.totals.sent, 400);
    assert_eq!(ignore.totals.rejected_503, 400);
    assert_eq!(ignore.totals.with_retry_after, 400);

    let honour =
        run(LoadOptions { retry_mode: RetryMode::Honour, ..opts(addr, 200.0, 2.0, 500) }).await.unwrap();
    check_conservation(&honour);
    let t = honour.totals;
    // One answer pauses the producer for a second; it sends once or twice a second after that.
    assert!(t.sent < 40, "a producer that slows down: {t:?}");
    assert!(t.deferred > 350, "{t:?}");
    assert_eq!(t.offered, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget() {
    let addr = always_503().await;
    let r = run(LoadOptions { retry_mode: RetryMode::Budget, ..opts(addr, 500.0, 1.0, 500) }).await.unwrap();
    check_conservation(&r);
    let t = r.totals;
    assert_eq!(t.sent, 500);
    assert!(t.retries > 0 && t.retries * 10 <= t.sent, "retries <= 10 % of requests: {t:?}");
    assert_eq!(t.rejected_503, 500, "a retried request ends as its retry's answer");
    assert_eq!(t.with_retry_after, 500 + t.retries, "every answer counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_client_says_so() {
    // One connection against 50 ms answers: at 100/s most requests find it busy.
    let backend_opts = BackendOptions { pool: 4, service: Duration::from_millis(50), ..Default::default() };
    let (addr, _backend) = spawn(backend_opts).await.unwrap();
    let r = run(LoadOptions { connections: 1, ..opts(addr, 100.0, 1.0, 500) }).await.unwrap();
    check_conservation(&r);
    assert!(r.totals.dropped_by_client > 50, "{:?}", r.totals);
    assert_eq!(r.connections_opened, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_shape_the_load_and_json_round_trips() {
    let backend_opts = BackendOptions { pool: 64, service: Duration::ZERO, ..Default::default() };
    let (addr, _backend) = spawn(backend_opts).await.unwrap();
    let r =
        run(LoadOptions { profile: Profile::Step, threads: 2, ..opts(addr, 800.0, 2.0, 500) }).await.unwrap();
    check_conservation(&r);
    // Step over 2 s: 200/s, 400/s, 600/s, 800/s for half a second each.
    assert_eq!(r.totals.offered, 1000);
    assert_eq!((r.series[0].counts.offered, r.series[1].counts.offered), (300, 700));
    assert_eq!(r.totals.ok, 1000, "{:?}", r.totals);

    let mut out = Vec::new();
    r.write_json(&mut out).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["totals"]["ok"], 1000);
    assert_eq!(v["profile"], "step");
    assert_eq!(v["series"].as_array().unwrap().len(), 2);
    assert!(v["series"][1]["p99_ms"].as_f64().unwrap() > 0.0);
    assert!(v["ok_latency"]["p50_ms"].is_f64());
    let back: LoadReport = serde_json::from_slice(&out).unwrap();
    assert_eq!(back, r);

    let mut text = Vec::new();
    r.write_human(&mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("goodput") && text.contains("p99"), "{text}");
}

#[tokio::test]
async fn bad_targets_are_errors_not_panics() {
    assert!(run(LoadOptions { url: "https://example.com/".into(), ..LoadOptions::default() }).await.is_err());
    assert!(run(LoadOptions { rate: 0.0, ..LoadOptions::default() }).await.is_err());
    // Nothing listens: every request is an error, promptly.
    let unused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let r = run(opts(unused, 50.0, 0.5, 200)).await.unwrap();
    assert_eq!(r.totals.errors, r.totals.sent);
}
