//! A bounded MPMC channel for sync and async code, with an explicit overflow policy.
//!
//! The seeds' four answers to "the buffer is full" are [`OverflowPolicy`]'s four variants:
//! wait (block or await, with an optional timeout), reject, drop the oldest item, drop the
//! newest. Whatever does not enter the queue is handed back to the caller, never lost silently:
//!
//! | policy | when full, `try_send` returns | counted as |
//! | --- | --- | --- |
//! | `Wait(_)` | `Err(SendError::Full(item))` (`send`/`send_blocking` wait instead) | `rejected` |
//! | `Reject` | `Err(SendError::Full(item))` | `rejected` |
//! | `DropOldest` | `Ok(SendOutcome::Replaced(oldest))` | `evicted` |
//! | `DropNewest` | `Ok(SendOutcome::Dropped(item))` | `dropped_newest` |
//!
//! The queue is a lock-free ring ([`ring`](self) module, Vyukov's bounded MPMC algorithm) of
//! exactly `capacity` slots allocated once. Sends and receives that do not wait take no lock and
//! allocate nothing; waiting callers park on a wait list that senders and receivers only touch
//! when somebody waits.
//!
//! ```
//! use spillway::channel::{channel, OverflowPolicy, SendError, SendOutcome};
//!
//! let (tx, rx) = channel(2, OverflowPolicy::DropOldest);
//! tx.try_send(1).unwrap();
//! tx.try_send(2).unwrap();
//! assert_eq!(tx.try_send(3).unwrap(), SendOutcome::Replaced(1)); // live data: newest wins
//! assert_eq!(rx.try_recv(), Ok(2));
//!
//! let (tx, _rx) = channel(1, OverflowPolicy::Reject);
//! tx.try_send("a").unwrap();
//! assert_eq!(tx.try_send("b"), Err(SendError::Full("b"))); // handed back
//! let stats = tx.stats();
//! assert_eq!((stats.sent, stats.rejected, stats.depth), (1, 1, 1));
//! ```

mod ring;
mod waiters;

use crate::clock::{Clock, MonotonicClock, nanos};
use crate::park::{park_until, thread_waker};
use crate::sync::{Arc, AtomicU64, AtomicUsize, Ordering, Padded};
use ring::Ring;
use std::fmt;
#[cfg(not(loom))]
use std::task::Poll;

use std::time::Duration;
use waiters::Waiters;

/// What a send does when the channel is full.
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy};
/// use std::time::Duration;
///
/// // Internal hand-off that can wait a little: a bounded buffer.
/// let (jobs, _) = channel::<u64>(1000, OverflowPolicy::Wait(Some(Duration::from_secs(5))));
/// // A public endpoint: refuse at once and let the caller answer 503.
/// let (requests, _) = channel::<u64>(100, OverflowPolicy::Reject);
/// // Tickers and metrics: the newest value matters most.
/// let (ticks, _) = channel::<f64>(64, OverflowPolicy::DropOldest);
/// // Ordered events that must not be reordered or overwritten: keep what is queued.
/// let (events, _) = channel::<u32>(64, OverflowPolicy::DropNewest);
/// # drop((jobs, requests, ticks, events));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowPolicy {
    /// `send`/`send_blocking` wait for room, up to the timeout if one is given (`None`: forever).
    /// `try_send` never waits and returns [`SendError::Full`].
    Wait(Option<Duration>),
    /// Refuse the item at once: [`SendError::Full`] hands it back.
    Reject,
    /// Evict the oldest queued item to make room; the send succeeds and returns the evicted item.
    DropOldest,
    /// Keep the queue as it is and return the new item as dropped.
    DropNewest,
}

/// A send that did not fail.
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy, SendOutcome};
///
/// let (tx, _rx) = channel(1, OverflowPolicy::DropOldest);
/// assert_eq!(tx.try_send("old"), Ok(SendOutcome::Sent));
/// if let Ok(SendOutcome::Replaced(evicted)) = tx.try_send("new") {
///     assert_eq!(evicted, "old"); // count it, log it, or resend it elsewhere
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome<T> {
    /// Queued.
    Sent,
    /// Queued, and the oldest item was evicted to make room (policy `DropOldest`).
    Replaced(T),
    /// Not queued: the channel was full and the policy is `DropNewest`.
    Dropped(T),
}

