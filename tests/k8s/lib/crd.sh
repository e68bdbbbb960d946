# shellcheck shell=bash
# Step 1: the CRD on a real API server. The fixtures are operator/tests/fixtures (valid/ and
# invalid/, each invalid one naming the message it must be rejected with in a `# expect:` line) and
# manifests/examples; offline they are checked by operator/tests/crd_schema.rs, here by the server.

CRD_NS=crd-check

check_crd() {
  "$KUBECTL" apply --server-side -f crds/replicatedclusters.rcluster.dev.yaml
  "$KUBECTL" wait --for condition=Established --timeout 60s crd/replicatedclusters.rcluster.dev
  # A structural schema is required for v1 CRDs; the server reports problems as a condition.
  local problems
  problems=$("$KUBECTL" get crd replicatedclusters.rcluster.dev \
    -o jsonpath='{.status.conditions[?(@.type=="NonStructuralSchema")].message}')
  [[ -z $problems ]] || die "the server finds the schema non-structural: $problems"
  "$KUBECTL" create namespace "$CRD_NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null

  local f n=0 ns
  for f in operator/tests/fixtures/valid/*.yaml manifests/examples/*.yaml; do
    # A fixture that names its namespace is checked there.
    ns=$(sed -n 's/^  namespace: //p' "$f" | head -1)
    "$KUBECTL" create namespace "${ns:-$CRD_NS}" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
    "$KUBECTL" apply --dry-run=server -n "${ns:-$CRD_NS}" -f "$f" >/dev/null 2>"$RUN/crd.err" ||
      die "the server rejected $f: $(cat "$RUN/crd.err")"
    n=$((n + 1))
  done
  log "accepted by the server: $n good examples"

  local expect out rejected=0
  for f in operator/tests/fixtures/invalid/*.yaml; do
    expect=$(sed -n 's/^# expect: //p' "$f" | head -1)
    [[ -n $expect ]] || die "$f has no '# expect:' line"
    if out=$("$KUBECTL" apply --dry-run=server -n "$CRD_NS" -f "$f" 2>&1); then
      die "the server accepted $f (expected: $expect)"
    fi
    [[ $out == *"$expect"* ]] || die "$f: rejected, but not with \"$expect\": $out"
    rejected=$((rejected + 1))
  done
  log "rejected by the server with the stated message: $rejected bad fixtures"

  check_storage_transition_rule
  check_printer_columns
  # Gone before the operator starts: it would reconcile what is left in a terminating namespace.
  "$KUBECTL" delete namespace "$CRD_NS" --wait=true --timeout 120s >/dev/null
}

# `storage` is immutable: a transition rule (oldSelf) that only an update on the server evaluates.
check_storage_transition_rule() {
  "$KUBECTL" apply -n "$CRD_NS" -f - >/dev/null <<'EOF'
apiVersion: rcluster.dev/v1alpha1
kind: ReplicatedCluster
metadata: {name: transition}
spec: {replicas: 3, storage: {size: 1Gi}}
EOF
  local out
  if out=$("$KUBECTL" patch rcl transition -n "$CRD_NS" --type merge \
    -p '{"spec":{"storage":{"size":"2Gi"}}}' 2>&1); then
    die "the server let spec.storage change: $out"
  fi
  [[ $out == *"storage cannot change after creation"* ]] || die "storage change rejected for another reason: $out"
  "$KUBECTL" patch rcl transition -n "$CRD_NS" --type merge -p '{"spec":{"replicas":5}}' >/dev/null ||
    die "the server refused a change of spec.replicas"
  # Created without tls.enabled (the operator decides and records): it cannot be set later.
  if out=$("$KUBECTL" patch rcl transition -n "$CRD_NS" --type merge \
    -p '{"spec":{"tls":{"enabled":false}}}' 2>&1); then
    die "the server let spec.tls.enabled be set on a live cluster: $out"
  fi
  [[ $out == *"tls.enabled cannot be set, changed or removed"* ]] || die "tls.enabled refused for another reason: $out"
  log "transition rules: spec.storage and spec.tls.enabled are immutable, spec.replicas is not"
}

check_printer_columns() {
  local header name
  header=$("$KUBECTL" get rcl -n "$CRD_NS" | head -1)
  [[ $(echo "$header" | tr -s ' ') == "NAME SHARDS REPLICAS READY PRIMARY TERM PHASE RESHARD AGE" ]] ||
    die "kubectl get rcl prints \"$header\""
  [[ $("$KUBECTL" get rcl transition -n "$CRD_NS" -o custom-columns=R:.spec.replicas --no-headers) == 5 ]] ||
    die "the printer column REPLICAS does not show spec.replicas"
  for name in rcl rcluster replicatedcluster replicatedclusters replicatedclusters.rcluster.dev; do
    "$KUBECTL" get "$name" transition -n "$CRD_NS" -o name >/dev/null || die "kubectl get $name does not resolve"
  done
  # The category lists the kind too (kubectl get rcluster resolves the short name first).
  "$KUBECTL" api-resources --categories rcluster -o name | grep -qx replicatedclusters.rcluster.dev ||
    die "the category rcluster does not list replicatedclusters"
  # No clash with a built-in short name: each of ours names one resource, and `rc` is still only
  # ReplicationController's.
  local short owners
  for short in rcl rcluster rc; do
    owners=$("$KUBECTL" api-resources --no-headers | awk -v s="$short" '{n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == s) print $1}')
    [[ $(wc -l <<<"$owners") == 1 ]] || die "short name $short belongs to: $owners"
  done
  log "printer columns: $header; short names rcl, rcluster resolve"
}
