//! A route's admission policy, built from [`PolicyConfig`]: where a request is admitted, queued
//! or refused. The same core primitives as the `spillway-tower` layers, called directly so that
//! one route's stack needs no boxing; refusals become the same [`Overloaded`] values, answered
//! by the same `rejection_response`.
//!
//! Order, cheapest and most specific first: rate limits (429 before anything is held), the
//! bulkhead partition, the upstream's breaker, then the concurrency limit, the only step that
//! may wait (in its bounded queue).

use crate::config::{AdaptiveAlgorithm, LimitKind, PolicyConfig, RateAlgorithm, RateConfig, RateKey};
use crate::metrics::{Reason as MetricReason, RouteMetrics};
use http::request::Parts;
use spillway::adaptive::{self, AdaptiveLimiter, LimitAlgorithm};
use spillway::breaker::CircuitBreaker;
use spillway::clock::{Clock, MonotonicClock};
use spillway::limit::{ConcurrencyLimiter, OwnedPermit, RejectReason, Rejected};
use spillway::rate::{self, Algorithm, Decision, KeyedLimiter, RateLimit, RateLimiter};
use spillway::shed::{Bulkhead, Criticality, OwnedBulkheadPermit};
use spillway_tower::http::{ClientIp, RouteKey};
use spillway_tower::{Overloaded, Reason};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The proxy's clock: the TSC, read when needed. (The core's default, `CoarseClock`, is cheaper
/// per read but keeps a 1 ms ticker thread, which on a proxy's pinned core preempts the worker
/// about two thousand times a second; the proxy reads the clock only a few times per request.)
pub(crate) type ProxyClock = MonotonicClock;

/// The live state of a route's policy. Kept across reloads while its config is unchanged.
#[derive(Debug)]
pub(crate) struct Policy {
    pub(crate) config: PolicyConfig,
    pub(crate) limit: Option<Limit>,
    rates: Vec<Rate>,
    bulkhead: Option<Arc<Bulkhead>>,
    hasher: foldhash::fast::FixedState,
    /// Keyed-limiter evictions already added to the metric.
    evictions_reported: AtomicU64,
    /// `[concurrency] scope = "global"`: the limit over every replica, in Redis.
    shared_limit: Option<spillway_redis::GlobalConcurrency>,
}

#[derive(Debug)]
pub(crate) enum Limit {
    Static(ConcurrencyLimiter<ProxyClock>),
    Adaptive(AdaptiveLimiter<Box<dyn LimitAlgorithm>, ProxyClock>),
}

/// A permit (static limit) or an admission (adaptive limit, which learns from its outcome).
type Taken = (Option<OwnedPermit<ProxyClock>>, Option<adaptive::Admission<ProxyClock>>);

impl Limit {
    /// A free slot, if there is one and nobody is queued for it.
    fn take(&self) -> Option<Taken> {
        match self {
            Limit::Static(l) => l.try_take_owned().map(|p| (Some(p), None)),
            Limit::Adaptive(a) => a.try_take().map(|adm| (None, Some(adm))),
        }
    }

    /// A slot, waiting in the queue for at most `timeout`.
    async fn wait(&self, timeout: Duration) -> Result<Taken, Rejected> {
        match self {
            Limit::Static(l) => l.acquire_within_owned(timeout).await.map(|p| (Some(p), None)),
            Limit::Adaptive(a) => a.admit_within(timeout).await.map(|adm| (None, Some(adm))),
        }
    }

    pub(crate) fn limiter(&self) -> &ConcurrencyLimiter<ProxyClock> {
        match self {
            Limit::Static(l) => l,
            Limit::Adaptive(a) => a.limiter(),
        }
    }
}

#[derive(Debug)]
enum Limiter {
    Global(RateLimiter<AnyRate, ProxyClock>),
    Keyed(KeyedLimiter<u64, AnyRate, ProxyClock>),
    /// `scope = "global"`: shared with every replica through Redis.
    Shared(spillway_redis::GlobalRate),
}

#[derive(Debug)]
struct Rate {
    config: RateConfig,
    limiter: Limiter,
}

/// Any of the core's one-word rate algorithms, chosen by config.
#[derive(Debug, Clone, Copy)]
enum AnyRate {
    Gcra(rate::Gcra),
    TokenBucket(rate::TokenBucket),
    LeakyBucket(rate::LeakyBucket),
    Fixed(rate::FixedWindow),
    Sliding(rate::SlidingWindow),
}

impl Algorithm for AnyRate {
    #[inline]
    fn decide(&self, state: u64, now: u64, n: u32) -> (Decision, u64) {
        match self {
            AnyRate::Gcra(a) => a.decide(state, now, n),
            AnyRate::TokenBucket(a) => a.decide(state, now, n),
            AnyRate::LeakyBucket(a) => a.decide(state, now, n),
            AnyRate::Fixed(a) => a.decide(state, now, n),
            AnyRate::Sliding(a) => a.decide(state, now, n),
        }
    }

