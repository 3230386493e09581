//! The proxy's config: TOML parsed into a raw form ([`raw`]), then validated into the typed
//! [`Config`] here. Unknown keys are errors, and every error names file, line, column and key.
//!
//! ```
//! let config = spillway_proxy::Config::parse(r#"
//!     [[listeners]]
//!     name = "web"
//!     listen = "127.0.0.1:8080"
//!
//!     [[upstreams]]
//!     name = "app"
//!     addrs = ["127.0.0.1:9000"]
//!
//!     [[routes]]
//!     listener = "web"
//!     upstream = "app"
//!     [routes.concurrency]
//!     max = 10
//!     queue = 100
//!     queue_timeout = "200ms"
//! "#, "spillway.toml").unwrap();
//! assert_eq!(config.routes[0].path_prefix, "/");
//!
//! let err = spillway_proxy::Config::parse("[[listeners]]\nname = \"web\"\nlisten = \"nowhere\"\n", "bad.toml").unwrap_err();
//! assert_eq!((err.line, err.key.as_str()), (3, "listeners[0].listen"));
//! ```

mod error;
mod raw;

pub use error::ConfigError;

use http::{HeaderName, HeaderValue, Method};
use spillway::limit::QueueOrder;
use spillway::rate::Quota;
use spillway::shed::Criticality;
use spillway_tower::http::Cidr;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A validated config: every reference resolved, every value in range.
#[derive(Debug, Clone)]
pub struct Config {
    /// The admin listener (metrics, probes), if any.
    pub admin: Option<AdminConfig>,
    /// Worker threads (each with its own runtime and listening sockets); `None`: one per core.
    pub threads: Option<usize>,
    /// How long a drain may take before the process exits anyway.
    pub shutdown_grace: Duration,
    /// How long `/readyz` fails before accepting stops (time for load balancers to notice).
    pub shutdown_delay: Duration,
    /// Where clients connect.
    pub listeners: Vec<ListenerConfig>,
    /// Where requests go.
    pub upstreams: Vec<UpstreamConfig>,
    /// Which requests go where, under which policy (first match wins).
    pub routes: Vec<RouteConfig>,
    /// TCP (L4) listeners: raw bytes to an upstream, under a connection limit.
    pub tcp: Vec<TcpConfig>,
    /// Redis, for the limits with `scope = "global"`.
    pub redis: Option<spillway_redis::RedisConfig>,
}

/// A TCP (L4) listener: every connection is proxied byte for byte to one of `addrs`.
#[derive(Debug, Clone, PartialEq)]
pub struct TcpConfig {
    /// Its name (the `listener` label of its metrics).
    pub name: String,
    /// Where clients connect.
    pub listen: SocketAddr,
    /// Upstream addresses, round-robin.
    pub addrs: Vec<SocketAddr>,
    /// Connections proxied at once, over all workers.
    pub max_connections: usize,
    /// Connections that may wait for a slot (unread: their bytes stay in the kernel); 0 closes
    /// a connection over the limit at once.
    pub queue: usize,
    /// How long a connection may wait for a slot before it is closed.
    pub queue_timeout: Duration,
    /// Bytes buffered per direction per connection; a full buffer stops reading that side.
    pub buffer: usize,
    /// How long connecting to the upstream may take.
    pub connect_timeout: Duration,
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Its address: `127.0.0.1:9901` unless `listen` says otherwise.
    pub listen: SocketAddr,
    /// `/readyz` fails while a route is saturated (limit reached and requests queued).
    pub unready_when_saturated: bool,
}

/// One listening address and its connection limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// Referenced by routes.
    pub name: String,
    /// The address (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// TLS (HTTP/1.1 and HTTP/2 by ALPN); plain listeners speak HTTP/1.1 and h2c.
    pub tls: Option<TlsConfig>,
    /// The time a client has to finish the TLS handshake and send a request's headers, counted
    /// from the accept or from the end of the previous response (slowloris guard; it also
    /// closes idle HTTP/1.1 keep-alive connections). Zero turns it off.
    pub header_read_timeout: Duration,
    /// HTTP/2: the interval of keep-alive pings (a peer that does not answer one within 20 s is
    /// closed).
    pub idle_timeout: Duration,
    /// Header bytes per request (431 beyond).
    pub max_header_bytes: usize,
    /// Header fields per request (431 beyond).
    pub max_headers: usize,
    /// Request body bytes (413 beyond), unless a route says otherwise.
    pub max_body_bytes: u64,
    /// HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 resets a client may have pending before the connection is closed.
    pub h2_max_pending_resets: usize,
    /// HTTP/2 initial stream window.
    pub h2_stream_window: u32,
    /// HTTP/2 initial connection window.
    pub h2_connection_window: u32,
    /// Peers whose `Forwarded` / `X-Forwarded-For` are believed for client-IP keys.
    pub trusted_proxies: Vec<Cidr>,
    /// Append the peer to `X-Forwarded-For` upstream.
    pub forwarded_for: bool,
}

