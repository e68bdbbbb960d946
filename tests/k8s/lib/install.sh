# shellcheck shell=bash
# The operator installed by Helm (two replicas, Lease election) and by kustomize, each running as a
# local process authenticated as its ServiceAccount with only the RBAC that the chart or
# manifests/rbac grant; every one of its requests is in the audit log with its response. Both
# uninstalls stop the operators before their RBAC goes (Helm: the chart's pre-delete hook Job;
# kustomize: scale to 0 first, as docs/INSTALL.md says), so no request of theirs is ever refused.

OP_NS=rcluster-system
LEASE=rcluster-operator-leader

# operator_pods SELECTOR: names of the operator pods that are Running and not being deleted.
operator_pods() {
  "$KUBECTL" get pods -n "$OP_NS" -l "$1" -o json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["items"]:
    if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp"):
        print(p["metadata"]["name"])'
}

pod_log() { echo "$RUN/pods/$1_$2.log"; }

# pod_pid NAMESPACE POD: pid of the pod's current process (the test kubelet writes it).
pod_pid() { cat "$RUN/pods/$1_$2.pid"; }

# A process runs for the pod and has logged LINE.
pod_logged() { [[ -e $(pod_log "$1" "$2") ]] && grep -q -- "$3" "$(pod_log "$1" "$2")"; }

lease_holder() {
  "$KUBECTL" get lease "$LEASE" -n "$OP_NS" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null
}

# whoami_of NAMESPACE POD: the user the pod's process authenticates as (its kubeconfig).
whoami_of() {
  local dir
  dir=$(find "$RUN/pods" -maxdepth 1 -type d -name "$1_$2_*" | tail -1)
  "$KUBECTL" auth whoami --kubeconfig "$dir/kubeconfig" -o jsonpath='{.status.userInfo.username}'
}

# wait_operators SELECTOR N SERVICEACCOUNT: N operator processes run, as that ServiceAccount.
wait_operators() {
  local selector=$1 n=$2 sa=$3 pod user
  wait_until 120 "$n operator pods are Running" bash -c "[[ \$(\"$KUBECTL\" get pods -n $OP_NS -l '$selector' \
    --field-selector status.phase=Running --no-headers 2>/dev/null | wc -l) == $n ]]"
  for pod in $(operator_pods "$selector"); do
    wait_until 60 "the operator process of $pod serves" pod_logged "$OP_NS" "$pod" "serving /metrics"
    user=$(whoami_of "$OP_NS" "$pod")
    [[ $user == "system:serviceaccount:$OP_NS:$sa" ]] || die "$pod authenticates as $user, not as ServiceAccount $sa"
    log "$pod: operator process authenticated as $user"
  done
}

