//! Rate-limit checks against governor (direct and keyed).

use crate::harness::{Row, compare, time_batch, time_per_op};
use governor::{Quota as GQuota, RateLimiter as GLimiter};
use spillway::rate::{Gcra, KeyedLimiter, Quota, RateLimit, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

const ITERS: u64 = 5_000_000;

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).expect("non-zero")
}

pub(crate) fn rows(reps: usize) -> Vec<Row> {
    let mut rows = Vec::new();

    // Always admitted: a rate far above what one core can ask for.
    let ours = RateLimiter::new(Gcra::new(Quota::per_second(1_000_000_000).expect("quota")));
    let theirs = GLimiter::direct(GQuota::per_second(nz(1_000_000_000)));
    rows.push(compare(
        "gcra_allow",
        "governor direct check",
        reps,
        || time_per_op(ITERS, || assert!(ours.check().allowed)),
        || time_per_op(ITERS, || assert!(theirs.check().is_ok())),
    ));

    // The same with the precise clock (TSC read per check), to show what the coarse clock buys.
    let ours = RateLimiter::with_clock(
        Gcra::new(Quota::per_second(1_000_000_000).expect("quota")),
        spillway::clock::MonotonicClock::new(),
    );
    rows.push(compare(
        "gcra_allow_precise_clock",
        "governor direct check",
        reps,
        || time_per_op(ITERS, || assert!(ours.check().allowed)),
        || time_per_op(ITERS, || assert!(theirs.check().is_ok())),
    ));

    // Exhausted: one per hour, already spent.
    let ours = RateLimiter::new(Gcra::new(Quota::per_hour(1).expect("quota")));
    let theirs = GLimiter::direct(GQuota::per_hour(nz(1)));
    ours.check();
    let _ = theirs.check();
    rows.push(compare(
        "gcra_deny",
        "governor direct check, exhausted quota",
        reps,
        || time_per_op(ITERS, || assert!(!ours.check().allowed)),
        || time_per_op(ITERS, || assert!(theirs.check().is_err())),
    ));

    // 100k distinct keys, visited in a scattered order, all admitted.
    const KEYS: u64 = 100_000;
    let ours = KeyedLimiter::new(Gcra::new(Quota::per_second(1_000_000_000).expect("quota")), KEYS as usize);
    let theirs = GLimiter::keyed(GQuota::per_second(nz(1_000_000_000)));
    let mut k1 = 0u64;
    let mut k2 = 0u64;
    rows.push(compare(
        "keyed_100k",
        "governor keyed check_key, 100k keys",
        reps,
        || {
            time_per_op(ITERS / 2, || {
                k1 = (k1 + 7919) % KEYS;
                assert!(ours.check_key(&k1).allowed)
            })
        },
        || {
            time_per_op(ITERS / 2, || {
                k2 = (k2 + 7919) % KEYS;
                assert!(theirs.check_key(&k2).is_ok())
            })
        },
    ));

    // Two threads hammering one shared limit: aggregate wall time per operation.
    let ours = Arc::new(RateLimiter::new(Gcra::new(Quota::per_second(1_000_000_000).expect("quota"))));
    let theirs = Arc::new(GLimiter::direct(GQuota::per_second(nz(1_000_000_000))));
    rows.push(compare(
        "shared_2_threads",
        "governor direct, 2 threads, aggregate ns/op",
        reps,
        || two_threads(|| ours.check().allowed),
        || two_threads(|| theirs.check().is_ok()),
    ));
    rows
}

fn two_threads(op: impl Fn() -> bool + Sync) -> f64 {
    const PER_THREAD: u64 = 2_000_000;
    time_batch(2 * PER_THREAD, || {
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..PER_THREAD {
                        std::hint::black_box(op());
                    }
                });
            }
        });
    })
}
