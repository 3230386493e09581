//! The proxy's metrics (prometheus-client). Labels are route and upstream names from the config
//! and fixed reason/outcome words: never a client key, an IP or a raw path.
//!
//! The request path only touches pre-resolved handles ([`RouteMetrics`]): an atomic add, no
//! label lookup. Gauges that mirror limiter state are set when `/metrics` is scraped.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use std::sync::Mutex;

/// Why a request was refused (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Reason {
    rate_limited,
    at_capacity,
    queue_full,
    queue_timeout,
    deadline,
    shed,
    bulkhead_full,
    breaker_open,
}

pub(crate) const REASONS: [Reason; 8] = [
    Reason::rate_limited,
    Reason::at_capacity,
    Reason::queue_full,
    Reason::queue_timeout,
    Reason::deadline,
    Reason::shed,
    Reason::bulkhead_full,
    Reason::breaker_open,
];

/// How a request ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub(crate) enum Outcome {
    /// 1xx–3xx from the upstream.
    success,
    /// 4xx from the upstream.
    client_error,
    /// 5xx from the upstream.
    server_error,
    /// Refused by a policy.
    rejected,
    /// The upstream could not be reached or did not answer in time.
    upstream_error,
    /// Refused by the proxy's own checks (body too large, no route).
    invalid,
}

