//! An adaptive algorithm driving a concurrency limiter.

use super::{LimitAlgorithm, Sample};
use crate::clock::{Clock, CoarseClock};
use crate::limit::{ConcurrencyLimiter, OwnedPermit, Permit, Rejected};
use crate::sync::Mutex;
use std::fmt;
use std::time::Duration;

/// A [`ConcurrencyLimiter`] whose limit is set by a [`LimitAlgorithm`] from the requests it
/// admits: each [`AdaptivePermit`] reports its latency and outcome when it is finished.
///
/// The algorithm runs under a short mutex once per finished request (no allocation); admission
/// itself is the limiter's lock-free path.
///
/// ```
/// use spillway::adaptive::{AdaptiveLimiter, Vegas};
/// use spillway::limit::ConcurrencyLimiter;
///
/// let limiter = AdaptiveLimiter::new(Vegas::default(), ConcurrencyLimiter::builder(1).queue(100).build());
/// assert_eq!(limiter.limit(), 20); // the algorithm's initial limit
/// let permit = limiter.try_acquire().unwrap();
/// // … serve the request …
/// permit.success(); // or .dropped() on a timeout / overload error
/// ```
pub struct AdaptiveLimiter<A, C: Clock = CoarseClock> {
    limiter: ConcurrencyLimiter<C>,
    algorithm: Mutex<A>,
    clock: C,
}

impl<A: LimitAlgorithm, C: Clock + Clone> AdaptiveLimiter<A, C> {
    /// Puts `algorithm` in charge of `limiter`'s limit (starting at the algorithm's initial limit).
    pub fn new(algorithm: A, limiter: ConcurrencyLimiter<C>) -> Self {
        limiter.set_limit(algorithm.limit());
        let clock = limiter.clock().clone();
        Self { limiter, algorithm: Mutex::new(algorithm), clock }
    }
}

impl<A: LimitAlgorithm, C: Clock> AdaptiveLimiter<A, C> {
    /// Admits without waiting, or says why not.
    pub fn try_acquire(&self) -> Result<AdaptivePermit<'_, A, C>, Rejected> {
        let permit = self.limiter.try_acquire()?;
        Ok(self.track(permit))
    }

    /// Admits, waiting in the limiter's bounded queue if needed.
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn acquire(&self) -> Result<AdaptivePermit<'_, A, C>, Rejected> {
        let permit = self.limiter.acquire().await?;
        Ok(self.track(permit))
    }

    /// [`try_acquire`](Self::try_acquire) as an owned token, for callers that cannot hold a
    /// borrow (a response future): hand it back to [`finish`](Self::finish).
    ///
    /// ```
    /// use spillway::adaptive::{AdaptiveLimiter, Vegas};
    /// use spillway::limit::ConcurrencyLimiter;
    ///
    /// let limiter = AdaptiveLimiter::new(Vegas::default(), ConcurrencyLimiter::new(1));
    /// let call = limiter.try_admit().unwrap();
    /// limiter.finish(call, Some(false)); // succeeded; `None` teaches nothing
    /// assert_eq!(limiter.limiter().in_flight(), 0);
    /// ```
    pub fn try_admit(&self) -> Result<Admission<C>, Rejected> {
        let permit = self.limiter.try_acquire_owned()?;
        Ok(self.admission(permit))
    }

    /// [`try_admit`](Self::try_admit) for callers that fall back to
    /// [`admit_within`](Self::admit_within) when it fails: `None` instead of a [`Rejected`], so
    /// no rejection is counted.
    ///
    /// ```
    /// use spillway::adaptive::{AdaptiveLimiter, Vegas};
    /// use spillway::limit::ConcurrencyLimiter;
    ///
    /// let limiter = AdaptiveLimiter::new(Vegas::default(), ConcurrencyLimiter::new(1));
    /// // Every slot of the algorithm's initial limit, then `None`, with no rejection counted.
    /// let calls: Vec<_> = std::iter::from_fn(|| limiter.try_take()).collect();
    /// assert_eq!(calls.len(), limiter.limit());
    /// assert_eq!(limiter.limiter().stats().rejected_at_capacity, 0);
    /// for call in calls {
    ///     limiter.finish(call, Some(false));
    /// }
    /// ```
    pub fn try_take(&self) -> Option<Admission<C>> {
        let permit = self.limiter.try_take_owned()?;
        Some(self.admission(permit))
    }

    /// [`try_admit`](Self::try_admit), waiting in the limiter's queue (if it has one) for at
    /// most `remaining`: for callers that keep the admission in a response body.
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn admit_within(&self, remaining: Duration) -> Result<Admission<C>, Rejected> {
        let permit = self.limiter.acquire_within_owned(remaining).await?;
        Ok(self.admission(permit))
    }

    /// A permit just taken, dated now, with the in-flight count it joined.
    fn admission(&self, permit: OwnedPermit<C>) -> Admission<C> {
        Admission { permit, in_flight: self.limiter.in_flight(), start: self.clock.now_precise() }
    }

    /// Releases an [`Admission`] and, given `Some(dropped)`, feeds its latency and outcome to
    /// the algorithm.
    pub fn finish(&self, admission: Admission<C>, dropped: Option<bool>) {
        let latency = Duration::from_nanos(self.clock.now_precise().saturating_sub(admission.start));
        drop(admission.permit);
        if let Some(dropped) = dropped {
            self.record(Sample { latency, in_flight: admission.in_flight, dropped });
        }
    }

    fn track<'a>(&'a self, permit: Permit<'a, C>) -> AdaptivePermit<'a, A, C> {
        AdaptivePermit {
            owner: self,
            permit: Some(permit),
            in_flight: self.limiter.in_flight(),
            start: self.clock.now_precise(),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limiter.limit()
    }

    /// The underlying limiter (stats, queue).
    pub fn limiter(&self) -> &ConcurrencyLimiter<C> {
        &self.limiter
    }

    fn record(&self, sample: Sample) {
        let limit = self.algorithm.lock().unwrap_or_else(|e| e.into_inner()).on_sample(sample);
        if limit != self.limiter.limit() {
            self.limiter.set_limit(limit);
        }
    }
}

