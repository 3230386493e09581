use super::CircuitBreaker;
use spillway::breaker::CircuitBreaker as Breaker;
use spillway::clock::{Clock, CoarseClock};
use std::sync::Arc;
use tower_layer::Layer;

/// Decides whether a finished call counts as a failure for the breaker. Any
/// `Fn(&Result<T, E>) -> bool + Clone` is one (for HTTP: `|r| r.as_ref().map_or(true, |resp|
/// resp.status().is_server_error())`).
pub trait Classify<T, E>: Clone {
    /// `true` if the call failed.
    fn is_failure(&self, result: &Result<T, E>) -> bool;
}

impl<T, E, F: Fn(&Result<T, E>) -> bool + Clone> Classify<T, E> for F {
    fn is_failure(&self, result: &Result<T, E>) -> bool {
        self(result)
    }
}

/// The default classifier: errors are failures, responses are successes.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreFailures;

impl<T, E> Classify<T, E> for ErrorsAreFailures {
    fn is_failure(&self, result: &Result<T, E>) -> bool {
        result.is_err()
    }
}

/// Wraps services in a [`CircuitBreaker`] sharing one breaker; calls are classified as failures
/// by `K` (errors, by default). Slow calls count through the breaker's own `slow_call` setting.
///
/// ```
/// use spillway::breaker::{BreakerConfig, CircuitBreaker};
/// use spillway_tower::CircuitBreakerLayer;
///
/// let layer = CircuitBreakerLayer::new(CircuitBreaker::new(BreakerConfig::default()));
/// // or: .with_classifier(|r: &Result<u16, std::io::Error>| matches!(r, Ok(500..) | Err(_)))
/// # drop(layer);
/// ```
pub struct CircuitBreakerLayer<K = ErrorsAreFailures, C: Clock = CoarseClock> {
    breaker: Arc<Breaker<C>>,
    classify: K,
}

impl<C: Clock> CircuitBreakerLayer<ErrorsAreFailures, C> {
    /// A layer over `breaker` where errors are failures.
    pub fn new(breaker: Breaker<C>) -> Self {
        Self { breaker: Arc::new(breaker), classify: ErrorsAreFailures }
    }
}

impl<K, C: Clock> CircuitBreakerLayer<K, C> {
    /// Classifies calls with `classify` instead.
    pub fn with_classifier<K2>(self, classify: K2) -> CircuitBreakerLayer<K2, C> {
        CircuitBreakerLayer { breaker: self.breaker, classify }
    }

    /// The shared breaker (state, stats, forcing open).
    pub fn breaker(&self) -> &Arc<Breaker<C>> {
        &self.breaker
    }
}

impl<K: Clone, C: Clock> Clone for CircuitBreakerLayer<K, C> {
    fn clone(&self) -> Self {
        Self { breaker: self.breaker.clone(), classify: self.classify.clone() }
    }
}

impl<S, K: Clone, C: Clock> Layer<S> for CircuitBreakerLayer<K, C> {
    type Service = CircuitBreaker<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classify.clone())
    }
}

impl<K, C: Clock> std::fmt::Debug for CircuitBreakerLayer<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreakerLayer").field("breaker", &self.breaker).finish_non_exhaustive()
    }
}
