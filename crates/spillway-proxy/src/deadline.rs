//! HTTP/1.1 connection deadlines, swept by one task per worker instead of a timer per request.
//!
//! hyper's header read timeout arms a boxed tokio timer for every request head, and a route
//! timeout arms another for every upstream answer: each enters and leaves tokio's timer wheel,
//! which cost about a tenth of the proxy's CPU per request. Here a connection carries two
//! deadlines, in ticks of a per-worker coarse clock, set and cleared with plain stores; one task
//! per worker advances the clock every [`TICK`] and sweeps the connections:
//!
//! - while a connection waits for a request head (idle keep-alive, or a slow head), past the
//!   header read timeout it is closed ([`Guarded`]);
//! - while a request waits for its upstream answer, past the route timeout it is woken to answer
//!   504 ([`Deadlines::within`]).
//!
//! A deadline fires between its duration and its duration plus two ticks (20 ms) after it was
//! set. HTTP/2 connections keep tokio's timers: their streams run on tasks of their own.
//!
//! The same registry drains the worker on shutdown ([`Sweeper::drain`]): every connection, of
//! either protocol, is told to finish what it has in flight and close (hyper's graceful
//! shutdown: `Connection: close`, or GOAWAY), and [`Sweeper::drained`] waits for the last one.
//! A flag read on each poll, instead of a shutdown channel polled beside each connection.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

/// The sweep interval and the resolution of every deadline here.
pub(crate) const TICK: Duration = Duration::from_millis(10);

const HEAD: u8 = 1;
const ANSWER: u8 = 2;

/// A worker's coarse clock and the connections whose deadlines it sweeps.
#[derive(Debug, Default)]
pub(crate) struct Sweeper {
    worker: Arc<Worker>,
    /// Live connections, and those closed since the last sweep (dropped at the next one).
    conns: Mutex<Vec<Weak<Deadlines>>>,
}

/// What every connection of a worker reads.
#[derive(Debug, Default)]
struct Worker {
    /// Ticks since the worker started (from 1, so that 0 can mean "no deadline").
    now: AtomicU64,
    /// Shutting down: finish in-flight work and close.
    draining: AtomicBool,
}

impl Sweeper {
    /// Deadlines for a new connection, waiting for its first head for at most `head_timeout`
    /// (zero: no limit).
    pub(crate) fn register(&self, head_timeout: Duration) -> Arc<Deadlines> {
        let d = Arc::new(Deadlines {
            worker: self.worker.clone(),
            head_ticks: if head_timeout.is_zero() { 0 } else { ticks(head_timeout) },
            head_by: AtomicU64::new(0),
            answer_by: AtomicU64::new(0),
            expired: AtomicU8::new(0),
            waker: AtomicWaker::new(),
        });
        d.idle();
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).push(Arc::downgrade(&d));
        d
    }

    /// Advances the clock and sweeps, every tick, for ever (the worker's runtime ends it).
    pub(crate) async fn run(self: Arc<Self>) {
        let start = tokio::time::Instant::now();
        let mut every = tokio::time::interval(TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            let now = 1 + (start.elapsed().as_millis() / TICK.as_millis()) as u64;
            self.worker.now.store(now, Relaxed);
            self.sweep(now);
        }
    }

    /// Tells every connection, present and future, to finish its in-flight work and close.
    pub(crate) fn drain(&self) {
        self.worker.draining.store(true, Relaxed);
        for d in self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter().filter_map(Weak::upgrade) {
            d.waker.wake();
        }
    }

    /// Resolves once every registered connection has closed.
    pub(crate) async fn drained(&self) {
        while self.conns.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|w| w.strong_count() > 0) {
            tokio::time::sleep(TICK).await;
        }
    }

    fn sweep(&self, now: u64) {
        self.conns.lock().unwrap_or_else(|e| e.into_inner()).retain(|w| match w.upgrade() {
            Some(d) => {
                d.check(now);
                true
            }
            None => false,
        });
    }
}

/// Whole ticks covering `d`, plus one for the clock's staleness.
fn ticks(d: Duration) -> u64 {
    (d.as_nanos().div_ceil(TICK.as_nanos()) as u64).saturating_add(1)
}

