//! The config file as written: serde structs, unknown keys refused, values given units.
//! [`super::validate`] turns this into the typed [`super::Config`].

use serde::{Deserialize, Deserializer};
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Raw {
    #[serde(default)]
    pub(crate) admin: Option<Admin>,
    #[serde(default)]
    pub(crate) server: Server,
    #[serde(default)]
    pub(crate) listeners: Vec<Listener>,
    #[serde(default)]
    pub(crate) upstreams: Vec<Upstream>,
    #[serde(default)]
    pub(crate) routes: Vec<Route>,
    #[serde(default)]
    pub(crate) tcp: Vec<Tcp>,
    pub(crate) redis: Option<Redis>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Redis {
    pub(crate) url: Option<String>,
    pub(crate) cluster: Option<Vec<String>>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) username: Option<String>,
    pub(crate) password_env: Option<String>,
    pub(crate) password_file: Option<String>,
    pub(crate) open_duration: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tcp {
    pub(crate) name: String,
    pub(crate) listen: String,
    pub(crate) addrs: Vec<String>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) queue: Option<usize>,
    pub(crate) queue_timeout: Option<Dur>,
    pub(crate) buffer: Option<Size>,
    pub(crate) connect_timeout: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Admin {
    pub(crate) listen: Option<String>,
    /// `/readyz` fails while any route's in-flight reaches this fraction of its limit with a
    /// non-empty queue.
    pub(crate) unready_when_saturated: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Server {
    pub(crate) threads: Option<usize>,
    pub(crate) shutdown_grace: Option<Dur>,
    pub(crate) shutdown_delay: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
    pub(crate) name: String,
    pub(crate) listen: String,
    pub(crate) tls: Option<Tls>,
    pub(crate) header_read_timeout: Option<Dur>,
    pub(crate) idle_timeout: Option<Dur>,
    pub(crate) max_header_bytes: Option<Size>,
    pub(crate) max_headers: Option<usize>,
    pub(crate) max_body_bytes: Option<Size>,
    pub(crate) h2_max_concurrent_streams: Option<u32>,
    pub(crate) h2_max_pending_resets: Option<usize>,
    pub(crate) h2_stream_window: Option<Size>,
    pub(crate) h2_connection_window: Option<Size>,
    pub(crate) trusted_proxies: Option<Vec<String>>,
    pub(crate) forwarded_for: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Tls {
    pub(crate) cert: String,
    pub(crate) key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) addrs: Vec<String>,
    pub(crate) protocol: Option<String>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) connect_timeout: Option<Dur>,
    pub(crate) h2_stream_window: Option<Size>,
    pub(crate) h2_connection_window: Option<Size>,
    pub(crate) breaker: Option<Breaker>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Breaker {
    pub(crate) window: Option<u32>,
    pub(crate) window_time: Option<Dur>,
    pub(crate) minimum_calls: Option<u32>,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) slow_call: Option<Dur>,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) open_duration: Option<Dur>,
    pub(crate) half_open_calls: Option<u32>,
    #[serde(default)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Route {
    pub(crate) name: Option<String>,
    pub(crate) listener: String,
    pub(crate) upstream: String,
    pub(crate) host: Option<String>,
    pub(crate) path_prefix: Option<String>,
    pub(crate) method: Option<OneOrMany>,
    #[serde(default)]
    pub(crate) headers: std::collections::BTreeMap<String, String>,
    pub(crate) timeout: Option<Dur>,
    pub(crate) max_body_bytes: Option<Size>,
    pub(crate) concurrency: Option<Concurrency>,
    pub(crate) adaptive: Option<Adaptive>,
    #[serde(default)]
    pub(crate) rate: Vec<Rate>,
    pub(crate) shed: Option<Shed>,
    pub(crate) bulkhead: Option<Bulkhead>,
    pub(crate) websocket: Option<WebSocket>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WebSocket {
    pub(crate) policy: Option<String>,
    pub(crate) queue: Option<usize>,
    pub(crate) max_message: Option<Size>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) flow_control: Option<bool>,
    pub(crate) max_lag: Option<Dur>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Concurrency {
    pub(crate) max: usize,
    #[serde(default)]
    pub(crate) queue: usize,
    pub(crate) queue_timeout: Option<Dur>,
    pub(crate) order: Option<String>,
    pub(crate) scope: Option<String>,
    pub(crate) fail_mode: Option<String>,
    pub(crate) lease: Option<Dur>,
    #[serde(default)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Adaptive {
    pub(crate) algorithm: String,
    pub(crate) min: Option<usize>,
    pub(crate) max: Option<usize>,
    pub(crate) initial: Option<usize>,
    #[serde(default)]
    pub(crate) queue: usize,
    pub(crate) queue_timeout: Option<Dur>,
    pub(crate) order: Option<String>,
    /// The latency target of the `slo` algorithm.
    pub(crate) target: Option<Dur>,
    #[serde(default)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rate {
    pub(crate) key: Option<String>,
    pub(crate) algorithm: Option<String>,
    pub(crate) rate: u32,
    pub(crate) per: Option<Dur>,
    pub(crate) burst: Option<u32>,
    pub(crate) max_keys: Option<usize>,
    pub(crate) scope: Option<String>,
    pub(crate) fail_mode: Option<String>,
    pub(crate) lease: Option<u32>,
    pub(crate) lease_ttl: Option<Dur>,
    #[serde(default)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Shed {
    pub(crate) header: String,
    pub(crate) default: Option<String>,
    #[serde(default)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Bulkhead {
    pub(crate) header: String,
    pub(crate) capacity: usize,
    #[serde(default)]
    pub(crate) partitions: Vec<Partition>,
    #[serde(default)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Partition {
    pub(crate) value: String,
    pub(crate) guaranteed: usize,
}

/// A duration written with a unit: `"250ms"`, `"1.5s"`, `"2m"`, `"100us"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dur(pub(crate) Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(Dur).map_err(serde::de::Error::custom)
    }
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 =
        num.parse().map_err(|_| format!("invalid duration {s:?} (write e.g. \"250ms\" or \"2s\")"))?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("invalid duration {s:?}: the unit must be one of ns, us, ms, s, m, h")),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("duration {s:?} is out of range"))
}

/// A byte size: an integer, or a string with a unit (`"64KiB"`, `"16MiB"`, `"1GiB"`, `"512B"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Size(pub(crate) u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(Size(n)),
            Either::S(s) => parse_size(&s).map(Size).map_err(serde::de::Error::custom),
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?} (write e.g. 65536 or \"64KiB\")"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("invalid size {s:?}: the unit must be one of B, KiB, MiB, GiB")),
    };
    n.checked_mul(scale).ok_or_else(|| format!("size {s:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert!(parse_size("1TB").is_err());
    }
}
