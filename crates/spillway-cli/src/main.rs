//! `spillway`: the command-line face of Spillway. Thin: parse, then hand over to a library.

use clap::{Parser, Subcommand};

/// Honest backpressure and overload protection for any service.
#[derive(Debug, Parser)]
#[command(name = "spillway", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> anyhow::Result<()> {
    match run(Cli::parse()) {
        // `spillway simulate | head`: the reader left; that is not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