check_helm_install() {
  "$HELM" install rcluster charts/rcluster -n "$OP_NS" --create-namespace --set replicaCount=2 \
    --wait --timeout 3m
  local selector=app.kubernetes.io/instance=rcluster,app.kubernetes.io/component=operator
  wait_operators "$selector" 2 rcluster
  wait_until 60 "one operator holds the Lease" bash -c "[[ -n \$(\"$KUBECTL\" get lease $LEASE -n $OP_NS \
    -o jsonpath='{.spec.holderIdentity}' 2>/dev/null) ]]"
  local holder pods other pod
  holder=$(lease_holder)
  mapfile -t pods < <(operator_pods "$selector")
  for pod in "${pods[@]}"; do
    [[ $pod == "$holder" ]] || other=$pod
  done
  [[ " ${pods[*]} " == *" $holder "* ]] || die "the Lease holder $holder is none of the operator pods ${pods[*]}"
  wait_until 30 "the Lease holder $holder starts its controllers" \
    pod_logged "$OP_NS" "$holder" "leading: starting the controllers"
  pod_logged "$OP_NS" "$other" "leading: starting the controllers" && die "both operators lead"
  pod_logged "$OP_NS" "$other" "waiting for the leader lease" || die "$other is not waiting for the Lease"
  log "Lease $LEASE held by $holder; $other waits"
  local managers
  managers=$("$KUBECTL" get lease "$LEASE" -n "$OP_NS" --show-managed-fields -o jsonpath='{.metadata.managedFields[*].manager}')
  [[ $(tr ' ' '\n' <<<"$managers" | sort -u) == rcluster-operator ]] ||
    die "the Lease was written by field managers '$managers', not only rcluster-operator"

  # The holder releases the Lease on SIGTERM; the standby or the Deployment's replacement pod,
  # whichever asks first, takes it. Either way exactly one living operator leads.
  local t0=$SECONDS next
  "$KUBECTL" delete pod "$holder" -n "$OP_NS" --wait=false
  wait_until 60 "another operator takes the Lease over" bash -c "h=\$(\"$KUBECTL\" get lease $LEASE -n $OP_NS \
    -o jsonpath='{.spec.holderIdentity}'); [[ -n \$h && \$h != $holder ]]"
  next=$(lease_holder)
  wait_until 30 "$next starts its controllers" pod_logged "$OP_NS" "$next" "leading: starting the controllers"
  log "takeover: $next leads $((SECONDS - t0)) s after the holder's pod was deleted"
  echo "Lease takeover after deleting the holder's pod: $((SECONDS - t0)) s" >>"$RUN/report.txt"
  # The Deployment replaced the deleted pod; of the two living operators only the holder leads.
  wait_operators "$selector" 2 rcluster
  for pod in $(operator_pods "$selector"); do
    [[ $pod == "$next" ]] && continue
    pod_logged "$OP_NS" "$pod" "leading: starting the controllers" && die "$pod leads beside $next"
    pod_logged "$OP_NS" "$pod" "waiting for the leader lease" || die "$pod is not waiting for the Lease"
  done
  log "of the living operators only $next leads"
}

# lease_released: the Lease exists and nobody holds it.
lease_released() {
  [[ -n $("$KUBECTL" get lease "$LEASE" -n "$OP_NS" -o name 2>/dev/null) && -z $(lease_holder) ]]
}

check_helm_uninstall() {
  local holder
  holder=$(lease_holder)
  [[ -n $holder ]] || die "nobody holds the Lease before the uninstall"
  # The chart's pre-delete hook scales the operator to 0 and waits until its pods are gone; only
  # then does Helm delete the RBAC. The holder releases the Lease on SIGTERM, with its RBAC intact.
  "$HELM" uninstall rcluster -n "$OP_NS" --wait --timeout 3m
  local hook
  hook=$(find "$RUN/pods" -maxdepth 1 -name "${OP_NS}_rcluster-stop-operators-*.log" | head -1)
  [[ -n $hook ]] || die "the pre-delete hook's pod did not run"
  grep -q "operators stopped" "$hook" || die "the pre-delete hook did not stop the operators: $(tail -3 "$hook")"
  log "pre-delete hook $(basename "$hook" .log): $(grep -o 'scaled to 0[^"]*' "$hook" | head -1), then operators stopped"
  pod_logged "$OP_NS" "$holder" "leader lease released" || die "$holder did not release the Lease"
  lease_released || die "the Lease is still held by $(lease_holder) after the uninstall"
  [[ -z $("$KUBECTL" get pods -n "$OP_NS" -l app.kubernetes.io/instance=rcluster -o name) ]] ||
    die "pods of the release are left: $("$KUBECTL" get pods -n "$OP_NS" -l app.kubernetes.io/instance=rcluster -o name)"
  local f
  for f in "$RUN/pods/${OP_NS}"_rcluster-*.pid; do
    kill -0 "$(cat "$f")" 2>/dev/null && die "the process of $(basename "$f" .pid) still runs"
  done
  [[ -z $("$KUBECTL" get role,rolebinding,job -n "$OP_NS" -l app.kubernetes.io/instance=rcluster -o name) ]] ||
    die "helm uninstall left objects: $("$KUBECTL" get role,rolebinding,job -n "$OP_NS" -l app.kubernetes.io/instance=rcluster -o name)"
  log "helm uninstall: the hook stopped both operators first; $holder released the Lease; nothing is left"
}