/// A certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The certificate chain.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

/// The protocol spoken to an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 without TLS, prior knowledge (gRPC backends).
    H2c,
}

/// A set of equivalent backend addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Referenced by routes.
    pub name: String,
    /// Tried round-robin.
    pub addrs: Vec<SocketAddr>,
    /// HTTP/1.1 or h2c.
    pub protocol: Protocol,
    /// Connections open to this upstream at most (over all workers).
    pub max_connections: usize,
    /// Connect timeout (502 after it).
    pub connect_timeout: Duration,
    /// h2c: the window of each stream and of each connection the proxy opens to it: how much
    /// of an answer the proxy takes before its client reads it.
    pub h2_stream_window: u32,
    /// See `h2_stream_window`.
    pub h2_connection_window: u32,
    /// A circuit breaker in front of it.
    pub breaker: Option<BreakerPolicy>,
}

/// A breaker's settings and whether it only counts.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    /// Thresholds and windows.
    pub config: spillway::breaker::BreakerConfig,
    /// Count what it would refuse; refuse nothing.
    pub dry_run: bool,
}

/// One route: a match, an upstream, a policy.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// The route's name, used in metrics (default `route<N>`).
    pub name: String,
    /// Index into [`Config::listeners`].
    pub listener: usize,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// The `Host` (or `:authority`) to match, lowercase, without port; `None`: any.
    pub host: Option<String>,
    /// The path prefix to match.
    pub path_prefix: String,
    /// Methods to match (empty: any).
    pub methods: Vec<Method>,
    /// Headers that must be present with exactly these values.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Time for the upstream to answer with headers (504 after it).
    pub timeout: Duration,
    /// Request body cap (413 beyond).
    pub max_body_bytes: u64,
    /// Admission policy.
    pub policy: PolicyConfig,
    /// How WebSocket connections upgraded on this route are relayed.
    pub websocket: WebSocketConfig,
}

/// What a WebSocket relay does when one side sends faster than the other reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsPolicy {
    /// Stop reading the sender, so that TCP pushes back on it. Lossless, ordered.
    Block,
    /// Evict the oldest queued message: live data (tickers, metrics).
    DropOldest,
    /// Drop the new message: keep what is queued (ordered events).
    DropNewest,
    /// Close the slow reader with 1008 and a reason.
    Disconnect,
}

/// A route's WebSocket relay settings (`[routes.websocket]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WebSocketConfig {
    /// What a full queue does.
    pub policy: WsPolicy,
    /// Messages queued per direction per connection.
    pub queue: usize,
    /// The largest message (and frame) accepted; a larger one closes its sender with 1009.
    pub max_message: usize,
    /// Relayed connections at once on this route, over all workers (503 beyond).
    pub max_connections: usize,
    /// Send `{"event":"flow.pause","reason":"buffer full"}` upstream when the client's queue
    /// passes 3/4 full, and `{"event":"flow.resume"}` when it falls under 1/4.
    pub flow_control: bool,
    /// A message that has waited this long for its reader closes that reader with 1008
    /// (`slow consumer: lagging`), whatever the policy. `None`: no time limit.
    pub max_lag: Option<Duration>,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            policy: WsPolicy::Block,
            queue: 256,
            max_message: 1 << 20,
            max_connections: 10_000,
            flow_control: false,
            max_lag: None,
        }
    }
}

/// A route's admission policy. Two routes with equal policies after a reload keep their state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PolicyConfig {
    /// A concurrency limit, static or adaptive, with its queue.
    pub limit: Option<LimitConfig>,
    /// Rate limits, all checked.
    pub rates: Vec<RateConfig>,
    /// Criticality-based shedding over the limit.
    pub shed: Option<ShedConfig>,
    /// Bulkhead partitions.
    pub bulkhead: Option<BulkheadConfig>,
}

/// A concurrency limit.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitConfig {
    /// Static or adaptive.
    pub kind: LimitKind,
    /// Waiting requests at most.
    pub queue: usize,
    /// How long a request may wait.
    pub queue_timeout: Duration,
    /// Which waiter goes next.
    pub order: QueueOrder,
    /// `scope = "global"` (static limits only): the limit is over every replica, held in Redis;
    /// each permit lives at most its lease (longer than any request). No queue.
    pub global: Option<(spillway_redis::FailMode, Duration)>,
    /// Count, do not refuse.
    pub dry_run: bool,
}

