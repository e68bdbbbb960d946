# shellcheck shell=bash
# Steps 3-7: manifests/examples/quorum-3.yaml under the Helm-installed operator, with a real
# rcluster-node process per pod. Every write the test counts as acknowledged got a 2xx at
# ack=quorum; after each failover every one of them must be read back from the new primary and
# from the member that failed and came back.

NS=shop
CL=profiles # metadata.name in manifests/examples/quorum-3.yaml
RECORDS=40

# A namespace whose pods must meet the "restricted" Pod Security Standard.
make_namespace() {
  "$KUBECTL" create namespace "$1" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
  "$KUBECTL" label namespace "$1" --overwrite pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/enforce-version=latest >/dev/null
}

rcl_field() { "$KUBECTL" get rcl "$CL" -n "$NS" -o jsonpath="{$1}"; }
pod_ip() { "$KUBECTL" get pod "$2" -n "$1" -o jsonpath='{.status.podIP}'; }
node_url() { echo "http://$(pod_ip "$1" "$2"):7000"; }

# put_record NAMESPACE POD KEY JSON ACK: succeeds when the write was acknowledged.
put_record() {
  local code
  code=$(curl -s -o "$RUN/put.out" -w '%{http_code}' --max-time 5 -X PUT -H 'Content-Type: application/json' \
    --data "$4" "$(node_url "$1" "$2")/v1/kv/$3?ack=$5") || return 1
  [[ $code == 2* ]]
}

# get_value NAMESPACE POD KEY CONSISTENCY: prints the stored JSON value.
get_value() {
  curl -sf --max-time 5 "$(node_url "$1" "$2")/v1/kv/$3?consistency=$4" |
    python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["value"]))'
}

node_status() { curl -sf --max-time 3 "$(node_url "$1" "$2")/v1/status"; }

