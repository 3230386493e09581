use crate::{BoxError, Overloaded, ResponseFuture};
use spillway::shed::{Bulkhead as Partitions, OwnedBulkheadPermit};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_service::Service;

/// A service behind a bulkhead; see [`BulkheadLayer`](super::BulkheadLayer).
///
/// ```
/// use spillway::shed::Bulkhead;
/// use spillway_tower::{BulkheadLayer, Overloaded};
/// use tower::{Layer, Service, ServiceExt, service_fn};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let mut svc = BulkheadLayer::new(Bulkhead::new(1, &[1, 0]), |tenant: &usize| *tenant)
///     .layer(service_fn(|t: usize| async move { Ok::<_, std::convert::Infallible>(t) }));
/// let held = svc.ready().await.unwrap().call(0); // tenant 0 uses its guaranteed slot
/// let refused = svc.ready().await.unwrap().call(1).await.unwrap_err();
/// assert!(refused.downcast_ref::<Overloaded>().is_some());
/// assert_eq!(held.await.unwrap(), 0);
/// # });
/// ```
pub struct Bulkhead<S, F> {
    inner: S,
    bulkhead: Arc<Partitions>,
    partition: F,
}

impl<S, F> Bulkhead<S, F> {
    /// `inner` behind `bulkhead`, partitioning with `partition`.
    pub fn new(inner: S, bulkhead: Arc<Partitions>, partition: F) -> Self {
        Self { inner, bulkhead, partition }
    }
}

impl<S: Clone, F: Clone> Clone for Bulkhead<S, F> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone(), bulkhead: self.bulkhead.clone(), partition: self.partition.clone() }
    }
}

impl<S, F, Req> Service<Req> for Bulkhead<S, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(&Req) -> usize,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, OwnedBulkheadPermit, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let partition = (self.partition)(&req);
        match Partitions::try_acquire_owned(&self.bulkhead, partition) {
            Some(permit) => ResponseFuture::admitted(self.inner.call(req), permit),
            None => ResponseFuture::rejected(Overloaded::bulkhead_full(partition)),
        }
    }
}

impl<S: std::fmt::Debug, F> std::fmt::Debug for Bulkhead<S, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}