/// A send that failed; the item comes back.
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy, SendError};
///
/// let (tx, rx) = channel(1, OverflowPolicy::Reject);
/// tx.try_send(1).unwrap();
/// let err = tx.try_send(2).unwrap_err();
/// assert!(matches!(err, SendError::Full(_)));
/// assert_eq!(err.into_inner(), 2); // nothing is lost
/// drop(rx);
/// assert_eq!(tx.try_send(3), Err(SendError::Closed(3)));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError<T> {
    /// The channel is full (policy `Reject`, or `try_send` under `Wait`).
    #[error("channel full")]
    Full(T),
    /// The channel stayed full for the whole `Wait` timeout.
    #[error("timed out waiting for room in the channel")]
    Timeout(T),
    /// Every receiver is gone.
    #[error("channel closed")]
    Closed(T),
}

impl<T> SendError<T> {
    /// The item that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(t) | Self::Timeout(t) | Self::Closed(t) => t,
        }
    }
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Timeout(_) => "Timeout(..)",
            Self::Closed(_) => "Closed(..)",
        })
    }
}

/// Why `try_recv` returned nothing.
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy, TryRecvError};
///
/// let (tx, rx) = channel::<u8>(1, OverflowPolicy::Reject);
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
/// drop(tx);
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Closed));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing queued right now.
    #[error("channel empty")]
    Empty,
    /// Nothing queued and every sender is gone.
    #[error("channel closed")]
    Closed,
}

/// Why `recv_timeout` returned nothing.
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy, RecvTimeoutError};
/// use std::time::Duration;
///
/// let (_tx, rx) = channel::<u8>(1, OverflowPolicy::Reject);
/// assert_eq!(rx.recv_timeout(Duration::from_millis(1)), Err(RecvTimeoutError::Timeout));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// Nothing arrived in time.
    #[error("timed out waiting for an item")]
    Timeout,
    /// Nothing queued and every sender is gone.
    #[error("channel closed")]
    Closed,
}

/// Counters of a channel, read without locks.
///
/// Every accepted item is received, evicted or still queued:
/// `sent = received + evicted + depth`. Every offered item is accepted, rejected or dropped:
/// `offered = sent + rejected + dropped_newest` (sends to a closed channel are not counted).
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy};
///
/// let (tx, rx) = channel(2, OverflowPolicy::DropOldest);
/// for i in 0..5 {
///     let _ = tx.try_send(i);
/// }
/// rx.try_recv().unwrap();
/// let s = rx.stats();
/// assert_eq!((s.sent, s.received, s.evicted, s.depth), (5, 1, 3, 1));
/// assert_eq!(s.sent, s.received + s.evicted + s.depth as u64);
/// assert_eq!(s.high_water, 2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelStats {
    /// Slots in the queue.
    pub capacity: usize,
    /// Items queued now.
    pub depth: usize,
    /// The deepest the queue has been: exact when it reached capacity, otherwise sampled once per
    /// pass of the senders around the ring (every `capacity` sends) and at every `stats()` call,
    /// so a short peak below capacity may be missed.
    pub high_water: usize,
    /// Items accepted into the queue.
    pub sent: u64,
    /// Items taken out by receivers.
    pub received: u64,
    /// Items evicted by `DropOldest`.
    pub evicted: u64,
    /// Items refused by `DropNewest`.
    pub dropped_newest: u64,
    /// Items refused with [`SendError::Full`] or [`SendError::Timeout`].
    pub rejected: u64,
    /// Sends that had to block for room (a brief spin before blocking is not counted).
    pub send_waits: u64,
    /// Total time sends spent blocked waiting for room.
    pub send_wait: Duration,
}

struct Shared<T> {
    ring: Ring<T>,
    policy: OverflowPolicy,
    senders: AtomicUsize,
    receivers: AtomicUsize,
    /// Receivers waiting for an item.
    recv_waiters: Waiters,
    /// Senders waiting for room (policy `Wait`).
    send_waiters: Waiters,
    counters: Padded<Counters>,
    clock: MonotonicClock,
}

#[derive(Default)]
struct Counters {
    high_water: AtomicUsize,
    dropped_newest: AtomicU64,
    rejected: AtomicU64,
    send_waits: AtomicU64,
    send_wait_ns: AtomicU64,
}

