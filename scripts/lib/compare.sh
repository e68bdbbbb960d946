# `scripts/bench.sh compare` (sourced by scripts/bench.sh): rcluster against Redis and etcd in one
# run, every side driven by a load generator that costs the server little (wrk, redis-benchmark,
# the etcd Go client), 100-byte values. Figures count only on a quiet machine.

REDIS_PORT=${REDIS_PORT:-16379}
ETCD_PORT=${ETCD_PORT:-12379}
RECORDS=${RECORDS:-2000000}
ROUNDS=${ROUNDS:-1}
COMPARE=()

need_tool() { # command package
  command -v "$1" >/dev/null && return 0
  echo "installing $2" >&2
  apt-get install -y -q "$2" >/dev/null
}

# wrk_run METHOD URL CONNECTIONS [QUERY]: puts (100-byte values) or gets of random keys among
# k0..k99999 for $DURATION s; prints "rate p99_ms non_2xx requests client_cpu_s".
wrk_run() {
  local lua=$WORK/load.lua TIMEFORMAT='%U %S'
  cat >"$lua" <<'LUA'
local method, query = os.getenv("LOAD_METHOD"), os.getenv("LOAD_QUERY")
local body = '"' .. string.rep("x", 98) .. '"'
request = function()
  local key = "/v1/kv/k" .. math.random(0, 99999) .. query
  if method == "PUT" then return wrk.format("PUT", key, nil, body) end
  return wrk.format("GET", key)
end
LUA
  { time LOAD_METHOD=$1 LOAD_QUERY=${4:-} wrk -t2 -c"$3" -d"${DURATION}s" --latency -s "$lua" "$2" \
      >"$WORK/wrk.out"; } 2>"$WORK/wrk.time"
  python3 - "$WORK/wrk.out" "$WORK/wrk.time" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
requests = int(re.search(r"(\d+) requests in", out).group(1))
cpu = sum(float(x) for x in open(sys.argv[2]).read().split())
print(f"{rate:.0f} {p99:.2f} {int(bad.group(1)) if bad else 0} {requests} {cpu:.2f}")
PY
}

# cpu_s PID...: CPU seconds (user and system) the processes have used so far, together.
cpu_s() {
  local p
  for p in "$@"; do cat "/proc/$p/stat"; done |
    awk -v hz="$(getconf CLK_TCK)" '{t += $14 + $15} END {printf "%.2f", t / hz}'
}

# cpu_row NAME "PID..." CPU_S_BEFORE CLIENT_S REQUESTS: CPU per request of a server (all its
# processes) and of its load generator (they share the machine's cores, so a costly client lowers
# the server's rate too).
CPU_ROWS=()
cpu_row() {
  local pids
  read -r -a pids <<<"$2"
  CPU_ROWS+=("$1|$(awk -v a="$(cpu_s "${pids[@]}")" -v b="$3" 'BEGIN {print a - b}')|$4|$5")
}

# record NAME RATE P99 ERRORS: one row of the comparison.
record() { COMPARE+=("$1|$2|$3|$4"); echo "  $1: $2/s p99 $3 ms errors $4" >&2; }

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# redis_run TEST PID NAME: one redis-benchmark run (SET or GET of random keys among 100,000),
# its rate and CPU recorded.
redis_run() {
  local n=$((DURATION * 60000)) line s0 TIMEFORMAT='%U %S'
  s0=$(cpu_s "$2")
  { time redis-benchmark -p "$REDIS_PORT" -c 32 -n "$n" -r 100000 -d 100 -t "$1" --csv \
      >"$WORK/rb.out"; } 2>"$WORK/rb.time"
  line=$(tail -1 "$WORK/rb.out")
  # "SET","61500.00","0.5","0.2","0.4","0.8","1.2","3.0": rate, then avg, min, p50, p95, p99, max
  record "$3" "$(echo "$line" | cut -d'"' -f4 | cut -d. -f1)" "$(echo "$line" | cut -d'"' -f14)" 0
  cpu_row "$3" "$2" "$s0" "$(awk '{print $1 + $2}' "$WORK/rb.time")" "$n"
}

# single_run METHOD URL PID NAME: one wrk run against the node PID, its rate and CPU recorded.
single_run() {
  local s0 r
  s0=$(cpu_s "$3")
  read -r -a r <<<"$(wrk_run "$1" "$2" 32)"
  record "$4" "${r[0]}" "${r[1]}" "${r[2]}"
  cpu_row "$4" "$3" "$s0" "${r[4]}" "${r[3]}"
}

