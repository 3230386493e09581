//! Spillway's proxy as a library: put bounded queues, early 503/429 with `Retry-After`, rate
//! limits, shedding, bulkheads and breakers in front of any HTTP service. The `spillway serve`
//! command is a thin shell over [`Proxy::start`].
//!
//! Where a request goes, in order (one room each):
//!
//! | step | module |
//! | --- | --- |
//! | accepted by a worker (one thread, one runtime, its own socket) | `server` |
//! | matched to a route | `state` |
//! | body cap checked, then admitted, queued or refused | `forward`, `policy` |
//! | hop-by-hop fields dropped | `hop` |
//! | sent on a pooled upstream connection: in the request's task when it has no body and the upstream speaks HTTP/1.1, through hyper's client otherwise | `upstream`, `h1` |
//! | streamed back, permits held until the last frame | `body` |
//! | any refusal or failure answered | `error` (one place) |
//!
//! ```no_run
//! let config = spillway_proxy::Config::load("spillway.toml".as_ref())?;
//! let proxy = spillway_proxy::Proxy::start(config)?;
//! println!("listening on {:?}", proxy.listener_addr("web"));
//! proxy.wait_for_signals()?; // SIGHUP reloads, SIGTERM drains and returns
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod admin;
mod body;
pub mod config;
mod deadline;
mod error;
mod forward;
#[doc(hidden)]
pub mod fuzz;
mod h1;
mod hop;
mod metrics;
mod notify;
mod policy;
mod redis;
mod server;
mod state;
mod tcp;
mod upstream;
mod ws;

pub use body::ProxyBody;
pub use config::{Config, ConfigError, TcpConfig};
pub use metrics::Metrics;

use arc_swap::ArcSwap;
use state::State;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tokio::sync::watch;

/// What every worker shares.
#[derive(Debug)]
struct Shared {
    state: ArcSwap<State>,
    metrics: Metrics,
    /// For the `scope = "global"` limits.
    redis: Option<spillway_redis::Client>,
    draining: AtomicBool,
    workers: usize,
    reload_lock: Mutex<()>,
}

impl Shared {
    fn new(state: State, metrics: Metrics, workers: usize, redis: Option<spillway_redis::Client>) -> Self {
        Self {
            state: ArcSwap::from_pointee(state),
            metrics,
            redis,
            draining: AtomicBool::new(false),
            workers,
            reload_lock: Mutex::new(()),
        }
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    addrs: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<io::Result<()>>>,
    /// The admin listener outlives the drain, so `/readyz` and `/metrics` show it.
    admin_stop: watch::Sender<bool>,
    admin_thread: Option<JoinHandle<io::Result<()>>>,
    /// Drives the Redis client of the global limits; stopped after the drain.
    redis_thread: Option<redis::RedisThread>,
}

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A change that needs a restart.
    #[error("{0} (restart to apply)")]
    NeedsRestart(String),
}

