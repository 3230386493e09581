//! `spillway serve` as a process: real signals, a real backend process, raw HTTP/1.1 clients.

mod common;

use common::{Child, serve, serve_with, spillway, tempdir};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts `spillway backend` and returns it with its address.
fn backend(pool: &str, service_ms: &str) -> (Child, String) {
    let mut child = Child(
        spillway()
            .args(["backend", "--listen", "127.0.0.1:0", "--pool", pool, "--service-ms", service_ms])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().strip_prefix("listening on ").unwrap().to_string())
}

/// One request on its own connection; the status code (0 if the connection failed).
fn status(addr: &str, path: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else { return 0 };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").is_err() {
        return 0;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.0.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig}");
}

fn config(dir: &std::path::Path, upstream: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("spillway.toml");
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[server]
threads = 2
shutdown_grace = "10s"
[[listeners]]
name = "web"
listen = "127.0.0.1:0"
[[upstreams]]
name = "app"
addrs = ["{upstream}"]
[[routes]]
name = "all"
listener = "web"
upstream = "app"
[routes.concurrency]
max = 10
queue = 100
queue_timeout = "10s"
{extra}
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn sigterm_under_load_loses_no_accepted_request() {
    let (_backend, up) = backend("50", "300");
    let dir = tempdir("term");
    let (mut proxy, web, admin) = serve(&config(&dir, &up, ""));
    assert_eq!(status(&admin, "/readyz"), 200);
    // 40 requests: 10 in flight, 30 queued behind them (three rounds of 300 ms).
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let web = web.clone();
            std::thread::spawn(move || status(&web, "/"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150));
    signal(&proxy, "-TERM");
    let codes: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(codes.iter().all(|&c| c == 200), "lost or failed in the drain: {codes:?}");
    let exit = proxy.0.wait().unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(status(&web, "/"), 0, "nothing listens after the drain");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sighup_reloads_a_valid_config_and_keeps_the_running_one_otherwise() {
    let (_backend, up) = backend("4", "0");
    let dir = tempdir("hup");
    let path = config(&dir, &up, "");
    // systemd's side of sd_notify: a datagram socket named by NOTIFY_SOCKET.
    let systemd = UnixDatagram::bind(dir.join("notify")).unwrap();
    systemd.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let told = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let (proxy, web, admin) = serve_with(&path, |c| {
        c.env("NOTIFY_SOCKET", dir.join("notify"));
    });
    assert!(told().starts_with("READY=1\n"));
    assert_eq!(status(&web, "/"), 200);

    // An invalid file: refused, the proxy keeps serving with the old config.
    std::fs::write(&path, "[[listeners]]\nname = 1\n").unwrap();
    signal(&proxy, "-HUP");
    let reloading = told();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
    assert!(told().starts_with("READY=1\n"));
    assert_eq!(status(&web, "/"), 200);
    assert!(scrape(&admin).contains("spillway_config_last_reload_successful 0"));

    // A valid one with a rate limit of 1 per minute: the second request gets 429.
    config(&dir, &up, "[[routes.rate]]\nkey = \"global\"\nrate = 1\nper = \"1m\"\n");
    signal(&proxy, "-HUP");
    assert!(told().starts_with("RELOADING=1\n"));
    assert!(told().starts_with("READY=1\n"));
    let mut codes = Vec::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(50));
        codes.push(status(&web, "/"));
        if codes.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(codes.last(), Some(&429), "{codes:?}");

    let metrics = scrape(&admin);
    assert!(metrics.contains("spillway_reloads_total{result=\"failure\"} 1"), "{metrics}");
    assert!(metrics.contains("spillway_reloads_total{result=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains("spillway_config_last_reload_successful 1"), "{metrics}");

    signal(&proxy, "-TERM");
    assert!(told().starts_with("STOPPING=1\n"));
    let _ = std::fs::remove_dir_all(dir);
}

/// The admin listener's /metrics.
fn scrape(admin: &str) -> String {
    let mut metrics = String::new();
    let mut s = TcpStream::connect(admin).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    s.read_to_string(&mut metrics).unwrap();
    metrics
}

#[test]
fn check_names_file_line_and_key() {
    let dir = tempdir("check");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[[listeners]]\nname = \"web\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nlistener = \"web\"\nupstream = \"nope\"\n").unwrap();
    let out = spillway().args(["check", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.toml:7:12: routes[0].upstream: no upstream is named \"nope\""), "{err}");

    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/spillway.toml");
    let out = spillway().args(["check", "--config", example]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(dir);
}
