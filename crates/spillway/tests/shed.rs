//! Load shedding: classes shed in order, bulkhead guarantees hold, throttles follow the formula.

use spillway::clock::ManualClock;
use spillway::limit::ConcurrencyLimiter;
use spillway::shed::{Bulkhead, ClientThrottle, Criticality, PriorityShedder, RetryBudget};
use std::time::Duration;

#[test]
fn lower_classes_are_refused_first_as_load_rises() {
    let shedder = PriorityShedder::new(ConcurrencyLimiter::new(100));
    let mut held = Vec::new();
    // Fill with critical-plus work one request at a time and note when each class is first refused.
    let mut first_refused = [None; 4];
    for load in 0..100 {
        for class in Criticality::ALL {
            if first_refused[class as usize].is_none() && shedder.try_acquire(class).map(drop).is_err() {
                first_refused[class as usize] = Some(load);
            }
        }
        held.push(shedder.try_acquire(Criticality::CriticalPlus).unwrap());
    }
    assert_eq!(first_refused, [Some(50), Some(75), Some(90), None]);
    assert!(shedder.try_acquire(Criticality::CriticalPlus).is_err(), "the limit still holds");
}

#[test]
fn shares_follow_an_adaptive_limit() {
    let shedder = PriorityShedder::new(ConcurrencyLimiter::new(100)).with_share(Criticality::Sheddable, 0.2);
    shedder.limiter().set_limit(10);
    let a = shedder.try_acquire(Criticality::Sheddable).unwrap();
    let b = shedder.try_acquire(Criticality::Sheddable).unwrap();
    assert!(shedder.try_acquire(Criticality::Sheddable).is_err(), "20 % of 10");
    drop((a, b));
}

#[test]
fn bulkhead_guarantees_hold_against_a_greedy_partition() {
    let bulkhead = Bulkhead::new(10, &[3, 3, 0]);
    // The greedy partition takes everything it can: all but the others' guarantees.
    let greedy: Vec<_> = std::iter::from_fn(|| bulkhead.try_acquire(2)).take(100).collect();
    assert_eq!(greedy.len(), 4);
    let a: Vec<_> = std::iter::from_fn(|| bulkhead.try_acquire(0)).take(100).collect();
    let b: Vec<_> = std::iter::from_fn(|| bulkhead.try_acquire(1)).take(100).collect();
    assert_eq!((a.len(), b.len()), (3, 3), "each guarantee was there when needed");
    assert!(bulkhead.try_acquire(9).is_none(), "unknown partition");
    drop(greedy);
    // With the greedy one gone, partition 0 may borrow the free slots, keeping 1's guarantee.
    let more: Vec<_> = std::iter::from_fn(|| bulkhead.try_acquire(0)).take(100).collect();
    assert_eq!(more.len(), 4);
    drop((a, b, more));
    assert_eq!(bulkhead.in_flight(0), 0);
}

#[test]
fn client_throttle_follows_the_sre_formula_and_forgets() {
    let clock = ManualClock::new();
    let throttle = ClientThrottle::with_clock(2.0, Duration::from_secs(10), clock.clone());
    // Healthy: every request accepted, nothing throttled.
    for _ in 0..1000 {
        assert!(throttle.should_send());
        throttle.accepted();
    }
    assert_eq!(throttle.rejection_probability(), 0.0);
    // The backend starts refusing everything: once requests exceed 2 × accepts, local rejections
    // start, and their share follows (requests − 2·accepts) / (requests + 1).
    clock.advance(Duration::from_secs(11)); // forget the healthy past
    for _ in 0..100 {
        throttle.accepted();
    }
    let mut sent = 0;
    for _ in 0..1000 {
        if throttle.should_send() {
            sent += 1;
        }
    }
    let p = throttle.rejection_probability();
    assert!((p - (1000.0 - 200.0) / 1001.0).abs() < 1e-9, "{p}");
    assert!(sent < 1000 && sent > 200, "sent {sent}");
    clock.advance(Duration::from_secs(11));
    assert_eq!(throttle.rejection_probability(), 0.0, "the window forgets");
}

#[test]
fn retry_budget_has_a_ratio_and_a_floor() {
    let clock = ManualClock::new();
    let budget = RetryBudget::with_clock(0.1, 1, Duration::from_secs(10), clock.clone());
    // The floor alone: 1 a second over 10 s.
    let floor = (0..100).filter(|_| budget.try_retry()).count();
    assert_eq!(floor, 10);
    for _ in 0..200 {
        budget.record_request();
    }
    let more = (0..100).filter(|_| budget.try_retry()).count();
    assert_eq!(more, 20, "10 % of 200");
    clock.advance(Duration::from_secs(10));
    assert_eq!((0..100).filter(|_| budget.try_retry()).count(), 10, "old requests and retries expired");
}
