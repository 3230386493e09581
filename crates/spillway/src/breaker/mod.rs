//! A circuit breaker: stop calling a dependency that is failing, give it time, then try again.
//!
//! [`CircuitBreaker`] counts the outcome of calls in a sliding window (the last `n` calls, or the
//! last `n` seconds). Once at least `minimum_calls` are in the window and the failure rate or the
//! slow-call rate reaches its threshold, it opens: calls are refused at once with a
//! [`BreakerOpen`] whose `retry_after` is the time until it half-opens. Half-open, it lets
//! `half_open_calls` trial calls through; their failure and slow rates decide between closing and
//! opening again (for a jittered `open_duration`, so that many breakers do not retry in step).
//!
//! It can also be forced open, disabled (always closed, counting nothing), or run metrics-only
//! (counting and changing state, but never refusing).
//!
//! Admission reads one atomic in the closed state; recording an outcome takes a short lock.
//!
//! ```
//! use spillway::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Window};
//! use spillway::clock::ManualClock;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let config = BreakerConfig {
//!     window: Window::Count(10),
//!     minimum_calls: 10,
//!     open_duration: Duration::from_secs(5),
//!     open_jitter: 0.0,
//!     ..BreakerConfig::default()
//! };
//! let breaker = CircuitBreaker::with_clock(config, clock.clone());
//! for _ in 0..10 {
//!     breaker.try_acquire().unwrap().failure();
//! }
//! assert_eq!(breaker.state(), BreakerState::Open);
//! let refused = breaker.try_acquire().unwrap_err();
//! assert_eq!(refused.retry_after(), Duration::from_secs(5));
//! clock.advance(refused.retry_after());
//! let trial = breaker.try_acquire().unwrap(); // half-open: a trial call
//! assert_eq!(breaker.state(), BreakerState::HalfOpen);
//! # drop(trial);
//! ```

mod window;

use crate::clock::{Clock, CoarseClock, nanos};
use crate::sync::{AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering};
use std::fmt;
use std::time::Duration;
use window::Outcomes;

/// How far back the breaker looks.
///
/// ```
/// use spillway::breaker::{BreakerConfig, Window};
///
/// let by_calls = BreakerConfig { window: Window::Count(50), ..BreakerConfig::default() };
/// let by_time = BreakerConfig { window: Window::Time(30), ..BreakerConfig::default() };
/// # drop((by_calls, by_time));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `n` seconds (in one-second buckets).
    Time(u32),
}

/// A breaker's settings. The defaults: the last 100 calls, at least 20 of them, open at 50 %
/// failures or 100 % slow calls (slow = over 5 s), open for 30 s ± 10 %, 5 trial calls.
///
/// ```
/// use spillway::breaker::{BreakerConfig, CircuitBreaker};
/// use std::time::Duration;
///
/// let breaker = CircuitBreaker::new(BreakerConfig {
///     failure_rate: 0.25,
///     slow_call: Duration::from_millis(500),
///     slow_call_rate: 0.5,
///     open_duration: Duration::from_secs(10),
///     ..BreakerConfig::default()
/// });
/// assert!(breaker.try_acquire().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// The sliding window.
    pub window: Window,
    /// Calls needed in the window before any rate is judged.
    pub minimum_calls: u32,
    /// Failure rate (0..=1) at or above which the breaker opens.
    pub failure_rate: f64,
    /// A call longer than this is slow.
    pub slow_call: Duration,
    /// Slow-call rate (0..=1) at or above which the breaker opens.
    pub slow_call_rate: f64,
    /// How long it stays open before half-opening.
    pub open_duration: Duration,
    /// Random spread of the open duration, as a fraction (0.1: ±10 %).
    pub open_jitter: f64,
    /// Trial calls let through when half-open.
    pub half_open_calls: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: Window::Count(100),
            minimum_calls: 20,
            failure_rate: 0.5,
            slow_call: Duration::from_secs(5),
            slow_call_rate: 1.0,
            open_duration: Duration::from_secs(30),
            open_jitter: 0.1,
            half_open_calls: 5,
        }
    }
}