    fn idle_at(&self, state: u64, now: u64) -> u64 {
        match self {
            AnyRate::Gcra(a) => a.idle_at(state, now),
            AnyRate::TokenBucket(a) => a.idle_at(state, now),
            AnyRate::LeakyBucket(a) => a.idle_at(state, now),
            AnyRate::Fixed(a) => a.idle_at(state, now),
            AnyRate::Sliding(a) => a.idle_at(state, now),
        }
    }
}

fn algorithm(c: &RateConfig) -> AnyRate {
    let q = c.quota;
    // The quota was validated, so the other constructors accept it too.
    let valid = "a validated quota";
    match c.algorithm {
        RateAlgorithm::Gcra => AnyRate::Gcra(rate::Gcra::new(q)),
        RateAlgorithm::TokenBucket => {
            AnyRate::TokenBucket(rate::TokenBucket::new(q.burst(), q.count(), q.period()).expect(valid))
        }
        RateAlgorithm::LeakyBucket => {
            AnyRate::LeakyBucket(rate::LeakyBucket::new(q.count(), q.period(), q.burst()).expect(valid))
        }
        RateAlgorithm::FixedWindow => AnyRate::Fixed(rate::FixedWindow::new(q).expect(valid)),
        RateAlgorithm::SlidingWindow => AnyRate::Sliding(rate::SlidingWindow::new(q).expect(valid)),
    }
}

fn controller(
    algorithm: AdaptiveAlgorithm,
    min: usize,
    max: usize,
    initial: usize,
) -> Box<dyn LimitAlgorithm> {
    // Windowed: one update per 200 samples, as `spillway simulate` found best for the
    // latency-gradient controllers.
    match algorithm {
        AdaptiveAlgorithm::Gradient2 => Box::new(adaptive::Windowed::new(
            adaptive::Gradient2::default().with_bounds(min, max).with_initial(initial),
            200,
        )),
        AdaptiveAlgorithm::Vegas => Box::new(adaptive::Windowed::new(
            adaptive::Vegas::default().with_max(max).with_initial(initial.max(min)),
            200,
        )),
        AdaptiveAlgorithm::Aimd { target } => {
            let aimd = adaptive::Aimd::default().with_bounds(min, max).with_initial(initial);
            Box::new(match target {
                Some(t) => aimd.with_timeout(t),
                None => aimd,
            })
        }
        AdaptiveAlgorithm::Gradient => {
            Box::new(adaptive::Gradient::default().with_bounds(min, max).with_initial(initial))
        }
        AdaptiveAlgorithm::Slo { target } => {
            Box::new(adaptive::Slo::new(target).with_bounds(min, max).with_initial(initial))
        }
    }
}

impl Policy {
    /// The policy of route `route`; `redis` serves its `scope = "global"` rate limits.
    pub(crate) fn new(config: &PolicyConfig, route: &str, redis: Option<&spillway_redis::Client>) -> Self {
        let shared_limit = match (&config.limit, redis) {
            (Some(l), Some(client)) => l.global.map(|(fail_mode, lease)| {
                let LimitKind::Static { max } = l.kind else { unreachable!("validated: static only") };
                let max = u32::try_from(max).unwrap_or(u32::MAX);
                spillway_redis::GlobalConcurrency::new(client.clone(), route, max, lease, fail_mode)
            }),
            _ => None,
        };
        let limit = config.limit.as_ref().filter(|_| shared_limit.is_none()).map(|l| {
            let start = match l.kind {
                LimitKind::Static { max } => max,
                LimitKind::Adaptive { initial, .. } => initial,
            };
            let limiter = ConcurrencyLimiter::builder_with_clock(start, ProxyClock::new())
                .queue(l.queue)
                .queue_timeout(l.queue_timeout)
                .order(l.order)
                .build();
            match l.kind {
                LimitKind::Static { .. } => Limit::Static(limiter),
                LimitKind::Adaptive { algorithm, min, max, initial } => {
                    Limit::Adaptive(AdaptiveLimiter::new(controller(algorithm, min, max, initial), limiter))
                }
            }
        });
        let rates = config
            .rates
            .iter()
            .enumerate()
            .map(|(i, c)| Rate {
                limiter: match (&c.key, c.global, redis) {
                    // (Validation ensures a [redis] section for every global limit.)
                    (_, Some(g), Some(client)) => Limiter::Shared(
                        spillway_redis::GlobalRate::new(
                            client.clone(),
                            &format!("{route}.{i}"),
                            c.quota,
                            g.fail_mode,
                        )
                        .with_lease(g.lease, g.lease_ttl),
                    ),
                    (RateKey::Global, ..) => {
                        Limiter::Global(RateLimiter::with_clock(algorithm(c), ProxyClock::new()))
                    }
                    _ => {
                        Limiter::Keyed(KeyedLimiter::with_clock(algorithm(c), c.max_keys, ProxyClock::new()))
                    }
                },
                config: c.clone(),
            })
            .collect();
        let bulkhead = config.bulkhead.as_ref().map(|b| {
            let mut guaranteed: Vec<usize> = b.partitions.iter().map(|p| p.1).collect();
            guaranteed.push(0); // the default partition: borrows only
            Arc::new(Bulkhead::new(b.capacity, &guaranteed))
        });
        Self {
            config: config.clone(),
            limit,
            rates,
            bulkhead,
            hasher: foldhash::fast::FixedState::default(),
            evictions_reported: AtomicU64::new(0),
            shared_limit,
        }
    }

