//! GCRA and the leaky bucket: one word of state, the theoretical arrival time (TAT).

use super::{Algorithm, Decision, Quota, QuotaError};
use std::time::Duration;

/// The generic cell rate algorithm: the token bucket written as a single timestamp.
///
/// The state is the *theoretical arrival time* of the next request if the client sent at exactly
/// the rate. A request of weight `n` passes if, after charging `n` emission intervals, that time
/// is at most `burst` intervals ahead of now. In any span `t` it admits at most
/// `burst + t / emission_interval` requests, and `retry_after` is exact.
///
/// ```
/// use spillway::rate::{Gcra, Quota, RateLimit, RateLimiter};
/// use spillway::clock::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::with_clock(Gcra::new(Quota::per_second(2).unwrap()), clock.clone());
/// assert!(limiter.check_n(2).allowed);          // the burst (defaults to the count)
/// let d = limiter.check();
/// assert_eq!(d.retry_after, Duration::from_millis(500));
/// clock.advance(Duration::from_millis(500));
/// assert!(limiter.check().allowed);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Gcra {
    quota: Quota,
    /// Emission interval T, nanoseconds.
    t: u64,
    /// Burst tolerance plus one interval: burst × T.
    window: u64,
}

impl Gcra {
    /// A GCRA limiter for `quota` (its rate and burst).
    pub fn new(quota: Quota) -> Self {
        let t = quota.emission_ns;
        Self { quota, t, window: t.saturating_mul(u64::from(quota.burst)) }
    }

    /// The quota.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    #[inline]
    fn decide_with(&self, tat: u64, now: u64, n: u32) -> (Decision, u64, u64) {
        let base = tat.max(now);
        let ahead = base - now;
        let cost = self.t.saturating_mul(u64::from(n));
        let limit = self.quota.burst;
        if n > limit {
            return (Decision::never(limit, (self.window - ahead.min(self.window)) / self.t, ahead), tat, 0);
        }
        let after = ahead.saturating_add(cost);
        if after <= self.window {
            let d = Decision::allow(limit, (self.window - after) / self.t, after);
            (d, base.saturating_add(cost), after)
        } else {
            let remaining = (self.window.saturating_sub(ahead)) / self.t;
            (Decision::deny(limit, remaining, after - self.window, ahead), tat, 0)
        }
    }
}

impl Algorithm for Gcra {
    #[inline]
    fn decide(&self, tat: u64, now: u64, n: u32) -> (Decision, u64) {
        let (d, next, _) = self.decide_with(tat, now, n);
        (d, next)
    }

    #[inline]
    fn idle_at(&self, tat: u64, _now: u64) -> u64 {
        tat
    }
}

/// The leaky bucket of nginx's `limit_req`: requests leak out at `rate`; up to `burst` more may
/// wait in the bucket. Admitted requests beyond the first `delay` excess ones come with a
/// [`Decision::delay`] that spaces them out at the rate; with [`nodelay`](LeakyBucket::nodelay)
/// they pass at once but still occupy the bucket.
///
/// `LeakyBucket::new(10, 1 s, 5)` is `limit_req zone=z rate=10r/s burst=5;`.
///
/// ```
/// use spillway::rate::{LeakyBucket, RateLimit, RateLimiter};
/// use spillway::clock::ManualClock;
/// use std::time::Duration;
///
/// let bucket = LeakyBucket::new(10, Duration::from_secs(1), 2).unwrap();
/// let limiter = RateLimiter::with_clock(bucket, ManualClock::new());
/// assert_eq!(limiter.check().delay, Duration::ZERO);            // leaks at once
/// assert_eq!(limiter.check().delay, Duration::from_millis(100)); // waits its turn
/// assert_eq!(limiter.check().delay, Duration::from_millis(200));
/// assert!(!limiter.check().allowed);                             // bucket full: 503
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LeakyBucket {
    gcra: Gcra,
    burst: u32,
    /// Excess requests (in nanoseconds of bucket level) that pass without delay.
    free_ns: u64,
}

