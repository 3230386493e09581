//! [`RateLimitLayer`]: a keyed rate limit (per client, per API key, per route…).

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{KeyExtractor, RateLimitLayer};
pub use service::RateLimit;
