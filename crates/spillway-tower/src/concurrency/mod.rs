//! [`ConcurrencyLimitLayer`]: a concurrency limit with a bounded, ordered, timed queue.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::ConcurrencyLimitLayer;
pub use service::ConcurrencyLimit;
