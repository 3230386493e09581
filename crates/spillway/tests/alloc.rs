//! The hot paths allocate nothing: counted with an instrumented global allocator.
//!
//! One test function on purpose: the allocator is global, and tests in one binary run on
//! parallel threads.

use spillway::adaptive::{AdaptiveLimiter, Gradient, Vegas, Windowed};
use spillway::breaker::{BreakerConfig, CircuitBreaker};
use spillway::channel::{OverflowPolicy, channel};
use spillway::limit::ConcurrencyLimiter;
use spillway::rate::{
    FixedWindow, Gcra, KeyedLimiter, LeakyBucket, Quota, RateLimit, RateLimiter, SlidingLog, SlidingWindow,
    TokenBucket,
};
use spillway::shed::{Criticality, PriorityShedder};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use std::alloc::System;
use std::hint::black_box;
use std::time::Duration;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `op` many times after one warm-up call and returns the allocations it made.
fn allocations<R>(mut op: impl FnMut() -> R) -> usize {
    black_box(op());
    let region = Region::new(GLOBAL);
    for _ in 0..10_000 {
        black_box(op());
    }
    let stats = region.change();
    stats.allocations + stats.reallocations
}

#[test]
fn hot_paths_do_not_allocate() {
    // The coarse clock's thread allocates once as it starts: let it start before counting.
    drop(spillway::clock::CoarseClock::new());
    std::thread::sleep(Duration::from_millis(20));
    // The instrument itself works.
    let boxed = allocations(|| Box::new(black_box(1u64)));
    assert!(boxed >= 10_000, "instrument counted {boxed}");

    let quota = Quota::per_second(1000).unwrap();
    let gcra = RateLimiter::new(Gcra::new(quota));
    assert_eq!(allocations(|| gcra.check()), 0, "gcra check");
    let leaky = RateLimiter::new(LeakyBucket::new(1000, Duration::from_secs(1), 10).unwrap());
    assert_eq!(allocations(|| leaky.check()), 0, "leaky bucket check");
    let bucket = RateLimiter::new(TokenBucket::new(100, 10, Duration::from_millis(10)).unwrap());
    assert_eq!(allocations(|| bucket.check()), 0, "token bucket check");
    let fixed = RateLimiter::new(FixedWindow::new(quota).unwrap());
    assert_eq!(allocations(|| fixed.check()), 0, "fixed window check");
    let sliding = RateLimiter::new(SlidingWindow::new(quota).unwrap());
    assert_eq!(allocations(|| sliding.check()), 0, "sliding window check");
    let log = SlidingLog::new(quota).unwrap();
    assert_eq!(allocations(|| log.check()), 0, "sliding log check");

    let keyed = KeyedLimiter::new(Gcra::new(quota), 1024);
    let mut k = 0u64;
    let churn = allocations(|| {
        k += 1;
        keyed.check_key(&k)
    });
    assert_eq!(churn, 0, "keyed check with key churn and evictions");

    let limiter = ConcurrencyLimiter::new(4);
    assert_eq!(allocations(|| drop(limiter.try_acquire())), 0, "try_acquire + release");
    let full = ConcurrencyLimiter::new(1);
    let _held = full.try_acquire().unwrap();
    assert_eq!(allocations(|| full.try_acquire().is_err()), 0, "try_acquire rejected");

    let shedder = PriorityShedder::new(ConcurrencyLimiter::new(100));
    assert_eq!(allocations(|| drop(shedder.try_acquire(Criticality::Sheddable))), 0, "priority shedder");

    let breaker = CircuitBreaker::new(BreakerConfig::default());
    assert_eq!(allocations(|| breaker.try_acquire().map(|p| p.success()).is_ok()), 0, "breaker call");

    let adaptive = AdaptiveLimiter::new(Gradient::default(), ConcurrencyLimiter::new(1));
    assert_eq!(allocations(|| adaptive.try_acquire().map(|p| p.success()).is_ok()), 0, "adaptive permit");
    let windowed = AdaptiveLimiter::new(Windowed::new(Vegas::default(), 200), ConcurrencyLimiter::new(1));
    assert_eq!(allocations(|| windowed.try_acquire().map(|p| p.success()).is_ok()), 0, "windowed vegas");

    for policy in [OverflowPolicy::Reject, OverflowPolicy::DropOldest, OverflowPolicy::DropNewest] {
        let (tx, rx) = channel::<u64>(64, policy);
        assert_eq!(allocations(|| (tx.try_send(1), rx.try_recv())), 0, "try_send + try_recv, {policy:?}");
        for i in 0..64 {
            let _ = tx.try_send(i);
        }
        assert_eq!(allocations(|| tx.try_send(1)), 0, "try_send on a full channel, {policy:?}");
    }
}
