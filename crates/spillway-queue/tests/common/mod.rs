//! Real brokers for the integration tests: each test starts its own `nats-server` or
//! `rabbitmq-server` on loopback ports of its own, with a temporary data directory, and kills it
//! (and everything it started) when the guard drops.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A free loopback port (bound, then released: the broker takes it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

/// A fresh temporary directory, removed by [`Broker`]'s drop.
fn temp_dir(kind: &str) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "spillway-queue-{kind}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Finds a broker binary or fails the test, naming the Debian package.
pub fn require(binary: &str, candidates: &[&str], package: &str) -> PathBuf {
    for c in candidates {
        if Path::new(c).is_file() {
            return PathBuf::from(c);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let p = dir.join(binary);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "`{binary}` is not installed: these tests need a real broker. Install the Debian package \
         `{package}` (apt-get install -y {package}); scripts/test.sh does it when run as root"
    );
}

/// A running broker: killed (its whole process group) and its directory removed on drop.
pub struct Broker {
    child: Child,
    dir: PathBuf,
    /// The client port (NATS or AMQP) on 127.0.0.1.
    pub port: u16,
    log: PathBuf,
}

impl Broker {
    /// The broker's log so far (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(3000);
        text[text.char_indices().map(|(i, _)| i).find(|&i| i >= start).unwrap_or(0)..].to_owned()
    }

    /// `nats://127.0.0.1:PORT`
    pub fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // The broker and its helpers (erl, epmd, beam) share the process group we gave it.
        let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn(mut cmd: Command, dir: PathBuf, port: u16, log: PathBuf) -> Broker {
    let out = std::fs::File::create(&log).expect("create broker log");
    let err = out.try_clone().unwrap();
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
    let child = cmd.spawn().expect("spawn broker");
    Broker { child, dir, port, log }
}

/// Waits until `port` accepts a TCP connection, or fails with the broker's log.
async fn wait_for_port(broker: &mut Broker, timeout: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(status) = broker.child.try_wait().unwrap() {
            panic!("{what} exited early ({status}); log:\n{}", broker.log_tail());
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", broker.port)).await.is_ok() {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "{what} did not listen on 127.0.0.1:{} within {timeout:?}; log:\n{}",
                broker.port,
                broker.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `nats-server -js` on a free port with a temporary store directory.
pub async fn nats() -> Broker {
    let bin = require("nats-server", &["/usr/sbin/nats-server", "/usr/bin/nats-server"], "nats-server");
    for attempt in 0..5 {
        let dir = temp_dir("nats");
        let port = free_port();
        let mut cmd = Command::new(&bin);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"]).arg(dir.join("js"));
        let log = dir.join("nats.log");
        let mut broker = spawn(cmd, dir, port, log);
        tokio::time::sleep(Duration::from_millis(20)).await;
        if broker.child.try_wait().unwrap().is_some() && attempt < 4 {
            continue; // the port was taken between our probe and the bind: try another
        }
        wait_for_port(&mut broker, Duration::from_secs(10), "nats-server").await;
        return broker;
    }
    unreachable!()
}

/// Starts a RabbitMQ node (its own name, ports, epmd, mnesia and log directories) and waits
/// until an AMQP handshake succeeds.
pub async fn rabbitmq() -> Broker {
    let bin = require(
        "rabbitmq-server",
        &["/usr/lib/rabbitmq/bin/rabbitmq-server", "/usr/sbin/rabbitmq-server"],
        "rabbitmq-server",
    );
    // The Debian wrapper in /usr/sbin switches to the rabbitmq user; the real script does not.
    let bin = if bin.starts_with("/usr/sbin") && Path::new("/usr/lib/rabbitmq/bin/rabbitmq-server").is_file()
    {
        PathBuf::from("/usr/lib/rabbitmq/bin/rabbitmq-server")
    } else {
        bin
    };
    let epmd_bin = require("epmd", &["/usr/bin/epmd"], "erlang-base");
    let dir = temp_dir("rabbitmq");
    let (port, dist, epmd_port) = (free_port(), free_port(), free_port());
    std::fs::write(
        dir.join("rabbitmq.conf"),
        format!(
            "listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n\
             management.tcp.port = {}\nlog.console = true\nlog.file = false\n",
            free_port()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
    // Our own epmd in the foreground, in the broker's process group (killed with it), so that no
    // epmd daemon outlives the test.
    let script = format!(
        "{epmd} -port {epmd_port} & sleep 0.2; exec {bin}",
        epmd = epmd_bin.display(),
        bin = bin.display()
    );
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).current_dir(&dir);
    let node = format!("spillway-test-{}-{port}@localhost", std::process::id());
    cmd.env("HOME", &dir)
        .env("RABBITMQ_NODENAME", &node)
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_DIST_PORT", dist.to_string())
        .env("ERL_EPMD_PORT", epmd_port.to_string())
        .env("ERL_EPMD_ADDRESS", "127.0.0.1")
        .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
        .env("RABBITMQ_LOG_BASE", dir.join("log"))
        .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq.conf"))
        .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
        .env("RABBITMQ_PLUGINS_EXPAND_DIR", dir.join("plugins-expand"))
        .env("RABBITMQ_PID_FILE", dir.join("rabbit.pid"))
        .env("RABBITMQ_ENABLED_PLUGINS", "");
    let log = dir.join("rabbitmq.out");
    let mut broker = spawn(cmd, dir, port, log);
    wait_for_port(&mut broker, Duration::from_secs(60), "rabbitmq-server").await;
    // The port opens when the listener starts; wait for a full AMQP handshake too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match lapin::Connection::connect(&broker.amqp_url(), lapin::ConnectionProperties::default()).await {
            Ok(conn) => {
                let _ = conn.close(200, "probe".into()).await;
                return broker;
            }
            Err(e) if tokio::time::Instant::now() > deadline => {
                panic!("rabbitmq-server: no AMQP handshake within 30 s: {e}; log:\n{}", broker.log_tail())
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The id a test message carries in its first four bytes.
pub fn id_of(m: &spillway_queue::Message) -> usize {
    u32::from_be_bytes(m.payload[..4].try_into().unwrap()) as usize
}

/// A 64-byte message carrying `id`.
pub fn payload(id: u32) -> spillway_queue::Bytes {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&[0u8; 60]);
    spillway_queue::Bytes::from(v)
}

/// Polls `done` every 10 ms; fails the test naming `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: std::time::Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Handler bookkeeping for the failure tests: every tenth id fails its first attempt.
#[derive(Debug)]
pub struct Flaky {
    pub attempts: Vec<std::sync::atomic::AtomicU32>,
    pub succeeded: Vec<std::sync::atomic::AtomicU32>,
    pub redelivered_ok: std::sync::atomic::AtomicU32,
}

impl Flaky {
    pub fn new(n: u32) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            attempts: (0..n).map(|_| Default::default()).collect(),
            succeeded: (0..n).map(|_| Default::default()).collect(),
            redelivered_ok: Default::default(),
        })
    }

    /// Handles `m`: `Err` on the first attempt at every tenth id, `Ok` otherwise.
    pub fn handle(&self, m: &spillway_queue::Message) -> Result<(), ()> {
        use std::sync::atomic::Ordering::Relaxed;
        let id = id_of(m);
        if self.attempts[id].fetch_add(1, Relaxed) == 0 && id.is_multiple_of(10) {
            return Err(());
        }
        if m.redelivered && id.is_multiple_of(10) {
            self.redelivered_ok.fetch_add(1, Relaxed);
        }
        self.succeeded[id].fetch_add(1, Relaxed);
        Ok(())
    }

    /// Waits until the consumer behind `flow` handled every id, stops it, and checks that every
    /// id succeeded exactly once, that each failed one came back flagged as redelivered, and
    /// that nothing is left in flight.
    pub async fn finish<T>(&self, flow: &spillway_queue::FlowControl, running: tokio::task::JoinHandle<T>) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = self.succeeded.len() as u64;
        wait_until("every message handled", Duration::from_secs(20), || flow.snapshot().processed_total >= n)
            .await;
        running.abort();
        let s = flow.snapshot();
        assert_eq!((s.processed_total, s.lag), (n, 0));
        let failed_total = s.failed_total;
        for (id, n) in self.succeeded.iter().enumerate() {
            assert_eq!(n.load(Relaxed), 1, "message {id} succeeded {} times", n.load(Relaxed));
        }
        let failing = self.succeeded.len().div_ceil(10) as u64;
        assert_eq!(failed_total, failing, "one failure per tenth id");
        assert_eq!(
            u64::from(self.redelivered_ok.load(Relaxed)),
            failing,
            "failed ids come back as redeliveries"
        );
    }
}

/// Publishes ids `0..n`, half through `try_publish` (published with `publish` when handed back)
/// and half through `publish`, checking the buffer and the unconfirmed window after each; then
/// flushes and checks that all were confirmed within the window. Returns the final snapshot.
pub async fn publish_bounded(
    publisher: &spillway_queue::Publisher,
    n: u32,
    buffer: usize,
    window: usize,
) -> spillway_queue::PublishSnapshot {
    let mut refused = 0;
    for id in 0..n {
        if id % 2 == 0 {
            if let Err(e) = publisher.try_publish(payload(id)) {
                refused += 1;
                publisher.publish(e.into_inner()).await.unwrap();
            }
        } else {
            publisher.publish(payload(id)).await.unwrap();
        }
        let s = publisher.snapshot();
        assert!(s.unconfirmed <= window as u64 && s.buffered <= buffer as u64, "{s:?}");
    }
    publisher.flush().await;
    let s = publisher.snapshot();
    eprintln!("publisher: {s:?}, refused by try_publish then published: {refused}");
    assert_eq!((s.confirmed_total, s.failed_total, s.unconfirmed, s.buffered), (u64::from(n), 0, 0, 0));
    assert!(s.peak_unconfirmed <= window as u64 && s.peak_unconfirmed >= 2, "{s:?}");
    assert_eq!(s.rejected_total, refused);
    s
}
