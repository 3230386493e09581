use super::LoadShed;
use spillway::clock::{Clock, CoarseClock};
use spillway::shed::PriorityShedder;
use std::sync::Arc;
use tower_layer::Layer;

/// Wraps services in a [`LoadShed`]: each request's [`Criticality`](spillway::shed::Criticality)
/// comes from `classify` (a header, a request extension, the route…), and one shared
/// [`PriorityShedder`] refuses the lower classes first as in-flight work nears its limit.
///
/// ```
/// use spillway::limit::ConcurrencyLimiter;
/// use spillway::shed::{Criticality, PriorityShedder};
/// use spillway_tower::LoadShedLayer;
///
/// let shedder = PriorityShedder::new(ConcurrencyLimiter::new(100));
/// let layer = LoadShedLayer::new(shedder, |req: &(bool, u32)| {
///     if req.0 { Criticality::Critical } else { Criticality::Sheddable }
/// });
/// # drop(layer);
/// ```
pub struct LoadShedLayer<F, C: Clock = CoarseClock> {
    shedder: Arc<PriorityShedder<C>>,
    classify: F,
}

impl<F, C: Clock> LoadShedLayer<F, C> {
    /// A layer over `shedder`, classifying requests with `classify`.
    pub fn new(shedder: PriorityShedder<C>, classify: F) -> Self {
        Self { shedder: Arc::new(shedder), classify }
    }
}

impl<F: Clone, C: Clock> Clone for LoadShedLayer<F, C> {
    fn clone(&self) -> Self {
        Self { shedder: self.shedder.clone(), classify: self.classify.clone() }
    }
}

impl<S, F: Clone, C: Clock> Layer<S> for LoadShedLayer<F, C> {
    type Service = LoadShed<S, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed::new(inner, self.shedder.clone(), self.classify.clone())
    }
}

impl<F, C: Clock> std::fmt::Debug for LoadShedLayer<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadShedLayer").field("shedder", &self.shedder).finish_non_exhaustive()
    }
}
