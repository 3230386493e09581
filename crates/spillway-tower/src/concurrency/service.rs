use crate::{BoxError, Overloaded, ResponseFuture};
use spillway::clock::{Clock, CoarseClock};
use spillway::limit::{ConcurrencyLimiter, OwnedPermit};
use std::task::{Context, Poll};
use tower_service::Service;

/// A service behind a concurrency limit; see [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer).
///
/// `poll_ready` is the inner service's; the permit is taken in `call`, and released when the
/// response future completes or is dropped. A request that finds the limit reached waits in the
/// limiter's queue (taking the inner service, already ready, along with it and leaving a clone),
/// or fails at once with [`Overloaded`] if there is no queue or it is full.
///
/// ```
/// use spillway::limit::{ConcurrencyLimiter, OwnedPermit};
/// use spillway_tower::{ConcurrencyLimit, Overloaded};
/// use tower::{Service, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let limiter = ConcurrencyLimiter::new(1); // no queue
/// let mut svc = ConcurrencyLimit::new(service_fn(|()| async { Ok::<_, std::convert::Infallible>("ok") }), limiter);
/// let first = svc.ready().await.unwrap().call(()); // holds the only permit until it completes
/// let second = svc.ready().await.unwrap().call(()).await;
/// assert!(second.unwrap_err().downcast_ref::<Overloaded>().is_some());
/// assert_eq!(first.await.unwrap(), "ok");
/// # });
/// ```
#[derive(Debug)]
pub struct ConcurrencyLimit<S, C: Clock = CoarseClock> {
    inner: S,
    limiter: ConcurrencyLimiter<C>,
}

impl<S, C: Clock> ConcurrencyLimit<S, C> {
    /// `inner` behind `limiter`.
    pub fn new(inner: S, limiter: ConcurrencyLimiter<C>) -> Self {
        Self { inner, limiter }
    }

    /// The shared limiter.
    pub fn limiter(&self) -> &ConcurrencyLimiter<C> {
        &self.limiter
    }
}

impl<S: Clone, C: Clock> Clone for ConcurrencyLimit<S, C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), limiter: self.limiter.clone() }
    }
}

impl<S, Req, C> Service<Req> for ConcurrencyLimit<S, C>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Into<BoxError>,
    Req: Send + 'static,
    C: Clock + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, OwnedPermit<C>, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The common case: a permit is free. No allocation, no lock.
        if let Some(permit) = self.limiter.try_take_owned() {
            return ResponseFuture::admitted(self.inner.call(req), permit);
        }
        if self.limiter.queue_capacity() == 0 {
            return match self.limiter.try_acquire_owned() {
                Ok(permit) => ResponseFuture::admitted(self.inner.call(req), permit),
                Err(rejected) => ResponseFuture::rejected(Overloaded::from(rejected)),
            };
        }
        // Wait in the bounded queue, carrying the ready inner service (the slow path boxes).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let limiter = self.limiter.clone();
        ResponseFuture::queued(Box::pin(async move {
            let permit = limiter.acquire_owned().await.map_err(Overloaded::from)?;
            let response = inner.call(req).await.map_err(Into::into);
            drop(permit);
            response
        }))
    }
}
