//! Rate limiters: how many requests per unit of time, and when to come back.
//!
//! Five algorithms share one decision type and one trait:
//!
//! | algorithm | state | admits in any span `t` at most | notes |
//! | --- | --- | --- | --- |
//! | [`Gcra`] | 1 word | `burst + rate·t` | the default: smooth, exact, O(1) |
//! | [`LeakyBucket`] | 1 word | `burst + 1 + rate·t` | nginx `limit_req`: `burst`, `delay=`, `nodelay` |
//! | [`TokenBucket`] | 1 word | `capacity + refill·⌈t/period⌉` | whole refills every `period` |
//! | [`FixedWindow`] | 1 word | `limit·(⌈t/window⌉ + 1)` | cheapest to explain, 2× burst at the edge |
//! | [`SlidingWindow`] | 1 word | `limit·(⌈t/window⌉ + 1)` | counter approximation, smooth at the edge |
//! | [`SlidingLog`] | ≤ `limit` entries | `limit` per any `window` | exact; memory grows with the limit |
//!
//! The one-word algorithms implement [`Algorithm`], so the same code runs them for one shared
//! limit ([`RateLimiter`]: one atomic word, one compare-and-swap per admission, nothing on a
//! denial) and per key ([`KeyedLimiter`]: a fixed-size table with a hard cap on keys).
//!
//! Every check returns a [`Decision`] with what a `429` needs: `retry_after`, `remaining`,
//! `reset` and `limit` (the IETF `RateLimit` fields), and, for the leaky bucket, how long to hold
//! an admitted request (`delay`).
//!
//! ## Time
//!
//! Limiters read a [`CoarseClock`] by default (one atomic load, refreshed every millisecond, as
//! nginx and HAProxy do with their cached time). When a denial would turn into an admission
//! within one tick, the limiter re-reads the precise clock before answering, so the coarse clock
//! never denies what a precise clock would admit and `retry_after` is never early. The one cost:
//! the first request after an idle spell may be dated up to one tick early, so a window can admit
//! `rate × 2 ms` more than the bounds above. Give the limiter a [`MonotonicClock`] with
//! [`RateLimiter::with_clock`] where that matters more than 9 ns per check.
//!
//! ```
//! use spillway::rate::{Gcra, Quota, RateLimit, RateLimiter};
//! use spillway::clock::ManualClock;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let quota = Quota::per_second(10).unwrap().with_burst(2).unwrap();
//! let limiter = RateLimiter::with_clock(Gcra::new(quota), clock.clone());
//! assert!(limiter.check().allowed);
//! assert!(limiter.check().allowed);
//! let denied = limiter.check();
//! assert!(!denied.allowed);
//! assert_eq!(denied.retry_after, Duration::from_millis(100));
//! clock.advance(denied.retry_after);
//! assert!(limiter.check().allowed);
//! ```
//!
//! [`CoarseClock`]: crate::clock::CoarseClock
//! [`MonotonicClock`]: crate::clock::MonotonicClock

mod gcra;
mod keyed;
mod sliding_log;
mod token_bucket;
mod window;

pub use gcra::{Gcra, LeakyBucket};
pub use keyed::{IpKey, KeyedLimiter, KeyedStats};
pub use sliding_log::{MAX_LOG_LIMIT, SlidingLog};
pub use token_bucket::TokenBucket;
pub use window::{FixedWindow, SlidingWindow};

use crate::clock::{Clock, CoarseClock, nanos};
use crate::sync::{AtomicU64, Ordering};
use std::fmt;
use std::time::Duration;

/// A rate: `count` per `period`, with a `burst` (how many may arrive at once after a quiet spell).
///
/// ```
/// use spillway::rate::Quota;
/// use std::time::Duration;
///
/// let q = Quota::per_minute(600).unwrap().with_burst(20).unwrap();
/// assert_eq!(q.emission_interval(), Duration::from_millis(100));
/// assert_eq!(q.burst(), 20);
/// assert!(Quota::new(0, Duration::from_secs(1)).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    count: u32,
    period_ns: u64,
    burst: u32,
    emission_ns: u64,
}

/// Why a [`Quota`] or a limiter could not be built.
///
/// ```
/// use spillway::rate::{Quota, QuotaError, SlidingWindow};
/// use std::time::Duration;
///
/// assert_eq!(Quota::per_second(0), Err(QuotaError::Zero));
/// assert_eq!(Quota::new(10, Duration::from_nanos(5)), Err(QuotaError::Period));
/// let big = Quota::per_second(1 << 25).unwrap();
/// assert!(matches!(SlidingWindow::new(big), Err(QuotaError::TooLarge { .. })));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum QuotaError {
    /// The count or the burst was zero.
    #[error("a rate limit needs a count and a burst of at least 1")]
    Zero,
    /// The period was zero, or too short to hold `count` distinct nanoseconds.
    #[error("the period must be at least `count` nanoseconds long")]
    Period,
    /// The limit is larger than the algorithm can count.
    #[error("limit {limit} is above this algorithm's maximum of {max}")]
    TooLarge {
        /// The requested limit.
        limit: u64,
        /// The largest limit the algorithm supports.
        max: u64,
    },
}