/// Where the breaker stands.
///
/// ```
/// use spillway::breaker::{BreakerConfig, BreakerState, CircuitBreaker};
///
/// let breaker = CircuitBreaker::new(BreakerConfig::default());
/// assert_eq!(breaker.state(), BreakerState::Closed);
/// breaker.metrics_only(); // shadow mode while tuning thresholds
/// assert_eq!(breaker.state(), BreakerState::MetricsOnly);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls pass; outcomes are counted.
    Closed,
    /// Calls are refused until the open duration ends.
    Open,
    /// A few trial calls pass to probe the dependency.
    HalfOpen,
    /// Refusing everything until [`CircuitBreaker::reset`].
    ForcedOpen,
    /// Passing everything, counting nothing.
    Disabled,
    /// Passing everything, counting and changing state as if active (to tune thresholds).
    MetricsOnly,
}

/// A refused call: the breaker is open.
///
/// ```
/// use spillway::breaker::{BreakerConfig, CircuitBreaker};
///
/// let breaker = CircuitBreaker::new(BreakerConfig::default());
/// breaker.force_open();
/// let refused = breaker.try_acquire().unwrap_err();
/// println!("{refused}"); // circuit open; retry after …
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open; retry after {retry_after:?}")]
pub struct BreakerOpen {
    retry_after: Duration,
}

impl BreakerOpen {
    /// Time until the breaker half-opens (for a forced-open breaker: its open duration).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// Counters of a breaker.
///
/// ```
/// use spillway::breaker::{BreakerConfig, CircuitBreaker};
///
/// let breaker = CircuitBreaker::new(BreakerConfig { minimum_calls: 2, ..BreakerConfig::default() });
/// breaker.try_acquire().unwrap().success();
/// breaker.try_acquire().unwrap().success();
/// let s = breaker.stats();
/// assert_eq!((s.calls_in_window, s.failure_rate, s.opened), (2, 0.0, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct BreakerStats {
    /// The state now.
    pub state: BreakerState,
    /// Failure rate in the window (0 until `minimum_calls`).
    pub failure_rate: f64,
    /// Slow-call rate in the window.
    pub slow_call_rate: f64,
    /// Calls in the window.
    pub calls_in_window: u64,
    /// Calls refused while open.
    pub rejected: u64,
    /// Times the breaker opened.
    pub opened: u64,
}

const CLOSED: usize = 0;
const OPEN: usize = 1;
const HALF_OPEN: usize = 2;
const FORCED_OPEN: usize = 3;
const DISABLED: usize = 4;
const METRICS_ONLY: usize = 5;

struct Inner {
    outcomes: Outcomes,
    /// Trial calls handed out and finished in the current half-open round.
    trials_started: u32,
    trials: Outcomes,
    rng: u64,
}

/// A circuit breaker; see the [module docs](self).
///
/// ```
/// use spillway::breaker::{BreakerConfig, CircuitBreaker};
///
/// let breaker = CircuitBreaker::new(BreakerConfig::default());
/// match breaker.try_acquire() {
///     Ok(permit) => {
///         let ok = true; // … call the dependency …
///         if ok { permit.success() } else { permit.failure() }
///     }
///     Err(open) => { let _ = open.retry_after(); /* 503 + Retry-After, no call made */ }
/// }
/// ```
pub struct CircuitBreaker<C = CoarseClock> {
    config: BreakerConfig,
    state: AtomicUsize,
    /// When an open breaker half-opens (clock nanoseconds).
    open_until: AtomicU64,
    inner: Mutex<Inner>,
    rejected: AtomicU64,
    opened: AtomicU64,
    clock: C,
}

impl CircuitBreaker<CoarseClock> {
    /// A breaker on the default clock.
    pub fn new(config: BreakerConfig) -> Self {
        Self::with_clock(config, CoarseClock::new())
    }
}

