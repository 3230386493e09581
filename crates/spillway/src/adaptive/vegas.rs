//! TCP Vegas applied to concurrency.

use super::{LimitAlgorithm, Sample, clamp_limit, nanos_f64};

/// Vegas with the defaults of Netflix's `VegasLimit`: it estimates the queue as
/// `limit × (1 − rtt_noload / rtt)` and keeps it between `alpha = 3·log₁₀(limit)` and
/// `beta = 6·log₁₀(limit)` requests (integer log₁₀, at least 1): grow by `log₁₀(limit)` when the
/// queue is below alpha (by beta when it is below `log₁₀(limit)`), shrink by `log₁₀(limit)` above
/// beta or on a drop. `rtt_noload` is the lowest latency seen, re-probed every
/// `30 × limit` samples (jittered) so that it follows a service that got slower.
///
/// ```
/// use spillway::adaptive::{LimitAlgorithm, Sample, Vegas};
/// use std::time::Duration;
///
/// let mut v = Vegas::default();
/// let at = |ms| Sample { latency: Duration::from_millis(ms), in_flight: 20, dropped: false };
/// v.on_sample(at(10)); // learns rtt_noload = 10 ms
/// v.on_sample(at(10)); // no queue: +beta
/// assert_eq!(v.limit(), 26);
/// v.on_sample(at(40)); // queue ≈ 26 × 0.75 ≈ 20 > beta: shrink
/// assert_eq!(v.limit(), 25);
/// ```
#[derive(Debug, Clone)]
pub struct Vegas {
    limit: f64,
    max: usize,
    smoothing: f64,
    rtt_noload: f64,
    probe_multiplier: f64,
    probe_count: u64,
    probe_jitter: f64,
    rng: u64,
}

impl Default for Vegas {
    fn default() -> Self {
        let mut v = Self {
            limit: 20.0,
            max: 1000,
            smoothing: 1.0,
            rtt_noload: 0.0,
            probe_multiplier: 30.0,
            probe_count: 0,
            probe_jitter: 1.0,
            rng: 0x9e37_79b9_7f4a_7c15,
        };
        v.new_jitter();
        v
    }
}

/// Netflix's integer log₁₀, at least 1.
fn log10(limit: f64) -> f64 {
    (limit.max(1.0).log10().floor()).max(1.0)
}

impl Vegas {
    /// The starting limit.
    pub fn with_initial(mut self, limit: usize) -> Self {
        self.limit = limit.clamp(1, self.max) as f64;
        self
    }

    /// The largest limit.
    pub fn with_max(mut self, max: usize) -> Self {
        self.max = max.max(1);
        self.limit = self.limit.min(self.max as f64);
        self
    }

    /// How far each update moves the limit towards its target (0..=1; 1 = all the way).
    pub fn with_smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing.clamp(0.01, 1.0);
        self
    }

    fn new_jitter(&mut self) {
        // xorshift: deterministic, so simulations repeat.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.probe_jitter = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 * 0.5;
    }
}

impl LimitAlgorithm for Vegas {
    fn limit(&self) -> usize {
        self.limit as usize
    }

    fn on_sample(&mut self, s: Sample) -> usize {
        let rtt = nanos_f64(s.latency).max(1.0);
        self.probe_count += 1;
        if self.probe_count as f64 >= self.probe_jitter * self.probe_multiplier * self.limit {
            self.new_jitter();
            self.probe_count = 0;
            self.rtt_noload = rtt;
            return self.limit();
        }
        if self.rtt_noload == 0.0 || rtt < self.rtt_noload {
            self.rtt_noload = rtt;
            return self.limit();
        }
        let limit = self.limit;
        let log = log10(limit);
        let target = if s.dropped {
            limit - log
        } else if (s.in_flight as f64) * 2.0 < limit {
            return self.limit(); // not using the limit: no evidence either way
        } else {
            let queue = (limit * (1.0 - self.rtt_noload / rtt)).ceil();
            if queue <= log {
                limit + 6.0 * log
            } else if queue < 3.0 * log {
                limit + log
            } else if queue > 6.0 * log {
                limit - log
            } else {
                return self.limit();
            }
        };
        let target = clamp_limit(target, 1, self.max);
        self.limit = (1.0 - self.smoothing) * limit + self.smoothing * target;
        self.limit()
    }
}
