//! `scope = "global"` rate limits: three proxy replicas share one quota through a real Redis,
//! and when Redis dies the fail mode answers within the deadline; when it returns, the shared
//! limit is back.

mod common;

use common::{metric, proxy, stop, upstream};
use http_body_util::Full;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use test_support::redis::Redis;
use tokio::time::Instant;

fn config(redis: &Redis) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[server]
threads = 1
[redis]
url = "{}"
timeout = "20ms"
[[listeners]]
name = "web"
listen = "127.0.0.1:0"
[[upstreams]]
name = "app"
addrs = ["{{UP}}"]
[[routes]]
name = "api"
listener = "web"
upstream = "app"
[[routes.rate]]
key = "global"
rate = 200
burst = 50
scope = "global"
fail_mode = "closed"
"#,
        redis.url()
    )
}

/// `clients` clients per address sending back to back for `run`: (200s, other answers, the
/// slowest answer, seconds from the first request to the last answer).
async fn load(addrs: &[std::net::SocketAddr], clients: usize, run: Duration) -> (u64, u64, Duration, f64) {
    let (ok, other, slowest) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for &addr in addrs {
        for _ in 0..clients {
            let (ok, other, slowest) = (ok.clone(), other.clone(), slowest.clone());
            tasks.push(tokio::spawn(async move {
                let c = common::client();
                while started.elapsed() < run {
                    let t = Instant::now();
                    let req = http::Request::get(format!("http://{addr}/")).body(Full::default()).unwrap();
                    let status = c.request(req).await.unwrap().status();
                    slowest.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    if status == 200 { &ok } else { &other }.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let slowest = Duration::from_micros(slowest.load(Ordering::Relaxed));
    (ok.load(Ordering::Relaxed), other.load(Ordering::Relaxed), slowest, started.elapsed().as_secs_f64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_global_quota_and_degrade_when_redis_dies() {
    let mut redis = Redis::start();
    let (up, _) = upstream().await;
    let replicas: Vec<_> = (0..3).map(|_| proxy(&config(&redis), up)).collect();
    let addrs: Vec<_> = replicas.iter().map(|p| p.listener_addr("web").unwrap()).collect();

    let (ok, refused, _, secs) = load(&addrs, 3, Duration::from_secs(2)).await;
    let expected = 50.0 + 200.0 * secs;
    let error = (ok as f64 - expected) / expected;
    eprintln!(
        "3 replicas, one quota: {ok} admitted, {refused} refused in {secs:.3} s; expected {expected:.0} ({:+.2} %)",
        error * 100.0
    );
    assert!(refused > ok, "the quota was the limit");
    assert!(error.abs() <= 0.02, "{ok} admitted, expected {expected:.0}");
    let admin = replicas[0].admin_addr().unwrap();
    assert_eq!(metric(admin, "spillway_redis_fallback_active{policy=\"api.0\"}").await, 0.0);

    // Redis dies: fail mode closed, every answer within the deadline (20 ms) plus slack.
    redis.kill();
    let (ok, refused, slowest, _) = load(&addrs, 2, Duration::from_millis(500)).await;
    eprintln!("Redis down: {ok} admitted, {refused} refused; slowest answer {slowest:?}");
    assert_eq!(ok, 0, "closed refuses");
    assert!(slowest < Duration::from_millis(100), "an answer took {slowest:?}");
    assert_eq!(metric(admin, "spillway_redis_fallback_active{policy=\"api.0\"}").await, 1.0);
    assert!(
        metric(admin, "spillway_redis_calls_total{result=\"breaker_open\"}").await > 0.0,
        "the breaker on Redis opened"
    );

    // Back: the shared limit again.
    redis.restart();
    let started = Instant::now();
    // (Traffic is what probes Redis again: a request every few milliseconds until one is admitted.)
    while load(&addrs[..1], 1, Duration::from_millis(50)).await.0 == 0
        || metric(admin, "spillway_redis_fallback_active{policy=\"api.0\"}").await != 0.0
    {
        assert!(started.elapsed() < Duration::from_secs(5), "no recovery within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("Redis back: recovered after {:?}", started.elapsed());
    for p in replicas {
        stop(p).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_concurrency_limit_holds_over_three_replicas() {
    let redis = Redis::start();
    let (up, seen) = upstream().await;
    let config = config(&redis).replace(
        "[[routes.rate]]\nkey = \"global\"\nrate = 200\nburst = 50\nscope = \"global\"\nfail_mode = \"closed\"\n",
        "[routes.concurrency]\nmax = 4\nscope = \"global\"\nfail_mode = \"closed\"\nlease = \"10s\"\n",
    );
    assert!(config.contains("[routes.concurrency]"));
    let replicas: Vec<_> = (0..3).map(|_| proxy(&config, up)).collect();
    // 12 clients, 4 per replica, each request 50 ms at the upstream.
    let mut tasks = Vec::new();
    for p in &replicas {
        let addr = p.listener_addr("web").unwrap();
        for _ in 0..4 {
            tasks.push(tokio::spawn(async move {
                let c = common::client();
                let (mut ok, mut refused) = (0u32, 0u32);
                for _ in 0..10 {
                    let req =
                        http::Request::get(format!("http://{addr}/delay/50")).body(Full::default()).unwrap();
                    let resp = c.request(req).await.unwrap();
                    if resp.status() == 200 {
                        ok += 1;
                    } else {
                        assert_eq!(resp.status(), 503);
                        assert!(resp.headers().contains_key("retry-after"));
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
                (ok, refused)
            }));
        }
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (o, r) = t.await.unwrap();
        (ok, refused) = (ok + o, refused + r);
    }
    let most = seen.max_in_flight.load(Ordering::Relaxed);
    eprintln!(
        "global concurrency 4 over 3 replicas: {ok} served, {refused} refused, at most {most} at the upstream"
    );
    assert!((2..=4).contains(&most), "at most {most} at once");
    assert!(ok > 0 && refused > 0);
    for p in replicas {
        stop(p).await;
    }
}

#[test]
fn bad_scope_settings_name_file_line_and_key() {
    let base = "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"app\"\n\
                addrs = [\"127.0.0.1:1\"]\n[[routes]]\nlistener = \"web\"\nupstream = \"app\"\n";
    for (policy, key) in [
        ("[[routes.rate]]\nrate = 1\nscope = \"everywhere\"\n", "routes[0].rate[0].scope"),
        ("[[routes.rate]]\nrate = 1\nlease = 5\n", "routes[0].rate[0].scope"),
        ("[[routes.rate]]\nrate = 1\nscope = \"global\"\n", "routes[0].rate[0].scope"),
        (
            "[[routes.rate]]\nrate = 1\nscope = \"global\"\nalgorithm = \"token_bucket\"\n",
            "routes[0].rate[0].algorithm",
        ),
        ("[routes.concurrency]\nmax = 1\nfail_mode = \"open\"\n", "routes[0].concurrency.scope"),
        ("[routes.concurrency]\nmax = 1\nscope = \"global\"\nqueue = 2\n", "routes[0].concurrency.queue"),
        ("[routes.concurrency]\nmax = 1\nscope = \"global\"\n", "routes[0].concurrency.scope"),
    ] {
        let e = spillway_proxy::Config::parse(&format!("{base}{policy}"), "g.toml").unwrap_err().to_string();
        assert!(e.contains("g.toml:") && e.contains(key), "{policy}: {e}");
    }
}
