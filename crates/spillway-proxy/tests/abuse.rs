//! Protocol abuse from clients (issue 10): request smuggling shapes, each answered 400 or
//! forwarded once with the connection closed, never two requests upstream.

mod common;

use common::{proxy, stop, upstream};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CONFIG: &str = r#"
[[listeners]]
name = "web"
listen = "127.0.0.1:0"
[[upstreams]]
name = "app"
addrs = ["{UP}"]
[[routes]]
listener = "web"
upstream = "app"
"#;

/// Sends `raw` on a fresh connection; what came back before the proxy closed it (or 1 s of
/// quiet), and whether it closed.
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> (String, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(raw).await;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_are_refused_or_forwarded_once_and_closed() {
    let (up, seen) = upstream().await;
    let proxy = proxy(CONFIG, up);
    let addr = proxy.listener_addr("web").unwrap();
    let smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let long_ext = format!(
        "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n{smuggled}",
        "x".repeat(64 << 10)
    );
    let cases: Vec<(&str, String)> = vec![
        (
            "CL and TE",
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "TE and CL",
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "two Content-Lengths",
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 37\r\n\r\n{smuggled}"
            ),
        ),
        (
            "a Content-Length list",
            format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 37\r\n\r\n{smuggled}"),
        ),
        (
            "a signed Content-Length",
            format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: +37\r\n\r\n{smuggled}"),
        ),
        (
            "an unknown coding before chunked",
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        (
            "chunked, not last",
            format!(
                "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n{smuggled}"
            ),
        ),
        ("obs-fold", format!("GET / HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n{smuggled}")),
        (
            "a space before the colon",
            format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length : 37\r\n\r\n{smuggled}"),
        ),
        ("bare LF", format!("GET / HTTP/1.1\nHost: a\nContent-Length: 37\n\n{smuggled}")),
        ("a huge chunk extension", long_ext),
    ];
    let mut report = Vec::new();
    for (name, raw) in &cases {
        let before = seen.requests.load(Ordering::Relaxed);
        let (answer, closed) = exchange(addr, raw.as_bytes()).await;
        let forwarded = seen.requests.load(Ordering::Relaxed) - before;
        let status = answer.get(9..12).unwrap_or("---").to_string();
        let answers = answer.matches("HTTP/1.1 ").count();
        let ok = forwarded <= 1
            && answers <= 1
            && match status.as_str() {
                "400" | "413" | "431" | "501" => forwarded == 0,
                _ => closed && forwarded == 1,
            };
        report.push(format!(
            "{} {name}: {status}, {forwarded} upstream, {answers} answers, closed: {closed}",
            if ok { "ok  " } else { "FAIL" }
        ));
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(!report.contains("FAIL"), "{report}");
    stop(proxy).await;
}
