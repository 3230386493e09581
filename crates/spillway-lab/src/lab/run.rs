//! Running a scenario end to end: for each contestant and offered load, a fresh backend process
//! (`spillway backend`), the contestant in front of it (nothing, `spillway serve` with a static or
//! adaptive limit, HAProxy, or an external URL), open-loop load from this process, and a sampler
//! reading the backend's `/stats` and the proxy's `/metrics` once a second.

use super::results::{LabResults, Run, Sample};
use crate::load::{self, LoadOptions, Profile, RetryMode};
use anyhow::{Context, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A named set of contestants, loads and lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Every contestant at 4× and 10× capacity, 20 s each (about six minutes).
    Overload,
    /// Unprotected, static and Gradient2 at 4×, 4 s each: a smoke run for tests.
    Quick,
    /// Unprotected against Spillway's static limit at 5×, 20 s each: `spillway demo`.
    Demo,
}

impl Scenario {
    /// The scenario called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "overload" => Some(Self::Overload),
            "quick" => Some(Self::Quick),
            "demo" => Some(Self::Demo),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Overload => "overload",
            Self::Quick => "quick",
            Self::Demo => "demo",
        }
    }

    fn contestants(self) -> Vec<Contestant> {
        use Contestant::*;
        match self {
            Self::Overload => vec![
                Unprotected,
                Static,
                Adaptive("gradient2"),
                Adaptive("vegas"),
                Adaptive("aimd"),
                Adaptive("gradient"),
                Adaptive("slo"),
                Haproxy,
            ],
            Self::Quick => vec![Unprotected, Static, Adaptive("gradient2")],
            Self::Demo => vec![Unprotected, Static],
        }
    }

    fn loads(self) -> &'static [f64] {
        match self {
            Self::Overload => &[4.0, 10.0],
            Self::Quick => &[4.0],
            Self::Demo => &[5.0],
        }
    }

    fn seconds(self) -> u64 {
        match self {
            Self::Overload | Self::Demo => 20,
            Self::Quick => 4,
        }
    }
}

/// Who stands between the load and the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Contestant {
    Unprotected,
    Static,
    Adaptive(&'static str),
    Haproxy,
    External { name: String, url: String },
}

