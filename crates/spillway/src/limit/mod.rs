//! Concurrency limits with a bounded wait queue.
//!
//! [`ConcurrencyLimiter`] admits at most `limit` holders of a [`Permit`] at once. Past the limit a
//! caller either gets an immediate answer ([`try_acquire`](ConcurrencyLimiter::try_acquire), the
//! seeds' `is_ready` readiness check) or waits in a queue that is itself bounded in length and
//! in time ([`acquire`](ConcurrencyLimiter::acquire)): a semaphore that "only queues" is how
//! overload turns into latency, so the queue here has a capacity, a timeout and an order.
//!
//! - **Hot path.** `try_acquire` and releasing a permit are one compare-and-swap and one
//!   fetch-add on one word (in flight and a completion count share it), with no lock and no
//!   allocation. The queue's mutex is taken only when somebody waits.
//! - **Order.** FIFO is fair; LIFO serves the freshest waiter first, which under sustained
//!   overload keeps some requests fast instead of making all of them late.
//! - **Cancel safety.** A waiter dropped while queued frees its place; one dropped after being
//!   granted passes the permit to the next waiter.
//! - **Answers.** A rejection is a value, [`Rejected`], with the reason and a `retry_after`
//!   computed from the measured drain rate.
//!
//! ```
//! use spillway::limit::{ConcurrencyLimiter, RejectReason};
//!
//! let limiter = ConcurrencyLimiter::builder(2).queue(0).build();
//! let a = limiter.try_acquire().unwrap();
//! let _b = limiter.try_acquire().unwrap();
//! let no = limiter.try_acquire().unwrap_err();
//! assert_eq!(no.reason(), RejectReason::AtCapacity);
//! drop(a);
//! assert!(limiter.try_acquire().is_ok());
//! ```

mod queue;

use crate::clock::{Clock, CoarseClock, nanos};
use crate::park::{park_until, thread_waker};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Mutex, MutexGuard, Ordering, Padded, dekker_fence};
use queue::{Left, Ticket, WaitQueue};
use std::fmt;
use std::task::{Poll, Waker};
use std::time::Duration;

/// Which waiter gets the next free permit.
///
/// ```
/// use spillway::limit::{ConcurrencyLimiter, QueueOrder};
///
/// let fair = ConcurrencyLimiter::builder(8).queue(100).order(QueueOrder::Fifo).build();
/// let fresh_first = ConcurrencyLimiter::builder(8).queue(100).order(QueueOrder::Lifo).build();
/// # drop((fair, fresh_first));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueOrder {
    /// The longest waiter: fair.
    #[default]
    Fifo,
    /// The newest waiter: under sustained overload, some requests stay fast instead of all of
    /// them going stale.
    Lifo,
    /// FIFO while the queue drains now and then, LIFO once it has stood non-empty for longer
    /// than the CoDel interval (100 ms unless [`Builder::codel`] says otherwise): fair in a
    /// burst, fresh-first in an overload.
    AdaptiveLifo,
}

/// CoDel for a request queue, as Facebook applies it to RPC queues: while the queue has not
/// been empty for a whole `interval`, it is a standing queue, and new waiters may wait only
/// `target` instead of the full queue timeout, so the queue drains instead of serving stale
/// work. Defaults: target 5 ms, interval 100 ms.
///
/// ```
/// use spillway::limit::{Codel, ConcurrencyLimiter};
/// use std::time::Duration;
///
/// let limiter = ConcurrencyLimiter::builder(32)
///     .queue(256)
///     .queue_timeout(Duration::from_secs(1))
///     .codel(Codel::default())
///     .build();
/// assert_eq!(Codel::default().target, Duration::from_millis(5));
/// # drop(limiter);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Codel {
    /// How long a new waiter may wait once the queue is standing.
    pub target: Duration,
    /// How long the queue must stay non-empty to count as standing.
    pub interval: Duration,
}

impl Default for Codel {
    fn default() -> Self {
        Self { target: Duration::from_millis(5), interval: Duration::from_millis(100) }
    }
}

