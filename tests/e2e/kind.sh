#!/usr/bin/env bash
# End-to-end on kind: build the images, load them into a kind cluster, install the operator, create
# the 3-node quorum example, write records, delete the primary pod, wait for the operator to promote
# a replica, read every record back, and print how long the failover took. Then change the pod
# template and wait for the operator's rollout (replicas first, the primary after a switchover),
# and read every record back again.
#
# NOT run by CI: our build machines have no Docker daemon and no network for kind's node image. It
# has been linted (bash -n, shellcheck) but not executed; run it on a workstation with:
#   docker, kind, kubectl, helm (or INSTALL=kustomize), cargo
#
#   tests/e2e/kind.sh                      # helm install, then delete the kind cluster at the end
#   INSTALL=kustomize tests/e2e/kind.sh    # kubectl apply -k manifests/install instead of helm
#   KEEP_CLUSTER=1 tests/e2e/kind.sh       # leave the cluster running to explore
#
# Environment: KIND_CLUSTER (rcluster-e2e), NAMESPACE (rcluster-e2e), RECORDS (50),
# FAILOVER_TIMEOUT_S (180), LOCAL_PORT (17400).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
KIND_CLUSTER=${KIND_CLUSTER:-rcluster-e2e}
NAMESPACE=${NAMESPACE:-rcluster-e2e}
INSTALL=${INSTALL:-helm}
RECORDS=${RECORDS:-50}
FAILOVER_TIMEOUT_S=${FAILOVER_TIMEOUT_S:-180}
LOCAL_PORT=${LOCAL_PORT:-17400}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
NODE_IMAGE=rcluster-node:$VERSION
OPERATOR_IMAGE=rcluster-operator:$VERSION
CLUSTER=profiles # metadata.name in manifests/examples/quorum-3.yaml
RCLUSTER=$ROOT/target/release/rcluster
PF_PID=""

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { log "FAIL: $*"; exit 1; }
need() { command -v "$1" >/dev/null || die "$1 is required"; }

cleanup() {
  if [[ -n $PF_PID ]]; then kill "$PF_PID" 2>/dev/null || true; fi
  if [[ -n ${RCLUSTER_CACERT:-} ]]; then rm -f "$RCLUSTER_CACERT"; fi
  if [[ -z ${KEEP_CLUSTER:-} ]]; then
    kind delete cluster --name "$KIND_CLUSTER" >/dev/null 2>&1 || true
  else
    log "kept kind cluster $KIND_CLUSTER (kind delete cluster --name $KIND_CLUSTER)"
  fi
}

# kubectl port-forward to the read-write Service, which selects the primary; restarted after a
# failover because a port-forward stays bound to the pod it started with.
port_forward() {
  if [[ -n $PF_PID ]]; then kill "$PF_PID" 2>/dev/null || true; wait "$PF_PID" 2>/dev/null || true; fi
  kubectl -n "$NAMESPACE" port-forward "service/$CLUSTER-rw" "$LOCAL_PORT:7000" >/dev/null 2>&1 &
  PF_PID=$!
  local deadline=$((SECONDS + 30))
  until curl -sf --max-time 2 --cacert "$RCLUSTER_CACERT" "https://127.0.0.1:$LOCAL_PORT/readyz" >/dev/null; do
    ((SECONDS < deadline)) || die "port-forward to $CLUSTER-rw did not reach a ready node in 30 s"
    sleep 0.5
  done
}

field() { kubectl -n "$NAMESPACE" get replicatedcluster "$CLUSTER" -o "jsonpath={.status.$1}"; }

for tool in docker kind kubectl cargo curl; do need "$tool"; done
[[ $INSTALL == helm ]] && need helm
trap cleanup EXIT

log "building images and the rcluster CLI"
docker build --target node -t "$NODE_IMAGE" .
docker build --target operator -t "$OPERATOR_IMAGE" .
cargo build --release -p rcluster-cli --bin rcluster

if ! kind get clusters | grep -qx "$KIND_CLUSTER"; then
  log "creating kind cluster $KIND_CLUSTER"
  kind create cluster --name "$KIND_CLUSTER" --wait 120s
fi
kubectl config use-context "kind-$KIND_CLUSTER" >/dev/null
kind load docker-image --name "$KIND_CLUSTER" "$NODE_IMAGE" "$OPERATOR_IMAGE"

log "installing the operator ($INSTALL)"
if [[ $INSTALL == helm ]]; then
  helm upgrade --install rcluster charts/rcluster --namespace rcluster-system --create-namespace \
    --set image.repository=rcluster-operator --set "image.tag=$VERSION" --wait --timeout 3m
  kubectl -n rcluster-system rollout status deployment/rcluster --timeout=120s
else
  kubectl apply -k manifests/install
  kubectl -n rcluster-system rollout status deployment/rcluster-operator --timeout=120s
fi

