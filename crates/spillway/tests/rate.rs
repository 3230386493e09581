//! Public-API tests of the rate limiters under real threads and real time.

use spillway::clock::{Clock, CoarseClock, ManualClock, MonotonicClock};
use spillway::rate::{Gcra, KeyedLimiter, Quota, RateLimit, RateLimiter, TokenBucket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// With time frozen, threads racing on one limit admit exactly the burst.
#[test]
fn racing_threads_admit_exactly_the_burst() {
    let quota = Quota::per_second(1000).unwrap().with_burst(500).unwrap();
    let limiter = Arc::new(RateLimiter::with_clock(Gcra::new(quota), ManualClock::new()));
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..10_000 {
                    if limiter.check().allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 500);
}

/// The same per key: 100 keys, 4 threads, every key gets exactly its burst.
#[test]
fn racing_threads_admit_exactly_the_burst_per_key() {
    let quota = Quota::per_second(10).unwrap().with_burst(7).unwrap();
    let limiter = KeyedLimiter::with_clock(Gcra::new(quota), 4096, ManualClock::new());
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (limiter, admitted) = (&limiter, &admitted);
            s.spawn(move || {
                for i in 0..5_000u64 {
                    if limiter.check_key(&((i * 7 + t) % 100)).allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let stats = limiter.stats();
    assert_eq!(stats.evicted, 0, "{stats:?}");
    assert_eq!(stats.keys, 100);
    assert_eq!(admitted.load(Ordering::Relaxed), 700);
}

/// The coarse clock ticks every millisecond, yet a limit far finer than that (20 000/s with a
/// burst of 1, one admission every 50 µs) is still served at its rate: near a decision the limiter
/// reads the precise clock. Without that fallback it would admit one request per tick, ~300 here.
#[test]
fn coarse_clock_does_not_starve_fine_grained_limits() {
    let limiter = RateLimiter::new(Gcra::new(Quota::per_second(20_000).unwrap().with_burst(1).unwrap()));
    let precise = MonotonicClock::new();
    let start = precise.now();
    let mut admitted = 0u64;
    while precise.now() - start < 300_000_000 {
        if limiter.check().allowed {
            admitted += 1;
        }
    }
    let elapsed = precise.now() - start;
    // At most one per 50 µs of elapsed time (plus the burst and two ticks of backdating); at least
    // a tenth of the ideal 6 000, twice what one-per-tick would give, even on a busy machine that
    // deschedules this thread (each descheduled slot is lost with a burst of 1).
    let max = 1 + elapsed / 50_000 + 40;
    assert!(admitted <= max, "admitted {admitted} in {elapsed} ns, above {max}");
    assert!(admitted >= 600, "admitted only {admitted} in {elapsed} ns");
}

/// A denial's `retry_after` holds on the real clock too: sleeping it out gets the request in.
#[test]
fn retry_after_holds_on_the_coarse_clock() {
    let bucket = TokenBucket::new(3, 3, Duration::from_millis(30)).unwrap();
    let limiter = RateLimiter::new(bucket);
    assert!(limiter.check_n(3).allowed);
    let denied = limiter.check();
    assert!(!denied.allowed);
    assert!(denied.retry_after <= Duration::from_millis(30), "{denied:?}");
    std::thread::sleep(denied.retry_after);
    // The coarse reading may trail by a tick; the limiter re-reads the precise clock before
    // saying no to a request this close.
    assert!(limiter.check().allowed);
    assert!(CoarseClock::new().now() <= MonotonicClock::new().now());
}

/// A cardinality attack: a million clients, each in its own IPv6 /64, then a million addresses
/// rotated within one /64. The table never grows past its capacity, every key pushed out is
/// counted, and rotation within a /64 is one client.
#[test]
fn a_million_rotating_ipv6_clients_stay_within_the_table() {
    use spillway::rate::IpKey;
    use std::net::{IpAddr, Ipv6Addr};
    let limiter =
        KeyedLimiter::with_clock(Gcra::new(Quota::per_second(1).unwrap()), 10_000, ManualClock::new());
    let bytes = limiter.memory_bytes();
    for i in 0..1_000_000u128 {
        let addr = IpAddr::V6(Ipv6Addr::from_bits((0x2001_0db8u128 << 96) | (i << 64) | 1));
        assert!(limiter.check_key(&IpKey::from(addr)).allowed, "a new client gets its first request");
    }
    let s = limiter.stats();
    assert_eq!(limiter.memory_bytes(), bytes, "memory is fixed at construction");
    // (The table has room for twice max_keys, rounded up to a power of two: 16 bytes a slot.)
    assert!(s.keys <= s.capacity && s.capacity <= 4 * 10_000 && bytes <= 16 * 4 * 10_000, "{s:?}");
    assert_eq!(s.evicted + s.reclaimed + s.keys, 1_000_000, "every key is held or counted out: {s:?}");

    let one_64 = (0x2001_0db8_ffff_0001u128) << 64;
    let admitted = (0..1_000_000u128)
        .filter(|i| limiter.check_key(&IpKey::from(IpAddr::V6(Ipv6Addr::from_bits(one_64 | i)))).allowed)
        .count();
    assert_eq!(admitted, 1, "a million addresses in one /64 are one client");
}
