#!/usr/bin/env bash
# What access tokens and TLS cost: durable puts and gets of one release node under wrk (32
# connections, 100-byte values, $SECONDS_EACH s each), plain / --auth-file / TLS / TLS + auth, in one
# run. Loopback only; run it on a quiet machine. Installs wrk when missing.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NODE=$ROOT/target/release/rcluster-node
SECONDS_EACH=${SECONDS_EACH:-5}
PORT=${PORT:-17700}
command -v wrk >/dev/null || apt-get install -y -q wrk >/dev/null
[ -x "$NODE" ] || cargo build --release -p rcluster-node --bins
WORK=$(mktemp -d)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=rcluster-bench -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$WORK/tls.key" -out "$WORK/tls.crt" 2>/dev/null
TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
echo "$TOKEN write" >"$WORK/auth"
cat >"$WORK/put.lua" <<'EOF'
local i = 0
local body = '"' .. string.rep("x", 98) .. '"'
request = function()
  i = i + 1
  return wrk.format("PUT", "/v1/kv/bench/" .. (i % 1000), nil, body)
end
EOF

run() { # name scheme node-flags...
  local name=$1 scheme=$2
  shift 2
  rm -rf "$WORK/data"
  "$NODE" --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" "$@" >"$WORK/$name.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    grep -q "ready on" "$WORK/$name.log" && break
    sleep 0.05
  done
  local hdr=()
  [[ " $* " == *" --auth-file "* ]] && hdr=(-H "Authorization: Bearer $TOKEN")
  local url="$scheme://127.0.0.1:$PORT"
  # A refused request (401/403) would count as throughput: wrk's non-2xx count is printed too.
  summary='/Requests\/sec/ {r=$2} /Non-2xx/ {e=$NF} END {printf "%s/s (%d non-2xx)", r, e}'
  put=$(wrk -t2 -c32 -d"${SECONDS_EACH}s" "${hdr[@]}" -s "$WORK/put.lua" "$url" | awk "$summary")
  get=$(wrk -t2 -c32 -d"${SECONDS_EACH}s" "${hdr[@]}" "$url/v1/kv/bench/1" | awk "$summary")
  printf '%-10s put %-28s get %s\n' "$name" "$put" "$get"
  kill "$PID"
  wait "$PID" 2>/dev/null || true
  PID=
}

run plain http
run auth http --auth-file "$WORK/auth"
run tls https --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key"
run tls+auth https --tls-cert "$WORK/tls.crt" --tls-key "$WORK/tls.key" --auth-file "$WORK/auth"
