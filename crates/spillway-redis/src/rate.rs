//! A rate limit shared by every replica: GCRA in one Lua script on Redis's clock, with optional
//! token leases, and a fail mode for when Redis cannot answer.

use crate::FailMode;
use crate::client::{CallError, Client, PolicyLabel, ScriptCall};
use spillway::rate::{Decision, Gcra, KeyedLimiter, Quota};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// GCRA on Redis (`KEYS[1]`: the key's theoretical arrival time, µs on Redis's clock).
/// `ARGV`: emission interval (µs), burst, cost, lease (tokens wanted at most, 0: exactly `cost`).
/// Answers `{granted, retry_after_us, reset_us, remaining}`: `granted` is 0 when denied; with a
/// lease it is as many tokens as the allowance has, up to the lease.
static GCRA: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(GCRA_LUA));
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local lease = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local tolerance = interval * burst
-- Whole tokens available now.
local available = math.floor((now + tolerance - tat) / interval)
local want = cost
if lease > cost then want = math.max(cost, math.min(lease, available)) end
if want > available then
  return {0, tat + interval * cost - tolerance - now, tat - now, math.max(available, 0)}
end
local new_tat = tat + interval * want
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {want, 0, new_tat - now, available - want}
";

/// Local leases kept at most (a direct-mapped table: a collision drops a lease, which can only
/// under-admit).
const LEASE_SLOTS: usize = 1024;

/// A rate limit shared across replicas through Redis.
///
/// **Accuracy.** Without leases every decision is one atomic script on Redis's clock: the
/// replicas together admit exactly what one GCRA would (`burst` at once, then `rate` per
/// `period`). With `lease = n`, a replica takes up to `n` tokens in one call and spends them
/// locally for at most `lease_ttl`; tokens are only ever granted by the shared GCRA, so over any
/// window `W` the replicas admit at most what the GCRA would over `W + lease_ttl`:
/// `burst + rate × (W + lease_ttl)`. Leased tokens left unspent when their lease ends are lost,
/// so under uneven demand the replicas may admit up to `replicas × n` fewer per `lease_ttl`.
/// A replica that leases also remembers a denial until its `retry_after`, so a saturated key
/// costs no round trips either (the shared GCRA could not admit sooner whatever the others do).
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use spillway::rate::Quota;
/// use spillway_redis::{Client, FailMode, GlobalRate, RedisConfig};
///
/// let client = Client::connect(RedisConfig::default()).await?;
/// let limit = GlobalRate::new(client, "per-client", Quota::per_second(100).unwrap(), FailMode::Local);
/// let decision = limit.check("client-42", 1).await;
/// if !decision.allowed {
///     println!("429, Retry-After {:?}", decision.retry_after);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct GlobalRate {
    client: Client,
    name: String,
    quota: Quota,
    fail_mode: FailMode,
    lease: u32,
    lease_ttl: Duration,
    leases: Vec<Mutex<Option<Lease>>>,
    /// The fail mode `Local`'s limiter: this replica's share.
    local: Mutex<Option<(u64, KeyedLimiter<str, Gcra>)>>,
    fallback: prometheus_client::metrics::gauge::Gauge,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    key: u64,
    /// Tokens left to spend; none and `denied`: Redis refused the key until `until`.
    left: u32,
    denied: bool,
    until: Instant,
}

impl GlobalRate {
    /// A limit named `name` (its Redis keys and its metric label) of `quota` per key.
    pub fn new(client: Client, name: &str, quota: Quota, fail_mode: FailMode) -> Self {
        let fallback = client.metrics().fallback.get_or_create(&PolicyLabel { policy: name.into() }).clone();
        Self {
            client,
            name: name.into(),
            quota,
            fail_mode,
            lease: 0,
            lease_ttl: Duration::from_millis(100),
            leases: Vec::new(),
            local: Mutex::new(None),
            fallback,
        }
    }

    /// Takes tokens `lease` at a time and spends them locally for at most `ttl` (see the
    /// accuracy bound above). `lease` ≤ 1 turns leasing off.
    pub fn with_lease(mut self, lease: u32, ttl: Duration) -> Self {
        self.lease = lease;
        self.lease_ttl = ttl;
        self.leases =
            if lease > 1 { (0..LEASE_SLOTS).map(|_| Mutex::new(None)).collect() } else { Vec::new() };
        self
    }

    /// The shared client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether the last decision came from the fail mode (Redis did not answer).
    pub fn fallback_active(&self) -> bool {
        self.fallback.get() == 1
    }