/// How the limit is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitKind {
    /// Fixed.
    Static {
        /// The limit.
        max: usize,
    },
    /// Found by a controller from latency and drops.
    Adaptive {
        /// The controller.
        algorithm: AdaptiveAlgorithm,
        /// Lower bound.
        min: usize,
        /// Upper bound.
        max: usize,
        /// Start.
        initial: usize,
    },
}

/// An adaptive controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AdaptiveAlgorithm {
    /// Netflix's Gradient2, windowed (the default: meets every floor in `spillway simulate`).
    Gradient2,
    /// TCP Vegas.
    Vegas,
    /// Additive increase, multiplicative decrease; with a `target`, a slower answer counts as
    /// a drop (without one, only 5xx and timeouts do, and a backend that queues instead of
    /// failing never makes it back off).
    Aimd {
        /// Latency above which an answer counts as a drop.
        target: Option<Duration>,
    },
    /// Envoy's gradient controller.
    Gradient,
    /// Keeps latency under a target.
    Slo {
        /// The latency target.
        target: Duration,
    },
}

/// One rate limit.
#[derive(Debug, Clone, PartialEq)]
pub struct RateConfig {
    /// What is limited separately.
    pub key: RateKey,
    /// The algorithm.
    pub algorithm: RateAlgorithm,
    /// The rate and burst.
    pub quota: Quota,
    /// Distinct keys kept at most (oldest evicted).
    pub max_keys: usize,
    /// Shared by every replica through Redis (`scope = "global"`), or this process's own.
    pub global: Option<GlobalScope>,
    /// Count, do not refuse.
    pub dry_run: bool,
}

/// How a `scope = "global"` rate limit uses Redis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GlobalScope {
    /// What it does while Redis cannot answer.
    pub fail_mode: spillway_redis::FailMode,
    /// Tokens taken per call to Redis (1: no leases).
    pub lease: u32,
    /// How long leased tokens may be spent.
    pub lease_ttl: Duration,
}

/// The key of a rate limit.
#[derive(Debug, Clone, PartialEq)]
pub enum RateKey {
    /// One limit for the route.
    Global,
    /// Per client IP (IPv6 by /64; forwarding headers only from trusted proxies).
    Ip,
    /// Per method and first two path segments.
    Route,
    /// Per value of a header (an API key, a tenant).
    Header(HeaderName),
}

/// A rate-limiting algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateAlgorithm {
    /// Generic cell rate algorithm (the default).
    Gcra,
    /// Token bucket.
    TokenBucket,
    /// Leaky bucket (as a meter).
    LeakyBucket,
    /// Fixed window.
    FixedWindow,
    /// Sliding window (weighted previous window).
    SlidingWindow,
}

/// Criticality-based shedding.
#[derive(Debug, Clone, PartialEq)]
pub struct ShedConfig {
    /// The header carrying the class (`critical_plus`, `critical`, `sheddable_plus`, `sheddable`).
    pub header: HeaderName,
    /// The class of requests without it.
    pub default: Criticality,
    /// Count, do not refuse.
    pub dry_run: bool,
}

/// Bulkhead partitions keyed by a header value.
#[derive(Debug, Clone, PartialEq)]
pub struct BulkheadConfig {
    /// The header naming the partition.
    pub header: HeaderName,
    /// Total in flight.
    pub capacity: usize,
    /// Named partitions and their guaranteed share; other values share the last, default one.
    pub partitions: Vec<(HeaderValue, usize)>,
    /// Count, do not refuse.
    pub dry_run: bool,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: name.clone(),
            line: 0,
            column: 0,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        let mut config = Self::parse(&src, &name)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for l in &mut config.listeners {
            if let Some(tls) = &mut l.tls {
                tls.cert = base.join(&tls.cert);
                tls.key = base.join(&tls.key);
            }
        }
        Ok(config)
    }

    /// Validates `src`; `file` names it in errors.
    pub fn parse(src: &str, file: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(src);
        let raw: raw::Raw = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let offset = inner.span().map(|s| s.start).or_else(|| error::locate(src, &key)).unwrap_or(0);
            let (line, column) = error::line_col(src, offset);
            let key = if key == "." { String::new() } else { key };
            ConfigError { file: file.into(), line, column, key, message: inner.message().to_string() }
        })?;
        validate(raw).map_err(|(key, message)| {
            let (line, column) = error::locate(src, &key).map_or((0, 0), |o| error::line_col(src, o));
            ConfigError { file: file.into(), line, column, key, message }
        })
    }
}

type Invalid = (String, String);

fn bad<T>(key: impl Into<String>, message: impl Into<String>) -> Result<T, Invalid> {
    Err((key.into(), message.into()))
}

fn addr(key: String, s: &str) -> Result<SocketAddr, Invalid> {
    s.parse().or_else(|_| bad(key, format!("{s:?} is not an address (write e.g. \"127.0.0.1:8080\")")))
}

