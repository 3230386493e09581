//! Backpressure strategies for streams, for consumers that cannot take everything a producer
//! offers: a UI table updated 100,000 times a second, a chart, a slow client.
//!
//! Each adapter sits directly over a *hot* source (a socket, a channel's receiver, a feed) and
//! decides, with bounded memory, what happens to the items that piled up in it while the
//! consumer was busy. Whenever the adapter is polled it first drains what the source has ready
//! (at most [`DRAIN_BUDGET`] items per poll, so that a source that is always ready cannot hold
//! the task), then answers by its strategy:
//!
//! | adapter | the consumer gets | memory |
//! | --- | --- | --- |
//! | [`buffer(n, Overflow::Block)`](BackpressureExt::buffer) | everything, in order; the source is not read past `n` queued | `n` items |
//! | [`buffer(n, Overflow::DropOldest)`](BackpressureExt::buffer) | the newest `n` of what piled up | `n` items |
//! | [`buffer(n, Overflow::DropNewest)`](BackpressureExt::buffer) | the oldest `n` of what piled up | `n` items |
//! | [`on_backpressure_latest`](BackpressureExt::on_backpressure_latest) | the newest item, or the next one | 1 item |
//! | [`on_backpressure_drop`](BackpressureExt::on_backpressure_drop) | only items produced while it waits | none |
//! | [`sample(period)`](BackpressureExt::sample) | the newest item of each period, at its end | 1 item |
//! | [`throttle(quota)`](BackpressureExt::throttle) | everything, paced to the quota (never dropped) | 1 item |
//! | [`batch(n, max_wait)`](BackpressureExt::batch) | everything, in `Vec`s of up to `n`, or fewer after `max_wait` | `n` items |
//!
//! The lossy adapters count what they dropped ([`Dropped::dropped`]). Time is tokio's, so tests
//! with a paused clock drive them exactly. tokio's own channels hand out at most 128 items per
//! task poll (their cooperative budget) and then say "not ready": the adapters take that as the
//! end of what piled up.
//!
//! ```
//! use spillway::stream::{BackpressureExt, Stream};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A price feed far faster than a screen refreshes: show the newest price 60 times a second.
//! let feed = spillway::stream::iter(0..100_000u32);
//! let mut screen = feed.sample(Duration::from_millis(16));
//! let shown = std::future::poll_fn(|cx| std::pin::Pin::new(&mut screen).poll_next(cx)).await;
//! assert_eq!(shown, Some(99_999)); // all of it was ready at once: the newest wins
//! # }
//! ```

use crate::clock::Clock;
use crate::rate::{Gcra, Quota, RateLimit, RateLimiter};
pub use futures_core::Stream;
use pin_project_lite::pin_project;
use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// The most items an adapter takes from its source in one poll.
pub const DRAIN_BUDGET: usize = 1024;

/// What [`buffer`](BackpressureExt::buffer) does when its queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Stop reading the source, so that its own bound (a channel's capacity, a socket's TCP
    /// window) pushes back on the producer. Nothing is lost and order is kept.
    Block,
    /// Evict the oldest queued item: live data such as tickers and metrics.
    DropOldest,
    /// Drop the new item and keep the queue: ordered events that must not be overwritten.
    DropNewest,
}

/// Counts what a lossy adapter dropped.
pub trait Dropped {
    /// Items taken from the source and never handed to the consumer.
    fn dropped(&self) -> u64;
}

/// The backpressure adapters, for every [`Stream`].
pub trait BackpressureExt: Stream + Sized {
    /// A queue of at most `capacity` items (at least 1) between the source and the consumer,
    /// with `overflow` deciding what a full queue does.
    ///
    /// ```
    /// use spillway::stream::{BackpressureExt, Dropped, Overflow, Stream};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let mut newest = spillway::stream::iter(1..=10).buffer(3, Overflow::DropOldest);
    /// let first = std::future::poll_fn(|cx| std::pin::Pin::new(&mut newest).poll_next(cx)).await;
    /// assert_eq!(first, Some(8)); // 1..=10 were ready at once; 8, 9, 10 were kept
    /// assert_eq!(newest.dropped(), 7);
    /// # }
    /// ```
    fn buffer(self, capacity: usize, overflow: Overflow) -> Buffer<Self> {
        let capacity = capacity.max(1);
        Buffer {
            source: self,
            queue: VecDeque::with_capacity(capacity),
            capacity,
            overflow,
            dropped: 0,
            done: false,
        }
    }

    /// The newest of the items that piled up while the consumer was busy (the older ones are
    /// dropped), or, if none did, the next one produced.
    fn on_backpressure_latest(self) -> Latest<Self> {
        Latest { source: self, dropped: 0, done: false }
    }

    /// Drops every item that piled up while the consumer was busy; the consumer gets the next
    /// item produced after it asks. (A source that is still ready after [`DRAIN_BUDGET`] items
    /// never lets the consumer wait: it gets the last of them.)
    fn on_backpressure_drop(self) -> DropStale<Self> {
        DropStale { source: self, waiting: false, dropped: 0, done: false }
    }

