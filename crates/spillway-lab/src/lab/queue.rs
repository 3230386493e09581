//! The message-queue scenario: a slow consumer under a fast producer on a real NATS JetStream,
//! without and with flow control.
//!
//! The producer publishes at a fixed rate, faster than the consumer's handlers can go (8 handlers
//! of a few milliseconds each). Two consumers take turns, each on its own stream:
//!
//! - `unbounded`: pulls everything as fast as it can into a local queue that never refuses (the
//!   infinite-buffer outage, bounded here only by the run's length), and handles it with the
//!   same 8 handlers;
//! - `flow control`: `spillway-queue`'s `NatsConsumer` with a limit of 8, batches of 32 and a
//!   pause above a lag of 64.
//!
//! Sampled every 250 ms: the consumer's lag (messages fetched and not finished: its memory, in
//! messages and bytes), its throughput, and what the broker still holds for it. The backlog is the
//! same size either way; flow control leaves it in the broker (persisted, visible, shareable with
//! another consumer) instead of in one process's memory.
//!
//! The scenario needs `nats-server` on the `PATH` (or in `/usr/sbin`); without it, [`run`] says so
//! and returns `None`.

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use serde::{Deserialize, Serialize};
use spillway_queue::nats::{NatsConsumer, NatsOptions, NatsPublisher};
use spillway_queue::{Bytes, FlowControl, Message, PauseOn, PublishConfig};
use std::collections::VecDeque;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the queue scenario measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueResults {
    /// Messages published a second.
    pub publish_rate: f64,
    /// Messages the handlers can finish a second (handlers × 1000 / service ms).
    pub capacity_per_s: f64,
    /// Handlers (the same for both consumers).
    pub handlers: usize,
    /// One handler call, in milliseconds.
    pub service_ms: u64,
    /// Payload size, in bytes.
    pub payload_bytes: usize,
    /// Seconds per consumer.
    pub seconds: u64,
    /// One entry per consumer.
    pub runs: Vec<QueueRun>,
}

/// One consumer's run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueRun {
    /// `unbounded` or `flow control`.
    pub contestant: String,
    /// Messages handled and acked.
    pub processed: u64,
    /// `processed` / seconds.
    pub throughput_per_s: f64,
    /// The highest lag (fetched, not finished) seen.
    pub peak_lag: u64,
    /// The highest lag in payload bytes.
    pub peak_lag_bytes: u64,
    /// The lag at the end of the run.
    pub final_lag: u64,
    /// Times the consumer paused.
    pub pauses: u64,
    /// Every 250 ms.
    pub samples: Vec<QueueSample>,
}

/// One moment of a consumer's run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct QueueSample {
    /// Seconds since the run started.
    pub t: f64,
    /// Messages fetched and not finished.
    pub lag: u64,
    /// Their payload bytes.
    pub lag_bytes: u64,
    /// Messages handled a second over the last interval.
    pub processed_per_s: f64,
    /// Messages the broker still holds for this consumer (not yet delivered).
    pub broker_pending: u64,
}

/// The scenario's knobs.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Seconds per consumer.
    pub seconds: u64,
    /// Messages published a second.
    pub publish_rate: f64,
    /// Handlers.
    pub handlers: usize,
    /// One handler call.
    pub service_ms: u64,
    /// Payload size.
    pub payload_bytes: usize,
    /// Print progress lines to stderr.
    pub progress: bool,
}

impl QueueOptions {
    /// 8 handlers × 4 ms (2 000 messages/s) under 4 000 messages/s of 1 KiB.
    pub fn new(seconds: u64) -> Self {
        Self {
            seconds,
            publish_rate: 4000.0,
            handlers: 8,
            service_ms: 4,
            payload_bytes: 1024,
            progress: false,
        }
    }
}

const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const LAG_THRESHOLD: u64 = 64;
const BATCH: usize = 32;

fn nats_server() -> Option<PathBuf> {
    let from_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nats-server"));
    from_path.chain([PathBuf::from("/usr/sbin/nats-server")]).find(|p| p.is_file())
}