impl<C: Clock> CircuitBreaker<C> {
    /// A breaker reading `clock`.
    pub fn with_clock(config: BreakerConfig, clock: C) -> Self {
        let seed = clock.now_precise() ^ 0x2545_f491_4f6c_dd1d;
        Self {
            state: AtomicUsize::new(CLOSED),
            open_until: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                outcomes: Outcomes::new(config.window),
                trials_started: 0,
                trials: Outcomes::new(Window::Count(config.half_open_calls.max(1))),
                rng: seed | 1,
            }),
            rejected: AtomicU64::new(0),
            opened: AtomicU64::new(0),
            config,
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks to make a call: a permit to report its outcome on, or a refusal saying when to retry.
    pub fn try_acquire(&self) -> Result<BreakerPermit<'_, C>, BreakerOpen> {
        let admission = self.try_admit()?;
        Ok(BreakerPermit { breaker: self, admission: Some(admission) })
    }

    /// [`try_acquire`](Self::try_acquire) as a plain token, for callers that cannot hold a
    /// borrow (a response future): every [`Admission`] must be handed back to
    /// [`finish`](Self::finish).
    ///
    /// ```
    /// use spillway::breaker::{BreakerConfig, CircuitBreaker};
    ///
    /// let breaker = CircuitBreaker::new(BreakerConfig::default());
    /// let call = breaker.try_admit().unwrap();
    /// breaker.finish(call, Some(false)); // succeeded; `None` for a cancelled call
    /// assert_eq!(breaker.stats().calls_in_window, 1);
    /// ```
    pub fn try_admit(&self) -> Result<Admission, BreakerOpen> {
        let trial = match self.state.load(Ordering::Acquire) {
            CLOSED | DISABLED | METRICS_ONLY => false,
            FORCED_OPEN => return Err(self.refuse(nanos(self.config.open_duration))),
            _ => {
                let now = self.clock.now();
                let mut inner = self.lock();
                let state = self.state.load(Ordering::Acquire);
                if state == OPEN {
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.refuse(until - now));
                    }
                    self.state.store(HALF_OPEN, Ordering::Release);
                    inner.trials_started = 0;
                    inner.trials.clear();
                } else if state != HALF_OPEN {
                    // Changed under us (closed or forced): decide again.
                    drop(inner);
                    return self.try_admit();
                }
                if inner.trials_started >= self.config.half_open_calls.max(1) {
                    return Err(self.refuse(nanos(self.config.slow_call).max(1_000_000)));
                }
                inner.trials_started += 1;
                true
            }
        };
        Ok(Admission { start: self.clock.now_precise(), trial })
    }

    /// Reports how an admitted call went: `Some(failed)`, or `None` if it was cancelled (it then
    /// counts for nothing, and a half-open trial slot is handed back).
    pub fn finish(&self, admission: Admission, failed: Option<bool>) {
        match failed {
            Some(failed) => {
                let elapsed = self.clock.now_precise().saturating_sub(admission.start);
                self.record(failed, elapsed, admission.trial);
            }
            None if admission.trial => {
                let mut inner = self.lock();
                inner.trials_started = inner.trials_started.saturating_sub(1);
            }
            None => {}
        }
    }

    fn refuse(&self, retry_ns: u64) -> BreakerOpen {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        BreakerOpen { retry_after: Duration::from_nanos(retry_ns) }
    }

    fn record(&self, failed: bool, elapsed: u64, trial: bool) {
        let state = self.state.load(Ordering::Acquire);
        if state == DISABLED || state == FORCED_OPEN {
            return;
        }
        let slow = elapsed > nanos(self.config.slow_call);
        let now = self.clock.now();
        let mut inner = self.lock();
        if trial {
            if self.state.load(Ordering::Acquire) != HALF_OPEN {
                return;
            }
            inner.trials.record(now, failed, slow);
            let (calls, failures, slows) = inner.trials.totals(now);
            if calls >= u64::from(self.config.half_open_calls.max(1)) {
                if self.trips(calls, failures, slows) {
                    self.open(&mut inner, now);
                } else {
                    inner.outcomes.clear();
                    self.state.store(CLOSED, Ordering::Release);
                }
            }
            return;
        }
        inner.outcomes.record(now, failed, slow);
        let (calls, failures, slows) = inner.outcomes.totals(now);
        if calls >= u64::from(self.config.minimum_calls) && self.trips(calls, failures, slows) {
            if state == METRICS_ONLY {
                self.opened.fetch_add(1, Ordering::Relaxed);
                inner.outcomes.clear();
            } else if state == CLOSED {
                self.open(&mut inner, now);
            }
        }
    }

    fn trips(&self, calls: u64, failures: u64, slows: u64) -> bool {
        let calls = calls.max(1) as f64;
        failures as f64 / calls >= self.config.failure_rate
            || slows as f64 / calls >= self.config.slow_call_rate
    }

    fn open(&self, inner: &mut Inner, now: u64) {
        // xorshift for the jitter: cheap, and spread across breakers by their seeds.
        inner.rng ^= inner.rng << 13;
        inner.rng ^= inner.rng >> 7;
        inner.rng ^= inner.rng << 17;
        let unit = (inner.rng >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
        let jitter = self.config.open_jitter.clamp(0.0, 1.0);
        let duration = nanos(self.config.open_duration) as f64 * (1.0 + unit * jitter);
        self.open_until.store(now.saturating_add(duration as u64), Ordering::Release);
        inner.outcomes.clear();
        self.state.store(OPEN, Ordering::Release);
        self.opened.fetch_add(1, Ordering::Relaxed);
    }

    /// The state now (an open breaker past its duration reports `HalfOpen`).
    pub fn state(&self) -> BreakerState {
        match self.state.load(Ordering::Acquire) {
            CLOSED => BreakerState::Closed,
            OPEN if self.clock.now() >= self.open_until.load(Ordering::Acquire) => BreakerState::HalfOpen,
            OPEN => BreakerState::Open,
            HALF_OPEN => BreakerState::HalfOpen,
            FORCED_OPEN => BreakerState::ForcedOpen,
            DISABLED => BreakerState::Disabled,
            _ => BreakerState::MetricsOnly,
        }
    }

    /// Refuses every call until [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.state.store(FORCED_OPEN, Ordering::Release);
    }

    /// Lets every call through and counts nothing until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.state.store(DISABLED, Ordering::Release);
    }

    /// Counts and trips (see [`BreakerStats::opened`]) but never refuses, until
    /// [`reset`](Self::reset).
    pub fn metrics_only(&self) {
        self.lock().outcomes.clear();
        self.state.store(METRICS_ONLY, Ordering::Release);
    }

    /// Back to closed with an empty window.
    pub fn reset(&self) {
        let mut inner = self.lock();
        inner.outcomes.clear();
        self.state.store(CLOSED, Ordering::Release);
    }

    /// Rates and counters.
    pub fn stats(&self) -> BreakerStats {
        let now = self.clock.now();
        let (calls, failures, slows) = self.lock().outcomes.totals(now);
        let rate = |x: u64| {
            if calls >= u64::from(self.config.minimum_calls) { x as f64 / calls.max(1) as f64 } else { 0.0 }
        };
        BreakerStats {
            state: self.state(),
            failure_rate: rate(failures),
            slow_call_rate: rate(slows),
            calls_in_window: calls,
            rejected: self.rejected.load(Ordering::Relaxed),
            opened: self.opened.load(Ordering::Relaxed),
        }
    }
}

