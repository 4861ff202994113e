#!/usr/bin/env bash
# Impression beacons on PostgreSQL (issue 13), as ratios to the embedded store in the
# same run: one node on SQLite, one node on PostgreSQL, three nodes on one PostgreSQL
# (the URLs spread round-robin over the three). For each, oha sends signed impression
# beacons of distinct decisions for SECS seconds on CONNS connections (answered from
# the journal), then the script waits until every acknowledged beacon is committed;
# "committed/s" is the events stored divided by the time from the first beacon to the
# last commit — what the store sustains, which the journal can only buffer.
#
# PostgreSQL: PG_URL (an empty database), or a throwaway cluster from the installed
# server binaries (fsync on, synchronous_commit off: like SQLite's WAL with
# synchronous=NORMAL, a commit survives a crash of the server process, not power loss).
#
# Usage: bench/cluster.sh            SECS=10 CONNS=32 bench/cluster.sh
set -euo pipefail
secs=${SECS:-10}
conns=${CONNS:-32}
root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/target/release/adtally"
cd "$root"
cargo build --release --quiet
command -v oha >/dev/null || { echo "oha not found: cargo install oha" >&2; exit 1; }
work=$(mktemp -d)
pids=()
pg_stop=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ ${#pg_stop[@]} -gt 0 ]; then "${pg_stop[@]}" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
export ADTALLY_ADMIN_KEY=bench-admin ADTALLY_SECRET=bench-secret ADTALLY_LOG=warn

if [ -z "${PG_URL:-}" ]; then
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    id adtally-ci >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin adtally-ci
    chown adtally-ci "$work"
    as_pg=(runuser -u adtally-ci --)
  fi
  "${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U adtally --auth=trust >/dev/null
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -w \
    -o "-p 55490 -k $work -c listen_addresses=127.0.0.1 -c synchronous_commit=off -c max_connections=200" start >/dev/null
  pg_stop=("${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop)
  PG_URL=postgres://adtally@127.0.0.1:55490/postgres
fi
start() { # name port [flags...]
  local name=$1 port=$2; shift 2
  "$bin" serve --listen "127.0.0.1:$port" --data "$work/$name" "$@" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && return; sleep 0.1; done
  echo "$name did not start" >&2; exit 1
}
api() { curl -sf -X POST -H "Authorization: Bearer bench-admin" -H 'content-type: application/json' "http://127.0.0.1:$1$2" -d "$3"; }
json_id() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"id\"])"; }
setup() { # port
  api "$1" /v1/placements '{"id":"sidebar-main","name":"Sidebar","format":"sidebar","floor_cpm_micros":500000}' >/dev/null
  local adv c ad
  adv=$(api "$1" /v1/advertisers '{"name":"Bench","email":"b@bench.example"}' | json_id)
  api "$1" "/v1/advertisers/$adv/credits" '{"amount_micros":1000000000000000,"kind":"topup"}' >/dev/null
  for i in $(seq 5); do
    c=$(api "$1" /v1/campaigns "{\"advertiser_id\":$adv,\"name\":\"c$i\",\"cpm_bid_micros\":$((1000000 + i * 10000)),\"total_budget_micros\":1000000000000000,\"pacing\":\"asap\"}" | json_id)
    ad=$(api "$1" "/v1/campaigns/$c/ads" '{"format":"sidebar","headline":"Bench","target_url":"https://bench.example"}' | json_id)
    api "$1" "/v1/campaigns/$c/submit" '{}' >/dev/null
    api "$1" "/v1/ads/$ad/review" '{"decision":"approve"}' >/dev/null
  done
}
# Events committed so far, straight from the database.
stored() { # port
  if [ "$1" = 18180 ]; then
    python3 -c "import sqlite3; print(sqlite3.connect('file:$work/embedded/adtally.db?mode=ro', uri=True).execute('SELECT COUNT(*) FROM events').fetchone()[0])"
  else
    psql -Atc "SELECT COUNT(*) FROM events" "$PG_URL"
  fi
}
run() { # label urls-file ports...
  local label=$1 urls=$2; shift 2
  local before t0 out rps p99 after t1
  before=$(stored "$1")
  t0=$(date +%s.%N)
  out=$(oha -z "${secs}s" -c "$conns" --no-tui --output-format json -H "User-Agent: $UA" --urls-from-file "$urls" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.0f %.2f" % (d["summary"]["requestsPerSec"], d["latencyPercentiles"]["p99"] * 1000))')
  read -r rps p99 <<<"$out"
  # Until what was acknowledged is committed (stable for half a second on every node).
  local last=-1 now
  while true; do
    now=$(stored "$1")
    [ "$now" = "$last" ] && break
    last=$now
    sleep 0.5
  done
  t1=$(date +%s.%N)
  after=$last
  python3 -c "
label, rps, p99, stored, secs = '$label', $rps, $p99, $after - $before, $t1 - $t0 - 0.5
print(f'{label:<24} {rps:>10.0f} {p99:>9.2f} {stored:>10} {stored / secs:>12.0f}')
" | tee -a "$work/results"
}

echo "adtally bench/cluster.sh — $(date -u +%Y-%m-%dT%H:%MZ) — $(nproc) cores, commit $(git rev-parse --short HEAD), ${secs}s x $conns conns"
printf '%-24s %10s %9s %10s %12s\n' setup "acked/s" "p99 ms" stored "committed/s"
urls=$((secs * 120000))

start embedded 18180
setup 18180
"$bin" loadgen --target 127.0.0.1:18180 --mode impressions --secret bench-secret --print-urls "$urls" >"$work/emb.txt"
run "embedded (SQLite)" "$work/emb.txt" 18180
kill "${pids[@]}"; pids=()

start pg1 18181 --database "$PG_URL" --node-name bench-1
setup 18181
"$bin" loadgen --target 127.0.0.1:18181 --mode impressions --secret bench-secret --print-urls "$urls" >"$work/pg1.txt"
run "PostgreSQL, 1 node" "$work/pg1.txt" 18181
start pg2 18182 --database "$PG_URL" --node-name bench-2
start pg3 18183 --database "$PG_URL" --node-name bench-3
sleep 2 # the catalog reaches the new nodes
"$bin" loadgen --target 127.0.0.1:18181 --mode impressions --secret bench-secret --print-urls "$urls" |
  awk '{ n = NR % 3; sub(/127\.0\.0\.1:18181/, "127.0.0.1:1818" (n + 1)); print }' >"$work/pg3.txt"
run "PostgreSQL, 3 nodes" "$work/pg3.txt" 18181 18182 18183

python3 - "$work/results" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
base = rows[0]
print()
for r in rows[1:]:
    name = " ".join(r[:-4])
    print(f"{name:<24} acked {float(r[-4]) / float(base[-4]):.2f}x, committed {float(r[-1]) / float(base[-1]):.2f}x the embedded store")
PY