/// Kills the server and removes its store when dropped.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs both consumers against a `nats-server` started for the purpose; `None` (with the reason
/// printed) when there is no `nats-server`.
pub fn run(opts: &QueueOptions) -> anyhow::Result<Option<QueueResults>> {
    let Some(bin) = nats_server() else {
        eprintln!("lab: queue scenario skipped: nats-server not found on PATH (Debian package nats-server)");
        return Ok(None);
    };
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("spillway-lab-nats-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let child = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.join("js"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let _server = Server { child, dir };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async {
        let url = format!("nats://127.0.0.1:{port}");
        let client = connect(&url).await?;
        let js = jetstream::new(client);
        let mut results = QueueResults {
            publish_rate: opts.publish_rate,
            capacity_per_s: opts.handlers as f64 * 1000.0 / opts.service_ms.max(1) as f64,
            handlers: opts.handlers,
            service_ms: opts.service_ms,
            payload_bytes: opts.payload_bytes,
            seconds: opts.seconds,
            runs: Vec::new(),
        };
        for contestant in ["unbounded", "flow control"] {
            if opts.progress {
                eprintln!("lab: queue consumer `{contestant}` for {} s", opts.seconds);
            }
            // The consumer on a connection of its own, as it would be in another process.
            let consumer_js = jetstream::new(connect(&url).await?);
            results.runs.push(run_one(&js, &consumer_js, opts, contestant).await?);
        }
        Ok(Some(results))
    })
}

async fn connect(url: &str) -> anyhow::Result<async_nats::Client> {
    let mut last = None;
    for _ in 0..100 {
        match async_nats::connect(url).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(anyhow::anyhow!("connecting to nats-server at {url}: {last:?}"))
}

/// What both consumers report to the sampler.
trait Gauges: Send + Sync {
    fn lag(&self) -> (u64, u64);
    fn processed(&self) -> u64;
    fn pauses(&self) -> u64;
}

impl Gauges for FlowControl {
    fn lag(&self) -> (u64, u64) {
        let s = self.snapshot();
        (s.lag, s.lag_bytes)
    }
    fn processed(&self) -> u64 {
        self.snapshot().processed_total
    }
    fn pauses(&self) -> u64 {
        self.snapshot().pauses_total
    }
}

/// The unbounded consumer's counters.
#[derive(Default)]
struct Plain {
    lag: AtomicU64,
    lag_bytes: AtomicU64,
    processed: AtomicU64,
}

impl Gauges for Plain {
    fn lag(&self) -> (u64, u64) {
        (self.lag.load(Ordering::Relaxed), self.lag_bytes.load(Ordering::Relaxed))
    }
    fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }
    fn pauses(&self) -> u64 {
        0
    }
}

