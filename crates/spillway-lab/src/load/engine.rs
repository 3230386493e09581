//! One generator thread: a current-thread runtime, a scheduler and a bounded pool of
//! connection tasks. Everything here is thread-local (`Rc`, `Cell`), so nothing on the request
//! path takes a lock or touches a shared cache line, except the progress counters and, in
//! `budget` mode, the retry budget.

use super::profile::Schedule;
use super::report::{Counts, LoadReport, SecondReport};
use super::{Latency, Live, LoadOptions, RetryMode, Target};
use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use spillway::clock::MonotonicClock;
use spillway::shed::RetryBudget;
use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

const SEC: u64 = 1_000_000_000;
/// Requests handed out in one go before the scheduler yields to the connection tasks.
const BATCH: u32 = 64;

/// State shared by every thread of one run.
#[derive(Debug)]
pub(crate) struct Shared {
    /// `honour` mode: send nothing new before this many nanoseconds after the start.
    pause_until: AtomicU64,
    budget: RetryBudget<MonotonicClock>,
    pub(crate) live: Live,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            pause_until: AtomicU64::new(0),
            // At most 10 % of the requests of the last 10 s, and no floor.
            budget: RetryBudget::with_clock(0.1, 0, Duration::from_secs(10), MonotonicClock::new()),
            live: Live::default(),
        }
    }
}

#[derive(Debug)]
pub(crate) struct ThreadConfig {
    pub(crate) target: Target,
    pub(crate) opts: LoadOptions,
    pub(crate) index: usize,
    pub(crate) threads: usize,
    pub(crate) connections: usize,
    pub(crate) start: Instant,
    pub(crate) shared: Arc<Shared>,
}

/// What one thread measured; merged across threads into a [`LoadReport`].
#[derive(Debug)]
pub(crate) struct ThreadResult {
    totals: Counts,
    ok: Histogram<u64>,
    rejected: Histogram<u64>,
    series: Vec<(Counts, Histogram<u64>)>,
    max_lag_ns: u64,
    opened: u64,
}

impl ThreadResult {
    fn new(seconds: usize, deadline: Duration) -> anyhow::Result<Self> {
        // Microseconds, up to well past the deadline (saturating beyond).
        let high = (deadline.as_micros() as u64).saturating_mul(2).max(1_000_000) + 10_000_000;
        let h = |sig| Histogram::new_with_bounds(1, high, sig).context("latency histogram");
        let mut series = Vec::with_capacity(seconds);
        for _ in 0..seconds {
            series.push((Counts::default(), h(2)?));
        }
        Ok(Self { totals: Counts::default(), ok: h(3)?, rejected: h(3)?, series, max_lag_ns: 0, opened: 0 })
    }

    pub(crate) fn merge(&mut self, o: ThreadResult) -> anyhow::Result<()> {
        self.totals.add(&o.totals);
        self.ok.add(&o.ok).context("merge histograms")?;
        self.rejected.add(&o.rejected).context("merge histograms")?;
        for ((c, h), (oc, oh)) in self.series.iter_mut().zip(o.series) {
            c.add(&oc);
            h.add(&oh).context("merge histograms")?;
        }
        self.max_lag_ns = self.max_lag_ns.max(o.max_lag_ns);
        self.opened += o.opened;
        Ok(())
    }

    pub(crate) fn finish(self, r: &mut LoadReport) {
        r.totals = self.totals;
        r.ok_latency = Latency::of(&self.ok);
        r.rejection_latency = Latency::of(&self.rejected);
        r.max_send_lag_ms = self.max_lag_ns as f64 / 1e6;
        r.connections_opened = self.opened;
        r.series = self
            .series
            .iter()
            .enumerate()
            .map(|(i, (c, h))| {
                let l = Latency::of(h);
                SecondReport { second: i as u64, counts: *c, p50_ms: l.p50_ms, p99_ms: l.p99_ms }
            })
            .collect();
    }

    fn second(&self, t: u64) -> usize {
        ((t / SEC) as usize).min(self.series.len() - 1)
    }

    fn counts(&mut self, t: u64) -> (&mut Counts, &mut Counts, &mut Histogram<u64>) {
        let i = self.second(t);
        let (c, h) = &mut self.series[i];
        (&mut self.totals, c, h)
    }
}

/// How one request ended.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Answer(StatusCode),
    Late,
    Error,
}

fn is_rejection(s: StatusCode) -> bool {
    matches!(s.as_u16(), 429 | 503 | 504)
}