    /// At the end of each `period`, the newest item seen during it, if any; the rest are
    /// dropped. The first period starts now.
    fn sample(self, period: Duration) -> Sample<Self> {
        let period = period.max(Duration::from_micros(1));
        Sample {
            source: self,
            tick: Box::pin(tokio::time::sleep(period)),
            period,
            latest: None,
            dropped: 0,
            done: false,
        }
    }

    /// Every item, no faster than `quota` allows (its burst may pass at once): the source is read
    /// only when an item may go, so the backpressure reaches the producer.
    fn throttle(self, quota: Quota) -> Throttle<Self> {
        Throttle {
            source: self,
            limiter: RateLimiter::with_clock(Gcra::new(quota), TokioClock::new()),
            wait: Box::pin(tokio::time::sleep(Duration::ZERO)),
            held: None,
            done: false,
        }
    }

    /// Items in `Vec`s of up to `max` (at least 1), each sent when full or `max_wait` after its
    /// first item, whichever comes first. Nothing is dropped.
    fn batch(self, max: usize, max_wait: Duration) -> Batch<Self> {
        let max = max.max(1);
        Batch {
            source: self,
            deadline: Box::pin(tokio::time::sleep(max_wait)),
            max_wait,
            max,
            items: Vec::new(),
            done: false,
        }
    }
}

impl<S: Stream> BackpressureExt for S {}

pin_project! {
    /// See [`BackpressureExt::buffer`].
    pub struct Buffer<S: Stream> {
        #[pin]
        source: S,
        queue: VecDeque<S::Item>,
        capacity: usize,
        overflow: Overflow,
        dropped: u64,
        done: bool,
    }
}

impl<S: Stream> Stream for Buffer<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        let mut budget = DRAIN_BUDGET;
        while !*this.done && budget > 0 {
            if *this.overflow == Overflow::Block && this.queue.len() >= *this.capacity {
                break;
            }
            match this.source.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    budget -= 1;
                    if this.queue.len() < *this.capacity {
                        this.queue.push_back(item);
                    } else {
                        *this.dropped += 1;
                        if *this.overflow == Overflow::DropOldest {
                            this.queue.pop_front();
                            this.queue.push_back(item);
                        }
                    }
                }
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => break,
            }
        }
        match this.queue.pop_front() {
            Some(item) => Poll::Ready(Some(item)),
            None if *this.done => Poll::Ready(None),
            // The source returned Pending, so it will wake this task.
            None => Poll::Pending,
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.queue.len(), None)
    }
}

impl<S: Stream> Dropped for Buffer<S> {
    fn dropped(&self) -> u64 {
        self.dropped
    }
}

impl<S: Stream> Buffer<S> {
    /// Items queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

/// Drains what `source` has ready, keeping the newest in `latest`: how many were taken, and
/// whether the source is still ready (the budget ran out).
fn drain_newest<S: Stream>(
    mut source: Pin<&mut S>,
    cx: &mut Context<'_>,
    latest: &mut Option<S::Item>,
    dropped: &mut u64,
    done: &mut bool,
) -> (usize, bool) {
    let mut taken = 0;
    while !*done {
        if taken == DRAIN_BUDGET {
            return (taken, true);
        }
        match source.as_mut().poll_next(cx) {
            Poll::Ready(Some(item)) => {
                taken += 1;
                if latest.replace(item).is_some() {
                    *dropped += 1;
                }
            }
            Poll::Ready(None) => *done = true,
            Poll::Pending => break,
        }
    }
    (taken, false)
}

pin_project! {
    /// See [`BackpressureExt::on_backpressure_latest`].
    pub struct Latest<S: Stream> {
        #[pin]
        source: S,
        dropped: u64,
        done: bool,
    }
}

impl<S: Stream> Stream for Latest<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let mut latest = None;
        drain_newest(this.source, cx, &mut latest, this.dropped, this.done);
        match latest {
            Some(item) => Poll::Ready(Some(item)),
            None if *this.done => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}

impl<S: Stream> Dropped for Latest<S> {
    fn dropped(&self) -> u64 {
        self.dropped
    }
}

pin_project! {
    /// See [`BackpressureExt::on_backpressure_drop`].
    pub struct DropStale<S: Stream> {
        #[pin]
        source: S,
        // The consumer asked and found nothing fresh: what the source yields next is fresh.
        waiting: bool,
        dropped: u64,
        done: bool,
    }
}

impl<S: Stream> Stream for DropStale<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        if *this.waiting && !*this.done {
            match this.source.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    *this.waiting = false;
                    return Poll::Ready(Some(item));
                }
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => return Poll::Pending,
            }
        }
        let mut latest = None;
        let (_, still_ready) = drain_newest(this.source, cx, &mut latest, this.dropped, this.done);
        if still_ready && let Some(item) = latest {
            return Poll::Ready(Some(item));
        }
        if latest.is_some() {
            *this.dropped += 1;
        }
        if *this.done {
            return Poll::Ready(None);
        }
        *this.waiting = true;
        Poll::Pending
    }
}

