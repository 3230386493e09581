//! Producer-side backpressure, independent of any broker: a bounded publish buffer in front of a
//! bounded window of unconfirmed publishes.
//!
//! [`Publisher::publish`] puts a message in a buffer of fixed capacity and waits while it is full;
//! [`Publisher::try_publish`] hands the message back instead. One task per publisher takes
//! messages from the buffer and sends them, holding at most `max_unconfirmed` sent messages
//! whose broker confirm has not come back: when the broker slows down, the window fills, the
//! buffer fills, and the producer waits. Nothing between the producer and the broker grows.

use crate::Error;
use bytes::Bytes;
use spillway::channel::{OverflowPolicy, Receiver, SendError, Sender, channel};
use spillway::clock::MonotonicClock;
use spillway::limit::ConcurrencyLimiter;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::Notify;
use tokio::task::JoinSet;

/// How a [`Publisher`] bounds itself.
///
/// ```
/// use spillway_queue::PublishConfig;
///
/// let config = PublishConfig::new("orders").buffer(1024).max_unconfirmed(128);
/// assert_eq!((config.buffer_capacity(), config.unconfirmed_bound()), (1024, 128));
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct PublishConfig {
    name: String,
    buffer: usize,
    max_unconfirmed: usize,
}

impl PublishConfig {
    /// A publisher called `name` (its metrics' `publisher` label): a buffer of 256 and at most
    /// 64 unconfirmed publishes by default.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), buffer: 256, max_unconfirmed: 64 }
    }

    /// The publish buffer's capacity (at least 1).
    pub fn buffer(mut self, capacity: usize) -> Self {
        self.buffer = capacity.max(1);
        self
    }

    /// At most this many messages sent and not yet confirmed by the broker (at least 1).
    pub fn max_unconfirmed(mut self, n: usize) -> Self {
        self.max_unconfirmed = n.max(1);
        self
    }

    /// The configured buffer capacity.
    pub fn buffer_capacity(&self) -> usize {
        self.buffer
    }

    /// The configured bound on unconfirmed publishes.
    pub fn unconfirmed_bound(&self) -> usize {
        self.max_unconfirmed
    }
}

/// A publisher's metrics at one moment ([`Publisher::snapshot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishSnapshot {
    /// Messages waiting in the buffer.
    pub buffered: u64,
    /// Messages sent and not yet confirmed.
    pub unconfirmed: u64,
    /// The most messages ever unconfirmed at once.
    pub peak_unconfirmed: u64,
    /// Messages accepted into the buffer.
    pub published_total: u64,
    /// Messages the broker confirmed.
    pub confirmed_total: u64,
    /// Messages the broker refused (nack) or that were lost with the connection.
    pub failed_total: u64,
    /// `try_publish` calls refused because the buffer was full.
    pub rejected_total: u64,
}

#[derive(Debug)]
pub(crate) struct PublishStats {
    name: String,
    /// Messages the task has taken from the buffer (`published_total - taken` are buffered).
    taken: AtomicU64,
    unconfirmed: AtomicU64,
    peak_unconfirmed: AtomicU64,
    published_total: AtomicU64,
    confirmed_total: AtomicU64,
    failed_total: AtomicU64,
    rejected_total: AtomicU64,
    closed: AtomicBool,
    settled: Notify,
}

impl PublishStats {
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn snapshot(&self) -> PublishSnapshot {
        PublishSnapshot {
            // Published read before taken: a stale pair reads low, never high.
            buffered: {
                let published = self.published_total.load(Ordering::Acquire);
                published.saturating_sub(self.taken.load(Ordering::Acquire))
            },
            unconfirmed: self.unconfirmed.load(Ordering::Relaxed),
            peak_unconfirmed: self.peak_unconfirmed.load(Ordering::Relaxed),
            published_total: self.published_total.load(Ordering::Acquire),
            confirmed_total: self.confirmed_total.load(Ordering::Acquire),
            failed_total: self.failed_total.load(Ordering::Acquire),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
        }
    }

    fn settle(&self, confirmed: bool) {
        self.unconfirmed.fetch_sub(1, Ordering::Relaxed);
        let counter = if confirmed { &self.confirmed_total } else { &self.failed_total };
        counter.fetch_add(1, Ordering::Release);
        self.settled.notify_waiters();
    }
}