/// Creates a channel of `capacity` items (at least 1) with the given overflow policy.
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy};
/// use std::time::Duration;
///
/// let (tx, rx) = channel::<u32>(1024, OverflowPolicy::Wait(Some(Duration::from_secs(5))));
/// std::thread::spawn(move || for i in 0..10 { tx.send_blocking(i).unwrap(); });
/// let mut got = vec![];
/// while let Some(i) = rx.recv_blocking() {
///     got.push(i);
/// }
/// assert_eq!(got, (0..10).collect::<Vec<_>>());
/// ```
pub fn channel<T>(capacity: usize, policy: OverflowPolicy) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        ring: Ring::new(capacity),
        policy,
        senders: AtomicUsize::new(1),
        receivers: AtomicUsize::new(1),
        recv_waiters: Waiters::default(),
        send_waiters: Waiters::default(),
        counters: Padded(Counters::default()),
        clock: MonotonicClock::new(),
    });
    (Sender { shared: shared.clone() }, Receiver { shared })
}

/// The sending half; clone it for more producers.
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy};
///
/// let (tx, rx) = channel(16, OverflowPolicy::Wait(None));
/// let handles: Vec<_> = (0..4)
///     .map(|i| {
///         let tx = tx.clone();
///         std::thread::spawn(move || tx.send_blocking(i).unwrap())
///     })
///     .collect();
/// drop(tx);
/// handles.into_iter().for_each(|h| drop(h.join()));
/// let mut got: Vec<i32> = std::iter::from_fn(|| rx.recv_blocking()).collect();
/// got.sort();
/// assert_eq!(got, [0, 1, 2, 3]);
/// ```
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

/// The receiving half; clone it for more consumers (each item goes to one of them).
///
/// ```
/// use spillway::channel::{channel, OverflowPolicy};
///
/// let (tx, rx) = channel(8, OverflowPolicy::Reject);
/// let rx2 = rx.clone();
/// tx.try_send('a').unwrap();
/// tx.try_send('b').unwrap();
/// assert_eq!((rx.try_recv(), rx2.try_recv()), (Ok('a'), Ok('b')));
/// ```
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

/// Spins, then yields, before a caller parks: on a busy channel the other side usually acts
/// within microseconds, and a park/unpark pair costs more than that.
struct Backoff(u32);

impl Backoff {
    #[cfg(not(loom))]
    const SPIN: u32 = 6;
    #[cfg(not(loom))]
    const YIELD: u32 = 10;
    // Under loom every spin is a scheduling point: keep the model small.
    #[cfg(loom)]
    const SPIN: u32 = 0;
    #[cfg(loom)]
    const YIELD: u32 = 1;

    /// Waits a little; `false` once it is time to park.
    fn snooze(&mut self) -> bool {
        if self.0 <= Self::SPIN {
            for _ in 0..(1 << self.0) {
                crate::sync::spin_loop();
            }
        } else if self.0 <= Self::YIELD {
            crate::sync::thread::yield_now();
        } else {
            return false;
        }
        self.0 += 1;
        true
    }
}

impl<T> Shared<T> {
    #[inline]
    fn receivers_gone(&self) -> bool {
        self.receivers.load(Ordering::SeqCst) == 0
    }

    #[inline]
    fn after_push(&self, new_lap: bool) {
        // Reading the depth means reading `head`, the receivers' hottest line: doing it on every
        // send slows both sides down (2-3x on SPSC), so the high-water mark is sampled once per
        // pass around the ring (and set exactly when the ring is full).
        if new_lap {
            self.sample_depth();
        }
        self.recv_waiters.notify_one();
    }

    #[cold]
    #[inline(never)]
    fn sample_depth(&self) {
        self.counters.high_water.fetch_max(self.ring.len(), Ordering::Relaxed);
    }

    /// One non-waiting attempt, applying the overflow policy.
    #[inline]
    fn try_send(&self, item: T) -> Result<SendOutcome<T>, SendError<T>> {
        if self.receivers_gone() {
            return Err(SendError::Closed(item));
        }
        if self.policy == OverflowPolicy::DropOldest {
            // Push, evicting the oldest item in the same step if the ring is full.
            return Ok(match self.ring.push_or_replace(item) {
                None => {
                    self.after_push(false);
                    SendOutcome::Sent
                }
                Some(old) => {
                    // Full before and after: receivers are not waiting.
                    self.mark_full();
                    SendOutcome::Replaced(old)
                }
            });
        }
        match self.ring.push(item) {
            Ok(new_lap) => {
                self.after_push(new_lap);
                Ok(SendOutcome::Sent)
            }
            Err(item) => {
                self.mark_full();
                if self.policy == OverflowPolicy::DropNewest {
                    self.counters.dropped_newest.fetch_add(1, Ordering::Relaxed);
                    Ok(SendOutcome::Dropped(item))
                } else {
                    Err(SendError::Full(item))
                }
            }
        }
    }

