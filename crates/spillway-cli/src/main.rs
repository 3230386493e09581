//! `spillway`: the command-line face of Spillway. Thin: parse, then hand over to a library.

use clap::{Parser, Subcommand};
use spillway_lab::load::{Profile, RetryMode};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

/// Honest backpressure and overload protection for any service.
#[derive(Debug, Parser)]
#[command(name = "spillway", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy: bounded queues, early 503/429 with Retry-After, rate limits, shedding and
    /// breakers in front of any HTTP service. SIGHUP reloads the config, SIGTERM drains.
    Serve {
        /// The config file (TOML).
        #[arg(long, short)]
        config: std::path::PathBuf,
        /// Worker threads (default: the config's server.threads, else one per core).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Validate a config file and exit: non-zero, with file:line:column: key: message, if invalid.
    Check {
        /// The config file (TOML).
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
    /// Show what backpressure does: a producer at 1000 req/s against a consumer at 500 req/s,
    /// without and with Spillway's bounded queues and rate limits, measured live.
    Demo {
        /// Seconds per run (HTTP demo: 20; in-process: 4).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=600))]
        seconds: Option<u32>,
        /// Where the HTTP demo writes report.html and results.json.
        #[arg(long, default_value = "spillway-demo")]
        out: std::path::PathBuf,
        /// The older, faster picture: a producer and a consumer on threads, no HTTP.
        #[arg(long)]
        in_process: bool,
        /// Producer attempts per second (in-process demo).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        produce: u32,
        /// Items the consumer serves per second (in-process demo).
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        consume: u32,
        /// Capacity of the bounded queues (in-process demo).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        queue: u32,
    },
    /// The overload lab: a backend with no backpressure, contestants in front of it (nothing,
    /// Spillway static and adaptive, HAProxy if installed, external URLs), open-loop load;
    /// writes report.html and results.json and prints a summary.
    Lab {
        /// overload (every contestant at 4x and 10x, 20 s each), quick (smoke run), demo, or
        /// soak (the proxy under key and WebSocket churn for --seconds, default 60: memory and
        /// descriptors must stay flat).
        #[arg(long, default_value = "overload", value_parser = ["overload", "quick", "demo", "soak"])]
        scenario: String,
        /// Output directory.
        #[arg(long, default_value = "spillway-lab")]
        out: std::path::PathBuf,
        /// Seconds per run (default: the scenario's).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
        seconds: Option<u64>,
        /// An extra contestant, NAME=URL, fronting the lab's backend (see --backend-listen).
        #[arg(long, value_parser = parse_target)]
        target: Vec<(String, String)>,
        /// Where the backend listens (a fixed address lets an external proxy point at it).
        #[arg(long, default_value = "127.0.0.1:0")]
        backend_listen: SocketAddr,
        /// Skip the message-queue scenario (a NATS JetStream consumer without and with flow
        /// control; it runs when nats-server is installed).
        #[arg(long)]
        no_queue: bool,
    },
    /// Run every adaptive controller against a simulated server on virtual time, at several
    /// offered loads and through a capacity drop; prints goodput, latency and rejections.
    Simulate {
        /// Virtual seconds per run.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(4..=600))]
        seconds: u64,
        /// The random seed.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Workers in the simulated server.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=10_000))]
        workers: u64,
    },
    /// A demo HTTP backend with NO backpressure (the thing to protect): every request waits in
    /// an unbounded queue for one of --pool workers, each serving for --service-ms. GET /stats
    /// answers its counters as JSON. Prints "listening on ADDR" first.
    Backend {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Workers: requests served at the same time.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        pool: u32,
        /// Service time of one request, in milliseconds (0: answer as fast as possible).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=600_000))]
        service_ms: u64,
        /// Spread each service time uniformly within ± this percentage.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
        jitter: u32,
        /// Busy-spin a CPU for the service time instead of sleeping.
        #[arg(long)]
        cpu: bool,
        /// Runtime worker threads (default: one per CPU).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
        threads: Option<u32>,
    },
    /// An open-loop HTTP/1.1 load generator: sends at the rate a profile sets, whether or not
    /// answers come back, and measures latency from each request's intended send time.
    Load {
        /// Target URL (http:// only).
        #[arg(long)]
        url: String,
        /// Peak offered rate, requests a second.
        #[arg(long, value_parser = parse_rate)]
        rate: f64,
        /// Length of the run: 10, 10s, 500ms, 2m.
        #[arg(long, value_parser = spillway_lab::load::parse_duration)]
        duration: Duration,
        /// Per-request deadline in milliseconds; later answers are abandoned and counted late.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
        deadline_ms: u64,
        /// Shape of the rate: constant; step (R/4, R/2, 3R/4, R in four equal phases);
        /// ramp (0 to R); spike (R/4, with R through the middle third).
        #[arg(long, default_value = "constant")]
        profile: Profile,
        /// Connection cap; a request due when all are busy is dropped by the client (reported).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        connections: u32,
        /// On rejections: ignore; honour (pause for Retry-After); budget (retry once, ≤ 10 %).
        #[arg(long, default_value = "ignore")]
        retry_mode: RetryMode,
        /// Generator threads, each with a current-thread runtime.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
        threads: u32,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Unary gRPC calls over h2c (the URL's path is the method, the message empty):
        /// grpc-status 8 counts as 429, 14 as 503, grpc-retry-pushback-ms as Retry-After.
        #[arg(long)]
        grpc: bool,
    },
}

fn parse_target(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, url)) if !name.is_empty() && url.starts_with("http://") => Ok((name.into(), url.into())),
        _ => Err(format!("expected NAME=http://HOST:PORT/, got {s:?}")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!("expected a rate above 0 and at most 10000000, got {s:?}")),
    }
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // `spillway simulate | head`: the reader left; that is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { config, threads, log_format } => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
            match log_format {
                LogFormat::Text => logs.init(),
                LogFormat::Json => logs.json().init(),
            }
            let mut cfg = spillway_proxy::Config::load(&config)?;
            if let Some(t) = threads {
                cfg.threads = Some(t as usize);
            }
            let proxy = spillway_proxy::Proxy::start(cfg)?;
            let mut out = std::io::stdout().lock();
            for (name, addr) in proxy.listener_addrs() {
                writeln!(out, "listener {name} on http://{addr}")?;
            }
            if let Some(admin) = proxy.admin_addr() {
                writeln!(out, "admin on http://{admin}")?;
            }
            out.flush()?;
            drop(out);
            proxy.run_until_signalled(Some(&config))?;
        }
        Command::Check { config } => {
            let cfg = spillway_proxy::Config::load(&config)?;
            println!(
                "{}: ok ({} listeners, {} upstreams, {} routes, {} tcp listeners)",
                config.display(),
                cfg.listeners.len(),
                cfg.upstreams.len(),
                cfg.routes.len(),
                cfg.tcp.len()
            );
        }
        Command::Demo { seconds, out, in_process: false, .. } => {
            let mut opts = lab_options(spillway_lab::lab::run::Scenario::Demo)?;
            opts.seconds = seconds.map(u64::from);
            let results = spillway_lab::lab::run::run(&opts)?;
            let mut stdout = std::io::stdout().lock();
            spillway_lab::lab::run::write_demo_table(&results, &mut stdout)?;
            spillway_lab::lab::run::write_outputs(&results, &out)?;
            writeln!(stdout, "\nreport: {}", out.join("report.html").display())?;
        }
        Command::Lab { scenario, seconds, .. } if scenario == "soak" => {
            let opts = spillway_lab::lab::soak::SoakOptions {
                seconds: seconds.unwrap_or(60),
                spillway_bin: std::env::current_exe()?,
            };
            let report = spillway_lab::lab::soak::run(&opts)?;
            spillway_lab::lab::soak::write_table(&report, &mut std::io::stdout().lock())?;
            if let Some(why) = report.failure {
                anyhow::bail!("the soak failed: {why}");
            }
        }
        Command::Lab { scenario, out, seconds, target, backend_listen, no_queue } => {
            let scenario =
                spillway_lab::lab::run::Scenario::from_name(&scenario).expect("clap checked the name");
            let mut opts = lab_options(scenario)?;
            opts.seconds = seconds;
            opts.targets = target;
            opts.backend_listen = backend_listen;
            opts.queue &= !no_queue;
            let results = spillway_lab::lab::run::run(&opts)?;
            let mut stdout = std::io::stdout().lock();
            spillway_lab::lab::report::write_table(&results, &mut stdout)?;
            spillway_lab::lab::run::write_outputs(&results, &out)?;
            writeln!(
                stdout,
                "\nreport: {}\nresults: {}",
                out.join("report.html").display(),
                out.join("results.json").display()
            )?;
        }
        Command::Demo { seconds, produce, consume, queue, .. } => {
            let options = spillway_lab::demo::DemoOptions {
                seconds: seconds.unwrap_or(4),
                produce_rate: produce,
                consume_rate: consume,
                queue: queue as usize,
            };
            spillway_lab::demo::run(options, &mut std::io::stdout().lock())?;
        }
        Command::Simulate { seconds, seed, workers } => {
            let base = spillway_lab::sim::Scenario {
                seconds,
                seed,
                workers: workers as usize,
                ..Default::default()
            };
            spillway_lab::sim::print_tables(base, &[0.8, 2.0, 5.0, 10.0], &mut std::io::stdout().lock())?;
        }
        Command::Backend { listen, pool, service_ms, jitter, cpu, threads } => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                rt.worker_threads(n as usize);
            }
            let rt = rt.enable_all().build()?;
            let options = spillway_lab::backend::BackendOptions {
                pool: pool as usize,
                service: Duration::from_millis(service_ms),
                jitter_pct: jitter,
                cpu,
            };
            rt.block_on(async {
                let listener = tokio::net::TcpListener::bind(listen).await?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "listening on {}", listener.local_addr()?)?;
                out.flush()?;
                drop(out);
                spillway_lab::backend::serve(listener, options).await;
                anyhow::Ok(())
            })?;
        }
        Command::Load {
            url,
            rate,
            duration,
            deadline_ms,
            profile,
            connections,
            retry_mode,
            threads,
            json,
            grpc,
        } => {
            let options = spillway_lab::load::LoadOptions {
                url,
                rate,
                duration,
                deadline: Duration::from_millis(deadline_ms),
                profile,
                connections: connections as usize,
                retry_mode,
                threads: threads as usize,
                progress: std::io::stderr().is_terminal(),
                grpc,
            };
            // The generator runs on threads of its own; this runtime only waits for it.
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let report = rt.block_on(spillway_lab::load::run(options))?;
            let mut out = std::io::stdout().lock();
            if json {
                report.write_json(&mut out)?;
            } else {
                report.write_human(&mut out)?;
            }
        }
    }
    Ok(())
}

/// The lab's options, serving the backend and the proxy from this very executable.
fn lab_options(
    scenario: spillway_lab::lab::run::Scenario,
) -> anyhow::Result<spillway_lab::lab::run::LabOptions> {
    let mut opts = spillway_lab::lab::run::LabOptions::new(scenario, std::env::current_exe()?);
    opts.progress = std::io::stderr().is_terminal();
    Ok(opts)
}
