//! Consumer-side flow control, independent of any broker.
//!
//! A consumer does three things with each message: it *fetches* it from the broker, *admits* it
//! to the handler (waiting for a permit of the concurrency limit), and *finishes* it (ack or
//! nack). [`FlowControl`] watches the gap between the first and the last, the processing lag
//! (messages fetched but not yet finished), and how long the oldest fetched message has been
//! waiting for a permit. Above a threshold it *pauses* the consumer (the adapter stops pulling
//! batches or taking deliveries); below half of it, it *resumes*: the seeds' Kafka pattern,
//! `if lag > threshold: pause() elif lag < threshold / 2: resume()`.
//!
//! The three steps are RAII tokens, so a message that is dropped anywhere (a task aborted, a
//! connection lost) leaves the counters right:
//!
//! - [`FlowControl::on_fetched`] → [`Fetched`]: counted in the lag until dropped;
//! - [`FlowControl::admit`] (async; waits for a permit) → [`Ticket`]: holds the permit;
//! - [`Ticket::success`] / [`Ticket::failure`]: counts the outcome, releases the permit and the
//!   lag, and may resume the consumer.

use crate::metrics::{ConsumerCounters, ConsumerSnapshot};
use spillway::adaptive::{AdaptiveLimiter, Admission, LimitAlgorithm};
use spillway::clock::{Clock, MonotonicClock, nanos};
use spillway::limit::{ConcurrencyLimiter, OwnedPermit};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How many tasks may wait for a permit of one [`FlowControl`] at once (each consumer's
/// dispatcher is one; more share a `FlowControl` only when the user clones it).
const MAX_WAITERS: usize = 64;

/// While paused, the gate is re-evaluated at least this often (a safety net: every finish and
/// admission re-evaluates it anyway).
const PAUSED_RECHECK: Duration = Duration::from_millis(50);

/// What pauses a consumer. It pauses when the signal is above the threshold and resumes when it
/// is below half of it (or when nothing is left to process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PauseOn {
    /// Never pause: only the local buffer's capacity and the broker's window bound the consumer.
    Never,
    /// Processing lag: messages fetched but not yet finished.
    Lag(u64),
    /// Wait time: how long the oldest fetched message has waited for a handler.
    WaitTime(Duration),
}

enum Limiter {
    Fixed(ConcurrencyLimiter<MonotonicClock>),
    Adaptive(AdaptiveLimiter<Box<dyn LimitAlgorithm>, MonotonicClock>),
}

impl Limiter {
    fn inner(&self) -> &ConcurrencyLimiter<MonotonicClock> {
        match self {
            Self::Fixed(l) => l,
            Self::Adaptive(a) => a.limiter(),
        }
    }
}

struct Shared {
    name: String,
    limiter: Limiter,
    pause_on: PauseOn,
    buffer: usize,
    clock: MonotonicClock,
    counters: ConsumerCounters,
    paused: AtomicBool,
    resumed: Notify,
    /// When the message now waiting for a permit was fetched (clock nanoseconds; 0: none).
    head_since: AtomicU64,
}

/// Consumer flow control: a concurrency limit (fixed or adaptive) over the handler, pause and
/// resume with hysteresis, and the counters behind the metrics. Clones share one state.
///
/// ```
/// use spillway_queue::{FlowControl, PauseOn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let flow = FlowControl::builder("orders").limit(2).pause_on(PauseOn::Lag(4)).build();
/// // The adapter fetched five messages of 100 bytes: the lag is above 4, so it pauses.
/// let fetched: Vec<_> = (0..5).map(|_| flow.on_fetched(100)).collect();
/// assert!(flow.check_paused());
/// // The handler finishes them one by one; below 4 / 2 it resumes.
/// for f in fetched {
///     let ticket = flow.admit(f).await;
///     ticket.success();
/// }
/// let s = flow.snapshot();
/// assert_eq!((s.paused, s.pauses_total, s.resumes_total, s.processed_total, s.lag), (false, 1, 1, 5, 0));
/// assert_eq!(s.peak_lag, 5);
/// # });
/// ```
#[derive(Clone)]
pub struct FlowControl {
    shared: Arc<Shared>,
}

/// Configures a [`FlowControl`]; see [`FlowControl::builder`].
#[must_use]
pub struct FlowBuilder {
    name: String,
    limit: usize,
    algorithm: Option<Box<dyn LimitAlgorithm>>,
    pause_on: Option<PauseOn>,
    buffer: Option<usize>,
}

impl FlowControl {
    /// Configures flow control for a consumer called `name` (the `consumer` label of its
    /// metrics: give a fixed name, never a per-message value).
    ///
    /// Defaults: a fixed limit of 16 handlers, pause on a lag above 3 × the limit, a local buffer
    /// of 4 × the limit (or the lag threshold, if larger).
    pub fn builder(name: impl Into<String>) -> FlowBuilder {
        FlowBuilder { name: name.into(), limit: 16, algorithm: None, pause_on: None, buffer: None }
    }