fn header_name(key: String, s: &str) -> Result<HeaderName, Invalid> {
    HeaderName::from_bytes(s.as_bytes()).or_else(|_| bad(key, format!("{s:?} is not a header name")))
}

fn order(key: String, s: Option<&str>) -> Result<QueueOrder, Invalid> {
    match s.unwrap_or("fifo") {
        "fifo" => Ok(QueueOrder::Fifo),
        "lifo" => Ok(QueueOrder::Lifo),
        "adaptive_lifo" => Ok(QueueOrder::AdaptiveLifo),
        other => bad(key, format!("unknown order {other:?} (one of fifo, lifo, adaptive_lifo)")),
    }
}

fn positive(key: String, n: usize) -> Result<usize, Invalid> {
    if n == 0 { bad(key, "must be at least 1") } else { Ok(n) }
}

const MAX_WINDOW: u64 = (1 << 31) - 1;

/// An HTTP/2 flow-control window (RFC 9113 §6.9: at most 2^31 - 1).
fn window(key: String, v: Option<raw::Size>, default: u32) -> Result<u32, Invalid> {
    match v {
        Some(raw::Size(n)) if !(65_535..=MAX_WINDOW).contains(&n) => {
            bad(key, format!("must be between 65535 and {MAX_WINDOW} bytes"))
        }
        Some(raw::Size(n)) => Ok(n as u32),
        None => Ok(default),
    }
}

fn websocket(k: &str, w: raw::WebSocket) -> Result<WebSocketConfig, Invalid> {
    let d = WebSocketConfig::default();
    let policy = match w.policy.as_deref().unwrap_or("block") {
        "block" => WsPolicy::Block,
        "drop_oldest" => WsPolicy::DropOldest,
        "drop_newest" => WsPolicy::DropNewest,
        "disconnect" => WsPolicy::Disconnect,
        other => {
            return bad(
                format!("{k}.policy"),
                format!("unknown policy {other:?} (block, drop_oldest, drop_newest or disconnect)"),
            );
        }
    };
    let max_message = match w.max_message.map_or(d.max_message as u64, |s| s.0) {
        n if !(125..=64 << 20).contains(&n) => {
            return bad(format!("{k}.max_message"), "must be between 125 bytes and 64 MiB");
        }
        n => n as usize,
    };
    Ok(WebSocketConfig {
        policy,
        queue: positive(format!("{k}.queue"), w.queue.unwrap_or(d.queue))?,
        max_message,
        max_connections: positive(
            format!("{k}.max_connections"),
            w.max_connections.unwrap_or(d.max_connections),
        )?,
        flow_control: w.flow_control.unwrap_or(false),
        max_lag: match w.max_lag {
            Some(d) if d.0.is_zero() => return bad(format!("{k}.max_lag"), "must be more than zero"),
            d => d.map(|d| d.0),
        },
    })
}

