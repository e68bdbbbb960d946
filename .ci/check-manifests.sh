#!/usr/bin/env bash
# Offline checks of everything a user installs: the Helm chart, the kustomize install, the example
# clusters, the Grafana dashboard and the alert rules. No Kubernetes API server is involved: every
# rendered object is validated against a schema (built-in kinds: kubernetes-validate's bundled
# schemas; ReplicatedCluster: the CRD's openAPIV3Schema and CEL rules; monitoring.coreos.com kinds: a
# strict subset of prometheus-operator's types), and every metric a query names must be exported.
#
# Prerequisite: the debug binaries are built (`cargo build --workspace` in .ci/run), because the
# metric check starts a primary and a replica on loopback and asks the operator for its registry:
#   target/debug/rcluster-node, target/debug/rcluster-operator
# Environment:
#   RCLUSTER_NODE_BIN, RCLUSTER_OPERATOR_BIN  other binaries (e.g. target/release/...)
#   RCLUSTER_TOOLS_CACHE   where helm, kubectl and the Python venv are cached (default .cache/tools)
#   METRICS_ALLOWLIST      file of metric names (one a line, # comments) that may be queried before
#                          they are exported; default none: every queried metric must exist
# Needs: bash, curl, npm, unzip, python3 with venv. Works without stdin and with CI=true.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

KUBE_VERSION=1.35
PY_PINS=(kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3 promql-parser==0.11.0
  common-expression-language==0.10.0)
CACHE=${RCLUSTER_TOOLS_CACHE:-$ROOT/.cache/tools}
NODE_BIN=${RCLUSTER_NODE_BIN:-$ROOT/target/debug/rcluster-node}
OPERATOR_BIN=${RCLUSTER_OPERATOR_BIN:-$ROOT/target/debug/rcluster-operator}
ALLOWLIST=${METRICS_ALLOWLIST:-}
CHART=charts/rcluster
CRD=crds/replicatedclusters.rcluster.dev.yaml

WORK=$(mktemp -d)
NODE_PIDS=()
NODES_URLS=()
cleanup() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '%s\n' "$*"; }

# --- tools -----------------------------------------------------------------------------------

# helm and kubectl: the same cached binaries as tests/k8s/control-plane.sh.
# shellcheck source-path=SCRIPTDIR/..
source "$ROOT/.ci/lib/kube-tools.sh"

# The venv's name carries the pins, so changing a pin builds a fresh one.
make_venv() {
  local key
  key=$(printf '%s\n' "${PY_PINS[@]}" | sha256sum | cut -c1-12)
  VENV=$CACHE/venv-$key
  if [[ ! -e $VENV/.complete ]]; then
    log "creating Python venv with ${PY_PINS[*]}"
    rm -rf "$CACHE"/venv-*
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PINS[@]}" </dev/null
    touch "$VENV/.complete"
  fi
  PY=$VENV/bin/python
}

# --- checks ----------------------------------------------------------------------------------

validate() { "$PY" .ci/lib/validate_manifests.py --crd "$CRD" --kube-version "$KUBE_VERSION" "$@"; }

same_bytes() {
  if ! cmp -s "$1" "$2"; then
    log "ERROR: $2 differs from $1; copy it: cp $1 $2"
    diff -u "$1" "$2" | head -20 || true
    return 1
  fi
  log "identical: $2 == $1"
}

