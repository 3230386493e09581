#!/usr/bin/env bash
# The browser tests, in a real (headless) Chromium:
#
#   scripts/browser-test.sh report REPORT.html OUT.png
#       opens a lab report and checks it: every chart drawn, the summary table filled in,
#       nothing fetched from the network; saves a full-page screenshot.
#   scripts/browser-test.sh dashboard OUT.png
#       starts `spillway backend`, `spillway serve` in front of it and `spillway load` at twice
#       the backend's capacity, opens the admin listener's /dashboard and checks that its charts
#       update with requests in flight, latency and rejections; saves a screenshot.
#
# Installs what is missing: Debian's chromium (apt-get, when run as root) and playwright-core
# (npm, into tests/browser/node_modules). Set CHROMIUM to use another Chromium binary, SPILLWAY
# to use another spillway binary (default: target/release/spillway, built if missing).
set -euo pipefail

usage() {
  echo "usage: $0 report REPORT.html OUT.png | $0 dashboard OUT.png" >&2
  exit 2
}
mode=${1:-}
case "$mode" in
  report) [ "$#" -eq 3 ] || usage; report=$(realpath "$2"); out=$(realpath -m "$3") ;;
  dashboard) [ "$#" -eq 2 ] || usage; out=$(realpath -m "$2") ;;
  *) usage ;;
esac
cd "$(dirname "$0")/.."

chromium_bin=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium_bin" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing chromium (apt-get)"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    echo "chromium is required at $chromium_bin (apt-get install chromium, or set CHROMIUM)" >&2
    exit 1
  fi
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "node and npm are required (apt-get install nodejs npm)" >&2
  exit 1
fi
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "==> npm install (tests/browser)"
  (cd tests/browser && npm install --no-audit --no-fund --no-package-lock)
fi
mkdir -p "$(dirname "$out")"
export CHROMIUM="$chromium_bin"

if [ "$mode" = report ]; then
  exec node tests/browser/report.mjs "$report" "$out"
fi

# The dashboard: a backend of 4 workers × 20 ms (200 req/s), the proxy with a concurrency limit
# of 8 and a queue of 16 in front, and 400 req/s offered for 20 s.
spillway=${SPILLWAY:-target/release/spillway}
[ -x "$spillway" ] || cargo build --release --locked -q -p spillway-cli
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# The first line a process prints, once it is there.
first_lines() {
  for _ in $(seq 100); do
    [ "$(wc -l <"$1")" -ge "$2" ] && return 0
    sleep 0.1
  done
  echo "no output from $1" >&2
  exit 1
}
"$spillway" backend --listen 127.0.0.1:0 --pool 4 --service-ms 20 >"$work/backend.out" &
pids+=($!)
first_lines "$work/backend.out" 1
backend=$(sed -n 's/^listening on //p' "$work/backend.out")
cat >"$work/spillway.toml" <<TOML
[admin]
listen = "127.0.0.1:0"
[server]
threads = 1
[[listeners]]
name = "web"
listen = "127.0.0.1:0"
[[upstreams]]
name = "backend"
addrs = ["$backend"]
[[routes]]
name = "api"
listener = "web"
upstream = "backend"
[routes.concurrency]
max = 8
queue = 16
queue_timeout = "50ms"
TOML
"$spillway" serve --config "$work/spillway.toml" >"$work/serve.out" 2>"$work/serve.err" &
pids+=($!)
first_lines "$work/serve.out" 2
web=$(sed -n '1s|.*http://||p' "$work/serve.out")
admin=$(sed -n '2s|.*http://||p' "$work/serve.out")
"$spillway" load --url "http://$web/" --rate 400 --duration 20s --deadline-ms 1000 >"$work/load.out" &
pids+=($!)
node tests/browser/dashboard.mjs "http://$admin/dashboard" "$out"
