//! [`CircuitBreakerLayer`]: stop calling a failing service, probe it, resume.

mod guard;
mod layer;
mod service;

pub use guard::BreakerGuard;
pub use layer::{CircuitBreakerLayer, Classify, ErrorsAreFailures};
pub use service::CircuitBreaker;