/// One connection's deadlines (HTTP/1.1; an HTTP/2 connection uses only the drain). Its
/// requests run one at a time, on its task.
#[derive(Debug)]
pub(crate) struct Deadlines {
    worker: Arc<Worker>,
    head_ticks: u64,
    /// Tick by which the next request head must have arrived; 0 while a request is in flight.
    head_by: AtomicU64,
    /// Tick by which the upstream must have answered; 0 when not waiting for one.
    answer_by: AtomicU64,
    /// Bits the sweeper set (`HEAD`, `ANSWER`); checked against the deadline again when read.
    expired: AtomicU8,
    /// The connection's task.
    waker: AtomicWaker,
}

impl Deadlines {
    /// A request head arrived: no head deadline until its response has gone.
    pub(crate) fn busy(&self) {
        self.head_by.store(0, Relaxed);
    }

    /// The response has gone (or the connection is new): the next head is due within the
    /// header read timeout.
    pub(crate) fn idle(&self) {
        if self.head_ticks != 0 {
            self.head_by.store(self.worker.now.load(Relaxed).max(1) + self.head_ticks, Relaxed);
        }
    }

    /// The deadline `bit` names.
    fn deadline(&self, bit: u8) -> &AtomicU64 {
        if bit == HEAD { &self.head_by } else { &self.answer_by }
    }

    /// Whether deadline `bit` is set and `now` has reached it.
    fn due(&self, bit: u8, now: u64) -> bool {
        matches!(self.deadline(bit).load(Relaxed), by if by != 0 && now >= by)
    }

    fn check(&self, now: u64) {
        let fired = [HEAD, ANSWER].into_iter().filter(|&bit| self.due(bit, now)).fold(0, |a, b| a | b);
        if fired != 0 {
            self.expired.fetch_or(fired, Relaxed);
            self.waker.wake();
        }
    }

    /// Whether deadline `bit` fired and still holds (it may have been cleared since).
    fn expired(&self, bit: u8) -> bool {
        if self.expired.load(Relaxed) & bit == 0 {
            return false;
        }
        if self.due(bit, self.worker.now.load(Relaxed)) {
            return true;
        }
        self.expired.fetch_and(!bit, Relaxed);
        false
    }

    /// Runs `f` for at most `limit` (then `Err(())`). Polled on the connection's task, which
    /// the sweeper wakes.
    pub(crate) async fn within<F: Future>(&self, limit: Duration, f: F) -> Result<F::Output, ()> {
        struct Clear<'a>(&'a AtomicU64);
        impl Drop for Clear<'_> {
            fn drop(&mut self) {
                self.0.store(0, Relaxed);
            }
        }
        self.answer_by.store(self.worker.now.load(Relaxed).max(1) + ticks(limit), Relaxed);
        let _clear = Clear(&self.answer_by);
        let mut f = std::pin::pin!(f);
        std::future::poll_fn(|cx| match f.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Ok(out)),
            Poll::Pending if self.expired(ANSWER) => Poll::Ready(Err(())),
            Poll::Pending => Poll::Pending,
        })
        .await
    }
}

/// A connection that can be asked to finish its in-flight work and close.
pub(crate) trait Drain: Future {
    /// hyper's graceful shutdown.
    fn drain(self: Pin<&mut Self>);
}

