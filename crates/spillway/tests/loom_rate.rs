//! Loom model checks of the lock-free rate-limit paths: every interleaving of two threads.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release -p spillway --test loom_rate`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use spillway::clock::ManualClock;
use spillway::rate::{Gcra, KeyedLimiter, Quota, RateLimit, RateLimiter};

fn one_per_second() -> Gcra {
    Gcra::new(Quota::per_second(1).unwrap())
}

#[test]
fn two_racing_checks_admit_exactly_the_burst() {
    loom::model(|| {
        let limiter = Arc::new(RateLimiter::with_clock(one_per_second(), ManualClock::new()));
        let other = limiter.clone();
        let t = thread::spawn(move || other.check().allowed);
        let mine = limiter.check().allowed;
        let theirs = t.join().unwrap();
        assert!(mine ^ theirs, "exactly one of two racing requests passes a burst of 1");
    });
}

#[test]
fn racing_new_keys_in_one_table() {
    loom::model(|| {
        let limiter = Arc::new(KeyedLimiter::with_clock(one_per_second(), 8, ManualClock::new()));
        let other = limiter.clone();
        let t = thread::spawn(move || (other.check_key(&1u32).allowed, other.check_key(&2u32).allowed));
        let mine = limiter.check_key(&1u32).allowed;
        let (theirs1, theirs2) = t.join().unwrap();
        assert!(theirs2, "key 2 is only used once");
        assert!(mine ^ theirs1, "key 1: exactly one of two racing requests passes");
        assert!(!limiter.check_key(&1u32).allowed);
        assert!(!limiter.check_key(&2u32).allowed);
    });
}
