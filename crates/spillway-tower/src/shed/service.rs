use crate::{BoxError, Overloaded, ResponseFuture};
use spillway::clock::{Clock, CoarseClock};
use spillway::limit::OwnedPermit;
use spillway::shed::{Criticality, PriorityShedder};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// A service behind a priority shedder; see [`LoadShedLayer`](super::LoadShedLayer).
///
/// ```
/// use spillway::limit::ConcurrencyLimiter;
/// use spillway::shed::{Criticality, PriorityShedder};
/// use spillway_tower::{LoadShedLayer, Overloaded};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let shedder = PriorityShedder::new(ConcurrencyLimiter::new(2)); // sheddable: 50 % = 1 slot
/// let mut svc = LoadShedLayer::new(shedder, |c: &Criticality| *c)
///     .layer(service_fn(|c: Criticality| async move { Ok::<_, std::convert::Infallible>(c) }));
/// let batch = svc.ready().await.unwrap().call(Criticality::Sheddable); // in flight
/// let more = svc.ready().await.unwrap().call(Criticality::Sheddable).await;
/// assert!(more.unwrap_err().downcast_ref::<Overloaded>().is_some()); // shed
/// assert!(svc.ready().await.unwrap().call(Criticality::Critical).await.is_ok()); // room kept
/// # drop(batch);
/// # });
/// ```
pub struct LoadShed<S, F, C: Clock = CoarseClock> {
    inner: S,
    shedder: Arc<PriorityShedder<C>>,
    classify: F,
}

impl<S, F, C: Clock> LoadShed<S, F, C> {
    /// `inner` behind `shedder`, classifying with `classify`.
    pub fn new(inner: S, shedder: Arc<PriorityShedder<C>>, classify: F) -> Self {
        Self { inner, shedder, classify }
    }
}

impl<S: Clone, F: Clone, C: Clock> Clone for LoadShed<S, F, C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), shedder: self.shedder.clone(), classify: self.classify.clone() }
    }
}

impl<S, F, Req, C> Service<Req> for LoadShed<S, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> Criticality,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, OwnedPermit<C>, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let class = (self.classify)(&req);
        match self.shedder.try_acquire_owned(class) {
            Ok(permit) => ResponseFuture::admitted(self.inner.call(req), permit),
            Err(rejected) => ResponseFuture::rejected(Overloaded::shed(class, rejected)),
        }
    }
}

impl<S: std::fmt::Debug, F, C: Clock> std::fmt::Debug for LoadShed<S, F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("shedder", &self.shedder)
            .finish_non_exhaustive()
    }
}
