//! `spillway load`: an **open-loop** HTTP/1.1 load generator for overload experiments.
//!
//! Open loop means requests are sent at the times a rate [`Profile`] says, whether or not
//! earlier requests were answered — the way independent users arrive — instead of waiting for an
//! answer before sending the next (which is how closed-loop tools like wrk hide overload: a
//! slow server slows the generator down, the "coordinated omission" problem). Every latency is
//! measured from the request's **intended** send time, so a generator that falls behind shows up
//! as latency, not as missing samples; [`LoadReport::max_send_lag_ms`] says how far behind it got.
//!
//! Each request has a deadline: one not answered in time is counted `late` and abandoned (its
//! future is dropped, which closes its connection — what a real client with a timeout does).
//!
//! How it stays fast (≥ 20 000 requests a second on one core): each generator thread runs a
//! current-thread tokio runtime with a bounded pool of keep-alive HTTP/1.1 connections
//! (`hyper::client::conn::http1`, one request in flight per connection). Each connection is one
//! task that drives its socket and waits for work; the scheduler hands a due request to an idle
//! connection (opening a new one while under the cap) or, when all are busy and the cap is
//! reached, counts it `dropped_by_client`: the generator, not the target, was the limit. The
//! request URI and `Host` header are built once. With `threads > 1`, thread `j` sends requests
//! `j, j + n, j + 2n, …` of the one schedule, with its share of the connections.
//!
//! Client behaviour on rejections ([`RetryMode`]): `ignore`; `honour` (after a 429 or 503 with a
//! `Retry-After: <seconds>`, send nothing new until then — the requests due meanwhile are counted
//! `deferred`); `budget` (retry a rejected request at once, at most once, while retries stay
//! within 10 % of requests over the last 10 s, using [`spillway::shed::RetryBudget`]).
//!
//! ```no_run
//! use spillway_lab::load::{run, LoadOptions};
//! use std::time::Duration;
//!
//! # async fn f() -> anyhow::Result<()> {
//! let report = run(LoadOptions {
//!     url: "http://127.0.0.1:8080/".into(),
//!     rate: 400.0,
//!     duration: Duration::from_secs(5),
//!     deadline: Duration::from_millis(500),
//!     ..LoadOptions::default()
//! })
//! .await?;
//! println!("goodput {:.0}/s, p99 {:.1} ms", report.goodput_per_s, report.ok_latency.p99_ms);
//! # Ok(())
//! # }
//! ```

mod engine;
mod profile;
mod report;

pub use profile::Profile;
pub use report::{Counts, Latency, LoadReport, SecondReport};

use anyhow::{Context, bail};
use http::HeaderValue;
use http::uri::{PathAndQuery, Uri};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What a client does when it is told no.
///
/// ```
/// use spillway_lab::load::RetryMode;
///
/// assert_eq!("honour".parse::<RetryMode>().unwrap(), RetryMode::Honour);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetryMode {
    /// Keep sending on schedule; never retry.
    #[default]
    Ignore,
    /// After a 429/503 carrying `Retry-After: <seconds>`, send nothing new until then.
    Honour,
    /// Retry each rejected (429, 503, 504) request at once, at most once, while retries stay
    /// within 10 % of requests (a retry budget).
    Budget,
}

impl RetryMode {
    /// Every mode.
    pub const ALL: [RetryMode; 3] = [Self::Ignore, Self::Honour, Self::Budget];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ignore => "ignore",
            Self::Honour => "honour",
            Self::Budget => "budget",
        }
    }
}

impl fmt::Display for RetryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for RetryMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown retry mode {s:?}: expected ignore, honour or budget"))
    }
}

/// One load run.
///
/// ```
/// use spillway_lab::load::{LoadOptions, Profile};
///
/// let o = LoadOptions::default();
/// assert_eq!((o.profile, o.connections, o.threads), (Profile::Constant, 256, 1));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// `http://host[:port]/path` (plain HTTP/1.1 only).
    pub url: String,
    /// Peak offered rate, requests a second (see [`Profile`] for the shapes).
    pub rate: f64,
    /// Length of the run.
    pub duration: Duration,
    /// Per-request deadline, measured from the intended send time.
    pub deadline: Duration,
    /// The shape of the offered rate.
    pub profile: Profile,
    /// At most this many connections (shared out between threads).
    pub connections: usize,
    /// What the client does on rejections.
    pub retry_mode: RetryMode,
    /// Generator threads, each with its own current-thread runtime.
    pub threads: usize,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Send unary gRPC calls over h2c instead of HTTP/1.1 GETs: the URL's path is the method
    /// (`/package.Service/Method`), the request an empty message. `grpc-status` 8 counts as a
    /// 429, 14 as a 503, 4 as a 504; `grpc-retry-pushback-ms` as `Retry-After`.
    pub grpc: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080/".into(),
            rate: 100.0,
            duration: Duration::from_secs(10),
            deadline: Duration::from_millis(1000),
            profile: Profile::Constant,
            connections: 256,
            retry_mode: RetryMode::Ignore,
            threads: 1,
            progress: false,
            grpc: false,
        }
    }
}