check_kustomize_install() {
  "$KUBECTL" apply -k manifests/install
  "$KUBECTL" rollout status deployment/rcluster-operator -n "$OP_NS" --timeout 120s
  wait_operators app.kubernetes.io/name=rcluster,app.kubernetes.io/component=operator 1 rcluster-operator
  local pod t0=$SECONDS
  pod=$(operator_pods app.kubernetes.io/name=rcluster,app.kubernetes.io/component=operator)
  wait_until 60 "the kustomize operator $pod leads" pod_logged "$OP_NS" "$pod" "leading: starting the controllers"
  # The Lease was released at the uninstall: the new operator need not wait its duration out.
  pod_logged "$OP_NS" "$pod" "lease expired; taking it over" && die "$pod waited for the old Lease to expire"
  log "$pod leads $((SECONDS - t0)) s after its pod ran, without waiting for the Lease to expire"

  # A second cluster, reconciled by this operator to Running, then collected on deletion.
  local ns=cache name=sessions
  make_namespace "$ns"
  # Plain http: this step is about the install (secure-3 is about TLS).
  apply_plain "$ns" manifests/examples/async-cache-2.yaml
  name=$(sed -n 's/^  name: //p' manifests/examples/async-cache-2.yaml | head -1)
  wait_until 180 "$name is Running" bash -c "[[ \$(\"$KUBECTL\" get rcl $name -n $ns \
    -o jsonpath='{.status.phase}') == Running ]]"
  local primary
  primary=$("$KUBECTL" get rcl "$name" -n "$ns" -o jsonpath='{.status.primary}')
  [[ -n $primary ]] || die "$name is Running without a primary"
  put_record "$ns" "$primary" kustomize/check "\"ok\"" async
  log "$name Running under the kustomize-installed operator, primary $primary, a write acknowledged"
  "$KUBECTL" delete rcl "$name" -n "$ns" --wait=true --timeout 60s
  wait_until 120 "the StatefulSet, Services, ConfigMap, Secret and PDB of $name are collected" \
    owned_gone "$ns" "$name"
}

# Uninstalling the kustomize install as docs/INSTALL.md says: stop the operator, then delete.
check_kustomize_uninstall() {
  local selector=app.kubernetes.io/name=rcluster,app.kubernetes.io/component=operator pod
  pod=$(operator_pods "$selector")
  "$KUBECTL" -n "$OP_NS" scale deployment/rcluster-operator --replicas 0
  wait_until 120 "the operator pods are gone" bash -c "[[ -z \$(\"$KUBECTL\" get pods -n $OP_NS -l $selector -o name) ]]"
  "$KUBECTL" delete -k manifests/install --wait=true --timeout 180s
  pod_logged "$OP_NS" "$pod" "leader lease released" || die "$pod did not release the Lease"
  log "kubectl delete -k after scaling to 0: $pod released the Lease first; namespace $OP_NS deleted"
}

check_no_forbidden() {
  [[ -s $RUN/logs/audit.log ]] || die "the audit log is empty: the operators' requests were not recorded"
  python3 - "$RUN/logs/audit.log" <<'EOF'
import collections, json, sys
calls, denied = collections.Counter(), []
for line in open(sys.argv[1]):
    e = json.loads(line)
    user = e["user"]["username"]
    if not user.startswith("system:serviceaccount:rcluster-system:"):
        continue
    ref = e.get("objectRef", {})
    what = f'{e["verb"]} {ref.get("apiGroup") or "core"}/{ref.get("resource", e["requestURI"])}' + \
        (f'/{ref["subresource"]}' if ref.get("subresource") else "")
    calls[user.rsplit(":", 1)[1]] += 1
    if e.get("responseStatus", {}).get("code") == 403:
        denied.append(f'{e["requestReceivedTimestamp"]} {user}: {what} in {ref.get("namespace", "-")}: '
                      f'{e["responseStatus"].get("message", "")}')
for d in sorted(set(denied)):
    print("FORBIDDEN:", d)
if not calls:
    sys.exit("no request of an operator ServiceAccount is in the audit log")
print("requests by ServiceAccount:", dict(calls))
sys.exit(1 if denied else 0)
EOF
}
