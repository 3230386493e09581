use super::ConcurrencyLimit;
use spillway::clock::{Clock, CoarseClock};
use spillway::limit::ConcurrencyLimiter;
use tower_layer::Layer;

/// Wraps services in a [`ConcurrencyLimit`] sharing one [`ConcurrencyLimiter`]: its limit, queue
/// (capacity, timeout, order, CoDel) and stats are the limiter's, and every service the layer
/// makes, and every clone of those, draws on the same limit.
///
/// ```
/// use spillway::limit::{ConcurrencyLimiter, QueueOrder};
/// use spillway_tower::ConcurrencyLimitLayer;
/// use std::time::Duration;
///
/// let limiter = ConcurrencyLimiter::builder(32)
///     .queue(64)
///     .queue_timeout(Duration::from_millis(100))
///     .order(QueueOrder::AdaptiveLifo)
///     .build();
/// let layer = ConcurrencyLimitLayer::new(limiter.clone());
/// // `limiter.stats()` and `limiter.set_limit()` keep working while the layer is in use.
/// # drop(layer);
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer<C: Clock = CoarseClock> {
    limiter: ConcurrencyLimiter<C>,
}

impl<C: Clock> ConcurrencyLimitLayer<C> {
    /// A layer over `limiter`.
    pub fn new(limiter: ConcurrencyLimiter<C>) -> Self {
        Self { limiter }
    }
}

impl<S, C: Clock> Layer<S> for ConcurrencyLimitLayer<C> {
    type Service = ConcurrencyLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::new(inner, self.limiter.clone())
    }
}