    /// Counts one message fetched from the broker (`bytes` of payload): it is in the lag until
    /// the returned token, or the [`Ticket`] it becomes, is dropped.
    pub fn on_fetched(&self, bytes: usize) -> Fetched {
        let s = &*self.shared;
        let bytes = bytes as u64;
        let lag = s.counters.lag.fetch_add(1, Ordering::Relaxed) + 1;
        let lag_bytes = s.counters.lag_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        s.counters.fetched_total.fetch_add(1, Ordering::Relaxed);
        s.counters.peak_lag.fetch_max(lag, Ordering::Relaxed);
        s.counters.peak_lag_bytes.fetch_max(lag_bytes, Ordering::Relaxed);
        Fetched { flow: self.clone(), at: s.clock.now(), bytes }
    }

    /// Waits for a permit of the concurrency limit for a fetched message. While it waits, the
    /// message is the oldest waiting one (what [`PauseOn::WaitTime`] measures).
    pub async fn admit(&self, fetched: Fetched) -> Ticket {
        let s = &*self.shared;
        s.head_since.store(fetched.at.max(1), Ordering::Relaxed);
        let permit = loop {
            // No queue timeout is configured, so these fail only if more than MAX_WAITERS tasks
            // wait at once (or, for the adaptive limiter, after an hour): try again shortly.
            let got = match &s.limiter {
                Limiter::Fixed(l) => l.acquire_owned().await.map(TicketPermit::Fixed),
                Limiter::Adaptive(a) => {
                    a.admit_within(Duration::from_secs(3600)).await.map(TicketPermit::Adaptive)
                }
            };
            match got {
                Ok(p) => break p,
                Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
            }
        };
        s.head_since.store(0, Ordering::Relaxed);
        self.evaluate();
        Ticket { fetched, permit: Some(permit) }
    }

    /// Waits while the consumer is paused; the adapter calls it before pulling a batch or taking
    /// a delivery.
    pub async fn ready(&self) {
        loop {
            self.evaluate();
            let notified = self.shared.resumed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.shared.paused.load(Ordering::Acquire) {
                return;
            }
            let _ = tokio::time::timeout(PAUSED_RECHECK, notified).await;
        }
    }

    /// Re-evaluates the pause gate and answers whether the consumer is paused.
    pub fn check_paused(&self) -> bool {
        self.evaluate();
        self.shared.paused.load(Ordering::Acquire)
    }

    /// The local buffer's capacity: at most this many fetched messages wait for a permit.
    pub fn buffer(&self) -> usize {
        self.shared.buffer
    }

    /// The consumer's name (its metrics' `consumer` label).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// How long the message now waiting for a permit has waited (zero if none waits).
    pub fn wait_time(&self) -> Duration {
        Duration::from_nanos(self.head_wait())
    }

    /// The counters and gauges, read without locks.
    pub fn snapshot(&self) -> ConsumerSnapshot {
        let s = &*self.shared;
        let c = &s.counters;
        let limiter = s.limiter.inner();
        ConsumerSnapshot {
            paused: s.paused.load(Ordering::Acquire),
            pauses_total: c.pauses_total.load(Ordering::Relaxed),
            resumes_total: c.resumes_total.load(Ordering::Relaxed),
            in_flight: limiter.in_flight(),
            peak_in_flight: limiter.stats().in_flight_high_water,
            limit: limiter.limit(),
            fetched_total: c.fetched_total.load(Ordering::Relaxed),
            processed_total: c.processed_total.load(Ordering::Relaxed),
            failed_total: c.failed_total.load(Ordering::Relaxed),
            lag: c.lag.load(Ordering::Relaxed),
            lag_bytes: c.lag_bytes.load(Ordering::Relaxed),
            peak_lag: c.peak_lag.load(Ordering::Relaxed),
            peak_lag_bytes: c.peak_lag_bytes.load(Ordering::Relaxed),
            wait_time: self.wait_time(),
        }
    }

    fn head_wait(&self) -> u64 {
        let since = self.shared.head_since.load(Ordering::Relaxed);
        if since == 0 { 0 } else { self.shared.clock.now().saturating_sub(since) }
    }

    /// The hysteresis: pause above the threshold, resume below half of it or when idle.
    fn evaluate(&self) {
        let s = &*self.shared;
        let lag = s.counters.lag.load(Ordering::Relaxed);
        let (signal, threshold) = match s.pause_on {
            PauseOn::Never => return,
            PauseOn::Lag(t) => (lag, t),
            PauseOn::WaitTime(d) => (self.head_wait(), nanos(d)),
        };
        let paused = s.paused.load(Ordering::Acquire);
        if !paused && signal > threshold {
            if s.paused.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
                s.counters.pauses_total.fetch_add(1, Ordering::Relaxed);
            }
        } else if paused
            && (signal < threshold / 2 || lag == 0)
            && s.paused.compare_exchange(true, false, Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            s.counters.resumes_total.fetch_add(1, Ordering::Relaxed);
            s.resumed.notify_waiters();
        }
    }
}