impl Contestant {
    fn name(&self) -> String {
        match self {
            Self::Unprotected => "unprotected".into(),
            Self::Static => "static".into(),
            Self::Adaptive(a) => (*a).into(),
            Self::Haproxy => "haproxy".into(),
            Self::External { name, .. } => name.clone(),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The scenario.
    pub scenario: Scenario,
    /// Seconds per run (default: the scenario's).
    pub seconds: Option<u64>,
    /// The `spillway` executable that serves the backend and the proxy.
    pub spillway_bin: PathBuf,
    /// Extra contestants: a name and a URL that fronts the lab's backend (start it on a known
    /// address with `backend_listen`).
    pub targets: Vec<(String, String)>,
    /// Where the backend listens (`127.0.0.1:0`: a free port per run).
    pub backend_listen: SocketAddr,
    /// Backend workers.
    pub pool: usize,
    /// Backend service time.
    pub service_ms: u64,
    /// The clients' deadline.
    pub deadline_ms: u64,
    /// Print progress lines to stderr.
    pub progress: bool,
    /// Also run the message-queue scenario ([`super::queue`]) if `nats-server` is installed
    /// (default: every scenario but `demo`).
    pub queue: bool,
}

impl LabOptions {
    /// The issue's scenario: pool 10 × 50 ms (capacity 200 req/s), 1 s deadline.
    pub fn new(scenario: Scenario, spillway_bin: PathBuf) -> Self {
        Self {
            scenario,
            seconds: None,
            spillway_bin,
            targets: Vec::new(),
            backend_listen: "127.0.0.1:0".parse().expect("an address"),
            pool: 10,
            service_ms: 50,
            deadline_ms: 1000,
            progress: false,
            queue: scenario != Scenario::Demo,
        }
    }
}

/// Kills a child process when dropped.
pub(super) struct Proc(pub(super) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the scenario and returns everything it measured.
pub fn run(opts: &LabOptions) -> anyhow::Result<LabResults> {
    let seconds = opts.seconds.unwrap_or_else(|| opts.scenario.seconds());
    let capacity = opts.pool as f64 * 1000.0 / opts.service_ms.max(1) as f64;
    let mut contestants = opts.scenario.contestants();
    if !haproxy_available() {
        contestants.retain(|c| *c != Contestant::Haproxy);
    }
    contestants
        .extend(opts.targets.iter().map(|(n, u)| Contestant::External { name: n.clone(), url: u.clone() }));
    let work = std::env::temp_dir().join(format!("spillway-lab-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let mut results = LabResults {
        scenario: opts.scenario.name().into(),
        pool: opts.pool,
        service_ms: opts.service_ms,
        capacity_per_s: capacity,
        deadline_ms: opts.deadline_ms,
        seconds,
        runs: Vec::new(),
        queue: None,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    for &multiple in opts.scenario.loads() {
        for contestant in &contestants {
            if opts.progress {
                eprintln!("lab: {} at {multiple}x capacity for {seconds} s", contestant.name());
            }
            let run = run_one(opts, &runtime, &work, contestant, multiple, seconds, capacity)
                .with_context(|| format!("{} at {multiple}x", contestant.name()))?;
            results.runs.push(run);
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    if opts.queue {
        let mut q = super::queue::QueueOptions::new(seconds.clamp(3, 10));
        q.progress = opts.progress;
        results.queue = super::queue::run(&q).context("the queue scenario")?;
    }
    Ok(results)
}

fn run_one(
    opts: &LabOptions,
    runtime: &tokio::runtime::Runtime,
    work: &Path,
    contestant: &Contestant,
    multiple: f64,
    seconds: u64,
    capacity: f64,
) -> anyhow::Result<Run> {
    let (_backend, backend) = start_backend(opts)?;
    let mut _front = None;
    let (url, admin) = match contestant {
        Contestant::Unprotected => (format!("http://{backend}/"), None),
        Contestant::Static | Contestant::Adaptive(_) => {
            let config = proxy_config(contestant, backend, opts.pool);
            let path = work.join("spillway.toml");
            std::fs::write(&path, config)?;
            let (proc, web, admin) = start_proxy(&opts.spillway_bin, &path)?;
            _front = Some(proc);
            (format!("http://{web}/"), Some(admin))
        }
        Contestant::Haproxy => {
            let (proc, addr) = start_haproxy(work, backend, opts.pool)?;
            _front = Some(proc);
            (format!("http://{addr}/"), None)
        }
        Contestant::External { url, .. } => (url.clone(), None),
    };
    let rate = capacity * multiple;
    let deadline = Duration::from_millis(opts.deadline_ms);
    let load = LoadOptions {
        url,
        rate,
        duration: Duration::from_secs(seconds),
        deadline,
        profile: Profile::Constant,
        // Enough connections for every request that may be outstanding until its deadline.
        connections: ((rate * deadline.as_secs_f64() * 1.5) as usize).max(256),
        retry_mode: RetryMode::Ignore,
        threads: 1,
        progress: false,
        grpc: false,
    };
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || sample(backend, admin, &done))
    };
    let report = runtime.block_on(load::run(load));
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    Ok(Run { contestant: contestant.name(), load_multiple: multiple, load: report?, samples })
}

pub(super) fn start_backend(opts: &LabOptions) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut child = Proc(
        Command::new(&opts.spillway_bin)
            .args(["backend", "--listen", &opts.backend_listen.to_string()])
            .args(["--pool", &opts.pool.to_string(), "--service-ms", &opts.service_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} backend", opts.spillway_bin.display()))?,
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().context("backend stdout")?).read_line(&mut line)?;
    let addr = line.trim().strip_prefix("listening on ").with_context(|| format!("backend said {line:?}"))?;
    Ok((child, addr.parse()?))
}

/// The proxy's config for a contestant: one route, the backend's pool as the static limit and
/// the queue size; adaptive limits are not told the pool.
fn proxy_config(contestant: &Contestant, backend: SocketAddr, pool: usize) -> String {
    let policy = match contestant {
        Contestant::Static => {
            format!("[routes.concurrency]\nmax = {pool}\nqueue = {pool}\nqueue_timeout = \"100ms\"\n")
        }
        Contestant::Adaptive(algorithm) => format!(
            "[routes.adaptive]\nalgorithm = \"{algorithm}\"\nmin = 1\nmax = 200\ninitial = 20\nqueue = 10\n\
             queue_timeout = \"100ms\"\n{}",
            // The latency target (2 x the unloaded service time) for the two that take one.
            if matches!(*algorithm, "slo" | "aimd") { "target = \"100ms\"\n" } else { "" }
        ),
        _ => String::new(),
    };
    format!(
        r#"[admin]
listen = "127.0.0.1:0"
[server]
threads = 1
shutdown_grace = "1s"
[[listeners]]
name = "lab"
listen = "127.0.0.1:0"
[[upstreams]]
name = "backend"
addrs = ["{backend}"]
max_connections = 100000
[[routes]]
name = "lab"
listener = "lab"
upstream = "backend"
timeout = "5s"
{policy}"#
    )
}

pub(super) fn start_proxy(bin: &Path, config: &Path) -> anyhow::Result<(Proc, String, SocketAddr)> {
    let mut child = Proc(
        Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let mut out = BufReader::new(child.0.stdout.take().context("proxy stdout")?);
    let (mut web, mut admin) = (String::new(), String::new());
    out.read_line(&mut web)?;
    out.read_line(&mut admin)?;
    let addr = |l: &str| {
        l.trim().rsplit("http://").next().map(str::to_string).with_context(|| format!("proxy said {l:?}"))
    };
    Ok((child, addr(&web)?, addr(&admin)?.parse()?))
}

fn haproxy_available() -> bool {
    Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// HAProxy as the issue's anchor: `maxconn` = the pool, `timeout queue 300ms`.
fn start_haproxy(work: &Path, backend: SocketAddr, pool: usize) -> anyhow::Result<(Proc, SocketAddr)> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let config = format!(
        "global\n  nbthread 1\n  maxconn 4000\ndefaults\n  mode http\n  timeout connect 1s\n  timeout client 30s\n  \
         timeout server 30s\n  timeout queue 300ms\nfrontend lab\n  bind {addr}\n  default_backend app\nbackend app\n  \
         server app {backend} maxconn {pool}\n"
    );
    let path = work.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let child = Proc(
        Command::new("haproxy").arg("-f").arg(&path).stdout(Stdio::null()).stderr(Stdio::null()).spawn()?,
    );
    for _ in 0..100 {
        if TcpStream::connect(addr).is_ok() {
            return Ok((child, addr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("haproxy did not start listening on {addr}")
}

/// Once a second until `done`: the backend's queue and memory, the proxy's queue and limit.
fn sample(backend: SocketAddr, admin: Option<SocketAddr>, done: &AtomicBool) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut second = 0;
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        let mut s = Sample { second, ..Sample::default() };
        if let Some(stats) = http_get(backend, "/stats")
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&stats)
        {
            s.backend_waiting = v["waiting"].as_u64().unwrap_or(0);
            s.backend_rss_bytes = v["rss_bytes"].as_u64().unwrap_or(0);
        }
        if let Some(metrics) = admin.and_then(|a| http_get(a, "/metrics")) {
            s.proxy_queue = metric(&metrics, "spillway_queue_depth{route=\"lab\"}");
            s.proxy_limit = metric(&metrics, "spillway_concurrency_limit{route=\"lab\"}");
        }
        samples.push(s);
        second += 1;
    }
    samples
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// A small blocking GET (the body), or `None` if the server did not answer within a second.
pub(super) fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

/// The demo's answer in four numbers per side: the backend's queue, goodput, p99 of the answers
/// that came in time, and the backend's memory at the end.
pub fn write_demo_table(results: &LabResults, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(
        out,
        "\nBackend: {} workers x {} ms = {:.0} req/s. Offered: {:.0} req/s for {} s each. Client deadline {} ms.\n",
        results.pool,
        results.service_ms,
        results.capacity_per_s,
        results.runs.first().map_or(0.0, |r| r.load.rate),
        results.seconds,
        results.deadline_ms
    )?;
    writeln!(
        out,
        "{:<18} {:>14} {:>20} {:>10} {:>12} {:>16}",
        "", "backend queue", "goodput", "ok p99", "rejected", "backend memory"
    )?;
    for run in &results.runs {
        let label = if run.contestant == "unprotected" { "without Spillway" } else { "with Spillway" };
        let t = &run.load.totals;
        writeln!(
            out,
            "{:<18} {:>14} {:>11.0} /s ({:>3.0}%) {:>7.0} ms {:>11.1}% {:>12.1} MiB",
            label,
            run.max_backend_waiting(),
            run.load.goodput_per_s,
            100.0 * run.goodput_fraction(results.capacity_per_s),
            run.load.ok_latency.p99_ms,
            100.0 * t.rejected() as f64 / t.sent.max(1) as f64,
            run.final_backend_rss() as f64 / (1 << 20) as f64,
        )?;
    }
    Ok(())
}

/// Writes `results.json` and `report.html` into `dir`.
pub fn write_outputs(results: &LabResults, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = std::fs::File::create(dir.join("results.json"))?;
    serde_json::to_writer_pretty(std::io::BufWriter::new(json), results)?;
    let mut html = std::io::BufWriter::new(std::fs::File::create(dir.join("report.html"))?);
    super::report::write_html(results, &mut html)?;
    html.flush()?;
    Ok(())
}