    /// Admits the request described by `parts` or says why not. `breaker` is the upstream's.
    pub(crate) async fn admit(
        self: &Arc<Self>,
        parts: &Parts,
        peer: std::net::SocketAddr,
        client: &ClientIp,
        breaker: Option<&(Arc<CircuitBreaker<ProxyClock>>, bool)>,
        metrics: &RouteMetrics,
    ) -> Result<Admitted, Overloaded> {
        for rate in &self.rates {
            let decision = match &rate.limiter {
                Limiter::Global(l) => l.check(),
                Limiter::Keyed(l) => l.check_key(&self.key(&rate.config.key, parts, peer, client)),
                // The key as Redis sees it: a hash (a client's address or API key never leaves
                // the process), the same in every replica of the same build.
                Limiter::Shared(l) => {
                    l.check(&format!("{:016x}", self.key(&rate.config.key, parts, peer, client)), 1).await
                }
            };
            if !decision.allowed {
                if rate.config.dry_run {
                    metrics.would_reject(MetricReason::rate_limited);
                } else {
                    metrics.rejected(MetricReason::rate_limited);
                    return Err(decision.into());
                }
            }
        }
        let mut admitted = Admitted::default();
        if let (Some(bulkhead), Some(config)) = (&self.bulkhead, &self.config.bulkhead) {
            let partition = parts
                .headers
                .get(&config.header)
                .and_then(|v| config.partitions.iter().position(|p| p.0 == v))
                .unwrap_or(config.partitions.len());
            match Bulkhead::try_acquire_owned(bulkhead, partition) {
                Some(p) => admitted.bulkhead = Some(p),
                None if config.dry_run => metrics.would_reject(MetricReason::bulkhead_full),
                None => {
                    metrics.rejected(MetricReason::bulkhead_full);
                    return Err(Overloaded::new(Reason::BulkheadFull { partition }, Duration::from_secs(1)));
                }
            }
        }
        if let Some((breaker, dry_run)) = breaker {
            match breaker.try_admit() {
                Ok(a) => admitted.breaker = Some((breaker.clone(), a)),
                Err(_) if *dry_run => metrics.would_reject(MetricReason::breaker_open),
                Err(open) => {
                    metrics.rejected(MetricReason::breaker_open);
                    return Err(open.into());
                }
            }
        }
        if let (Some(shared), Some(config)) = (&self.shared_limit, &self.config.limit) {
            // One permit per request over every replica; released when the response is done.
            match shared.acquire("all").await {
                Ok(p) => admitted.shared = Some(Box::new(p)),
                Err(_) if config.dry_run => metrics.would_reject(MetricReason::at_capacity),
                Err(_) => {
                    metrics.rejected(MetricReason::at_capacity);
                    let reason = Reason::Concurrency(RejectReason::AtCapacity);
                    return Err(Overloaded::new(reason, Duration::from_secs(1)));
                }
            }
        }
        if let (Some(limit), Some(config)) = (&self.limit, &self.config.limit) {
            let limiter = limit.limiter();
            let class = self.criticality(parts);
            let shed_ceiling = self
                .config
                .shed
                .as_ref()
                .map(|_| spillway::shed::ceiling(limiter.limit(), class.default_share(), class));
            let mut waited = 0;
            let permit: Result<Option<OwnedPermit<ProxyClock>>, (Rejected, Option<Criticality>)> =
                match shed_ceiling {
                    // Below the top class, a request is admitted only under its class's ceiling and
                    // never queues: the queue is kept for the work that matters most.
                    Some(c) if class < Criticality::Critical => {
                        limiter.try_acquire_within_owned(c).map(Some).map_err(|r| (r, Some(class)))
                    }
                    _ => {
                        let taken = match limit.take() {
                            Some(taken) => Ok(taken),
                            None => {
                                let queued = limiter.clock().now();
                                // Boxed: the waiting future (queue node, timer) is large, and
                                // the free path should not carry its size in every request.
                                let taken = Box::pin(limit.wait(config.queue_timeout)).await;
                                waited = limiter.clock().now().saturating_sub(queued);
                                taken
                            }
                        };
                        taken
                            .map(|(permit, adm)| {
                                admitted.adaptive = adm.map(|adm| (self.clone(), adm));
                                permit
                            })
                            .map_err(|r| (r, None))
                    }
                };
            match permit {
                Ok(p) => {
                    metrics.queue_wait.observe(waited as f64 / 1e9);
                    admitted.permit = p;
                }
                Err((rejected, shed)) => {
                    let reason = metric_reason(&rejected, shed.is_some());
                    if config.dry_run
                        || (shed.is_some() && self.config.shed.as_ref().is_some_and(|s| s.dry_run))
                    {
                        metrics.would_reject(reason);
                    } else {
                        metrics.rejected(reason);
                        return Err(match shed {
                            Some(class) => Overloaded::new(Reason::Shed(class), rejected.retry_after()),
                            None => rejected.into(),
                        });
                    }
                }
            }
        }
        Ok(admitted)
    }

