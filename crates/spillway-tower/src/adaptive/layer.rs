use super::AdaptiveLimit;
use crate::breaker::ErrorsAreFailures;
use spillway::adaptive::{AdaptiveLimiter, LimitAlgorithm};
use spillway::clock::{Clock, CoarseClock};
use std::sync::Arc;
use tower_layer::Layer;

/// Wraps services in an [`AdaptiveLimit`] sharing one [`AdaptiveLimiter`]: every finished
/// call feeds its latency to the algorithm, and calls the classifier `K` flags (errors, by
/// default; for HTTP typically 503 and timeouts) count as drops.
///
/// ```
/// use spillway::adaptive::{AdaptiveLimiter, Gradient2, Windowed};
/// use spillway::limit::ConcurrencyLimiter;
/// use spillway_tower::AdaptiveLimitLayer;
///
/// let limiter = AdaptiveLimiter::new(Windowed::new(Gradient2::default(), 200), ConcurrencyLimiter::new(1));
/// let layer = AdaptiveLimitLayer::new(limiter);
/// # drop(layer);
/// ```
pub struct AdaptiveLimitLayer<A, K = ErrorsAreFailures, C: Clock = CoarseClock> {
    limiter: Arc<AdaptiveLimiter<A, C>>,
    classify: K,
}

impl<A: LimitAlgorithm, C: Clock> AdaptiveLimitLayer<A, ErrorsAreFailures, C> {
    /// A layer over `limiter` where errors count as drops.
    pub fn new(limiter: AdaptiveLimiter<A, C>) -> Self {
        Self { limiter: Arc::new(limiter), classify: ErrorsAreFailures }
    }
}

impl<A, K, C: Clock> AdaptiveLimitLayer<A, K, C> {
    /// Classifies calls as drops with `classify` instead.
    pub fn with_classifier<K2>(self, classify: K2) -> AdaptiveLimitLayer<A, K2, C> {
        AdaptiveLimitLayer { limiter: self.limiter, classify }
    }

    /// The shared limiter (its limit, stats).
    pub fn limiter(&self) -> &Arc<AdaptiveLimiter<A, C>> {
        &self.limiter
    }
}

impl<A, K: Clone, C: Clock> Clone for AdaptiveLimitLayer<A, K, C> {
    fn clone(&self) -> Self {
        Self { limiter: self.limiter.clone(), classify: self.classify.clone() }
    }
}

impl<S, A, K: Clone, C: Clock> Layer<S> for AdaptiveLimitLayer<A, K, C> {
    type Service = AdaptiveLimit<S, A, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit::new(inner, self.limiter.clone(), self.classify.clone())
    }
}

impl<A: LimitAlgorithm, K, C: Clock> std::fmt::Debug for AdaptiveLimitLayer<A, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimitLayer").field("limiter", &self.limiter).finish_non_exhaustive()
    }
}
