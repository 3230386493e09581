//! Fixed and sliding windows: count requests per window of time.

use super::{Algorithm, Decision, Quota, QuotaError};
use std::time::Duration;

/// At most `limit` requests per aligned window of `period` (`quota.count()` per `quota.period()`;
/// the quota's burst is not used). Simple, and famously lets `2 × limit` through around a window
/// edge; in any span `t` it admits at most `limit·(⌈t/period⌉ + 1)`.
///
/// State: the count (32 bits) and the window number (32 bits, wrapping).
///
/// ```
/// use spillway::rate::{FixedWindow, Quota, RateLimit, RateLimiter};
/// use spillway::clock::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::with_clock(FixedWindow::new(Quota::per_second(2).unwrap()).unwrap(), clock.clone());
/// assert!(limiter.check_n(2).allowed);
/// let d = limiter.check();
/// assert!(!d.allowed);
/// clock.advance(d.retry_after); // the next window
/// assert!(limiter.check().allowed);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FixedWindow {
    limit: u32,
    window: u64,
}

impl FixedWindow {
    /// `quota.count()` requests per `quota.period()`.
    pub fn new(quota: Quota) -> Result<Self, QuotaError> {
        Ok(Self { limit: quota.count, window: quota.period_ns })
    }

    /// Requests per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window)
    }
}

impl Algorithm for FixedWindow {
    #[inline]
    fn decide(&self, state: u64, now: u64, n: u32) -> (Decision, u64) {
        let index = now / self.window;
        let to_end = self.window - now % self.window;
        let count = if (state >> 32) as u32 == index as u32 { state & 0xffff_ffff } else { 0 };
        let limit = u64::from(self.limit);
        let reset = if count > 0 { to_end } else { 0 };
        if n > self.limit {
            return (Decision::never(self.limit, limit - count, reset), state);
        }
        let after = count + u64::from(n);
        if after <= limit {
            let next = ((index as u32 as u64) << 32) | after;
            (Decision::allow(self.limit, limit - after, if after > 0 { to_end } else { 0 }), next)
        } else {
            (Decision::deny(self.limit, limit - count, to_end, reset), state)
        }
    }

    #[inline]
    fn idle_at(&self, state: u64, now: u64) -> u64 {
        let index = now / self.window;
        if (state >> 32) as u32 == index as u32 && state & 0xffff_ffff > 0 {
            (index + 1).saturating_mul(self.window)
        } else {
            0
        }
    }
}

const COUNT_BITS: u32 = 24;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;

/// The sliding-window counter: the current window's count plus the previous window's, weighted by
/// how much of it still overlaps the sliding window. Smooths the fixed window's edge at the price
/// of assuming the previous window's requests were evenly spread; in any span `t` it admits at
/// most `limit·(⌈t/period⌉ + 1)`, and in practice close to `limit` per `period`.
///
/// State: current and previous counts (24 bits each, so `limit < 2²⁴`) and the window number
/// (16 bits, wrapping: a key idle for exactly a multiple of 65 536 windows sees its old counts
/// for up to two windows, which can only deny, never over-admit).
///
/// ```
/// use spillway::rate::{Quota, RateLimit, RateLimiter, SlidingWindow};
/// use spillway::clock::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::with_clock(SlidingWindow::new(Quota::per_second(10).unwrap()).unwrap(), clock.clone());
/// assert!(limiter.check_n(10).allowed);
/// clock.advance(Duration::from_secs(1)); // next window: the previous one still weighs ~100 %
/// let d = limiter.check();
/// assert!(!d.allowed);
/// clock.advance(d.retry_after);
/// assert!(limiter.check().allowed);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct SlidingWindow {
    limit: u32,
    window: u64,
}

impl SlidingWindow {
    /// `quota.count()` requests per sliding `quota.period()`; `count` must be below 2²⁴.
    pub fn new(quota: Quota) -> Result<Self, QuotaError> {
        if u64::from(quota.count) > COUNT_MASK {
            return Err(QuotaError::TooLarge { limit: quota.count.into(), max: COUNT_MASK });
        }
        Ok(Self { limit: quota.count, window: quota.period_ns })
    }

