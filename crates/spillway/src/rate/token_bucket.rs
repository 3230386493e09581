//! A token bucket refilled in whole steps: `refill` tokens every `period`, up to `capacity`.

use super::{Algorithm, Decision, QuotaError};
use crate::clock::nanos;
use std::time::Duration;

/// A token bucket with interval refill, as API gateways describe quotas: "a bucket of 100, refilled
/// with 10 every 100 ms". Refills happen on period boundaries, all at once, so in any span `t` it
/// admits at most `capacity + refill·⌈t / period⌉`. (For a continuous refill, [`Gcra`](super::Gcra)
/// is the same bucket written as one timestamp.)
///
/// State: tokens used (32 bits) and the refill step of the last update (32 bits, wrapping: a key
/// idle for exactly 2³² periods would look recent and get no refill for that step).
///
/// ```
/// use spillway::rate::{RateLimit, RateLimiter, TokenBucket};
/// use spillway::clock::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let bucket = TokenBucket::new(5, 5, Duration::from_secs(1)).unwrap();
/// let limiter = RateLimiter::with_clock(bucket, clock.clone());
/// assert!(limiter.check_n(5).allowed);
/// let denied = limiter.check();
/// assert!(!denied.allowed);
/// clock.advance(denied.retry_after);
/// assert_eq!(limiter.check().remaining, 4);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    capacity: u32,
    refill: u32,
    period: u64,
}

impl TokenBucket {
    /// A bucket of `capacity` tokens that gains `refill` tokens every `period`.
    pub fn new(capacity: u32, refill: u32, period: Duration) -> Result<Self, QuotaError> {
        if capacity == 0 || refill == 0 {
            return Err(QuotaError::Zero);
        }
        let period = nanos(period);
        if period == 0 {
            return Err(QuotaError::Period);
        }
        Ok(Self { capacity, refill, period })
    }

    /// The bucket's size.
    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    /// Tokens added per period.
    pub fn refill(&self) -> u32 {
        self.refill
    }

    /// The refill period.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period)
    }

    /// Tokens used after refilling up to step `step`.
    #[inline]
    fn used(&self, state: u64, step: u64) -> u64 {
        let used = state & 0xffff_ffff;
        let last = (state >> 32) as u32;
        let elapsed = u64::from((step as u32).wrapping_sub(last));
        used.saturating_sub(elapsed.saturating_mul(u64::from(self.refill)))
    }

    /// Nanoseconds from `now` until `tokens` more tokens have been refilled.
    #[inline]
    fn time_to_refill(&self, tokens: u64, step: u64, now: u64) -> u64 {
        if tokens == 0 {
            return 0;
        }
        let steps = tokens.div_ceil(u64::from(self.refill));
        (step + steps).saturating_mul(self.period).saturating_sub(now)
    }
}

impl Algorithm for TokenBucket {
    #[inline]
    fn decide(&self, state: u64, now: u64, n: u32) -> (Decision, u64) {
        let step = now / self.period;
        let used = self.used(state, step);
        let cap = u64::from(self.capacity);
        let reset = self.time_to_refill(used, step, now);
        if n > self.capacity {
            return (Decision::never(self.capacity, cap - used, reset), state);
        }
        let after = used + u64::from(n);
        if after <= cap {
            let next = ((step as u32 as u64) << 32) | after;
            (Decision::allow(self.capacity, cap - after, self.time_to_refill(after, step, now)), next)
        } else {
            let retry = self.time_to_refill(after - cap, step, now);
            (Decision::deny(self.capacity, cap - used, retry, reset), state)
        }
    }

    #[inline]
    fn idle_at(&self, state: u64, now: u64) -> u64 {
        let step = now / self.period;
        now + self.time_to_refill(self.used(state, step), step, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_in_whole_steps() {
        let b = TokenBucket::new(10, 4, Duration::from_millis(100)).unwrap();
        let ms = 1_000_000;
        let now = 1_000 * ms; // start of a step
        let (d, s) = b.decide(0, now, 10);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset, Duration::from_millis(300)); // 10 tokens at 4 per step: 3 steps
        let (d, _) = b.decide(s, now + 50 * ms, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(50));
        let (d, _) = b.decide(s, now + 50 * ms, 5);
        assert_eq!(d.retry_after, Duration::from_millis(150)); // needs two steps
        let (d, _) = b.decide(s, now + 100 * ms, 4);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }
}
