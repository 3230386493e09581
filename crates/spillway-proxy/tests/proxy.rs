//! The proxy end to end: a real upstream, the proxy, a real client, all on 127.0.0.1:0.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::Full;
use std::sync::atomic::Ordering;
use std::time::Duration;

const BASE: &str = r#"
[admin]
listen = "127.0.0.1:0"
[server]
threads = 2
shutdown_grace = "5s"
[[listeners]]
name = "web"
listen = "127.0.0.1:0"
max_body_bytes = 1024
max_header_bytes = 8192
[[upstreams]]
name = "app"
addrs = ["{UP}"]
"#;

fn config(routes: &str) -> String {
    format!("{BASE}\n{routes}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_pass_through_with_forwarded_for_and_hop_by_hop_stripped() {
    let (up, seen) = upstream().await;
    let proxy = proxy(&config("[[routes]]\nlistener = \"web\"\nupstream = \"app\"\n"), up);
    let addr = proxy.listener_addr("web").unwrap();
    let (status, _, body) = get(addr, "/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));

    let req = Request::post(format!("http://{addr}/echo"))
        .header("connection", "x-secret")
        .header("x-secret", "hop")
        .body(Full::new(Bytes::from_static(b"ping")))
        .unwrap();
    let (status, headers, body) = send(&client(), req).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ping"[..]));
    assert_eq!(headers["x-seen-xff"], "127.0.0.1");

    let req = Request::get(format!("http://{addr}/")).body(Full::default()).unwrap();
    let resp = h2_client().request(req).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(seen.requests.load(Ordering::Relaxed), 3);
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_status_and_headers() {
    let (up, _) = upstream().await;
    let routes = r#"
[[routes]]
name = "limited"
listener = "web"
upstream = "app"
path_prefix = "/delay"
[routes.concurrency]
max = 1
queue = 1
queue_timeout = "100ms"

[[routes]]
name = "rated"
listener = "web"
upstream = "app"
path_prefix = "/rated"
[[routes.rate]]
key = "ip"
rate = 2
per = "1m"

[[routes]]
name = "slow"
listener = "web"
upstream = "app"
path_prefix = "/timeout"
timeout = "50ms"

[[routes]]
name = "rest"
listener = "web"
upstream = "app"
path_prefix = "/status"
"#;
    let proxy = proxy(&config(routes), up);
    let addr = proxy.listener_addr("web").unwrap();

    // Concurrency: one in flight, one queued, the third refused at once; the queued one times
    // out after 100 ms (504).
    let slow = |ms: u64| tokio::spawn(async move { get(addr, &format!("/delay/{ms}")).await });
    let first = slow(400);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let queued = slow(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, headers, _) = get(addr, "/delay/0").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let (status, headers, _) = queued.await.unwrap();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(first.await.unwrap().0, StatusCode::OK);

    // Rate: 2 per minute per IP, then 429 with Retry-After and the IETF fields.
    for _ in 0..2 {
        assert_eq!(get(addr, "/rated").await.0, StatusCode::OK);
    }
    let (status, headers, _) = get(addr, "/rated").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "retry-after {retry}");
    assert_eq!(headers["ratelimit-policy"], "\"default\";q=2");
    assert!(headers["ratelimit"].to_str().unwrap().starts_with("\"default\";r=0;t="));

    // The same refusal for a gRPC caller: trailers-only, RESOURCE_EXHAUSTED, pushback.
    let req = Request::post(format!("http://{addr}/rated"))
        .header("content-type", "application/grpc")
        .body(Full::default())
        .unwrap();
    let (status, headers, _) = send(&h2_client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "8");
    assert!(headers.contains_key("grpc-retry-pushback-ms"));

    // Upstream too slow for the route's timeout: 504.
    assert_eq!(get(addr, "/timeout?delay=500").await.0, StatusCode::GATEWAY_TIMEOUT);
    // Upstream statuses pass through.
    assert_eq!(get(addr, "/status/418").await.0, StatusCode::IM_A_TEAPOT);
    // No route: 404.
    assert_eq!(get(addr, "/nowhere").await.0, StatusCode::NOT_FOUND);
    // Body over the listener's 1 KiB cap: 413, the upstream never sees it.
    let req = Request::post(format!("http://{addr}/status/200"))
        .body(Full::new(Bytes::from(vec![b'x'; 4096])))
        .unwrap();
    assert_eq!(send(&client(), req).await.0, StatusCode::PAYLOAD_TOO_LARGE);

    let admin = proxy.admin_addr().unwrap();
    assert_eq!(
        metric(admin, "spillway_rejected_requests_total{route=\"limited\",reason=\"queue_full\"}").await,
        1.0
    );
    assert_eq!(
        metric(admin, "spillway_rejected_requests_total{route=\"limited\",reason=\"queue_timeout\"}").await,
        1.0
    );
    assert_eq!(
        metric(admin, "spillway_rejected_requests_total{route=\"rated\",reason=\"rate_limited\"}").await,
        2.0
    );
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_limits_answer_431() {
    let (up, _) = upstream().await;
    let proxy = proxy(&config("[[routes]]\nlistener = \"web\"\nupstream = \"app\"\n"), up);
    let addr = proxy.listener_addr("web").unwrap();
    let req = Request::get(format!("http://{addr}/"))
        .header("x-big", "y".repeat(16 << 10))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client(), req).await.0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // A chunked body (no Content-Length) past the 1 KiB cap is cut off: 413.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let chunk = format!("800\r\n{}\r\n", "x".repeat(0x800));
    let head = "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n";
    s.write_all(format!("{head}{chunk}{chunk}0\r\n\r\n").as_bytes()).await.unwrap();
    let mut resp = vec![0u8; 64];
    let n = s.read(&mut resp).await.unwrap();
    assert!(resp[..n].starts_with(b"HTTP/1.1 413"), "{}", String::from_utf8_lossy(&resp[..n]));
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_slow_head_connections_close_at_the_header_timeout_busy_ones_do_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (up, _) = upstream().await;
    let cfg = config("[[routes]]\nlistener = \"web\"\nupstream = \"app\"\n")
        .replace("max_body_bytes = 1024", "max_body_bytes = 1024\nheader_read_timeout = \"300ms\"");
    let proxy = proxy(&cfg, up);
    let addr = proxy.listener_addr("web").unwrap();
    // Reads until the proxy closes; returns what came and how long it took.
    async fn until_closed(s: &mut tokio::net::TcpStream) -> (String, Duration) {
        let started = tokio::time::Instant::now();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&got).into(), started.elapsed()),
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => panic!("not closed within 5 s; got {:?}", String::from_utf8_lossy(&got)),
            }
        }
    }

    // A slow head (slowloris), one byte every 100 ms: closed at the timeout, nothing answered.
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let drip = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nHost: t\r\nX-Drip: ".iter().cycle() {
            if slow.write_all(&[*b]).await.is_err() {
                return slow;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        unreachable!()
    });
    let mut slow = drip.await.unwrap();
    let (got, took) = until_closed(&mut slow).await;
    assert!(got.is_empty() || got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(took < Duration::from_secs(2), "{took:?}");

    // A keep-alive connection: answered, then closed once idle past the timeout.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let started = tokio::time::Instant::now();
    let (got, _) = until_closed(&mut idle).await;
    assert!(got.starts_with("HTTP/1.1 200") && got.ends_with("hello"), "{got}");
    let idle_for = started.elapsed();
    assert!(idle_for >= Duration::from_millis(250) && idle_for < Duration::from_secs(2), "{idle_for:?}");

    // A request whose upstream takes 800 ms, far past the header timeout: answered in full.
    let mut busy = tokio::net::TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /x?delay=800 HTTP/1.1\r\nHost: t\r\n\r\n").await.unwrap();
    let (got, took) = until_closed(&mut busy).await;
    assert!(got.starts_with("HTTP/1.1 200") && got.ends_with("hello"), "{got}");
    assert!(took >= Duration::from_millis(800), "{took:?}");
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_is_502_and_the_breaker_opens() {
    // A port with nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let cfg = config(
        r#"
[[upstreams]]
name = "down"
addrs = ["CLOSED"]
connect_timeout = "200ms"
[upstreams.breaker]
window = 10
minimum_calls = 4
failure_rate = 0.5
open_duration = "30s"

[[routes]]
listener = "web"
upstream = "down"
"#,
    )
    .replace("CLOSED", &closed.to_string());
    let (up, _) = upstream().await;
    let proxy = proxy(&cfg, up);
    let addr = proxy.listener_addr("web").unwrap();
    for _ in 0..4 {
        assert_eq!(get(addr, "/").await.0, StatusCode::BAD_GATEWAY);
    }
    let (status, headers, _) = get(addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "the breaker is open");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((20..=40).contains(&retry), "retry-after {retry} is the time to half-open");
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(metric(admin, "spillway_breaker_state{upstream=\"down\"}").await, 1.0);
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_and_refuses_nothing() {
    let (up, _) = upstream().await;
    let routes = r#"
[[routes]]
name = "shadow"
listener = "web"
upstream = "app"
[[routes.rate]]
key = "global"
rate = 1
per = "1m"
dry_run = true
"#;
    let proxy = proxy(&config(routes), up);
    let addr = proxy.listener_addr("web").unwrap();
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await.0, StatusCode::OK);
    }
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(
        metric(admin, "spillway_dry_run_rejections_total{route=\"shadow\",reason=\"rate_limited\"}").await,
        4.0
    );
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheddable_work_is_refused_first() {
    let (up, _) = upstream().await;
    let routes = r#"
[[routes]]
name = "shed"
listener = "web"
upstream = "app"
[routes.concurrency]
max = 4
queue = 10
[routes.shed]
header = "x-criticality"
"#;
    let proxy = proxy(&config(routes), up);
    let addr = proxy.listener_addr("web").unwrap();
    // Two slow critical requests fill half the limit.
    let busy: Vec<_> = (0..2).map(|_| tokio::spawn(async move { get(addr, "/delay/300").await })).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let with = |class: &'static str| {
        Request::get(format!("http://{addr}/")).header("x-criticality", class).body(Full::default()).unwrap()
    };
    let (status, headers, _) = send(&client(), with("sheddable")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "sheddable may fill only half");
    assert!(headers.contains_key("retry-after"));
    assert_eq!(send(&client(), with("critical")).await.0, StatusCode::OK);
    for b in busy {
        assert_eq!(b.await.unwrap().0, StatusCode::OK);
    }
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_and_queued_requests() {
    let (up, seen) = upstream().await;
    let routes = r#"
[[routes]]
listener = "web"
upstream = "app"
[routes.concurrency]
max = 10
queue = 100
queue_timeout = "5s"
"#;
    let proxy = proxy(&config(routes), up);
    let addr = proxy.listener_addr("web").unwrap();
    let admin = proxy.admin_addr().unwrap();
    // 40 requests: 10 in flight, 30 queued, each 200 ms upstream.
    let requests: Vec<_> =
        (0..40).map(|_| tokio::spawn(async move { get(addr, "/delay/200").await })).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::task::spawn_blocking(move || proxy.shutdown());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(get(admin, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE);
    for r in requests {
        let (status, _, _) = r.await.unwrap();
        assert_eq!(status, StatusCode::OK, "an accepted request was lost in the drain");
    }
    stopping.await.unwrap().unwrap();
    assert_eq!(seen.requests.load(Ordering::Relaxed), 40);
    assert!(seen.max_in_flight.load(Ordering::Relaxed) <= 10);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "not accepting after shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_response_to_a_slow_reader_keeps_memory_bounded() {
    use http_body_util::BodyExt;
    let (up, _) = upstream().await;
    let proxy = proxy(&config("[[routes]]\nlistener = \"web\"\nupstream = \"app\"\n"), up);
    let addr = proxy.listener_addr("web").unwrap();
    let before = rss_bytes();
    const TOTAL: u64 = 1 << 30;
    let resp = client()
        .request(Request::get(format!("http://{addr}/big/{TOTAL}")).body(Full::default()).unwrap())
        .await
        .unwrap();
    let mut body = resp.into_body();
    let (mut read, mut peak) = (0u64, 0u64);
    let mut frames = 0u64;
    while let Some(frame) = body.frame().await {
        read += frame.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        frames += 1;
        // A slow reader: it pauses every 16 frames (1 MiB), so the upstream (which could go at memory
        // speed) is held back by the proxy's bounded buffers.
        if frames % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            peak = peak.max(rss_bytes().saturating_sub(before));
        }
    }
    assert_eq!(read, TOTAL);
    assert!(peak < 64 << 20, "memory grew by {} MiB while streaming 1 GiB", peak >> 20);
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request_and_keep_unchanged_state() {
    let (up, _) = upstream().await;
    let rated = r#"
[[routes]]
name = "rated"
listener = "web"
upstream = "app"
path_prefix = "/rated"
[[routes.rate]]
key = "global"
rate = 3
per = "1m"
"#;
    let busy = |max: usize| {
        format!(
            "[[routes]]\nname = \"busy\"\nlistener = \"web\"\nupstream = \"app\"\n[routes.concurrency]\nmax = {max}\nqueue = 1000\nqueue_timeout = \"5s\"\n"
        )
    };
    let proxy = std::sync::Arc::new(proxy(&config(&format!("{rated}\n{}", busy(50))), up));
    let addr = proxy.listener_addr("web").unwrap();
    // Use 2 of the 3 tokens of the rate limit before reloading.
    for _ in 0..2 {
        assert_eq!(get(addr, "/rated").await.0, StatusCode::OK);
    }
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|_| {
            let done = done.clone();
            tokio::spawn(async move {
                let client = client();
                let (mut ok, mut failed) = (0, 0);
                while !done.load(Ordering::Relaxed) {
                    let req =
                        Request::get(format!("http://{addr}/busy?delay=2")).body(Full::default()).unwrap();
                    match client.request(req).await {
                        Ok(r) if r.status() == StatusCode::OK => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut applied, mut refused) = (0, 0);
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let text = if i % 4 == 3 {
            // Invalid: an unknown key. The running config stays.
            config(&format!("{rated}\n{}\nbogus = 1\n", busy(50)))
        } else {
            // Valid: the busy route's limit changes; the rated route does not.
            config(&format!("{rated}\n{}", busy(40 + i)))
        }
        .replace("{UP}", &up.to_string());
        match spillway_proxy::Config::parse(&text, "reload.toml") {
            Ok(c) => {
                proxy.reload(c).unwrap();
                applied += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("bogus"), "{e}");
                proxy.reload_failed();
                refused += 1;
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for l in load {
        let (o, f) = l.await.unwrap();
        ok += o;
        failed += f;
    }
    assert_eq!((applied, refused), (15, 5));
    assert_eq!(failed, 0, "{failed} requests failed during reloads ({ok} succeeded)");
    assert!(ok > 100, "only {ok} requests ran during the reloads");
    // The unchanged rate limit kept its state: one token left, then refused.
    assert_eq!(get(addr, "/rated").await.0, StatusCode::OK);
    assert_eq!(get(addr, "/rated").await.0, StatusCode::TOO_MANY_REQUESTS);
    let admin = proxy.admin_addr().unwrap();
    assert_eq!(metric(admin, "spillway_reloads_total{result=\"success\"}").await, 15.0);
    assert_eq!(metric(admin, "spillway_reloads_total{result=\"failure\"}").await, 5.0);
    assert_eq!(metric(admin, "spillway_concurrency_limit{route=\"busy\"}").await, 58.0);
    let proxy = std::sync::Arc::try_unwrap(proxy).unwrap();
    stop(proxy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adaptive_limit_bulkhead_and_an_h2c_upstream() {
    let (up, _) = upstream().await;
    let routes = r#"
[[upstreams]]
name = "grpc"
addrs = ["{UP}"]
protocol = "h2c"

[[routes]]
name = "adaptive"
listener = "web"
upstream = "app"
path_prefix = "/delay"
[routes.adaptive]
algorithm = "aimd"
min = 1
max = 100
initial = 2

[[routes]]
name = "tenants"
listener = "web"
upstream = "app"
path_prefix = "/tenants"
[routes.bulkhead]
header = "x-tenant"
capacity = 2
partitions = [{ value = "gold", guaranteed = 1 }]

[[routes]]
name = "h2"
listener = "web"
upstream = "grpc"
"#;
    let proxy = proxy(&config(routes), up);
    let addr = proxy.listener_addr("web").unwrap();
    let admin = proxy.admin_addr().unwrap();

    // Adaptive, starting at 2: a third concurrent request is refused with Retry-After.
    let busy: Vec<_> = (0..2).map(|_| tokio::spawn(async move { get(addr, "/delay/300").await })).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, headers, _) = get(addr, "/delay/0").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(metric(admin, "spillway_concurrency_limit{route=\"adaptive\"}").await, 2.0);
    for b in busy {
        assert_eq!(b.await.unwrap().0, StatusCode::OK);
    }

    // Bulkhead: the default partition may borrow one slot (the other is gold's guarantee).
    let tenant = move |t: &'static str, path: &'static str| {
        Request::get(format!("http://{addr}{path}")).header("x-tenant", t).body(Full::default()).unwrap()
    };
    let held = tokio::spawn(async move { send(&client(), tenant("free", "/tenants?delay=300")).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(send(&client(), tenant("free", "/tenants")).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&client(), tenant("gold", "/tenants")).await.0, StatusCode::OK);
    assert_eq!(held.await.unwrap().0, StatusCode::OK);
    assert_eq!(
        metric(admin, "spillway_rejected_requests_total{route=\"tenants\",reason=\"bulkhead_full\"}").await,
        1.0
    );

    // An HTTP/1.1 client through to an h2c upstream.
    let (status, _, body) = get(addr, "/anything").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello"[..]));
    stop(proxy).await;
}

/// An HTTP/1.1 upstream written by hand, to answer in shapes a well-behaved server never
/// would. Each connection serves requests until an answer says to close it; counts connections.
async fn scripted_upstream() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut b = [0u8; 1];
                        if s.read(&mut b).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(b[0]);
                    }
                    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_string();
                    let (answer, close): (&[u8], bool) = match line.split(' ').nth(1).unwrap_or_default() {
                        "/smuggle" => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", true),
                        "/twice" => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok", true),
                        "/interim" => (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
                        "/chunked" => (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3;x=y\r\n!!!\r\n0\r\nT: 1\r\n\r\n", false),
                        "/eof" => (b"HTTP/1.1 200 OK\r\n\r\nuntil the close", true),
                        "/cut" => (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", true),
                        // A keep-alive answer, then the upstream closes anyway, as one does when
                        // its idle timeout fires.
                        "/then-close" => (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true),
                        _ => (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", false),
                    };
                    let answer = if line.starts_with("HEAD ") { &answer[..answer.len() - 5] } else { answer };
                    if s.write_all(answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_framing_is_checked_and_closed_connections_are_replaced() {
    let (up, conns) = scripted_upstream().await;
    let proxy = proxy(&config("[[routes]]\nlistener = \"web\"\nupstream = \"app\"\n"), up);
    let addr = proxy.listener_addr("web").unwrap();

    // Answers that could smuggle a second one onto the connection: 502, never passed on.
    assert_eq!(get(addr, "/smuggle").await.0, StatusCode::BAD_GATEWAY);
    assert_eq!(get(addr, "/twice").await.0, StatusCode::BAD_GATEWAY);
    // Interim answers are skipped; chunked bodies are decoded (extensions and trailers dropped).
    assert_eq!(&get(addr, "/interim").await.2[..], b"ok");
    assert_eq!(&get(addr, "/chunked").await.2[..], b"ok!!!");
    // A body delimited by the close arrives whole; one cut short fails the client's read.
    assert_eq!(&get(addr, "/eof").await.2[..], b"until the close");
    let resp = client().request(Request::get(format!("http://{addr}/cut")).body(Full::default()).unwrap());
    let complete = match resp.await {
        Ok(r) => http_body_util::BodyExt::collect(r.into_body()).await.is_ok(),
        Err(_) => false,
    };
    assert!(!complete, "a truncated body must not look complete");
    // HEAD keeps the upstream's Content-Length, with no body.
    let req = Request::head(format!("http://{addr}/")).body(Full::default()).unwrap();
    let (status, headers, body) = send(&client(), req).await;
    assert_eq!((status, &headers["content-length"], body.len()), (StatusCode::OK, &"5".parse().unwrap(), 0));

    // Plain answers reuse one connection; an upstream that closes after every answer costs a
    // new one each time, and no request fails (GET, or an empty POST, which is not retried).
    let before = conns.load(Ordering::Relaxed);
    for _ in 0..10 {
        assert_eq!(&get(addr, "/").await.2[..], b"hello");
    }
    assert!(conns.load(Ordering::Relaxed) - before <= 2, "keep-alive answers reuse connections");
    let before = conns.load(Ordering::Relaxed);
    for i in 0..20 {
        let req = if i % 2 == 0 {
            Request::get(format!("http://{addr}/then-close"))
        } else {
            Request::post(format!("http://{addr}/then-close"))
        };
        let (status, _, body) = send(&client(), req.body(Full::default()).unwrap()).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]), "request {i}");
        // Let the close reach the proxy, as it would between real requests.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Each worker may start with one idle connection left from the loop above.
    let opened = conns.load(Ordering::Relaxed) - before;
    assert!((18..=20).contains(&opened), "{opened} connections for 20 answers that each close theirs");
    stop(proxy).await;
}
