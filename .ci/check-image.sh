#!/usr/bin/env bash
# Prove the node image starts and serves: build it with scripts/podman-image.sh from the binaries
# .ci/run built, run one container, wait for /readyz, write and read a record, then stop it and check
# that the node (PID 1 in the container) exited on SIGTERM by itself instead of being killed.
#
# Installs podman, buildah and runc with apt-get when they are missing and we are root (CI is).
# Where podman cannot be installed, prints "SKIP: ..." and exits 0.
# Environment: RCLUSTER_BIN_DIR (default target/debug), CHECK_IMAGE_PORT (default 17101).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN_DIR=${RCLUSTER_BIN_DIR:-$ROOT/target/debug}
PORT=${CHECK_IMAGE_PORT:-17101}
TAG=ci
NAME=rcluster-check-image-$$
START=$SECONDS

skip() { echo "SKIP: $*"; echo "check-image: 0 passed, 0 failed, 1 skipped"; exit 0; }

install_podman() {
  command -v podman >/dev/null && command -v runc >/dev/null && return 0
  if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
    skip "podman/runc missing and cannot be installed here (needs root and apt-get)"
  fi
  echo "installing podman buildah runc with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq podman buildah runc; } </dev/null >/tmp/check-image-apt.log 2>&1; then
    tail -5 /tmp/check-image-apt.log
    skip "apt-get could not install podman (log above)"
  fi
}

cleanup() {
  podman rm --force --ignore "$NAME" >/dev/null 2>&1 || true
  if [[ -n ${IMAGE:-} ]]; then podman rmi --force "$IMAGE" >/dev/null 2>&1 || true; fi
  rm -rf "${DATA:-}"
}
trap cleanup EXIT

install_podman
IMAGE=$(scripts/podman-image.sh --component node --bin-dir "$BIN_DIR" --tag "$TAG" --strip | tail -1)
echo "image $IMAGE: $(podman image inspect --format '{{.Config.User}} {{json .Config.Entrypoint}}' "$IMAGE")"
[[ $(podman image inspect --format '{{.Config.User}}' "$IMAGE") == 65532:65532 ]] || { echo "FAIL: image does not run as 65532"; exit 1; }

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
  echo "FAIL: 127.0.0.1:$PORT is taken by another program; set CHECK_IMAGE_PORT"; exit 1
fi
DATA=$(mktemp -d)
chown 65532:65532 "$DATA"
podman --runtime runc run --detach --name "$NAME" --network host \
  --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --volume "$DATA:/data" \
  "$IMAGE" --data-dir /data --listen "127.0.0.1:$PORT" >/dev/null
URL=http://127.0.0.1:$PORT

deadline=$((SECONDS + 60))
until curl -sf --max-time 2 "$URL/readyz" >/dev/null; do
  if [[ $(podman inspect --format '{{.State.Running}}' "$NAME") != true ]]; then
    echo "FAIL: container exited:"; podman logs "$NAME" | tail -20; exit 1
  fi
  ((SECONDS < deadline)) || { echo "FAIL: no /readyz 200 within 60 s"; podman logs "$NAME" | tail -20; exit 1; }
  sleep 0.2
done
echo "container serves $URL/readyz: $(curl -s --max-time 2 "$URL/readyz")"

curl -sf --max-time 5 -X PUT -H 'Content-Type: application/json' --data '"from-the-image"' "$URL/v1/kv/check-image" >/dev/null
value=$(curl -sf --max-time 5 "$URL/v1/kv/check-image")
[[ $value == *from-the-image* ]] || { echo "FAIL: read back $value"; exit 1; }
echo "wrote and read a record through the container: $value"

# PID 1 gets no default signal handlers: a node that ignores SIGTERM is SIGKILLed after -t (exit 137).
stop_start=$SECONDS
podman stop -t 20 "$NAME" >/dev/null
code=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
if [[ $code == 137 ]]; then
  echo "FAIL: the node did not exit on SIGTERM (killed after 20 s)"; exit 1
fi
echo "stopped on SIGTERM in $((SECONDS - stop_start)) s, exit code $code"
[[ $code == 0 || $code == 143 ]] || { echo "FAIL: unexpected exit code $code"; podman logs "$NAME" | tail -20; exit 1; }

echo "check-image took $((SECONDS - START)) s"
echo "check-image: 1 passed, 0 failed"
