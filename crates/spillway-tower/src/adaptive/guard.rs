use crate::Guard;
use crate::breaker::Classify;
use spillway::adaptive::{AdaptiveLimiter, Admission, LimitAlgorithm};
use spillway::clock::{Clock, CoarseClock};
use std::fmt;
use std::sync::Arc;

/// Releases the permit exactly once, feeding the call's latency and classified outcome to the
/// algorithm (or nothing, if the response future is dropped first).
pub struct AdaptiveGuard<A: LimitAlgorithm, K, C: Clock = CoarseClock> {
    pub(crate) limiter: Arc<AdaptiveLimiter<A, C>>,
    pub(crate) admission: Option<Admission<C>>,
    pub(crate) classify: K,
}

impl<T, E, A: LimitAlgorithm, K: Classify<T, E>, C: Clock> Guard<T, E> for AdaptiveGuard<A, K, C> {
    fn complete(mut self, result: &Result<T, E>) {
        if let Some(a) = self.admission.take() {
            self.limiter.finish(a, Some(self.classify.is_failure(result)));
        }
    }
}

impl<A: LimitAlgorithm, K, C: Clock> Drop for AdaptiveGuard<A, K, C> {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            self.limiter.finish(a, None);
        }
    }
}

impl<A: LimitAlgorithm, K, C: Clock> fmt::Debug for AdaptiveGuard<A, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveGuard").field("admission", &self.admission).finish_non_exhaustive()
    }
}