/// Why a permit was refused.
///
/// ```
/// use spillway::limit::{ConcurrencyLimiter, RejectReason};
///
/// let limiter = ConcurrencyLimiter::new(1);
/// let _held = limiter.try_acquire().unwrap();
/// match limiter.try_acquire().map_err(|r| r.reason()) {
///     Err(RejectReason::AtCapacity) => {} // 503, Retry-After
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RejectReason {
    /// The limit is reached (and `try_acquire` does not wait, or there is no queue).
    AtCapacity,
    /// The wait queue is full.
    QueueFull,
    /// The caller waited for the whole queue timeout (or its CoDel target, or its deadline).
    Timeout,
    /// The predicted wait (waiters ahead / drain rate) exceeds the caller's remaining deadline:
    /// refused at once rather than served too late.
    DeadlineUnreachable,
}

/// A refused permit: why, and when it is worth trying again.
///
/// ```
/// use spillway::limit::ConcurrencyLimiter;
///
/// let limiter = ConcurrencyLimiter::builder(1).build();
/// let _held = limiter.try_acquire().unwrap();
/// let rejected = limiter.try_acquire().unwrap_err();
/// assert!(rejected.retry_after() > std::time::Duration::ZERO);
/// println!("{rejected}"); // "concurrency limit reached; retry after 1s"
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}; retry after {retry_after:?}", match reason {
    RejectReason::AtCapacity => "concurrency limit reached",
    RejectReason::QueueFull => "wait queue full",
    RejectReason::Timeout => "timed out in the wait queue",
    RejectReason::DeadlineUnreachable => "the wait would outlast the deadline",
})]
pub struct Rejected {
    reason: RejectReason,
    retry_after: Duration,
}

impl Rejected {
    /// Why.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// An estimate of when a permit will be free for this caller: the waiters ahead plus one,
    /// divided by the measured rate at which permits are released, clamped to 1 ms..60 s (1 s,
    /// or the queue timeout, before any rate is known).
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }
}

/// A lock-free snapshot of a limiter.
///
/// ```
/// use spillway::limit::ConcurrencyLimiter;
///
/// let limiter = ConcurrencyLimiter::builder(4).queue(16).build();
/// let a = limiter.try_acquire().unwrap();
/// let b = limiter.try_acquire().unwrap();
/// drop(a);
/// let s = limiter.stats();
/// assert_eq!((s.in_flight, s.in_flight_high_water, s.limit, s.queue_capacity), (1, 2, 4, 16));
/// # drop(b);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LimiterStats {
    /// The current limit.
    pub limit: usize,
    /// Permits held now.
    pub in_flight: usize,
    /// Callers queued now.
    pub waiting: usize,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// The most permits ever held at once.
    pub in_flight_high_water: usize,
    /// The longest the queue has ever been.
    pub waiting_high_water: usize,
    /// Refusals with [`RejectReason::AtCapacity`].
    pub rejected_at_capacity: u64,
    /// Refusals with [`RejectReason::QueueFull`].
    pub rejected_queue_full: u64,
    /// Refusals with [`RejectReason::Timeout`].
    pub rejected_timeout: u64,
    /// Refusals with [`RejectReason::DeadlineUnreachable`].
    pub rejected_deadline: u64,
    /// Permits released per second, an exponentially weighted average over the last seconds
    /// (0 until measured).
    pub drain_rate_per_sec: f64,
}

/// Configures a [`ConcurrencyLimiter`].
///
/// ```
/// use spillway::limit::{ConcurrencyLimiter, QueueOrder};
/// use std::time::Duration;
///
/// let limiter = ConcurrencyLimiter::builder(64)
///     .queue(128)
///     .queue_timeout(Duration::from_millis(250))
///     .order(QueueOrder::Lifo)
///     .build();
/// assert_eq!(limiter.stats().limit, 64);
/// ```
#[derive(Debug, Clone)]
pub struct Builder<C = CoarseClock> {
    limit: usize,
    queue: usize,
    timeout: Option<Duration>,
    order: QueueOrder,
    codel: Option<Codel>,
    clock: C,
}