impl FlowBuilder {
    /// A fixed limit on messages in the handler at once (at least 1).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit.max(1);
        self.algorithm = None;
        self
    }

    /// An adaptive limit: `algorithm` (any of `spillway::adaptive`) sets the limit from the
    /// handler's latency; each successful handler call is one sample.
    pub fn adaptive(mut self, algorithm: impl LimitAlgorithm + 'static) -> Self {
        self.algorithm = Some(Box::new(algorithm));
        self
    }

    /// What pauses the consumer (default: a lag above 3 × the limit).
    pub fn pause_on(mut self, pause_on: PauseOn) -> Self {
        self.pause_on = Some(pause_on);
        self
    }

    /// How many fetched messages may wait for a permit in the consumer's local buffer (default:
    /// 4 × the limit, or the lag threshold if that is larger; at least 1). A full buffer stops
    /// fetching too, whatever the pause says; the lag can reach at most buffer + limit + 2.
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.buffer = Some(capacity.max(1));
        self
    }

    /// Builds it.
    pub fn build(self) -> FlowControl {
        let base = match &self.algorithm {
            Some(a) => a.limit(),
            None => self.limit,
        };
        let limiter = ConcurrencyLimiter::builder_with_clock(self.limit, MonotonicClock::new())
            .queue(MAX_WAITERS)
            .build();
        let limiter = match self.algorithm {
            Some(a) => Limiter::Adaptive(AdaptiveLimiter::new(a, limiter)),
            None => Limiter::Fixed(limiter),
        };
        let pause_on = self.pause_on.unwrap_or(PauseOn::Lag(3 * base as u64));
        // A lag threshold the buffer cannot reach would never pause: the buffer holds at least it.
        let buffer = self.buffer.unwrap_or(match pause_on {
            PauseOn::Lag(t) => usize::try_from(t).unwrap_or(usize::MAX).max(4 * base),
            _ => 4 * base,
        });
        FlowControl {
            shared: Arc::new(Shared {
                name: self.name,
                limiter,
                pause_on,
                buffer,
                clock: MonotonicClock::new(),
                counters: ConsumerCounters::default(),
                paused: AtomicBool::new(false),
                resumed: Notify::new(),
                head_since: AtomicU64::new(0),
            }),
        }
    }
}

/// A message fetched and not yet admitted: counted in the lag until dropped or admitted.
#[must_use = "admit it (FlowControl::admit) or drop it when the message is given up"]
pub struct Fetched {
    flow: FlowControl,
    at: u64,
    bytes: u64,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        let c = &self.flow.shared.counters;
        c.lag.fetch_sub(1, Ordering::Relaxed);
        c.lag_bytes.fetch_sub(self.bytes, Ordering::Relaxed);
        self.flow.evaluate();
    }
}

enum TicketPermit {
    Fixed(OwnedPermit<MonotonicClock>),
    Adaptive(Admission<MonotonicClock>),
}

/// A message admitted to the handler: holds a permit of the limit. Finish it with
/// [`success`](Self::success) or [`failure`](Self::failure); dropping it releases the permit
/// and counts nothing (the message was abandoned, e.g. its task was aborted).
#[must_use = "finish the ticket with success() or failure()"]
pub struct Ticket {
    // Dropped after the permit (field order), so the lag falls after in-flight does.
    permit: Option<TicketPermit>,
    fetched: Fetched,
}

impl Ticket {
    /// The handler succeeded and the message was acked: counted as processed; its latency
    /// feeds an adaptive limit.
    pub fn success(mut self) {
        self.fetched.flow.shared.counters.processed_total.fetch_add(1, Ordering::Relaxed);
        self.release(true);
    }

    /// The handler failed (or the ack did): counted as failed; teaches an adaptive limit
    /// nothing.
    pub fn failure(mut self) {
        self.fetched.flow.shared.counters.failed_total.fetch_add(1, Ordering::Relaxed);
        self.release(false);
    }

    fn release(&mut self, sample: bool) {
        match self.permit.take() {
            Some(TicketPermit::Adaptive(adm)) => {
                if let Limiter::Adaptive(a) = &self.fetched.flow.shared.limiter {
                    a.finish(adm, sample.then_some(false));
                }
            }
            Some(TicketPermit::Fixed(p)) => drop(p),
            None => {}
        }
    }
}