fn validate(raw: raw::Raw) -> Result<Config, Invalid> {
    let admin = match raw.admin {
        Some(a) => Some(AdminConfig {
            // Loopback unless told otherwise: the admin endpoints are for operators.
            listen: addr("admin.listen".into(), a.listen.as_deref().unwrap_or("127.0.0.1:9901"))?,
            unready_when_saturated: a.unready_when_saturated.unwrap_or(false),
        }),
        None => None,
    };
    let threads = match raw.server.threads {
        Some(0) => return bad("server.threads", "must be at least 1"),
        t => t,
    };
    if raw.listeners.is_empty() && raw.tcp.is_empty() {
        return bad("listeners", "at least one [[listeners]] or [[tcp]] is needed");
    }
    let mut listeners = Vec::with_capacity(raw.listeners.len());
    for (i, l) in raw.listeners.into_iter().enumerate() {
        let k = |f: &str| format!("listeners[{i}].{f}");
        if listeners.iter().any(|o: &ListenerConfig| o.name == l.name) {
            return bad(k("name"), format!("listener {:?} is defined twice", l.name));
        }
        let mut trusted = Vec::new();
        for (j, c) in l.trusted_proxies.unwrap_or_default().iter().enumerate() {
            trusted.push(
                c.parse().or_else(|e| bad(format!("listeners[{i}].trusted_proxies[{j}]"), format!("{e}")))?,
            );
        }
        listeners.push(ListenerConfig {
            listen: addr(k("listen"), &l.listen)?,
            tls: l.tls.map(|t| TlsConfig { cert: t.cert.into(), key: t.key.into() }),
            header_read_timeout: l.header_read_timeout.map_or(Duration::from_secs(10), |d| d.0),
            idle_timeout: l.idle_timeout.map_or(Duration::from_secs(60), |d| d.0),
            max_header_bytes: l.max_header_bytes.map_or(64 << 10, |s| s.0.clamp(8192, 1 << 24) as usize),
            max_headers: positive(k("max_headers"), l.max_headers.unwrap_or(100))?,
            max_body_bytes: l.max_body_bytes.map_or(64 << 20, |s| s.0),
            h2_max_concurrent_streams: l.h2_max_concurrent_streams.unwrap_or(100).max(1),
            h2_max_pending_resets: l.h2_max_pending_resets.unwrap_or(20),
            h2_stream_window: window(k("h2_stream_window"), l.h2_stream_window, 256 << 10)?,
            h2_connection_window: window(k("h2_connection_window"), l.h2_connection_window, 1 << 20)?,
            trusted_proxies: trusted,
            forwarded_for: l.forwarded_for.unwrap_or(true),
            name: l.name,
        });
    }
    let mut upstreams = Vec::with_capacity(raw.upstreams.len());
    for (i, u) in raw.upstreams.into_iter().enumerate() {
        let k = |f: &str| format!("upstreams[{i}].{f}");
        if upstreams.iter().any(|o: &UpstreamConfig| o.name == u.name) {
            return bad(k("name"), format!("upstream {:?} is defined twice", u.name));
        }
        if u.addrs.is_empty() {
            return bad(k("addrs"), "at least one address is needed");
        }
        let addrs = u
            .addrs
            .iter()
            .enumerate()
            .map(|(j, a)| addr(format!("upstreams[{i}].addrs[{j}]"), a))
            .collect::<Result<_, _>>()?;
        let protocol = match u.protocol.as_deref().unwrap_or("http1") {
            "http1" => Protocol::Http1,
            "h2c" => Protocol::H2c,
            other => return bad(k("protocol"), format!("unknown protocol {other:?} (http1 or h2c)")),
        };
        upstreams.push(UpstreamConfig {
            addrs,
            protocol,
            max_connections: positive(k("max_connections"), u.max_connections.unwrap_or(1024))?,
            connect_timeout: u.connect_timeout.map_or(Duration::from_secs(1), |d| d.0),
            h2_stream_window: window(k("h2_stream_window"), u.h2_stream_window, 256 << 10)?,
            h2_connection_window: window(k("h2_connection_window"), u.h2_connection_window, 1 << 20)?,
            breaker: u.breaker.map(|b| breaker(&k("breaker"), b)).transpose()?,
            name: u.name,
        });
    }
    let mut routes = Vec::with_capacity(raw.routes.len());
    for (i, r) in raw.routes.into_iter().enumerate() {
        let k = |f: &str| format!("routes[{i}].{f}");
        let name = r.name.unwrap_or_else(|| format!("route{i}"));
        if routes.iter().any(|o: &RouteConfig| o.name == name) {
            return bad(k("name"), format!("route {name:?} is defined twice"));
        }
        let Some(listener) = listeners.iter().position(|l| l.name == r.listener) else {
            return bad(k("listener"), format!("no listener is named {:?}", r.listener));
        };
        let Some(upstream) = upstreams.iter().position(|u| u.name == r.upstream) else {
            return bad(k("upstream"), format!("no upstream is named {:?}", r.upstream));
        };
        let path_prefix = r.path_prefix.unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') {
            return bad(k("path_prefix"), "must start with /");
        }
        let methods = match r.method {
            None => vec![],
            Some(raw::OneOrMany::One(m)) => vec![m],
            Some(raw::OneOrMany::Many(ms)) => ms,
        };
        let methods = methods
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .or_else(|_| bad(k("method"), format!("{m:?} is not a method")))
            })
            .collect::<Result<_, _>>()?;
        let mut headers = Vec::new();
        for (h, v) in &r.headers {
            let key = format!("routes[{i}].headers.{h}");
            let value = HeaderValue::from_str(v).or_else(|_| bad(key.clone(), "not a valid header value"))?;
            headers.push((header_name(key, h)?, value));
        }
        let policy = PolicyConfig {
            limit: limit(&k(""), r.concurrency, r.adaptive)?,
            rates: r
                .rate
                .into_iter()
                .enumerate()
                .map(|(j, rate)| rate_limit(format!("routes[{i}].rate[{j}]"), rate))
                .collect::<Result<_, _>>()?,
            shed: r.shed.map(|s| shed(&k("shed"), s)).transpose()?,
            bulkhead: r.bulkhead.map(|b| bulkhead(&k("bulkhead"), b)).transpose()?,
        };
        if policy.shed.is_some() && policy.limit.is_none() {
            return bad(
                k("shed"),
                "shedding needs a [routes.concurrency] or [routes.adaptive] limit to shed against",
            );
        }
        routes.push(RouteConfig {
            name,
            listener,
            upstream,
            host: r.host.map(|h| h.to_ascii_lowercase()),
            path_prefix,
            methods,
            headers,
            timeout: r.timeout.map_or(Duration::from_secs(30), |d| d.0),
            max_body_bytes: r.max_body_bytes.map_or(listeners[listener].max_body_bytes, |s| s.0),
            policy,
            websocket: r.websocket.map(|w| websocket(&k("websocket"), w)).transpose()?.unwrap_or_default(),
        });
    }
    let mut tcp = Vec::with_capacity(raw.tcp.len());
    for (i, t) in raw.tcp.into_iter().enumerate() {
        let k = |f: &str| format!("tcp[{i}].{f}");
        if tcp.iter().any(|o: &TcpConfig| o.name == t.name) || listeners.iter().any(|l| l.name == t.name) {
            return bad(k("name"), format!("listener {:?} is defined twice", t.name));
        }
        if t.addrs.is_empty() {
            return bad(k("addrs"), "at least one address is needed");
        }
        let addrs = t
            .addrs
            .iter()
            .enumerate()
            .map(|(j, a)| addr(format!("tcp[{i}].addrs[{j}]"), a))
            .collect::<Result<_, _>>()?;
        let buffer = match t.buffer.map_or(64 << 10, |s| s.0) {
            n if !(1024..=16 << 20).contains(&n) => {
                return bad(k("buffer"), "must be between 1 KiB and 16 MiB");
            }
            n => n as usize,
        };
        tcp.push(TcpConfig {
            listen: addr(k("listen"), &t.listen)?,
            addrs,
            max_connections: positive(k("max_connections"), t.max_connections.unwrap_or(1024))?,
            queue: t.queue.unwrap_or(0),
            queue_timeout: t.queue_timeout.map_or(Duration::from_secs(1), |d| d.0),
            buffer,
            connect_timeout: t.connect_timeout.map_or(Duration::from_secs(1), |d| d.0),
            name: t.name,
        });
    }
    let redis = raw.redis.map(redis_config).transpose()?;
    if redis.is_none() {
        for (i, r) in routes.iter().enumerate() {
            if let Some(j) = r.policy.rates.iter().position(|x| x.global.is_some()) {
                return bad(format!("routes[{i}].rate[{j}].scope"), "a global limit needs a [redis] section");
            }
            if r.policy.limit.as_ref().is_some_and(|l| l.global.is_some()) {
                return bad(
                    format!("routes[{i}].concurrency.scope"),
                    "a global limit needs a [redis] section",
                );
            }
        }
    }
    Ok(Config {
        admin,
        threads,
        shutdown_grace: raw.server.shutdown_grace.map_or(Duration::from_secs(30), |d| d.0),
        shutdown_delay: raw.server.shutdown_delay.map_or(Duration::ZERO, |d| d.0),
        listeners,
        upstreams,
        routes,
        tcp,
        redis,
    })
}

