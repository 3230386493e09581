//! The soak: `spillway lab --scenario soak`. A `spillway serve` process under steady churn for a
//! set time: HTTP requests from ever-new client addresses (`X-Forwarded-For` from a trusted
//! peer, so every request is a new key for the keyed rate limit) and WebSocket sessions opened,
//! used and closed without pause. The proxy's resident memory and open descriptors are sampled
//! each second; after the warm-up (the first third) they must stay flat: the last third may not
//! grow past the middle third by more than 10 % + 2 MiB (memory) or 16 descriptors.

use super::run::{http_get, start_backend, start_proxy};
use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakOptions {
    /// How long (at least 9 s: three thirds of at least 3 s).
    pub seconds: u64,
    /// The `spillway` executable.
    pub spillway_bin: PathBuf,
}

/// One second of the proxy's life.
#[derive(Debug, Clone, Copy, Default)]
pub struct SoakSample {
    /// Seconds since the start.
    pub second: u64,
    /// Resident memory.
    pub rss_bytes: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// HTTP answers so far.
    pub requests: u64,
    /// WebSocket sessions completed so far.
    pub sessions: u64,
}

/// What the soak measured, and whether memory and descriptors stayed flat.
#[derive(Debug, Clone)]
pub struct SoakReport {
    /// One sample a second.
    pub samples: Vec<SoakSample>,
    /// Distinct client keys the proxy saw.
    pub keys: u64,
    /// Keys its keyed limiter pushed out.
    pub evictions: u64,
    /// Why it is not flat, if it is not.
    pub failure: Option<String>,
}

