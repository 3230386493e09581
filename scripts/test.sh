#!/usr/bin/env bash
# The one test command: formatting, lints, every test and doctest in the workspace, the loom
# model checks, and a quick run of the comparison benchmarks (printed, not asserted: speed is a
# benchmark's job). Installs what it needs that is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s (%s)\n' "$*" "$(date +%T)"; }

# No debug line tables in this run's release builds (the profile keeps them for profiling):
# less to compile and link, and every step below shares the one build.
export CARGO_PROFILE_RELEASE_DEBUG=false

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 1
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  if command -v rustup >/dev/null 2>&1; then rustup component add rustfmt clippy; fi
fi

# The message-queue tests (crates/spillway-queue) start real brokers of their own, the
# WebSocket tests drive Python's `websockets` client too, the shared-limit tests start Redis
# servers (crates/spillway-redis), and the alert rules are checked with promtool (Debian package
# prometheus). Debian packages them: install what is
# missing, once, when we can.
missing=()
# (Debian's package serves /usr/bin/python3, which the test prefers over another python3.)
/usr/bin/python3 -c 'import websockets' >/dev/null 2>&1 || python3 -c 'import websockets' >/dev/null 2>&1 ||
  missing+=(python3-websockets)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]] || missing+=(nats-server)
command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]] || missing+=(rabbitmq-server)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    step "apt-get install ${missing[*]} (brokers for the spillway-queue tests, a WebSocket client)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "warning: ${missing[*]} not installed and not root: the tests that need them will fail" >&2
  fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "alert rules: promtool check and unit tests"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts_test.yml

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests and doctests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --release --no-fail-fast
  cargo test --workspace --locked --release --doc
else
  cargo test --workspace --locked --release --no-fail-fast
fi

step "loom model checks"
loom_tests=()
for f in crates/spillway/tests/loom*.rs; do loom_tests+=(--test "$(basename "$f" .rs)"); done
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
  cargo test --locked --release -p spillway "${loom_tests[@]}"

step "the lab's report in headless Chromium"
cargo run --locked --release -q -- lab --scenario quick --seconds 3 --out target/lab-quick
scripts/browser-test.sh report target/lab-quick/report.html target/lab-quick/report.png

step "soak: 30 s of key and WebSocket churn through the proxy; memory and descriptors must stay flat"
cargo run --locked --release -q -- lab --scenario soak --seconds 30

step "the live dashboard in headless Chromium, under load"
scripts/browser-test.sh dashboard target/dashboard.png

step "comparison benchmarks (quick run, informational)"
cargo run --locked --release -p spillway-benches -- --reps 3

echo
echo "all tests passed"
