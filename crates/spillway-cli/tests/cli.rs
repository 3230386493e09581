//! The `spillway` binary: help, version, the demo, and clear errors on bad flags.

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
    let out = spillway(&["demo", "--seconds", "1", "--produce", "200", "--consume", "100", "--queue", "10"]);
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