impl Proxy {
    /// Binds every listener and the admin listener, then serves on `config.threads` workers.
    pub fn start(config: Config) -> io::Result<Self> {
        let workers =
            config.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let tls: Vec<server::Tls> = config
            .listeners
            .iter()
            .map(|l| l.tls.as_ref().map(server::tls_acceptor).transpose())
            .collect::<Result<_, _>>()?;
        let (mut addrs, mut sockets) = server::bind_all(&config.listeners, workers)?;
        let tcp_listens: Vec<_> = config.tcp.iter().map(|t| (t.name.clone(), t.listen)).collect();
        let (tcp_addrs, mut tcp_sockets) = server::bind_addrs(&tcp_listens, workers)?;
        let admin_socket = config.admin.as_ref().map(|a| server::bind(a.listen)).transpose()?;
        let admin = admin_socket.as_ref().map(std::net::TcpListener::local_addr).transpose()?;
        let metrics = Metrics::new();
        let redis_thread = config.redis.clone().map(redis::RedisThread::start).transpose()?;
        let redis = redis_thread.as_ref().map(|r| r.client.clone());
        if let Some(client) = &redis {
            metrics.register_redis(client);
        }
        let state = State::build(config.clone(), None, &metrics, workers, redis.as_ref());
        let shared = Arc::new(Shared::new(state, metrics, workers, redis));
        let tcp: Vec<Arc<tcp::TcpProxy>> =
            config.tcp.iter().map(|t| Arc::new(tcp::TcpProxy::new(t.clone(), &shared.metrics))).collect();
        let (stop, stop_rx) = watch::channel(false);
        let mut threads = Vec::with_capacity(workers + 1);
        for (worker, (socks, tcp_socks)) in sockets.drain(..).zip(tcp_sockets.drain(..)).enumerate() {
            let tcp_socks = tcp_socks.into_iter().zip(tcp.iter().cloned()).collect();
            let socks = socks
                .into_iter()
                .zip(config.listeners.iter().cloned())
                .zip(tls.iter().cloned())
                .map(|((s, c), t)| (s, c, t))
                .collect();
            let (shared, stop_rx, grace) = (shared.clone(), stop_rx.clone(), config.shutdown_grace);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("spillway-worker-{worker}"))
                    .spawn(move || server::run_worker(shared, worker, socks, tcp_socks, stop_rx, grace))?,
            );
        }
        let (admin_stop, admin_stop_rx) = watch::channel(false);
        let mut admin_thread = None;
        if let Some(socket) = admin_socket {
            let (shared, stop_rx) = (shared.clone(), admin_stop_rx);
            admin_thread =
                Some(std::thread::Builder::new().name("spillway-admin".into()).spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                    rt.block_on(async {
                        let listener = tokio::net::TcpListener::from_std(socket)?;
                        admin::serve(shared, listener, stop_rx).await;
                        Ok(())
                    })
                })?);
        }
        addrs.extend(tcp_addrs);
        let names =
            config.listeners.iter().map(|l| l.name.clone()).chain(config.tcp.iter().map(|t| t.name.clone()));
        Ok(Self {
            shared,
            addrs: names.zip(addrs).collect(),
            admin,
            stop,
            threads,
            admin_stop,
            admin_thread,
            redis_thread,
        })
    }

    /// The bound address of the listener named `name`.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Every listener's name and bound address.
    pub fn listener_addrs(&self) -> &[(String, SocketAddr)] {
        &self.addrs
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Swaps in `config` atomically: requests already admitted finish under the old one, and
    /// policies whose settings did not change keep their state (limits, queues, buckets).
    /// Listeners, admin address and thread count need a restart.
    pub fn reload(&self, config: Config) -> Result<(), ReloadError> {
        let _one_at_a_time = self.shared.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.shared.state.load_full();
        let result = check_restart(&current.config, &config, self.shared.workers);
        if let Err(e) = result {
            self.shared.metrics.reload(false);
            return Err(e);
        }
        let next = State::build(
            config,
            Some(&current),
            &self.shared.metrics,
            self.shared.workers,
            self.shared.redis.as_ref(),
        );
        self.shared.state.store(Arc::new(next));
        self.shared.metrics.reload(true);
        Ok(())
    }

    /// Counts a reload that failed before reaching [`reload`](Self::reload) (an invalid file).
    pub fn reload_failed(&self) {
        self.shared.metrics.reload(false);
    }

    /// Drains and stops: `/readyz` fails at once; after the configured shutdown delay the
    /// listeners close; requests in flight and in queues finish (HTTP/1.1 answers carry
    /// `Connection: close`, HTTP/2 connections get GOAWAY) within the grace period.
    pub fn shutdown(self) -> io::Result<()> {
        self.shared.draining.store(true, Ordering::Relaxed);
        let delay = self.shared.state.load().config.shutdown_delay;
        std::thread::sleep(delay);
        let _ = self.stop.send(true);
        let mut result = Ok(());
        for t in self.threads {
            result = result.and(t.join().unwrap_or_else(|_| Err(io::Error::other("a worker panicked"))));
        }
        let _ = self.admin_stop.send(true);
        if let Some(t) = self.admin_thread {
            result =
                result.and(t.join().unwrap_or_else(|_| Err(io::Error::other("the admin thread panicked"))));
        }
        // Last: the global limits answered until the drain was over.
        drop(self.redis_thread);
        result
    }

    /// Serves until SIGTERM or SIGINT (then drains, as [`shutdown`](Self::shutdown)); SIGHUP
    /// reloads the file at `config_path`, keeping the running config if the new one is invalid.
    pub fn run_until_signalled(self, config_path: Option<&std::path::Path>) -> io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async {
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            let mut hup = signal(SignalKind::hangup())?;
            notify::ready();
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => {
                        let Some(path) = config_path else { continue };
                        notify::reloading();
                        match Config::load(path) {
                            Ok(c) => match self.reload(c) {
                                Ok(()) => tracing::info!("reloaded {}", path.display()),
                                Err(e) => tracing::error!("reload refused: {e}"),
                            },
                            Err(e) => {
                                self.reload_failed();
                                tracing::error!("reload refused, keeping the running config: {e}");
                            }
                        }
                        // Taken or refused, the proxy serves on.
                        notify::ready();
                    }
                }
            }
            io::Result::Ok(())
        })?;
        notify::stopping();
        tracing::info!("draining");
        self.shutdown()
    }

    /// [`run_until_signalled`](Self::run_until_signalled) without a file to reload.
    pub fn wait_for_signals(self) -> io::Result<()> {
        self.run_until_signalled(None)
    }
}

fn check_restart(old: &Config, new: &Config, workers: usize) -> Result<(), ReloadError> {
    let same_listeners = old.listeners.len() == new.listeners.len()
        && old.listeners.iter().zip(&new.listeners).all(|(a, b)| a == b);
    if !same_listeners {
        return Err(ReloadError::NeedsRestart("listeners changed".into()));
    }
    if old.tcp != new.tcp {
        return Err(ReloadError::NeedsRestart("tcp listeners changed".into()));
    }
    if !redis::same(old.redis.as_ref(), new.redis.as_ref()) {
        return Err(ReloadError::NeedsRestart("[redis] changed".into()));
    }
    if old.admin.as_ref().map(|a| a.listen) != new.admin.as_ref().map(|a| a.listen) {
        return Err(ReloadError::NeedsRestart("the admin address changed".into()));
    }
    if new.threads.is_some_and(|t| t != workers) {
        return Err(ReloadError::NeedsRestart("server.threads changed".into()));
    }
    Ok(())
}
