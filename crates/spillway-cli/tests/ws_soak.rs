//! A minute of WebSocket overload through `spillway serve`: on each of five routes a producer
//! sends 20,000 messages/s while its consumer reads 100/s, one route per policy (`block`,
//! `block` with flow control, `drop_oldest`, `drop_newest`, `disconnect`), all at once. The
//! proxy's resident memory is sampled throughout and must stay under 64 MiB; what each consumer
//! gets must be what its policy promises. `SPILLWAY_WS_SOAK_SECS` shortens or lengthens the run
//! (60 by default).
// tungstenite's handshake callback returns its (large) error response by value.
#![allow(clippy::result_large_err)]

mod common;

use common::{serve, tempdir};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Messages per second from each producer, sent 20 every millisecond.
const RATE: u64 = 20_000;
/// The consumers' pace during the run: one message every 10 ms.
const READ_EVERY: Duration = Duration::from_millis(10);
/// Each message is its sequence number, zero-padded to this many bytes.
const WIDTH: usize = 128;
/// Messages queued per direction per connection.
const QUEUE: usize = 256;
/// The bound on the proxy's resident memory.
const RSS_BOUND: u64 = 64 << 20;

const ROUTES: [(&str, &str); 5] = [
    ("block", "policy = \"block\""),
    ("flow", "policy = \"block\"\nflow_control = true"),
    ("drop_oldest", "policy = \"drop_oldest\""),
    ("drop_newest", "policy = \"drop_newest\""),
    ("disconnect", "policy = \"disconnect\""),
];

fn run_for() -> Duration {
    let secs = std::env::var("SPILLWAY_WS_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    Duration::from_secs(secs)
}

/// What one route's producer did.
#[derive(Default)]
struct Produced {
    sent: AtomicU64,
    /// The text messages the proxy sent the producer: flow control events.
    heard: Mutex<Vec<String>>,
    /// Its connection ended before the run did.
    cut: AtomicBool,
}

/// The producers' server: the route's name is the request path.
async fn producers(run: Duration) -> (SocketAddr, Arc<BTreeMap<String, Produced>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let all: Arc<BTreeMap<String, Produced>> =
        Arc::new(ROUTES.iter().map(|(name, _)| (name.to_string(), Produced::default())).collect());
    let state = all.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let mut path = String::new();
                let remember = |req: &Request, resp: Response| {
                    path = req.uri().path().trim_start_matches('/').to_string();
                    Ok(resp)
                };
                let ws = tokio_tungstenite::accept_hdr_async(s, remember).await.unwrap();
                produce(ws, &state[&path], path == "flow", run).await;
            });
        }
    });
    (addr, all)
}

/// Sends numbered messages at `RATE` for `run` (holding back while paused, if `obey`), then
/// closes.
async fn produce(
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    p: &Produced,
    obey: bool,
    run: Duration,
) {
    let (mut tx, mut rx) = ws.split();
    let paused = AtomicBool::new(false);
    let listen = async {
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Text(t) = m {
                paused.store(t.contains("flow.pause"), Ordering::Relaxed);
                p.heard.lock().unwrap().push(t.to_string());
            }
        }
    };
    let send = async {
        let started = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let mut n = 0;
        while started.elapsed() < run {
            tick.tick().await;
            if obey && paused.load(Ordering::Relaxed) {
                continue;
            }
            for _ in 0..RATE / 1000 {
                n += 1;
                if tx.feed(Message::text(format!("{n:0>WIDTH$}"))).await.is_err() {
                    p.cut.store(true, Ordering::Relaxed);
                    return;
                }
            }
            if tx.flush().await.is_err() {
                p.cut.store(true, Ordering::Relaxed);
                return;
            }
            p.sent.store(n, Ordering::Relaxed);
        }
        // A producer that obeys waits for the resume that its consumer's catching up brings,
        // as one with more to send would (at most 10 s).
        for _ in 0..1000 {
            if !(obey && paused.load(Ordering::Relaxed)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tx.send(Message::Close(None)).await;
    };
    // The listener ends when the proxy closes the connection in turn.
    tokio::join!(listen, send);
}

/// What one consumer got.
#[derive(Debug)]
struct Consumed {
    seqs: Vec<u64>,
    close: Option<CloseCode>,
}

/// Reads at 100 messages/s for `run`, then as fast as they come until the close (or 3 s of quiet).
async fn consume(url: String, run: Duration) -> Consumed {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("the upgrade through the proxy");
    let started = tokio::time::Instant::now();
    let mut pace = tokio::time::interval(READ_EVERY);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seqs = Vec::new();
    loop {
        if started.elapsed() < run {
            pace.tick().await;
        }
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => seqs.push(t.parse().unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => return Consumed { seqs, close: frame.map(|f| f.code) },
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => return Consumed { seqs, close: None },
        }
    }
}

/// The same, by Python's `websockets` client: prints the count, the last number and whether
/// they came in order.
const PY_CONSUMER: &str = r#"
import asyncio, sys, time, websockets

async def main(url, run):
    got = []
    # No keepalive pings: a pong would queue behind the slow reader's backlog.
    async with websockets.connect(url, ping_interval=None) as ws:
        start = time.monotonic()
        while True:
            try:
                m = await asyncio.wait_for(ws.recv(), 3)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                break
            got.append(int(m))
            if time.monotonic() - start < run:
                await asyncio.sleep(0.01)
    print(len(got), got[-1] if got else 0, all(a < b for a, b in zip(got, got[1:])))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"#;

/// The proxy's resident set, from /proc.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
    kib.and_then(|k| k.parse::<u64>().ok()).unwrap_or(0) * 1024
}