impl<I, S, B> Drain for hyper::server::conn::http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Drain for hyper::server::conn::http2::Connection<I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn drain(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

pin_project_lite::pin_project! {
    /// A connection that ends when its head deadline passes, and drains when its worker does.
    pub(crate) struct Guarded<F> {
        #[pin]
        conn: F,
        deadlines: Arc<Deadlines>,
        draining: bool,
    }
}

impl<F> Guarded<F> {
    pub(crate) fn new(conn: F, deadlines: Arc<Deadlines>) -> Self {
        Self { conn, deadlines, draining: false }
    }
}

impl<F: Drain> Future for Guarded<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let d = &**this.deadlines;
        // On every poll: a wake takes the registered waker, so one registered once would
        // serve the first deadline only. (Registering the same waker again costs no clone.)
        d.waker.register(cx.waker());
        if d.expired(HEAD) {
            tracing::debug!("request head not received within the header read timeout");
            return Poll::Ready(None);
        }
        if !*this.draining && d.worker.draining.load(Relaxed) {
            *this.draining = true;
            this.conn.as_mut().drain();
        }
        this.conn.poll(cx).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in connection: `inner`, noting whether it was asked to drain.
    struct Fake<F> {
        inner: Pin<Box<F>>,
        drained: Arc<AtomicBool>,
    }

    fn fake<F: Future>(inner: F) -> Fake<F> {
        Fake { inner: Box::pin(inner), drained: Arc::default() }
    }

    impl<F: Future> Future for Fake<F> {
        type Output = F::Output;
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
            self.inner.as_mut().poll(cx)
        }
    }

    impl<F: Future> Drain for Fake<F> {
        fn drain(self: Pin<&mut Self>) {
            self.drained.store(true, Relaxed);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_deadline_of_a_connection_wakes_it_not_only_the_first() {
        let sweeper = Arc::new(Sweeper::default());
        tokio::spawn(sweeper.clone().run());
        let d = sweeper.register(Duration::ZERO);
        d.busy();
        let on_conn = d.clone();
        // Two slow answers in a row on one keep-alive connection: both time out.
        let conn = Guarded::new(
            fake(async move {
                let first = on_conn.within(Duration::from_millis(50), std::future::pending::<()>()).await;
                let second = on_conn.within(Duration::from_millis(50), std::future::pending::<()>()).await;
                (first, second)
            }),
            d,
        );
        let both = tokio::time::timeout(Duration::from_secs(1), conn).await;
        assert_eq!(both, Ok(Some((Err(()), Err(())))));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_and_a_slow_answer_times_out() {
        let sweeper = Arc::new(Sweeper::default());
        tokio::spawn(sweeper.clone().run());
        let d = sweeper.register(Duration::from_millis(100));

        // Busy: no head deadline; the answer deadline fires after 50 ms.
        d.busy();
        let started = tokio::time::Instant::now();
        // (On the connection's task, whose waker `Guarded` gives the sweeper.)
        let slow =
            Guarded::new(fake(d.within(Duration::from_millis(50), std::future::pending::<()>())), d.clone());
        assert_eq!(slow.await, Some(Err(())));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took <= Duration::from_millis(50) + 2 * TICK,
            "{took:?}"
        );
        assert_eq!(d.within(Duration::from_millis(50), async { 7 }).await, Ok(7));

        // Idle: the connection is closed 100 ms (+ up to two ticks) later.
        d.idle();
        let started = tokio::time::Instant::now();
        let conn = Guarded::new(fake(std::future::pending::<()>()), d.clone());
        assert_eq!(conn.await, None);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(100) && took <= Duration::from_millis(100) + 2 * TICK,
            "{took:?}"
        );

        // A busy connection is left alone however long its request takes.
        d.busy();
        let busy = Guarded::new(fake(tokio::time::sleep(Duration::from_secs(1))), d.clone());
        assert_eq!(busy.await, Some(()));
        drop(d);
        tokio::time::sleep(TICK * 2).await;
        assert!(sweeper.conns.lock().unwrap().is_empty(), "closed connections leave the sweep");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_reaches_every_connection_and_waits_for_the_last() {
        let sweeper = Arc::new(Sweeper::default());
        tokio::spawn(sweeper.clone().run());
        let (a, b) = (sweeper.register(Duration::ZERO), sweeper.register(Duration::ZERO));
        let conn = fake(tokio::time::sleep(Duration::from_millis(300)));
        let drained = conn.drained.clone();
        let running = tokio::spawn(Guarded::new(conn, a));
        tokio::time::sleep(TICK).await;
        drop(b); // closed before the drain

        sweeper.drain();
        let started = tokio::time::Instant::now();
        sweeper.drained().await;
        assert!(drained.load(Relaxed), "the live connection was asked to drain");
        assert!(started.elapsed() >= Duration::from_millis(250), "drained() waited for it to finish");
        assert_eq!(running.await.unwrap(), Some(()));
        // A connection registered after the drain began drains at its first poll.
        let late = fake(std::future::pending::<()>());
        let late_drained = late.drained.clone();
        let mut late = std::pin::pin!(Guarded::new(late, sweeper.register(Duration::ZERO)));
        let polled = std::future::poll_fn(|cx| Poll::Ready(late.as_mut().poll(cx))).await;
        assert!(polled.is_pending());
        assert!(late_drained.load(Relaxed));
    }
}
