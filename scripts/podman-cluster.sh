#!/usr/bin/env bash
# Run a three-node rcluster from the node image on loopback with podman, and wait until every node
# answers /readyz. Containers use the host network (this VM cannot set up container networking), so
# the nodes listen on 127.0.0.1:BASE_PORT, BASE_PORT+1, BASE_PORT+2.
#
#   scripts/podman-cluster.sh up     [--image IMG] [--base-port 17301] [--nodes 3] [--ack quorum]
#                                    [--standalone]
#   scripts/podman-cluster.sh status [--base-port 17301] [--nodes 3]
#   scripts/podman-cluster.sh down   [--nodes 3]
#
# The image comes from scripts/podman-image.sh (default localhost/rcluster-node:<workspace version>).
# Data and the cluster secret live under ${RCLUSTER_PODMAN_STATE:-/tmp/rcluster-podman}; `down` stops
# the containers and removes that folder. --standalone starts independent single-node services instead
# (for node builds without the replication flags --member/--secret-file/--ack). Then try:
#   rcluster --endpoint http://127.0.0.1:17301 put greeting hello
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
IMAGE=localhost/rcluster-node:$VERSION
BASE_PORT=17301
NODES=3
ACK=quorum
STANDALONE=""
STATE=${RCLUSTER_PODMAN_STATE:-/tmp/rcluster-podman}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-60}
# runc instead of crun, and explicit ulimits: crun cannot handle this VM's cgroup mode, and without
# CAP_SYS_RESOURCE podman cannot raise the default limits (see shared BUILD-FACTS).
PODMAN_RUN=(podman --runtime runc run --network host --ulimit nofile=4096:4096 --ulimit nproc=4096:4096)

usage() { sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
CMD=${1:-}
[[ -n $CMD ]] || usage 2 >&2
shift
while (($#)); do
  case $1 in
    --image) IMAGE=${2:?}; shift 2 ;;
    --base-port) BASE_PORT=${2:?}; shift 2 ;;
    --nodes) NODES=${2:?}; shift 2 ;;
    --ack) ACK=${2:?}; shift 2 ;;
    --standalone) STANDALONE=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done
[[ $NODES =~ ^[1-9]$ ]] || { echo "--nodes must be 1..9" >&2; exit 2; }

name() { echo "rcluster-n$1"; }
port() { echo $((BASE_PORT + $1 - 1)); }

members() {
  local i args=()
  for i in $(seq 1 "$NODES"); do
    args+=(--member "n$i=http://127.0.0.1:$(port "$i")")
  done
  printf '%s\n' "${args[@]}"
}

# True when something already accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait until node $1 answers 200 on path $2, at most READY_TIMEOUT_S seconds.
wait_ready() {
  local i=$1 url deadline=$((SECONDS + READY_TIMEOUT_S))
  url="http://127.0.0.1:$(port "$i")$2"
  while ((SECONDS < deadline)); do
    if curl -sf --max-time 2 "$url" >/dev/null; then
      return 0
    fi
    if [[ $(podman inspect --format '{{.State.Running}}' "$(name "$i")" 2>/dev/null) != true ]]; then
      echo "$(name "$i") exited:" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "no 200 from $url within ${READY_TIMEOUT_S}s; last answer: $(curl -s --max-time 2 "$url" || echo none)" >&2
  return 1
}

