#!/usr/bin/env bash
# Proxy overhead, side by side: an nginx backend (`return 200`), then HAProxy, an nginx proxy and
# Spillway in front of it, one worker each, pinned to the same core. `wrk -t1 -c50` against each
# in turn, alternating, ROUNDS rounds (default 3). Prints requests/s and CPU microseconds per
# request (utime + stime from /proc/PID/stat) per round and the medians, then the ratios to HAProxy.
#
#   scripts/bench-proxy.sh [ROUNDS] [SECONDS]
#
# Installs wrk, nginx and haproxy with apt-get when run as root and they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
SECS=${2:-5}

need=()
for tool in wrk nginx haproxy; do
  command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need+=("$tool")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light haproxy >/dev/null
  else
    echo "missing: ${need[*]} (install them, or run as root)" >&2
    exit 1
  fi
fi
export PATH="$PATH:/usr/sbin"

cargo build --release --locked -q -p spillway-cli
BIN=target/release/spillway
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BACK=$(free_port); P_HA=$(free_port); P_NGX=$(free_port); P_SW=$(free_port)
# The proxies share core 0; the backend and wrk share core 1 (a 2-core machine).
PROXY_CPU=0
LOAD_CPU=$(( $(nproc) > 1 ? 1 : 0 ))

mkdir -p "$WORK/backend" "$WORK/nginx"
cat > "$WORK/backend/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$BACK; location / { return 200 "ok"; } }
}
EOF
cat > "$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream app { server 127.0.0.1:$BACK; keepalive 128; }
  server {
    listen 127.0.0.1:$P_NGX;
    location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
  http-reuse always
frontend web
  bind 127.0.0.1:$P_HA
  default_backend app
backend app
  server app 127.0.0.1:$BACK maxconn 1000
EOF
cat > "$WORK/spillway.toml" <<EOF
[server]
threads = 1
[[listeners]]
name = "web"
listen = "127.0.0.1:$P_SW"
forwarded_for = false
[[upstreams]]
name = "app"
addrs = ["127.0.0.1:$BACK"]
[[routes]]
listener = "web"
path_prefix = "/"
upstream = "app"
[routes.concurrency]
max = 1000
queue = 100
queue_timeout = "200ms"
EOF

taskset -c "$LOAD_CPU" nginx -c "$WORK/backend/nginx.conf" -p "$WORK/backend" 2>/dev/null & PIDS+=($!)
taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -q & PIDS+=($!); HA_PID=$!
taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>/dev/null & PIDS+=($!); NGX_PID=$!
taskset -c "$PROXY_CPU" "$BIN" serve --config "$WORK/spillway.toml" >/dev/null 2>&1 & PIDS+=($!); SW_PID=$!
sleep 1

# CPU ticks of a process and its children (nginx's worker is a child of its master).
ticks() {
  local total=0 p
  for p in $1 $(pgrep -P "$1" || true); do
    # Fields 14 and 15 (utime, stime), after the parenthesised command name.
    total=$(( total + $(awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$p/stat") ))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

declare -A RPS CPU
run() { # name pid port
  local before after out rps reqs
  wrk -t1 -c50 -d1s "http://127.0.0.1:$3/" >/dev/null 2>&1 # warm-up
  before=$(ticks "$2")
  out=$(taskset -c "$LOAD_CPU" wrk -t1 -c50 -d"${SECS}s" "http://127.0.0.1:$3/")
  after=$(ticks "$2")
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  local us; us=$(awk -v t=$(( after - before )) -v hz="$HZ" -v n="$reqs" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }')
  if echo "$out" | grep -q "Non-2xx"; then echo "  $1: non-2xx answers: $(echo "$out" | grep Non-2xx)" >&2; fi
  printf "  %-9s %10s req/s %8s us CPU/req\n" "$1" "$rps" "$us"
  RPS[$1]+="$rps "; CPU[$1]+="$us "
}

for r in $(seq 1 "$ROUNDS"); do
  echo "round $r"
  run haproxy "$HA_PID" "$P_HA"
  run nginx "$NGX_PID" "$P_NGX"
  run spillway "$SW_PID" "$P_SW"
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
echo
echo "medians of $ROUNDS rounds (wrk -t1 -c50 -d${SECS}s, one worker each, proxy on CPU $PROXY_CPU)"
HA_R=$(echo "${RPS[haproxy]}" | median); HA_C=$(echo "${CPU[haproxy]}" | median)
for p in haproxy nginx spillway; do
  R=$(echo "${RPS[$p]}" | median); C=$(echo "${CPU[$p]}" | median)
  awk -v p="$p" -v r="$R" -v c="$C" -v hr="$HA_R" -v hc="$HA_C" \
    'BEGIN { printf "  %-9s %10.0f req/s (%.2fx HAProxy)  %6.2f us CPU/req (%.2fx HAProxy)\n", p, r, r/hr, c, c/hc }'
done
