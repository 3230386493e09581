//! `spillway lab` and `spillway demo` end to end: real backend and proxy processes, real load.

mod common;

use common::tempdir;
use std::process::Command;

#[test]
fn lab_quick_shows_collapse_without_and_goodput_with_backpressure() {
    let out = tempdir("lab");
    let run = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["lab", "--scenario", "quick", "--seconds", "4", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.contains("unprotected") && table.contains("gradient2"), "{table}");
    assert!(out.join("report.html").exists());
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let capacity = results["capacity_per_s"].as_f64().unwrap();
    let pool = results["pool"].as_u64().unwrap();
    let run = |name: &str| {
        results["runs"].as_array().unwrap().iter().find(|r| r["contestant"] == name).unwrap().clone()
    };
    let goodput = |r: &serde_json::Value| r["load"]["goodput_per_s"].as_f64().unwrap() / capacity;

    // Without backpressure the backend's queue grows and most answers come too late.
    let unprotected = run("unprotected");
    assert!(goodput(&unprotected) < 0.6, "unprotected goodput {}", goodput(&unprotected));
    let max_waiting = unprotected["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["backend_waiting"].as_u64().unwrap())
        .max();
    assert!(max_waiting.unwrap() > 10 * pool, "the unprotected queue stayed at {max_waiting:?}");

    // With Spillway: goodput near capacity, fast refusals that all say when to retry, and the
    // backend's own queue stays short. (The full lab holds the floors: 95 % and p99 150 ms for
    // the static limit; a 4 s smoke run on a shared machine is held to a looser bar.)
    for name in ["static", "gradient2"] {
        let r = run(name);
        let t = &r["load"]["totals"];
        let rejected = ["rejected_429", "rejected_503", "rejected_504", "rejected_other"]
            .iter()
            .map(|k| t[k].as_u64().unwrap())
            .sum::<u64>();
        assert!(goodput(&r) >= 0.85, "{name} goodput {}", goodput(&r));
        assert!(
            r["load"]["ok_latency"]["p99_ms"].as_f64().unwrap() <= 300.0,
            "{name}: {}",
            r["load"]["ok_latency"]
        );
        assert!(rejected > 0, "{name} refused nothing at 4x");
        assert_eq!(
            t["with_retry_after"].as_u64().unwrap(),
            rejected,
            "{name}: every refusal carries Retry-After"
        );
        assert!(
            r["load"]["rejection_latency"]["p99_ms"].as_f64().unwrap() <= 20.0,
            "{name}: {}",
            r["load"]["rejection_latency"]
        );
        let waiting = r["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["backend_waiting"].as_u64().unwrap())
            .max()
            .unwrap();
        assert!(waiting <= 2 * pool, "{name}: the backend queue reached {waiting}");
    }
    let _ = std::fs::remove_dir_all(out);
}

#[test]
fn lab_demo_prints_without_and_with() {
    let out = tempdir("demo");
    let run = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["demo", "--seconds", "3", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("without Spillway") && text.contains("with Spillway"), "{text}");
    assert!(text.contains("report:"), "{text}");
    assert!(out.join("results.json").exists() && out.join("report.html").exists());
    let _ = std::fs::remove_dir_all(out);
}
