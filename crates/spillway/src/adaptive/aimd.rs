//! Additive increase, multiplicative decrease.

use super::{LimitAlgorithm, Sample, clamp_limit};
use std::time::Duration;

/// AIMD with the defaults of Netflix's `AIMDLimit`: start at 20; on a drop, or a latency above
/// `timeout`, multiply by `backoff` (0.9); otherwise, while the limit is in use (in flight ≥
/// half the limit), add one. Bounded to `[min, max]` = `[20, 200]`.
///
/// Simple and robust, but blind to queueing until requests time out: it keeps latency near the
/// timeout rather than near the minimum.
///
/// ```
/// use spillway::adaptive::{Aimd, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut aimd = Aimd::default().with_bounds(1, 100).with_initial(10);
/// let ok = Sample { latency: Duration::from_millis(1), in_flight: 10, dropped: false };
/// assert_eq!(aimd.on_sample(ok), 11);
/// let slow = Sample { latency: Duration::from_secs(10), in_flight: 11, dropped: false };
/// assert_eq!(aimd.on_sample(slow), 9); // ⌊11 × 0.9⌋
/// ```
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: f64,
    min: usize,
    max: usize,
    backoff: f64,
    timeout: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Self { limit: 20.0, min: 20, max: 200, backoff: 0.9, timeout: Duration::from_secs(5) }
    }
}

impl Aimd {
    limit_builders!();

    /// The factor applied on a drop (0.5..1).
    pub fn with_backoff(mut self, ratio: f64) -> Self {
        self.backoff = ratio.clamp(0.5, 0.999);
        self
    }

    /// A latency above which a request counts as dropped.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl LimitAlgorithm for Aimd {
    fn limit(&self) -> usize {
        self.limit as usize
    }

    fn on_sample(&mut self, s: Sample) -> usize {
        if s.dropped || s.latency > self.timeout {
            self.limit = clamp_limit((self.limit * self.backoff).floor(), self.min, self.max);
        } else if s.in_flight as f64 * 2.0 >= self.limit {
            self.limit = clamp_limit(self.limit + 1.0, self.min, self.max);
        }
        self.limit()
    }
}
