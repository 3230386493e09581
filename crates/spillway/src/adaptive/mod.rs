//! Adaptive concurrency limits: find the limit instead of configuring it.
//!
//! A [`LimitAlgorithm`] watches each request's latency, the concurrency it started at and whether
//! it was dropped (timed out, rejected downstream), and moves the limit. [`AdaptiveLimiter`] wires
//! one to a [`ConcurrencyLimiter`](crate::limit::ConcurrencyLimiter) through `set_limit`.
//!
//! | algorithm | signal | from |
//! | --- | --- | --- |
//! | [`Aimd`] | drops and timeouts | TCP Reno; Netflix `AIMDLimit` |
//! | [`Vegas`] | estimated queue: `limit × (1 − rtt_min / rtt)` | TCP Vegas; Netflix `VegasLimit` |
//! | [`Gradient2`] | short vs long average latency | Netflix `Gradient2Limit` |
//! | [`Gradient`] | sampled latency vs minimum latency | Envoy's adaptive concurrency filter |
//! | [`Slo`] | windowed p99 against a latency target | the seeds: p99 > SLO → down, < SLO/2 → up |
//!
//! [`Windowed`] feeds an algorithm one aggregated sample per window of requests.
//!
//! Every algorithm is a plain state machine fed with [`Sample`]s, so the same code runs against
//! real traffic and in a simulation on virtual time.
//!
//! ```
//! use spillway::adaptive::{LimitAlgorithm, Sample, Vegas};
//! use std::time::Duration;
//!
//! let mut vegas = Vegas::default();
//! let before = vegas.limit();
//! for _ in 0..100 {
//!     // Latency stays at its minimum while the limit is fully used: no queue, so grow.
//!     vegas.on_sample(Sample { latency: Duration::from_millis(10), in_flight: vegas.limit(), dropped: false });
//! }
//! assert!(vegas.limit() > before);
//! ```

/// `with_bounds` and `with_initial` for an algorithm with `limit: f64`, `min` and `max` fields.
macro_rules! limit_builders {
    () => {
        /// The limit's bounds (`min` at least 1).
        pub fn with_bounds(mut self, min: usize, max: usize) -> Self {
            self.min = min.max(1);
            self.max = max.max(self.min);
            self.limit = super::clamp_limit(self.limit, self.min, self.max);
            self
        }

        /// The starting limit (within the bounds).
        pub fn with_initial(mut self, limit: usize) -> Self {
            self.limit = super::clamp_limit(limit as f64, self.min, self.max);
            self
        }
    };
}

mod aimd;
mod gradient;
mod gradient2;
mod limiter;
mod slo;
mod vegas;
mod windowed;

pub use aimd::Aimd;
pub use gradient::Gradient;
pub use gradient2::Gradient2;
pub use limiter::{AdaptiveLimiter, AdaptivePermit, Admission};
pub use slo::Slo;
pub use vegas::Vegas;
pub use windowed::Windowed;

use std::fmt;
use std::time::Duration;

/// One finished request, as an algorithm sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// From admission to completion.
    pub latency: Duration,
    /// Requests in flight when this one was admitted (itself included).
    pub in_flight: usize,
    /// It failed in a way that signals overload: timed out, dropped, rejected downstream.
    pub dropped: bool,
}

/// A concurrency-limit controller: fed one [`Sample`] per finished request, it answers the limit.
///
/// ```
/// use spillway::adaptive::{Aimd, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut aimd = Aimd::default().with_initial(100);
/// let start = aimd.limit();
/// aimd.on_sample(Sample { latency: Duration::from_millis(5), in_flight: start, dropped: true });
/// assert!(aimd.limit() < start); // multiplicative decrease on a drop
/// ```
pub trait LimitAlgorithm: Send + fmt::Debug {
    /// The current limit.
    fn limit(&self) -> usize;

    /// Takes one sample and returns the (possibly new) limit.
    fn on_sample(&mut self, sample: Sample) -> usize;
}

impl<A: LimitAlgorithm + ?Sized> LimitAlgorithm for Box<A> {
    fn limit(&self) -> usize {
        (**self).limit()
    }
    fn on_sample(&mut self, sample: Sample) -> usize {
        (**self).on_sample(sample)
    }
}

/// Nanoseconds as `f64` for the algorithms' arithmetic.
fn nanos_f64(d: Duration) -> f64 {
    d.as_nanos() as f64
}

/// Clamps a fractional limit into `[min, max]` and rounds it for use.
fn clamp_limit(limit: f64, min: usize, max: usize) -> f64 {
    limit.clamp(min as f64, max.max(min) as f64)
}