impl<S: Stream> Dropped for DropStale<S> {
    fn dropped(&self) -> u64 {
        self.dropped
    }
}

pin_project! {
    /// See [`BackpressureExt::sample`].
    pub struct Sample<S: Stream> {
        #[pin]
        source: S,
        // Boxed (once) so that the adapter is Unpin when its source is.
        tick: Pin<Box<Sleep>>,
        period: Duration,
        latest: Option<S::Item>,
        dropped: u64,
        done: bool,
    }
}

impl<S: Stream> Stream for Sample<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let this = self.project();
        let (_, still_ready) = drain_newest(this.source, cx, this.latest, this.dropped, this.done);
        if *this.done {
            // The source ended: what was seen last still goes out, without waiting.
            return Poll::Ready(this.latest.take());
        }
        if still_ready {
            cx.waker().wake_by_ref();
        }
        if this.tick.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let next = this.tick.deadline() + *this.period;
        // A consumer that fell behind by whole periods resumes from now, without a burst.
        this.tick.as_mut().reset(next.max(Instant::now()));
        match this.latest.take() {
            Some(item) => Poll::Ready(Some(item)),
            None => {
                // Nothing in this period: register the next tick.
                let _ = this.tick.as_mut().poll(cx);
                Poll::Pending
            }
        }
    }
}

impl<S: Stream> Dropped for Sample<S> {
    fn dropped(&self) -> u64 {
        self.dropped
    }
}

pin_project! {
    /// See [`BackpressureExt::throttle`].
    pub struct Throttle<S: Stream> {
        #[pin]
        source: S,
        limiter: RateLimiter<Gcra, TokioClock>,
        wait: Pin<Box<Sleep>>,
        held: Option<S::Item>,
        done: bool,
    }
}

impl<S: Stream> Stream for Throttle<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        let mut this = self.project();
        loop {
            if this.held.is_none() {
                if *this.done {
                    return Poll::Ready(None);
                }
                match this.source.as_mut().poll_next(cx) {
                    Poll::Ready(Some(item)) => *this.held = Some(item),
                    Poll::Ready(None) => {
                        *this.done = true;
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            if this.wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let decision = this.limiter.check();
            if decision.allowed {
                return Poll::Ready(this.held.take());
            }
            // A unit request always fits the burst, so the wait is finite; an hour caps it anyway.
            let wait = decision.retry_after.min(Duration::from_secs(3600));
            this.wait.as_mut().reset(Instant::now() + wait);
        }
    }
}

pin_project! {
    /// See [`BackpressureExt::batch`].
    pub struct Batch<S: Stream> {
        #[pin]
        source: S,
        deadline: Pin<Box<Sleep>>,
        max_wait: Duration,
        max: usize,
        items: Vec<S::Item>,
        done: bool,
    }
}

impl<S: Stream> Stream for Batch<S> {
    type Item = Vec<S::Item>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Vec<S::Item>>> {
        let mut this = self.project();
        while !*this.done && this.items.len() < *this.max {
            match this.source.as_mut().poll_next(cx) {
                Poll::Ready(Some(item)) => {
                    if this.items.is_empty() {
                        this.items.reserve_exact(*this.max);
                        this.deadline.as_mut().reset(Instant::now() + *this.max_wait);
                    }
                    this.items.push(item);
                }
                Poll::Ready(None) => *this.done = true,
                Poll::Pending => break,
            }
        }
        if this.items.is_empty() {
            return if *this.done { Poll::Ready(None) } else { Poll::Pending };
        }
        if this.items.len() >= *this.max || *this.done || this.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(std::mem::take(this.items)));
        }
        Poll::Pending
    }
}

/// A stream of the items of an iterator, all ready at once: a stand-in for a fast producer in
/// examples and tests.
pub fn iter<I: IntoIterator>(items: I) -> Iter<I::IntoIter> {
    Iter { items: items.into_iter() }
}

/// See [`iter`].
#[derive(Debug)]
pub struct Iter<I> {
    items: I,
}

impl<I: Iterator + Unpin> Stream for Iter<I> {
    type Item = I::Item;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<I::Item>> {
        Poll::Ready(self.items.next())
    }
}

/// tokio's clock, as a [`Clock`]: a paused test runtime drives it.
#[derive(Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self { origin: Instant::now() }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for TokioClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokioClock")
    }
}

impl Clock for TokioClock {
    fn now(&self) -> u64 {
        u64::try_from(Instant::now().duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }
}

macro_rules! debug_as {
    ($($t:ident),*) => {$(
        impl<S: Stream> fmt::Debug for $t<S> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!("stream::", stringify!($t)))
            }
        }
    )*};
}
debug_as!(Buffer, Latest, DropStale, Sample, Throttle, Batch);
