//! Measuring: interleaved repetitions, medians, one output row per comparison.

use std::hint::black_box;
use std::time::Instant;

/// One comparison: our time per operation against the anchor's, in the same process.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) name: &'static str,
    pub(crate) ours_ns: f64,
    pub(crate) anchor: &'static str,
    pub(crate) anchor_ns: f64,
}

impl Row {
    pub(crate) fn ratio(&self) -> f64 {
        self.ours_ns / self.anchor_ns
    }

    pub(crate) fn print(&self, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "name": self.name,
                    "ours_ns": round(self.ours_ns),
                    "anchor": self.anchor,
                    "anchor_ns": round(self.anchor_ns),
                    "ratio": round(self.ratio()),
                })
            );
        } else {
            println!(
                "{:<30} ours {:>9.2} ns   {:<44} {:>9.2} ns   ratio {:.2}",
                self.name,
                self.ours_ns,
                self.anchor,
                self.anchor_ns,
                self.ratio()
            );
        }
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nanoseconds per call of `op`, timed over `iters` calls.
#[allow(clippy::disallowed_methods)] // the harness measures wall time on purpose
pub(crate) fn time_per_op<F: FnMut() -> R, R>(iters: u64, mut op: F) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        black_box(op());
    }
    start.elapsed().as_nanos() as f64 / iters as f64
}

/// Wall nanoseconds for one run of `f` (which does `ops` operations in total), per operation.
#[allow(clippy::disallowed_methods)]
pub(crate) fn time_batch<F: FnOnce()>(ops: u64, f: F) -> f64 {
    let start = Instant::now();
    f();
    start.elapsed().as_nanos() as f64 / ops as f64
}

/// Runs `ours` and `anchor` alternately `reps` times and returns the two medians, so that a noisy
/// neighbour hurts both sides alike.
pub(crate) fn compare(
    name: &'static str,
    anchor: &'static str,
    reps: usize,
    mut ours: impl FnMut() -> f64,
    mut theirs: impl FnMut() -> f64,
) -> Row {
    // Warm up both sides once.
    ours();
    theirs();
    let mut a = Vec::with_capacity(reps);
    let mut b = Vec::with_capacity(reps);
    for _ in 0..reps.max(1) {
        a.push(ours());
        b.push(theirs());
    }
    Row { name, ours_ns: median(&mut a), anchor, anchor_ns: median(&mut b) }
}

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|x, y| x.total_cmp(y));
    v[v.len() / 2]
}
