//! [`RateLimitLayer`]: a keyed rate limit (per client, per API key, per route…).

mod layer;
mod service;

pub use layer::{KeyExtractor, RateLimitLayer};
pub use service::RateLimit;
