//! An axum app behind Spillway's layers: a per-API-key rate limit, an adaptive concurrency limit
//! with a short queue, and answers (429/503/504 + Retry-After) from one place.
//!
//! `cargo run --release -p spillway-tower --example axum`, then for instance
//! `for i in $(seq 50); do curl -s -o /dev/null -w '%{http_code}\n' -H 'x-api-key: demo' localhost:3000/work & done`,
//! or open-loop load: `spillway load --url http://127.0.0.1:3000/work --rate 200 --duration 5 --deadline-ms 1000`
//! (the requests carry no API key, so they share one quota: 20/s and a burst of 10; the rest get
//! 429 with Retry-After). `tests/examples_under_load.rs` runs exactly that.

use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::{Router, routing::get};
use spillway::adaptive::{AdaptiveLimiter, Gradient2, Windowed};
use spillway::limit::ConcurrencyLimiter;
use spillway::rate::{Gcra, KeyedLimiter, Quota};
use spillway_tower::http::{HeaderKey, OverloadResponseLayer};
use spillway_tower::{AdaptiveLimitLayer, BoxError, RateLimitLayer};
use std::time::Duration;
use tower::ServiceBuilder;

async fn work() -> &'static str {
    tokio::time::sleep(Duration::from_millis(20)).await; // the "slow backend"
    "done\n"
}

async fn internal_error(_: BoxError) -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

/// The app: `/work` behind the policies.
pub(crate) fn app() -> Result<Router, BoxError> {
    let rate = KeyedLimiter::new(Gcra::new(Quota::per_second(20)?.with_burst(10)?), 10_000);
    let limiter = AdaptiveLimiter::new(
        Windowed::new(Gradient2::default().with_bounds(4, 200), 50),
        ConcurrencyLimiter::builder(1).queue(32).queue_timeout(Duration::from_millis(100)).build(),
    );
    let policies = ServiceBuilder::new()
        // Errors that are not overload (none here) become 500s.
        .layer(HandleErrorLayer::new(internal_error))
        // Overload becomes 429/503/504 with Retry-After (gRPC: trailers-only).
        .layer(OverloadResponseLayer)
        // Quota first: refused requests cost nothing below.
        .layer(RateLimitLayer::new(rate, HeaderKey::new(http::HeaderName::from_static("x-api-key"))))
        .layer(AdaptiveLimitLayer::new(limiter));
    Ok(Router::new().route("/work", get(work)).layer(policies))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let app = app()?;
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
