//! The layers in front of a real axum server on 127.0.0.1:0, driven over TCP.

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::{Router, routing::get};
use spillway::limit::ConcurrencyLimiter;
use spillway::rate::{Gcra, KeyedLimiter, Quota};
use spillway_tower::http::{HeaderKey, OverloadResponseLayer};
use spillway_tower::{BoxError, ConcurrencyLimitLayer, RateLimitLayer};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceBuilder;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// One request; returns the status and the raw response head.
async fn get_once(addr: SocketAddr, path: &str, headers: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.to_ascii_lowercase())
}

async fn internal_error(_: BoxError) -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

fn with_policies(router: Router, quota: Quota, limit: usize, queue: usize) -> Router {
    router.layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(internal_error))
            .layer(OverloadResponseLayer)
            .layer(RateLimitLayer::new(
                KeyedLimiter::new(Gcra::new(quota), 1024),
                HeaderKey::new(http::HeaderName::from_static("x-api-key")),
            ))
            .layer(ConcurrencyLimitLayer::new(
                ConcurrencyLimiter::builder(limit)
                    .queue(queue)
                    .queue_timeout(Duration::from_millis(200))
                    .build(),
            )),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_per_api_key_answers_429_with_retry_after() {
    let quota = Quota::per_minute(3).unwrap();
    let app = with_policies(Router::new().route("/", get(|| async { "ok" })), quota, 100, 0);
    let addr = serve(app).await;
    for _ in 0..3 {
        assert_eq!(get_once(addr, "/", "x-api-key: alice\r\n").await.0, 200);
    }
    let (status, head) = get_once(addr, "/", "x-api-key: alice\r\n").await;
    assert_eq!(status, 429, "{head}");
    assert!(head.contains("retry-after: 20"), "{head}");
    assert!(head.contains("ratelimit-policy: \"default\";q=3"), "{head}");
    // Another key has its own quota.
    assert_eq!(get_once(addr, "/", "x-api-key: bob\r\n").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_overflow_answers_503_and_keeps_serving() {
    let quota = Quota::per_second(1_000_000).unwrap();
    let slow = get(|| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        "slow"
    });
    let app = with_policies(Router::new().route("/", slow), quota, 2, 0);
    let addr = serve(app).await;
    let calls: Vec<_> = (0..8).map(|_| tokio::spawn(get_once(addr, "/", ""))).collect();
    let mut statuses = Vec::new();
    for c in calls {
        statuses.push(c.await.unwrap());
    }
    let ok = statuses.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<_> = statuses.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok + refused.len(), 8, "{statuses:?}");
    assert!(ok >= 2 && !refused.is_empty(), "{statuses:?}");
    assert!(refused.iter().all(|(_, head)| head.contains("retry-after:")));
    // Once the slow ones are done, the server serves again.
    assert_eq!(get_once(addr, "/", "").await.0, 200);
}