    /// Requests per window.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window)
    }

    /// (previous, current) counts as seen from window `index`.
    #[inline]
    fn counts(state: u64, index: u64) -> (u64, u64) {
        let cur = state & COUNT_MASK;
        let prev = (state >> COUNT_BITS) & COUNT_MASK;
        match (index as u16).wrapping_sub((state >> 48) as u16) {
            0 => (prev, cur),
            1 => (cur, 0),
            _ => (0, 0),
        }
    }

    /// Nanoseconds into the window at which `prev·(W − e) ≤ room·W`, for `prev > 0`.
    #[inline]
    fn when_fits(&self, prev: u64, room: u64) -> u64 {
        let w = u128::from(self.window);
        let keep = (u128::from(room) * w / u128::from(prev)).min(w);
        (w - keep) as u64
    }
}

impl Algorithm for SlidingWindow {
    #[inline]
    fn decide(&self, state: u64, now: u64, n: u32) -> (Decision, u64) {
        let index = now / self.window;
        let elapsed = now % self.window;
        let to_end = self.window - elapsed;
        let (prev, cur) = Self::counts(state, index);
        let limit = u64::from(self.limit);
        let w = u128::from(self.window);
        // The estimate, scaled by W: prev·(W − elapsed) + cur·W.
        let weighted = |cur: u64| u128::from(prev) * u128::from(to_end) + u128::from(cur) * w;
        let remaining = |cur: u64| ((u128::from(limit) * w).saturating_sub(weighted(cur)) / w) as u64;
        let reset = |cur: u64| match (prev, cur) {
            (_, c) if c > 0 => to_end.saturating_add(self.window),
            (p, _) if p > 0 => to_end,
            _ => 0,
        };
        if n > self.limit {
            return (Decision::never(self.limit, remaining(cur), reset(cur)), state);
        }
        let after = cur + u64::from(n);
        if weighted(after) <= u128::from(limit) * w {
            let next = ((index as u16 as u64) << 48) | (prev << COUNT_BITS) | after;
            (Decision::allow(self.limit, remaining(after), reset(after)), next)
        } else {
            let retry = if after <= limit {
                // The previous window must fade until the rest fits.
                self.when_fits(prev, limit - after) - elapsed
            } else {
                // Only the next window can hold it, once this one has faded enough.
                to_end.saturating_add(self.when_fits(cur, limit - u64::from(n)))
            };
            (Decision::deny(self.limit, remaining(cur), retry, reset(cur)), state)
        }
    }

    #[inline]
    fn idle_at(&self, state: u64, now: u64) -> u64 {
        let index = now / self.window;
        match Self::counts(state, index) {
            (_, c) if c > 0 => (index + 2).saturating_mul(self.window),
            (p, _) if p > 0 => (index + 1).saturating_mul(self.window),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn fixed_window_resets_on_the_edge() {
        let w = FixedWindow::new(Quota::per_second(3).unwrap()).unwrap();
        let (d, s) = w.decide(0, 5 * S + S / 2, 3);
        assert!(d.allowed);
        assert_eq!(d.reset, Duration::from_millis(500));
        let (d, _) = w.decide(s, 5 * S + S / 2, 1);
        assert_eq!(d.retry_after, Duration::from_millis(500));
        assert!(w.decide(s, 6 * S, 3).0.allowed);
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        let w = SlidingWindow::new(Quota::per_second(10).unwrap()).unwrap();
        let (_, s) = w.decide(0, 3 * S, 10); // window 3 full
        // 25 % into window 4: previous weighs 7.5 → 2 fit.
        let at = 4 * S + S / 4;
        let (d, s2) = w.decide(s, at, 2);
        assert!(d.allowed, "{d:?}");
        let (d, _) = w.decide(s2, at, 1);
        assert!(!d.allowed);
        // 10·(W−e) + 3·W ≤ 10·W  ⇔  e ≥ 0.3 W: 50 ms from now.
        assert_eq!(d.retry_after, Duration::from_millis(50));
        assert!(w.decide(s2, at + 50_000_000, 1).0.allowed);
        assert!(!w.decide(s2, at + 49_999_999, 1).0.allowed);
    }

    #[test]
    fn sliding_window_retry_into_next_window() {
        let w = SlidingWindow::new(Quota::per_second(4).unwrap()).unwrap();
        let (_, s) = w.decide(0, 7 * S, 4);
        let (d, _) = w.decide(s, 7 * S + S / 2, 1);
        assert!(!d.allowed);
        // next window: 4·(W−e) + 1·W ≤ 4·W ⇔ e ≥ W/4; from 7.5 s that is 0.5 + 0.25 s.
        assert_eq!(d.retry_after, Duration::from_millis(750));
        assert!(SlidingWindow::new(Quota::per_second(1 << 24).unwrap()).is_err());
    }
}
