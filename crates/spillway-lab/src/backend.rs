//! `spillway backend`: a demo HTTP backend with **no backpressure at all** — the thing Spillway
//! protects.
//!
//! It is deliberately the bad example:
//!
//! - every request is accepted and waits in an **unbounded** FIFO queue for one of `pool`
//!   workers (the only unbounded queue in Spillway, on purpose: it is what overload looks like
//!   without backpressure);
//! - each worker "serves" a request for `service` (± `jitter_pct` %), sleeping, or busy-spinning
//!   a CPU with `cpu`;
//! - it never notices a client that went away: a queued request is served even if its client
//!   disconnected long ago (counted as `client_gone`), so under overload it spends its capacity
//!   on answers nobody reads.
//!
//! `GET /stats` bypasses the queue and answers JSON:
//! `{"completed":N,"waiting":N,"max_waiting":N,"in_service":N,"client_gone":N,"rss_bytes":N}`.
//! Any other request is answered `200 ok` once served.
//!
//! ```no_run
//! use spillway_lab::backend::{spawn, BackendOptions};
//! use std::time::Duration;
//!
//! # async fn f() -> std::io::Result<()> {
//! let opts = BackendOptions { pool: 2, service: Duration::from_millis(10), ..Default::default() };
//! let (addr, backend) = spawn(opts).await?; // 200 requests a second on 127.0.0.1, any port
//! println!("{addr}: {:?}", backend.stats());
//! backend.shutdown();
//! # Ok(())
//! # }
//! ```

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use spillway::clock::{Clock, MonotonicClock};
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

/// How the backend behaves.
///
/// ```
/// use spillway_lab::backend::BackendOptions;
///
/// let o = BackendOptions::default();
/// assert_eq!(o.capacity_per_sec(), 320.0); // 16 workers, 50 ms each
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendOptions {
    /// Workers: requests served at the same time.
    pub pool: usize,
    /// Mean service time of one request.
    pub service: Duration,
    /// Each service time is drawn uniformly within ± this percentage of `service` (0 to 100).
    pub jitter_pct: u32,
    /// Busy-spin a CPU for the service time instead of sleeping.
    pub cpu: bool,
}

impl Default for BackendOptions {
    fn default() -> Self {
        Self { pool: 16, service: Duration::from_millis(50), jitter_pct: 0, cpu: false }
    }
}

impl BackendOptions {
    /// Requests a second the workers can serve: `pool / service` (infinite for a zero service time).
    pub fn capacity_per_sec(&self) -> f64 {
        self.pool as f64 / self.service.as_secs_f64()
    }
}

/// A snapshot of the backend's counters, as `GET /stats` answers them.
///
/// ```
/// use spillway_lab::backend::BackendStats;
///
/// let s: BackendStats = serde_json::from_str(
///     r#"{"completed":3,"waiting":5,"max_waiting":9,"in_service":2,"client_gone":1,"rss_bytes":4096}"#,
/// ).unwrap();
/// assert_eq!(s.waiting, 5);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Requests served (whether or not their client was still there).
    pub completed: u64,
    /// Requests in the queue now, waiting for a worker.
    pub waiting: u64,
    /// The most requests ever waiting at once.
    pub max_waiting: u64,
    /// Requests being served now.
    pub in_service: u64,
    /// Requests served after their client had gone: wasted work.
    #[serde(default)]
    pub client_gone: u64,
    /// Resident memory of the process, in bytes (from `/proc/self/statm`; 0 where unavailable).
    pub rss_bytes: u64,
}

/// One queued request: the worker signals `done` when it has served it.
struct Job {
    done: oneshot::Sender<()>,
}

#[derive(Debug, Default)]
struct Counters {
    completed: AtomicU64,
    waiting: AtomicU64,
    max_waiting: AtomicU64,
    in_service: AtomicU64,
    client_gone: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> BackendStats {
        BackendStats {
            completed: self.completed.load(Ordering::Relaxed),
            waiting: self.waiting.load(Ordering::Relaxed),
            max_waiting: self.max_waiting.load(Ordering::Relaxed),
            in_service: self.in_service.load(Ordering::Relaxed),
            client_gone: self.client_gone.load(Ordering::Relaxed),
            rss_bytes: rss_bytes(),
        }
    }
}

struct Shared {
    // THE DELIBERATE UNBOUNDED QUEUE. The backend is the bad example Spillway protects: it accepts
    // everything and lets the queue (and the wait, and the memory) grow without limit. Nothing
    // else in Spillway may do this.
    queue: mpsc::UnboundedSender<Job>,
    counters: Arc<Counters>,
}

/// A running in-process backend (see [`spawn`]). Dropping it stops it too.
#[derive(Debug)]
pub struct BackendHandle {
    addr: SocketAddr,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
}

impl BackendHandle {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its counters now (the same numbers `GET /stats` answers).
    pub fn stats(&self) -> BackendStats {
        self.counters.snapshot()
    }