/// A pool connection's mailbox: the intended time (ns from start) of its next request.
#[derive(Debug)]
struct Slot {
    index: usize,
    job: Cell<Option<u64>>,
    wake: Notify,
}

type Io = TokioIo<TcpStream>;
type H1Driver = Pin<Box<http1::Connection<Io, Full<Bytes>>>>;
type H2Driver = Pin<Box<http2::Connection<Io, Full<Bytes>, TokioExecutor>>>;

/// A connection and its driver, polled in the slot's own task (no task per connection).
enum Conn {
    H1(http1::SendRequest<Full<Bytes>>, H1Driver),
    H2(http2::SendRequest<Full<Bytes>>, H2Driver),
}

/// An empty gRPC message: not compressed, length 0.
const EMPTY_GRPC_MESSAGE: [u8; 5] = [0; 5];

struct Engine {
    target: Target,
    deadline: Duration,
    mode: RetryMode,
    start: Instant,
    cap: usize,
    shared: Arc<Shared>,
    slots: RefCell<Vec<Rc<Slot>>>,
    idle: RefCell<Vec<usize>>,
    in_flight: Cell<usize>,
    stopping: Cell<bool>,
    result: RefCell<ThreadResult>,
}

/// Runs one thread's share of the schedule to completion.
pub(crate) fn run_thread(cfg: ThreadConfig) -> anyhow::Result<ThreadResult> {
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("generator runtime")?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, drive(cfg))
}

async fn drive(cfg: ThreadConfig) -> anyhow::Result<ThreadResult> {
    let o = &cfg.opts;
    let seconds = (o.duration.as_secs_f64().ceil() as usize).max(1);
    let e = Rc::new(Engine {
        target: cfg.target.clone(),
        deadline: o.deadline,
        mode: o.retry_mode,
        start: cfg.start,
        cap: cfg.connections.max(1),
        shared: cfg.shared.clone(),
        slots: RefCell::new(Vec::with_capacity(cfg.connections)),
        idle: RefCell::new(Vec::with_capacity(cfg.connections)),
        in_flight: Cell::new(0),
        stopping: Cell::new(false),
        result: RefCell::new(ThreadResult::new(seconds, o.deadline)?),
    });

    let mut schedule = Schedule::new(o.profile, o.rate, o.duration.as_secs_f64());
    let (step, total) = (cfg.threads as u64, schedule.total);
    let mut i = cfg.index as u64;
    let mut batch = 0;
    while i < total {
        let t = schedule.at(i);
        let due = cfg.start + Duration::from_nanos(t);
        let mut now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due).await;
            now = Instant::now();
            batch = 0;
        } else if batch >= BATCH {
            tokio::task::yield_now().await;
            batch = 0;
        }
        batch += 1;
        let lag = now.saturating_duration_since(due).as_nanos() as u64;
        dispatch(&e, t, lag);
        i += step;
    }

    // Everything in flight ends by its deadline; wait for that (with a margin for slow timers).
    let end = Instant::now() + o.deadline + Duration::from_secs(1);
    while e.in_flight.get() > 0 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    e.stopping.set(true);
    for s in e.slots.borrow().iter() {
        s.wake.notify_one();
    }
    let seconds_result = ThreadResult::new(seconds, o.deadline)?;
    Ok(std::mem::replace(&mut *e.result.borrow_mut(), seconds_result))
}

/// Hands request `t` (its intended time, ns from start) to a connection, or counts why not.
fn dispatch(e: &Rc<Engine>, t: u64, lag: u64) {
    let mut r = e.result.borrow_mut();
    r.max_lag_ns = r.max_lag_ns.max(lag);
    let (tot, sec, _) = r.counts(t);
    tot.offered += 1;
    sec.offered += 1;
    if e.mode == RetryMode::Honour && t < e.shared.pause_until.load(Ordering::Relaxed) {
        tot.deferred += 1;
        sec.deferred += 1;
        return;
    }
    let slot = e.idle.borrow_mut().pop();
    if let Some(i) = slot {
        let s = &e.slots.borrow()[i];
        s.job.set(Some(t));
        s.wake.notify_one();
    } else if e.slots.borrow().len() < e.cap {
        let mut slots = e.slots.borrow_mut();
        let s = Rc::new(Slot { index: slots.len(), job: Cell::new(Some(t)), wake: Notify::new() });
        slots.push(s.clone());
        tokio::task::spawn_local(connection(e.clone(), s));
    } else {
        tot.dropped_by_client += 1;
        sec.dropped_by_client += 1;
        return;
    }
    tot.sent += 1;
    sec.sent += 1;
    e.in_flight.set(e.in_flight.get() + 1);
    e.shared.live.sent.fetch_add(1, Ordering::Relaxed);
    if e.mode == RetryMode::Budget {
        e.shared.budget.record_request();
    }
}