/// The `[redis]` section: one node (`url`) or a cluster's seed nodes (`cluster`), credentials
/// from the environment or a file, the call deadline.
fn redis_config(r: raw::Redis) -> Result<spillway_redis::RedisConfig, Invalid> {
    let d = spillway_redis::RedisConfig::default();
    let (urls, cluster) = match (r.url, r.cluster) {
        (Some(_), Some(_)) => {
            return bad("redis.cluster", "give url (one node) or cluster (seed nodes), not both");
        }
        (Some(u), None) => (vec![u], false),
        (None, Some(c)) if !c.is_empty() => (c, true),
        (None, Some(_)) => return bad("redis.cluster", "name at least one seed node"),
        (None, None) => (d.urls.clone(), false),
    };
    for (i, u) in urls.iter().enumerate() {
        if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
            let key = if cluster { format!("redis.cluster[{i}]") } else { "redis.url".into() };
            return bad(key, format!("{u:?} is not a redis:// or rediss:// URL"));
        }
    }
    let password = match (r.password_env, r.password_file) {
        (Some(_), Some(_)) => {
            return bad("redis.password_file", "give password_env or password_file, not both");
        }
        (Some(var), None) => {
            Some(std::env::var(&var).or_else(|_| bad("redis.password_env", format!("${var} is not set")))?)
        }
        (None, Some(path)) => Some(
            std::fs::read_to_string(&path)
                .or_else(|e| bad("redis.password_file", format!("{path}: {e}")))?
                .trim_end()
                .to_string(),
        ),
        (None, None) => None,
    };
    let timeout = r.timeout.map_or(d.timeout, |t| t.0);
    if timeout.is_zero() || timeout > Duration::from_secs(1) {
        return bad("redis.timeout", "must be more than zero and at most 1s (it is waited on every request)");
    }
    Ok(spillway_redis::RedisConfig {
        urls,
        cluster,
        username: r.username,
        password,
        timeout,
        open_duration: r.open_duration.map_or(d.open_duration, |t| t.0),
        ..d
    })
}

