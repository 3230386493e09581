//! Spillway's limits shared across replicas through Redis.
//!
//! When one proxy (or one service instance) is not enough, a per-client quota must hold across
//! all of them. Redis is the engine; this crate brings the scripts and what to do when Redis
//! cannot answer:
//!
//! - [`GlobalRate`]: GCRA in one Lua script, atomic, on Redis's clock (replicas' clocks do not
//!   matter), returning the same [`spillway::rate::Decision`] as the local limiters, with
//!   optional token leases that cut round trips (with a documented accuracy bound);
//! - [`GlobalConcurrency`]: a semaphore of leases in a sorted set, so that a crashed replica's
//!   permits come back;
//! - [`Client`]: one node or a Redis Cluster (every script touches one key, placed by a hash
//!   tag), `redis://` or `rediss://`, ACL credentials, a deadline on every call, a circuit
//!   breaker on Redis itself, metrics, and a heartbeat that counts the live replicas;
//! - [`FailMode`], per policy, when Redis is down or slow: admit, refuse, or enforce this
//!   replica's share locally.

mod client;
mod concurrency;
mod rate;

pub use client::{CallError, Client, RedisConfig};
pub use concurrency::{Full, GlobalConcurrency, GlobalPermit};
pub use rate::GlobalRate;

/// What a global policy does while Redis cannot answer (down, slow past the deadline, or its
/// breaker open). `spillway_redis_fallback_active{policy}` is 1 meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailMode {
    /// Admit everything: availability first.
    Open,
    /// Refuse everything (429/503 with a 1 s `Retry-After`): the limit first.
    Closed,
    /// Enforce the limit divided by the live replicas (counted by heartbeats in Redis), locally.
    #[default]
    Local,
}
