//! [`CircuitBreakerLayer`]: stop calling a failing service, probe it, resume.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{CircuitBreakerLayer, Classify, ErrorsAreFailures};
pub use service::CircuitBreaker;
