//! Refusals answered over HTTP and gRPC: statuses, Retry-After, RateLimit fields, trailers-only.

use spillway::clock::ManualClock;
use spillway::limit::ConcurrencyLimiter;
use spillway::rate::{Gcra, KeyedLimiter, Quota};
use spillway_tower::http::OverloadResponseLayer;
use spillway_tower::{ConcurrencyLimitLayer, RateLimitLayer};
use std::time::Duration;
use tower::{ServiceBuilder, ServiceExt};

type Req = http::Request<String>;
type Resp = http::Response<String>;

fn grpc_request() -> Req {
    http::Request::builder().header("content-type", "application/grpc+proto").body(String::new()).unwrap()
}

#[tokio::test]
async fn rate_limited_http_and_grpc_answers() {
    let limiter = KeyedLimiter::with_clock(
        Gcra::new(Quota::per_minute(60).unwrap().with_burst(2).unwrap()),
        64,
        ManualClock::new(),
    );
    let svc = ServiceBuilder::new()
        .layer(OverloadResponseLayer)
        .layer(RateLimitLayer::new(limiter, |_: &Req| ()))
        .service_fn(|_: Req| async { Ok::<_, std::convert::Infallible>(Resp::new("ok".into())) });
    for _ in 0..2 {
        assert_eq!(svc.clone().oneshot(Req::new(String::new())).await.unwrap().status(), 200);
    }
    let refused = svc.clone().oneshot(Req::new(String::new())).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["ratelimit-policy"], "\"default\";q=2");
    assert_eq!(refused.headers()["ratelimit"], "\"default\";r=0;t=2");

    let grpc = svc.oneshot(grpc_request()).await.unwrap();
    assert_eq!(grpc.status(), 200, "gRPC answers are trailers-only: HTTP 200");
    assert_eq!(grpc.headers()["grpc-status"], "8", "RESOURCE_EXHAUSTED");
    assert_eq!(grpc.headers()["grpc-retry-pushback-ms"], "1000");
    assert_eq!(grpc.headers()["content-type"], "application/grpc");
    assert!(grpc.body().is_empty());
}

#[tokio::test(start_paused = true)]
async fn overload_answers_503_queue_timeout_504_grpc_unavailable() {
    let limiter = ConcurrencyLimiter::builder(1).queue(1).queue_timeout(Duration::from_millis(50)).build();
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(false);
    let svc = ServiceBuilder::new()
        .layer(OverloadResponseLayer)
        .layer(ConcurrencyLimitLayer::new(limiter))
        .service_fn(move |_: Req| {
            let mut gate = gate_rx.clone();
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok::<_, std::convert::Infallible>(Resp::new("done".into()))
            }
        });
    let busy = tokio::spawn(svc.clone().oneshot(Req::new(String::new())));
    tokio::task::yield_now().await;
    let queued = tokio::spawn(svc.clone().oneshot(Req::new(String::new())));
    tokio::task::yield_now().await;
    // Queue full: 503 at once.
    let full = svc.clone().oneshot(Req::new(String::new())).await.unwrap();
    assert_eq!(full.status(), 503);
    assert!(full.headers().contains_key("retry-after"));
    let grpc = svc.clone().oneshot(grpc_request()).await.unwrap();
    assert_eq!(grpc.headers()["grpc-status"], "14", "UNAVAILABLE");
    // The queued one waits out its 50 ms: 504.
    assert_eq!(queued.await.unwrap().unwrap().status(), 504);
    gate_tx.send(true).unwrap();
    assert_eq!(busy.await.unwrap().unwrap().status(), 200);
}

mod client_ip {
    use spillway::rate::IpKey;
    use spillway_tower::KeyExtractor;
    use spillway_tower::http::ClientIp;
    use std::net::{IpAddr, SocketAddr};

    fn req(peer: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder();
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let mut r = b.body(()).unwrap();
        r.extensions_mut().insert(peer.parse::<SocketAddr>().unwrap());
        r
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies() -> ClientIp {
        ClientIp::trusting(["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()])
    }

    #[test]
    fn an_untrusted_peer_cannot_choose_its_key() {
        let r = req("198.51.100.7:443", &[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(proxies().client(&r), Some(ip("198.51.100.7")));
    }

    #[test]
    fn a_trusted_chain_is_walked_from_the_right() {
        // The client claims to be 6.6.6.6 (spoofed, leftmost); the first untrusted hop from the
        // right is what our proxies saw.
        let r = req("10.0.0.2:1", &[("x-forwarded-for", "6.6.6.6, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(proxies().client(&r), Some(ip("203.0.113.9")));
        // Several header lines count as one list.
        let r = req("10.0.0.2:1", &[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(proxies().client(&r), Some(ip("203.0.113.9")));
        // Nothing but proxies: the leftmost.
        let r = req("10.0.0.2:1", &[("x-forwarded-for", "10.3.3.3, 10.4.4.4")]);
        assert_eq!(proxies().client(&r), Some(ip("10.3.3.3")));
        // No header: the peer itself.
        assert_eq!(proxies().client(&req("10.0.0.2:1", &[])), Some(ip("10.0.0.2")));
    }

    #[test]
    fn forwarded_is_preferred_and_parsed() {
        let r = req(
            "[fd00::1]:1",
            &[
                ("forwarded", "for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.5"),
                ("x-forwarded-for", "9.9.9.9"),
            ],
        );
        assert_eq!(proxies().client(&r), Some(ip("2001:db8:cafe::17")));
        let r = req("10.0.0.1:1", &[("forwarded", "for=192.0.2.60:8080;by=10.0.0.1")]);
        assert_eq!(proxies().client(&r), Some(ip("192.0.2.60")));
    }

    #[test]
    fn keys_group_ipv6_by_64_and_need_a_peer() {
        let a = proxies().key(&req("[2001:db8:1:2::a]:1", &[]));
        let b = proxies().key(&req("[2001:db8:1:2::b]:1", &[]));
        assert_eq!(a, b);
        assert_eq!(a, Some(IpKey::from(ip("2001:db8:1:2::"))));
        assert_eq!(proxies().key(&http::Request::new(())), None);
    }
}