/// One pool connection: waits for a request, sends it, records the outcome, forever.
async fn connection(e: Rc<Engine>, slot: Rc<Slot>) {
    let mut conn: Option<Conn> = None;
    loop {
        // Wait for work; drive an idle keep-alive connection meanwhile, to notice it closing.
        let t = loop {
            if e.stopping.get() {
                return;
            }
            if let Some(t) = slot.job.take() {
                break t;
            }
            let closed = match &mut conn {
                Some(Conn::H1(_, driver)) => tokio::select! {
                    _ = slot.wake.notified() => false,
                    _ = driver.as_mut() => true,
                },
                Some(Conn::H2(_, driver)) => tokio::select! {
                    _ = slot.wake.notified() => false,
                    _ = driver.as_mut() => true,
                },
                None => {
                    slot.wake.notified().await;
                    false
                }
            };
            if closed {
                conn = None;
            }
        };
        let intended = e.start + Duration::from_nanos(t);
        let deadline = intended + e.deadline;
        let mut retried = false;
        let outcome = loop {
            let out = match tokio::time::timeout_at(deadline, attempt(&e, &mut conn)).await {
                Ok(Ok((status, retry_after))) => {
                    answered(&e, t, status, retry_after);
                    Outcome::Answer(status)
                }
                Ok(Err(())) => {
                    conn = None;
                    Outcome::Error
                }
                Err(_) => {
                    // Abandon it: dropping the connection closes the socket.
                    conn = None;
                    Outcome::Late
                }
            };
            if let Outcome::Answer(s) = out {
                if e.mode == RetryMode::Budget && !retried && is_rejection(s) && e.shared.budget.try_retry() {
                    retried = true;
                    let mut r = e.result.borrow_mut();
                    let (tot, sec, _) = r.counts(t);
                    tot.retries += 1;
                    sec.retries += 1;
                    continue;
                }
            }
            break out;
        };
        record(&e, t, outcome, Instant::now().saturating_duration_since(intended));
        e.in_flight.set(e.in_flight.get() - 1);
        e.idle.borrow_mut().push(slot.index);
    }
}

/// Sends one request on `conn` (connecting first if needed) and reads the whole answer.
async fn attempt(e: &Engine, conn: &mut Option<Conn>) -> Result<(StatusCode, Option<u64>), ()> {
    if conn.is_none() {
        let s = TcpStream::connect(e.target.addr).await.map_err(drop)?;
        let _ = s.set_nodelay(true);
        let io = TokioIo::new(s);
        *conn = Some(if e.target.grpc {
            let (sender, driver) = http2::handshake(TokioExecutor::new(), io).await.map_err(drop)?;
            Conn::H2(sender, Box::pin(driver))
        } else {
            let (sender, driver) = http1::handshake(io).await.map_err(drop)?;
            Conn::H1(sender, Box::pin(driver))
        });
        e.result.borrow_mut().opened += 1;
    }
    let (r, driver_done) = match conn.as_mut() {
        None => return Err(()),
        Some(Conn::H1(sender, driver)) => {
            let mut req = Request::new(Full::default());
            *req.uri_mut() = e.target.path.clone();
            req.headers_mut().insert(header::HOST, e.target.host.clone());
            let exchange = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                let status = resp.status();
                let retry_after = retry_after(resp.headers());
                let mut body = resp.into_body();
                while let Some(frame) = body.frame().await {
                    frame?;
                }
                Ok::<_, hyper::Error>((status, retry_after))
            };
            exchange_on(exchange, driver.as_mut()).await
        }
        Some(Conn::H2(sender, driver)) => {
            let mut req = Request::new(Full::new(Bytes::from_static(&EMPTY_GRPC_MESSAGE)));
            *req.method_mut() = http::Method::POST;
            *req.uri_mut() = format!("http://{}{}", e.target.addr, e.target.path).parse().map_err(drop)?;
            let h = req.headers_mut();
            h.insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
            h.insert(header::TE, http::HeaderValue::from_static("trailers"));
            let exchange = async {
                sender.ready().await?;
                let resp = sender.send_request(req).await?;
                // Trailers-only answers carry the status in the headers.
                let mut status = grpc_status(resp.headers());
                let mut pushback = grpc_pushback(resp.headers());
                let mut body = resp.into_body();
                while let Some(frame) = body.frame().await {
                    if let Ok(trailers) = frame?.into_trailers() {
                        status = status.or(grpc_status(&trailers));
                        pushback = pushback.or(grpc_pushback(&trailers));
                    }
                }
                let status = match status {
                    Some(0) => StatusCode::OK,
                    Some(8) => StatusCode::TOO_MANY_REQUESTS,
                    Some(14) => StatusCode::SERVICE_UNAVAILABLE,
                    Some(4) => StatusCode::GATEWAY_TIMEOUT,
                    _ => StatusCode::INTERNAL_SERVER_ERROR,
                };
                Ok::<_, hyper::Error>((status, pushback))
            };
            exchange_on(exchange, driver.as_mut()).await
        }
    };
    if driver_done {
        *conn = None;
    }
    r.map_err(drop)
}

