//! Client-side adaptive throttling and retry budgets: the client's half of backpressure.

use crate::clock::{Clock, CoarseClock};
use crate::sync::{AtomicU64, Mutex, MutexGuard, Ordering};
use std::fmt;
use std::time::Duration;

const SECOND: u64 = 1_000_000_000;

/// Two counters per second over a sliding window of whole seconds.
#[derive(Debug)]
struct Seconds {
    buckets: Box<[(u64, u64, u64)]>,
}

impl Seconds {
    fn new(window: Duration) -> Self {
        let n = window.as_secs().clamp(1, 3600) as usize;
        Self { buckets: vec![(0, 0, 0); n].into_boxed_slice() }
    }

    fn add(&mut self, now: u64, a: u64, b: u64) {
        let epoch = now / SECOND + 1;
        let slot = &mut self.buckets[(epoch % self.buckets.len() as u64) as usize];
        if slot.0 != epoch {
            *slot = (epoch, 0, 0);
        }
        slot.1 += a;
        slot.2 += b;
    }

    fn sums(&self, now: u64) -> (u64, u64) {
        let epoch = now / SECOND + 1;
        let oldest = epoch.saturating_sub(self.buckets.len() as u64 - 1);
        self.buckets
            .iter()
            .filter(|s| s.0 >= oldest && s.0 <= epoch)
            .fold((0, 0), |(a, b), s| (a + s.1, b + s.2))
    }
}

/// Client-side adaptive throttling from Google's SRE book: each client keeps, over the last two
/// minutes, how many requests it attempted and how many the backend accepted, and refuses new
/// requests locally with probability `max(0, (requests − K·accepts) / (requests + 1))`, K = 2.
/// A backend that rejects most work thus stops receiving most of it, without any coordination,
/// while a healthy one (accepts ≈ requests) sees no throttling at all.
///
/// ```
/// use spillway::shed::ClientThrottle;
///
/// let throttle = ClientThrottle::new();
/// for _ in 0..100 {
///     if throttle.should_send() {
///         // the backend refused it (429/503): no call to accepted()
///     }
/// }
/// // 100 attempts, 0 accepted: (100 − 0) / 101 ≈ 99 % refused locally.
/// assert!(throttle.rejection_probability() > 0.9);
/// ```
pub struct ClientThrottle<C = CoarseClock> {
    k: f64,
    counts: Mutex<Seconds>,
    rng: AtomicU64,
    clock: C,
}

impl ClientThrottle<CoarseClock> {
    /// K = 2 over two minutes.
    pub fn new() -> Self {
        Self::with_clock(2.0, Duration::from_secs(120), CoarseClock::new())
    }
}

impl Default for ClientThrottle<CoarseClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> ClientThrottle<C> {
    /// A throttle with multiplier `k` (≥ 1; lower is more aggressive) over `window`.
    pub fn with_clock(k: f64, window: Duration, clock: C) -> Self {
        let seed = clock.now_precise() | 1;
        Self { k: k.max(1.0), counts: Mutex::new(Seconds::new(window)), rng: AtomicU64::new(seed), clock }
    }

    fn lock(&self) -> MutexGuard<'_, Seconds> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The probability that the next request is refused locally.
    pub fn rejection_probability(&self) -> f64 {
        let (requests, accepts) = self.lock().sums(self.clock.now());
        ((requests as f64 - self.k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
    }

    /// Counts an attempt and decides whether to send it (`false`: fail it locally).
    pub fn should_send(&self) -> bool {
        let p = self.rejection_probability();
        self.lock().add(self.clock.now(), 1, 0);
        p <= 0.0 || self.draw() >= p
    }

    /// The backend accepted a request that was sent.
    pub fn accepted(&self) {
        self.lock().add(self.clock.now(), 0, 1);
    }

    fn draw(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A retry budget: retries may add at most `ratio` of the requests of the last `window`, plus
/// `min_per_sec` retries a second so that a quiet client can still retry. Retries beyond the
/// budget are what turns a brief failure into a retry storm.
///
/// ```
/// use spillway::shed::RetryBudget;
/// use spillway::clock::ManualClock;
/// use std::time::Duration;
///
/// let budget = RetryBudget::with_clock(0.2, 0, Duration::from_secs(10), ManualClock::new());
/// for _ in 0..10 {
///     budget.record_request();
/// }
/// assert!(budget.try_retry());
/// assert!(budget.try_retry());
/// assert!(!budget.try_retry()); // 20 % of 10
/// ```
pub struct RetryBudget<C = CoarseClock> {
    ratio: f64,
    min_per_sec: u64,
    window_secs: u64,
    counts: Mutex<Seconds>,
    clock: C,
}

impl RetryBudget<CoarseClock> {
    /// Finagle's defaults: 20 % of requests plus 10 retries a second, over 10 s.
    pub fn new() -> Self {
        Self::with_clock(0.2, 10, Duration::from_secs(10), CoarseClock::new())
    }
}

impl Default for RetryBudget<CoarseClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> RetryBudget<C> {
    /// A budget of `ratio` of requests plus `min_per_sec`, over `window`.
    pub fn with_clock(ratio: f64, min_per_sec: u64, window: Duration, clock: C) -> Self {
        let counts = Seconds::new(window);
        let window_secs = counts.buckets.len() as u64;
        Self { ratio: ratio.max(0.0), min_per_sec, window_secs, counts: Mutex::new(counts), clock }
    }

    fn lock(&self) -> MutexGuard<'_, Seconds> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a first attempt (not a retry).
    pub fn record_request(&self) {
        self.lock().add(self.clock.now(), 1, 0);
    }

    /// Takes one retry from the budget if there is one left.
    pub fn try_retry(&self) -> bool {
        let now = self.clock.now();
        let mut counts = self.lock();
        let (requests, retries) = counts.sums(now);
        let budget = requests as f64 * self.ratio + (self.min_per_sec * self.window_secs) as f64;
        if (retries as f64) < budget.floor() {
            counts.add(now, 0, 1);
            true
        } else {
            false
        }
    }
}

impl<C: Clock> fmt::Debug for ClientThrottle<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientThrottle")
            .field("k", &self.k)
            .field("rejection_probability", &self.rejection_probability())
            .finish()
    }
}

impl<C: Clock> fmt::Debug for RetryBudget<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.ratio)
            .field("min_per_sec", &self.min_per_sec)
            .finish()
    }
}
