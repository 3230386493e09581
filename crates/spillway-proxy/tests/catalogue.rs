//! Every metric that the Grafana dashboard's queries, the alert rules and the README's metrics
//! catalogue name is one a running proxy exports, and every exported one is in the catalogue.

mod common;

use common::{get, proxy, stop, upstream};

/// A proxy with every kind of metric: a queued concurrency limit, a keyed rate limit (with a
/// dry-run one and a global one on Redis), a breaker, a WebSocket route and a TCP listener.
const CONFIG: &str = r#"
[admin]
listen = "127.0.0.1:0"
[redis]
url = "{REDIS}"
[[listeners]]
name = "web"
listen = "127.0.0.1:0"
[[upstreams]]
name = "app"
addrs = ["{UP}"]
[upstreams.breaker]
failure_rate = 0.5
[[routes]]
name = "api"
listener = "web"
upstream = "app"
[routes.concurrency]
max = 4
queue = 8
[[routes.rate]]
key = "ip"
rate = 100
max_keys = 1000
[[routes.rate]]
key = "global"
rate = 1
per = "1m"
dry_run = true
[[routes.rate]]
key = "ip"
rate = 1000
scope = "global"
[[tcp]]
name = "raw"
listen = "127.0.0.1:0"
addrs = ["{UP}"]
"#;

/// The `spillway_…` names in `text`.
fn names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("spillway_") {
        let tail = &rest[at..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The expressions of every panel of the Grafana dashboard.
fn grafana_exprs() -> String {
    let dash: serde_json::Value = serde_json::from_str(&read("deploy/grafana/spillway.json")).unwrap();
    assert!(dash["__inputs"][0]["name"] == "DS_PROMETHEUS", "importable: a Prometheus input");
    let mut exprs = String::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs += target["expr"].as_str().unwrap();
            exprs.push('\n');
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboards_alerts_and_the_catalogue_name_exported_metrics() {
    let (up, _) = upstream().await;
    let redis = test_support::redis::Redis::start();
    let proxy = proxy(&CONFIG.replace("{REDIS}", &redis.url()), up);
    get(proxy.listener_addr("web").unwrap(), "/").await;
    let (_, _, body) = get(proxy.admin_addr().unwrap(), "/metrics").await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    // The names of the series exported (a histogram `x` exports `x_bucket`, `x_sum`, `x_count`).
    let exported: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap())
        .collect();
    let is_exported = |n: &str| exported.iter().any(|e| *e == n || *e == format!("{n}_bucket"));

    let catalogue: String =
        read("README.md").lines().filter(|l| l.starts_with("| `spillway_")).collect::<Vec<_>>().join("\n");
    let sources = [
        ("deploy/grafana/spillway.json", grafana_exprs()),
        ("deploy/prometheus/alerts.yml", read("deploy/prometheus/alerts.yml")),
        ("the README's catalogue", catalogue.clone()),
    ];
    let mut missing = Vec::new();
    for (source, text) in &sources {
        for name in names(text) {
            if !is_exported(&name) {
                missing.push(format!("{source}: {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "named but not exported: {missing:#?}");

    // And the other way: whatever is exported is in the catalogue (histograms by their name).
    let listed = names(&catalogue);
    let unlisted: Vec<&&str> = exported
        .iter()
        .filter(|e| {
            let base = e.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            !listed.iter().any(|l| l == *e || l == base)
        })
        .collect();
    assert!(unlisted.is_empty(), "exported but not in the README's catalogue: {unlisted:?}");
    stop(proxy).await;
}
