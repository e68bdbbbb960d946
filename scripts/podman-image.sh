#!/usr/bin/env bash
# Build a FROM-scratch container image of rcluster from binaries built on this host, with podman and
# no registry: the image holds the binary, the shared libraries `ldd` lists for it, an /etc/passwd
# with the unprivileged user 65532 (as in the Dockerfile's distroless images), /tmp and /data.
#
#   scripts/podman-image.sh [--component node|operator] [--bin-dir DIR] [--tag TAG] [--strip]
#
#   --component  node (default; rcluster-node plus the rcluster CLI) or operator
#   --bin-dir    where the binaries are (default target/release; CI passes target/debug)
#   --tag        image tag (default the workspace version); the image is localhost/rcluster-<component>
#   --strip      strip debug info from the copies in the image (debug builds shrink ~5x; the host
#                binaries are untouched; release builds keep line tables for backtraces otherwise)
#
# Prints the image reference on the last line of stdout. Needs podman (apt-get install podman
# buildah runc). For images built from source anywhere, use the Dockerfile instead.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPONENT=node
BIN_DIR=${RCLUSTER_BIN_DIR:-$ROOT/target/release}
TAG=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
UID_GID=65532
STRIP=""

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while (($#)); do
  case $1 in
    --component) COMPONENT=${2:?}; shift 2 ;;
    --bin-dir) BIN_DIR=${2:?}; shift 2 ;;
    --tag) TAG=${2:?}; shift 2 ;;
    --strip) STRIP=1; shift ;;
    -h|--help) usage 0 ;;
    *) echo "unknown argument: $1" >&2; usage 2 >&2 ;;
  esac
done

case $COMPONENT in
  node) BINARIES=(rcluster-node rcluster); PORT=7000 ;;
  operator) BINARIES=(rcluster-operator); PORT=8080 ;;
  *) echo "--component must be node or operator, not $COMPONENT" >&2; exit 2 ;;
esac
command -v podman >/dev/null || { echo "podman is not installed (apt-get install podman buildah runc)" >&2; exit 1; }
for b in "${BINARIES[@]}"; do
  [[ -x $BIN_DIR/$b ]] || { echo "$BIN_DIR/$b not found: cargo build --release (or pass --bin-dir)" >&2; exit 1; }
done
[[ -n $TAG ]] || { echo "cannot read the workspace version from Cargo.toml; pass --tag" >&2; exit 1; }

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
ROOTFS=$CTX/rootfs
mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc" "$ROOTFS/tmp" "$CTX/data"
chmod 1777 "$ROOTFS/tmp"

# Copy a file to the same path inside the image, following symlinks (libc.so.6 -> libc-2.36.so).
copy_in() { mkdir -p "$ROOTFS$(dirname "$1")"; cp -L "$1" "$ROOTFS$1"; }

for b in "${BINARIES[@]}"; do
  cp "$BIN_DIR/$b" "$ROOTFS/usr/local/bin/$b"
  if [[ -n $STRIP ]]; then
    strip --strip-debug "$ROOTFS/usr/local/bin/$b"
  fi
  # ldd prints "libx.so => /path (addr)" for libraries and "/lib64/ld-linux... (addr)" for the loader.
  while read -r lib; do
    [[ -n $lib ]] && copy_in "$lib"
  done < <(ldd "$BIN_DIR/$b" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
done

cat >"$ROOTFS/etc/passwd" <<EOF
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:$UID_GID:$UID_GID:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$ROOTFS/etc/group" <<EOF
root:x:0:
nonroot:x:$UID_GID:
EOF

{
  echo "FROM scratch"
  echo "COPY rootfs/ /"
  if [[ $COMPONENT == node ]]; then
    echo "COPY --chown=$UID_GID:$UID_GID data /data"
    echo "ENV RCLUSTER_LISTEN=0.0.0.0:$PORT RCLUSTER_DATA_DIR=/data"
  fi
  echo "USER $UID_GID:$UID_GID"
  echo "EXPOSE $PORT"
  echo "LABEL org.opencontainers.image.title=rcluster-$COMPONENT org.opencontainers.image.version=$TAG"
  echo "ENTRYPOINT [\"/usr/local/bin/${BINARIES[0]}\"]"
  if [[ $COMPONENT == operator ]]; then
    echo 'CMD ["run"]'
  fi
} >"$CTX/Containerfile"

IMAGE=localhost/rcluster-$COMPONENT:$TAG
podman build --quiet --tag "$IMAGE" --file "$CTX/Containerfile" "$CTX" >/dev/null
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE ($((size / 1024 / 1024)) MiB) from $BIN_DIR" >&2
echo "$IMAGE"
