//! Spillway's policies as [tower] layers, for axum, tonic and hyper services.
//!
//! Two classic tower pitfalls are designed out:
//!
//! - **State is shared by every clone.** A layer's limiter lives behind an `Arc`: the service
//!   clones that axum or tonic make per connection or per request all draw on one limit (tower's
//!   own `RateLimit` keeps one bucket per clone, so 300 clones of a 5/s limit admit 1 500).
//! - **`poll_ready` never holds capacity** for a request that may never come: readiness is the
//!   inner service's; the permit is taken in `call`. (tower's `ConcurrencyLimit` takes a permit in
//!   `poll_ready`, so clones that poll and never call starve the others.)
//!
//! Rejections are [`Overloaded`] errors (boxed, as tower errors are) that carry the reason and
//! when to retry.
//!
//! ```
//! use spillway::limit::ConcurrencyLimiter;
//! use spillway_tower::ConcurrencyLimitLayer;
//! use tower::{Layer, ServiceExt, service_fn};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let layer = ConcurrencyLimitLayer::new(ConcurrencyLimiter::builder(64).queue(128).build());
//! let svc = layer.layer(service_fn(|req: u32| async move { Ok::<_, std::convert::Infallible>(req * 2) }));
//! assert_eq!(svc.oneshot(21).await.unwrap(), 42);
//! # });
//! ```
//!
//! [tower]: https://docs.rs/tower

pub mod adaptive;
pub mod breaker;
pub mod bulkhead;
pub mod concurrency;
mod error;
mod future;
#[cfg(feature = "http")]
pub mod http;
pub mod rate;
pub mod shed;

pub use adaptive::{AdaptiveLimit, AdaptiveLimitLayer};
pub use breaker::{CircuitBreaker, CircuitBreakerLayer, Classify, ErrorsAreFailures};
pub use bulkhead::{Bulkhead, BulkheadLayer};
pub use concurrency::{ConcurrencyLimit, ConcurrencyLimitLayer};
pub use error::{BoxError, Overloaded, Reason};
pub use future::{Guard, ResponseFuture};
pub use rate::{KeyExtractor, RateLimit, RateLimitLayer};
pub use shed::{LoadShed, LoadShedLayer};

/// The README's examples (library and layers), compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
