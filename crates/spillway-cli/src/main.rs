//! `spillway`: the command-line face of Spillway. Thin: parse, then hand over to a library.

use clap::{Parser, Subcommand};
use std::io::Write;

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
        /// Seconds per scenario.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=600))]
        seconds: u32,
        /// Producer attempts per second.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        produce: u32,
        /// Items the consumer serves per second.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        consume: u32,
        /// Capacity of the bounded queues.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        queue: u32,
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
                "{}: ok ({} listeners, {} upstreams, {} routes)",
                config.display(),
                cfg.listeners.len(),
                cfg.upstreams.len(),
                cfg.routes.len()
            );
        }
        Command::Demo { seconds, produce, consume, queue } => {
            let options = spillway_lab::demo::DemoOptions {
                seconds,
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
    }
    Ok(())
}
