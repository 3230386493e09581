//! Side-by-side comparison of Spillway's primitives with the crates users would otherwise pick.
//!
//! `cargo run --release -p spillway-benches -- --json` prints one JSON object a line:
//! `{"name", "ours_ns", "anchor", "anchor_ns", "ratio"}` with ratio = ours / anchor, each the
//! median of several interleaved repetitions measured in this one process.

mod channel;
mod harness;
mod limit;
mod rate;
mod tower_layers;

use harness::Row;

/// A named set of rows.
type Group = (&'static str, fn(usize) -> Vec<Row>);

const GROUPS: &[Group] = &[
    ("rate", rate::rows),
    ("limit", limit::rows),
    ("channel", channel::rows),
    ("tower", tower_layers::rows),
];

fn main() {
    let json = std::env::args().any(|a| a == "--json");
    let reps =
        std::env::args().skip_while(|a| a != "--reps").nth(1).and_then(|v| v.parse().ok()).unwrap_or(7usize);
    let filter: Option<String> = std::env::args().skip_while(|a| a != "--only").nth(1);
    let mut rows: Vec<Row> = Vec::new();
    for &(group, run) in GROUPS {
        if filter.as_deref().is_some_and(|f| !group.contains(f)) {
            continue;
        }
        for row in run(reps) {
            row.print(json);
            rows.push(row);
        }
    }
    let _ = rows;
}