/// Runs `exchange` while polling the connection's `driver` in the same task.
async fn exchange_on<T, D>(
    exchange: impl std::future::Future<Output = Result<T, hyper::Error>>,
    driver: Pin<&mut D>,
) -> (Result<T, hyper::Error>, bool)
where
    D: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        r = &mut exchange => (r, false),
        d = driver => match d {
            // The server closed after answering: the answer may be complete.
            Ok(()) => (exchange.await, true),
            Err(e) => (Err(e), true),
        },
    }
}

fn grpc_status(h: &HeaderMap) -> Option<u32> {
    h.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// `grpc-retry-pushback-ms`, rounded up to whole seconds like `Retry-After`.
fn grpc_pushback(h: &HeaderMap) -> Option<u64> {
    let ms: u64 = h.get("grpc-retry-pushback-ms")?.to_str().ok()?.parse().ok()?;
    Some(ms.div_ceil(1000).max(1))
}

/// `Retry-After` as delta-seconds; `Some(u64::MAX)` marks a header in another form (an HTTP
/// date), counted but not acted on.
fn retry_after(h: &HeaderMap) -> Option<u64> {
    let v = h.get(header::RETRY_AFTER)?;
    Some(v.to_str().ok().and_then(|s| s.trim().parse().ok()).unwrap_or(u64::MAX))
}

/// Counts an answer's `Retry-After` and, in `honour` mode, pauses the producer.
fn answered(e: &Engine, t: u64, status: StatusCode, retry_after: Option<u64>) {
    let Some(secs) = retry_after else { return };
    {
        let mut r = e.result.borrow_mut();
        let (tot, sec, _) = r.counts(t);
        tot.with_retry_after += 1;
        sec.with_retry_after += 1;
    }
    if e.mode == RetryMode::Honour && matches!(status.as_u16(), 429 | 503) && secs != u64::MAX {
        let now = Instant::now().saturating_duration_since(e.start).as_nanos() as u64;
        e.shared.pause_until.fetch_max(now.saturating_add(secs.saturating_mul(SEC)), Ordering::Relaxed);
    }
}

fn record(e: &Engine, t: u64, outcome: Outcome, latency: Duration) {
    let us = (latency.as_micros() as u64).max(1);
    let live = &e.shared.live;
    let mut guard = e.result.borrow_mut();
    let i = guard.second(t);
    let ThreadResult { totals: tot, series, ok, rejected, .. } = &mut *guard;
    let (sec, hist) = &mut series[i];
    match outcome {
        Outcome::Answer(s) if s.is_success() => {
            tot.ok += 1;
            sec.ok += 1;
            hist.saturating_record(us);
            ok.saturating_record(us);
            live.ok.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Answer(s) => {
            let bump = |c: &mut Counts| match s.as_u16() {
                429 => c.rejected_429 += 1,
                503 => c.rejected_503 += 1,
                504 => c.rejected_504 += 1,
                _ => c.rejected_other += 1,
            };
            bump(tot);
            bump(sec);
            rejected.saturating_record(us);
            live.rejected.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Late => {
            tot.late += 1;
            sec.late += 1;
            live.late.fetch_add(1, Ordering::Relaxed);
        }
        Outcome::Error => {
            tot.errors += 1;
            sec.errors += 1;
            live.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}