/// The producer's handle: clones share one buffer.
///
/// Made by an adapter (`NatsPublisher::spawn`, `RabbitPublisher::spawn`), or by
/// [`Publisher::spawn`] over any broker's send-and-confirm function:
///
/// ```
/// use bytes::Bytes;
/// use spillway_queue::{PublishConfig, Publisher};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // A pretend broker that confirms each message 1 ms after it is sent.
/// let (publisher, task) = Publisher::spawn(PublishConfig::new("demo").buffer(4).max_unconfirmed(2), |_payload: Bytes| async {
///     Ok(async {
///         tokio::time::sleep(std::time::Duration::from_millis(1)).await;
///         Ok(true)
///     })
/// });
/// for i in 0..20u32 {
///     publisher.publish(Bytes::from(i.to_string())).await.unwrap(); // waits while 4 are buffered
/// }
/// publisher.flush().await;
/// let s = publisher.snapshot();
/// assert_eq!((s.confirmed_total, s.unconfirmed), (20, 0));
/// assert!(s.peak_unconfirmed <= 2);
/// drop(publisher);
/// task.await.unwrap().unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct Publisher {
    tx: Sender<Bytes>,
    stats: Arc<PublishStats>,
}

/// A message the publisher did not take; it comes back.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The buffer is full (`try_publish` only).
    #[error("publish buffer full")]
    Full(Bytes),
    /// The publisher's task ended (its connection failed, or every handle was dropped).
    #[error("publisher closed")]
    Closed(Bytes),
}

impl PublishError {
    /// The message that was not taken.
    pub fn into_inner(self) -> Bytes {
        match self {
            Self::Full(b) | Self::Closed(b) => b,
        }
    }
}

impl fmt::Debug for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Closed(_) => "Closed(..)",
        })
    }
}

impl Publisher {
    /// Starts a publisher's task over `send`: called once per message in buffer order, it sends
    /// the message and returns a future of its confirm (`Ok(true)` acked, `Ok(false)` nacked).
    /// The task ends with the first send error, or when every [`Publisher`] handle is dropped and
    /// the buffer is drained and confirmed.
    pub fn spawn<S, SF, C>(
        config: PublishConfig,
        send: S,
    ) -> (Self, tokio::task::JoinHandle<Result<(), Error>>)
    where
        S: FnMut(Bytes) -> SF + Send + 'static,
        SF: Future<Output = Result<C, Error>> + Send + 'static,
        C: Future<Output = Result<bool, Error>> + Send + 'static,
    {
        let (tx, rx) = channel(config.buffer, OverflowPolicy::Wait(None));
        let stats = Arc::new(PublishStats {
            name: config.name,
            taken: AtomicU64::new(0),
            unconfirmed: AtomicU64::new(0),
            peak_unconfirmed: AtomicU64::new(0),
            published_total: AtomicU64::new(0),
            confirmed_total: AtomicU64::new(0),
            failed_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            settled: Notify::new(),
        });
        let task = tokio::spawn(drive(rx, stats.clone(), config.max_unconfirmed, send));
        (Self { tx, stats }, task)
    }

    /// Puts `payload` in the buffer, waiting while the buffer is full.
    pub async fn publish(&self, payload: Bytes) -> Result<(), PublishError> {
        match self.tx.send(payload).await {
            Ok(_) => {
                self.accepted();
                Ok(())
            }
            Err(e) => Err(PublishError::Closed(e.into_inner())),
        }
    }

    /// Puts `payload` in the buffer if there is room; hands it back otherwise.
    pub fn try_publish(&self, payload: Bytes) -> Result<(), PublishError> {
        match self.tx.try_send(payload) {
            Ok(_) => {
                self.accepted();
                Ok(())
            }
            Err(SendError::Full(b)) => {
                self.stats.rejected_total.fetch_add(1, Ordering::Relaxed);
                Err(PublishError::Full(b))
            }
            Err(e) => Err(PublishError::Closed(e.into_inner())),
        }
    }

    /// Counted after the send (the task may take it first: `buffered` saturates at 0 then).
    fn accepted(&self) {
        self.stats.published_total.fetch_add(1, Ordering::Release);
    }

    /// Waits until every message accepted so far is confirmed or failed (or the task ended).
    pub async fn flush(&self) {
        loop {
            let notified = self.stats.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let s = self.stats.snapshot();
            if s.confirmed_total + s.failed_total >= s.published_total
                || self.stats.closed.load(Ordering::Acquire)
            {
                return;
            }
            notified.await;
        }
    }

