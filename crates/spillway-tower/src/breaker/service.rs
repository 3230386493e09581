use super::{BreakerGuard, Classify};
use crate::{BoxError, Overloaded, ResponseFuture};
use spillway::breaker::CircuitBreaker as Breaker;
use spillway::clock::{Clock, CoarseClock};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// A service behind a circuit breaker; see [`CircuitBreakerLayer`](super::CircuitBreakerLayer).
///
/// ```
/// use spillway::breaker::{BreakerConfig, CircuitBreaker, Window};
/// use spillway_tower::{CircuitBreakerLayer, Overloaded};
/// use tower::{Layer, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let config = BreakerConfig { window: Window::Count(4), minimum_calls: 4, ..BreakerConfig::default() };
/// let svc = CircuitBreakerLayer::new(CircuitBreaker::new(config))
///     .layer(service_fn(|()| async { Err::<(), _>(std::io::Error::other("down")) }));
/// for _ in 0..4 {
///     assert!(svc.clone().oneshot(()).await.is_err()); // reaches the service, fails
/// }
/// let err = svc.clone().oneshot(()).await.unwrap_err(); // refused without a call
/// assert!(err.downcast_ref::<Overloaded>().is_some());
/// # });
/// ```
pub struct CircuitBreaker<S, K, C: Clock = CoarseClock> {
    inner: S,
    breaker: Arc<Breaker<C>>,
    classify: K,
}

impl<S, K, C: Clock> CircuitBreaker<S, K, C> {
    /// `inner` behind `breaker`, classifying with `classify`.
    pub fn new(inner: S, breaker: Arc<Breaker<C>>, classify: K) -> Self {
        Self { inner, breaker, classify }
    }
}

impl<S: Clone, K: Clone, C: Clock> Clone for CircuitBreaker<S, K, C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

impl<S, K, Req, C> Service<Req> for CircuitBreaker<S, K, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Classify<S::Response, S::Error>,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, BreakerGuard<K, C>, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.try_admit() {
            Ok(admission) => ResponseFuture::admitted(
                self.inner.call(req),
                BreakerGuard {
                    breaker: self.breaker.clone(),
                    admission: Some(admission),
                    classify: self.classify.clone(),
                },
            ),
            Err(open) => ResponseFuture::rejected(Overloaded::from(open)),
        }
    }
}

impl<S: std::fmt::Debug, K, C: Clock> std::fmt::Debug for CircuitBreaker<S, K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}
