//! The adaptive limiter drives its concurrency limiter's limit from finished requests.

use spillway::adaptive::{AdaptiveLimiter, Aimd, LimitAlgorithm, Sample, Windowed};
use spillway::limit::ConcurrencyLimiter;
use std::time::Duration;

#[test]
fn drops_shrink_and_successes_grow_the_live_limit() {
    let algorithm = Aimd::default().with_bounds(2, 50).with_initial(10);
    let limiter = AdaptiveLimiter::new(algorithm, ConcurrencyLimiter::new(1));
    assert_eq!(limiter.limit(), 10);
    assert_eq!(limiter.limiter().limit(), 10);
    for _ in 0..5 {
        limiter.try_acquire().unwrap().dropped();
    }
    // 10 → 9 → 8 → 7 → 6 → 5 (⌊x · 0.9⌋ each time).
    assert_eq!(limiter.limiter().limit(), 5);
    // Successes grow it while the limit is in use (in flight ≥ limit / 2).
    for _ in 0..10 {
        let held: Vec<_> = (0..3).map(|_| limiter.try_acquire().unwrap()).collect();
        held.into_iter().for_each(|p| p.success());
    }
    assert!(limiter.limiter().limit() > 5, "{limiter:?}");
    // A permit dropped without an outcome teaches nothing.
    let before = limiter.limit();
    drop(limiter.try_acquire().unwrap());
    assert_eq!(limiter.limit(), before);
    assert_eq!(limiter.limiter().in_flight(), 0);
}

#[test]
fn windowed_passes_one_aggregate_per_window() {
    let mut w = Windowed::new(Aimd::default().with_bounds(1, 100).with_initial(10), 4);
    let s = |dropped| Sample { latency: Duration::from_millis(1), in_flight: 10, dropped };
    assert_eq!(w.on_sample(s(false)), 10);
    assert_eq!(w.on_sample(s(true)), 10);
    assert_eq!(w.on_sample(s(false)), 10);
    assert_eq!(w.on_sample(s(false)), 9, "one drop in the window: the window counts as dropped");
    for _ in 0..4 {
        w.on_sample(s(false));
    }
    assert_eq!(w.limit(), 10);
}
