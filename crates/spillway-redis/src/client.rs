//! The connection to Redis (one node or a cluster), with a deadline on every call, a circuit
//! breaker in front of it, metrics, and the replicas' heartbeat.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use spillway::breaker::{BreakerConfig, CircuitBreaker, Window};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// Where Redis is and how to talk to it.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS). Several for a Redis Cluster (its seed nodes).
    pub urls: Vec<String>,
    /// Treat `urls` as the seeds of a Redis Cluster.
    pub cluster: bool,
    /// ACL user name (overrides the URL's).
    pub username: Option<String>,
    /// ACL password (overrides the URL's).
    pub password: Option<String>,
    /// Every call's deadline: past it, the call counts as failed and the policy's fail mode
    /// decides. Keep it well under the requests' own budget.
    pub timeout: Duration,
    /// How long the breaker on Redis stays open before it lets a probe through.
    pub open_duration: Duration,
    /// This replica's name in the heartbeat set (unique per process).
    pub replica: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            urls: vec!["redis://127.0.0.1:6379".into()],
            cluster: false,
            username: None,
            password: None,
            timeout: Duration::from_millis(20),
            open_duration: Duration::from_secs(1),
            replica: format!("{}-{}-{}", hostname(), std::process::id(), unique()),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_or_else(|_| "host".into(), |h| h.trim().to_string())
}

/// A number no other call in this process returns.
pub(crate) fn unique() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a call did not answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the deadline.
    #[error("Redis did not answer within the deadline")]
    Timeout,
    /// The breaker is open: Redis failed recently, the call was not tried.
    #[error("the breaker on Redis is open")]
    BreakerOpen,
    /// Redis answered an error, or the connection failed.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PolicyLabel {
    pub(crate) policy: String,
}

/// The metrics every policy on this client shares.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    calls: Family<ResultLabel, Counter>,
    duration: Histogram,
    pub(crate) fallback: Family<PolicyLabel, Gauge>,
}

/// A shared connection to Redis. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    conn: Conn,
    config: RedisConfig,
    breaker: CircuitBreaker,
    metrics: Metrics,
    round_trips: AtomicU64,
    /// Live replicas, as last counted from the heartbeat set (at least 1).
    replicas: AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("urls", &self.inner.config.urls).finish_non_exhaustive()
    }
}

/// The heartbeat set: one key for the whole deployment (its own slot in a cluster).
const REPLICAS: &str = "spillway:{replicas}";
/// Refreshes `ARGV[1]`'s heartbeat, forgets those older than `ARGV[2]` ms, counts the rest.
static HEARTBEAT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
          redis.call('ZADD', KEYS[1], now, ARGV[1])
          redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
          redis.call('PEXPIRE', KEYS[1], ARGV[2])
          return redis.call('ZCARD', KEYS[1])",
    )
});
/// A replica is live while it has refreshed its heartbeat this recently.
const LIVE_FOR: Duration = Duration::from_secs(3);

