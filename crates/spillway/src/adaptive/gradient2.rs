//! Netflix's Gradient2: the ratio of long-term to short-term latency.

use super::{LimitAlgorithm, Sample, clamp_limit, nanos_f64};

/// Gradient2 with the defaults of Netflix's `Gradient2Limit`: a long exponential average of
/// latency (600 samples, 10 of warm-up) is the baseline; each sample's gradient is
/// `clamp(1.5 × long / short, 0.5, 1)`, and the new limit is `limit × gradient + 4` (the queue
/// allowance), smoothed by 0.2 and bounded to `[20, 200]`. When the long average is more than
/// twice the short one (load just went away), it decays 5 % per sample so the baseline recovers.
///
/// ```
/// use spillway::adaptive::{Gradient2, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut g = Gradient2::default().with_bounds(1, 1000);
/// let sample = |ms, n| Sample { latency: Duration::from_millis(ms), in_flight: n, dropped: false };
/// for _ in 0..50 {
///     g.on_sample(sample(10, g.limit())); // steady latency: grows by the queue allowance
/// }
/// let grown = g.limit();
/// assert!(grown > 20);
/// for _ in 0..50 {
///     g.on_sample(sample(100, g.limit())); // latency ×10: shrinks
/// }
/// assert!(g.limit() < grown);
/// ```
#[derive(Debug, Clone)]
pub struct Gradient2 {
    limit: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    queue_size: f64,
    tolerance: f64,
    long: f64,
    long_count: u64,
    long_window: f64,
    warmup: u64,
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self {
            limit: 20.0,
            min: 20,
            max: 200,
            smoothing: 0.2,
            queue_size: 4.0,
            tolerance: 1.5,
            long: 0.0,
            long_count: 0,
            long_window: 600.0,
            warmup: 10,
        }
    }
}

impl Gradient2 {
    limit_builders!();

    /// The queue allowance added at each update (default 4).
    pub fn with_queue_size(mut self, queue: f64) -> Self {
        self.queue_size = queue.max(0.0);
        self
    }

    /// How much latency above the baseline is tolerated before shrinking (default 1.5).
    pub fn with_tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance.max(1.0);
        self
    }

    fn add_long(&mut self, rtt: f64) {
        self.long_count += 1;
        if self.long_count <= self.warmup {
            self.long += (rtt - self.long) / self.long_count as f64;
        } else {
            let factor = 2.0 / (self.long_window + 1.0);
            self.long = self.long * (1.0 - factor) + rtt * factor;
        }
    }
}

impl LimitAlgorithm for Gradient2 {
    fn limit(&self) -> usize {
        self.limit as usize
    }

    fn on_sample(&mut self, s: Sample) -> usize {
        let short = nanos_f64(s.latency).max(1.0);
        self.add_long(short);
        if self.long / short > 2.0 {
            self.long *= 0.95;
        }
        if (s.in_flight as f64) < self.limit / 2.0 {
            return self.limit();
        }
        let gradient = (self.tolerance * self.long / short).clamp(0.5, 1.0);
        let target = self.limit * gradient + self.queue_size;
        let next = self.limit * (1.0 - self.smoothing) + target * self.smoothing;
        self.limit = clamp_limit(next, self.min, self.max);
        self.limit()
    }
}
