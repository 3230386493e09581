//! The axum example under `spillway load`'s open-loop generator: its rejections, as a user who
//! runs the two commands of the example's header sees them.

#[allow(dead_code)]
#[path = "../examples/axum.rs"]
mod axum_example;

use spillway_lab::load::{LoadOptions, Profile, RetryMode};
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
        deadline: Duration::from_secs(1),
        profile: Profile::Constant,
        connections: 256,
        retry_mode: RetryMode::Ignore,
        threads: 1,
        progress: false,
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
