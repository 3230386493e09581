//! [`ConcurrencyLimitLayer`]: a concurrency limit with a bounded, ordered, timed queue.

mod layer;
mod service;

pub use layer::ConcurrencyLimitLayer;
pub use service::ConcurrencyLimit;
