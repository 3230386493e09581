#!/usr/bin/env bash
# Measures how fast `spillway load` can generate: the backend with zero service time on one CPU,
# the generator (one thread) pinned to another, a few runs at each rate. Prints, per run, the
# rate offered, what was sent and answered ok, what the client had to drop (its own limit), the
# p99, and the generator's CPU time. A rate is sustained when nothing is dropped, everything sent
# is ok, and the generator's CPU stays under its one core.
#
#   scripts/load-ceiling.sh [rates...]   (default: 20000 25000; needs 2 CPUs and taskset)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -q -p spillway-cli
bin=target/release/spillway
rates=("${@:-20000 25000}")
[ $# -eq 0 ] && rates=(20000 25000)
out=$(mktemp)
taskset -c 1 "$bin" backend --listen 127.0.0.1:0 --pool 64 --service-ms 0 --threads 1 >"$out" &
backend=$!
trap 'kill "$backend" 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 50); do [ -s "$out" ] && break; sleep 0.1; done
addr=$(head -1 "$out" | awk '{print $3}')
echo "backend on $addr (CPU 1); generator on CPU 0, 1 thread, ${CONNECTIONS:-256} connections, 5 s runs"
for rate in "${rates[@]}"; do
  for run in 1 2 3; do
    json=$(mktemp)
    cpu=$( { /usr/bin/time -f "%U %S" taskset -c 0 "$bin" load --url "http://$addr/" --rate "$rate" \
      --duration 5 --deadline-ms 1000 --connections "${CONNECTIONS:-256}" --json >"$json"; } 2>&1 | tail -1)
    python3 - "$json" "$rate" "$run" "$cpu" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); t = r["totals"]; u, s = map(float, sys.argv[4].split())
print(f"rate {sys.argv[2]:>6} run {sys.argv[3]}: sent {t['sent']:>7} ok {t['ok']:>7} dropped {t['dropped_by_client']:>6} "
      f"goodput {r['goodput_per_s']:>8.0f}/s p99 {r['ok_latency']['p99_ms']:>5.1f} ms "
      f"max lag {r['max_send_lag_ms']:>5.1f} ms cpu {u + s:.2f} s / {r['duration_s']:.0f} s "
      f"({(u + s) / t['sent'] * 1e6:.1f} us/request)")
PY
    rm -f "$json"
  done
done
