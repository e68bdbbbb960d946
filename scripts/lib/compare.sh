# `scripts/bench.sh compare` (sourced by scripts/bench.sh): rcluster against Redis and etcd in one
# run, every side driven by a load generator that costs the server little (wrk, redis-benchmark,
# the etcd Go client), 100-byte values. Figures count only on a quiet machine.

REDIS_PORT=${REDIS_PORT:-16379}
ETCD_PORT=${ETCD_PORT:-12379}
RECORDS=${RECORDS:-2000000}
COMPARE=()

need_tool() { # command package
  command -v "$1" >/dev/null && return 0
  echo "installing $2" >&2
  apt-get install -y -q "$2" >/dev/null
}

# wrk_run METHOD URL CONNECTIONS [QUERY]: puts (100-byte values) or gets of random keys among
# k0..k99999 for $DURATION s; prints "rate p99_ms non_2xx".
wrk_run() {
  local lua=$WORK/load.lua
  cat >"$lua" <<'LUA'
local method, query = os.getenv("LOAD_METHOD"), os.getenv("LOAD_QUERY")
local body = '"' .. string.rep("x", 98) .. '"'
request = function()
  local key = "/v1/kv/k" .. math.random(0, 99999) .. query
  if method == "PUT" then return wrk.format("PUT", key, nil, body) end
  return wrk.format("GET", key)
end
LUA
  LOAD_METHOD=$1 LOAD_QUERY=${4:-} wrk -t2 -c"$3" -d"${DURATION}s" --latency -s "$lua" "$2" |
    python3 -c '
import re, sys
out = sys.stdin.read()
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
print(f"{rate:.0f} {p99:.2f} {int(bad.group(1)) if bad else 0}")'
}

# record NAME RATE P99 ERRORS: one row of the comparison.
record() { COMPARE+=("$1|$2|$3|$4"); echo "  $1: $2/s p99 $3 ms errors $4" >&2; }

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

compare_redis() {
  mkdir -p "$WORK/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync always >"$WORK/redis.out" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  until redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
  local n=$((DURATION * 60000)) line
  for t in set get; do
    line=$(redis-benchmark -p "$REDIS_PORT" -c 32 -n "$n" -r 100000 -d 100 -t "$t" --csv | tail -1)
    # "SET","61500.00","0.5","0.2","0.4","0.8","1.2","3.0": rate, then avg, min, p50, p95, p99, max
    record "redis ${t^^} c=32" "$(echo "$line" | cut -d'"' -f4 | cut -d. -f1)" \
      "$(echo "$line" | cut -d'"' -f14)" 0
  done
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  local before after
  before=$(rss_kib "$pid")
  python3 - "$RECORDS" <<'PY' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
import sys
value = "x" * 100
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    k = f"k{i}"
    out.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n$100\r\n{value}\r\n".encode())
PY
  after=$(rss_kib "$pid")
  REDIS_BYTES=$(( (after - before) * 1024 / RECORDS ))
  record "redis RSS bytes/record ($RECORDS records)" "$REDIS_BYTES" - -
}

compare_rcluster_single() {
  start_node n1 "$BASE_PORT" "$WORK/cmp-single" --fsync always
  local url=http://127.0.0.1:$BASE_PORT r
  r=$(wrk_run PUT "$url" 32); record "rcluster put c=32 (1 node, fsync always)" $r
  # Every key the gets ask for exists (a get run of `rcluster bench` writes its keys first).
  "$CLI" --endpoint "$url" bench --api get --keys 100000 --key-prefix k --value-size 100 \
    --concurrency 32 --duration 1 >/dev/null
  r=$(wrk_run GET "$url" 32); record "rcluster get c=32 (1 node)" $r
  stop_nodes
}

# RSS per record, the same keys and values as Redis got: once loaded without idempotency keys and
# once with a key per write (the client library sends one), by scripts/bench-memory.py.
compare_memory() {
  local out=$WORK/memory.json
  python3 "$ROOT/scripts/bench-memory.py" --records "$RECORDS" --idem both --no-redis \
    --node "$NODE" >"$out"
  local row
  for row in $(python3 - "$out" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["rcluster"]:
    print(f"{int(r['idempotency_keys'])}:{round(r['bytes_per_record'])}:{r['records']}")
PY
  ); do
    IFS=: read -r keyed bytes records <<<"$row"
    if [ "$keyed" = 1 ]; then
      record "rcluster RSS bytes/record ($records records, a key per write)" "$bytes" - -
    else
      record "rcluster RSS bytes/record ($records records)" "$bytes" - -
    fi
  done
}

