//! The live routing table: built from a [`Config`], swapped whole on reload, reusing the
//! limiter state of policies and upstreams that did not change.

use crate::config::{Config, ListenerConfig, RouteConfig};
use crate::metrics::{Metrics, RouteMetrics};
use crate::policy::Policy;
use crate::upstream::Upstream;
use http::request::Parts;
use spillway_tower::http::ClientIp;
use std::sync::Arc;

/// One config's worth of routes, upstreams and policies.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) listeners: Vec<Listener>,
    pub(crate) upstreams: Vec<Arc<Upstream>>,
    pub(crate) routes: Vec<Route>,
}

#[derive(Debug)]
pub(crate) struct Listener {
    pub(crate) config: ListenerConfig,
    pub(crate) client_ip: ClientIp,
    /// Indices into `State::routes`, in match order.
    routes: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) config: RouteConfig,
    pub(crate) policy: Arc<Policy>,
    pub(crate) upstream: Arc<Upstream>,
    pub(crate) metrics: RouteMetrics,
}

impl State {
    /// Builds the state for `config`, taking over `previous`'s policies and upstreams where
    /// their config is unchanged (same route or upstream name, equal settings).
    pub(crate) fn build(
        config: Config,
        previous: Option<&State>,
        metrics: &Metrics,
        workers: usize,
        redis: Option<&spillway_redis::Client>,
    ) -> Self {
        let upstreams: Vec<Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| {
                previous
                    .and_then(|p| p.upstreams.iter().find(|o| o.config == *u))
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Upstream::new(u.clone(), workers)))
            })
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let policy = previous
                    .and_then(|p| {
                        p.routes.iter().find(|o| o.config.name == r.name && o.policy.config == r.policy)
                    })
                    .map_or_else(|| Arc::new(Policy::new(&r.policy, &r.name, redis)), |o| o.policy.clone());
                Route {
                    config: r.clone(),
                    policy,
                    upstream: upstreams[r.upstream].clone(),
                    metrics: metrics.route(&r.name),
                }
            })
            .collect();
        if let Some(p) = previous {
            for gone in p.routes.iter().filter(|o| !config.routes.iter().any(|r| r.name == o.config.name)) {
                metrics.remove_route(&gone.config.name);
            }
        }
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(i, l)| Listener {
                config: l.clone(),
                client_ip: ClientIp::trusting(l.trusted_proxies.iter().copied()),
                routes: config
                    .routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.listener == i)
                    .map(|(j, _)| j)
                    .collect(),
            })
            .collect();
        Self { config, listeners, upstreams, routes }
    }

    /// The first route of listener `listener` that matches the request.
    pub(crate) fn route(&self, listener: usize, parts: &Parts) -> Option<&Route> {
        // Looked up only for a route that names a host.
        let host = || {
            parts
                .uri
                .host()
                .or_else(|| parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
                .map(strip_port)
        };
        self.listeners[listener].routes.iter().map(|&i| &self.routes[i]).find(|r| {
            let c = &r.config;
            c.host.as_deref().is_none_or(|want| host().is_some_and(|h| h.eq_ignore_ascii_case(want)))
                && parts.uri.path().starts_with(c.path_prefix.as_str())
                && (c.methods.is_empty() || c.methods.contains(&parts.method))
                && c.headers.iter().all(|(name, value)| parts.headers.get(name) == Some(value))
        })
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(h, _)| &h[1..]);
    }
    host.rsplit_once(':')
        .map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_host_path_method_and_header() {
        let config = Config::parse(
            r#"
            [[listeners]]
            name = "web"
            listen = "127.0.0.1:0"
            [[upstreams]]
            name = "app"
            addrs = ["127.0.0.1:9"]
            [[routes]]
            name = "api-post"
            listener = "web"
            upstream = "app"
            host = "API.example.com"
            path_prefix = "/api"
            method = ["POST"]
            headers = { "x-tenant" = "gold" }
            [[routes]]
            name = "rest"
            listener = "web"
            upstream = "app"
            "#,
            "t.toml",
        )
        .unwrap();
        let metrics = Metrics::new();
        let state = State::build(config, None, &metrics, 1, None);
        let name =
            |req: http::Request<()>| state.route(0, &req.into_parts().0).map(|r| r.config.name.clone());
        let req = || {
            http::Request::post("/api/x").header("host", "api.example.com:8080").header("x-tenant", "gold")
        };
        assert_eq!(name(req().body(()).unwrap()).as_deref(), Some("api-post"));
        assert_eq!(name(req().method("GET").body(()).unwrap()).as_deref(), Some("rest"));
        assert_eq!(name(req().header("x-tenant", "tin").body(()).unwrap()).as_deref(), Some("api-post"));
        let other_host =
            http::Request::post("/api/x").header("host", "example.com").header("x-tenant", "gold");
        assert_eq!(name(other_host.body(()).unwrap()).as_deref(), Some("rest"));
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
