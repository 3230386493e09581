//! WebSocket relays end to end: a tokio-tungstenite upstream and client, the proxy between.

mod common;

use common::{metric, stop};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// What the upstream does with each connection.
#[derive(Clone, Copy)]
enum Mode {
    /// Sends every message back.
    Echo,
    /// Sends 1..=n as fast as it may, then waits for the close.
    Firehose(u64),
    /// As `Firehose`, each number zero-padded to 1 KiB: more than kernel buffers hold.
    Wide(u64),
}

/// A WebSocket upstream; it records the text messages it receives.
async fn ws_upstream(mode: Mode) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let h = heard.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let h = h.clone();
            tokio::spawn(async move {
                let Ok(ws) = tokio_tungstenite::accept_async(s).await else { return };
                let (mut tx, mut rx) = ws.split();
                match mode {
                    Mode::Echo => {
                        while let Some(Ok(m)) = rx.next().await {
                            if m.is_close() {
                                break;
                            }
                            if tx.send(m).await.is_err() {
                                break;
                            }
                        }
                    }
                    Mode::Firehose(n) | Mode::Wide(n) => {
                        let width = if matches!(mode, Mode::Wide(_)) { 1024 } else { 0 };
                        let listen = tokio::spawn(async move {
                            while let Some(Ok(m)) = rx.next().await {
                                if let Message::Text(t) = m {
                                    h.lock().unwrap().push(t.to_string());
                                }
                            }
                        });
                        for i in 1..=n {
                            if tx.send(Message::text(format!("{i:0>width$}"))).await.is_err() {
                                break;
                            }
                        }
                        let _ = listen.await;
                    }
                }
            });
        }
    });
    (addr, heard)
}

fn ws_proxy(up: SocketAddr, websocket: &str) -> spillway_proxy::Proxy {
    let config = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[server]\nthreads = 1\nshutdown_grace = \"2s\"\n[[listeners]]\nname = \"web\"\n\
         listen = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"app\"\naddrs = [\"{up}\"]\n[[routes]]\n\
         name = \"live\"\nlistener = \"web\"\nupstream = \"app\"\n[routes.websocket]\n{websocket}"
    );
    spillway_proxy::Proxy::start(spillway_proxy::Config::parse(&config, "ws.toml").unwrap()).unwrap()
}

type Client = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(proxy: &spillway_proxy::Proxy) -> Client {
    let url = format!("ws://{}/feed", proxy.listener_addr("web").unwrap());
    tokio_tungstenite::connect_async(url).await.expect("the upgrade through the proxy").0
}