up() {
  podman image exists "$IMAGE" || { echo "image $IMAGE not found: run scripts/podman-image.sh first" >&2; exit 1; }
  local i
  for i in $(seq 1 "$NODES"); do
    if [[ $(podman inspect --format '{{.State.Running}}' "$(name "$i")" 2>/dev/null) != true ]] \
        && port_in_use "$(port "$i")"; then
      echo "127.0.0.1:$(port "$i") is taken by another program: choose --base-port" >&2
      exit 1
    fi
  done
  mkdir -p "$STATE"
  if [[ ! -s $STATE/secret ]]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STATE/secret"
  fi
  # The node runs as UID 65532 inside the image; the secret must be readable and the data writable.
  if chown 65532:65532 "$STATE/secret" 2>/dev/null; then
    chmod 0400 "$STATE/secret"
  else
    chmod 0444 "$STATE/secret"
  fi
  local member_args=()
  if [[ -z $STANDALONE ]]; then
    local help
    help=$("${PODMAN_RUN[@]}" --rm "$IMAGE" --help 2>/dev/null || true)
    if [[ $help != *--member* ]]; then
      echo "$IMAGE has no --member flag (a node build without replication): use --standalone" >&2
      exit 1
    fi
    mapfile -t member_args < <(members)
    member_args+=(--secret-file /etc/rcluster/secret --ack "$ACK")
  fi
  for i in $(seq 1 "$NODES"); do
    local data=$STATE/n$i
    mkdir -p "$data"
    chown 65532:65532 "$data" 2>/dev/null || chmod 0777 "$data"
    podman rm --force --ignore "$(name "$i")" >/dev/null
    "${PODMAN_RUN[@]}" --detach --name "$(name "$i")" \
      --volume "$data:/data" --volume "$STATE/secret:/etc/rcluster/secret:ro" \
      "$IMAGE" --data-dir /data --listen "127.0.0.1:$(port "$i")" --name "n$i" "${member_args[@]}" >/dev/null
    echo "started $(name "$i") on http://127.0.0.1:$(port "$i")"
  done
  if [[ -z $STANDALONE ]]; then
    for i in $(seq 1 "$NODES"); do
      wait_ready "$i" /livez || { podman logs --tail 20 "$(name "$i")" >&2; exit 1; }
    done
    elect 1
  fi
  for i in $(seq 1 "$NODES"); do
    if ! wait_ready "$i" /readyz; then
      podman logs --tail 20 "$(name "$i")" >&2 || true
      exit 1
    fi
    echo "$(name "$i") ready"
  done
  status
}

# Nodes of a cluster start without a primary; the operator (or playground) elects one. Here: make
# node $1 primary for a term above every node's current term, and the others its replicas.
elect() {
  local p=$1 i term=0 t auth
  for i in $(seq 1 "$NODES"); do
    t=$(curl -s --max-time 2 "http://127.0.0.1:$(port "$i")/v1/status" | sed -n 's/.*"term":\([0-9]*\).*/\1/p')
    if ((${t:-0} > term)); then term=$t; fi
  done
  term=$((term + 1))
  auth="Authorization: Bearer $(cat "$STATE/secret")"
  curl -sf --max-time 10 -H "$auth" -X POST --data "{\"term\":$term}" \
    "http://127.0.0.1:$(port "$p")/internal/v1/promote" >/dev/null
  for i in $(seq 1 "$NODES"); do
    if ((i == p)); then continue; fi
    curl -sf --max-time 10 -H "$auth" -X POST --data "{\"term\":$term,\"primary\":\"n$p\"}" \
      "http://127.0.0.1:$(port "$i")/internal/v1/follow" >/dev/null
  done
  echo "elected n$p primary for term $term"
}

# One line per node: role, term, primary, commit index, readiness (from GET /v1/status).
status() {
  local i json field line
  for i in $(seq 1 "$NODES"); do
    line="$(name "$i") http://127.0.0.1:$(port "$i")"
    if json=$(curl -sf --max-time 2 "http://127.0.0.1:$(port "$i")/v1/status"); then
      for field in role term primary commit_index ready; do
        line+=" $field=$(grep -o "\"$field\":[^,}]*" <<<"$json" | head -1 | cut -d: -f2- | tr -d '"')"
      done
    else
      line+=" unreachable"
    fi
    echo "$line"
  done
}

down() {
  local i
  for i in $(seq 1 "$NODES"); do
    # -t 10: the node handles SIGTERM; SIGKILL only if it does not stop in time.
    podman stop --ignore -t 10 "$(name "$i")" >/dev/null
    podman rm --force --ignore "$(name "$i")" >/dev/null
  done
  rm -rf "$STATE"
  echo "stopped $NODES nodes and removed $STATE"
}

case $CMD in
  up) up ;;
  status) status ;;
  down) down ;;
  *) usage 2 >&2 ;;
esac
