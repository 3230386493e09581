//! A concurrency limit shared by every replica: a semaphore of leases in a sorted set on Redis,
//! each permit a member scored by its expiry, so that the permits of a replica that crashed come
//! back when their leases end.

use crate::FailMode;
use crate::client::{CallError, Client, CmdCall, PolicyLabel, ScriptCall};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// Takes a permit if fewer than `ARGV[1]` unexpired ones are held. `ARGV`: limit, lease (ms),
/// permit id. Answers 1 (taken) or 0. (Each script is hashed once per process.)
static ACQUIRE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(ACQUIRE_LUA));
const ACQUIRE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Counts the unexpired permits.
static HELD: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          return redis.call('ZCOUNT', KEYS[1], now, '+inf')",
    )
});

/// A concurrency limit shared across replicas through Redis.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use spillway_redis::{Client, FailMode, GlobalConcurrency, RedisConfig};
/// use std::time::Duration;
///
/// let client = Client::connect(RedisConfig::default()).await?;
/// let limit = GlobalConcurrency::new(client, "reports", 10, Duration::from_secs(30), FailMode::Closed);
/// match limit.acquire("tenant-7").await {
///     Ok(permit) => { /* do the work; the permit is released when dropped */ drop(permit) }
///     Err(_) => println!("503: ten reports are already running"),
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GlobalConcurrency {
    client: Client,
    name: String,
    limit: u32,
    lease: Duration,
    fail_mode: FailMode,
    /// The fail mode `Local`'s count of permits held by this replica.
    local: Arc<AtomicU64>,
    fallback: prometheus_client::metrics::gauge::Gauge,
}

/// The limit is reached (or Redis cannot answer and the fail mode refuses).
#[derive(Debug, thiserror::Error)]
#[error("global concurrency limit reached")]
pub struct Full;

/// One permit; released (best effort, in the background) when dropped. If the release is
/// lost, the permit's lease ends it.
#[derive(Debug)]
#[must_use = "the permit is released when dropped"]
pub struct GlobalPermit {
    release: Option<(Client, String, String)>,
    local: Option<Arc<AtomicU64>>,
}

impl Drop for GlobalPermit {
    fn drop(&mut self) {
        if let Some(local) = self.local.take() {
            local.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some((client, key, id)) = self.release.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let mut cmd = redis::cmd("ZREM");
                cmd.arg(&key).arg(&id);
                let _: Result<u64, CallError> = client.call(CmdCall(cmd)).await;
            });
        }
    }
}

impl GlobalConcurrency {
    /// At most `limit` permits under each key, over all replicas; each permit lives at most
    /// `lease` (longer than the work it guards).
    pub fn new(client: Client, name: &str, limit: u32, lease: Duration, fail_mode: FailMode) -> Self {
        let fallback = client.metrics().fallback.get_or_create(&PolicyLabel { policy: name.into() }).clone();
        Self {
            client,
            name: name.into(),
            limit,
            lease,
            fail_mode,
            local: Arc::new(AtomicU64::new(0)),
            fallback,
        }
    }

    /// A permit under `key`, or [`Full`]. Never waits longer than the client's deadline.
    pub async fn acquire(&self, key: &str) -> Result<GlobalPermit, Full> {
        let redis_key = format!("spillway:conc:{{{}:{key}}}", self.name);
        // Unique over replicas (the replica's name) and within one (a process-wide counter).
        let id = format!("{}-{:x}", self.client.replica(), crate::client::unique());
        let args = [self.limit.to_string(), self.lease.as_millis().max(1).to_string(), id.clone()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let taken: Result<u64, CallError> =
            self.client.call(ScriptCall { script: &ACQUIRE, keys: &[&redis_key], args: &args }).await;
        match taken {
            Ok(1) => {
                self.fallback.set(0);
                Ok(GlobalPermit { release: Some((self.client.clone(), redis_key, id)), local: None })
            }
            Ok(_) => {
                self.fallback.set(0);
                Err(Full)
            }
            Err(_) => {
                self.fallback.set(1);
                match self.fail_mode {
                    FailMode::Open => Ok(GlobalPermit { release: None, local: None }),
                    FailMode::Closed => Err(Full),
                    FailMode::Local => {
                        let share = (u64::from(self.limit) / self.client.live_replicas()).max(1);
                        let held = self.local.fetch_add(1, Ordering::Relaxed);
                        if held < share {
                            Ok(GlobalPermit { release: None, local: Some(self.local.clone()) })
                        } else {
                            self.local.fetch_sub(1, Ordering::Relaxed);
                            Err(Full)
                        }
                    }
                }
            }
        }
    }

    /// Permits held under `key`, over all replicas (expired ones excluded).
    pub async fn held(&self, key: &str) -> Result<u64, CallError> {
        let redis_key = format!("spillway:conc:{{{}:{key}}}", self.name);
        self.client.call(ScriptCall { script: &HELD, keys: &[&redis_key], args: &[] }).await
    }
}
