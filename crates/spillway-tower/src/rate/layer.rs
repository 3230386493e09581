use super::RateLimit;
use spillway::clock::{Clock, CoarseClock};
use spillway::rate::{Algorithm, KeyedLimiter};
use std::hash::Hash;
use std::sync::Arc;
use tower_layer::Layer;

/// Picks the rate-limit key of a request. Any `Fn(&Req) -> K + Clone` is one:
/// `|req: &http::Request<B>| req.headers().get("x-api-key").cloned()`.
pub trait KeyExtractor<Req>: Clone {
    /// The key: a client address, an API key, a route.
    type Key: Hash;

    /// The key of `req`.
    fn key(&self, req: &Req) -> Self::Key;
}

impl<Req, K: Hash, F: Fn(&Req) -> K + Clone> KeyExtractor<Req> for F {
    type Key = K;

    fn key(&self, req: &Req) -> K {
        self(req)
    }
}

/// Wraps services in a [`RateLimit`] that checks a shared [`KeyedLimiter`] for the key each
/// request maps to. One `Arc`'d table serves every service and clone.
///
/// ```
/// use spillway::rate::{Gcra, KeyedLimiter, Quota};
/// use spillway_tower::RateLimitLayer;
///
/// // 10 a second per user, bursts of 20, at most 100 000 users tracked.
/// let limiter = KeyedLimiter::<String, _>::new(Gcra::new(Quota::per_second(10)?.with_burst(20)?), 100_000);
/// let layer = RateLimitLayer::new(limiter, |req: &(String, u32)| req.0.clone());
/// # drop(layer);
/// # Ok::<(), spillway::rate::QuotaError>(())
/// ```
pub struct RateLimitLayer<K, A, E, C = CoarseClock> {
    limiter: Arc<KeyedLimiter<K, A, C>>,
    extractor: E,
}

impl<K: Hash, A: Algorithm, E, C: Clock> RateLimitLayer<K, A, E, C> {
    /// A layer over `limiter`, keyed by `extractor`.
    pub fn new(limiter: KeyedLimiter<K, A, C>, extractor: E) -> Self {
        Self { limiter: Arc::new(limiter), extractor }
    }

    /// The shared limiter (stats).
    pub fn limiter(&self) -> &Arc<KeyedLimiter<K, A, C>> {
        &self.limiter
    }
}

impl<K, A, E: Clone, C> Clone for RateLimitLayer<K, A, E, C> {
    fn clone(&self) -> Self {
        Self { limiter: self.limiter.clone(), extractor: self.extractor.clone() }
    }
}

impl<S, K, A, E: Clone, C> Layer<S> for RateLimitLayer<K, A, E, C> {
    type Service = RateLimit<S, K, A, E, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self.limiter.clone(), self.extractor.clone())
    }
}

impl<K, A: std::fmt::Debug, E, C: std::fmt::Debug> std::fmt::Debug for RateLimitLayer<K, A, E, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimitLayer").field("limiter", &self.limiter).finish_non_exhaustive()
    }
}