impl<C: Clock> Builder<C> {
    fn with(limit: usize, clock: C) -> Self {
        Self { limit, queue: 0, timeout: None, order: QueueOrder::Fifo, codel: None, clock }
    }
}

impl<C: Clock> Builder<C> {
    /// How many callers may wait for a permit (0, the default: none wait).
    pub fn queue(mut self, capacity: usize) -> Self {
        self.queue = capacity;
        self
    }

    /// How long a caller may wait (default: no limit).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Which waiter is served first (default FIFO).
    pub fn order(mut self, order: QueueOrder) -> Self {
        self.order = order;
        self
    }

    /// Shortens waits while the queue is standing (see [`Codel`]).
    pub fn codel(mut self, codel: Codel) -> Self {
        self.codel = Some(codel);
        self
    }

    /// The clock used to measure the drain rate and the queue's age.
    pub fn clock<D: Clock>(self, clock: D) -> Builder<D> {
        Builder {
            limit: self.limit,
            queue: self.queue,
            timeout: self.timeout,
            order: self.order,
            codel: self.codel,
            clock,
        }
    }

    /// Builds the limiter. A limit of 0 is raised to 1; limits are capped at `u32::MAX`.
    pub fn build(self) -> ConcurrencyLimiter<C> {
        ConcurrencyLimiter {
            inner: Arc::new(Inner {
                state: Padded(AtomicU64::new(0)),
                limit: AtomicUsize::new(clamp_limit(self.limit)),
                waiting: AtomicUsize::new(0),
                queue: Mutex::new(WaitQueue::new(self.queue)),
                queue_capacity: self.queue,
                timeout: self.timeout,
                order: self.order,
                codel: self.codel,
                in_flight_high: AtomicUsize::new(0),
                waiting_high: AtomicUsize::new(0),
                rejected: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
                drain: Mutex::new(Drain { at: self.clock.now(), released: 0, first: true }),
                drain_next: AtomicU64::new(self.clock.now().saturating_add(DRAIN_SAMPLE_NS)),
                drain_rate: AtomicU64::new(0f64.to_bits()),
                clock: self.clock,
            }),
        }
    }
}

fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, u32::MAX as usize)
}

/// The state word: permits held in the low 32 bits, permits released so far (wrapping) in the
/// high 32. A release is one `fetch_add` of `2³² − 1`: `+1` above, `−1` below.
const IN_FLIGHT: u64 = 0xffff_ffff;
const RELEASE: u64 = (1 << 32) - 1;

struct Inner<C> {
    state: Padded<AtomicU64>,
    limit: AtomicUsize,
    /// Callers in the queue. Waiters raise it before their last look at `state`; releasers
    /// read it after updating `state` (both SeqCst), so a release never misses a waiter.
    waiting: AtomicUsize,
    queue: Mutex<WaitQueue>,
    queue_capacity: usize,
    timeout: Option<Duration>,
    order: QueueOrder,
    codel: Option<Codel>,
    in_flight_high: AtomicUsize,
    waiting_high: AtomicUsize,
    rejected: [AtomicU64; 4],
    drain: Mutex<Drain>,
    /// When the drain rate is next due for an update (clock nanoseconds).
    drain_next: AtomicU64,
    /// The drain rate (f64 bits), published for lock-free reads.
    drain_rate: AtomicU64,
    clock: C,
}

struct Drain {
    at: u64,
    released: u32,
    first: bool,
}

/// The drain rate is re-estimated at most this often (50 ms).
const DRAIN_SAMPLE_NS: u64 = 50_000_000;

/// A concurrency limit with a bounded, ordered, timed wait queue. Clones share one limit.
///
/// ```
/// use spillway::limit::ConcurrencyLimiter;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let limiter = ConcurrencyLimiter::builder(1).queue(10).queue_timeout(Duration::from_secs(1)).build();
/// let first = limiter.acquire().await.unwrap();
/// let l2 = limiter.clone();
/// let second = tokio::spawn(async move { l2.acquire_owned().await.map(|_p| "served") });
/// tokio::task::yield_now().await;
/// assert_eq!(limiter.stats().waiting, 1);
/// drop(first); // hands the permit to the waiter
/// assert_eq!(second.await.unwrap(), Ok("served"));
/// # });
/// ```
pub struct ConcurrencyLimiter<C = CoarseClock> {
    inner: Arc<Inner<C>>,
}