    /// The queue is at capacity: that is its high-water mark (written once, read after).
    #[inline]
    fn mark_full(&self) {
        let high = &self.counters.high_water;
        if high.load(Ordering::Relaxed) != self.ring.capacity() {
            high.store(self.ring.capacity(), Ordering::Relaxed);
        }
    }

    fn reject(&self, e: SendError<T>) -> SendError<T> {
        if matches!(e, SendError::Full(_) | SendError::Timeout(_)) {
            self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        }
        e
    }

    fn record_wait(&self, since: u64) {
        let waited = self.clock.now().saturating_sub(since);
        self.counters.send_waits.fetch_add(1, Ordering::Relaxed);
        self.counters.send_wait_ns.fetch_add(waited, Ordering::Relaxed);
    }

    #[inline(always)]
    fn try_recv(&self) -> Result<T, TryRecvError> {
        match self.ring.pop() {
            Some(v) => {
                self.send_waiters.notify_one();
                Ok(v)
            }
            None if self.senders.load(Ordering::SeqCst) == 0 => {
                // The last sender may have pushed just before leaving.
                self.ring.pop().ok_or(TryRecvError::Closed)
            }
            None => Err(TryRecvError::Empty),
        }
    }

    /// Blocks for an item until `deadline` (clock nanoseconds).
    fn recv_until(&self, deadline: Option<u64>) -> Result<T, RecvTimeoutError> {
        let mut backoff = Backoff(0);
        loop {
            match self.try_recv() {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Closed) => return Err(RecvTimeoutError::Closed),
                Err(TryRecvError::Empty) => {}
            }
            if backoff.snooze() {
                continue;
            }
            let mut key = None;
            self.recv_waiters.register(&mut key, &thread_waker());
            let got = self.try_recv();
            let in_time = got.is_ok() || park_until(deadline, || self.clock.now());
            if !self.recv_waiters.unregister(&mut key) && got.is_ok() {
                // We were picked by a notify but served ourselves: pass the wake-up on.
                self.recv_waiters.notify_one();
            }
            match got {
                Ok(v) => return Ok(v),
                Err(TryRecvError::Closed) => return Err(RecvTimeoutError::Closed),
                Err(TryRecvError::Empty) if !in_time => {
                    return self.try_recv().map_err(|e| match e {
                        TryRecvError::Empty => RecvTimeoutError::Timeout,
                        TryRecvError::Closed => RecvTimeoutError::Closed,
                    });
                }
                Err(TryRecvError::Empty) => backoff = Backoff(Backoff::YIELD),
            }
        }
    }

    fn stats(&self) -> ChannelStats {
        let c = &self.counters;
        let (pushed, popped) = self.ring.totals();
        let evicted = self.ring.evicted();
        let depth = self.ring.len();
        ChannelStats {
            capacity: self.ring.capacity(),
            depth,
            high_water: c.high_water.load(Ordering::Relaxed).max(depth),
            sent: pushed,
            received: popped.saturating_sub(evicted),
            evicted,
            dropped_newest: c.dropped_newest.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            send_waits: c.send_waits.load(Ordering::Relaxed),
            send_wait: Duration::from_nanos(c.send_wait_ns.load(Ordering::Relaxed)),
        }
    }
}

impl<T> Sender<T> {
    /// Sends without waiting, applying the policy when full (`Wait` counts as `Reject` here).
    ///
    /// ```
    /// use spillway::channel::{channel, OverflowPolicy, SendOutcome};
    ///
    /// let (tx, rx) = channel(1, OverflowPolicy::DropNewest);
    /// assert_eq!(tx.try_send(1), Ok(SendOutcome::Sent));
    /// assert_eq!(tx.try_send(2), Ok(SendOutcome::Dropped(2)));
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// ```
    #[inline]
    pub fn try_send(&self, item: T) -> Result<SendOutcome<T>, SendError<T>> {
        self.shared.try_send(item).map_err(|e| self.shared.reject(e))
    }

