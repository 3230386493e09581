//! Decision latency and round trips on loopback, against a redis-server this starts:
//!
//!     cargo run --release -p spillway-redis --example redis_bench
//!
//! Prints p50/p99/p999 of one decision without leases (20 000 decisions, one at a time) and
//! the round trips per 1 000 decisions without and with leases of 20 (below the quota, so that
//! every decision is admitted).

use spillway::rate::Quota;
use spillway_redis::{Client, FailMode, GlobalRate, RedisConfig};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let config = RedisConfig { urls: vec![format!("redis://127.0.0.1:{port}")], ..RedisConfig::default() };
    let quota = Quota::per_second(1_000_000)?.with_burst(1_000_000)?;

    let plain = GlobalRate::new(Client::connect(config.clone()).await?, "bench", quota, FailMode::Closed);
    let mut latency = hdrhistogram::Histogram::<u64>::new(3)?;
    for i in 0..1000 {
        plain.check(&format!("warm-{}", i % 100), 1).await;
    }
    for i in 0..20_000 {
        let key = format!("client-{}", i % 1000);
        let started = tokio::time::Instant::now();
        let d = plain.check(&key, 1).await;
        latency.record(started.elapsed().as_nanos() as u64)?;
        assert!(d.allowed && !plain.fallback_active());
    }
    let us = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "decision latency without leases (20 000, loopback): p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
        us(0.5),
        us(0.99),
        us(0.999)
    );

    let leased = GlobalRate::new(Client::connect(config).await?, "bench-leased", quota, FailMode::Closed)
        .with_lease(20, Duration::from_secs(1));
    let (p0, l0) = (plain.client().round_trips(), leased.client().round_trips());
    for i in 0..10_000 {
        let key = format!("client-{}", i % 10);
        plain.check(&key, 1).await;
        leased.check(&key, 1).await;
    }
    let (p, l) = ((plain.client().round_trips() - p0) / 10, (leased.client().round_trips() - l0) / 10);
    println!(
        "round trips per 1 000 decisions: {p} without leases, {l} with leases of 20 ({:.1}x fewer)",
        p as f64 / l.max(1) as f64
    );
    let _ = server.kill();
    Ok(())
}
