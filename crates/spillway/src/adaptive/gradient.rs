//! A gradient controller in the style of Envoy's adaptive concurrency filter, without its
//! min-RTT probe.

use super::{LimitAlgorithm, Sample, clamp_limit, nanos_f64};

/// Windows of minimum latency remembered (see [`Gradient`]).
const MIN_WINDOWS: usize = 16;

/// Envoy's gradient controller: every `window` samples it takes the window's median latency and
/// sets `limit = limit × clamp((min_rtt + buffer) / median, 0.5, 2) + √limit`, with
/// `buffer = 25 % of min_rtt`, bounded to `[min, max]` (defaults 3 and 1000).
///
/// Envoy measures `min_rtt` (the median latency without queueing) by pinning concurrency to 3 for
/// a while every minute, which rejects live traffic each time (a common complaint). Here
/// `min_rtt` is the lowest window median of the last 16 windows: whenever the limit dips low enough
/// for the queue to empty, ordinary traffic shows the unloaded median, and old minima age out, so
/// a service that became slower is followed without ever forcing the limit down.
///
/// ```
/// use spillway::adaptive::{Gradient, LimitAlgorithm, Sample};
/// use std::time::Duration;
///
/// let mut g = Gradient::default().with_window(10);
/// let sample = |ms, n| Sample { latency: Duration::from_millis(ms), in_flight: n, dropped: false };
/// for _ in 0..10 {
///     g.on_sample(sample(10, 3)); // a window at the minimum latency: grow
/// }
/// let grown = g.limit();
/// assert!(grown > 3);
/// for _ in 0..10 {
///     g.on_sample(sample(40, grown)); // median 4× the minimum: halve (the gradient's floor)
/// }
/// assert!(g.limit() < grown);
/// ```
#[derive(Debug, Clone)]
pub struct Gradient {
    limit: f64,
    min: usize,
    max: usize,
    window: usize,
    buffer: f64,
    /// Latencies of the current window (capacity `window`, allocated once).
    samples: Vec<f64>,
    /// Median latency of the last windows (a ring of `MIN_WINDOWS`).
    minima: [f64; MIN_WINDOWS],
    filled: usize,
    next: usize,
}

impl Default for Gradient {
    fn default() -> Self {
        Self {
            limit: 3.0,
            min: 3,
            max: 1000,
            window: 100,
            buffer: 0.25,
            samples: Vec::with_capacity(100),
            minima: [0.0; MIN_WINDOWS],
            filled: 0,
            next: 0,
        }
    }
}

impl Gradient {
    limit_builders!();

    /// Samples per update (default 100).
    pub fn with_window(mut self, samples: usize) -> Self {
        self.window = samples.max(1);
        self.samples = Vec::with_capacity(self.window);
        self
    }

    /// Latency allowed above the minimum, as a fraction of it (default 0.25).
    pub fn with_buffer(mut self, fraction: f64) -> Self {
        self.buffer = fraction.clamp(0.0, 10.0);
        self
    }

    /// The current estimate of the unloaded latency, in nanoseconds.
    pub fn min_rtt_nanos(&self) -> f64 {
        self.minima[..self.filled].iter().copied().fold(f64::INFINITY, f64::min)
    }
}

impl LimitAlgorithm for Gradient {
    fn limit(&self) -> usize {
        self.limit as usize
    }

    fn on_sample(&mut self, s: Sample) -> usize {
        self.samples.push(nanos_f64(s.latency).max(1.0));
        if self.samples.len() < self.window {
            return self.limit();
        }
        self.samples.sort_unstable_by(f64::total_cmp);
        let n = self.samples.len();
        let median = self.samples[n / 2];
        self.samples.clear();
        self.minima[self.next] = median;
        self.next = (self.next + 1) % MIN_WINDOWS;
        self.filled = (self.filled + 1).min(MIN_WINDOWS);
        let min_rtt = self.min_rtt_nanos();
        let gradient = ((min_rtt * (1.0 + self.buffer)) / median).clamp(0.5, 2.0);
        let next = self.limit * gradient;
        self.limit = clamp_limit(next + next.sqrt(), self.min, self.max);
        self.limit()
    }
}