    /// Sends, blocking the thread while the channel is full if the policy is `Wait`.
    ///
    /// ```
    /// use spillway::channel::{channel, OverflowPolicy, SendError};
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = channel(1, OverflowPolicy::Wait(Some(Duration::from_millis(10))));
    /// tx.send_blocking(1).unwrap();
    /// assert_eq!(tx.send_blocking(2), Err(SendError::Timeout(2)));
    /// assert_eq!(tx.stats().send_waits, 1);
    /// drop(rx);
    /// ```
    pub fn send_blocking(&self, item: T) -> Result<SendOutcome<T>, SendError<T>> {
        let shared = &*self.shared;
        let OverflowPolicy::Wait(timeout) = shared.policy else { return self.try_send(item) };
        let mut item = match shared.try_send(item) {
            Err(SendError::Full(item)) => item,
            other => return other,
        };
        // A short spin first: on a busy channel room appears within microseconds. Only a send
        // that has to block reads the clock and counts as a wait.
        let mut backoff = Backoff(0);
        while backoff.snooze() {
            item = match shared.try_send(item) {
                Err(SendError::Full(item)) => item,
                other => return other,
            };
        }
        let start = shared.clock.now();
        let deadline = timeout.map(|t| start.saturating_add(nanos(t)));
        let result = loop {
            let mut key = None;
            shared.send_waiters.register(&mut key, &thread_waker());
            item = match shared.try_send(item) {
                Err(SendError::Full(item)) => item,
                other => {
                    if !shared.send_waiters.unregister(&mut key) {
                        shared.send_waiters.notify_one();
                    }
                    break other;
                }
            };
            let in_time = park_until(deadline, || shared.clock.now());
            shared.send_waiters.unregister(&mut key);
            item = match shared.try_send(item) {
                Err(SendError::Full(item)) if !in_time => break Err(SendError::Timeout(item)),
                Err(SendError::Full(item)) => item,
                other => break other,
            };
        };
        shared.record_wait(start);
        result.map_err(|e| shared.reject(e))
    }

    /// Sends, waiting asynchronously while the channel is full if the policy is `Wait`.
    ///
    /// Cancel-safe in this sense: if the future is dropped while waiting, its item is dropped
    /// with it and was never queued.
    ///
    /// ```
    /// use spillway::channel::{channel, OverflowPolicy, SendOutcome};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let (tx, rx) = channel(1, OverflowPolicy::Wait(None));
    /// tx.send(1).await.unwrap();
    /// let consumer = tokio::spawn(async move { (rx.recv().await, rx.recv().await) });
    /// assert_eq!(tx.send(2).await.unwrap(), SendOutcome::Sent); // waits until 1 is taken
    /// assert_eq!(consumer.await.unwrap(), (Some(1), Some(2)));
    /// # });
    /// ```
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn send(&self, item: T) -> Result<SendOutcome<T>, SendError<T>> {
        let shared = &*self.shared;
        let OverflowPolicy::Wait(timeout) = shared.policy else { return self.try_send(item) };
        let item = match shared.try_send(item) {
            Err(SendError::Full(item)) => item,
            other => return other.map_err(|e| shared.reject(e)),
        };
        let mut pending = Some(item);
        // Set when the send first has to wait: only waiting sends read the clock.
        let mut blocked_since = None;
        let mut waiter = WaitGuard { waiters: &shared.send_waiters, key: None };
        let wait = std::future::poll_fn(|cx| {
            let Some(item) = pending.take() else { return Poll::Ready(None) };
            let item = match shared.try_send(item) {
                Err(SendError::Full(item)) => item,
                other => return Poll::Ready(Some(other)),
            };
            waiter.waiters.register(&mut waiter.key, cx.waker());
            match shared.try_send(item) {
                Err(SendError::Full(item)) => {
                    pending = Some(item);
                    blocked_since.get_or_insert_with(|| shared.clock.now());
                    Poll::Pending
                }
                other => Poll::Ready(Some(other)),
            }
        });
        let outcome = match timeout {
            None => wait.await,
            Some(t) => tokio::time::timeout(t, wait).await.unwrap_or(None),
        };
        drop(waiter);
        if let Some(start) = blocked_since {
            shared.record_wait(start);
        }
        let result = match (outcome, pending) {
            (Some(result), _) => result,
            (None, Some(item)) => Err(SendError::Timeout(item)),
            (None, None) => unreachable!("the send future holds its item until it resolves"),
        };
        result.map_err(|e| shared.reject(e))
    }