impl fmt::Debug for FlowControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowControl")
            .field("name", &self.shared.name)
            .field("pause_on", &self.shared.pause_on)
            .field("buffer", &self.shared.buffer)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl fmt::Debug for FlowBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlowBuilder")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .field("algorithm", &self.algorithm)
            .field("pause_on", &self.pause_on)
            .field("buffer", &self.buffer)
            .finish()
    }
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched").field("at", &self.at).field("bytes", &self.bytes).finish()
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("fetched", &self.fetched).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway::adaptive::Vegas;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
    }

    #[test]
    fn lag_hysteresis_pauses_above_and_resumes_below_half() {
        rt().block_on(async {
            let flow = FlowControl::builder("t").limit(100).pause_on(PauseOn::Lag(10)).build();
            let mut held: Vec<_> = (0..10).map(|_| flow.on_fetched(1)).collect();
            assert!(!flow.check_paused(), "10 is not above 10");
            held.push(flow.on_fetched(1));
            assert!(flow.check_paused());
            // Down to 5: not below half yet.
            for _ in 0..6 {
                drop(held.pop());
            }
            assert_eq!(flow.snapshot().lag, 5);
            assert!(flow.check_paused(), "5 is not below 10 / 2");
            drop(held.pop());
            assert!(!flow.check_paused());
            let s = flow.snapshot();
            assert_eq!((s.pauses_total, s.resumes_total), (1, 1));
        });
    }

    #[test]
    fn ready_waits_while_paused_and_wakes_on_resume() {
        rt().block_on(async {
            let flow = FlowControl::builder("t").limit(1).pause_on(PauseOn::Lag(2)).build();
            let held: Vec<_> = (0..3).map(|_| flow.on_fetched(1)).collect();
            let f2 = flow.clone();
            let waiter = tokio::spawn(async move { f2.ready().await });
            tokio::task::yield_now().await;
            assert!(!waiter.is_finished());
            drop(held);
            tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
            assert!(!flow.snapshot().paused);
        });
    }

    #[test]
    fn wait_time_pauses_when_the_head_waits_too_long() {
        rt().block_on(async {
            let flow = FlowControl::builder("t")
                .limit(1)
                .pause_on(PauseOn::WaitTime(Duration::from_millis(20)))
                .build();
            let first = flow.admit(flow.on_fetched(1)).await;
            let f2 = flow.clone();
            let second = tokio::spawn(async move { f2.admit(f2.on_fetched(1)).await });
            tokio::time::sleep(Duration::from_millis(40)).await;
            assert!(flow.wait_time() >= Duration::from_millis(20));
            assert!(flow.check_paused());
            first.success();
            let second = second.await.unwrap();
            assert_eq!(flow.wait_time(), Duration::ZERO);
            assert!(!flow.check_paused());
            second.failure();
            let s = flow.snapshot();
            assert_eq!(
                (s.processed_total, s.failed_total, s.pauses_total, s.resumes_total, s.lag),
                (1, 1, 1, 1, 0)
            );
        });
    }

    #[test]
    fn the_limit_bounds_handlers_and_an_adaptive_limit_moves() {
        rt().block_on(async {
            let flow = FlowControl::builder("t").adaptive(Vegas::default().with_initial(4)).build();
            assert_eq!(flow.snapshot().limit, 4);
            let tickets: Vec<_> = futures_lite_join(&flow, 4).await;
            assert_eq!(flow.snapshot().in_flight, 4);
            let f2 = flow.clone();
            let fifth = tokio::spawn(async move { f2.admit(f2.on_fetched(1)).await });
            tokio::task::yield_now().await;
            assert!(!fifth.is_finished(), "the fifth waits for a permit");
            assert_eq!(flow.snapshot().lag, 5);
            for t in tickets {
                t.success();
            }
            fifth.await.unwrap().success();
            // Latency at its minimum with the limit in use: Vegas grows.
            for _ in 0..50 {
                let ts = futures_lite_join(&flow, flow.snapshot().limit).await;
                ts.into_iter().for_each(Ticket::success);
            }
            assert!(flow.snapshot().limit > 4, "{:?}", flow.snapshot());
        });
    }

    async fn futures_lite_join(flow: &FlowControl, n: usize) -> Vec<Ticket> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(flow.admit(flow.on_fetched(1)).await);
        }
        v
    }

    #[test]
    fn abandoned_tokens_leave_the_counters_right() {
        rt().block_on(async {
            let flow = FlowControl::builder("t").limit(2).build();
            let a = flow.on_fetched(10);
            let t = flow.admit(flow.on_fetched(20)).await;
            assert_eq!((flow.snapshot().lag, flow.snapshot().lag_bytes), (2, 30));
            drop((a, t));
            let s = flow.snapshot();
            assert_eq!((s.lag, s.lag_bytes, s.in_flight, s.processed_total, s.failed_total), (0, 0, 0, 0, 0));
            assert_eq!(s.peak_lag_bytes, 30);
        });
    }
}
