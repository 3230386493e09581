//! A latency-target controller: the seeds' adaptive strategy.

use super::{LimitAlgorithm, Sample, clamp_limit, nanos_f64};
use std::time::Duration;

/// Keeps the 99th-percentile latency under a target: every `window` samples, if p99 > SLO the
/// limit is multiplied by 0.9; if p99 < SLO / 2 and the limit was in use, it grows by 5 % (at
/// least 1). In between it holds. Drops count as latencies above the SLO.
///
/// ```
/// use spillway::adaptive::{LimitAlgorithm, Sample, Slo};
/// use std::time::Duration;
///
/// let mut slo = Slo::new(Duration::from_millis(100)).with_window(10).with_initial(50);
/// let sample = |ms| Sample { latency: Duration::from_millis(ms), in_flight: 50, dropped: false };
/// for _ in 0..10 {
///     slo.on_sample(sample(300)); // p99 300 ms > 100 ms
/// }
/// assert_eq!(slo.limit(), 45);
/// for _ in 0..10 {
///     slo.on_sample(sample(20)); // p99 20 ms < 50 ms
/// }
/// assert_eq!(slo.limit(), 47);
/// ```
#[derive(Debug, Clone)]
pub struct Slo {
    target: f64,
    limit: f64,
    min: usize,
    max: usize,
    window: usize,
    samples: Vec<f64>,
    busy: usize,
}

impl Slo {
    /// A controller for a p99 target of `slo`: starts at 20, bounded to `[1, 1000]`, windows of
    /// 100 samples.
    pub fn new(slo: Duration) -> Self {
        Self {
            target: nanos_f64(slo).max(1.0),
            limit: 20.0,
            min: 1,
            max: 1000,
            window: 100,
            samples: Vec::with_capacity(100),
            busy: 0,
        }
    }

    limit_builders!();

    /// Samples per decision (default 100).
    pub fn with_window(mut self, samples: usize) -> Self {
        self.window = samples.max(1);
        self.samples = Vec::with_capacity(self.window);
        self
    }
}

impl LimitAlgorithm for Slo {
    fn limit(&self) -> usize {
        self.limit as usize
    }

    fn on_sample(&mut self, s: Sample) -> usize {
        let latency = if s.dropped { f64::INFINITY } else { nanos_f64(s.latency) };
        self.samples.push(latency);
        if s.in_flight as f64 * 2.0 >= self.limit {
            self.busy += 1;
        }
        if self.samples.len() < self.window {
            return self.limit();
        }
        self.samples.sort_unstable_by(f64::total_cmp);
        let p99 = self.samples[(self.samples.len() * 99).div_ceil(100) - 1];
        let in_use = self.busy * 2 >= self.samples.len();
        self.samples.clear();
        self.busy = 0;
        if p99 > self.target {
            self.limit = clamp_limit(self.limit * 0.9, self.min, self.max);
        } else if p99 < self.target / 2.0 && in_use {
            self.limit = clamp_limit(self.limit + (self.limit * 0.05).max(1.0), self.min, self.max);
        }
        self.limit()
    }
}
