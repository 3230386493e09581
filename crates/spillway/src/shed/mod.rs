//! Load shedding: when not everything can be served, choose what to drop.
//!
//! - [`Criticality`]: four classes of request, from `CriticalPlus` (never shed first) to
//!   `Sheddable`.
//! - [`PriorityShedder`]: one concurrency limit shared by all classes, where each class may only
//!   fill it up to its own ceiling, so lower classes are refused first as load rises.
//! - [`Bulkhead`]: partitions with guaranteed shares that may borrow spare capacity.
//! - [`ClientThrottle`]: client-side adaptive throttling (Google SRE): reject locally with
//!   probability `max(0, (requests − K·accepts) / (requests + 1))`.
//! - [`RetryBudget`]: retries limited to a ratio of requests, with a floor.

mod bulkhead;
mod priority;
mod throttle;

pub use bulkhead::{Bulkhead, BulkheadPermit, OwnedBulkheadPermit};
pub use priority::{Criticality, PriorityShedder, UnknownCriticality, ceiling};
pub use throttle::{ClientThrottle, RetryBudget};