    /// Decides for `cost` units under `key`. Never waits longer than the client's deadline.
    pub async fn check(&self, key: &str, cost: u32) -> Decision {
        let hash = fxhash(key);
        if let Some(d) = self.spend_lease(hash, cost) {
            return d;
        }
        let redis_key = format!("spillway:rate:{{{}:{key}}}", self.name);
        let interval = self.quota.emission_interval().as_micros().max(1) as u64;
        let burst = self.quota.burst();
        let lease = if self.lease > 1 { self.lease } else { 0 };
        let args = [interval.to_string(), burst.to_string(), cost.to_string(), lease.to_string()];
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let answer: Result<(u64, i64, i64, i64), CallError> =
            self.client.call(ScriptCall { script: &GCRA, keys: &[&redis_key], args: &args }).await;
        match answer {
            Ok((granted, retry_us, reset_us, remaining)) => {
                self.fallback.set(0);
                let us = |v: i64| Duration::from_micros(v.max(0) as u64);
                if granted == 0 {
                    if self.lease > 1 && retry_us > 0 {
                        // Remembered: this key is denied here until then, without asking again.
                        self.remember(hash, 0, us(retry_us));
                    }
                    return Decision {
                        allowed: false,
                        limit: burst,
                        remaining: 0,
                        retry_after: us(retry_us),
                        reset: us(reset_us),
                        delay: Duration::ZERO,
                    };
                }
                if granted > u64::from(cost) {
                    self.remember(hash, (granted - u64::from(cost)) as u32, self.lease_ttl);
                }
                Decision {
                    allowed: true,
                    limit: burst,
                    remaining: remaining.max(0) as u32,
                    retry_after: Duration::ZERO,
                    reset: us(reset_us),
                    delay: Duration::ZERO,
                }
            }
            Err(e) => {
                tracing::debug!(policy = %self.name, error = %e, "Redis unavailable: fail mode");
                self.fallback.set(1);
                self.fail(key, cost)
            }
        }
    }

    fn spend_lease(&self, hash: u64, cost: u32) -> Option<Decision> {
        let slot = self.leases.get(hash as usize % LEASE_SLOTS.max(1))?;
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let lease = slot.as_mut().filter(|l| l.key == hash && l.until > now)?;
        if lease.denied {
            // Denied by Redis until `until`: nothing another replica does can make it sooner.
            return Some(Decision {
                allowed: false,
                limit: self.quota.burst(),
                remaining: 0,
                retry_after: lease.until - now,
                reset: lease.until - now,
                delay: Duration::ZERO,
            });
        }
        if lease.left < cost {
            return None;
        }
        lease.left -= cost;
        let remaining = lease.left;
        Some(Decision {
            allowed: true,
            limit: self.quota.burst(),
            remaining,
            retry_after: Duration::ZERO,
            reset: Duration::ZERO,
            delay: Duration::ZERO,
        })
    }

    /// Keeps `left` leased tokens for `key` (or, with none, its denial) for `ttl`. Tokens join
    /// those still held for the key (two refills that raced lose none); a denial never replaces
    /// tokens held.
    fn remember(&self, hash: u64, left: u32, ttl: Duration) {
        let Some(slot) = self.leases.get(hash as usize % LEASE_SLOTS) else { return };
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let held = slot.filter(|l| l.key == hash && l.until > now && !l.denied).map_or(0, |l| l.left);
        let denied = left == 0;
        if denied && held > 0 {
            return;
        }
        *slot = Some(Lease { key: hash, left: held.saturating_add(left), denied, until: now + ttl });
    }

    /// The decision when Redis cannot answer.
    fn fail(&self, key: &str, cost: u32) -> Decision {
        let burst = self.quota.burst();
        let open = Decision {
            allowed: true,
            limit: burst,
            remaining: burst,
            retry_after: Duration::ZERO,
            reset: Duration::ZERO,
            delay: Duration::ZERO,
        };
        match self.fail_mode {
            FailMode::Open => open,
            FailMode::Closed => Decision {
                allowed: false,
                remaining: 0,
                retry_after: Duration::from_secs(1),
                reset: Duration::from_secs(1),
                ..open
            },
            FailMode::Local => {
                // This replica's share: the quota divided by the live replicas.
                let replicas = self.client.live_replicas();
                let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
                if local.as_ref().is_none_or(|(n, _)| *n != replicas) {
                    *local =
                        Some((replicas, KeyedLimiter::new(Gcra::new(share(self.quota, replicas)), 10_000)));
                }
                let (_, limiter) = local.as_ref().expect("set above");
                limiter.check_key_n(key, cost)
            }
        }
    }
}

/// One replica's share of `quota` when `replicas` split it (at least 1 per period, burst 1).
fn share(quota: Quota, replicas: u64) -> Quota {
    let n = replicas.clamp(1, u64::from(u32::MAX)) as u32;
    Quota::new((quota.count() / n).max(1), quota.period())
        .and_then(|q| q.with_burst((quota.burst() / n).max(1)))
        .unwrap_or(quota)
}

/// A 64-bit hash of `key` for the lease table (FNV-1a: stable, no allocation).
fn fxhash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}