# The pods a Service's selector selects (what its EndpointSlices list), sorted.
selected_pods() {
  local selector
  selector=$("$KUBECTL" get service "$2" -n "$1" -o json | python3 -c '
import json, sys
print(",".join(f"{k}={v}" for k, v in sorted(json.load(sys.stdin)["spec"]["selector"].items())))')
  "$KUBECTL" get pods -n "$1" -l "$selector" --field-selector status.phase=Running -o name | sed 's|pod/||' | sort
}

# write_records FROM TO: writes keys rec/FROM..TO at ack=quorum to the primary; each is acknowledged.
write_records() {
  local primary i
  primary=$(rcl_field .status.primary)
  for ((i = $1; i <= $2; i++)); do
    put_record "$NS" "$primary" "rec/$i" "{\"n\":$i}" quorum || die "write rec/$i to $primary not acknowledged: $(cat "$RUN/put.out")"
    echo "rec/$i {\"n\": $i}" >>"$RUN/acked.txt"
  done
  log "$(($2 - $1 + 1)) records acknowledged at ack=quorum by $primary"
}

# check_records POD CONSISTENCY: every acknowledged record reads back with its value.
check_records() {
  local key want got n=0
  while read -r key want; do
    got=$(get_value "$NS" "$1" "$key" "$2") || die "$key is missing on $1 ($2 read)"
    [[ $got == "$want" ]] || die "$key on $1 is $got, acknowledged as $want"
    n=$((n + 1))
  done <"$RUN/acked.txt"
  log "$1: all $n acknowledged records read back ($2)"
}

# A member is a replica of the current term that has applied everything the primary committed.
caught_up_replica() {
  local pod=$1 primary term
  primary=$(rcl_field .status.primary) term=$(rcl_field .status.term)
  python3 - "$(node_status "$NS" "$pod")" "$(node_status "$NS" "$primary")" "$term" <<'EOF'
import json, sys
me, primary, term = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
ok = me["role"] == "replica" and me["term"] == term and me["applied_index"] >= primary["commit_index"]
sys.exit(0 if ok else 1)
EOF
}

check_cluster_objects() {
  make_namespace "$NS"
  : >"$RUN/acked.txt"
  # Plain http: this step and the ones after it are about failover (secure-3 is about TLS).
  apply_plain "$NS" manifests/examples/quorum-3.yaml
  wait_until 240 "$CL is Running with 3 ready members" bash -c "[[ \$(\"$KUBECTL\" get rcl $CL -n $NS \
    -o jsonpath='{.status.phase}/{.status.readyReplicas}') == Running/3 ]]"
  python3 "$ROOT/tests/k8s/lib/owned.py" --kubectl "$KUBECTL" --namespace "$NS" --cluster "$CL"
  local primary
  primary=$(rcl_field .status.primary)
  [[ $(selected_pods "$NS" "$CL-rw") == "$primary" ]] || die "$CL-rw selects $(selected_pods "$NS" "$CL-rw"), not the primary $primary"
  [[ $(selected_pods "$NS" "$CL-ro" | grep -c .) == 2 ]] || die "$CL-ro does not select the two replicas"
  log "$CL-rw selects the primary $primary; $CL-ro the two replicas"
  wait_endpoints "$NS" "$CL-rw" "$primary"
  # shellcheck disable=SC2046 # one word per pod
  wait_endpoints "$NS" "$CL-ro" $(selected_pods "$NS" "$CL-ro")
  check_worker_threads
}

# quorum-3 requests 100m of CPU and sets no CPU limit: the StatefulSet the server stored passes the
# request to each node (downward API, whole CPUs rounded up), and each node serves with 1 thread.
check_worker_threads() {
  local ref pod threads
  ref=$("$KUBECTL" get sts "$CL" -n "$NS" -o jsonpath='{.spec.template.spec.containers[0].env[?(@.name=="RCLUSTER_WORKER_THREADS")].valueFrom.resourceFieldRef}')
  python3 -c 'import json, sys; r = json.loads(sys.argv[1]); assert (r["resource"], r["divisor"]) == ("requests.cpu", "1"), r' "$ref" ||
    die "the StatefulSet does not pass the CPU request as RCLUSTER_WORKER_THREADS: $ref"
  for pod in $(selected_pods "$NS" "$CL-rw") $(selected_pods "$NS" "$CL-ro"); do
    threads=$(curl -sf --max-time 3 "$(node_url "$NS" "$pod")/metrics" | awk '$1 == "rcluster_worker_threads" {print $2}')
    [[ $threads == 1 ]] || die "$pod serves with ${threads:-?} worker threads, not the 1 its 100m CPU request gives"
  done
  log "each node serves with 1 worker thread, from its pod's CPU request ($ref)"
}

# The addresses the EndpointSlice controller last tried to publish for a Service. EndpointSlices
# may hold no loopback address (API validation), and every pod IP here is one, so each attempt is
# refused; the controller's Warning event names the addresses it computed from the selector and
# the pods, which is what a Service with real pod IPs would route to.
endpoint_slice_ips() {
  "$KUBECTL" get events -n "$1" --field-selector "involvedObject.kind=Service,involvedObject.name=$2" -o json |
    python3 -c '
import json, re, sys
events = [e for e in json.load(sys.stdin)["items"]
          if e["reason"] in ("FailedToUpdateEndpointSlices", "FailedToCreateEndpointSlices")]
if events:
    # Timestamps have whole seconds and the controller retries several times a second: the newest
    # write is the one with the highest resourceVersion (etcd revisions only grow).
    newest = max(events, key=lambda e: int(e["metadata"]["resourceVersion"]))
    print(" ".join(sorted(set(re.findall(r"Invalid value: \"([0-9.]+)\"", newest["message"])))))'
}

# wait_endpoints NAMESPACE SERVICE POD...: the controller's last attempt lists exactly these pods.
wait_endpoints() {
  local ns=$1 svc=$2 want="" pod
  shift 2
  for pod in "$@"; do want+="$(pod_ip "$ns" "$pod") "; done
  want=$(tr ' ' '\n' <<<"$want" | grep . | sort | xargs)
  wait_until 60 "the EndpointSlice controller computes $svc = $* ($want)" \
    bash -c "[[ \$(source $ROOT/tests/k8s/lib/data.sh; KUBECTL=$KUBECTL endpoint_slice_ips $ns $svc) == '$want' ]]"
  log "EndpointSlice controller: $svc -> $want ($*)"
}

# failover_after KEY WHAT OLD TERM T0: waits for the first write (of KEY) acknowledged by the
# primary of a newer term, then checks that the rw Service follows it, that no acknowledged write
# is lost, and that every other member (the failed one included) is a replica that re-fetched.
failover_after() {
  local key=$1 what=$2 old=$3 term=$4 t0=$5 deadline=$((SECONDS + 180)) primary="" now t1 n=0
  while ((SECONDS < deadline && n < 1000)); do
    now=$(rcl_field '.status.term}/{.status.primary' 2>/dev/null || true)
    primary=${now#*/}
    if [[ -n $primary && ${now%%/*} -gt $term ]] && put_record "$NS" "$primary" "$key" '"first"' quorum; then
      t1=$(date +%s.%N)
      break
    fi
    n=$((n + 1))
    sleep 0.2
  done
  [[ -n ${t1:-} ]] || die "no write was acknowledged by the primary of a new term within 180 s after the $what"
  echo "$key \"first\"" >>"$RUN/acked.txt"
  local took who
  took=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
  if [[ $primary == "$old" ]]; then
    who="$old again, in a new term: its new process answered the election with the longest log"
  else
    who="the replica $primary"
  fi
  log "failover after the $what: term $term -> $(rcl_field .status.term), promoted $who; first acknowledged write $took s after the $what"
  echo "failover time, from the $what to the first write acknowledged by the new primary: $took s (promoted $who)" >>"$RUN/report.txt"
  [[ $(rcl_field .status.lastFailover.from) == "$old" ]] || die "status.lastFailover does not name $old"
  wait_until 30 "$CL-rw selects $primary" bash -c "[[ \$(\"$KUBECTL\" get pods -n $NS \
    -l app.kubernetes.io/instance=$CL,rcluster.dev/role=primary -o name) == pod/$primary ]]"
  [[ $(selected_pods "$NS" "$CL-rw") == "$primary" ]] || die "$CL-rw selects $(selected_pods "$NS" "$CL-rw")"
  wait_endpoints "$NS" "$CL-rw" "$primary"
  check_records "$primary" linearizable
  local pod
  for pod in $(members_but "$primary"); do
    wait_until 120 "$pod is a replica of term $(rcl_field .status.term) that has re-fetched the log" caught_up_replica "$pod"
    check_records "$pod" eventual
  done
}

# The cluster's member pods other than $1.
members_but() {
  "$KUBECTL" get pods -n "$NS" -l "app.kubernetes.io/instance=$CL" -o name | sed 's|pod/||' | grep -vx "$1"
}

check_failover_delete_pod() {
  write_records 1 "$RECORDS"
  local old term t0
  old=$(rcl_field .status.primary) term=$(rcl_field .status.term)
  t0=$(date +%s.%N)
  "$KUBECTL" delete pod "$old" -n "$NS" --wait=false
  failover_after failover/delete-pod "deletion of pod $old" "$old" "$term" "$t0"
}

check_failover_kill() {
  write_records $((RECORDS + 1)) $((2 * RECORDS))
  local old term t0 pid
  old=$(rcl_field .status.primary) term=$(rcl_field .status.term)
  pid=$(pod_pid "$NS" "$old")
  kill -0 "$pid" || die "no process for $old"
  t0=$(date +%s.%N)
  kill -KILL "$pid"
  log "killed $old's process $pid with SIGKILL"
  failover_after failover/kill "kill -9 of $old's process" "$old" "$term" "$t0"
}

check_scale() {
  "$KUBECTL" scale rcl "$CL" -n "$NS" --replicas 4
  local scale
  scale=$("$KUBECTL" get --raw "/apis/rcluster.dev/v1alpha1/namespaces/$NS/replicatedclusters/$CL/scale")
  python3 - "$scale" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])
assert s["kind"] == "Scale" and s["spec"]["replicas"] == 4, s
assert "app.kubernetes.io/instance=profiles" in s["status"].get("selector", ""), s
EOF
  wait_until 60 "the StatefulSet follows to 4" bash -c "[[ \$(\"$KUBECTL\" get statefulset $CL -n $NS \
    -o jsonpath='{.spec.replicas}') == 4 ]]"
  wait_until 240 "4 ready members in the member list" bash -c "[[ \$(\"$KUBECTL\" get rcl $CL -n $NS \
    -o jsonpath='{.status.readyReplicas}/{.status.memberList[*]}' | wc -w) == 4 && \
    \$(\"$KUBECTL\" get rcl $CL -n $NS -o jsonpath='{.status.readyReplicas}') == 4 ]]"
  wait_until 120 "$CL-3 has fetched the log" caught_up_replica "$CL-3"
  check_records "$CL-3" eventual
  "$KUBECTL" scale rcl "$CL" -n "$NS" --replicas 3
  wait_until 240 "back to 3 members, $CL-3's pod gone" bash -c "[[ \$(\"$KUBECTL\" get rcl $CL -n $NS \
    -o jsonpath='{.status.memberList[*]}' | wc -w) == 3 && \
    -z \$(\"$KUBECTL\" get pod $CL-3 -n $NS -o name --ignore-not-found) ]]"
  log "scaled to 4 and back to 3 through the scale subresource"
}

# No object that a cluster owned is left (pods included); its claims stay (retention: Retain).
owned_gone() {
  [[ -z $("$KUBECTL" get statefulsets,services,configmaps,secrets,poddisruptionbudgets,pods -n "$1" \
    -l "app.kubernetes.io/instance=$2" -o name 2>/dev/null) ]]
}

check_garbage_collection() {
  local claims
  claims=$("$KUBECTL" get pvc -n "$NS" -o name | grep -c "data-$CL-")
  "$KUBECTL" delete rcl "$CL" -n "$NS" --wait=true --timeout 60s
  wait_until 120 "the garbage collector removes what $CL owned" owned_gone "$NS" "$CL"
  [[ $("$KUBECTL" get pvc -n "$NS" -o name | grep -c "data-$CL-") == "$claims" ]] ||
    die "claims were deleted with the cluster; they are retained by design"
  log "StatefulSet, Services, ConfigMap, Secret, PodDisruptionBudget and pods collected; $claims claims kept"
}
