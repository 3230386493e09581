//! Criterion benchmarks of the core primitives' hot paths.
//!
//! `cargo bench -p spillway --bench core`. For side-by-side ratios against governor, tokio and
//! crossbeam, run `cargo run --release -p spillway-benches`.

use criterion::{Criterion, criterion_group, criterion_main};
use spillway::channel::OverflowPolicy;
use spillway::clock::{Clock, CoarseClock, MonotonicClock};
use spillway::limit::ConcurrencyLimiter;
use spillway::rate::{
    FixedWindow, Gcra, KeyedLimiter, LeakyBucket, Quota, RateLimit, RateLimiter, SlidingLog, SlidingWindow,
    TokenBucket,
};
use std::hint::black_box;
use std::time::Duration;

fn clocks(c: &mut Criterion) {
    let mut g = c.benchmark_group("clock");
    let mono = MonotonicClock::new();
    let coarse = CoarseClock::new();
    g.bench_function("monotonic", |b| b.iter(|| black_box(mono.now())));
    g.bench_function("coarse", |b| b.iter(|| black_box(coarse.now())));
    #[allow(clippy::disallowed_methods)] // the comparison point
    g.bench_function("std_instant", |b| b.iter(|| black_box(std::time::Instant::now())));
    g.finish();
}

fn rate(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_check_allowed");
    let q = Quota::per_second(1_000_000_000).expect("quota");
    let gcra = RateLimiter::new(Gcra::new(q));
    g.bench_function("gcra", |b| b.iter(|| black_box(gcra.check())));
    let precise = RateLimiter::with_clock(Gcra::new(q), MonotonicClock::new());
    g.bench_function("gcra_precise_clock", |b| b.iter(|| black_box(precise.check())));
    let leaky =
        RateLimiter::new(LeakyBucket::new(1_000_000_000, Duration::from_secs(1), 100).expect("quota"));
    g.bench_function("leaky_bucket", |b| b.iter(|| black_box(leaky.check())));
    let token =
        RateLimiter::new(TokenBucket::new(u32::MAX, u32::MAX, Duration::from_millis(1)).expect("quota"));
    g.bench_function("token_bucket", |b| b.iter(|| black_box(token.check())));
    let fixed = RateLimiter::new(FixedWindow::new(q).expect("quota"));
    g.bench_function("fixed_window", |b| b.iter(|| black_box(fixed.check())));
    let sliding =
        RateLimiter::new(SlidingWindow::new(Quota::per_second(10_000_000).expect("quota")).expect("quota"));
    g.bench_function("sliding_window", |b| b.iter(|| black_box(sliding.check())));
    let log = SlidingLog::new(Quota::per_second(1 << 20).expect("quota")).expect("quota");
    g.bench_function("sliding_log", |b| b.iter(|| black_box(log.check())));
    let keyed = KeyedLimiter::new(Gcra::new(q), 1 << 17);
    let mut k = 0u64;
    g.bench_function("keyed_gcra_100k_keys", |b| {
        b.iter(|| {
            k = (k + 7919) % 100_000;
            black_box(keyed.check_key(&k))
        })
    });
    g.finish();
}

fn limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit");
    let limiter = ConcurrencyLimiter::new(1_000_000);
    g.bench_function("try_acquire_release", |b| b.iter(|| drop(black_box(limiter.try_acquire()))));
    let full = ConcurrencyLimiter::new(1);
    let _held = full.try_acquire();
    g.bench_function("try_acquire_rejected", |b| b.iter(|| black_box(full.try_acquire().is_err())));
    g.finish();
}

fn channel(c: &mut Criterion) {
    let mut g = c.benchmark_group("channel");
    let (tx, rx) = spillway::channel::channel::<u64>(1024, OverflowPolicy::Reject);
    g.bench_function("try_send_try_recv", |b| {
        b.iter(|| {
            let _ = tx.try_send(black_box(1));
            black_box(rx.try_recv())
        })
    });
    let (tx, _rx) = spillway::channel::channel::<u64>(1024, OverflowPolicy::DropOldest);
    for i in 0..1024 {
        let _ = tx.try_send(i);
    }
    g.bench_function("drop_oldest_full", |b| b.iter(|| black_box(tx.try_send(black_box(1)))));
    g.finish();
}

criterion_group!(core, clocks, rate, limit, channel);
criterion_main!(core);