impl<C> Clone for ConcurrencyLimiter<C> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl ConcurrencyLimiter<CoarseClock> {
    /// A limiter of `limit` permits with no queue; see [`builder`](Self::builder) for more.
    pub fn new(limit: usize) -> Self {
        Self::builder(limit).build()
    }

    /// Configures a limiter of `limit` permits.
    pub fn builder(limit: usize) -> Builder<CoarseClock> {
        Builder::with(limit, CoarseClock::new())
    }

    /// [`builder`](Self::builder) reading `clock` (without touching the coarse clock, whose
    /// ticker thread then never starts).
    ///
    /// ```
    /// use spillway::clock::MonotonicClock;
    /// use spillway::limit::ConcurrencyLimiter;
    ///
    /// let limiter = ConcurrencyLimiter::builder_with_clock(8, MonotonicClock::new()).queue(16).build();
    /// assert_eq!(limiter.stats().limit, 8);
    /// ```
    pub fn builder_with_clock<C: Clock>(limit: usize, clock: C) -> Builder<C> {
        Builder::with(limit, clock)
    }
}

impl<C: Clock> Inner<C> {
    /// One attempt to take a permit, ignoring the queue.
    ///
    /// The loads are SeqCst (a plain load on x86): a waiter's "no permit free" verdict must be
    /// ordered after its announcement in `waiting`, or a release could slip between them (loom
    /// finds that interleaving with relaxed loads).
    #[inline]
    fn try_take(&self) -> bool {
        self.try_take_below(u64::MAX)
    }

    /// [`try_take`](Self::try_take) with an extra ceiling below the limit.
    #[inline]
    fn try_take_below(&self, ceiling: u64) -> bool {
        let limit = (self.limit.load(Ordering::SeqCst) as u64).min(ceiling);
        let mut state = self.state.load(Ordering::SeqCst);
        loop {
            let held = state & IN_FLIGHT;
            if held >= limit {
                return false;
            }
            match self.state.compare_exchange_weak(state, state + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => {
                    let held = (held + 1) as usize;
                    if held > self.in_flight_high.load(Ordering::Relaxed) {
                        self.in_flight_high.fetch_max(held, Ordering::Relaxed);
                    }
                    return true;
                }
                Err(s) => state = s,
            }
        }
    }