check_copies() {
  same_bytes "$CRD" "$CHART/crds/$(basename "$CRD")"
  same_bytes manifests/monitoring/rcluster-dashboard.json "$CHART/files/rcluster-dashboard.json"
  same_bytes manifests/monitoring/rcluster-alerts.yaml "$CHART/files/rcluster-alerts.yaml"
  # The chart must not ship a CRD that the root folder lacks, or the reverse.
  diff <(grep -l '^kind: CustomResourceDefinition' crds/*.yaml | xargs -n1 basename) \
    <(grep -l '^kind: CustomResourceDefinition' "$CHART"/crds/*.yaml | xargs -n1 basename)
}

chart_values_sets() {
  printf '%s\n' default "$CHART/ci/all-on-values.yaml" "$CHART/ci/namespace-scope-values.yaml"
}

values_args() { [[ $1 == default ]] || printf -- '--values\n%s\n' "$1"; }

check_helm_lint() {
  local set
  while read -r set; do
    mapfile -t args < <(values_args "$set")
    log "helm lint --strict ($set)"
    "$HELM" lint --strict --quiet "$CHART" "${args[@]}"
  done < <(chart_values_sets)
}

check_helm_template() {
  local set out
  while read -r set; do
    mapfile -t args < <(values_args "$set")
    out=$WORK/helm-$(basename "$set" .yaml).yaml
    log "helm template ($set)"
    "$HELM" template rcluster "$CHART" --namespace rcluster-system --include-crds \
      --kube-version "$KUBE_VERSION.0" "${args[@]}" >"$out"
    validate "$out"
  done < <(chart_values_sets)
  # All options on must render every optional kind.
  local kind
  for kind in ServiceMonitor PodMonitor PrometheusRule ConfigMap CustomResourceDefinition; do
    grep -q "^kind: $kind\$" "$WORK/helm-all-on-values.yaml" || { log "ERROR: all-on render lacks $kind"; return 1; }
  done
  # The dashboard ConfigMap must carry the JSON unchanged.
  "$PY" - "$WORK/helm-all-on-values.yaml" manifests/monitoring/rcluster-dashboard.json <<'EOF'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "ConfigMap"]
assert docs[0]["metadata"]["labels"]["grafana_dashboard"] == "1", "sidecar label missing"
assert json.loads(docs[0]["data"]["rcluster-dashboard.json"]) == json.load(open(sys.argv[2])), "dashboard JSON changed"
print("dashboard ConfigMap holds manifests/monitoring/rcluster-dashboard.json with grafana_dashboard=1")
EOF
}

# values.schema.json must reject bad values, or it checks nothing.
check_values_schema() {
  local bad
  for bad in 'rbac.scope=everywhere' 'replicaCount=-1' 'monitoring.dashboard.enabled=maybe' 'unknownKey=1'; do
    if "$HELM" template rcluster "$CHART" --set "$bad" >/dev/null 2>"$WORK/err"; then
      log "ERROR: values.schema.json accepted --set $bad"
      return 1
    fi
    log "rejected --set $bad: $(grep -m1 -o 'values don.t meet.*\|at .*' "$WORK/err" | head -c 160)"
  done
}

# The chart's RBAC must grant what manifests/rbac grants, no more and no less: the operator's rules,
# and the view/edit roles aggregated into the built-in ones.
check_rbac_parity() {
  "$KUBECTL" kustomize manifests/rbac >"$WORK/rbac.yaml"
  "$PY" - "$WORK/rbac.yaml" "$WORK/helm-default.yaml" "$WORK/helm-namespace-scope-values.yaml" <<'EOF'
import sys, yaml

def rules(path):
    """{role purpose: {(group, resource, verb)}}; purpose is view, edit or operator (by name)."""
    out = {}
    for d in yaml.safe_load_all(open(path)):
        if not d or d["kind"] not in ("ClusterRole", "Role"):
            continue
        # The uninstall hook's Role (scale the operator to 0) exists only while `helm uninstall`
        # runs its pre-delete hook; the kustomize install has no hooks and no such Role.
        if (d["metadata"].get("annotations") or {}).get("helm.sh/hook"):
            continue
        name = d["metadata"]["name"]
        purpose = next((p for p in ("view", "edit") if name.endswith("-" + p)), "operator")
        got = out.setdefault(purpose, set())
        for r in d.get("rules", []):
            for g in r.get("apiGroups", [""]):
                for res in r.get("resources", []):
                    for verb in r.get("verbs", []):
                        got.add((g, res, verb))
    return out

want = rules(sys.argv[1])
failed = False
for path in sys.argv[2:]:
    got = rules(path)
    for purpose in sorted(set(want) | set(got)):
        w, g = want.get(purpose, set()), got.get(purpose, set())
        if w != g:
            failed = True
            print(f"ERROR: chart {purpose} RBAC ({path.rsplit('/', 1)[-1]}) differs from manifests/rbac")
            for grp, res, verb in sorted(w - g):
                print(f"  missing in chart: {grp or 'core'}/{res} {verb}")
            for grp, res, verb in sorted(g - w):
                print(f"  only in chart:    {grp or 'core'}/{res} {verb}")
if failed:
    sys.exit(1)
print("chart RBAC grants what manifests/rbac grants: "
      + ", ".join(f"{p} {len(r)} (group, resource, verb)" for p, r in sorted(want.items())))
EOF
}

check_kustomize() {
  local dir
  for dir in manifests/install manifests/monitoring; do
    log "kubectl kustomize $dir"
    "$KUBECTL" kustomize "$dir" >"$WORK/kustomize.yaml"
    validate "$WORK/kustomize.yaml"
  done
}

check_examples() {
  log "examples: $(echo manifests/examples/*.yaml)"
  validate manifests/examples/*.yaml
}

# Start a primary and one replica on free loopback ports, elect the primary through the internal
# API (as the operator does), exercise every API on it so labelled families have samples, and scrape
# both: the primary reports replication lag per replica, the replica its own role.
scrape_node() {
  [[ -x $NODE_BIN ]] || { log "ERROR: $NODE_BIN missing: build first (cargo build --workspace)"; return 1; }
  # Steps run in a subshell, which does not inherit the EXIT trap: stop the nodes however it ends.
  trap stop_nodes EXIT
  local help
  help=$("$NODE_BIN" --help)
  if [[ $help != *--member* ]]; then
    log "this node build has no --member flag: scraping one standalone node"
    start_node n1 0
    NODES_URLS=("$(node_url n1)")
  else
    local ports secret=$WORK/secret
    mapfile -t ports < <("$PY" -c 'import socket
for _ in range(2):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$secret"
    local members=(--member "n1=http://127.0.0.1:${ports[0]}" --member "n2=http://127.0.0.1:${ports[1]}")
    start_node n1 "${ports[0]}" "${members[@]}" --secret-file "$secret"
    start_node n2 "${ports[1]}" "${members[@]}" --secret-file "$secret"
    local auth=(-H "Authorization: Bearer $(cat "$secret")")
    curl -sf --max-time 10 "${auth[@]}" -X POST --data '{"term":1}' "$(node_url n1)/internal/v1/promote" >/dev/null
    curl -sf --max-time 10 "${auth[@]}" -X POST --data '{"term":1,"primary":"n1"}' \
      "$(node_url n2)/internal/v1/follow" >/dev/null
    NODES_URLS=("$(node_url n1)" "$(node_url n2)")
  fi
  local url
  for url in "${NODES_URLS[@]}"; do
    wait_http_ok "$url/readyz" 30
  done
  exercise_api "${NODES_URLS[0]}"
  local i=0
  for url in "${NODES_URLS[@]}"; do
    i=$((i + 1))
    curl -sf --max-time 10 "$url/metrics" >"$WORK/node-metrics-$i.txt"
    log "node $url: $(grep -c '^# TYPE' "$WORK/node-metrics-$i.txt") metric families"
  done
  stop_nodes
}

# start_node NAME PORT [FLAGS...]: the node prints its URL on its ready line.
start_node() {
  local name=$1 port=$2 _
  shift 2
  mkdir -p "$WORK/$name"
  "$NODE_BIN" --data-dir "$WORK/$name" --listen "127.0.0.1:$port" --name "$name" "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" </dev/null &
  NODE_PIDS+=("$!")
  for _ in $(seq 1 300); do
    [[ -n $(node_url "$name") ]] && { log "$name ready on $(node_url "$name")"; return 0; }
    kill -0 "${NODE_PIDS[-1]}" 2>/dev/null || { log "ERROR: node $name exited:"; cat "$WORK/$name.err"; return 1; }
    sleep 0.1
  done
  log "ERROR: node $name printed no ready line in 30 s"
  cat "$WORK/$name.err"
  return 1
}

node_url() { sed -n 's/^rcluster-node ready on \(http:[^ ]*\)$/\1/p' "$WORK/$1.out" 2>/dev/null | head -1; }

wait_http_ok() {
  local url=$1 deadline=$((SECONDS + $2))
  until curl -sf --max-time 2 "$url" >/dev/null; do
    ((SECONDS < deadline)) || { log "ERROR: no 200 from $url within $2 s: $(curl -s --max-time 2 "$url")"; return 1; }
    sleep 0.1
  done
}

exercise_api() {
  local url=$1
  local c=(curl -s -o /dev/null --max-time 10 -H 'Content-Type: application/json')
  "${c[@]}" -X PUT --data '"v1"' "$url/v1/kv/ci/a"
  "${c[@]}" "$url/v1/kv/ci/a"
  "${c[@]}" "$url/v1/kv/ci/missing"
  "${c[@]}" -X POST --data '{"delta":2}' "$url/v1/kv/ci/n/incr"
  "${c[@]}" "$url/v1/kv?prefix=ci/"
  "${c[@]}" -X DELETE "$url/v1/kv/ci/a"
  "${c[@]}" -X PUT --data '{}' "$url/v1/topics/ci"
  "${c[@]}" "$url/v1/topics"
  "${c[@]}" -X PUT "$url/v1/topics/ci/subscriptions/s?start=earliest"
  "${c[@]}" -X POST --data '{"m":1}' "$url/v1/topics/ci/messages"
  "${c[@]}" -X POST "$url/v1/topics/ci/subscriptions/s/pull?max=10"
  "${c[@]}" "$url/v1/topics/ci/messages?from=0"
  "${c[@]}" -X DELETE "$url/v1/topics/ci/subscriptions/s"
  "${c[@]}" -X DELETE "$url/v1/topics/ci"
  "${c[@]}" "$url/v1/status"
}

stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  NODE_PIDS=()
}

check_metrics() {
  scrape_node
  [[ -x $OPERATOR_BIN ]] || { log "ERROR: $OPERATOR_BIN missing: build first"; return 1; }
  "$OPERATOR_BIN" metrics >"$WORK/operator-metrics.txt" </dev/null
  log "operator: $(grep -c '^# TYPE' "$WORK/operator-metrics.txt") metric families"
  local args=() f
  for f in "$WORK"/node-metrics-*.txt "$WORK/operator-metrics.txt"; do
    args+=(--metrics "$f")
  done
  if [[ -n $ALLOWLIST ]]; then
    args+=(--allow-missing "$ALLOWLIST")
  fi
  "$PY" .ci/lib/check_metrics.py --dashboard manifests/monitoring/rcluster-dashboard.json \
    --rules manifests/monitoring/rcluster-alerts.yaml "${args[@]}"
}

# --- driver ----------------------------------------------------------------------------------

PASSED=0 FAILED=0 FAILED_NAMES=()
run_step() {
  local name=$1 start=$SECONDS rc
  shift
  log ""
  log "=== $name"
  set +e
  ( set -e; "$@" )
  rc=$?
  set -e
  if ((rc == 0)); then
    PASSED=$((PASSED + 1))
    log "--- ok: $name ($((SECONDS - start)) s)"
  else
    FAILED=$((FAILED + 1)) FAILED_NAMES+=("$name")
    log "--- FAILED: $name ($((SECONDS - start)) s)"
  fi
}

TOTAL_START=$SECONDS
mkdir -p "$CACHE"
fetch_kube_tools "$CACHE"
make_venv
log "helm $("$HELM" version --short), kubectl $("$KUBECTL" version --client -o json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), validating against Kubernetes $KUBE_VERSION"

for required in "$CRD" manifests/rbac; do
  [[ -e $required ]] || { log "ERROR: $required is missing"; exit 1; }
done

run_step "chart copies match crds/ and manifests/monitoring/" check_copies
run_step "helm lint --strict" check_helm_lint
run_step "helm template | schema validation" check_helm_template
run_step "values.schema.json rejects bad values" check_values_schema
run_step "chart RBAC == manifests/rbac" check_rbac_parity
run_step "kubectl kustomize | schema validation" check_kustomize
run_step "example ReplicatedClusters match the CRD schema" check_examples
run_step "dashboard and alert queries name exported metrics" check_metrics

log ""
log "check-manifests took $((SECONDS - TOTAL_START)) s"
if ((FAILED > 0)); then
  log "failed: ${FAILED_NAMES[*]}"
fi
log "check-manifests: $PASSED passed, $FAILED failed"
((FAILED == 0))