const OUTCOMES: [Outcome; 6] = [
    Outcome::success,
    Outcome::client_error,
    Outcome::server_error,
    Outcome::rejected,
    Outcome::upstream_error,
    Outcome::invalid,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct RouteLabel {
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteOutcome {
    route: String,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteReason {
    route: String,
    reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct UpstreamLabel {
    upstream: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteReasonWord {
    route: String,
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TcpLabel {
    listener: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TcpOutcome {
    listener: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

type Histograms = Family<RouteLabel, Histogram, fn() -> Histogram>;

/// Every metric family of one proxy process.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RouteOutcome, Counter>,
    rejected: Family<RouteReason, Counter>,
    would_reject: Family<RouteReason, Counter>,
    queue_wait: Histograms,
    duration: Histograms,
    pub(crate) in_flight: Family<RouteLabel, Gauge>,
    pub(crate) limit: Family<RouteLabel, Gauge>,
    pub(crate) queue_depth: Family<RouteLabel, Gauge>,
    pub(crate) queue_capacity: Family<RouteLabel, Gauge>,
    pub(crate) keys: Family<RouteLabel, Gauge>,
    pub(crate) evictions: Family<RouteLabel, Counter>,
    pub(crate) breaker_state: Family<UpstreamLabel, Gauge>,
    pub(crate) upstream_connections: Family<UpstreamLabel, Gauge>,
    ws_open: Family<RouteLabel, Gauge>,
    ws_queued: Family<RouteLabel, Gauge>,
    ws_dropped: Family<RouteLabel, Counter>,
    ws_closed: Family<RouteReasonWord, Counter>,
    tcp_open: Family<TcpLabel, Gauge>,
    tcp_connections: Family<TcpOutcome, Counter>,
    reloads: Family<ResultLabel, Counter>,
    last_reload_ok: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every family, `spillway_` prefixed.
    pub fn new() -> Self {
        let hist = || Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let mut m = Self {
            registry: Mutex::new(Registry::with_prefix("spillway")),
            requests: Family::default(),
            rejected: Family::default(),
            would_reject: Family::default(),
            queue_wait: hist(),
            duration: hist(),
            in_flight: Family::default(),
            limit: Family::default(),
            queue_depth: Family::default(),
            queue_capacity: Family::default(),
            keys: Family::default(),
            evictions: Family::default(),
            breaker_state: Family::default(),
            upstream_connections: Family::default(),
            ws_open: Family::default(),
            ws_queued: Family::default(),
            ws_dropped: Family::default(),
            ws_closed: Family::default(),
            tcp_open: Family::default(),
            tcp_connections: Family::default(),
            reloads: Family::default(),
            last_reload_ok: Gauge::default(),
        };
        let r = m.registry.get_mut().unwrap_or_else(|e| e.into_inner());
        r.register("requests", "Requests by route and outcome", m.requests.clone());
        r.register("rejected_requests", "Requests refused by a policy, by reason", m.rejected.clone());
        r.register(
            "dry_run_rejections",
            "Requests a dry-run policy would have refused (they were served)",
            m.would_reject.clone(),
        );
        r.register("queue_wait_seconds", "Time admitted requests waited in the queue", m.queue_wait.clone());
        r.register(
            "request_duration_seconds",
            "Time from admission to the upstream's response headers",
            m.duration.clone(),
        );
        r.register("in_flight_requests", "Requests holding a concurrency permit", m.in_flight.clone());
        r.register("concurrency_limit", "The current (possibly adaptive) concurrency limit", m.limit.clone());
        r.register("queue_depth", "Requests waiting for a permit", m.queue_depth.clone());
        r.register("queue_capacity", "Waiting requests allowed at most", m.queue_capacity.clone());
        r.register("rate_limiter_keys", "Keys held by keyed rate limiters", m.keys.clone());
        r.register(
            "rate_limiter_evictions",
            "Live keys pushed out of a keyed rate limiter's full table",
            m.evictions.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker: 0 closed, 1 open, 2 half-open, 3 off",
            m.breaker_state.clone(),
        );
        r.register(
            "upstream_connections",
            "Open connections to the upstream",
            m.upstream_connections.clone(),
        );
        r.register("websocket_connections", "WebSocket connections being relayed", m.ws_open.clone());
        r.register(
            "websocket_queued_messages",
            "Messages queued in WebSocket relays, both directions, all connections",
            m.ws_queued.clone(),
        );
        r.register(
            "websocket_dropped_messages",
            "Messages a WebSocket relay dropped by its drop_oldest or drop_newest policy",
            m.ws_dropped.clone(),
        );
        r.register(
            "websocket_disconnects",
            "WebSocket connections the proxy closed: slow_consumer (queue full, 1008), lagging (max_lag, 1008), message_too_big (1009)",
            m.ws_closed.clone(),
        );
        r.register("tcp_open_connections", "TCP-mode connections being proxied", m.tcp_open.clone());
        r.register(
            "tcp_connections",
            "TCP-mode connections by outcome: accepted, rejected (over the limit), upstream_error",
            m.tcp_connections.clone(),
        );
        // Both results from the start, at zero: `increase()` sees the first one.
        for result in ["success", "failure"] {
            let _ = m.reloads.get_or_create(&ResultLabel { result });
        }
        r.register("reloads", "Config reloads by result", m.reloads.clone());
        m.last_reload_ok.set(1);
        r.register(
            "config_last_reload_successful",
            "1 if the last reload (or the start) took its config, 0 if it was refused",
            m.last_reload_ok.clone(),
        );
        let info = Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]);
        r.register("build", "Build information", info);
        m
    }

    /// The handles of one route.
    pub(crate) fn route(&self, route: &str) -> RouteMetrics {
        let l = |outcome| RouteOutcome { route: route.into(), outcome };
        let r = |reason| RouteReason { route: route.into(), reason };
        let label = RouteLabel { route: route.into() };
        RouteMetrics {
            requests: OUTCOMES.map(|o| self.requests.get_or_create(&l(o)).clone()),
            rejected: REASONS.map(|x| self.rejected.get_or_create(&r(x)).clone()),
            would_reject: REASONS.map(|x| self.would_reject.get_or_create(&r(x)).clone()),
            queue_wait: self.queue_wait.get_or_create(&label).clone(),
            duration: self.duration.get_or_create(&label).clone(),
            ws: self.ws(route),
        }
    }

    /// One route's WebSocket handles. (One statement per handle: a family's guard lives to
    /// the end of its statement, and a second lookup that creates would wait on it.)
    fn ws(&self, route: &str) -> WsMetrics {
        let label = RouteLabel { route: route.into() };
        let closed =
            |reason| self.ws_closed.get_or_create(&RouteReasonWord { route: route.into(), reason }).clone();
        let open = self.ws_open.get_or_create(&label).clone();
        let queued = self.ws_queued.get_or_create(&label).clone();
        let dropped = self.ws_dropped.get_or_create(&label).clone();
        let slow_consumer = closed("slow_consumer");
        let lagging = closed("lagging");
        let too_big = closed("message_too_big");
        WsMetrics { open, queued, dropped, slow_consumer, lagging, too_big }
    }

    /// Forgets a route that a reload removed (its label set must not grow forever).
    pub(crate) fn remove_route(&self, route: &str) {
        for o in OUTCOMES {
            self.requests.remove(&RouteOutcome { route: route.into(), outcome: o });
        }
        for x in REASONS {
            self.rejected.remove(&RouteReason { route: route.into(), reason: x });
            self.would_reject.remove(&RouteReason { route: route.into(), reason: x });
        }
        let label = RouteLabel { route: route.into() };
        for f in [&self.in_flight, &self.limit, &self.queue_depth, &self.queue_capacity, &self.keys] {
            f.remove(&label);
        }
        self.evictions.remove(&label);
        self.queue_wait.remove(&label);
        self.duration.remove(&label);
        self.ws_open.remove(&label);
        self.ws_queued.remove(&label);
        self.ws_dropped.remove(&label);
        for reason in WS_CLOSE_REASONS {
            self.ws_closed.remove(&RouteReasonWord { route: route.into(), reason });
        }
    }

    pub(crate) fn set_route_gauge(family: &Family<RouteLabel, Gauge>, route: &str, value: i64) {
        family.get_or_create(&RouteLabel { route: route.into() }).set(value);
    }

    pub(crate) fn add_route_count(family: &Family<RouteLabel, Counter>, route: &str, n: u64) {
        family.get_or_create(&RouteLabel { route: route.into() }).inc_by(n);
    }

    pub(crate) fn set_upstream_gauge(family: &Family<UpstreamLabel, Gauge>, upstream: &str, value: i64) {
        family.get_or_create(&UpstreamLabel { upstream: upstream.into() }).set(value);
    }

    /// The handles of one TCP listener.
    pub(crate) fn tcp(&self, listener: &str) -> TcpMetrics {
        let c = |outcome| {
            self.tcp_connections.get_or_create(&TcpOutcome { listener: listener.into(), outcome }).clone()
        };
        TcpMetrics {
            open: self.tcp_open.get_or_create(&TcpLabel { listener: listener.into() }).clone(),
            accepted: c("accepted"),
            rejected: c("rejected"),
            upstream_error: c("upstream_error"),
        }
    }

    /// Adds the Redis client's metrics (`spillway_redis_*`).
    pub(crate) fn register_redis(&self, client: &spillway_redis::Client) {
        client.register(&mut self.registry.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// Counts a reload.
    pub(crate) fn reload(&self, ok: bool) {
        self.reloads.get_or_create(&ResultLabel { result: if ok { "success" } else { "failure" } }).inc();
        self.last_reload_ok.set(i64::from(ok));
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 << 10);
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// One route's pre-resolved handles.
#[derive(Debug, Clone)]
pub(crate) struct RouteMetrics {
    requests: [Counter; 6],
    rejected: [Counter; 8],
    would_reject: [Counter; 8],
    pub(crate) queue_wait: Histogram,
    pub(crate) duration: Histogram,
    pub(crate) ws: WsMetrics,
}

/// One route's WebSocket relay handles.
#[derive(Debug, Clone)]
pub(crate) struct WsMetrics {
    pub(crate) open: Gauge,
    pub(crate) queued: Gauge,
    pub(crate) dropped: Counter,
    pub(crate) slow_consumer: Counter,
    pub(crate) lagging: Counter,
    pub(crate) too_big: Counter,
}

const WS_CLOSE_REASONS: [&str; 3] = ["slow_consumer", "lagging", "message_too_big"];

impl RouteMetrics {
    pub(crate) fn outcome(&self, o: Outcome) {
        self.requests[o as usize].inc();
    }

    pub(crate) fn rejected(&self, reason: Reason) {
        self.rejected[reason as usize].inc();
        self.outcome(Outcome::rejected);
    }

    pub(crate) fn would_reject(&self, reason: Reason) {
        self.would_reject[reason as usize].inc();
    }
}

/// One TCP listener's pre-resolved handles.
#[derive(Debug, Clone)]
pub(crate) struct TcpMetrics {
    pub(crate) open: Gauge,
    pub(crate) accepted: Counter,
    pub(crate) rejected: Counter,
    pub(crate) upstream_error: Counter,
}
