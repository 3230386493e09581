//! Property tests for every rate algorithm, on a manual clock, over random arrival sequences:
//! the admission bound each algorithm documents, exact `retry_after`, honest `remaining` and
//! `reset`.

use proptest::prelude::*;
use spillway::clock::ManualClock;
use spillway::rate::{
    Algorithm, Decision, FixedWindow, Gcra, LeakyBucket, Quota, RateLimit, RateLimiter, SlidingLog,
    SlidingWindow, TokenBucket,
};
use std::time::Duration;

const MS: u64 = 1_000_000;

/// The algorithms under test, with the most requests each may admit in a span of `t` ns.
#[derive(Debug, Clone)]
enum Alg {
    Gcra { count: u32, period_ms: u64, burst: u32 },
    Leaky { count: u32, period_ms: u64, burst: u32, delay: u32 },
    Token { capacity: u32, refill: u32, period_ms: u64 },
    Fixed { count: u32, period_ms: u64 },
    Sliding { count: u32, period_ms: u64 },
}

fn alg() -> impl Strategy<Value = Alg> {
    prop_oneof![
        (1u32..20, 1u64..2000, 1u32..20).prop_map(|(count, period_ms, burst)| Alg::Gcra {
            count,
            period_ms,
            burst
        }),
        (1u32..20, 1u64..2000, 0u32..10, 0u32..10).prop_map(|(count, period_ms, burst, delay)| Alg::Leaky {
            count,
            period_ms,
            burst,
            delay
        }),
        (1u32..20, 1u32..10, 1u64..500).prop_map(|(capacity, refill, period_ms)| Alg::Token {
            capacity,
            refill,
            period_ms
        }),
        (1u32..20, 1u64..2000).prop_map(|(count, period_ms)| Alg::Fixed { count, period_ms }),
        (1u32..20, 1u64..2000).prop_map(|(count, period_ms)| Alg::Sliding { count, period_ms }),
    ]
}

fn quota(count: u32, period_ms: u64) -> Quota {
    Quota::new(count, Duration::from_millis(period_ms)).unwrap()
}

/// Runs `f` with the algorithm as a concrete type.
macro_rules! with_alg {
    ($a:expr, |$x:ident| $body:expr) => {
        match *$a {
            Alg::Gcra { count, period_ms, burst } => {
                let $x = Gcra::new(quota(count, period_ms).with_burst(burst).unwrap());
                $body
            }
            Alg::Leaky { count, period_ms, burst, delay } => {
                let $x =
                    LeakyBucket::new(count, Duration::from_millis(period_ms), burst).unwrap().delay(delay);
                $body
            }
            Alg::Token { capacity, refill, period_ms } => {
                let $x = TokenBucket::new(capacity, refill, Duration::from_millis(period_ms)).unwrap();
                $body
            }
            Alg::Fixed { count, period_ms } => {
                let $x = FixedWindow::new(quota(count, period_ms)).unwrap();
                $body
            }
            Alg::Sliding { count, period_ms } => {
                let $x = SlidingWindow::new(quota(count, period_ms)).unwrap();
                $body
            }
        }
    };
}

impl Alg {
    /// Most weight admissible in a closed span from `a` to `b` (ns).
    fn bound(&self, a: u64, b: u64) -> u128 {
        let t = u128::from(b - a);
        let ceil = |p: u64| t.div_ceil(u128::from(p * MS));
        match *self {
            // burst + t/T  ⇔  n·T ≤ burst·T + t; returned scaled below by `fits`.
            Alg::Gcra { .. } | Alg::Leaky { .. } => unreachable!("continuous bounds use fits()"),
            Alg::Token { capacity, refill, period_ms } => {
                u128::from(capacity) + u128::from(refill) * ceil(period_ms)
            }
            Alg::Fixed { count, period_ms } | Alg::Sliding { count, period_ms } => {
                // Windows touched by the span.
                let w = period_ms * MS;
                u128::from(count) * u128::from(b / w - a / w + 1)
            }
        }
    }

    fn fits(&self, weight: u128, a: u64, b: u64) -> bool {
        let t = u128::from(b - a);
        match *self {
            Alg::Gcra { count, period_ms, burst } | Alg::Leaky { count, period_ms, burst, .. } => {
                let burst = if matches!(self, Alg::Leaky { .. }) { burst + 1 } else { burst };
                let emission = u128::from(period_ms * MS / u64::from(count));
                weight * emission <= u128::from(burst) * emission + t
            }
            _ => weight <= self.bound(a, b),
        }
    }
}

fn arrivals() -> impl Strategy<Value = Vec<(u64, u32)>> {
    // Gaps from 0 (simultaneous) to 300 ms, weights mostly 1.
    prop::collection::vec(
        (prop_oneof![Just(0u64), 0u64..300 * MS], prop_oneof![3 => Just(1u32), 1 => 0u32..5]),
        1..150,
    )
}