    /// Counters and depth.
    pub fn stats(&self) -> ChannelStats {
        self.shared.stats()
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.ring.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots in the queue.
    pub fn capacity(&self) -> usize {
        self.shared.ring.capacity()
    }

    /// Whether every receiver is gone (sends will fail with [`SendError::Closed`]).
    pub fn is_closed(&self) -> bool {
        self.shared.receivers_gone()
    }

    /// The overflow policy.
    pub fn policy(&self) -> OverflowPolicy {
        self.shared.policy
    }
}

impl<T> Receiver<T> {
    /// Takes the oldest item without waiting.
    ///
    /// ```
    /// use spillway::channel::{channel, OverflowPolicy, TryRecvError};
    ///
    /// let (tx, rx) = channel(4, OverflowPolicy::Reject);
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    /// tx.try_send(7).unwrap();
    /// drop(tx);
    /// assert_eq!(rx.try_recv(), Ok(7)); // drained first…
    /// assert_eq!(rx.try_recv(), Err(TryRecvError::Closed)); // …then closed
    /// ```
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        self.shared.try_recv()
    }

    /// Takes the oldest item, blocking the thread until one arrives; `None` once every sender is
    /// gone and the queue is drained.
    pub fn recv_blocking(&self) -> Option<T> {
        self.shared.recv_until(None).ok()
    }

    /// Like [`recv_blocking`](Self::recv_blocking), giving up after `timeout`.
    ///
    /// ```
    /// use spillway::channel::{channel, OverflowPolicy, RecvTimeoutError};
    /// use std::time::Duration;
    ///
    /// let (tx, rx) = channel::<u8>(4, OverflowPolicy::Reject);
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// drop(tx);
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Closed));
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        let deadline = self.shared.clock.now().saturating_add(nanos(timeout));
        self.shared.recv_until(Some(deadline))
    }

    /// Takes the oldest item, waiting asynchronously; `None` once every sender is gone and the
    /// queue is drained. Cancel-safe: a dropped `recv` future never loses an item.
    ///
    /// ```
    /// use spillway::channel::{channel, OverflowPolicy};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let (tx, rx) = channel(8, OverflowPolicy::Reject);
    /// tokio::spawn(async move { tx.try_send("hello").unwrap(); });
    /// assert_eq!(rx.recv().await, Some("hello"));
    /// assert_eq!(rx.recv().await, None);
    /// # });
    /// ```
    #[cfg(not(loom))]
    pub async fn recv(&self) -> Option<T> {
        let shared = &*self.shared;
        let mut waiter = WaitGuard { waiters: &shared.recv_waiters, key: None };
        std::future::poll_fn(|cx| {
            match shared.try_recv() {
                Ok(v) => return Poll::Ready(Some(v)),
                Err(TryRecvError::Closed) => return Poll::Ready(None),
                Err(TryRecvError::Empty) => {}
            }
            waiter.waiters.register(&mut waiter.key, cx.waker());
            match shared.try_recv() {
                Ok(v) => Poll::Ready(Some(v)),
                Err(TryRecvError::Closed) => Poll::Ready(None),
                Err(TryRecvError::Empty) => Poll::Pending,
            }
        })
        .await
    }

    /// Counters and depth.
    pub fn stats(&self) -> ChannelStats {
        self.shared.stats()
    }

    /// Items queued now.
    pub fn len(&self) -> usize {
        self.shared.ring.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes an async waiter when its future ends or is dropped; if a notify had already picked it,
/// passes the wake-up on so that no other waiter misses it.
#[cfg(not(loom))]
struct WaitGuard<'a> {
    waiters: &'a Waiters,
    key: Option<u64>,
}

#[cfg(not(loom))]
impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.key.is_some() && !self.waiters.unregister(&mut self.key) {
            self.waiters.notify_one();
        }
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Self { shared: self.shared.clone() }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.recv_waiters.notify_all();
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.shared.receivers.fetch_add(1, Ordering::Relaxed);
        Self { shared: self.shared.clone() }
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        if self.shared.receivers.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.send_waiters.notify_all();
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("policy", &self.shared.policy).field("stats", &self.stats()).finish()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").field("stats", &self.stats()).finish()
    }
}