/// Reads numbered messages: slowly (1 ms each) for `slow_for`, then as fast as they come,
/// until the stream goes quiet or closes. Returns the numbers and the close frame, if any.
async fn read_numbers(client: &mut Client, slow_for: Duration) -> (Vec<u64>, Option<CloseCode>) {
    let started = tokio::time::Instant::now();
    let mut got = Vec::new();
    loop {
        let next = tokio::time::timeout(Duration::from_millis(500), client.next()).await;
        match next {
            Ok(Some(Ok(Message::Text(t)))) => got.push(t.parse().unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => return (got, frame.map(|f| f.code)),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) | Err(_) => return (got, None),
        }
        if started.elapsed() < slow_for {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_pass_both_ways_and_the_close_is_relayed() {
    let (up, _) = ws_upstream(Mode::Echo).await;
    let proxy = ws_proxy(up, "");
    let mut c = connect(&proxy).await;
    c.send(Message::text("hello")).await.unwrap();
    assert_eq!(c.next().await.unwrap().unwrap(), Message::text("hello"));
    c.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(c.next().await.unwrap().unwrap(), Message::binary(vec![1u8, 2, 3]));
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(metric(admin, "spillway_websocket_connections{route=\"live\"}").await, 1.0);
    c.close(None).await.unwrap();
    // The close travels to the upstream and back.
    while let Some(Ok(m)) = c.next().await {
        if m.is_close() {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metric(admin, "spillway_websocket_connections{route=\"live\"}").await, 0.0);
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_keeps_every_message_in_order() {
    let (up, _) = ws_upstream(Mode::Firehose(20_000)).await;
    let proxy = ws_proxy(up, "policy = \"block\"\nqueue = 64\n");
    let mut c = connect(&proxy).await;
    let (got, _) = read_numbers(&mut c, Duration::from_millis(500)).await;
    assert_eq!(got, (1..=20_000).collect::<Vec<_>>(), "all of it, in order");
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_policies_keep_the_newest_or_the_oldest() {
    // drop_oldest: a slow reader sees the stream move on, ending with the last message.
    let (up, _) = ws_upstream(Mode::Firehose(20_000)).await;
    let proxy = ws_proxy(up, "policy = \"drop_oldest\"\nqueue = 64\n");
    let mut c = connect(&proxy).await;
    let (got, _) = read_numbers(&mut c, Duration::from_millis(500)).await;
    assert!(got.windows(2).all(|w| w[0] < w[1]), "order is kept");
    assert_eq!(*got.last().unwrap(), 20_000, "the newest survives");
    assert!(got.len() < 20_000, "a slow reader does not get everything");
    let dropped =
        metric(proxy.admin_addr().unwrap(), "spillway_websocket_dropped_messages_total{route=\"live\"}")
            .await;
    assert_eq!(dropped as usize + got.len(), 20_000, "every message is delivered or counted");
    drop(c);
    stop(proxy).await;

    // drop_newest: what was queued first is what arrives.
    let (up, _) = ws_upstream(Mode::Firehose(20_000)).await;
    let proxy = ws_proxy(up, "policy = \"drop_newest\"\nqueue = 64\n");
    let mut c = connect(&proxy).await;
    let (got, _) = read_numbers(&mut c, Duration::from_millis(500)).await;
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(&got[..64], &(1..=64).collect::<Vec<_>>()[..], "the first queue-full arrives");
    assert!(got.len() < 20_000);
    drop(c);
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_with_1008_and_an_oversize_message_gets_1009() {
    let (up, _) = ws_upstream(Mode::Firehose(20_000)).await;
    let proxy = ws_proxy(up, "policy = \"disconnect\"\nqueue = 64\n");
    let mut c = connect(&proxy).await;
    let (got, code) = read_numbers(&mut c, Duration::from_secs(10)).await;
    assert_eq!(code, Some(CloseCode::Policy), "closed as too slow after {} messages", got.len());
    assert!(got.len() < 20_000);
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(
        metric(admin, "spillway_websocket_disconnects_total{route=\"live\",reason=\"slow_consumer\"}").await,
        1.0
    );
    stop(proxy).await;

    let (up, _) = ws_upstream(Mode::Echo).await;
    let proxy = ws_proxy(up, "max_message = \"1KiB\"\n");
    let mut c = connect(&proxy).await;
    c.send(Message::binary(vec![7u8; 4096])).await.unwrap();
    let (_, code) = read_numbers(&mut c, Duration::ZERO).await;
    assert_eq!(code, Some(CloseCode::Size));
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_is_closed_after_max_lag() {
    let (up, _) = ws_upstream(Mode::Wide(100_000)).await;
    let proxy = ws_proxy(up, "policy = \"block\"\nqueue = 64\nmax_lag = \"300ms\"\n");
    let mut c = connect(&proxy).await;
    // Reads nothing for a while: kernel buffers fill, then the queue, then a message waits 300 ms.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (got, code) = read_numbers(&mut c, Duration::ZERO).await;
    assert!(!got.is_empty() && got.len() < 100_000, "{}", got.len());
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>(), "what arrives is a prefix, in order");
    // The close frame reaches a reader only if it reads within a second of it being sent.
    assert!(matches!(code, None | Some(CloseCode::Policy)), "{code:?}");
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(
        metric(admin, "spillway_websocket_disconnects_total{route=\"live\",reason=\"lagging\"}").await,
        1.0
    );
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_what_is_queued_then_closes_with_1001() {
    let (up, _) = ws_upstream(Mode::Wide(100_000)).await;
    let proxy = ws_proxy(up, "policy = \"block\"\nqueue = 64\n");
    let mut c = connect(&proxy).await;
    let admin = proxy.admin_addr().unwrap();
    // The queue fills behind a reader that waits.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(metric(admin, "spillway_websocket_queued_messages{route=\"live\"}").await > 0.0);
    let stopping = tokio::spawn(stop(proxy));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (got, code) = read_numbers(&mut c, Duration::ZERO).await;
    assert_eq!(code, Some(CloseCode::Away), "after {} messages", got.len());
    assert!(got.len() < 100_000);
    assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>(), "nothing read from the producer is lost");
    tokio::time::timeout(Duration::from_secs(5), stopping).await.expect("the drain ends").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_tells_the_producer_to_pause_then_resume() {
    let (up, heard) = ws_upstream(Mode::Firehose(5_000)).await;
    let proxy = ws_proxy(up, "policy = \"block\"\nqueue = 64\nflow_control = true\n");
    let mut c = connect(&proxy).await;
    let (got, _) = read_numbers(&mut c, Duration::from_millis(300)).await;
    assert_eq!(got.len(), 5_000);
    let heard = heard.lock().unwrap().clone();
    assert!(heard.len() >= 2, "{heard:?}");
    assert_eq!(heard[0], r#"{"event":"flow.pause","reason":"buffer full"}"#);
    assert_eq!(heard[1], r#"{"event":"flow.resume"}"#);
    // Pause and resume alternate.
    assert!(heard.iter().enumerate().all(|(i, e)| e.contains(if i % 2 == 0 { "pause" } else { "resume" })));
    stop(proxy).await;
}

const PY_CLIENT: &str = r#"
import asyncio, sys, time, websockets

async def main(echo_url, feed_url):
    async with websockets.connect(echo_url) as ws:
        await ws.send("hello")
        assert await ws.recv() == "hello"
    got = []
    async with websockets.connect(feed_url) as ws:
        start = time.monotonic()
        while True:
            try:
                m = await asyncio.wait_for(ws.recv(), 0.5)
            except (asyncio.TimeoutError, websockets.ConnectionClosed):
                break
            got.append(int(m))
            if time.monotonic() - start < 0.5:
                await asyncio.sleep(0.001)
    print(len(got), got[-1] if got else 0, all(a < b for a, b in zip(got, got[1:])))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pythons_websockets_client_through_the_proxy() {
    let py = test_support::python_with_websockets();
    let (echo_up, _) = ws_upstream(Mode::Echo).await;
    let echo = ws_proxy(echo_up, "");
    let (feed_up, _) = ws_upstream(Mode::Firehose(20_000)).await;
    let feed = ws_proxy(feed_up, "policy = \"drop_oldest\"\nqueue = 64\n");
    let echo_url = format!("ws://{}/echo", echo.listener_addr("web").unwrap());
    let feed_url = format!("ws://{}/feed", feed.listener_addr("web").unwrap());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(py).args(["-c", PY_CLIENT, &echo_url, &feed_url]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8(out.stdout).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (count, last): (u64, u64) = (fields[0].parse().unwrap(), fields[1].parse().unwrap());
    assert_eq!(fields[2], "True", "in order: {line}");
    assert_eq!(last, 20_000, "the newest survives: {line}");
    assert!(count < 20_000, "a slow reader does not get everything: {line}");
    let dropped =
        metric(feed.admin_addr().unwrap(), "spillway_websocket_dropped_messages_total{route=\"live\"}").await;
    assert_eq!(dropped as u64 + count, 20_000);
    stop(echo).await;
    stop(feed).await;
}

#[test]
fn bad_websocket_settings_name_file_line_and_key() {
    let config = |ws: &str| {
        format!(
            "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n[[upstreams]]\nname = \"app\"\n\
             addrs = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"live\"\nlistener = \"web\"\nupstream = \"app\"\n\
             [routes.websocket]\n{ws}"
        )
    };
    for (ws, key) in [
        ("max_lag = \"0s\"\n", "routes[0].websocket.max_lag"),
        ("policy = \"fast\"\n", "routes[0].websocket.policy"),
        ("queue = 0\n", "routes[0].websocket.queue"),
    ] {
        let e = spillway_proxy::Config::parse(&config(ws), "ws.toml").unwrap_err().to_string();
        assert!(e.contains("ws.toml:12") && e.contains(key), "{ws}: {e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_upgrades_cannot_pass_max_connections() {
    let (up, _) = ws_upstream(Mode::Echo).await;
    let proxy = ws_proxy(up, "max_connections = 3\n");
    let url = format!("ws://{}/feed", proxy.listener_addr("web").unwrap());
    let tries = (0..20).map(|_| tokio::spawn(tokio_tungstenite::connect_async(url.clone())));
    let (mut open, mut refused) = (Vec::new(), 0);
    for t in tries.collect::<Vec<_>>() {
        match t.await.unwrap() {
            Ok((ws, _)) => open.push(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503);
                assert!(resp.headers().contains_key("retry-after"));
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((open.len(), refused), (3, 17));
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(metric(admin, "spillway_websocket_connections{route=\"live\"}").await, 3.0);
    // A closed relay frees its slot.
    drop(open.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(metric(admin, "spillway_websocket_connections{route=\"live\"}").await, 2.0);
    assert!(tokio_tungstenite::connect_async(url).await.is_ok());
    stop(proxy).await;
}
