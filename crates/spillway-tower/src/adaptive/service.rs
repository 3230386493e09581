use super::AdaptiveGuard;
use crate::breaker::Classify;
use crate::{BoxError, Overloaded, ResponseFuture};
use spillway::adaptive::{AdaptiveLimiter, LimitAlgorithm};
use spillway::clock::{Clock, CoarseClock};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// A service behind an adaptive concurrency limit; see
/// [`AdaptiveLimitLayer`](super::AdaptiveLimitLayer).
///
/// ```
/// use spillway::adaptive::{AdaptiveLimiter, Aimd};
/// use spillway::limit::ConcurrencyLimiter;
/// use spillway_tower::AdaptiveLimitLayer;
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter = AdaptiveLimiter::new(Aimd::default().with_bounds(1, 100).with_initial(10), ConcurrencyLimiter::new(1));
/// let layer = AdaptiveLimitLayer::new(limiter);
/// let svc = layer.layer(service_fn(|()| async { Err::<(), _>(std::io::Error::other("timeout")) }));
/// let _ = svc.oneshot(()).await; // an error: a drop, so the limit backs off
/// assert_eq!(layer.limiter().limit(), 9);
/// # });
/// ```
pub struct AdaptiveLimit<S, A, K, C: Clock = CoarseClock> {
    inner: S,
    limiter: Arc<AdaptiveLimiter<A, C>>,
    classify: K,
}

impl<S, A, K, C: Clock> AdaptiveLimit<S, A, K, C> {
    /// `inner` behind `limiter`, classifying drops with `classify`.
    pub fn new(inner: S, limiter: Arc<AdaptiveLimiter<A, C>>, classify: K) -> Self {
        Self { inner, limiter, classify }
    }
}

impl<S: Clone, A, K: Clone, C: Clock> Clone for AdaptiveLimit<S, A, K, C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), limiter: self.limiter.clone(), classify: self.classify.clone() }
    }
}

impl<S, A, K, Req, C> Service<Req> for AdaptiveLimit<S, A, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: LimitAlgorithm,
    K: Classify<S::Response, S::Error>,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, AdaptiveGuard<A, K, C>, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.limiter.try_admit() {
            Ok(admission) => ResponseFuture::admitted(
                self.inner.call(req),
                AdaptiveGuard {
                    limiter: self.limiter.clone(),
                    admission: Some(admission),
                    classify: self.classify.clone(),
                },
            ),
            Err(rejected) => ResponseFuture::rejected(Overloaded::from(rejected)),
        }
    }
}

impl<S: std::fmt::Debug, A: LimitAlgorithm, K, C: Clock> std::fmt::Debug for AdaptiveLimit<S, A, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}
