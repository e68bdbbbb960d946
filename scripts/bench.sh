#!/usr/bin/env bash
# Reproducible performance runs with `rcluster bench` on this machine (loopback only):
#   scripts/bench.sh single   one node: put (fsync always/interval), get, publish at 1/32/128 connections
#   scripts/bench.sh cluster  three nodes: quorum and async puts, eventual gets from a replica, lag
#   scripts/bench.sh memory   peak RSS of one node holding 1 million 100-byte records
#   scripts/bench.sh compare  rcluster against Redis and etcd in one run, all driven by C or Go
#                             load generators (wrk, redis-benchmark, the etcd Go client): one node
#                             put/get vs Redis (appendfsync always), 3 nodes ack=quorum vs a
#                             3-member etcd at 32 and 128 connections, RSS per record vs Redis
#                             ($RECORDS, default 2000000), with ratios. ROUNDS=N (default 1)
#                             runs the put and get pairs N times in turns, the order swapped each
#                             round, and reports the median ratio. Installs wrk, redis-server
#                             and etcd-server (Debian) when missing; builds scripts/etcd-load (Go).
# Results go to $OUT (default ./bench-results) as JSON plus a summary.md. Uses the release binaries
# (built if missing). Every run is bounded by --duration.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/bench-results}
DURATION=${DURATION:-10}
BASE_PORT=${BASE_PORT:-17100}
NODE=$ROOT/target/release/rcluster-node
CLI=$ROOT/target/release/rcluster
if [ ! -x "$NODE" ] || [ ! -x "$CLI" ]; then
  cargo build --release -p rcluster-node -p rcluster-cli --bins
fi
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

start_node() { # name port datadir extra...
  local name=$1 port=$2 dir=$3
  shift 3
  "$NODE" --name "$name" --data-dir "$dir" --listen "127.0.0.1:$port" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    grep -q "ready on" "$WORK/$name.out" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "node $name did not start" >&2
  cat "$WORK/$name.err" >&2
  return 1
}

stop_nodes() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}

row() { # label json
  python3 - "$1" "$2" >>"$OUT/summary.md" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
for a in json.load(open(path))["apis"]:
    print(f"| {label} | {a['api']} | {a['throughput']:.0f} | {a['p50_us']} | {a['p90_us']} | {a['p99_us']} | {a['max_us']} | {a['errors']} |")
EOF
}

bench() { # label endpoint args...
  local label=$1 endpoint=$2
  shift 2
  local file
  file="$OUT/$(echo "$label" | tr ' /=' '___').json"
  "$CLI" --endpoint "$endpoint" bench --duration "$DURATION" --warmup 1 --output "$file" "$@" >/dev/null
  row "$label" "$file"
}

header() {
  { echo; echo "## $1 ($(date -u +%FT%TZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"; echo
    echo "| run | api | req/s | p50 µs | p90 µs | p99 µs | max µs | errors |"
    echo "|---|---|---|---|---|---|---|---|"; } >>"$OUT/summary.md"
}

single() {
  header "one node, 100-byte values"
  for fsync in always interval; do
    start_node n1 "$BASE_PORT" "$WORK/single-$fsync" --fsync "$fsync"
    for c in 1 32 128; do
      bench "put fsync=$fsync c=$c" "http://127.0.0.1:$BASE_PORT" --api put --concurrency "$c" --keys 100000
    done
    if [ "$fsync" = always ]; then
      for c in 1 32 128; do
        bench "publish fsync=always c=$c" "http://127.0.0.1:$BASE_PORT" --api publish --concurrency "$c"
      done
      for c in 1 32 128; do
        bench "get c=$c" "http://127.0.0.1:$BASE_PORT" --api get --concurrency "$c" --keys 100000
      done
    fi
    stop_nodes
  done
}

# Three nodes n1 (primary) n2 n3 on BASE_PORT+1..3, in folder prefix $1.
start_cluster() {
  local dir=$1 secret=$WORK/secret members=()
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"
  for i in 1 2 3; do members+=(--member "n$i=http://127.0.0.1:$((BASE_PORT + i))"); done
  for i in 1 2 3; do
    start_node "n$i" $((BASE_PORT + i)) "$dir$i" --secret-file "$secret" "${members[@]}"
  done
  local auth p=http://127.0.0.1:$((BASE_PORT + 1))
  auth="Authorization: Bearer $(cat "$secret")"
  curl -fsS -H "$auth" -X POST "$p/internal/v1/promote" -d '{"term":1}' >/dev/null
  for i in 2 3; do
    curl -fsS -H "$auth" -X POST "http://127.0.0.1:$((BASE_PORT + i))/internal/v1/follow" -d '{"term":1,"primary":"n1"}' >/dev/null
  done
  until curl -fs "http://127.0.0.1:$((BASE_PORT + 3))/readyz" >/dev/null; do sleep 0.1; done
}

cluster() {
  header "three nodes, 100-byte values, fsync always"
  start_cluster "$WORK/c"
  local p=http://127.0.0.1:$((BASE_PORT + 1))
  # Sample the primary's view of replica lag during the quorum run.
  (end=$((SECONDS + DURATION + 2)); while [ $SECONDS -lt $end ]; do
     curl -fs "$p/v1/status" | python3 -c 'import json,sys; print(" ".join(str(m.get("lag_entries",0)) for m in json.load(sys.stdin)["members"][1:]))' || true
     sleep 0.1
   done >"$OUT/lag-samples.txt") &
  bench "3 nodes put ack=quorum c=32" "$p" --api put --ack quorum --concurrency 32 --keys 100000
  wait $! 2>/dev/null || true
  python3 - "$OUT/lag-samples.txt" >>"$OUT/summary.md" <<'EOF'
import sys
v = sorted(int(x) for line in open(sys.argv[1]) for x in line.split())
if v:
    print(f"\nreplication lag during the quorum run, {len(v)} samples: p50 {v[len(v)//2]}, p99 {v[min(len(v)-1, len(v)*99//100)]}, max {v[-1]} entries\n")
EOF
  bench "3 nodes put ack=async c=32" "$p" --api put --ack async --concurrency 32 --keys 100000
  bench "3 nodes get eventual from a replica c=32" "http://127.0.0.1:$((BASE_PORT + 2))" --api get --consistency eventual --concurrency 32 --keys 100000
  stop_nodes
}

memory() {
  start_node n1 "$BASE_PORT" "$WORK/mem" --fsync interval
  "$CLI" --endpoint "http://127.0.0.1:$BASE_PORT" bench --api get --keys 1000000 --concurrency 32 --duration 2 >/dev/null
  local pid=${PIDS[0]}
  { echo; echo "## memory: 1,000,000 records of 100 bytes"; echo
    grep -E "VmHWM|VmRSS" "/proc/$pid/status" | sed 's/^/    /'
    curl -fs "http://127.0.0.1:$BASE_PORT/v1/status" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(f"    records {d[\"records\"]}, log index {d[\"last_log_index\"]}, snapshot index {d[\"snapshot_index\"]}")'
    echo "    data dir: $(du -sh "$WORK/mem" | cut -f1)"; } >>"$OUT/summary.md"
  stop_nodes
}

source "$ROOT/scripts/lib/compare.sh"

case "${1:-single}" in
  single) single ;;
  cluster) cluster ;;
  memory) memory ;;
  compare) compare ;;
  all) single; cluster; memory ;;
  *) echo "usage: $0 single|cluster|memory|compare|all" >&2; exit 2 ;;
esac
echo "results in $OUT/summary.md"
