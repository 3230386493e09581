//! [`AdaptiveLimitLayer`]: a concurrency limit that an algorithm moves from the responses.

mod guard;
mod layer;
mod service;

pub use guard::AdaptiveGuard;
pub use layer::AdaptiveLimitLayer;
pub use service::AdaptiveLimit;
