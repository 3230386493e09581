//! [`AdaptiveLimitLayer`]: a concurrency limit that an algorithm moves from the responses.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::AdaptiveLimitLayer;
pub use service::AdaptiveLimit;
