//! # Spillway: honest backpressure
//!
//! When a service receives more work than it can do, something has to give. Spillway's
//! primitives make that explicit and bounded: they admit what can be served, queue a bounded
//! amount, and reject the rest early with a value that says when to come back.
//!
//! - [`limit`]: [`ConcurrencyLimiter`](limit::ConcurrencyLimiter), a concurrency limit with a
//!   bounded wait queue (FIFO or LIFO, timeout, cancel-safe) and RAII permits.
//! - [`rate`]: rate limiters (GCRA, token bucket, leaky bucket, fixed and sliding windows) behind
//!   one trait, and [`KeyedLimiter`](rate::KeyedLimiter) with a hard cap on keys.
//! - [`adaptive`]: limit algorithms (AIMD, Vegas, Gradient2, an Envoy-style gradient, an SLO
//!   controller) and [`AdaptiveLimiter`](adaptive::AdaptiveLimiter), which sets a limiter's limit.
//! - [`breaker`]: [`CircuitBreaker`](breaker::CircuitBreaker) with count or time windows,
//!   failure and slow-call rates, jittered open time and half-open trials.
//! - [`channel`]: a bounded MPMC channel for sync and async code with an overflow policy.
//! - [`shed`]: criticality classes, a priority shedder, bulkheads, client-side throttling and
//!   retry budgets.
//! - `stream` (feature `async`): backpressure strategies for streams: bounded buffers with an
//!   overflow policy, keep-latest, drop-stale, sampling, throttling and batching.
//! - [`clock`]: injected time.
//!
//! Rejections are values, not errors: every decision carries when to retry.
//!
//! ```
//! use spillway::rate::{Gcra, Quota, RateLimit, RateLimiter};
//!
//! let limiter = RateLimiter::new(Gcra::new(Quota::per_second(100)?.with_burst(10)?));
//! let d = limiter.check();
//! assert!(d.allowed);
//! assert_eq!(d.remaining, 9);
//! # Ok::<(), spillway::rate::QuotaError>(())
//! ```

pub mod adaptive;
pub mod breaker;
pub mod channel;
pub mod clock;
pub mod limit;
mod park;
pub mod rate;
pub mod shed;
#[cfg(feature = "async")]
pub mod stream;
mod sync;
