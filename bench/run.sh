#!/usr/bin/env bash
# Every benchmark of issue 11 that a user can rerun, in one run, each figure as a ratio
# to a baseline measured in the same run on the same machine:
#
#   HTTP (oha, closed loop, CONNS connections, SECS seconds each), each path right after
#   a run of the bare axum server answering 204 (`adtally baseline-server`):
#     decision (new uid each time), impression beacon and click (each a distinct signed
#     decision; URLs minted by `adtally loadgen --print-urls`);
#   import: `cargo bench --bench import` (adtally's import against SQLite's own bulk
#     insert of the same rows);
#   reports: `cargo bench --bench reports` (dashboard queries, p50/p99, before and after
#     the day layer, on a generated store of REPORT_EVENTS events; REPORT_DIR keeps it);
#   memory per active (user, campaign) pair: `cargo bench --bench rules` (first line).
#
# Usage: bench/run.sh            (CI size: 200 000 events for the reports)
#        SECS=10 CONNS=32 REPORT_EVENTS=100000000 REPORT_DIR=/data/bench-100m bench/run.sh
# Needs oha on PATH (`cargo install oha`); PARTS="http import reports memory" picks parts,
# PATHS="decision impression click" the HTTP paths, BIN=/path/to/adtally another build
# (to compare two binaries in alternation). The HTTP table also shows the server's CPU
# time per request (user + system, from /proc, over the run): steadier than req/s on a
# shared machine.
set -euo pipefail
secs=${SECS:-10}
conns=${CONNS:-32}
parts=${PARTS:-http import reports memory}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="${BIN:-$root/target/release/adtally}"
cd "$root"
[[ -n "${BIN:-}" ]] || cargo build --release --quiet
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
summary=()
# A browser's agent: oha's own is a bot's to the traffic filters (no ad; invalid beacons).
UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
# Python helpers (heredocs, so the code can quote freely).
read -r -d '' OHA_SUMMARY <<'PY' || true
import json, sys
d = json.load(sys.stdin)
p = d["latencyPercentiles"]
codes = ",".join(f"{k}:{v}" for k, v in sorted(d["statusCodeDistribution"].items()))
print(f"{d['summary']['requestsPerSec']:.0f} {p['p50'] * 1000:.2f} {p['p99'] * 1000:.2f} {codes}")
PY
read -r -d '' IMPORT_SUMMARY <<'PY' || true
import json, sys
d = json.loads(sys.argv[1])
name = "import vs SQLite bulk insert"
print(f"{name:<40} {d['ratio']:>8}   ({d['adtally_import_lines_per_second']:.0f} vs {d['sqlite_bulk_insert_lines_per_second']:.0f} lines/s)")
PY
read -r -d '' REPORTS_SUMMARY <<'PY' || true
import json, sys
rows = {}
for line in sys.stdin:
    if line.startswith("{"):
        d = json.loads(line)
        rows.setdefault(d["query"], {})[d["layout"]] = d
for q, r in rows.items():
    b, a = r["quarter_hours"], r["day_layer"]
    name = "report: " + q
    print(f"{name:<40} {a['p99_ms']:>8} ms p99   (p50 {a['p50_ms']} ms; before {b['p50_ms']}/{b['p99_ms']} ms, "
          f"p99 {b['p99_ms'] / max(a['p99_ms'], 1e-9):.1f}x lower) on {a['events']} events")
PY
read -r -d '' MEMORY_SUMMARY <<'PY' || true
import json, sys
d = json.loads(sys.stdin.read())
name = "memory per (user, campaign) pair"
print(f"{name:<40} {d.get('resident_bytes_per_pair')} bytes   ({d.get('pairs')} pairs)")
PY
echo "adtally bench/run.sh — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores, $(uname -sr), commit $(git rev-parse --short HEAD)"