async fn run_one(
    js: &jetstream::Context,
    consumer_js: &jetstream::Context,
    opts: &QueueOptions,
    contestant: &str,
) -> anyhow::Result<QueueRun> {
    let name = if contestant == "unbounded" { "UNBOUNDED" } else { "FLOW" };
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.into(),
            subjects: vec![format!("{name}.>")],
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("create stream: {e}"))?;
    let service = Duration::from_millis(opts.service_ms);
    let consumer_stream =
        consumer_js.get_stream(name).await.map_err(|e| anyhow::anyhow!("get stream: {e}"))?;

    let (gauges, consumer_task): (Arc<dyn Gauges>, tokio::task::JoinHandle<()>) = if contestant == "unbounded"
    {
        // The outage configuration: no server-side bound either.
        let config = consumer::pull::Config {
            durable_name: Some("c".into()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 10_000_000,
            ack_wait: Duration::from_secs(120),
            ..Default::default()
        };
        let c =
            stream.get_or_create_consumer("c", config).await.map_err(|e| anyhow::anyhow!("consumer: {e}"))?;
        let plain = Arc::new(Plain::default());
        let task = tokio::spawn(unbounded_consumer(c, plain.clone(), opts.handlers, service));
        (plain, task)
    } else {
        let flow =
            FlowControl::builder("lab").limit(opts.handlers).pause_on(PauseOn::Lag(LAG_THRESHOLD)).build();
        let options = NatsOptions::default().batch(BATCH).ack_wait(Duration::from_secs(120));
        let c = NatsConsumer::create(&consumer_stream, "c", flow.clone(), options).await?;
        let task = tokio::spawn(async move {
            let _ = c
                .run(move |_m: Message| async move {
                    tokio::time::sleep(service).await;
                    Ok::<(), ()>(())
                })
                .await;
        });
        (Arc::new(flow), task)
    };

    // The producer: open loop at the publish rate, every 10 ms.
    let (publisher, publishing) = NatsPublisher::spawn(
        js.clone(),
        format!("{name}.x"),
        PublishConfig::new("lab").buffer(4096).max_unconfirmed(1024),
    );
    let payload = Bytes::from(vec![b'x'; opts.payload_bytes]);
    let total = (opts.publish_rate * opts.seconds as f64) as u64;
    let rate = opts.publish_rate;
    let producer = tokio::spawn(async move {
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut sent = 0u64;
        while sent < total {
            tick.tick().await;
            let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
            while sent < due {
                if publisher.publish(payload.clone()).await.is_err() {
                    return;
                }
                sent += 1;
            }
        }
        publisher.flush().await;
    });

    // The sampler.
    let mut info: consumer::PullConsumer =
        stream.get_consumer("c").await.map_err(|e| anyhow::anyhow!("consumer info: {e}"))?;
    let start = tokio::time::Instant::now();
    let mut samples = Vec::new();
    let mut last = (0.0, 0u64);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    while start.elapsed() < Duration::from_secs(opts.seconds) {
        tick.tick().await;
        let t = start.elapsed().as_secs_f64();
        let processed = gauges.processed();
        let (lag, lag_bytes) = gauges.lag();
        let broker_pending = info.info().await.map(|i| i.num_pending).unwrap_or(0);
        let rate = if t > last.0 { (processed - last.1) as f64 / (t - last.0) } else { 0.0 };
        last = (t, processed);
        samples.push(QueueSample { t, lag, lag_bytes, processed_per_s: rate, broker_pending });
    }
    let processed = gauges.processed();
    let (final_lag, _) = gauges.lag();
    consumer_task.abort();
    producer.abort();
    let _ = publishing.await;
    let _ = js.delete_stream(name).await;
    let peak_lag = samples.iter().map(|s| s.lag).max().unwrap_or(0).max(final_lag);
    let peak_lag_bytes = samples.iter().map(|s| s.lag_bytes).max().unwrap_or(0);
    Ok(QueueRun {
        contestant: contestant.into(),
        processed,
        throughput_per_s: processed as f64 / opts.seconds.max(1) as f64,
        peak_lag,
        peak_lag_bytes,
        final_lag,
        pauses: gauges.pauses(),
        samples,
    })
}

/// Pulls as fast as the broker sends into a queue that never refuses; `handlers` tasks take
/// from it.
async fn unbounded_consumer(
    c: consumer::PullConsumer,
    gauges: Arc<Plain>,
    handlers: usize,
    service: Duration,
) {
    use futures_util::StreamExt;
    // Deliberately unbounded: this is the outage the lab shows.
    let queue: Arc<Mutex<VecDeque<jetstream::Message>>> = Arc::new(Mutex::new(VecDeque::new()));
    let ready = Arc::new(tokio::sync::Notify::new());
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..handlers {
        let (queue, ready, gauges) = (queue.clone(), ready.clone(), gauges.clone());
        workers.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(m) = next else {
                    ready.notified().await;
                    continue;
                };
                tokio::time::sleep(service).await;
                let _ = m.ack().await;
                gauges.processed.fetch_add(1, Ordering::Relaxed);
                gauges.lag.fetch_sub(1, Ordering::Relaxed);
                gauges.lag_bytes.fetch_sub(m.payload.len() as u64, Ordering::Relaxed);
            }
        });
    }
    // A continuous pull: the client keeps a request of 1000 outstanding, re-pulling as soon as
    // half of it has arrived, whatever the handlers are doing.
    let Ok(mut messages) = c.stream().max_messages_per_batch(1000).messages().await else {
        return;
    };
    while let Some(Ok(m)) = messages.next().await {
        gauges.lag.fetch_add(1, Ordering::Relaxed);
        gauges.lag_bytes.fetch_add(m.payload.len() as u64, Ordering::Relaxed);
        queue.lock().unwrap_or_else(|e| e.into_inner()).push_back(m);
        ready.notify_one();
    }
}
