//! The connection to Redis behind `scope = "global"` limits: one client for the whole process,
//! driven by a thread and runtime of its own (its connection task and the replicas' heartbeat
//! live there), used from every worker.

use spillway_redis::{Client, RedisConfig};
use std::io;
use tokio::sync::oneshot;

/// The client and the thread that drives it; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct RedisThread {
    pub(crate) client: Client,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RedisThread {
    /// Connects (or fails: Redis must answer when the proxy starts; afterwards an outage only
    /// switches the global limits to their fail mode).
    pub(crate) fn start(config: RedisConfig) -> io::Result<Self> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new().name("spillway-redis".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => return drop(ready_tx.send(Err(io::Error::other(e)))),
            };
            rt.block_on(async move {
                let urls = config.urls.join(", ");
                match Client::connect(config).await {
                    Ok(client) => {
                        let _ = ready_tx.send(Ok(client));
                        let _ = stopped.await;
                    }
                    Err(e) => drop(ready_tx.send(Err(io::Error::other(format!("redis ({urls}): {e}"))))),
                }
            });
        })?;
        let client = ready_rx.recv().map_err(|_| io::Error::other("the redis thread ended"))??;
        Ok(Self { client, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for RedisThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether two `[redis]` sections connect the same way (the replica's generated name aside).
pub(crate) fn same(a: Option<&RedisConfig>, b: Option<&RedisConfig>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            RedisConfig { replica: String::new(), ..a.clone() }
                == RedisConfig { replica: String::new(), ..b.clone() }
        }
        _ => false,
    }
}
