//! Circuit breaker behaviour on a manual clock.

use spillway::breaker::{BreakerConfig, BreakerState, CircuitBreaker, Window};
use spillway::clock::ManualClock;
use std::time::Duration;

fn breaker(config: BreakerConfig) -> (CircuitBreaker<ManualClock>, ManualClock) {
    let clock = ManualClock::new();
    (CircuitBreaker::with_clock(config, clock.clone()), clock)
}

fn count_config() -> BreakerConfig {
    BreakerConfig {
        window: Window::Count(10),
        minimum_calls: 10,
        failure_rate: 0.5,
        open_duration: Duration::from_secs(10),
        open_jitter: 0.0,
        half_open_calls: 3,
        ..BreakerConfig::default()
    }
}

#[test]
fn opens_within_its_window_at_the_failure_threshold() {
    let (b, _) = breaker(count_config());
    // Below the minimum number of calls nothing trips, whatever the rate.
    for _ in 0..5 {
        b.try_acquire().unwrap().failure();
    }
    for _ in 0..4 {
        b.try_acquire().unwrap().success();
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.stats().failure_rate, 0.0, "no rate is judged below minimum_calls");
    // The 10th call fills the window with 5 failures of 10: the threshold.
    b.try_acquire().unwrap().success();
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.stats().opened, 1);
}

#[test]
fn a_healthy_window_stays_closed_as_it_slides() {
    let (b, _) = breaker(count_config());
    for i in 0..100 {
        let p = b.try_acquire().unwrap();
        // 4 failures in every 10 consecutive calls: 40 % < 50 %.
        if i % 10 < 4 { p.failure() } else { p.success() }
    }
    assert_eq!(b.state(), BreakerState::Closed);
    assert!((b.stats().failure_rate - 0.4).abs() < 1e-9);
}

#[test]
fn half_opens_exactly_at_retry_after_and_closes_on_good_trials() {
    let (b, clock) = breaker(count_config());
    for _ in 0..10 {
        b.try_acquire().unwrap().failure();
    }
    let refused = b.try_acquire().unwrap_err();
    assert_eq!(refused.retry_after(), Duration::from_secs(10));
    clock.advance(Duration::from_secs(10) - Duration::from_nanos(1));
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Duration::from_nanos(1));
    clock.advance(Duration::from_nanos(1));
    // Half-open: three trials, then refusals until they report.
    let trials: Vec<_> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.try_acquire().is_err());
    trials.into_iter().for_each(|t| t.success());
    assert_eq!(b.state(), BreakerState::Closed);
    assert!(b.try_acquire().is_ok());
    assert!(b.stats().rejected >= 3);
}

#[test]
fn failing_trials_open_it_again() {
    let (b, clock) = breaker(count_config());
    for _ in 0..10 {
        b.try_acquire().unwrap().failure();
    }
    clock.advance(Duration::from_secs(10));
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.stats().opened, 2);
    assert_eq!(b.try_acquire().unwrap_err().retry_after(), Duration::from_secs(10));
}

#[test]
fn an_abandoned_trial_gives_its_slot_back() {
    let (b, clock) = breaker(BreakerConfig { half_open_calls: 1, ..count_config() });
    for _ in 0..10 {
        b.try_acquire().unwrap().failure();
    }
    clock.advance(Duration::from_secs(10));
    drop(b.try_acquire().unwrap()); // cancelled: says nothing
    b.try_acquire().expect("the slot came back").success();
    assert_eq!(b.state(), BreakerState::Closed);
}

#[test]
fn slow_calls_trip_it_too() {
    let config = BreakerConfig {
        slow_call: Duration::from_millis(100),
        slow_call_rate: 0.5,
        failure_rate: 1.0,
        ..count_config()
    };
    let (b, clock) = breaker(config);
    for i in 0..10 {
        let p = b.try_acquire().unwrap();
        clock.advance(Duration::from_millis(if i % 2 == 0 { 150 } else { 10 }));
        p.success();
    }
    assert_eq!(b.state(), BreakerState::Open);
}

#[test]
fn a_time_window_forgets_old_failures() {
    let config = BreakerConfig { window: Window::Time(2), minimum_calls: 4, ..count_config() };
    let (b, clock) = breaker(config);
    for _ in 0..3 {
        b.try_acquire().unwrap().failure();
    }
    clock.advance(Duration::from_secs(3)); // those three are out of the window now
    for _ in 0..3 {
        b.try_acquire().unwrap().success();
    }
    b.try_acquire().unwrap().failure();
    assert_eq!(b.state(), BreakerState::Closed, "{:?}", b.stats());
    assert_eq!(b.stats().calls_in_window, 4);
}

#[test]
fn open_duration_is_jittered_within_bounds() {
    let config = BreakerConfig { open_jitter: 0.1, ..count_config() };
    let mut seen = Vec::new();
    for _ in 0..20 {
        let clock = ManualClock::new();
        clock.advance_nanos(seen.len() as u64 * 7_919); // breakers made at different times
        let b = CircuitBreaker::with_clock(config, clock.clone());
        for _ in 0..10 {
            b.try_acquire().unwrap().failure();
        }
        let r = b.try_acquire().unwrap_err().retry_after();
        assert!(r >= Duration::from_secs(9) && r <= Duration::from_secs(11), "{r:?}");
        seen.push(r);
    }
    seen.dedup();
    assert!(seen.len() > 1, "jitter varies");
}

#[test]
fn forced_open_disabled_and_metrics_only() {
    let (b, _) = breaker(count_config());
    b.force_open();
    assert_eq!(b.state(), BreakerState::ForcedOpen);
    assert!(b.try_acquire().is_err());
    b.disable();
    for _ in 0..20 {
        b.try_acquire().unwrap().failure();
    }
    assert_eq!(b.state(), BreakerState::Disabled);
    b.metrics_only();
    for _ in 0..20 {
        b.try_acquire().expect("never refuses").failure();
    }
    assert_eq!(b.state(), BreakerState::MetricsOnly);
    assert_eq!(b.stats().opened, 2, "it would have opened twice");
    b.reset();
    assert_eq!(b.state(), BreakerState::Closed);
}