/// Parses a duration: a number with an optional unit `ms`, `s` (the default) or `m`.
///
/// ```
/// use spillway_lab::load::parse_duration;
/// use std::time::Duration;
///
/// assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
/// assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num.trim().parse().map_err(|_| format!("not a duration: {s:?} (try 10, 10s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return Err(format!("duration out of range: {s:?}"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// The target, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    pub(crate) host: HeaderValue,
    pub(crate) path: Uri,
    pub(crate) grpc: bool,
}

async fn resolve(url: &str, grpc: bool) -> anyhow::Result<Target> {
    let uri: Uri = url.parse().with_context(|| format!("not a URL: {url:?}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(other) => bail!("only http:// URLs are supported, not {other}://"),
        None => bail!("the URL needs a scheme: http://{url}"),
    }
    let authority = uri.authority().context("the URL needs a host")?;
    let port = authority.port_u16().unwrap_or(80);
    let addr = tokio::net::lookup_host((authority.host(), port))
        .await
        .with_context(|| format!("resolve {}", authority.host()))?
        .next()
        .with_context(|| format!("{} has no address", authority.host()))?;
    let host = HeaderValue::from_str(authority.as_str()).context("host header")?;
    let pq = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    let path = Uri::builder().path_and_query(pq).build().context("request path")?;
    Ok(Target { addr, host, path, grpc })
}

/// Counters every thread bumps, for the progress line.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) sent: AtomicU64,
    pub(crate) ok: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) late: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// Runs the load and returns what it measured. The generator runs on `opts.threads` threads of
/// its own, so the caller's runtime (which may host the target) is not disturbed.
pub async fn run(opts: LoadOptions) -> anyhow::Result<LoadReport> {
    if !(opts.rate.is_finite() && opts.rate > 0.0) {
        bail!("the rate must be above 0");
    }
    if opts.duration.is_zero() || opts.deadline.is_zero() {
        bail!("the duration and the deadline must be above 0");
    }
    if opts.connections == 0 || opts.threads == 0 {
        bail!("connections and threads must be at least 1");
    }
    let target = resolve(&opts.url, opts.grpc).await?;
    let threads = opts.threads.min(opts.connections);
    let shared = Arc::new(engine::Shared::new());
    // A common start a little ahead, so every thread is ready before the first request is due.
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut results = Vec::with_capacity(threads);
    for j in 0..threads {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cfg = engine::ThreadConfig {
            target: target.clone(),
            opts: opts.clone(),
            index: j,
            threads,
            connections: opts.connections.div_ceil(threads),
            start,
            shared: shared.clone(),
        };
        std::thread::Builder::new()
            .name(format!("spillway-load-{j}"))
            .spawn(move || {
                let _ = tx.send(engine::run_thread(cfg));
            })
            .context("spawn a generator thread")?;
        results.push(rx);
    }

    let all = futures_join(results);
    tokio::pin!(all);
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    let outcome = loop {
        tokio::select! {
            r = &mut all => break r,
            _ = tick.tick(), if opts.progress => progress(&shared.live, start),
        }
    };
    if opts.progress {
        eprintln!();
    }
    let mut report = LoadReport::header(&opts);
    report.threads = threads;
    let mut merged: Option<engine::ThreadResult> = None;
    for r in outcome {
        let r = r.context("a generator thread panicked")??;
        match &mut merged {
            None => merged = Some(r),
            Some(m) => m.merge(r)?,
        }
    }
    if let Some(m) = merged {
        m.finish(&mut report);
    }
    report.goodput_per_s = report.totals.ok as f64 / opts.duration.as_secs_f64();
    Ok(report)
}

async fn futures_join<T>(
    rxs: Vec<tokio::sync::oneshot::Receiver<T>>,
) -> Vec<Result<T, tokio::sync::oneshot::error::RecvError>> {
    let mut out = Vec::with_capacity(rxs.len());
    for rx in rxs {
        out.push(rx.await);
    }
    out
}

fn progress(live: &Live, start: tokio::time::Instant) {
    let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut err = std::io::stderr().lock();
    let _ = write!(
        err,
        "\r{:>4.0} s  sent {:>9}  ok {:>9}  rejected {:>8}  late {:>8}  errors {:>6} ",
        start.elapsed().as_secs_f64(),
        l(&live.sent),
        l(&live.ok),
        l(&live.rejected),
        l(&live.late),
        l(&live.errors)
    );
    let _ = err.flush();
}