    /// Keys held and live keys evicted, over the route's keyed rate limiters.
    /// Keys held by the keyed rate limiters, and their evictions since the last call (none if
    /// the policy has no keyed limiter).
    pub(crate) fn keyed_report(&self) -> Option<(u64, u64)> {
        let stats = self.rates.iter().filter_map(|r| match &r.limiter {
            Limiter::Keyed(k) => Some(k.stats()),
            Limiter::Global(_) | Limiter::Shared(_) => None,
        });
        let (keys, evicted) = stats.fold(None, |acc, s| {
            let (k, e) = acc.unwrap_or((0, 0));
            Some((k + s.keys, e + s.evicted))
        })?;
        // One swap: two scrapes at once never count an eviction twice.
        let before = self.evictions_reported.swap(evicted, Ordering::Relaxed);
        Some((keys, evicted.saturating_sub(before)))
    }

    fn criticality(&self, parts: &Parts) -> Criticality {
        let Some(shed) = &self.config.shed else { return Criticality::Critical };
        parts
            .headers
            .get(&shed.header)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(shed.default)
    }

    fn key(&self, key: &RateKey, parts: &Parts, peer: std::net::SocketAddr, client: &ClientIp) -> u64 {
        let mut h = self.hasher.build_hasher();
        match key {
            RateKey::Global => {}
            RateKey::Ip => client.client_of(&parts.headers, Some(&peer)).map(rate::IpKey::from).hash(&mut h),
            RateKey::Route => RouteKey::new(2).hash_route(&parts.method, parts.uri.path(), &mut h),
            RateKey::Header(name) => parts.headers.get(name).map(|v| v.as_bytes()).hash(&mut h),
        }
        h.finish()
    }
}

fn metric_reason(r: &Rejected, shed: bool) -> MetricReason {
    if shed {
        return MetricReason::shed;
    }
    match r.reason() {
        RejectReason::AtCapacity => MetricReason::at_capacity,
        RejectReason::QueueFull => MetricReason::queue_full,
        RejectReason::Timeout => MetricReason::queue_timeout,
        RejectReason::DeadlineUnreachable => MetricReason::deadline,
        _ => MetricReason::at_capacity,
    }
}

/// What an admitted request holds until it is done; dropping it releases everything.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    permit: Option<OwnedPermit<ProxyClock>>,
    adaptive: Option<(Arc<Policy>, adaptive::Admission<ProxyClock>)>,
    bulkhead: Option<OwnedBulkheadPermit>,
    breaker: Option<(Arc<CircuitBreaker<ProxyClock>>, spillway::breaker::Admission)>,
    // (Boxed: large, and only global routes carry one.)
    shared: Option<Box<spillway_redis::GlobalPermit>>,
}

impl Admitted {
    /// The upstream answered (`failed`: 5xx, a timeout or a connection failure): feeds the
    /// adaptive limit and the breaker. The concurrency permit and the bulkhead slot stay held
    /// until `self` is dropped, when the response body is done.
    pub(crate) fn record(&mut self, failed: bool) {
        if let Some((policy, admission)) = self.adaptive.take()
            && let Some(Limit::Adaptive(a)) = &policy.limit
        {
            a.finish(admission, Some(failed));
        }
        if let Some((breaker, admission)) = self.breaker.take() {
            breaker.finish(admission, Some(failed));
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        // Not recorded: the client went away or the body broke; release without a sample.
        if let Some((policy, admission)) = self.adaptive.take()
            && let Some(Limit::Adaptive(a)) = &policy.limit
        {
            a.finish(admission, None);
        }
        if let Some((breaker, admission)) = self.breaker.take() {
            breaker.finish(admission, None);
        }
    }
}
