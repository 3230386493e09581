//! The one rejection type every layer returns.

use spillway::limit::{RejectReason, Rejected};
use spillway::rate::Decision;
use std::time::Duration;

/// The error type of tower services: anything, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a layer refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The concurrency limit, its queue or its queue timeout.
    Concurrency(RejectReason),
    /// Shed to keep room for more important work (the class of the refused request).
    Shed(spillway::shed::Criticality),
    /// The request's bulkhead partition is full (and nothing is free to borrow).
    BulkheadFull {
        /// The partition.
        partition: usize,
    },
    /// The circuit breaker in front of the service is open.
    BreakerOpen,
    /// A rate limit: answer 429.
    RateLimited {
        /// The limit of the policy that refused.
        limit: u32,
        /// Time until the limit is fully replenished.
        reset: Duration,
    },
}

/// A request refused by a Spillway layer, with when to retry. Found in a service's
/// [`BoxError`] with `downcast_ref::<Overloaded>()`.
///
/// ```
/// use spillway_tower::{BoxError, Overloaded};
///
/// fn retry_after(err: &BoxError) -> Option<std::time::Duration> {
///     err.downcast_ref::<Overloaded>().map(Overloaded::retry_after)
/// }
/// # let _ = retry_after;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("overloaded ({reason:?}); retry after {retry_after:?}")]
pub struct Overloaded {
    reason: Reason,
    retry_after: Duration,
}

impl Overloaded {
    /// A refusal for `reason`, worth retrying after `retry_after` (for policies outside these
    /// layers, such as the proxy's, that answer the same way).
    pub fn new(reason: Reason, retry_after: Duration) -> Self {
        Self { reason, retry_after }
    }

    /// Why.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// When it is worth retrying.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// Whether this is a rate limit (429) rather than overload (503/504).
    pub fn is_rate_limited(&self) -> bool {
        matches!(self.reason, Reason::RateLimited { .. })
    }
}

impl From<Rejected> for Overloaded {
    fn from(r: Rejected) -> Self {
        Self { reason: Reason::Concurrency(r.reason()), retry_after: r.retry_after() }
    }
}

impl Overloaded {
    pub(crate) fn shed(class: spillway::shed::Criticality, r: Rejected) -> Self {
        Self { reason: Reason::Shed(class), retry_after: r.retry_after() }
    }
}

impl Overloaded {
    pub(crate) fn bulkhead_full(partition: usize) -> Self {
        // No drain-rate estimate here: a second is the conventional minimum Retry-After.
        Self { reason: Reason::BulkheadFull { partition }, retry_after: Duration::from_secs(1) }
    }
}

impl From<spillway::breaker::BreakerOpen> for Overloaded {
    fn from(b: spillway::breaker::BreakerOpen) -> Self {
        Self { reason: Reason::BreakerOpen, retry_after: b.retry_after() }
    }
}

impl From<Decision> for Overloaded {
    fn from(d: Decision) -> Self {
        Self { reason: Reason::RateLimited { limit: d.limit, reset: d.reset }, retry_after: d.retry_after }
    }
}
