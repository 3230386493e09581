//! Feeding an algorithm one aggregated sample per window.

use super::{LimitAlgorithm, Sample};
use std::time::Duration;

/// Aggregates `size` samples into one before handing it to the wrapped algorithm: the mean
/// latency, the largest in-flight count, and "dropped" if more than `drop_ratio` of the window
/// was (default: any). This is Netflix's `WindowedLimit` with a sample-count window.
///
/// Algorithms that compare a latency with a minimum ([`Vegas`](super::Vegas),
/// [`Gradient2`](super::Gradient2)) assume latency is flat when there is no queue. With service
/// times that vary a lot from request to request, per-request samples make the minimum look far
/// below the norm and the algorithm sees a queue that is not there; window means are steady.
///
/// ```
/// use spillway::adaptive::{LimitAlgorithm, Sample, Vegas, Windowed};
/// use std::time::Duration;
///
/// let mut v = Windowed::new(Vegas::default(), 10);
/// for i in 0..9 {
///     v.on_sample(Sample { latency: Duration::from_millis(5 + i), in_flight: 20, dropped: false });
/// }
/// assert_eq!(v.limit(), 20); // nothing passed on yet
/// ```
#[derive(Debug, Clone)]
pub struct Windowed<A> {
    inner: A,
    size: usize,
    drop_ratio: f64,
    count: usize,
    latency_sum: u128,
    max_in_flight: usize,
    drops: usize,
}

impl<A: LimitAlgorithm> Windowed<A> {
    /// Wraps `inner`, aggregating `size` samples (at least 1) per update.
    pub fn new(inner: A, size: usize) -> Self {
        Self {
            inner,
            size: size.max(1),
            drop_ratio: 0.0,
            count: 0,
            latency_sum: 0,
            max_in_flight: 0,
            drops: 0,
        }
    }

    /// The window counts as dropped when more than this fraction of its samples were.
    pub fn with_drop_ratio(mut self, ratio: f64) -> Self {
        self.drop_ratio = ratio.clamp(0.0, 1.0);
        self
    }

    /// The wrapped algorithm.
    pub fn inner(&self) -> &A {
        &self.inner
    }
}

impl<A: LimitAlgorithm> LimitAlgorithm for Windowed<A> {
    fn limit(&self) -> usize {
        self.inner.limit()
    }

    fn on_sample(&mut self, s: Sample) -> usize {
        self.count += 1;
        self.latency_sum += s.latency.as_nanos();
        self.max_in_flight = self.max_in_flight.max(s.in_flight);
        self.drops += usize::from(s.dropped);
        if self.count < self.size {
            return self.inner.limit();
        }
        let mean = (self.latency_sum / self.count as u128).min(u128::from(u64::MAX)) as u64;
        let sample = Sample {
            latency: Duration::from_nanos(mean),
            in_flight: self.max_in_flight,
            dropped: self.drops as f64 > self.drop_ratio * self.count as f64,
        };
        (self.count, self.latency_sum, self.max_in_flight, self.drops) = (0, 0, 0, 0);
        self.inner.on_sample(sample)
    }
}
