//! The exact sliding window: a log of admission times, bounded by the limit.

use super::{Decision, Quota, QuotaError, RateLimit};
use crate::clock::{Clock, MonotonicClock};
use crate::sync::Mutex;
use std::collections::VecDeque;
use std::fmt;

/// The largest limit a [`SlidingLog`] accepts: its log holds at most `limit` entries.
pub const MAX_LOG_LIMIT: u32 = 1 << 20;

/// An exact sliding window: at most `limit` requests in *any* window of `period`. It keeps the
/// time of every admitted request still inside the window, so memory is `16 bytes × limit`
/// (allocated once, never grown; `limit ≤ 2²⁰`) and it takes a lock per check. Prefer
/// [`SlidingWindow`](super::SlidingWindow) unless exactness is worth that.
///
/// It reads the precise clock: the point of this limiter is exactness.
///
/// ```
/// use spillway::rate::{Quota, RateLimit, SlidingLog};
/// use spillway::clock::ManualClock;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let log = SlidingLog::with_clock(Quota::per_second(2).unwrap(), clock.clone()).unwrap();
/// assert!(log.check().allowed);
/// clock.advance(Duration::from_millis(600));
/// assert!(log.check().allowed);
/// let d = log.check();
/// assert!(!d.allowed);
/// assert_eq!(d.retry_after, Duration::from_millis(400)); // when the first one leaves the window
/// ```
pub struct SlidingLog<C = MonotonicClock> {
    log: Mutex<Log>,
    limit: u32,
    window: u64,
    clock: C,
}

struct Log {
    /// (admission time, weight), oldest first; weights sum to `total` ≤ limit.
    entries: VecDeque<(u64, u32)>,
    total: u64,
}

impl SlidingLog<MonotonicClock> {
    /// `quota.count()` requests in any window of `quota.period()`.
    pub fn new(quota: Quota) -> Result<Self, QuotaError> {
        Self::with_clock(quota, MonotonicClock::new())
    }
}

impl<C: Clock> SlidingLog<C> {
    /// The same, reading `clock`.
    pub fn with_clock(quota: Quota, clock: C) -> Result<Self, QuotaError> {
        if quota.count > MAX_LOG_LIMIT {
            return Err(QuotaError::TooLarge { limit: quota.count.into(), max: MAX_LOG_LIMIT.into() });
        }
        let entries = VecDeque::with_capacity(quota.count as usize);
        Ok(Self {
            log: Mutex::new(Log { entries, total: 0 }),
            limit: quota.count,
            window: quota.period_ns,
            clock,
        })
    }
}

impl<C: Clock> RateLimit for SlidingLog<C> {
    fn check_n(&self, n: u32) -> Decision {
        let now = self.clock.now_precise();
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(&(at, w)) = log.entries.front() {
            if at + self.window > now {
                break;
            }
            log.entries.pop_front();
            log.total -= u64::from(w);
        }
        let limit = u64::from(self.limit);
        let reset = |log: &Log| log.entries.back().map_or(0, |&(at, _)| at + self.window - now);
        if n > self.limit {
            return Decision::never(self.limit, limit - log.total, reset(&log));
        }
        let need = log.total + u64::from(n);
        if need <= limit {
            if n > 0 {
                match log.entries.back_mut() {
                    Some((at, w)) if *at == now => *w += n,
                    _ => log.entries.push_back((now, n)),
                }
                log.total = need;
            }
            return Decision::allow(self.limit, limit - need, reset(&log));
        }
        // Walk from the oldest entry until enough weight has left the window.
        let mut freed = 0;
        let mut retry = 0;
        for &(at, w) in &log.entries {
            freed += u64::from(w);
            if need - freed <= limit {
                retry = at + self.window - now;
                break;
            }
        }
        Decision::deny(self.limit, limit - log.total, retry, reset(&log))
    }
}

impl<C: fmt::Debug> fmt::Debug for SlidingLog<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlidingLog")
            .field("limit", &self.limit)
            .field("window_ns", &self.window)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
