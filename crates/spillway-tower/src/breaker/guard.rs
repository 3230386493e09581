use super::Classify;
use crate::Guard;
use spillway::breaker::{Admission, CircuitBreaker};
use spillway::clock::{Clock, CoarseClock};
use std::fmt;
use std::sync::Arc;

/// Reports a call to the breaker exactly once: its classified outcome, or "cancelled" if the
/// response future is dropped first.
pub struct BreakerGuard<K, C: Clock = CoarseClock> {
    pub(crate) breaker: Arc<CircuitBreaker<C>>,
    pub(crate) admission: Option<Admission>,
    pub(crate) classify: K,
}

impl<T, E, K: Classify<T, E>, C: Clock> Guard<T, E> for BreakerGuard<K, C> {
    fn complete(mut self, result: &Result<T, E>) {
        if let Some(a) = self.admission.take() {
            self.breaker.finish(a, Some(self.classify.is_failure(result)));
        }
    }
}

impl<K, C: Clock> Drop for BreakerGuard<K, C> {
    fn drop(&mut self) {
        if let Some(a) = self.admission.take() {
            self.breaker.finish(a, None);
        }
    }
}

impl<K, C: Clock> fmt::Debug for BreakerGuard<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerGuard").field("admission", &self.admission).finish_non_exhaustive()
    }
}
