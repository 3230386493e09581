//! The unprotected backend, for real on 127.0.0.1: its queue grows without bound under overload,
//! `/stats` says so, and it serves requests whose clients left long ago.

use spillway_lab::backend::{BackendOptions, BackendStats, spawn};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one `GET path` on a fresh connection that closes after the answer; returns the body.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();
    assert!(buf.starts_with("HTTP/1.1 200"), "{buf}");
    buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

async fn stats(addr: SocketAddr) -> BackendStats {
    serde_json::from_str(&get(addr, "/stats").await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_grows_without_bound_and_stats_say_so() {
    let opts = BackendOptions { pool: 2, service: Duration::from_millis(100), ..Default::default() };
    let (addr, backend) = spawn(opts).await.unwrap();
    // 30 requests at once against 2 workers of 100 ms: 28 wait.
    let mut clients = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
        clients.push(s);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let s = stats(addr).await;
    assert!(s.waiting > 2 * opts.pool as u64, "the queue is longer than the pool: {s:?}");
    assert!(s.waiting >= 20 && s.max_waiting >= s.waiting, "{s:?}");
    assert_eq!(s.in_service, 2, "{s:?}");
    assert!(s.rss_bytes > 0, "{s:?}");
    assert_eq!(backend.stats().max_waiting, s.max_waiting);

    // The first clients are answered...
    let mut first = clients.remove(0);
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).await.unwrap();
    assert!(std::str::from_utf8(&buf[..n]).unwrap().starts_with("HTTP/1.1 200 OK"));

    // ...and the rest hang up: the backend never notices and serves them all anyway.
    drop(clients);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let s = backend.stats();
    assert_eq!(s.completed, 30, "{s:?}");
    assert!(s.client_gone >= 25, "served for nobody: {s:?}");
    assert_eq!(s.waiting, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_ok_with_jitter_and_cpu_work() {
    for cpu in [false, true] {
        let opts = BackendOptions { pool: 2, service: Duration::from_millis(5), jitter_pct: 50, cpu };
        let (addr, backend) = spawn(opts).await.unwrap();
        assert_eq!(get(addr, "/").await, "ok\n");
        assert_eq!(get(addr, "/anything?x=1").await, "ok\n");
        assert_eq!(backend.stats().completed, 2);
        backend.shutdown();
    }
}