/// Permission for one call through a [`CircuitBreaker`]; report how it went with
/// [`success`](Self::success) or [`failure`](Self::failure). Dropped without either, the call is
/// not counted (a cancelled call says nothing about the dependency) and a half-open trial slot is
/// handed back.
///
/// ```
/// use spillway::breaker::{BreakerConfig, CircuitBreaker};
///
/// let breaker = CircuitBreaker::new(BreakerConfig::default());
/// let permit = breaker.try_acquire().unwrap();
/// permit.failure();
/// assert_eq!(breaker.stats().calls_in_window, 1);
/// ```
#[must_use = "report the call's outcome with success() or failure()"]
pub struct BreakerPermit<'a, C: Clock = CoarseClock> {
    breaker: &'a CircuitBreaker<C>,
    admission: Option<Admission>,
}

impl<C: Clock> BreakerPermit<'_, C> {
    /// The call succeeded (it may still count as slow).
    pub fn success(mut self) {
        self.report(Some(false));
    }

    /// The call failed.
    pub fn failure(mut self) {
        self.report(Some(true));
    }

    fn report(&mut self, failed: Option<bool>) {
        if let Some(a) = self.admission.take() {
            self.breaker.finish(a, failed);
        }
    }
}

impl<C: Clock> Drop for BreakerPermit<'_, C> {
    fn drop(&mut self) {
        self.report(None);
    }
}

impl<C: Clock> fmt::Debug for BreakerPermit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BreakerPermit").field("admission", &self.admission).finish()
    }
}

/// A call admitted by [`CircuitBreaker::try_admit`]: when it started and whether it is a
/// half-open trial. Hand it back to [`CircuitBreaker::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "hand the admission back to CircuitBreaker::finish"]
pub struct Admission {
    start: u64,
    trial: bool,
}

impl<C: Clock> fmt::Debug for CircuitBreaker<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker").field("config", &self.config).field("stats", &self.stats()).finish()
    }
}
