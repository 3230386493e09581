//! Faults between the proxy and its upstream, injected by a relay (test-support's
//! `FaultRelay`): a blackhole, resets and latency. The breaker opens within its window, clients
//! get 503 with `Retry-After` instead of waiting for timeouts, the queue stays bounded, and the
//! route recovers within two probe intervals (`open_duration`) of the fault ending.

mod common;

use common::{client, metric, proxy, stop, upstream};
use http::StatusCode;
use http_body_util::Full;
use std::time::Duration;
use test_support::{FaultRelay, Mode};
use tokio::time::Instant;

/// The breaker probes again 1 s after it opens; requests time out after 200 ms.
const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"
[server]
threads = 1
[[listeners]]
name = "web"
listen = "127.0.0.1:0"
[[upstreams]]
name = "app"
addrs = ["{UP}"]
connect_timeout = "200ms"
[upstreams.breaker]
window = 20
minimum_calls = 10
failure_rate = 0.5
open_duration = "1s"
half_open_calls = 2
[[routes]]
name = "api"
listener = "web"
upstream = "app"
timeout = "200ms"
[routes.concurrency]
max = 8
queue = 16
queue_timeout = "100ms"
"#;
const OPEN_DURATION: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(200);

/// One answer: status, whether it carried Retry-After, how long it took.
type Answer = (StatusCode, bool, Duration);

/// `clients` clients sending requests back to back for `run`; every answer, in order of arrival.
async fn traffic(addr: std::net::SocketAddr, clients: usize, run: Duration) -> Vec<Answer> {
    let until = Instant::now() + run;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let c = client();
                let mut out = Vec::new();
                while Instant::now() < until {
                    let started = Instant::now();
                    let req = http::Request::get(format!("http://{addr}/")).body(Full::default()).unwrap();
                    // (3 s: far past any deadline here; a hang fails the test instead of stalling it.)
                    let resp = tokio::time::timeout(Duration::from_secs(3), c.request(req))
                        .await
                        .expect("an answer within 3 s")
                        .expect("an answer, never a dropped connection");
                    out.push((resp.status(), resp.headers().contains_key("retry-after"), started.elapsed()));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

/// Sends a request every 20 ms until one succeeds; how long that took.
async fn recovery(addr: std::net::SocketAddr) -> Duration {
    let started = Instant::now();
    let c = client();
    loop {
        let req = http::Request::get(format!("http://{addr}/")).body(Full::default()).unwrap();
        if c.request(req).await.unwrap().status() == StatusCode::OK {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no recovery in 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What a fault must look like to clients: failures first, then fast 503s with Retry-After.
fn check_fault(answers: &[Answer], fault: &str) {
    let opened = answers.iter().position(|a| a.0 == StatusCode::SERVICE_UNAVAILABLE && a.1);
    let opened = opened.unwrap_or_else(|| panic!("{fault}: the breaker never answered 503: {answers:?}"));
    // The breaker needs at most its window of calls (plus those already under way) to open.
    assert!(opened <= 20 + 8, "{fault}: {opened} answers before the first 503");
    let after = &answers[opened..];
    let fast = after.iter().filter(|a| a.2 < Duration::from_millis(50)).count();
    assert!(fast * 10 >= after.len() * 9, "{fault}: most answers after the breaker opened are immediate");
    // No client waits past the route's timeout (and the queue's), whatever the fault; every
    // 503 says when to come back.
    for a in answers {
        assert!(a.2 < TIMEOUT + Duration::from_millis(300), "{fault}: an answer took {:?}", a.2);
        assert!(a.0 != StatusCode::SERVICE_UNAVAILABLE || a.1, "{fault}: a 503 without Retry-After");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_faults_open_the_breaker_fail_fast_and_recover() {
    let (up, _) = upstream().await;
    let relay = FaultRelay::start(up).await.unwrap();
    let proxy = proxy(CONFIG, relay.addr());
    let (addr, admin) = (proxy.listener_addr("web").unwrap(), proxy.admin_addr().unwrap());
    let healthy = traffic(addr, 4, Duration::from_millis(300)).await;
    assert!(healthy.iter().all(|a| a.0 == StatusCode::OK));

    for (fault, mode) in [("blackhole", Mode::Blackhole), ("reset", Mode::Reset)] {
        relay.set_mode(mode);
        // The queue, sampled while the fault lasts, never passes its capacity.
        let sampler = tokio::spawn(async move {
            let mut deepest = 0.0f64;
            for _ in 0..15 {
                deepest = deepest.max(metric(admin, "spillway_queue_depth{route=\"api\"}").await);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            deepest
        });
        let answers = traffic(addr, 12, Duration::from_millis(1500)).await;
        check_fault(&answers, fault);
        assert!(sampler.await.unwrap() <= 16.0, "{fault}: the queue stayed within its capacity");
        assert_eq!(metric(admin, "spillway_breaker_state{upstream=\"app\"}").await, 1.0, "{fault}: open");

        relay.heal();
        let took = recovery(addr).await;
        eprintln!("{fault}: {} answers in 1.5 s; recovered {took:?} after the fault ended", answers.len());
        assert!(took <= 2 * OPEN_DURATION, "{fault}: recovered {took:?} after the fault ended");
        // Closed again once the half-open probes succeed.
        traffic(addr, 2, Duration::from_millis(200)).await;
        assert_eq!(metric(admin, "spillway_breaker_state{upstream=\"app\"}").await, 0.0, "{fault}: closed");
    }

    // Latency past the route's timeout: 504s, then the breaker; then recovery.
    relay.set_latency(Duration::from_millis(300));
    let answers = traffic(addr, 12, Duration::from_millis(1500)).await;
    assert!(answers.iter().any(|a| a.0 == StatusCode::GATEWAY_TIMEOUT), "the timeout answers 504");
    check_fault(&answers, "latency");
    relay.set_latency(Duration::ZERO);
    let took = recovery(addr).await;
    assert!(took <= 2 * OPEN_DURATION, "latency: recovered {took:?} after the fault ended");
    stop(proxy).await;
}