/// A permit from an [`AdaptiveLimiter`]: say how the request went with
/// [`success`](Self::success) or [`dropped`](Self::dropped); dropping it without either releases
/// it and teaches the algorithm nothing (for requests that failed for reasons unrelated to load).
#[must_use = "finish the permit with success() or dropped() so the limit can adapt"]
pub struct AdaptivePermit<'a, A: LimitAlgorithm, C: Clock = CoarseClock> {
    owner: &'a AdaptiveLimiter<A, C>,
    permit: Option<Permit<'a, C>>,
    in_flight: usize,
    start: u64,
}

impl<A: LimitAlgorithm, C: Clock> AdaptivePermit<'_, A, C> {
    /// The request succeeded: its latency feeds the algorithm.
    pub fn success(self) {
        self.finish(false);
    }

    /// The request timed out or was refused downstream: an overload signal.
    pub fn dropped(self) {
        self.finish(true);
    }

    fn finish(mut self, dropped: bool) {
        let latency = Duration::from_nanos(self.owner.clock.now_precise().saturating_sub(self.start));
        drop(self.permit.take());
        self.owner.record(Sample { latency, in_flight: self.in_flight, dropped });
    }
}

impl<A: LimitAlgorithm + fmt::Debug, C: Clock> fmt::Debug for AdaptiveLimiter<A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimiter")
            .field("algorithm", &*self.algorithm.lock().unwrap_or_else(|e| e.into_inner()))
            .field("limiter", &self.limiter)
            .finish()
    }
}

impl<A: LimitAlgorithm, C: Clock> fmt::Debug for AdaptivePermit<'_, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptivePermit").field("in_flight", &self.in_flight).finish_non_exhaustive()
    }
}

/// A request admitted by [`AdaptiveLimiter::try_admit`]: its permit, when it started and the
/// concurrency it started at. Hand it back to [`AdaptiveLimiter::finish`].
#[must_use = "hand the admission back to AdaptiveLimiter::finish"]
pub struct Admission<C: Clock = CoarseClock> {
    permit: OwnedPermit<C>,
    in_flight: usize,
    start: u64,
}

impl<C: Clock> fmt::Debug for Admission<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission").field("in_flight", &self.in_flight).finish_non_exhaustive()
    }
}
