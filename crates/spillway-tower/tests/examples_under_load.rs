//! The axum and tonic examples under `spillway load`'s open-loop generator: their rejections,
//! as a user who runs the two commands of each example's header sees them.

#[allow(dead_code)]
#[path = "../examples/axum.rs"]
mod axum_example;

#[allow(dead_code)]
#[path = "../examples/tonic.rs"]
mod tonic_example;

use spillway_lab::load::LoadOptions;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_refuses_past_its_quota_with_retry_after() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, axum_example::app().unwrap()).await });
    let report = spillway_lab::load::run(LoadOptions {
        url: format!("http://{addr}/work"),
        rate: 200.0,
        duration: Duration::from_secs(2),
        ..LoadOptions::default()
    })
    .await
    .unwrap();
    let t = report.totals;
    // One shared quota: 20/s plus a burst of 10, so about 50 of 400 pass in 2 s.
    assert!((30..=80).contains(&t.ok), "{t:?}");
    assert!(t.rejected_429 >= 300, "{t:?}");
    assert_eq!(t.with_retry_after, t.rejected(), "every refusal says when to retry: {t:?}");
    assert_eq!(t.errors + t.late, 0, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tonic_example_answers_resource_exhausted_with_pushback() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tonic_example::serve(listener));
    let report = spillway_lab::load::run(LoadOptions {
        url: format!("http://{addr}/demo.Echo/Say"),
        rate: 1000.0,
        duration: Duration::from_secs(2),
        grpc: true,
        ..LoadOptions::default()
    })
    .await
    .unwrap();
    let t = report.totals;
    // 100/s plus a burst of 20: about 220 of 2 000 calls succeed, the rest are refused.
    assert!((150..=320).contains(&t.ok), "{t:?}");
    assert!(t.rejected_429 >= 1500, "RESOURCE_EXHAUSTED counts as 429: {t:?}");
    assert_eq!(t.with_retry_after, t.rejected(), "every refusal carries grpc-retry-pushback-ms: {t:?}");
    assert_eq!(t.errors + t.late, 0, "{t:?}");
}