impl LeakyBucket {
    /// `rate` requests per `period`, with `burst` excess requests allowed to queue (may be 0).
    pub fn new(rate: u32, period: Duration, burst: u32) -> Result<Self, QuotaError> {
        let capacity = burst
            .checked_add(1)
            .ok_or(QuotaError::TooLarge { limit: u64::from(burst) + 1, max: u64::from(u32::MAX) })?;
        let quota = Quota::new(rate, period)?.with_burst(capacity)?;
        Ok(Self { gcra: Gcra::new(quota), burst, free_ns: 0 })
    }

    /// nginx `delay=N`: the first `n` excess requests pass without delay.
    pub fn delay(mut self, n: u32) -> Self {
        self.free_ns = self.gcra.t.saturating_mul(u64::from(n));
        self
    }

    /// nginx `nodelay`: no admitted request is delayed.
    pub fn nodelay(self) -> Self {
        let burst = self.burst;
        self.delay(burst)
    }

    /// The rate at which the bucket leaks, as a quota whose burst is `burst + 1`.
    pub fn quota(&self) -> Quota {
        self.gcra.quota
    }

    /// How long the bucket takes to leak one request.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.gcra.t)
    }

    /// nginx's `burst`.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The configured `delay=` as a duration of bucket level.
    pub fn free(&self) -> Duration {
        Duration::from_nanos(self.free_ns)
    }
}

impl Algorithm for LeakyBucket {
    #[inline]
    fn decide(&self, tat: u64, now: u64, n: u32) -> (Decision, u64) {
        let (mut d, next, after) = self.gcra.decide_with(tat, now, n);
        if d.allowed {
            // `after` is the bucket level including this request; one interval of it is the
            // request leaking now, the rest is the queue in front of it.
            let wait = after.saturating_sub(self.gcra.t.saturating_mul(u64::from(n)));
            d.delay = Duration::from_nanos(wait.saturating_sub(self.free_ns));
        }
        (d, next)
    }

    #[inline]
    fn idle_at(&self, tat: u64, _now: u64) -> u64 {
        tat
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::nanos;

    fn ms(x: u64) -> u64 {
        x * 1_000_000
    }

    #[test]
    fn gcra_burst_then_rate() {
        let g = Gcra::new(Quota::per_second(10).unwrap().with_burst(3).unwrap());
        let mut s = 0;
        let now = ms(1000);
        for i in 0..3 {
            let (d, n) = g.decide(s, now, 1);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 2 - i);
            s = n;
        }
        let (d, _) = g.decide(s, now, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        assert_eq!(d.reset, Duration::from_millis(300));
        let (d, _) = g.decide(s, now + ms(100), 1);
        assert!(d.allowed);
    }

    #[test]
    fn gcra_weight_above_burst_never_passes() {
        let g = Gcra::new(Quota::per_second(10).unwrap().with_burst(3).unwrap());
        let (d, _) = g.decide(0, ms(5), 4);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::MAX);
        assert_eq!(d.remaining, 3);
    }

    #[test]
    fn leaky_bucket_matches_nginx_delay_semantics() {
        // rate=10r/s burst=4 delay=2: two excess pass at once, the next two are delayed.
        let b = LeakyBucket::new(10, Duration::from_secs(1), 4).unwrap().delay(2);
        let mut s = 0;
        let now = ms(50);
        let mut delays = vec![];
        for _ in 0..5 {
            let (d, n) = b.decide(s, now, 1);
            assert!(d.allowed);
            delays.push(d.delay.as_millis());
            s = n;
        }
        assert_eq!(delays, [0, 0, 0, 100, 200]);
        assert!(!b.decide(s, now, 1).0.allowed);
        let nodelay = LeakyBucket::new(10, Duration::from_secs(1), 4).unwrap().nodelay();
        let mut s = 0;
        for _ in 0..5 {
            let (d, n) = nodelay.decide(s, now, 1);
            assert_eq!(d.delay, Duration::ZERO);
            s = n;
        }
        assert!(!nodelay.decide(s, now, 1).0.allowed);
        assert_eq!(nanos(nodelay.free()), ms(400));
    }
}