fn breaker(key: &str, b: raw::Breaker) -> Result<BreakerPolicy, Invalid> {
    use spillway::breaker::{BreakerConfig, Window};
    let d = BreakerConfig::default();
    let rate = |f: &str, v: Option<f64>, default: f64| match v {
        Some(x) if !(0.0..=1.0).contains(&x) => bad(format!("{key}.{f}"), "must be between 0 and 1"),
        Some(x) => Ok(x),
        None => Ok(default),
    };
    let window = match (b.window, b.window_time) {
        (Some(_), Some(_)) => {
            return bad(format!("{key}.window_time"), "give window (calls) or window_time, not both");
        }
        (Some(n), None) => Window::Count(positive(format!("{key}.window"), n as usize)? as u32),
        (None, Some(t)) => Window::Time(t.0.as_secs().max(1) as u32),
        (None, None) => d.window,
    };
    Ok(BreakerPolicy {
        config: BreakerConfig {
            window,
            minimum_calls: b.minimum_calls.unwrap_or(d.minimum_calls),
            failure_rate: rate("failure_rate", b.failure_rate, d.failure_rate)?,
            slow_call: b.slow_call.map_or(d.slow_call, |x| x.0),
            slow_call_rate: rate("slow_call_rate", b.slow_call_rate, d.slow_call_rate)?,
            open_duration: b.open_duration.map_or(d.open_duration, |x| x.0),
            half_open_calls: b.half_open_calls.unwrap_or(d.half_open_calls).max(1),
            ..d
        },
        dry_run: b.dry_run,
    })
}

fn limit(
    route: &str,
    c: Option<raw::Concurrency>,
    a: Option<raw::Adaptive>,
) -> Result<Option<LimitConfig>, Invalid> {
    let default_timeout = Duration::from_secs(1);
    match (c, a) {
        (Some(_), Some(_)) => {
            bad(format!("{route}adaptive"), "a route has [concurrency] or [adaptive], not both")
        }
        (Some(c), None) => {
            let key = |f: &str| format!("{route}concurrency.{f}");
            let extras = c.fail_mode.is_some() || c.lease.is_some();
            let global = if is_global(key("scope"), c.scope.as_deref(), extras, "fail_mode and lease")? {
                if c.queue > 0 {
                    return bad(key("queue"), "a global limit does not queue");
                }
                Some((
                    fail_mode(key("fail_mode"), c.fail_mode.as_deref())?,
                    c.lease.map_or(Duration::from_secs(60), |d| d.0).max(Duration::from_millis(1)),
                ))
            } else {
                None
            };
            Ok(Some(LimitConfig {
                kind: LimitKind::Static { max: positive(key("max"), c.max)? },
                queue: c.queue,
                queue_timeout: c.queue_timeout.map_or(default_timeout, |d| d.0),
                order: order(key("order"), c.order.as_deref())?,
                global,
                dry_run: c.dry_run,
            }))
        }
        (None, Some(a)) => {
            let key = |f: &str| format!("{route}adaptive.{f}");
            let algorithm = match a.algorithm.as_str() {
                "gradient2" => AdaptiveAlgorithm::Gradient2,
                "vegas" => AdaptiveAlgorithm::Vegas,
                "aimd" => AdaptiveAlgorithm::Aimd { target: a.target.map(|t| t.0) },
                "gradient" => AdaptiveAlgorithm::Gradient,
                "slo" => match a.target {
                    Some(t) => AdaptiveAlgorithm::Slo { target: t.0 },
                    None => return bad(key("target"), "the slo algorithm needs a latency target"),
                },
                other => {
                    return bad(
                        key("algorithm"),
                        format!("unknown algorithm {other:?} (gradient2, vegas, aimd, gradient, slo)"),
                    );
                }
            };
            let min = positive(key("min"), a.min.unwrap_or(1))?;
            let max = a.max.unwrap_or(1000);
            if max < min {
                return bad(key("max"), format!("must be at least min ({min})"));
            }
            let initial = a.initial.unwrap_or(20).clamp(min, max);
            Ok(Some(LimitConfig {
                kind: LimitKind::Adaptive { algorithm, min, max, initial },
                queue: a.queue,
                queue_timeout: a.queue_timeout.map_or(default_timeout, |d| d.0),
                order: order(key("order"), a.order.as_deref())?,
                global: None,
                dry_run: a.dry_run,
            }))
        }
        (None, None) => Ok(None),
    }
}