/// One counter from the admin listener's /metrics.
async fn metric(admin: &str, line: &str) -> u64 {
    let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let found = text.lines().find(|l| l.starts_with(line)).and_then(|l| l.rsplit(' ').next());
    found.and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_fast_producers_and_slow_consumers_per_policy() {
    let py = test_support::python_with_websockets();
    let run = run_for();
    let (up, produced) = producers(run).await;
    let dir = tempdir("ws-soak");
    let mut config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[server]\nthreads = 2\n[[listeners]]\nname = \"web\"\n\
         listen = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"app\"\naddrs = [\"{up}\"]\n"
    );
    for (name, websocket) in ROUTES {
        config += &format!(
            "[[routes]]\nname = \"{name}\"\nlistener = \"web\"\nupstream = \"app\"\npath_prefix = \"/{name}\"\n\
             [routes.websocket]\nqueue = {QUEUE}\n{websocket}\n"
        );
    }
    std::fs::write(dir.join("spillway.toml"), config).unwrap();
    let (proxy, web, admin) = serve(&dir.join("spillway.toml"));
    let pid = proxy.0.id();

    // The proxy's memory, sampled every 250 ms until the consumers are done.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss(pid));
                std::thread::sleep(Duration::from_millis(250));
            }
            peak
        })
    };

    let url = |name: &str| format!("ws://{web}/{name}");
    let consumers: Vec<_> = ["block", "flow", "drop_newest", "disconnect"]
        .into_iter()
        .map(|name| (name, tokio::spawn(consume(url(name), run))))
        .collect();
    let (py_url, secs) = (url("drop_oldest"), run.as_secs_f64().to_string());
    let py_consumer = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py).args(["-c", PY_CONSUMER, &py_url, &secs]).output().unwrap()
    });
    let mut got = BTreeMap::new();
    for (name, c) in consumers {
        got.insert(name, c.await.unwrap());
    }
    let py_out = py_consumer.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();

    let sent = |name: &str| produced[name].sent.load(Ordering::Relaxed);
    let dropped = async |name: &str| {
        metric(&admin, &format!("spillway_websocket_dropped_messages_total{{route=\"{name}\"}}")).await
    };
    let events = produced["flow"].heard.lock().unwrap().len();
    let (dropped_newest, dropped_oldest) = (dropped("drop_newest").await, dropped("drop_oldest").await);
    let report = format!(
        "{run:?}: proxy peak RSS {:.1} MiB; sent/received: block {}/{}, flow {}/{} ({} pause/resume \
         events), drop_newest {}/{} ({} dropped), disconnect {}/{} ({:?}); drop_oldest (Python: count, last, in order) {} ({} dropped)",
        peak as f64 / (1 << 20) as f64,
        sent("block"),
        got["block"].seqs.len(),
        sent("flow"),
        got["flow"].seqs.len(),
        events,
        sent("drop_newest"),
        got["drop_newest"].seqs.len(),
        dropped_newest,
        sent("disconnect"),
        got["disconnect"].seqs.len(),
        got["disconnect"].close,
        String::from_utf8_lossy(&py_out.stdout).trim(),
        dropped_oldest,
    );
    eprintln!("{report}");
    assert!(peak > 0 && peak < RSS_BOUND, "{report}");

    // block: everything sent arrives, in order; the producer was held back, not cut off.
    let upto = |n: u64| (1..=n).collect::<Vec<_>>();
    assert!(!produced["block"].cut.load(Ordering::Relaxed), "{report}");
    assert!(sent("block") < RATE * run.as_secs(), "TCP held the producer back: {report}");
    assert_eq!(got["block"].seqs, upto(sent("block")), "{report}");

    // block with flow control: the producer heard pause, resume, pause, … and lost nothing.
    let heard = produced["flow"].heard.lock().unwrap().clone();
    assert!(heard.len() >= 2, "{report}");
    for (i, event) in heard.iter().enumerate() {
        let want = if i % 2 == 0 {
            r#"{"event":"flow.pause","reason":"buffer full"}"#
        } else {
            r#"{"event":"flow.resume"}"#
        };
        assert_eq!(event, want, "event {i}: {report}");
    }
    assert_eq!(got["flow"].seqs, upto(sent("flow")), "{report}");

    // drop_newest: what was queued first arrives, in order; every message arrives or is counted.
    let newest = &got["drop_newest"].seqs;
    assert_eq!(newest[..QUEUE], upto(QUEUE as u64)[..], "{report}");
    assert!(newest.windows(2).all(|w| w[0] < w[1]), "{report}");
    assert_eq!(newest.len() as u64 + dropped_newest, sent("drop_newest"), "{report}");
    assert!(dropped_newest > 0, "{report}");

    // drop_oldest, read by Python: in order, ending with the newest; the rest is counted.
    assert!(py_out.status.success(), "{}", String::from_utf8_lossy(&py_out.stderr));
    let line = String::from_utf8(py_out.stdout).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (count, last): (u64, u64) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    assert_eq!(fields[2], "True", "in order: {report}");
    assert_eq!(last, sent("drop_oldest"), "the newest survives: {report}");
    assert_eq!(count + dropped_oldest, sent("drop_oldest"), "{report}");

    // disconnect: the slow consumer was closed with 1008, early, and counted.
    let slow = &got["disconnect"];
    assert!(matches!(slow.close, Some(CloseCode::Policy) | None), "{report}");
    assert!(produced["disconnect"].cut.load(Ordering::Relaxed), "the producer's side closed too: {report}");
    assert_eq!(
        metric(&admin, "spillway_websocket_disconnects_total{route=\"disconnect\",reason=\"slow_consumer\"}")
            .await,
        1,
        "{report}"
    );
    assert_eq!(slow.seqs, upto(slow.seqs.len() as u64), "{report}");
}