    #[inline]
    fn release(&self) {
        self.state.fetch_add(RELEASE, Ordering::SeqCst);
        dekker_fence();
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.grant_waiters();
        }
    }

    fn lock_queue(&self) -> MutexGuard<'_, WaitQueue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands free permits to queued waiters, in queue order.
    fn grant_waiters(&self) {
        let mut queue = self.lock_queue();
        let lifo = match self.order {
            QueueOrder::Fifo => false,
            QueueOrder::Lifo => true,
            QueueOrder::AdaptiveLifo => queue.congested(self.clock.now(), self.codel_interval()),
        };
        while queue.len() > 0 && self.try_take() {
            let waker = queue.grant(lifo);
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    fn reject(&self, reason: RejectReason) -> Rejected {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
        let rate = self.drain_rate();
        let ahead = self.waiting.load(Ordering::Relaxed) as f64 + 1.0;
        let retry_after = if rate > 0.0 {
            Duration::from_secs_f64((ahead / rate).clamp(0.001, 60.0))
        } else {
            self.timeout
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(1), Duration::from_secs(60))
        };
        Rejected { reason, retry_after }
    }

    /// Updates (at most every 50 ms, and only if nobody else is) and returns the drain rate.
    fn drain_rate(&self) -> f64 {
        let now = self.clock.now();
        if now >= self.drain_next.load(Ordering::Relaxed) {
            if let Ok(mut d) = self.drain.try_lock() {
                let elapsed = now.saturating_sub(d.at);
                if elapsed >= DRAIN_SAMPLE_NS {
                    let released = (self.state.load(Ordering::Relaxed) >> 32) as u32;
                    let sample = f64::from(released.wrapping_sub(d.released)) / (elapsed as f64 / 1e9);
                    let old = f64::from_bits(self.drain_rate.load(Ordering::Relaxed));
                    // Weight the new sample by how much time it covers (time constant: 1 s).
                    let alpha = if d.first { 1.0 } else { 1.0 - (-(elapsed as f64) / 1e9).exp() };
                    let rate = old + alpha * (sample - old);
                    self.drain_rate.store(rate.to_bits(), Ordering::Relaxed);
                    *d = Drain { at: now, released, first: false };
                    self.drain_next.store(now + DRAIN_SAMPLE_NS, Ordering::Relaxed);
                }
            }
        }
        f64::from_bits(self.drain_rate.load(Ordering::Relaxed))
    }

    fn codel_interval(&self) -> u64 {
        nanos(self.codel.unwrap_or_default().interval)
    }

    /// How long a new waiter may wait: the queue timeout, shortened to the CoDel target while
    /// the queue is standing and to the caller's `deadline`; refused at once if the predicted
    /// wait (waiters ahead / drain rate) exceeds the deadline.
    fn wait_budget(&self, deadline: Option<Duration>) -> Result<Option<Duration>, RejectReason> {
        let mut budget = self.timeout;
        if let Some(codel) = self.codel {
            if self.lock_queue().congested(self.clock.now(), nanos(codel.interval)) {
                budget = Some(budget.map_or(codel.target, |b| b.min(codel.target)));
            }
        }
        if let Some(deadline) = deadline {
            let rate = self.drain_rate();
            let ahead = self.waiting.load(Ordering::Relaxed) as f64 + 1.0;
            if rate > 0.0 && ahead / rate > deadline.as_secs_f64() {
                return Err(RejectReason::DeadlineUnreachable);
            }
            budget = Some(budget.map_or(deadline, |b| b.min(deadline)));
        }
        Ok(budget)
    }

    /// One poll of a queued (or not yet queued) waiter.
    fn poll_wait(&self, ticket: &mut Option<Ticket>, waker: &Waker) -> Poll<Result<(), RejectReason>> {
        let mut queue = self.lock_queue();
        match *ticket {
            Some(t) => match queue.poll(t, waker) {
                Some(true) => {
                    queue.leave(t);
                    *ticket = None;
                    Poll::Ready(Ok(()))
                }
                Some(false) => Poll::Pending,
                None => unreachable!("a live ticket is never freed by anyone but its owner"),
            },
            None => {
                // Announce ourselves before the last look, so that a release cannot slip by.
                self.waiting.fetch_add(1, Ordering::SeqCst);
                dekker_fence();
                if queue.len() == 0 && self.try_take() {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Poll::Ready(Ok(()));
                }
                match queue.push(waker.clone(), self.clock.now()) {
                    Some(t) => {
                        *ticket = Some(t);
                        let len = queue.len();
                        if len > self.waiting_high.load(Ordering::Relaxed) {
                            self.waiting_high.fetch_max(len, Ordering::Relaxed);
                        }
                        Poll::Pending
                    }
                    None => {
                        self.waiting.fetch_sub(1, Ordering::SeqCst);
                        Poll::Ready(Err(RejectReason::QueueFull))
                    }
                }
            }
        }
    }

    /// A waiter leaves without its permit (cancelled or timed out).
    fn abandon(&self, ticket: &mut Option<Ticket>) {
        let Some(t) = ticket.take() else { return };
        let left = self.lock_queue().leave(t);
        match left {
            Left::Waiting => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
            }
            // Granted but never picked up: pass it on.
            Left::Granted => self.release(),
            Left::Unknown => {}
        }
    }
}

impl<C: Clock> ConcurrencyLimiter<C> {
    /// Takes a permit if one is free and nobody is queued; never waits.
    ///
    /// ```
    /// use spillway::limit::ConcurrencyLimiter;
    ///
    /// let limiter = ConcurrencyLimiter::new(1);
    /// let permit = limiter.try_acquire().expect("free");
    /// assert!(limiter.try_acquire().is_err());
    /// drop(permit);
    /// assert!(limiter.try_acquire().is_ok());
    /// ```
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_, C>, Rejected> {
        self.try_take().map(|()| Permit { inner: &self.inner })
    }

