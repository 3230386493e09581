//! Global limits on a real Redis: shared quotas across replicas, leases, the semaphore, fail
//! modes while Redis is down, recovery, and a three-node cluster.

use spillway::rate::Quota;
use spillway_redis::{Client, FailMode, GlobalConcurrency, GlobalRate, RedisConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use test_support::redis::{Redis, cluster};
use tokio::time::Instant;

async fn client(redis: &Redis) -> Client {
    Client::connect(RedisConfig { urls: vec![redis.url()], ..RedisConfig::default() }).await.unwrap()
}

/// `replicas` limiters on one key, each with `tasks` tasks deciding back to back for `run`;
/// (admitted, decisions, seconds from the first decision to the last).
async fn hammer(limits: Vec<Arc<GlobalRate>>, tasks: usize, run: Duration) -> (u64, u64, f64) {
    let (admitted, decided) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut handles = Vec::new();
    for limit in limits {
        for _ in 0..tasks {
            let (limit, admitted, decided) = (limit.clone(), admitted.clone(), decided.clone());
            handles.push(tokio::spawn(async move {
                while started.elapsed() < run {
                    if limit.check("shared", 1).await.allowed {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    decided.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    (admitted.load(Ordering::Relaxed), decided.load(Ordering::Relaxed), started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_quota_within_two_percent() {
    let redis = Redis::start();
    let quota = Quota::per_second(1000).unwrap().with_burst(100).unwrap();
    let mut limits = Vec::new();
    for _ in 0..3 {
        limits.push(Arc::new(GlobalRate::new(client(&redis).await, "exact", quota, FailMode::Closed)));
    }
    let (admitted, decided, secs) = hammer(limits, 4, Duration::from_secs(2)).await;
    let expected = 100.0 + 1000.0 * secs;
    let error = (admitted as f64 - expected) / expected;
    eprintln!(
        "without leases: {admitted} of {decided} admitted in {secs:.3} s; expected {expected:.0} ({:+.2} %)",
        error * 100.0
    );
    assert!(decided > 2 * admitted, "the quota was the limit, not the load: {decided} decisions");
    assert!(error.abs() <= 0.02, "{admitted} admitted, expected {expected:.0}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_keep_within_their_bound_and_cut_round_trips_tenfold() {
    let redis = Redis::start();
    let quota = Quota::per_second(1000).unwrap().with_burst(100).unwrap();
    let ttl = Duration::from_millis(50);
    let mut limits = Vec::new();
    for _ in 0..3 {
        let limit =
            GlobalRate::new(client(&redis).await, "leased", quota, FailMode::Closed).with_lease(20, ttl);
        limits.push(Arc::new(limit));
    }
    let clients: Vec<Client> = limits.iter().map(|l| l.client().clone()).collect();
    let trips = || clients.iter().map(Client::round_trips).sum::<u64>();
    let before = trips();
    let (admitted, decided, secs) = hammer(limits, 4, Duration::from_secs(2)).await;
    // The bound (GlobalRate's docs): at most what the GCRA admits over the window plus one lease
    // lifetime; at least that less what three replicas' unspent leases can lose.
    let most = 100.0 + 1000.0 * (secs + ttl.as_secs_f64());
    // (Saturated, leases are spent before they end: little is lost.)
    let least = 0.95 * (100.0 + 1000.0 * secs);
    let per_1000 = (trips() - before) as f64 * 1000.0 / decided as f64;
    eprintln!(
        "with leases of 20: {admitted} of {decided} admitted in {secs:.3} s (bound {least:.0}..{most:.0}); {per_1000:.1} round trips per 1000 decisions"
    );
    assert!(
        (admitted as f64) <= most * 1.005 && (admitted as f64) >= least,
        "{admitted} outside {least:.0}..{most:.0}"
    );

    // Round trips, below the quota (every decision admitted): leases of 20 against none.
    let quota = Quota::per_second(1_000_000).unwrap().with_burst(1_000_000).unwrap();
    let plain = GlobalRate::new(client(&redis).await, "plain", quota, FailMode::Closed);
    let leased = GlobalRate::new(client(&redis).await, "leased-fast", quota, FailMode::Closed)
        .with_lease(20, Duration::from_secs(1));
    for limit in [&plain, &leased] {
        for i in 0..1000 {
            let d = limit.check(&format!("k{}", i % 10), 1).await;
            assert!(d.allowed, "{i}: {d:?}, fallback {}", limit.fallback_active());
        }
    }
    let (p, l) = (plain.client().round_trips(), leased.client().round_trips());
    eprintln!("1000 decisions: {p} round trips without leases, {l} with leases of 20");
    assert!(p >= 10 * l, "{p} against {l}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_semaphore_holds_its_limit_and_crashed_permits_come_back() {
    let redis = Redis::start();
    let lease = Duration::from_millis(500);
    let mut limits = Vec::new();
    for _ in 0..3 {
        limits.push(Arc::new(GlobalConcurrency::new(
            client(&redis).await,
            "jobs",
            5,
            lease,
            FailMode::Closed,
        )));
    }
    let (held, most, granted) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for limit in &limits {
        for _ in 0..8 {
            let (limit, held, most, granted) = (limit.clone(), held.clone(), most.clone(), granted.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..20 {
                    if let Ok(permit) = limit.acquire("k").await {
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        granted.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                        // The release is sent in the background: give it its round trip.
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    } else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (most, granted) = (most.load(Ordering::SeqCst), granted.load(Ordering::Relaxed));
    eprintln!("semaphore of 5 over 3 replicas: {granted} permits granted, at most {most} held at once");
    assert!((2..=5).contains(&most) && granted > 20, "most {most}, granted {granted}");

    // A replica that crashes holding permits: they come back when their leases end.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for _ in 0..5 {
        std::mem::forget(limits[0].acquire("crash").await.expect("free"));
    }
    assert!(limits[1].acquire("crash").await.is_err(), "all five held by the crashed replica");
    assert_eq!(limits[1].held("crash").await.unwrap(), 5);
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    assert_eq!(limits[1].held("crash").await.unwrap(), 0);
    assert!(limits[1].acquire("crash").await.is_ok(), "the leases ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_dies_each_fail_mode_applies_within_the_deadline_and_limits_recover() {
    let mut redis = Redis::start();
    let quota = Quota::per_minute(300).unwrap().with_burst(30).unwrap();
    let deadline = RedisConfig::default().timeout;
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let c = client(&redis).await;
        c.heartbeat().await;
        replicas.push(c);
    }
    for c in &replicas {
        c.heartbeat().await;
        assert_eq!(c.live_replicas(), 3);
    }
    let open = GlobalRate::new(replicas[0].clone(), "open", quota, FailMode::Open);
    let closed = GlobalRate::new(replicas[0].clone(), "closed", quota, FailMode::Closed);
    let local = GlobalRate::new(replicas[0].clone(), "local", quota, FailMode::Local);
    assert!(open.check("k", 1).await.allowed && !open.fallback_active());

    redis.kill();
    let mut slowest = Duration::ZERO;
    let (mut opened, mut closed_ok, mut local_ok) = (0, 0, 0);
    for _ in 0..50 {
        for (limit, count) in [(&open, &mut opened), (&closed, &mut closed_ok), (&local, &mut local_ok)] {
            let started = Instant::now();
            if limit.check("k", 1).await.allowed {
                *count += 1;
            }
            slowest = slowest.max(started.elapsed());
        }
    }
    eprintln!(
        "Redis down: open admitted {opened}/50, closed {closed_ok}/50, local {local_ok}/50; slowest decision {slowest:?} (deadline {deadline:?})"
    );
    assert_eq!(opened, 50, "open admits");
    assert_eq!(closed_ok, 0, "closed refuses");
    assert_eq!(local_ok, 10, "local: the burst of 30 split over 3 live replicas");
    assert!(slowest <= deadline + Duration::from_millis(50), "a decision took {slowest:?}");
    assert!(open.fallback_active() && closed.fallback_active() && local.fallback_active());

    // Back: within the breaker's probe interval the limits are Redis's again.
    redis.restart();
    let started = Instant::now();
    loop {
        let d = closed.check("recovered", 1).await;
        if d.allowed {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no recovery within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("Redis back: limits recovered after {:?}", started.elapsed());
    assert!(!closed.fallback_active());
    // And enforced: the burst, then refusals.
    let admitted = {
        let mut n = 1;
        for _ in 0..40 {
            n += u32::from(closed.check("recovered", 1).await.allowed);
        }
        n
    };
    assert_eq!(admitted, 30, "the key's burst, from Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_serves_keys_in_every_slot() {
    let nodes = cluster();
    let config =
        RedisConfig { urls: nodes.iter().map(Redis::url).collect(), cluster: true, ..RedisConfig::default() };
    let client = Client::connect(config).await.unwrap();
    let quota = Quota::per_minute(60).unwrap().with_burst(5).unwrap();
    let rate = GlobalRate::new(client.clone(), "cluster", quota, FailMode::Closed);
    let conc = GlobalConcurrency::new(client, "cluster", 2, Duration::from_secs(5), FailMode::Closed);
    for key in 0..30 {
        let key = format!("tenant-{key}");
        let admitted = {
            let mut n = 0;
            for _ in 0..8 {
                n += u32::from(rate.check(&key, 1).await.allowed);
            }
            n
        };
        assert_eq!(admitted, 5, "{key}: its burst");
        assert!(!rate.fallback_active(), "{key}: answered by the cluster");
        let (a, b) = (conc.acquire(&key).await, conc.acquire(&key).await);
        assert!(a.is_ok() && b.is_ok() && conc.acquire(&key).await.is_err(), "{key}: two permits");
    }
    // The keys were spread over the three nodes.
    let holding = nodes.iter().filter(|n| n.cli(&["DBSIZE"]).is_some_and(|s| s.trim() != "0")).count();
    assert_eq!(holding, 3, "every node holds keys");
}