    /// The counters and gauges, read without locks.
    pub fn snapshot(&self) -> PublishSnapshot {
        self.stats.snapshot()
    }

    pub(crate) fn stats_handle(&self) -> Arc<PublishStats> {
        self.stats.clone()
    }
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("name", &self.stats.name)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// Marks the publisher closed when its task ends, however it ends.
struct CloseOnDrop(Arc<PublishStats>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.settled.notify_waiters();
    }
}

async fn drive<S, SF, C>(
    rx: Receiver<Bytes>,
    stats: Arc<PublishStats>,
    max_unconfirmed: usize,
    mut send: S,
) -> Result<(), Error>
where
    S: FnMut(Bytes) -> SF,
    SF: Future<Output = Result<C, Error>>,
    C: Future<Output = Result<bool, Error>> + Send + 'static,
{
    let _close = CloseOnDrop(stats.clone());
    let window =
        ConcurrencyLimiter::builder_with_clock(max_unconfirmed, MonotonicClock::new()).queue(1).build();
    let mut confirms = JoinSet::new();
    let mut result = Ok(());
    loop {
        // Counted as taken before the receive, so that `buffered` never reads above the
        // capacity (it may read one below while the receive completes).
        stats.taken.fetch_add(1, Ordering::Release);
        let Some(payload) = rx.recv().await else {
            stats.taken.fetch_sub(1, Ordering::Release);
            break;
        };
        let permit = loop {
            match window.acquire_owned().await {
                Ok(p) => break p,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            }
        };
        let unconfirmed = stats.unconfirmed.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_unconfirmed.fetch_max(unconfirmed, Ordering::Relaxed);
        while confirms.try_join_next().is_some() {}
        match send(payload).await {
            Ok(confirm) => {
                let stats = stats.clone();
                confirms.spawn(async move {
                    let acked = matches!(confirm.await, Ok(true));
                    // Uncounted before the window slot is given back, so the count never
                    // exceeds the window.
                    stats.settle(acked);
                    drop(permit);
                });
            }
            Err(e) => {
                stats.settle(false);
                result = Err(e);
                break;
            }
        }
    }
    // Messages still buffered after a failure are lost with the task: count them.
    drop(rx);
    while confirms.join_next().await.is_some() {}
    let left = stats.snapshot().buffered;
    if left > 0 {
        stats.taken.fetch_add(left, Ordering::Release);
        stats.failed_total.fetch_add(left, Ordering::Release);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn try_publish_hands_the_message_back_when_full() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let g = gate.clone();
        let (p, task) = Publisher::spawn(PublishConfig::new("t").buffer(2).max_unconfirmed(1), move |_b| {
            let g = g.clone();
            async move {
                Ok(async move {
                    g.acquire().await.map(|p| p.forget()).is_ok().then_some(true).ok_or(Error::closed("test"))
                })
            }
        });
        // One goes out (unconfirmed), one waits in the task for the window, two wait in the
        // buffer; the fifth is refused.
        for i in 0..4u8 {
            p.publish(Bytes::from(vec![i])).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let back = p.try_publish(Bytes::from_static(b"x")).unwrap_err();
        assert!(matches!(back, PublishError::Full(_)));
        assert_eq!(back.into_inner(), Bytes::from_static(b"x"));
        let s = p.snapshot();
        assert_eq!((s.unconfirmed, s.buffered, s.rejected_total, s.published_total), (1, 2, 1, 4));
        gate.add_permits(4);
        p.flush().await;
        let s = p.snapshot();
        assert_eq!((s.confirmed_total, s.unconfirmed, s.buffered, s.peak_unconfirmed), (4, 0, 0, 1));
        drop(p);
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_send_error_ends_the_task_and_counts_the_rest_as_failed() {
        let mut n = 0;
        let (p, task) = Publisher::spawn(PublishConfig::new("t").buffer(8).max_unconfirmed(8), move |_b| {
            n += 1;
            let fail = n == 3;
            async move { if fail { Err(Error::closed("send")) } else { Ok(async { Ok(true) }) } }
        });
        for _ in 0..5 {
            p.publish(Bytes::new()).await.unwrap();
        }
        assert!(task.await.unwrap().is_err());
        p.flush().await;
        let s = p.snapshot();
        assert_eq!((s.confirmed_total, s.failed_total, s.buffered), (2, 3, 0));
        assert!(matches!(p.publish(Bytes::new()).await, Err(PublishError::Closed(_))));
    }
}