    /// [`try_acquire`](Self::try_acquire), with a permit that owns a handle on the limiter (for
    /// moving into tasks).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit<C>, Rejected> {
        self.try_take().map(|()| OwnedPermit { inner: self.inner.clone() })
    }

    /// Takes a permit only if fewer than `ceiling` are in flight (and the limit allows): how a
    /// priority shedder keeps headroom for more important work.
    ///
    /// ```
    /// use spillway::limit::ConcurrencyLimiter;
    ///
    /// let limiter = ConcurrencyLimiter::new(10);
    /// let held: Vec<_> = (0..8).map(|_| limiter.try_acquire().unwrap()).collect();
    /// assert!(limiter.try_acquire_within(8).is_err()); // sheddable work stops at 8…
    /// assert!(limiter.try_acquire_within(10).is_ok()); // …critical work may use the rest
    /// # drop(held);
    /// ```
    #[inline]
    pub fn try_acquire_within(&self, ceiling: usize) -> Result<Permit<'_, C>, Rejected> {
        self.take_within(ceiling).map(|()| Permit { inner: &self.inner })
    }

    /// [`try_acquire_within`](Self::try_acquire_within) with an owned permit.
    #[inline]
    pub fn try_acquire_within_owned(&self, ceiling: usize) -> Result<OwnedPermit<C>, Rejected> {
        self.take_within(ceiling).map(|()| OwnedPermit { inner: self.inner.clone() })
    }

    #[inline]
    fn take_within(&self, ceiling: usize) -> Result<(), Rejected> {
        let inner = &*self.inner;
        if inner.waiting.load(Ordering::Relaxed) == 0 && inner.try_take_below(ceiling as u64) {
            Ok(())
        } else {
            Err(inner.reject(RejectReason::AtCapacity))
        }
    }

    /// [`try_acquire_owned`](Self::try_acquire_owned) for callers that fall back to
    /// [`acquire_owned`](Self::acquire_owned) when it fails: `None` instead of a [`Rejected`],
    /// so no rejection is counted and no `retry_after` computed.
    ///
    /// ```
    /// use spillway::limit::ConcurrencyLimiter;
    ///
    /// let limiter = ConcurrencyLimiter::new(1);
    /// let held = limiter.try_take_owned().unwrap();
    /// assert!(limiter.try_take_owned().is_none());
    /// assert_eq!(limiter.stats().rejected_at_capacity, 0);
    /// # drop(held);
    /// ```
    #[inline]
    pub fn try_take_owned(&self) -> Option<OwnedPermit<C>> {
        let inner = &*self.inner;
        (inner.waiting.load(Ordering::Relaxed) == 0 && inner.try_take())
            .then(|| OwnedPermit { inner: self.inner.clone() })
    }

    /// The wait queue's capacity (0: no queue, `acquire` refuses at once when at the limit).
    pub fn queue_capacity(&self) -> usize {
        self.inner.queue_capacity
    }

    #[inline]
    fn try_take(&self) -> Result<(), Rejected> {
        let inner = &*self.inner;
        if inner.waiting.load(Ordering::Relaxed) == 0 && inner.try_take() {
            Ok(())
        } else {
            Err(inner.reject(RejectReason::AtCapacity))
        }
    }

    /// Takes a permit, waiting in the queue if none is free: refused at once if the queue is full
    /// (or there is none), or after the queue timeout (the CoDel target while the queue stands).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn acquire(&self) -> Result<Permit<'_, C>, Rejected> {
        self.wait(None).await.map(|()| Permit { inner: &self.inner })
    }

    /// [`acquire`](Self::acquire), with an owned permit.
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn acquire_owned(&self) -> Result<OwnedPermit<C>, Rejected> {
        self.wait(None).await.map(|()| OwnedPermit { inner: self.inner.clone() })
    }

    /// Deadline-aware [`acquire`](Self::acquire) for a caller with `remaining` time: refused at
    /// once with [`RejectReason::DeadlineUnreachable`] when the predicted wait (waiters ahead /
    /// measured drain rate) is longer, and never kept waiting past `remaining`.
    ///
    /// ```
    /// use spillway::limit::ConcurrencyLimiter;
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let limiter = ConcurrencyLimiter::builder(4).queue(16).build();
    /// let permit = limiter.acquire_within(Duration::from_millis(50)).await.unwrap();
    /// # drop(permit);
    /// # });
    /// ```
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn acquire_within(&self, remaining: Duration) -> Result<Permit<'_, C>, Rejected> {
        self.wait(Some(remaining)).await.map(|()| Permit { inner: &self.inner })
    }

    /// [`acquire_within`](Self::acquire_within), with an owned permit (for moving into a
    /// response body).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn acquire_within_owned(&self, remaining: Duration) -> Result<OwnedPermit<C>, Rejected> {
        self.wait(Some(remaining)).await.map(|()| OwnedPermit { inner: self.inner.clone() })
    }

    #[cfg(all(feature = "async", not(loom)))]
    async fn wait(&self, deadline: Option<Duration>) -> Result<(), Rejected> {
        let inner = &*self.inner;
        if inner.waiting.load(Ordering::Relaxed) == 0 && inner.try_take() {
            return Ok(());
        }
        if inner.queue_capacity == 0 {
            return Err(inner.reject(RejectReason::AtCapacity));
        }
        let budget = inner.wait_budget(deadline).map_err(|reason| inner.reject(reason))?;
        let mut waiter = Waiter { inner, ticket: None };
        let wait = std::future::poll_fn(|cx| inner.poll_wait(&mut waiter.ticket, cx.waker()));
        let outcome = match budget {
            None => wait.await,
            Some(t) => tokio::time::timeout(t, wait).await.unwrap_or(Err(RejectReason::Timeout)),
        };
        drop(waiter);
        outcome.map_err(|reason| inner.reject(reason))
    }

    /// Takes a permit, blocking the thread in the queue if none is free (for sync callers).
    ///
    /// ```
    /// use spillway::limit::{ConcurrencyLimiter, RejectReason};
    /// use std::time::Duration;
    ///
    /// let limiter = ConcurrencyLimiter::builder(1).queue(1).queue_timeout(Duration::from_millis(20)).build();
    /// let held = limiter.acquire_blocking().unwrap();
    /// let err = limiter.acquire_blocking().unwrap_err();
    /// assert_eq!(err.reason(), RejectReason::Timeout);
    /// drop(held);
    /// ```
    pub fn acquire_blocking(&self) -> Result<Permit<'_, C>, Rejected> {
        let inner = &*self.inner;
        if inner.waiting.load(Ordering::Relaxed) == 0 && inner.try_take() {
            return Ok(Permit { inner });
        }
        if inner.queue_capacity == 0 {
            return Err(inner.reject(RejectReason::AtCapacity));
        }
        let budget = inner.wait_budget(None).map_err(|reason| inner.reject(reason))?;
        let deadline = budget.map(|t| inner.clock.now_precise().saturating_add(nanos(t)));
        let waker = thread_waker();
        let mut waiter = Waiter { inner, ticket: None };
        let outcome = loop {
            if let Poll::Ready(r) = inner.poll_wait(&mut waiter.ticket, &waker) {
                break r;
            }
            // Out of time: a grant that raced the deadline is passed on by `abandon`.
            if !park_until(deadline, || inner.clock.now_precise()) {
                break Err(RejectReason::Timeout);
            }
        };
        drop(waiter);
        outcome.map(|()| Permit { inner }).map_err(|reason| inner.reject(reason))
    }

    /// Changes the limit. Raising it hands permits to waiters at once; lowering it lets the
    /// permits in flight finish and admits nobody new until in flight is below the new limit.
    ///
    /// ```
    /// use spillway::limit::ConcurrencyLimiter;
    ///
    /// let limiter = ConcurrencyLimiter::new(2);
    /// let a = limiter.try_acquire().unwrap();
    /// let b = limiter.try_acquire().unwrap();
    /// limiter.set_limit(1);
    /// drop(a);
    /// assert!(limiter.try_acquire().is_err()); // still 1 in flight: at the new limit
    /// drop(b);
    /// assert!(limiter.try_acquire().is_ok());
    /// ```
    pub fn set_limit(&self, limit: usize) {
        let inner = &*self.inner;
        let old = inner.limit.swap(clamp_limit(limit), Ordering::SeqCst);
        dekker_fence();
        if limit > old && inner.waiting.load(Ordering::SeqCst) > 0 {
            inner.grant_waiters();
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.inner.limit.load(Ordering::Relaxed)
    }

    /// The clock the limiter reads.
    pub fn clock(&self) -> &C {
        &self.inner.clock
    }

    /// Permits held now.
    pub fn in_flight(&self) -> usize {
        (self.inner.state.load(Ordering::Relaxed) & IN_FLIGHT) as usize
    }

    /// A snapshot read without locks (the drain rate is refreshed if due and uncontended).
    pub fn stats(&self) -> LimiterStats {
        let i = &*self.inner;
        LimiterStats {
            limit: i.limit.load(Ordering::Relaxed),
            in_flight: self.in_flight(),
            waiting: i.waiting.load(Ordering::Relaxed),
            queue_capacity: i.queue_capacity,
            in_flight_high_water: i.in_flight_high.load(Ordering::Relaxed),
            waiting_high_water: i.waiting_high.load(Ordering::Relaxed),
            rejected_at_capacity: i.rejected[RejectReason::AtCapacity as usize].load(Ordering::Relaxed),
            rejected_queue_full: i.rejected[RejectReason::QueueFull as usize].load(Ordering::Relaxed),
            rejected_timeout: i.rejected[RejectReason::Timeout as usize].load(Ordering::Relaxed),
            rejected_deadline: i.rejected[RejectReason::DeadlineUnreachable as usize].load(Ordering::Relaxed),
            drain_rate_per_sec: i.drain_rate(),
        }
    }
}