impl Quota {
    /// `count` requests per `period`; the burst defaults to `count`.
    pub fn new(count: u32, period: Duration) -> Result<Self, QuotaError> {
        if count == 0 {
            return Err(QuotaError::Zero);
        }
        let period_ns = nanos(period);
        if period_ns < u64::from(count) {
            return Err(QuotaError::Period);
        }
        Ok(Self { count, period_ns, burst: count, emission_ns: period_ns / u64::from(count) })
    }

    /// `count` per second.
    pub fn per_second(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` per minute.
    pub fn per_minute(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` per hour.
    pub fn per_hour(count: u32) -> Result<Self, QuotaError> {
        Self::new(count, Duration::from_secs(3600))
    }

    /// The same rate with another burst (at least 1).
    pub fn with_burst(self, burst: u32) -> Result<Self, QuotaError> {
        if burst == 0 {
            return Err(QuotaError::Zero);
        }
        Ok(Self { burst, ..self })
    }

    /// Requests per period.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        Duration::from_nanos(self.period_ns)
    }

    /// How many may pass at once.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// The time between two admissions at the steady rate (`period / count`).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.emission_ns)
    }

    /// Requests per second, as a float (for display and `Retry-After` estimates).
    pub fn per_second_f64(&self) -> f64 {
        self.count as f64 * 1e9 / self.period_ns as f64
    }
}

/// The answer of a rate limiter: admitted or not, and everything a client needs to act on it.
///
/// ```
/// use spillway::rate::{FixedWindow, Quota, RateLimit, RateLimiter};
/// use spillway::clock::ManualClock;
///
/// let limiter = RateLimiter::with_clock(
///     FixedWindow::new(Quota::per_second(3).unwrap()).unwrap(),
///     ManualClock::new(),
/// );
/// let d = limiter.check_n(2);
/// assert!(d.allowed);
/// assert_eq!((d.limit, d.remaining), (3, 1));
/// assert!(!limiter.check_n(2).allowed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request was admitted (and charged).
    pub allowed: bool,
    /// The policy's limit: the burst, capacity or per-window limit.
    pub limit: u32,
    /// How many more unit requests would be admitted right now, after this decision.
    pub remaining: u32,
    /// When denied: the earliest time from now at which the same request would be admitted
    /// ([`Duration::MAX`] if it never can, because it weighs more than the limit). Zero when allowed.
    pub retry_after: Duration,
    /// Time from now until the limiter is back to its full allowance (IETF `RateLimit` `t=`).
    pub reset: Duration,
    /// When allowed by a [`LeakyBucket`] without `nodelay`: how long to hold the request so that
    /// requests leave at the configured rate. Zero otherwise.
    pub delay: Duration,
}

impl Decision {
    #[inline]
    pub(crate) fn allow(limit: u32, remaining: u64, reset_ns: u64) -> Self {
        Self {
            allowed: true,
            limit,
            remaining: clamp_u32(remaining),
            retry_after: Duration::ZERO,
            reset: Duration::from_nanos(reset_ns),
            delay: Duration::ZERO,
        }
    }

    #[inline]
    pub(crate) fn deny(limit: u32, remaining: u64, retry_ns: u64, reset_ns: u64) -> Self {
        Self {
            allowed: false,
            limit,
            remaining: clamp_u32(remaining),
            retry_after: if retry_ns == u64::MAX { Duration::MAX } else { Duration::from_nanos(retry_ns) },
            reset: Duration::from_nanos(reset_ns),
            delay: Duration::ZERO,
        }
    }

    /// A decision for a request that can never pass: it weighs more than the limit.
    #[inline]
    pub(crate) fn never(limit: u32, remaining: u64, reset_ns: u64) -> Self {
        Self::deny(limit, remaining, u64::MAX, reset_ns)
    }
}

#[inline]
fn clamp_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Anything that admits or rejects requests by rate.
///
/// ```
/// use spillway::rate::{Gcra, Quota, RateLimit, RateLimiter, SlidingLog};
///
/// fn admit(limiter: &dyn RateLimit) -> bool {
///     limiter.check().allowed
/// }
/// let quota = Quota::per_second(5).unwrap();
/// assert!(admit(&RateLimiter::new(Gcra::new(quota))));
/// assert!(admit(&SlidingLog::new(quota).unwrap()));
/// ```
pub trait RateLimit: Send + Sync {
    /// Checks and, if admitted, charges a request of weight `n` (0 only reads the state).
    fn check_n(&self, n: u32) -> Decision;

