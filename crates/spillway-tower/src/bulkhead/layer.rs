use super::Bulkhead;
use spillway::shed::Bulkhead as Partitions;
use std::sync::Arc;
use tower_layer::Layer;

/// Wraps services in a [`Bulkhead`]: `partition` maps each request to a partition (a tenant, a
/// route, a dependency) of one shared [`spillway::shed::Bulkhead`].
///
/// ```
/// use spillway::shed::Bulkhead;
/// use spillway_tower::BulkheadLayer;
///
/// // 100 slots: tenant 0 is guaranteed 60, tenant 1 is guaranteed 20, 20 are free to borrow.
/// let layer = BulkheadLayer::new(Bulkhead::new(100, &[60, 20]), |req: &(usize, String)| req.0);
/// # drop(layer);
/// ```
pub struct BulkheadLayer<F> {
    bulkhead: Arc<Partitions>,
    partition: F,
}

impl<F> BulkheadLayer<F> {
    /// A layer over `bulkhead`, partitioning with `partition`.
    pub fn new(bulkhead: Partitions, partition: F) -> Self {
        Self { bulkhead: Arc::new(bulkhead), partition }
    }
}

impl<F: Clone> Clone for BulkheadLayer<F> {
    fn clone(&self) -> Self {
        Self { bulkhead: self.bulkhead.clone(), partition: self.partition.clone() }
    }
}

impl<S, F: Clone> Layer<S> for BulkheadLayer<F> {
    type Service = Bulkhead<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, self.bulkhead.clone(), self.partition.clone())
    }
}

impl<F> std::fmt::Debug for BulkheadLayer<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BulkheadLayer").field("bulkhead", &self.bulkhead).finish_non_exhaustive()
    }
}