/// Leaves the queue when the waiting future is dropped or finishes.
struct Waiter<'a, C: Clock> {
    inner: &'a Inner<C>,
    ticket: Option<Ticket>,
}

impl<C: Clock> Drop for Waiter<'_, C> {
    fn drop(&mut self) {
        self.inner.abandon(&mut self.ticket);
    }
}

/// A held permit; released when dropped.
///
/// ```
/// use spillway::limit::ConcurrencyLimiter;
///
/// let limiter = ConcurrencyLimiter::new(1);
/// {
///     let _permit = limiter.try_acquire().unwrap();
///     assert_eq!(limiter.in_flight(), 1);
/// } // released here
/// assert_eq!(limiter.in_flight(), 0);
/// ```
#[must_use = "a permit is released as soon as it is dropped"]
pub struct Permit<'a, C: Clock = CoarseClock> {
    inner: &'a Inner<C>,
}

impl<C: Clock> Drop for Permit<'_, C> {
    #[inline]
    fn drop(&mut self) {
        self.inner.release();
    }
}

/// A held permit that owns a handle on its limiter; released when dropped.
///
/// ```
/// use spillway::limit::ConcurrencyLimiter;
///
/// let limiter = ConcurrencyLimiter::new(2);
/// let permit = limiter.try_acquire_owned().unwrap();
/// let worker = std::thread::spawn(move || {
///     let _permit = permit; // held for the whole job, released when the thread ends
/// });
/// worker.join().unwrap();
/// assert_eq!(limiter.in_flight(), 0);
/// ```
#[must_use = "a permit is released as soon as it is dropped"]
pub struct OwnedPermit<C: Clock = CoarseClock> {
    inner: Arc<Inner<C>>,
}

impl<C: Clock> Drop for OwnedPermit<C> {
    #[inline]
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl<C: Clock> fmt::Debug for ConcurrencyLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimiter").field("stats", &self.stats()).finish()
    }
}

impl<C: Clock> fmt::Debug for Permit<'_, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl<C: Clock> fmt::Debug for OwnedPermit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit").finish_non_exhaustive()
    }
}