log "creating ReplicatedCluster $CLUSTER (3 nodes, ack quorum)"
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NAMESPACE" apply -f manifests/examples/quorum-3.yaml
kubectl -n "$NAMESPACE" wait "replicatedcluster/$CLUSTER" --for=jsonpath='{.status.phase}'=Running --timeout=300s
kubectl -n "$NAMESPACE" get replicatedcluster "$CLUSTER"

# TLS and tokens are on by default: trust the cluster's CA, write with its write token
# (docs/INSTALL.md, "Access tokens and TLS").
RCLUSTER_CACERT=$(mktemp /tmp/rcluster-e2e-ca.XXXXXX)
kubectl -n "$NAMESPACE" get secret "$CLUSTER-ca" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$RCLUSTER_CACERT"
RCLUSTER_TOKEN=$(kubectl -n "$NAMESPACE" get secret "$CLUSTER-tokens" -o jsonpath='{.data.write}' | base64 -d)
export RCLUSTER_CACERT RCLUSTER_TOKEN
port_forward
log "writing $RECORDS records through $CLUSTER-rw"
for i in $(seq 1 "$RECORDS"); do
  "$RCLUSTER" --endpoint "https://127.0.0.1:$LOCAL_PORT" put "e2e/$i" "value-$i" --ack quorum >/dev/null
done

old_primary=$(field primary)
old_term=$(field term)
[[ -n $old_primary ]] || die "status.primary is empty"
log "primary is $old_primary (term $old_term); deleting its pod"
t0=$(date +%s.%N)
kubectl -n "$NAMESPACE" delete pod "$old_primary" --wait=false

deadline=$((SECONDS + FAILOVER_TIMEOUT_S))
while :; do
  primary=$(field primary)
  term=$(field term)
  if [[ -n $primary && $primary != "$old_primary" && $term -gt $old_term ]]; then
    break
  fi
  ((SECONDS < deadline)) || die "no new primary within ${FAILOVER_TIMEOUT_S}s (status: $(field phase))"
  sleep 0.5
done
t1=$(date +%s.%N)
log "promoted $primary (term $term)"

port_forward
t2=$(date +%s.%N)
missing=0
for i in $(seq 1 "$RECORDS"); do
  got=$("$RCLUSTER" --endpoint "https://127.0.0.1:$LOCAL_PORT" --json get "e2e/$i" || true)
  [[ $got == *"value-$i"* ]] || { log "e2e/$i: got '$got'"; missing=$((missing + 1)); }
done
((missing == 0)) || die "$missing of $RECORDS acknowledged records missing after the failover"
log "all $RECORDS records read back from the new primary"

kubectl -n "$NAMESPACE" wait "replicatedcluster/$CLUSTER" --for=jsonpath='{.status.phase}'=Running --timeout=300s
kubectl -n "$NAMESPACE" get replicatedcluster "$CLUSTER"
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
  printf "failover: pod deleted -> new primary in status: %.1f s; -> serving through %s-rw: %.1f s\n", b - a, "'"$CLUSTER"'", c - a }'
log "operator's record: $(field lastFailover)"

# Rollout: a template change (here the CPU request) restarts every member, one at a time.
before_term=$(field term)
log "changing the pod template; the operator restarts the members one at a time"
kubectl -n "$NAMESPACE" patch replicatedcluster "$CLUSTER" --type merge \
  -p '{"spec":{"resources":{"requests":{"cpu":"110m"}}}}'
deadline=$((SECONDS + FAILOVER_TIMEOUT_S * 3))
while :; do
  revision=$(kubectl -n "$NAMESPACE" get statefulset "$CLUSTER" -o 'jsonpath={.status.updateRevision}')
  outdated=$(kubectl -n "$NAMESPACE" get pods -l "app.kubernetes.io/instance=$CLUSTER" \
    -o 'jsonpath={range .items[*]}{.metadata.labels.controller-revision-hash}{"\n"}{end}' |
    grep -cvx "$revision" || true)
  if [[ -n $revision && $outdated == 0 && $(field updatedReplicas) == 3 && $(field phase) == Running ]]; then
    break
  fi
  ((SECONDS < deadline)) || die "rollout not done (revision $revision, $outdated outdated pods, phase $(field phase))"
  sleep 1
done
[[ $(field term) -gt $before_term ]] || die "the primary was restarted without a switchover (term $(field term))"
log "rolled out revision $revision; primary $(field primary) (term $(field term))"
port_forward
for i in $(seq 1 "$RECORDS"); do
  got=$("$RCLUSTER" --endpoint "https://127.0.0.1:$LOCAL_PORT" --json get "e2e/$i" || true)
  [[ $got == *"value-$i"* ]] || die "e2e/$i missing after the rollout: '$got'"
done
log "all $RECORDS records read back after the rollout"
kubectl -n "$NAMESPACE" get events --field-selector reason=RollingUpdate
log "PASS"