# Redis and one rcluster node, both running, measured in turns: ROUNDS rounds of a durable write
# pair and a read pair, the pair's order swapped every round. A VM's speed drifts by a third within
# minutes here, so a ratio is only as good as the two runs are close in time; each round gives a
# ratio of its own and the summary reports their median.
compare_single() {
  mkdir -p "$WORK/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync always >"$WORK/redis.out" 2>&1 &
  local redis=$!
  PIDS+=("$redis")
  until redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
  start_node n1 "$BASE_PORT" "$WORK/cmp-single" --fsync always
  local url=http://127.0.0.1:$BASE_PORT node=${PIDS[-1]} i tag pair t method what
  # Every key the gets ask for exists (a get run of `rcluster bench` writes its keys first).
  "$CLI" --endpoint "$url" bench --api get --keys 100000 --key-prefix k --value-size 100 \
    --concurrency 32 --duration 1 >/dev/null
  for i in $(seq 1 "$ROUNDS"); do
    tag=""
    [ "$ROUNDS" -gt 1 ] && tag=" #$i"
    for pair in "set PUT put c=32 (1 node, fsync always)" "get GET get c=32 (1 node)"; do
      read -r t method what <<<"$pair"
      if [ $((i % 2)) = 1 ]; then
        redis_run "$t" "$redis" "redis ${t^^} c=32$tag"
        single_run "$method" "$url" "$node" "rcluster $what$tag"
      else
        single_run "$method" "$url" "$node" "rcluster $what$tag"
        redis_run "$t" "$redis" "redis ${t^^} c=32$tag"
      fi
    done
  done
  # The node stays up, idle, until Redis's memory is measured: both stop together, by their pids.
  redis-cli -p "$REDIS_PORT" flushall >/dev/null
  local before after
  before=$(rss_kib "$redis")
  python3 - "$RECORDS" <<'PY' | redis-cli -p "$REDIS_PORT" --pipe >/dev/null
import sys
value = "x" * 100
out = sys.stdout.buffer
for i in range(int(sys.argv[1])):
    k = f"k{i}"
    out.write(f"*3\r\n$3\r\nSET\r\n${len(k)}\r\n{k}\r\n$100\r\n{value}\r\n".encode())
PY
  after=$(rss_kib "$redis")
  REDIS_BYTES=$(( (after - before) * 1024 / RECORDS ))
  record "redis RSS bytes/record ($RECORDS records)" "$REDIS_BYTES" - -
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
  local url=http://127.0.0.1:$((BASE_PORT + 1)) r c s0
  for c in 32 128; do
    s0=$(cpu_s "${PIDS[@]}")
    read -r -a r <<<"$(wrk_run PUT "$url" "$c" "?ack=quorum")"
    record "rcluster 3 nodes put ack=quorum c=$c" "${r[0]}" "${r[1]}" "${r[2]}"
    cpu_row "rcluster 3 nodes put ack=quorum c=$c (the three nodes)" "${PIDS[*]}" "$s0" "${r[4]}" "${r[3]}"
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
  echo "compare: $DURATION s per run, $ROUNDS round(s), 100-byte values, load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  compare_single
  compare_memory
  compare_quorum
  compare_etcd
  python3 - "${COMPARE[@]}" -- "${CPU_ROWS[@]}" >>"$OUT/summary.md" <<'PY'
import sys, datetime, os, statistics
args = sys.argv[1:]
cut = args.index("--")
rows = {}
for r in args[:cut]:
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
def rounds(name):
    """The rates of a run: one, or one per round (`NAME #i`)."""
    if name in rows:
        return [rate(name)]
    return [rate(f"{name} #{i}") for i in range(1, len(rows)) if f"{name} #{i}" in rows]
print("\n| ratio | value |\n|---|---|")
for label, a, b in pairs:
    ratios = [x / y for x, y in zip(rounds(a), rounds(b))]
    if len(ratios) == 1:
        print(f"| {label} | {ratios[0]:.2f}x |")
    else:
        each = ", ".join(f"{r:.2f}" for r in ratios)
        print(f"| {label} | {statistics.median(ratios):.2f}x (median of {len(ratios)} rounds: {each}) |")
redis = next((k for k in rows if "RSS" in k and k.startswith("redis")), None)
for k in rows:
    if redis and "RSS" in k and k.startswith("rcluster"):
        keys = "a key per write" if "key per write" in k else "no idempotency keys"
        print(f"| RSS per record ({keys}) / Redis | {rate(k) / rate(redis):.2f}x |")
# Where the two cores went: a server's rate is bounded by its own CPU per request plus its load
# generator's, since both run on the same cores.
print("\n| run | server CPU µs/request | load generator CPU µs/request |\n|---|---|---|")
cpu = {}
for r in args[cut + 1:]:
    name, server, client, requests = r.split("|")
    n = max(int(requests), 1)
    cpu[name] = (float(server) * 1e6 / n, float(client) * 1e6 / n)
    print(f"| {name} | {cpu[name][0]:.1f} | {cpu[name][1]:.1f} |")
# The same pairs from CPU per request, which moves far less with the VM's phase than a rate does.
# With server and load generator sharing the cores and using them fully, a pair's rates stand as
# the inverse of their CPU per request, both together; the server's alone is what its own code
# costs beside the other server's.
def cpu_rounds(name):
    if name in cpu:
        return [cpu[name]]
    return [cpu[f"{name} #{i}"] for i in range(1, len(cpu) + 1) if f"{name} #{i}" in cpu]
print("\n| ratio from CPU per request | server and load generator | server alone |\n|---|---|---|")
for label, a, b in pairs[:2]:
    both = [(y[0] + y[1]) / (x[0] + x[1]) for x, y in zip(cpu_rounds(a), cpu_rounds(b))]
    alone = [y[0] / x[0] for x, y in zip(cpu_rounds(a), cpu_rounds(b))]
    if both:
        print(f"| {label} | {statistics.median(both):.2f}x | {statistics.median(alone):.2f}x |")
PY
  tail -n 30 "$OUT/summary.md"
}
