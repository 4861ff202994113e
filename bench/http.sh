#!/usr/bin/env bash
# HTTP benchmark of the tracking paths, as ratios to a bare axum server answering 204
# measured in the same run on the same machine. Prints one JSON line per measurement
# and a summary table. Usage: bench/http.sh [seconds] [connections]
# SERVE_FLAGS=--skip-traffic-filters measures the paths without the IVT checks.
# CAMPAIGNS=1000 CAP='{"impressions":3,"per_hours":24}' WARMUP=20 MODES=decisions
# measures decisions among 1000 capped campaigns after 20 s of journeys from 100 000
# users have filled the frequency-cap state.
set -euo pipefail
secs=${1:-10}
conns=${2:-32}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/adtally"
[ -x "$bin" ] || (cd "$root" && cargo build --release)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

export ADTALLY_ADMIN_KEY=bench-admin ADTALLY_SECRET=bench-secret ADTALLY_LOG=warn
"$bin" baseline-server --listen 127.0.0.1:18090 >/dev/null &
pids+=($!)
"$bin" serve --listen 127.0.0.1:18080 --data "$work/data" ${SERVE_FLAGS:-} >/dev/null &
pids+=($!)
for _ in $(seq 50); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done

api() { curl -sf -X POST -H "Authorization: Bearer bench-admin" -H 'content-type: application/json' "http://127.0.0.1:18080$1" -d "$2"; }
json_id() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"id\"])"; }
api /v1/placements '{"id":"sidebar-main","name":"Sidebar","format":"sidebar","floor_cpm_micros":500000}' >/dev/null
adv=$(api /v1/advertisers '{"name":"Bench","email":"b@bench.example"}' | json_id)
api "/v1/advertisers/$adv/credits" '{"amount_micros":1000000000000000,"kind":"topup"}' >/dev/null
for i in $(seq "${CAMPAIGNS:-20}"); do
  c=$(api /v1/campaigns "{\"advertiser_id\":$adv,\"name\":\"c$i\",\"cpm_bid_micros\":$((1000000 + i * 10000)),\"total_budget_micros\":1000000000000000,\"pacing\":\"asap\"${CAP:+,\"frequency_cap\":$CAP}}" | json_id)
  ad=$(api "/v1/campaigns/$c/ads" '{"format":"sidebar","headline":"Bench","target_url":"https://bench.example"}' | json_id)
  api "/v1/campaigns/$c/submit" '{}' >/dev/null
  api "/v1/ads/$ad/review" '{"decision":"approve"}' >/dev/null
done

run() { "$bin" loadgen --target "$1" --mode "$2" --connections "$conns" --duration "${secs}s"; }
if [ -n "${WARMUP:-}" ]; then
  "$bin" loadgen --target 127.0.0.1:18080 --mode journeys --connections "$conns" --duration "${WARMUP}s" --users 100000 >/dev/null
  curl -s http://127.0.0.1:18080/metrics | grep '^adtally_frequency_cap_pairs'
fi
results=()
for mode in ${MODES:-impressions decisions journeys}; do
  base=$(run 127.0.0.1:18090 bare)
  real=$(run 127.0.0.1:18080 "$mode")
  echo "$base"
  echo "$real"
  results+=("$mode $(echo "$base" | sed 's/.*"requests_per_second":\([0-9.]*\).*/\1/') $(echo "$real" | sed 's/.*"requests_per_second":\([0-9.]*\).*/\1/') $(echo "$real" | sed 's/.*"p99_us":\([0-9]*\).*/\1/')")
done
echo
printf '%-12s %12s %12s %8s %10s\n' path baseline_rps adtally_rps ratio p99_ms
for r in "${results[@]}"; do
  set -- $r
  python3 -c "import sys; m,b,a,p=sys.argv[1:]; print(f'{m:<12} {float(b):>12.0f} {float(a):>12.0f} {float(a)/float(b):>8.2f} {int(p)/1000:>10.1f}')" "$1" "$2" "$3" "$4"
done
