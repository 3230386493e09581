//! The concurrency limiter's hot path against tokio's semaphore.

use crate::harness::{Row, compare, time_per_op};
use spillway::limit::ConcurrencyLimiter;

const ITERS: u64 = 5_000_000;

pub(crate) fn rows(reps: usize) -> Vec<Row> {
    let ours = ConcurrencyLimiter::new(1_000_000);
    let theirs = tokio::sync::Semaphore::new(1_000_000);
    vec![compare(
        "concurrency_acquire_release",
        "tokio Semaphore try_acquire + drop",
        reps,
        || time_per_op(ITERS, || drop(ours.try_acquire().expect("free"))),
        || time_per_op(ITERS, || drop(theirs.try_acquire().expect("free"))),
    )]
}