    /// Stops accepting, closes every connection and stops the workers.
    pub fn shutdown(self) {
        drop(self);
    }
}

impl Drop for BackendHandle {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Binds `127.0.0.1:0` and serves on the current tokio runtime (which must be multi-threaded if
/// `opts.cpu` is set with more than one worker). Returns the bound address and a handle.
pub async fn spawn(opts: BackendOptions) -> io::Result<(SocketAddr, BackendHandle)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    tokio::spawn(run(listener, opts, counters.clone(), stopped));
    Ok((addr, BackendHandle { addr, counters, stop }))
}

/// Serves on `listener` until the process ends (what `spillway backend` runs).
pub async fn serve(listener: TcpListener, opts: BackendOptions) {
    // The sender is kept alive for as long as this future: the server never stops by itself.
    let (_stop, stopped) = watch::channel(false);
    run(listener, opts, Arc::new(Counters::default()), stopped).await;
}

async fn run(
    listener: TcpListener,
    opts: BackendOptions,
    counters: Arc<Counters>,
    stop: watch::Receiver<bool>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..opts.pool.max(1) {
        tokio::spawn(worker(i as u64, opts, rx.clone(), counters.clone(), stop.clone()));
    }
    let shared = Arc::new(Shared { queue: tx, counters });
    let mut stop_accept = stop.clone();
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                // Out of file descriptors and the like: keep serving the connections we have.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop_accept) => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, shared.clone()));
            let conn =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stopped(&mut stop) => {}
            }
        });
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/stats" {
        let body = serde_json::to_vec(&shared.counters.snapshot()).unwrap_or_default();
        return Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default());
    }
    let (done, served) = oneshot::channel();
    let c = &shared.counters;
    let waiting = c.waiting.fetch_add(1, Ordering::Relaxed) + 1;
    c.max_waiting.fetch_max(waiting, Ordering::Relaxed);
    if shared.queue.send(Job { done }).is_err() {
        // Only when shutting down.
        c.waiting.fetch_sub(1, Ordering::Relaxed);
        let mut r = Response::new(Full::new(Bytes::from_static(b"shutting down\n")));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(r);
    }
    // If the client disconnects, hyper drops this future here; the job stays queued and is
    // served anyway. That is the point.
    let _ = served.await;
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}

async fn worker(
    id: u64,
    opts: BackendOptions,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
    c: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (id + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    // When this worker's last request was due to end. A busy worker starts the next one from
    // there rather than from when its timer fired, so timer overshoot (tokio's timers tick in
    // milliseconds) does not eat into its capacity.
    let mut free_at = tokio::time::Instant::now();
    loop {
        let job = tokio::select! {
            j = async {
                let mut rx = rx.lock().await;
                match rx.try_recv() {
                    Ok(j) => Some((j, false)),
                    Err(_) => rx.recv().await.map(|j| (j, true)),
                }
            } => j,
            _ = stopped(&mut stop) => None,
        };
        let Some((job, was_idle)) = job else { return };
        c.waiting.fetch_sub(1, Ordering::Relaxed);
        c.in_service.fetch_add(1, Ordering::Relaxed);
        let d = service_time(&opts, &mut rng);
        let now = tokio::time::Instant::now();
        let start = if was_idle { now } else { free_at.max(now - Duration::from_millis(2)) };
        free_at = start + d;
        if !d.is_zero() {
            if opts.cpu {
                let _ = tokio::task::spawn_blocking(move || spin(d)).await;
            } else {
                tokio::time::sleep_until(free_at).await;
            }
        }
        c.in_service.fetch_sub(1, Ordering::Relaxed);
        c.completed.fetch_add(1, Ordering::Relaxed);
        if job.done.send(()).is_err() {
            c.client_gone.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn service_time(opts: &BackendOptions, rng: &mut Rng) -> Duration {
    let base = opts.service.as_secs_f64();
    let j = f64::from(opts.jitter_pct.min(100)) / 100.0;
    if j == 0.0 || base == 0.0 {
        return opts.service;
    }
    // Uniform in [base (1 - j), base (1 + j)].
    Duration::from_secs_f64(base * (1.0 + j * (2.0 * rng.next_f64() - 1.0)))
}

fn spin(d: Duration) {
    let clock = MonotonicClock::new();
    let end = clock.now() + d.as_nanos() as u64;
    while clock.now() < end {
        std::hint::spin_loop();
    }
}

/// xorshift64: jitter needs spread, not cryptography.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Resident set size of this process: the second field of `/proc/self/statm` (pages) times the
/// page size (4 KiB, Linux's on the platforms this lab runs on). 0 where `/proc` is absent.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        let o = BackendOptions { service: Duration::from_millis(100), jitter_pct: 20, ..Default::default() };
        let mut rng = Rng(42);
        for _ in 0..1000 {
            let d = service_time(&o, &mut rng);
            assert!(d >= Duration::from_millis(80) && d <= Duration::from_millis(120), "{d:?}");
        }
    }

    #[test]
    fn rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(rss_bytes() > 0);
        }
    }
}