impl Client {
    /// Connects (the first connection is made here, within `timeout` × 50) and starts the
    /// heartbeat. Later reconnections happen in the background: a restarted Redis is found
    /// again without a new client.
    pub async fn connect(config: RedisConfig) -> Result<Self, CallError> {
        let info = |url: &str| -> Result<redis::ConnectionInfo, redis::RedisError> {
            use redis::IntoConnectionInfo;
            let mut info = url.into_connection_info()?;
            let mut redis = info.redis_settings().clone();
            if let Some(u) = &config.username {
                redis = redis.set_username(u.clone());
            }
            if let Some(p) = &config.password {
                redis = redis.set_password(p.clone());
            }
            info = info.set_redis_settings(redis);
            Ok(info)
        };
        let setup = async {
            if config.cluster {
                let nodes = config.urls.iter().map(|u| info(u)).collect::<Result<Vec<_>, _>>()?;
                let client = redis::cluster::ClusterClientBuilder::new(nodes)
                    .connection_timeout(config.timeout * 10)
                    .response_timeout(config.timeout * 10)
                    .build()?;
                Ok::<_, redis::RedisError>(Conn::Cluster(client.get_async_connection().await?))
            } else {
                let client = redis::Client::open(info(&config.urls[0])?)?;
                let manager = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout * 10))
                    .set_response_timeout(Some(config.timeout * 10))
                    .set_number_of_retries(1);
                Ok(Conn::Single(ConnectionManager::new_with_config(client, manager).await?))
            }
        };
        let conn =
            tokio::time::timeout(config.timeout * 50, setup).await.map_err(|_| CallError::Timeout)??;
        let breaker = CircuitBreaker::new(BreakerConfig {
            window: Window::Count(20),
            minimum_calls: 5,
            failure_rate: 0.5,
            open_duration: config.open_duration,
            open_jitter: 0.0,
            half_open_calls: 1,
            ..BreakerConfig::default()
        });
        let metrics = Metrics {
            calls: Family::default(),
            duration: Histogram::new([0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1]),
            fallback: Family::default(),
        };
        let client = Self {
            inner: Arc::new(Inner {
                conn,
                config,
                breaker,
                metrics,
                round_trips: AtomicU64::new(0),
                replicas: AtomicU64::new(1),
            }),
        };
        let weak = Arc::downgrade(&client.inner);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Client { inner }.heartbeat().await;
            }
        });
        Ok(client)
    }

    /// Runs `cmd` (a command or a script invocation) once, within the deadline and through the
    /// breaker, counting it.
    pub(crate) async fn call<T: redis::FromRedisValue>(
        &self,
        cmd: impl AsyncCall<T>,
    ) -> Result<T, CallError> {
        let inner = &self.inner;
        // A permit, not a bare admission: a call cancelled mid-flight hands its half-open
        // trial back instead of leaving the breaker waiting for it for ever.
        let permit = match inner.breaker.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                inner.metrics.calls.get_or_create(&ResultLabel { result: "breaker_open" }).inc();
                return Err(CallError::BreakerOpen);
            }
        };
        inner.round_trips.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let mut conn = inner.conn.clone();
        let result = tokio::time::timeout(inner.config.timeout, cmd.run(&mut conn)).await;
        inner.metrics.duration.observe(started.elapsed().as_secs_f64());
        let (result, label) = match result {
            Ok(Ok(v)) => (Ok(v), "ok"),
            Ok(Err(e)) => (Err(CallError::Redis(e)), "error"),
            Err(_) => (Err(CallError::Timeout), "timeout"),
        };
        if result.is_err() {
            permit.failure();
        } else {
            permit.success();
        }
        inner.metrics.calls.get_or_create(&ResultLabel { result: label }).inc();
        result
    }

    /// This replica's name (unique per client unless configured).
    pub fn replica(&self) -> &str {
        &self.inner.config.replica
    }

    /// Calls made to Redis so far (each one round trip).
    pub fn round_trips(&self) -> u64 {
        self.inner.round_trips.load(Ordering::Relaxed)
    }

    /// Replicas that heartbeated within the last 3 s, as last counted (at least 1).
    pub fn live_replicas(&self) -> u64 {
        self.inner.replicas.load(Ordering::Relaxed).max(1)
    }

    /// Refreshes this replica's heartbeat and counts the live ones.
    pub async fn heartbeat(&self) {
        let replica = self.inner.config.replica.clone();
        let live_ms = LIVE_FOR.as_millis() as u64;
        let counted: Result<u64, _> = self
            .call(ScriptCall {
                script: &HEARTBEAT,
                keys: &[REPLICAS],
                args: &[&replica, &live_ms.to_string()],
            })
            .await;
        if let Ok(n) = counted {
            self.inner.replicas.store(n.max(1), Ordering::Relaxed);
        }
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Registers the client's metrics: `spillway_redis_calls_total{result}` (ok, timeout,
    /// error, breaker_open), `spillway_redis_call_duration_seconds`, and
    /// `spillway_redis_fallback_active{policy}` (1 while a policy applies its fail mode).
    pub fn register(&self, registry: &mut Registry) {
        let m = &self.inner.metrics;
        registry.register("redis_calls", "Calls to Redis by result", m.calls.clone());
        registry.register("redis_call_duration_seconds", "Time a call to Redis took", m.duration.clone());
        registry.register(
            "redis_fallback_active",
            "1 while a global policy cannot reach Redis and applies its fail mode",
            m.fallback.clone(),
        );
    }
}

/// Something that can be sent on a connection: a command or a script invocation.
pub(crate) trait AsyncCall<T> {
    fn run(self, conn: &mut Conn) -> impl std::future::Future<Output = redis::RedisResult<T>> + Send;
}

/// A script invocation (EVALSHA, falling back to EVAL once per connection).
pub(crate) struct ScriptCall<'a> {
    pub(crate) script: &'a redis::Script,
    pub(crate) keys: &'a [&'a str],
    pub(crate) args: &'a [&'a str],
}

impl<T: redis::FromRedisValue + Send> AsyncCall<T> for ScriptCall<'_> {
    async fn run(self, conn: &mut Conn) -> redis::RedisResult<T> {
        let mut invocation = self.script.prepare_invoke();
        for k in self.keys {
            invocation.key(*k);
        }
        for a in self.args {
            invocation.arg(*a);
        }
        match conn {
            Conn::Single(c) => invocation.invoke_async(c).await,
            Conn::Cluster(c) => invocation.invoke_async(c).await,
        }
    }
}

/// A plain command.
pub(crate) struct CmdCall(pub(crate) redis::Cmd);

impl<T: redis::FromRedisValue + Send> AsyncCall<T> for CmdCall {
    async fn run(self, conn: &mut Conn) -> redis::RedisResult<T> {
        match conn {
            Conn::Single(c) => self.0.query_async(c).await,
            Conn::Cluster(c) => self.0.query_async(c).await,
        }
    }
}