    /// Checks and charges one request.
    #[inline]
    fn check(&self) -> Decision {
        self.check_n(1)
    }
}

/// A rate-limiting algorithm whose whole per-limit state is one `u64` word, so that a limit
/// can live in one atomic and a table of them in a flat array.
///
/// The state `0` must mean "fresh": a key never seen, with its full allowance.
///
/// Algorithms are pure functions of the state, which makes them easy to test and simulate:
///
/// ```
/// use spillway::rate::{Algorithm, Gcra, Quota};
///
/// let gcra = Gcra::new(Quota::per_second(10).unwrap().with_burst(1).unwrap());
/// let (first, state) = gcra.decide(0, 1_000_000_000, 1);
/// assert!(first.allowed);
/// let (second, _) = gcra.decide(state, 1_000_000_000, 1);
/// assert!(!second.allowed);
/// assert_eq!(gcra.idle_at(state, 0), 1_100_000_000); // full again 100 ms later
/// ```
pub trait Algorithm: Send + Sync + fmt::Debug {
    /// Decides a request of weight `n` at time `now` (nanoseconds) given the current `state`.
    /// Returns the decision and, if admitted, the state to store.
    fn decide(&self, state: u64, now: u64, n: u32) -> (Decision, u64);

    /// The time at which `state` becomes equivalent to fresh (full allowance), given the current
    /// time `now` (windowed states only store part of their timestamp); a keyed table
    /// may then reuse its slot without losing anything.
    fn idle_at(&self, state: u64, now: u64) -> u64;
}

/// One shared rate limit: an [`Algorithm`] over one atomic word.
///
/// Admission costs one clock read, one load and one compare-and-swap; a denial writes nothing.
///
/// ```
/// use spillway::rate::{Quota, RateLimit, RateLimiter, TokenBucket};
/// use std::time::Duration;
///
/// let bucket = TokenBucket::new(100, 10, Duration::from_millis(100)).unwrap();
/// let limiter = RateLimiter::new(bucket);
/// assert_eq!(limiter.check_n(100).remaining, 0);
/// assert!(!limiter.check().allowed);
/// ```
pub struct RateLimiter<A, C = CoarseClock> {
    state: AtomicU64,
    algorithm: A,
    clock: C,
}

impl<A: Algorithm> RateLimiter<A, CoarseClock> {
    /// A limiter on the default [`CoarseClock`].
    pub fn new(algorithm: A) -> Self {
        Self::with_clock(algorithm, CoarseClock::new())
    }
}

impl<A: Algorithm, C: Clock> RateLimiter<A, C> {
    /// A limiter reading the given clock.
    pub fn with_clock(algorithm: A, clock: C) -> Self {
        Self { state: AtomicU64::new(0), algorithm, clock }
    }

    /// The algorithm and its parameters.
    pub fn algorithm(&self) -> &A {
        &self.algorithm
    }
}

/// Runs `algorithm` against one atomic state word: the loop shared by direct and keyed limits.
#[inline]
pub(crate) fn check_word<A: Algorithm, C: Clock>(
    state: &AtomicU64,
    algorithm: &A,
    clock: &C,
    n: u32,
) -> Decision {
    let mut now = clock.now();
    let mut precise = false;
    let mut contention = 0u32;
    let mut current = state.load(Ordering::Acquire);
    loop {
        let (decision, next) = algorithm.decide(current, now, n);
        if !decision.allowed {
            // A coarse reading may be up to one tick stale: when the answer could flip within
            // that tick, ask the precise clock before saying no.
            if !precise && nanos(decision.retry_after) <= clock.resolution() {
                precise = true;
                now = now.max(clock.now_precise());
                continue;
            }
            return decision;
        }
        if n == 0 || next == current {
            return decision;
        }
        match state.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return decision,
            Err(actual) => {
                // Contended: back off a little (1, 2, 4… up to 64 spins) so the winner's cache
                // line is not stolen back at once; two threads hammering one word otherwise
                // spend most of their time failing.
                for _ in 0..(1u32 << contention.min(6)) {
                    crate::sync::spin_loop();
                }
                contention += 1;
                current = actual;
            }
        }
    }
}

impl<A: Algorithm, C: Clock> RateLimit for RateLimiter<A, C> {
    #[inline]
    fn check_n(&self, n: u32) -> Decision {
        check_word(&self.state, &self.algorithm, &self.clock, n)
    }
}

impl<A: fmt::Debug, C: fmt::Debug> fmt::Debug for RateLimiter<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("algorithm", &self.algorithm)
            .field("clock", &self.clock)
            .field("state", &self.state.load(Ordering::Relaxed))
            .finish()
    }
}
