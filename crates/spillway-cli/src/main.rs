//! `spillway`: the command-line face of Spillway.

use clap::Parser;

/// Honest backpressure and overload protection for any service.
#[derive(Debug, Parser)]
#[command(name = "spillway", version, about, long_about = None)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    Ok(())
}
