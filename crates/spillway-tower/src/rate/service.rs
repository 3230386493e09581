use super::KeyExtractor;
use crate::{BoxError, Overloaded, ResponseFuture};
use spillway::clock::{Clock, CoarseClock};
use spillway::rate::{Algorithm, KeyedLimiter};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// A service behind a keyed rate limit; see [`RateLimitLayer`](super::RateLimitLayer).
///
/// The check happens in `call` (one table lookup and one compare-and-swap, no allocation); a
/// denied request never reaches the inner service and fails with an [`Overloaded`] whose
/// `retry_after` is exact.
///
/// ```
/// use spillway::rate::{Gcra, KeyedLimiter, Quota};
/// use spillway_tower::{Overloaded, RateLimitLayer};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter = KeyedLimiter::new(Gcra::new(Quota::per_hour(1).unwrap()), 1024);
/// let layer = RateLimitLayer::new(limiter, |user: &String| user.clone());
/// let mut svc = layer.layer(service_fn(|user: String| async move { Ok::<_, std::convert::Infallible>(user.len()) }));
/// assert_eq!(svc.ready().await.unwrap().call("ann".into()).await.unwrap(), 3);
/// let err = svc.ready().await.unwrap().call("ann".into()).await.unwrap_err();
/// assert!(err.downcast_ref::<Overloaded>().unwrap().is_rate_limited());
/// assert_eq!(svc.ready().await.unwrap().call("bob".into()).await.unwrap(), 3); // another key
/// # });
/// ```
pub struct RateLimit<S, K, A, E, C = CoarseClock> {
    inner: S,
    limiter: Arc<KeyedLimiter<K, A, C>>,
    extractor: E,
}

impl<S, K, A, E, C> RateLimit<S, K, A, E, C> {
    /// `inner` behind `limiter`, keyed by `extractor`.
    pub fn new(inner: S, limiter: Arc<KeyedLimiter<K, A, C>>, extractor: E) -> Self {
        Self { inner, limiter, extractor }
    }
}

impl<S: Clone, K, A, E: Clone, C> Clone for RateLimit<S, K, A, E, C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), limiter: self.limiter.clone(), extractor: self.extractor.clone() }
    }
}

impl<S, Req, A, E, C> Service<Req> for RateLimit<S, E::Key, A, E, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: Algorithm,
    E: KeyExtractor<Req>,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, (), S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let decision = self.limiter.check_key(&self.extractor.key(&req));
        if decision.allowed {
            ResponseFuture::admitted(self.inner.call(req), ())
        } else {
            ResponseFuture::rejected(Overloaded::from(decision))
        }
    }
}

impl<S: std::fmt::Debug, K, A: std::fmt::Debug, E, C: std::fmt::Debug> std::fmt::Debug
    for RateLimit<S, K, A, E, C>
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}
