//! Writes the lab report of made-up results, to look at the report (or test it in a browser)
//! without running the lab:
//!
//! ```text
//! cargo run --release -p spillway-lab --example sample_report [-- OUT.html]
//! ```
//!
//! The default output is `target/sample-report.html`; the summary table goes to stdout.

use spillway_lab::lab::report::{sample_results, write_html, write_table};
use std::io::{BufWriter, Write};

fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "target/sample-report.html".to_owned());
    let results = sample_results();
    let mut file = BufWriter::new(std::fs::File::create(&path)?);
    write_html(&results, &mut file)?;
    file.flush()?;
    write_table(&results, &mut std::io::stdout().lock())?;
    println!("\nwrote {path}");
    Ok(())
}
