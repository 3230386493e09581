//! What Spillway's tests share: [`redis::Redis`], a `redis-server` of a test's own on a free
//! loopback port (and [`redis::cluster`], three of them as a Redis Cluster), and [`FaultRelay`].
//!
//! [`FaultRelay`] sits between a client and a server on loopback and
//! injects the faults a network or a dependency brings: latency, resets, blackholes and
//! bandwidth limits, switched on and off while traffic flows.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use test_support::FaultRelay;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! // An echo server, and the relay in front of it.
//! let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let target = server.local_addr().unwrap();
//! tokio::spawn(async move {
//!     let (mut s, _) = server.accept().await.unwrap();
//!     let (mut r, mut w) = s.split();
//!     tokio::io::copy(&mut r, &mut w).await.unwrap();
//! });
//! let relay = FaultRelay::start(target).await.unwrap();
//! relay.set_latency(Duration::from_millis(20));
//!
//! let mut c = tokio::net::TcpStream::connect(relay.addr()).await.unwrap();
//! let started = std::time::Instant::now();
//! c.write_all(b"ping").await.unwrap();
//! let mut buf = [0u8; 4];
//! c.read_exact(&mut buf).await.unwrap();
//! assert_eq!(&buf, b"ping");
//! assert!(started.elapsed() >= Duration::from_millis(40), "20 ms each way");
//! # });
//! ```

pub mod redis;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the relay does with the bytes it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Passes them on (with the latency and bandwidth set).
    Pass,
    /// Holds them: connections are accepted and read no further, nothing is forwarded, nothing
    /// is closed. A peer waits until its own timeout.
    Blackhole,
    /// Resets every connection, open or new (RST, not FIN).
    Reset,
    /// Resets new connections as soon as they are accepted (to the client, a refused
    /// connection); open ones go on.
    Refuse,
}

/// A TCP relay on `127.0.0.1:0` in front of one target, with faults to switch on and off.
#[derive(Debug)]
pub struct FaultRelay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    mode: watch::Sender<Mode>,
    /// Added before each chunk is forwarded, in microseconds.
    latency_us: AtomicU64,
    /// Bytes a second in each direction of each connection; 0: unlimited.
    bandwidth: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
}

impl FaultRelay {
    /// Starts a relay to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: watch::Sender::new(Mode::Pass),
            latency_us: AtomicU64::new(0),
            bandwidth: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let s = shared.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                s.accepted.fetch_add(1, Ordering::Relaxed);
                let mode = *s.mode.borrow();
                if matches!(mode, Mode::Reset | Mode::Refuse) {
                    reset(&client);
                    continue;
                }
                tokio::spawn(connection(client, target, s.clone()));
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the fault.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.send_replace(mode);
    }

    /// Back to passing bytes (latency and bandwidth stay as set).
    pub fn heal(&self) {
        self.set_mode(Mode::Pass);
    }

    /// Delay added to every chunk in each direction.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.latency_us.store(latency.as_micros() as u64, Ordering::Relaxed);
    }

    /// Bytes per second per direction per connection (0: unlimited).
    pub fn set_bandwidth(&self, bytes_per_second: u64) {
        self.shared.bandwidth.store(bytes_per_second, Ordering::Relaxed);
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.task.abort();
        // Open connections end when they see the relay gone.
        self.set_mode(Mode::Reset);
    }
}

/// Closes with RST: linger zero.
fn reset(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

async fn connection(client: TcpStream, target: SocketAddr, s: Arc<Shared>) {
    let Ok(server) = TcpStream::connect(target).await else {
        reset(&client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, &s);
    let down = pump(sr, cw, &s);
    // Either direction ending in a reset resets both.
    let (a, b) = tokio::join!(up, down);
    if let (Some((r1, w1)), Some((r2, w2))) = (a, b) {
        for stream in [r1.reunite(w2), r2.reunite(w1)].into_iter().flatten() {
            reset(&stream);
        }
    }
}

/// Copies `from` to `to` with the faults. `Some` (the halves) when the copy ended in a reset.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    s: &Shared,
) -> Option<(tokio::net::tcp::OwnedReadHalf, tokio::net::tcp::OwnedWriteHalf)> {
    let mut mode = s.mode.subscribe();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        // Read only while passing; a blackhole stops reading and waits for another mode.
        let current = *mode.borrow_and_update();
        match current {
            Mode::Reset => return Some((from, to)),
            Mode::Blackhole => {
                if mode.changed().await.is_err() {
                    return Some((from, to));
                }
                continue;
            }
            Mode::Pass | Mode::Refuse => {}
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return None;
                }
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return Some((from, to));
                }
                continue;
            }
        };
        let latency = s.latency_us.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        if *mode.borrow() == Mode::Reset {
            return Some((from, to));
        }
        // A blackhole that began while this chunk was read holds it too.
        if *mode.borrow() == Mode::Blackhole && mode.wait_for(|m| *m != Mode::Blackhole).await.is_err() {
            return Some((from, to));
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return None;
        }
        let bandwidth = s.bandwidth.load(Ordering::Relaxed);
        if bandwidth > 0 {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bandwidth as f64)).await;
        }
    }
}

/// A `python3` with the `websockets` package (Debian's python3-websockets serves
/// /usr/bin/python3), for the tests that drive Python's WebSocket client.
pub fn python_with_websockets() -> &'static str {
    for py in ["/usr/bin/python3", "python3"] {
        let ok = std::process::Command::new(py).args(["-c", "import websockets"]).status();
        if ok.is_ok_and(|s| s.success()) {
            return py;
        }
    }
    panic!(
        "Python's websockets package is missing: apt-get install python3-websockets (scripts/test.sh does)"
    );
}