/// Runs the soak.
pub fn run(opts: &SoakOptions) -> anyhow::Result<SoakReport> {
    if opts.seconds < 9 {
        bail!("a soak needs at least 9 seconds (warm-up, then two thirds to compare)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let ws_upstream = runtime.block_on(ws_echo())?;
    let mut lab = super::run::LabOptions::new(super::run::Scenario::Quick, opts.spillway_bin.clone());
    // A backend that answers at once: the soak is about the proxy's own memory.
    (lab.pool, lab.service_ms) = (64, 0);
    let (_backend, backend) = start_backend(&lab)?;
    let work = std::env::temp_dir().join(format!("spillway-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let config = work.join("spillway.toml");
    std::fs::write(&config, proxy_config(backend, ws_upstream))?;
    let (proxy, web, admin) = start_proxy(&opts.spillway_bin, &config)?;
    let web: SocketAddr = web.parse().context("the proxy's address")?;
    let pid = proxy.0.id();

    let (requests, sessions) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4u64 {
        load.push(runtime.spawn(http_churn(web, worker, requests.clone(), stop.clone())));
    }
    for _ in 0..2 {
        load.push(runtime.spawn(ws_churn(web, sessions.clone(), stop.clone())));
    }

    let mut samples = Vec::new();
    for second in 1..=opts.seconds {
        std::thread::sleep(Duration::from_secs(1));
        samples.push(SoakSample {
            second,
            rss_bytes: rss(pid),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            requests: requests.load(Ordering::Relaxed),
            sessions: sessions.load(Ordering::Relaxed),
        });
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in load {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    });
    let metrics = http_get(admin, "/metrics").unwrap_or_default();
    let metric = |name: &str| {
        metrics.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    let keys = metric("spillway_rate_limiter_keys{route=\"api\"}").unwrap_or(0.0) as u64;
    let evictions = metric("spillway_rate_limiter_evictions_total{route=\"api\"}").unwrap_or(0.0) as u64;
    drop(proxy);
    let _ = std::fs::remove_dir_all(&work);
    let failure = verdict(&samples);
    Ok(SoakReport { samples, keys, evictions, failure })
}

/// The proxy: a keyed rate limit on every client address (at most 1 000 keys) and a concurrency
/// limit in front of the backend, and a WebSocket route.
fn proxy_config(backend: SocketAddr, ws: SocketAddr) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"
[server]
threads = 1
shutdown_grace = "1s"
[[listeners]]
name = "web"
listen = "127.0.0.1:0"
trusted_proxies = ["127.0.0.1/32"]
[[upstreams]]
name = "backend"
addrs = ["{backend}"]
[[upstreams]]
name = "ws"
addrs = ["{ws}"]
[[routes]]
name = "live"
listener = "web"
upstream = "ws"
path_prefix = "/live"
[routes.websocket]
policy = "drop_oldest"
queue = 64
[[routes]]
name = "api"
listener = "web"
upstream = "backend"
[routes.concurrency]
max = 32
queue = 64
queue_timeout = "100ms"
[[routes.rate]]
key = "ip"
rate = 5
burst = 5
max_keys = 1000
"#
    )
}

/// Flat, or why not: the last third against the middle third.
fn verdict(samples: &[SoakSample]) -> Option<String> {
    let third = samples.len() / 3;
    let (middle, last) = (&samples[third..2 * third], &samples[2 * third..]);
    let max = |s: &[SoakSample], f: fn(&SoakSample) -> u64| s.iter().map(f).max().unwrap_or(0);
    let (rss_mid, rss_last) = (max(middle, |s| s.rss_bytes), max(last, |s| s.rss_bytes));
    let (fds_mid, fds_last) = (max(middle, |s| s.fds), max(last, |s| s.fds));
    if rss_last > rss_mid + rss_mid / 10 + (2 << 20) {
        return Some(format!("memory grew after the warm-up: {} -> {} KiB", rss_mid >> 10, rss_last >> 10));
    }
    if fds_last > fds_mid + 16 {
        return Some(format!("descriptors grew after the warm-up: {fds_mid} -> {fds_last}"));
    }
    let first = samples.first().map_or(0, |s| s.requests + s.sessions);
    if samples.last().map_or(0, |s| s.requests + s.sessions) <= first {
        return Some("no traffic went through".into());
    }
    None
}

/// Prints the samples and the verdict.
pub fn write_table(report: &SoakReport, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>6} {:>12} {:>6} {:>12} {:>12}",
        "second", "proxy RSS", "fds", "requests", "ws sessions"
    )?;
    for s in &report.samples {
        writeln!(
            out,
            "{:>6} {:>8.1} MiB {:>6} {:>12} {:>12}",
            s.second,
            s.rss_bytes as f64 / (1 << 20) as f64,
            s.fds,
            s.requests,
            s.sessions
        )?;
    }
    writeln!(out, "keyed limiter: {} keys held, {} evicted", report.keys, report.evictions)?;
    match &report.failure {
        None => writeln!(out, "flat: memory and descriptors held steady after the warm-up"),
        Some(why) => writeln!(out, "NOT FLAT: {why}"),
    }
}

fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kib.and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// Keep-alive requests, each from a new client address, until `stop`.
async fn http_churn(web: SocketAddr, worker: u64, done: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut n = worker << 48;
    while !stop.load(Ordering::Relaxed) {
        let Ok(tcp) = tokio::net::TcpStream::connect(web).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await else {
            continue;
        };
        tokio::spawn(conn);
        // A fresh connection every 1 000 requests: connections churn too.
        for _ in 0..1000 {
            if stop.load(Ordering::Relaxed) || sender.ready().await.is_err() {
                break;
            }
            n += 1;
            let client = format!("2001:db8:{:x}:{:x}::1", (n >> 16) & 0xffff, n & 0xffff);
            let req = http::Request::get("/").header("host", "soak").header("x-forwarded-for", client);
            let Ok(req) = req.body(Empty::<bytes::Bytes>::new()) else { break };
            match sender.send_request(req).await {
                Ok(resp) => {
                    let _ = resp.into_body().collect().await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => break,
            }
        }
    }
}

/// WebSocket sessions through the proxy: open, ten messages there and back, close; until `stop`.
async fn ws_churn(web: SocketAddr, done: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    use tokio_tungstenite::tungstenite::Message;
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(format!("ws://{web}/live")).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        for i in 0..10 {
            if ws.send(Message::text(format!("message {i}"))).await.is_err() {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), ws.next()).await;
        }
        let _ = ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(1), ws.next()).await {}
        done.fetch_add(1, Ordering::Relaxed);
    }
}

/// A WebSocket echo server in this process: the WebSocket route's upstream.
async fn ws_echo() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(s).await else { return };
                let (mut tx, mut rx) = ws.split();
                while let Some(Ok(m)) = rx.next().await {
                    if m.is_close() || tx.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss_mib: impl Fn(u64) -> u64, fds: impl Fn(u64) -> u64) -> Vec<SoakSample> {
        (1..=30)
            .map(|s| SoakSample {
                second: s,
                rss_bytes: rss_mib(s) << 20,
                fds: fds(s),
                requests: s * 100,
                sessions: s,
            })
            .collect()
    }

    #[test]
    fn flat_passes_and_growth_or_leaks_fail() {
        // Warm-up growth in the first third is allowed.
        assert_eq!(verdict(&samples(|s| if s < 10 { s } else { 10 }, |_| 30)), None);
        // Memory that keeps growing, or descriptors that leak, do not.
        assert!(verdict(&samples(|s| 10 + s / 2, |_| 30)).unwrap().contains("memory"));
        assert!(verdict(&samples(|_| 10, |s| 30 + 2 * s)).unwrap().contains("descriptors"));
        // Nothing flowing is not a pass either.
        let idle: Vec<_> = samples(|_| 10, |_| 30)
            .into_iter()
            .map(|s| SoakSample { requests: 0, sessions: 0, ..s })
            .collect();
        assert!(verdict(&idle).unwrap().contains("no traffic"));
    }
}
