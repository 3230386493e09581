//! Loom model checks of the concurrency limiter: the lock-free permit word and the hand-off to
//! queued waiters.
//!
//! `RUSTFLAGS="--cfg loom" cargo test --release -p spillway --test loom_limit`
#![cfg(loom)]

use loom::thread;
use spillway::clock::ManualClock;
use spillway::limit::ConcurrencyLimiter;

#[test]
fn racing_try_acquire_never_admits_two() {
    loom::model(|| {
        let limiter = ConcurrencyLimiter::builder(1).clock(ManualClock::new()).build();
        let other = limiter.clone();
        let t = thread::spawn(move || other.try_acquire_owned().ok());
        let mine = limiter.try_acquire_owned().ok();
        let theirs = t.join().unwrap();
        assert!(mine.is_some() ^ theirs.is_some());
        drop((mine, theirs));
        assert_eq!(limiter.in_flight(), 0);
    });
}

/// A release racing a caller that is joining the queue: the caller always gets the permit.
#[test]
fn a_release_never_misses_a_waiter() {
    loom::model(|| {
        let limiter = ConcurrencyLimiter::builder(1).queue(1).clock(ManualClock::new()).build();
        let held = limiter.try_acquire_owned().unwrap();
        let other = limiter.clone();
        let t = thread::spawn(move || other.acquire_blocking().map(drop).is_ok());
        drop(held);
        assert!(t.join().unwrap());
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.stats().waiting, 0);
    });
}
