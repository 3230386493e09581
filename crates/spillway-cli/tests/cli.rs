//! The `spillway` binary: help, version, the demo, and clear errors on bad flags.

mod common;

use common::Child;
use std::process::Command;

fn spillway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spillway")).args(args).output().expect("run spillway")
}

#[test]
fn help_and_version() {
    let out = spillway(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("demo"), "{help}");
    let out = spillway(&["--version"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("spillway "));
}

#[test]
fn demo_prints_the_four_runs() {
    let out = spillway(&[
        "demo",
        "--in-process",
        "--seconds",
        "1",
        "--produce",
        "200",
        "--consume",
        "100",
        "--queue",
        "10",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for title in [
        "1. No backpressure",
        "2. Bounded queue of 10, reject",
        "3. Bounded queue of 10, drop",
        "4. Producer throttled",
    ] {
        assert!(text.contains(title), "missing {title:?} in:\n{text}");
    }
    assert!(text.contains("left in the queue when the producer stopped"));
}

#[test]
fn bad_flags_are_refused_with_a_reason() {
    let out = spillway(&["demo", "--seconds", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--seconds"), "{err}");
    let out = spillway(&["demo", "--queue", "lots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'lots'"));
}

#[test]
fn simulate_prints_every_controller() {
    let out = spillway(&["simulate", "--seconds", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for name in ["unprotected", "aimd", "vegas", "gradient2", "gradient (envoy-style)", "slo (p99 target)"] {
        assert!(text.contains(name), "missing {name:?} in:\n{text}");
    }
    assert!(text.contains("offered load 10x C") && text.contains("capacity halves"));
}

#[test]
fn load_against_a_backend_subprocess() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut backend = Child(
        Command::new(env!("CARGO_BIN_EXE_spillway"))
            .args(["backend", "--listen", "127.0.0.1:0", "--pool", "2", "--service-ms", "10"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the backend"),
    );
    let mut first = String::new();
    BufReader::new(backend.0.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let addr = first.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{first:?}")).to_string();

    let url = format!("http://{addr}/");
    let out = spillway(&[
        "load",
        "--url",
        &url,
        "--rate",
        "100",
        "--duration",
        "1",
        "--deadline-ms",
        "500",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("the report is JSON");
    assert_eq!(v["totals"]["offered"], 100);
    assert!(v["totals"]["ok"].as_u64().unwrap() >= 95, "{v}");
    assert_eq!(v["series"].as_array().unwrap().len(), 1);

    // The table, and the backend's counters over HTTP.
    let out = spillway(&[
        "load",
        "--url",
        &format!("http://{addr}/stats"),
        "--rate",
        "20",
        "--duration",
        "500ms",
        "--deadline-ms",
        "500",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("goodput") && text.contains("late (abandoned)"), "{text}");
}

#[test]
fn load_and_backend_refuse_bad_flags() {
    let out = spillway(&["load", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--url",
        "--rate",
        "--duration",
        "--deadline-ms",
        "--profile",
        "--connections",
        "--retry-mode",
        "--json",
    ] {
        assert!(help.contains(flag), "missing {flag} in:\n{help}");
    }
    let out = spillway(&[
        "load",
        "--url",
        "http://127.0.0.1:1/",
        "--rate",
        "10",
        "--duration",
        "1",
        "--deadline-ms",
        "100",
        "--profile",
        "wave",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown profile"));
    let out = spillway(&["backend", "--pool", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_kubernetes_sidecar_example_carries_a_valid_config_and_real_probes() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/kubernetes/sidecar.yaml"))
            .unwrap();
    // The ConfigMap's block scalar: the lines after `spillway.toml: |`, indented by four.
    let toml: String = manifest
        .lines()
        .skip_while(|l| l.trim() != "spillway.toml: |")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
        .collect();
    assert!(toml.contains("[admin]\nlisten = \"0.0.0.0:9901\""), "{toml}");
    let dir = common::tempdir("sidecar");
    std::fs::write(dir.join("spillway.toml"), &toml).unwrap();
    let out = spillway(&["check", "--config", dir.join("spillway.toml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The probes name the admin port, whose number is the admin listener's.
    assert!(manifest.contains("{ name: admin, containerPort: 9901 }"));
    for probe in [
        "startupProbe:\n            httpGet: { path: /livez, port: admin }",
        "livenessProbe:\n            httpGet: { path: /livez, port: admin }",
        "readinessProbe:\n            httpGet: { path: /readyz, port: admin }",
    ] {
        assert!(manifest.contains(probe), "{probe}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