/// Whether `scope` (`local`, the default, or `global`) is global; `extras`, the settings only a
/// global limit takes (named by `what`), refuse a local one.
fn is_global(key: String, scope: Option<&str>, extras: bool, what: &str) -> Result<bool, Invalid> {
    match scope.unwrap_or("local") {
        "local" if extras => bad(key, format!("{what} need scope = \"global\"")),
        "local" => Ok(false),
        "global" => Ok(true),
        other => bad(key, format!("unknown scope {other:?} (local or global)")),
    }
}

fn fail_mode(key: String, m: Option<&str>) -> Result<spillway_redis::FailMode, Invalid> {
    match m.unwrap_or("local") {
        "local" => Ok(spillway_redis::FailMode::Local),
        "open" => Ok(spillway_redis::FailMode::Open),
        "closed" => Ok(spillway_redis::FailMode::Closed),
        other => bad(key, format!("unknown fail mode {other:?} (local, open or closed)")),
    }
}

fn rate_limit(key: String, r: raw::Rate) -> Result<RateConfig, Invalid> {
    let k = |f: &str| format!("{key}.{f}");
    let rate_key = match r.key.as_deref().unwrap_or("ip") {
        "global" => RateKey::Global,
        "ip" => RateKey::Ip,
        "route" => RateKey::Route,
        other => match other.strip_prefix("header:") {
            Some(h) => RateKey::Header(header_name(k("key"), h)?),
            None => {
                return bad(k("key"), format!("unknown key {other:?} (global, ip, route or header:NAME)"));
            }
        },
    };
    let algorithm = match r.algorithm.as_deref().unwrap_or("gcra") {
        "gcra" => RateAlgorithm::Gcra,
        "token_bucket" => RateAlgorithm::TokenBucket,
        "leaky_bucket" => RateAlgorithm::LeakyBucket,
        "fixed_window" => RateAlgorithm::FixedWindow,
        "sliding_window" => RateAlgorithm::SlidingWindow,
        other => {
            return bad(
                k("algorithm"),
                format!(
                    "unknown algorithm {other:?} (gcra, token_bucket, leaky_bucket, fixed_window, sliding_window)"
                ),
            );
        }
    };
    let per = r.per.map_or(Duration::from_secs(1), |d| d.0);
    let quota = Quota::new(r.rate, per).or_else(|e| bad(k("rate"), e.to_string()))?;
    let quota = match r.burst {
        Some(b) => quota.with_burst(b).or_else(|e| bad(k("burst"), e.to_string()))?,
        None => quota,
    };
    let extras = r.fail_mode.is_some() || r.lease.is_some() || r.lease_ttl.is_some();
    let global = if is_global(k("scope"), r.scope.as_deref(), extras, "fail_mode, lease and lease_ttl")? {
        if algorithm != RateAlgorithm::Gcra {
            return bad(k("algorithm"), "a global limit is GCRA (leave algorithm out)");
        }
        Some(GlobalScope {
            fail_mode: fail_mode(k("fail_mode"), r.fail_mode.as_deref())?,
            lease: r.lease.unwrap_or(1).max(1),
            lease_ttl: r.lease_ttl.map_or(Duration::from_millis(100), |d| d.0),
        })
    } else {
        None
    };
    Ok(RateConfig {
        key: rate_key,
        algorithm,
        quota,
        max_keys: positive(k("max_keys"), r.max_keys.unwrap_or(100_000))?,
        global,
        dry_run: r.dry_run,
    })
}

fn criticality(key: String, s: &str) -> Result<Criticality, Invalid> {
    s.parse().or_else(|_| {
        bad(key, format!("unknown criticality {s:?} (critical_plus, critical, sheddable_plus, sheddable)"))
    })
}

fn shed(key: &str, s: raw::Shed) -> Result<ShedConfig, Invalid> {
    Ok(ShedConfig {
        header: header_name(format!("{key}.header"), &s.header)?,
        default: match &s.default {
            Some(d) => criticality(format!("{key}.default"), d)?,
            None => Criticality::Critical,
        },
        dry_run: s.dry_run,
    })
}

fn bulkhead(key: &str, b: raw::Bulkhead) -> Result<BulkheadConfig, Invalid> {
    let capacity = positive(format!("{key}.capacity"), b.capacity)?;
    let mut partitions = Vec::new();
    for (i, p) in b.partitions.iter().enumerate() {
        let k = format!("{key}.partitions[{i}].value");
        partitions.push((
            HeaderValue::from_str(&p.value).or_else(|_| bad(k, "not a valid header value"))?,
            p.guaranteed,
        ));
    }
    if partitions.iter().map(|p| p.1).sum::<usize>() > capacity {
        return bad(
            format!("{key}.partitions"),
            format!("the guarantees add up to more than capacity ({capacity})"),
        );
    }
    Ok(BulkheadConfig {
        header: header_name(format!("{key}.header"), &b.header)?,
        capacity,
        partitions,
        dry_run: b.dry_run,
    })
}