if [[ " $parts " == *" http "* ]]; then
  command -v oha >/dev/null || { echo "oha not found: cargo install oha" >&2; exit 1; }
  export ADTALLY_ADMIN_KEY=bench-admin ADTALLY_SECRET=bench-secret ADTALLY_LOG=warn
  "$bin" baseline-server --listen 127.0.0.1:18090 >/dev/null &
  pids+=($!)
  "$bin" serve --listen 127.0.0.1:18080 --data "$work/data" ${SERVE_FLAGS:-} >/dev/null &
  pids+=($!)
  server=$!
  # The server's CPU time so far (user + system), in clock ticks.
  cpu_ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
  for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/healthz >/dev/null && break; sleep 0.1; done
  api() { curl -sf -X POST -H "Authorization: Bearer bench-admin" -H 'content-type: application/json' "http://127.0.0.1:18080$1" -d "$2"; }
  json_id() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"id\"])"; }
  api /v1/placements '{"id":"sidebar-main","name":"Sidebar","format":"sidebar","floor_cpm_micros":500000}' >/dev/null
  adv=$(api /v1/advertisers '{"name":"Bench","email":"b@bench.example"}' | json_id)
  api "/v1/advertisers/$adv/credits" '{"amount_micros":1000000000000000,"kind":"topup"}' >/dev/null
  for i in $(seq 20); do
    c=$(api /v1/campaigns "{\"advertiser_id\":$adv,\"name\":\"c$i\",\"cpm_bid_micros\":$((1000000 + i * 10000)),\"total_budget_micros\":1000000000000000,\"pacing\":\"asap\"}" | json_id)
    ad=$(api "/v1/campaigns/$c/ads" '{"format":"sidebar","headline":"Bench","target_url":"https://bench.example"}' | json_id)
    api "/v1/campaigns/$c/submit" '{}' >/dev/null
    api "/v1/ads/$ad/review" '{"decision":"approve"}' >/dev/null
  done
  # Enough distinct beacons that oha rarely picks one twice (a repeat is still judged
  # and stored, as a duplicate).
  urls=$((secs * 200000))
  "$bin" loadgen --target 127.0.0.1:18080 --mode impressions --print-urls "$urls" > "$work/impressions.txt"
  "$bin" loadgen --target 127.0.0.1:18080 --mode clicks --print-urls "$urls" > "$work/clicks.txt"
  # oha's JSON → "requests/s p50_ms p99_ms status-codes"
  oha_run() {
    oha -z "${secs}s" -c "$conns" --no-tui --redirect 0 --output-format json -H "User-Agent: $UA" "$@" | python3 -c "$OHA_SUMMARY"
  }
  printf '\n%-12s %12s %12s %7s %10s %10s %11s  %s\n' path bare_rps adtally_rps ratio p50_ms p99_ms cpu_us/req status
  for path in ${PATHS:-decision impression click}; do
    base=$(oha_run http://127.0.0.1:18090/t/i/x)
    before=$(cpu_ticks)
    case $path in
      decision) real=$(oha_run --rand-regex-url 'http://localhost:18080/v1/decision[?]placement=sidebar-main&uid=u[0-9]{9}') ;;
      impression) real=$(oha_run --urls-from-file "$work/impressions.txt") ;;
      click) real=$(oha_run --urls-from-file "$work/clicks.txt") ;;
    esac
    # The writer commits what was journaled moments after the last answer.
    sleep 1
    ticks=$(( $(cpu_ticks) - before ))
    read -r b_rps _ _ _ <<<"$base"
    read -r a_rps a_p50 a_p99 a_codes <<<"$real"
    ratio=$(python3 -c "print(f'{$a_rps / $b_rps:.2f}')")
    cpu=$(python3 -c "print(f'{$ticks / $(getconf CLK_TCK) * 1e6 / ($a_rps * $secs):.1f}')")
    printf '%-12s %12s %12s %7s %10s %10s %11s  %s\n' "$path" "$b_rps" "$a_rps" "$ratio" "$a_p50" "$a_p99" "$cpu" "$a_codes"
    summary+=("$(printf '%-40s %8s   (p99 %s ms; bare %s req/s)' "$path vs bare server ($conns conns)" "$ratio" "$a_p99" "$b_rps")")
  done
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  pids=()
fi

if [[ " $parts " == *" import "* ]]; then
  echo
  line=$(cargo bench --quiet --bench import 2>/dev/null | grep '"bench":"import"')
  echo "$line"
  summary+=("$(python3 -c "$IMPORT_SUMMARY" "$line")")
fi

if [[ " $parts " == *" reports "* ]]; then
  echo
  out=$(env ADTALLY_BENCH_EVENTS="${REPORT_EVENTS:-200000}" ${REPORT_DIR:+ADTALLY_BENCH_DIR="$REPORT_DIR"} cargo bench --quiet --bench reports 2>&1)
  echo "$out" | grep -v '^{' || true
  while read -r l; do summary+=("$l"); done < <(echo "$out" | python3 -c "$REPORTS_SUMMARY")
fi

if [[ " $parts " == *" memory "* ]]; then
  echo
  line=$(cargo bench --quiet --bench rules 2>/dev/null | grep frequency_cap_state)
  echo "$line"
  summary+=("$(echo "$line" | python3 -c "$MEMORY_SUMMARY")")
fi

echo
echo "== every ratio, this run =="
for s in "${summary[@]}"; do echo "$s"; done
