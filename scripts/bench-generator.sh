#!/usr/bin/env bash
# What the load generator costs: one release node (fsync always), 100-byte values, 32 connections,
# $SECONDS_EACH s per run; for put and get, `rcluster bench` against wrk on the same node in one run:
# each one's rate, its own CPU per request (bench: its report; wrk: /usr/bin/time), and the node's
# CPU per request (from /proc). Loopback only; run it on a quiet machine. Installs wrk when missing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE=$ROOT/target/release/rcluster-node
CLI=$ROOT/target/release/rcluster
SECONDS_EACH=${SECONDS_EACH:-10}
PORT=${PORT:-17800}
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
[ -x "$NODE" ] && [ -x "$CLI" ] || cargo build --release -p rcluster-node -p rcluster-cli --bins
WORK=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

"$NODE" --data-dir "$WORK/n1" --listen "127.0.0.1:$PORT" --fsync always >"$WORK/node.out" 2>&1 &
PID=$!
until grep -q "ready on" "$WORK/node.out" 2>/dev/null; do sleep 0.05; done
URL=http://127.0.0.1:$PORT
# The node's user + system CPU seconds so far.
node_cpu() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$PID/stat"; }
# Every key either generator reads exists: a get run of `rcluster bench` writes its keys first.
"$CLI" --endpoint "$URL" bench -q --api get --keys 1000 --key-prefix bench/ --value-size 98 \
  --concurrency 32 --duration 1 >/dev/null

cat >"$WORK/load.lua" <<'LUA'
local method = os.getenv("LOAD_METHOD")
local body = '"' .. string.rep("x", 98) .. '"'
local i = 0
request = function()
  i = i + 1
  local key = "/v1/kv/bench/" .. (i % 1000)
  if method == "PUT" then return wrk.format("PUT", key, nil, body) end
  return wrk.format("GET", key)
end
LUA

printf '%-6s %-15s %10s %16s %15s\n' api generator "req/s" "generator µs/req" "node µs/req"
for api in put get; do
  n0=$(node_cpu)
  "$CLI" --endpoint "$URL" bench -q --api "$api" --keys 1000 --key-prefix bench/ --value-size 98 \
    --concurrency 32 --duration "$SECONDS_EACH" --output "$WORK/bench.json" >/dev/null
  n1=$(node_cpu)
  python3 - "$WORK/bench.json" "$n0" "$n1" "$api" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ok = d["total"]["ok"]
node = (float(sys.argv[3]) - float(sys.argv[2])) * 1e6 / ok
print(f'{sys.argv[4]:<6} {"rcluster bench":<15} {d["total"]["throughput"]:>10.0f} '
      f'{d["generator"]["cpu_us_per_request"]:>16.1f} {node:>15.1f}')
PY
  n0=$(node_cpu)
  LOAD_METHOD=${api^^} /usr/bin/time -f '%U %S' -o "$WORK/time" \
    wrk -t2 -c32 -d"${SECONDS_EACH}s" -s "$WORK/load.lua" "$URL" >"$WORK/wrk.out"
  n1=$(node_cpu)
  python3 - "$WORK/wrk.out" "$WORK/time" "$n0" "$n1" "$api" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
total = int(re.search(r"(\d+) requests in", out).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
ok = total - (int(bad.group(1)) if bad else 0)
rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
user, sys_ = map(float, open(sys.argv[2]).read().split()[-2:])
node = (float(sys.argv[4]) - float(sys.argv[3])) * 1e6 / ok
print(f'{sys.argv[5]:<6} {"wrk":<15} {rate:>10.0f} {(user + sys_) * 1e6 / total:>16.1f} {node:>15.1f}')
PY
done
