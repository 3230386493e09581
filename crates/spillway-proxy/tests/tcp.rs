//! TCP (L4) mode end to end: a real upstream, the proxy, real clients, on 127.0.0.1:0.

mod common;

use common::{metric, rss_bytes, stop};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn tcp_proxy(upstream: SocketAddr, extra: &str) -> spillway_proxy::Proxy {
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[server]\nthreads = 2\nshutdown_grace = \"2s\"\n\
         [[tcp]]\nname = \"raw\"\nlisten = \"127.0.0.1:0\"\naddrs = [\"{upstream}\"]\n{extra}"
    );
    spillway_proxy::Proxy::start(spillway_proxy::Config::parse(&config, "tcp.toml").unwrap()).unwrap()
}

/// An upstream that writes `total` bytes (byte i = i % 251) to each connection as fast as it is
/// allowed to, counting what the kernel took.
async fn firehose(total: u64) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let w = w.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 64 << 10];
                let mut sent = 0u64;
                while sent < total {
                    let n = chunk.len().min((total - sent) as usize);
                    for (i, b) in chunk[..n].iter_mut().enumerate() {
                        *b = ((sent + i as u64) % 251) as u8;
                    }
                    if s.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    sent += n as u64;
                    w.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_producer_back_and_memory_stays_bounded() {
    const TOTAL: u64 = 256 << 20;
    let (up, written) = firehose(TOTAL).await;
    let proxy = tcp_proxy(up, "buffer = \"64KiB\"\n");
    let addr = proxy.listener_addr("raw").unwrap();
    let before = rss_bytes();
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 16 << 10];
    let mut read = 0u64;
    // Read 1 MiB, then stop reading for a while: the producer must stall, not the proxy grow.
    while read < 1 << 20 {
        let n = client.read(&mut buf).await.unwrap();
        read += n as u64;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stalled_at = written.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(written.load(Ordering::Relaxed), stalled_at, "the producer is blocked while nobody reads");
    // What sits between them is the sockets' buffers and the proxy's 2 × 64 KiB, not the stream.
    let in_between = stalled_at - read;
    assert!(in_between < 48 << 20, "{} MiB in flight", in_between >> 20);
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 16 << 20, "the proxy grew by {} MiB", grown >> 20);

    // A slow reader, then: every byte arrives, in order.
    let mut expected = read;
    let mut pauses = 0u32;
    loop {
        let n = client.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        // (Spot checks, not every byte: this is a 256 MiB stream.)
        assert_eq!(buf[0], (expected % 251) as u8, "at byte {expected}");
        assert_eq!(buf[n - 1], ((expected + n as u64 - 1) % 251) as u8);
        expected += n as u64;
        pauses += 1;
        if pauses % 512 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if expected == TOTAL {
            break;
        }
    }
    assert_eq!(expected, TOTAL);
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(
        metric(admin, "spillway_tcp_connections_total{listener=\"raw\",outcome=\"accepted\"}").await,
        1.0
    );
    drop(client);
    stop(proxy).await;
}

/// An upstream that echoes every connection.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn ping(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).await.unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).await.unwrap();
    got
}

/// Whether the proxy closed `s` without a byte (what a refused connection sees).
async fn closed(s: &mut TcpStream) -> bool {
    let _ = s.write_all(b"x").await;
    let mut b = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(2), s.read(&mut b)).await, Ok(Ok(0) | Err(_)))
}

/// Two connections through the proxy at `addr`, each shown to work.
async fn two_open(addr: SocketAddr) -> (TcpStream, TcpStream) {
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut b = TcpStream::connect(addr).await.unwrap();
    assert_eq!(ping(&mut a, b"a").await, b"a");
    assert_eq!(ping(&mut b, b"b").await, b"b");
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused_or_wait_their_turn() {
    let up = echo().await;
    // No queue: the third connection is closed at once.
    let proxy = tcp_proxy(up, "max_connections = 2\n");
    let addr = proxy.listener_addr("raw").unwrap();
    let (a, b) = two_open(addr).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert!(closed(&mut c).await, "over the limit: closed");
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(
        metric(admin, "spillway_tcp_connections_total{listener=\"raw\",outcome=\"rejected\"}").await,
        1.0
    );
    assert_eq!(metric(admin, "spillway_tcp_open_connections{listener=\"raw\"}").await, 2.0);
    drop((a, b, c));
    stop(proxy).await;

    // A queue: the third waits, unread, and goes through when a slot frees.
    let proxy = tcp_proxy(up, "max_connections = 2\nqueue = 1\nqueue_timeout = \"5s\"\n");
    let addr = proxy.listener_addr("raw").unwrap();
    let (a, b) = two_open(addr).await;
    let mut c = TcpStream::connect(addr).await.unwrap();
    c.write_all(b"queued").await.unwrap();
    let mut got = [0u8; 6];
    assert!(
        tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut got)).await.is_err(),
        "no answer while waiting for a slot"
    );
    drop(a);
    tokio::time::timeout(Duration::from_secs(2), c.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"queued", "its bytes waited in the kernel and went through");
    drop((b, c));
    stop(proxy).await;

    // An upstream that is down: the connection is closed and counted.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let proxy = tcp_proxy(down, "connect_timeout = \"200ms\"\n");
    let mut d = TcpStream::connect(proxy.listener_addr("raw").unwrap()).await.unwrap();
    assert!(closed(&mut d).await);
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(
        metric(admin, "spillway_tcp_connections_total{listener=\"raw\",outcome=\"upstream_error\"}").await,
        1.0
    );
    stop(proxy).await;
}