fn check_bound(alg: &Alg, admitted: &[(u64, u32)]) -> Result<(), TestCaseError> {
    for i in 0..admitted.len() {
        let mut weight = 0u128;
        for j in i..admitted.len() {
            weight += u128::from(admitted[j].1);
            prop_assert!(
                alg.fits(weight, admitted[i].0, admitted[j].0),
                "{alg:?}: {weight} admitted between {} and {} ns",
                admitted[i].0,
                admitted[j].0
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// On the real limiter and its real loop: admitted weight in any span stays within the bound.
    #[test]
    fn admitted_within_bound(alg in alg(), arrivals in arrivals()) {
        let clock = ManualClock::new();
        let mut admitted = Vec::new();
        with_alg!(&alg, |a| {
            let limiter = RateLimiter::with_clock(a, clock.clone());
            for &(gap, weight) in &arrivals {
                clock.advance_nanos(gap);
                if limiter.check_n(weight).allowed && weight > 0 {
                    admitted.push((spillway::clock::Clock::now(&clock), weight));
                }
            }
        });
        check_bound(&alg, &admitted)?;
    }

    /// A denial's `retry_after` is exact: one nanosecond earlier is still denied, at
    /// `retry_after` the same request passes. `remaining` more unit requests pass right now, one
    /// more does not; after `reset`, the full limit is back.
    #[test]
    fn decisions_are_honest(alg in alg(), arrivals in arrivals()) {
        with_alg!(&alg, |a| {
            let mut state = 0u64;
            let mut now = 1u64;
            for &(gap, weight) in &arrivals {
                now += gap;
                let (d, next) = a.decide(state, now, weight);
                if d.allowed {
                    state = next;
                    honest_remaining(&a, state, now, d)?;
                    // After `reset`, the full allowance is back.
                    let (full, _) = a.decide(state, now + d.reset.as_nanos() as u64, 0);
                    prop_assert_eq!(full.remaining, full.limit, "{:?} at reset", a);
                } else if d.retry_after != Duration::MAX {
                    let r = d.retry_after.as_nanos() as u64;
                    prop_assert!(r > 0);
                    prop_assert!(a.decide(state, now + r, weight).0.allowed, "{:?}: not admitted at retry_after {}", a, r);
                    prop_assert!(!a.decide(state, now + r - 1, weight).0.allowed, "{:?}: retry_after {} is late", a, r);
                } else {
                    prop_assert!(weight > d.limit);
                }
            }
        });
    }

    /// The exact log: never more than `count` in any window, exact `retry_after`.
    #[test]
    fn sliding_log_is_exact(count in 1u32..20, period_ms in 1u64..2000, arrivals in arrivals()) {
        let clock = ManualClock::new();
        let log = SlidingLog::with_clock(quota(count, period_ms), clock.clone()).unwrap();
        let window = period_ms * MS;
        let mut admitted: Vec<(u64, u32)> = Vec::new();
        for &(gap, weight) in &arrivals {
            clock.advance_nanos(gap);
            let now = spillway::clock::Clock::now(&clock);
            let d = log.check_n(weight);
            if d.allowed {
                if weight > 0 {
                    admitted.push((now, weight));
                }
                let in_window: u32 = admitted.iter().filter(|(t, _)| t + window > now).map(|(_, w)| w).sum();
                prop_assert!(in_window <= count);
                prop_assert_eq!(d.remaining, count - in_window);
            } else if d.retry_after != Duration::MAX {
                let r = d.retry_after.as_nanos() as u64;
                clock.advance_nanos(r - 1);
                prop_assert!(!log.check_n(weight).allowed, "retry_after {} is late", r);
                clock.advance_nanos(1);
                let d2 = log.check_n(weight);
                prop_assert!(d2.allowed, "not admitted at retry_after {}", r);
                if weight > 0 {
                    admitted.push((now + r, weight));
                }
            }
        }
    }
}

fn honest_remaining<A: Algorithm>(a: &A, mut state: u64, now: u64, d: Decision) -> Result<(), TestCaseError> {
    for i in 0..d.remaining {
        let (d2, next) = a.decide(state, now, 1);
        prop_assert!(d2.allowed, "{:?}: remaining said {} but request {} was denied", a, d.remaining, i);
        state = next;
    }
    prop_assert!(!a.decide(state, now, 1).0.allowed, "{:?}: remaining {} is too low", a, d.remaining);
    Ok(())
}

proptest! {
    /// No quota, weight or instant makes a check panic, however extreme.
    #[test]
    fn extreme_inputs_never_panic(
        count in 1u32..=u32::MAX,
        period_s in prop_oneof![Just(u64::MAX), 1u64..=u64::MAX],
        burst in 1u32..=u32::MAX,
        state in any::<u64>(),
        now in any::<u64>(),
        n in any::<u32>(),
    ) {
        let period = Duration::from_secs(period_s);
        if let Ok(q) = Quota::new(count, period) {
            let q = q.with_burst(burst).unwrap();
            let _ = Gcra::new(q).decide(state, now, n);
            let _ = FixedWindow::new(q).unwrap().decide(state, now, n);
            if let Ok(w) = SlidingWindow::new(q) {
                let _ = w.decide(state, now, n);
                let _ = w.idle_at(state, now);
            }
        }
        if let Ok(b) = LeakyBucket::new(count, period, burst) {
            let _ = b.decide(state, now, n);
        }
        if let Ok(b) = TokenBucket::new(count, burst, period) {
            let _ = b.decide(state, now, n);
            let _ = b.idle_at(state, now);
        }
    }
}
