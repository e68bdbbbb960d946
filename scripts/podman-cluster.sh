#!/usr/bin/env bash
# Run a three-node rcluster from the node image on loopback with podman, and wait until every node
# answers /readyz. Containers use the host network (this VM cannot set up container networking), so
# the nodes listen on 127.0.0.1:BASE_PORT, BASE_PORT+1, BASE_PORT+2.
#
#   scripts/podman-cluster.sh up     [--image IMG] [--base-port 17001] [--nodes 3] [--ack quorum]
#                                    [--standalone]
#   scripts/podman-cluster.sh status [--base-port 17001] [--nodes 3]
#   scripts/podman-cluster.sh down   [--nodes 3]
#
# The image comes from scripts/podman-image.sh (default localhost/rcluster-node:<workspace version>).
# Data and the cluster secret live under ${RCLUSTER_PODMAN_STATE:-/tmp/rcluster-podman}; `down` stops
# the containers and removes that folder. --standalone starts independent single-node services instead
# (for node builds without the replication flags --member/--secret-file/--ack). Then try:
#   rcluster --endpoint http://127.0.0.1:17001 put greeting hello
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
IMAGE=localhost/rcluster-node:$VERSION
BASE_PORT=17001
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

# Wait until url answers 200, at most READY_TIMEOUT_S seconds; print the last answer on failure.
wait_ready() {
  local url=$1 deadline=$((SECONDS + READY_TIMEOUT_S))
  while ((SECONDS < deadline)); do
    if curl -sf --max-time 2 "$url" >/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  echo "no 200 from $url within ${READY_TIMEOUT_S}s; last answer: $(curl -s --max-time 2 "$url" || echo none)" >&2
  return 1
}

up() {
  podman image exists "$IMAGE" || { echo "image $IMAGE not found: run scripts/podman-image.sh first" >&2; exit 1; }
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
  local i member_args=()
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
  for i in $(seq 1 "$NODES"); do
    if ! wait_ready "http://127.0.0.1:$(port "$i")/readyz"; then
      podman logs --tail 20 "$(name "$i")" >&2 || true
      exit 1
    fi
    echo "$(name "$i") ready"
  done
  status
}

status() {
  local i
  for i in $(seq 1 "$NODES"); do
    printf '%s  ' "$(name "$i")"
    curl -s --max-time 2 "http://127.0.0.1:$(port "$i")/v1/status" | head -c 300 || echo "unreachable"
    echo
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