compare_quorum() {
  start_cluster "$WORK/cmp-q"
  local url=http://127.0.0.1:$((BASE_PORT + 1)) r c
  for c in 32 128; do
    r=$(wrk_run PUT "$url" "$c" "?ack=quorum")
    record "rcluster 3 nodes put ack=quorum c=$c" $r
  done
  stop_nodes
}

compare_etcd() {
  local cluster="" i urls=""
  for i in 1 2 3; do cluster+="${cluster:+,}e$i=http://127.0.0.1:$((ETCD_PORT + 10 + i))"; done
  for i in 1 2 3; do
    etcd --name "e$i" --data-dir "$WORK/etcd$i" \
      --listen-client-urls "http://127.0.0.1:$((ETCD_PORT + i))" \
      --advertise-client-urls "http://127.0.0.1:$((ETCD_PORT + i))" \
      --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10 + i))" \
      --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10 + i))" \
      --initial-cluster "$cluster" --initial-cluster-state new \
      --initial-cluster-token rcluster-bench >"$WORK/etcd$i.out" 2>&1 &
    PIDS+=($!)
    urls+="${urls:+,}127.0.0.1:$((ETCD_PORT + i))"
  done
  for i in 1 2 3; do
    until curl -fs "http://127.0.0.1:$((ETCD_PORT + i))/health" | grep -q '"true"'; do sleep 0.2; done
  done
  local c r
  for c in 32 128; do
    r=$("$WORK/etcd-load" -endpoints "$urls" -clients "$c" -conns "$c" -duration "${DURATION}s" |
      python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["rate"]), d["p99_ms"], d["errors"])')
    record "etcd 3 members put c=$c" $r
  done
  stop_nodes
}

compare() {
  need_tool wrk wrk
  need_tool redis-server redis-server
  need_tool etcd etcd-server
  (cd "$ROOT/scripts/etcd-load" && go build -o "$WORK/etcd-load" .)
  echo "compare: $DURATION s per run, 100-byte values, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  compare_redis
  stop_nodes
  compare_rcluster_single
  compare_memory
  compare_quorum
  compare_etcd
  python3 - "${COMPARE[@]}" >>"$OUT/summary.md" <<'PY'
import sys, datetime, os
rows = {}
for r in sys.argv[1:]:
    name, rate, p99, errors = r.split("|")
    rows[name] = (rate, p99, errors)
def rate(name):
    return float(rows[name][0])
print(f"\n## compare ({datetime.datetime.utcnow():%Y-%m-%dT%H:%MZ}, {os.cpu_count()} cores, "
      f"load {open('/proc/loadavg').read().split()[0]})\n")
print("| run | req/s (or bytes) | p99 ms | errors |\n|---|---|---|---|")
for name, (r, p, e) in rows.items():
    print(f"| {name} | {r} | {p} | {e} |")
pairs = [
    ("single node put, fsync always / Redis SET appendfsync always",
     "rcluster put c=32 (1 node, fsync always)", "redis SET c=32"),
    ("single node get / Redis GET", "rcluster get c=32 (1 node)", "redis GET c=32"),
    ("3 nodes put ack=quorum / etcd put, c=32",
     "rcluster 3 nodes put ack=quorum c=32", "etcd 3 members put c=32"),
    ("3 nodes put ack=quorum / etcd put, c=128",
     "rcluster 3 nodes put ack=quorum c=128", "etcd 3 members put c=128"),
]
print("\n| ratio | value |\n|---|---|")
for label, a, b in pairs:
    print(f"| {label} | {rate(a) / rate(b):.2f}x |")
redis = next((k for k in rows if "RSS" in k and k.startswith("redis")), None)
for k in rows:
    if redis and "RSS" in k and k.startswith("rcluster"):
        keys = "a key per write" if "key per write" in k else "no idempotency keys"
        print(f"| RSS per record ({keys}) / Redis | {rate(k) / rate(redis):.2f}x |")
PY
  tail -n 20 "$OUT/summary.md"
}
