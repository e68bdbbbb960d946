# shellcheck shell=bash
# Steps on manifests/examples/sharded-2x3.yaml (two shards of three members) under the Helm-installed
# operator: per-shard objects and status, the data path through any node (forwarding to the owning
# shard), one cluster map on every node, a failover of shard 1 while shard 0 keeps taking writes,
# and garbage collection of both shards' objects (resharding: reshard.sh).

SH_NS=sharded
SH_CL=shop # metadata.name in manifests/examples/sharded-2x3.yaml
SH_SHARDS=2
SH_KEYS=10 # keys written to each shard before the failover

sh_field() { "$KUBECTL" get rcl "$SH_CL" -n "$SH_NS" -o jsonpath="{$1}"; }
sh_shard_field() { sh_field ".status.shards[?(@.shard==$1)].$2"; }

# The cluster's member pods (both shards), sorted.
sh_pods() {
  "$KUBECTL" get pods -n "$SH_NS" -l "app.kubernetes.io/instance=$SH_CL" --field-selector status.phase=Running \
    -o name | sed 's|pod/||' | sort
}
sh_shard_pods() {
  "$KUBECTL" get pods -n "$SH_NS" -l "app.kubernetes.io/instance=$SH_CL,rcluster.dev/shard=$1" \
    --field-selector status.phase=Running -o name | sed 's|pod/||' | sort
}

# sh_put POD KEY JSON: the write, sent to POD at ack=quorum, was acknowledged (POD forwards it to
# the primary of the key's shard when the key is not its own shard's).
sh_put() { put_record "$SH_NS" "$1" "$2" "$3" quorum; }

# sh_keys SHARD: the test's keys that the cluster map puts on SHARD (asked of a node: `rcluster slot`).
sh_keys() { grep " $1\$" "$RUN/shard-keys.txt" | cut -d' ' -f1; }

# Every node answers GET /v1/cluster with the same map: the recorded slot map's epoch, each shard's
# primary and term as status.shards records them.
sh_same_map() {
  local pod maps=()
  for pod in $(sh_pods); do
    maps+=("$(curl -sf --max-time 3 "$(node_url "$SH_NS" "$pod")/v1/cluster")") || return 1
  done
  python3 - "$("$KUBECTL" get rcl "$SH_CL" -n "$SH_NS" -o json)" "${maps[@]}" <<'EOF'
import json, sys
status = json.loads(sys.argv[1])["status"]
maps = [json.loads(m) for m in sys.argv[2:]]
if len(maps) != 6:
    sys.exit(f"{len(maps)} nodes answered, not 6")
if any(m != maps[0] for m in maps):
    sys.exit("the nodes' maps differ: " + " | ".join(json.dumps(m, sort_keys=True) for m in maps))
m = maps[0]
if m["slots"]["epoch"] != status["slotMap"]["epoch"]:
    sys.exit(f"map epoch {m['slots']['epoch']} != status.slotMap.epoch {status['slotMap']['epoch']}")
want = {s["shard"]: (s.get("primary"), s["term"]) for s in status["shards"]}
got = {s["shard"]: (s.get("primary"), s["term"]) for s in m["shards"]}
if got != want:
    sys.exit(f"map shards {got} != status.shards {want}")
print(f"epoch {m['slots']['epoch']}, shards {got}")
EOF
}

# sh_check_records POD: every acknowledged record of either shard reads back from POD (linearizable:
# POD forwards a read of another shard's key to that shard's primary).
sh_check_records() {
  python3 - "$(node_url "$SH_NS" "$1")" "$RUN/shard-acked.txt" <<'EOF' || die "acknowledged records do not read back through $1"
import json, sys, urllib.request
url, last = sys.argv[1], {}
# A key written again holds the value of its last acknowledged write (one writer per key).
for line in open(sys.argv[2]):
    key, value = line.rstrip("\n").split(" ", 1)
    last[key] = json.loads(value)
for key, want in last.items():
    try:
        with urllib.request.urlopen(f"{url}/v1/kv/{key}?consistency=linearizable", timeout=5) as r:
            got = json.load(r)["value"]
    except Exception as e:
        sys.exit(f"{key} through {url}: {e}")
    if got != want:
        sys.exit(f"{key} through {url} is {got}, acknowledged last as {want}")
EOF
  log "$1: all $(cut -d' ' -f1 "$RUN/shard-acked.txt" | sort -u | wc -l) acknowledged keys of both shards read back (linearizable)"
}

check_shards_objects() {
  make_namespace "$SH_NS"
  : >"$RUN/shard-acked.txt"
  # Plain http: these steps are about shards (secure-3 is about TLS).
  apply_plain "$SH_NS" manifests/examples/sharded-2x3.yaml
  wait_until 300 "$SH_CL is Running with 6 ready members" bash -c "[[ \$(\"$KUBECTL\" get rcl $SH_CL -n $SH_NS \
    -o jsonpath='{.status.phase}/{.status.readyReplicas}') == Running/6 ]]"
  python3 "$ROOT/tests/k8s/lib/owned.py" --kubectl "$KUBECTL" --namespace "$SH_NS" --cluster "$SH_CL" \
    --shards "$SH_SHARDS"
  local k
  for ((k = 0; k < SH_SHARDS; k++)); do
    [[ $(sh_shard_pods "$k" | grep -c .) == 3 ]] || die "shard $k does not have 3 Running pods: $(sh_shard_pods "$k")"
  done
  "$KUBECTL" get rcl "$SH_CL" -n "$SH_NS" | tee "$RUN/get-rcl.txt"
  python3 - "$RUN/get-rcl.txt" "$SH_CL" "$SH_SHARDS" <<'EOF'
import sys
header, *rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
row = next(r for r in rows if r[0] == sys.argv[2])
if "SHARDS" not in header or row[header.index("SHARDS")] != sys.argv[3]:
    sys.exit(f"kubectl get rcl shows no SHARDS column with {sys.argv[3]}: {header} {row}")
EOF
  # The client Service selects every node of both shards; each shard's rw Service its primary.
  # shellcheck disable=SC2046 # one word per pod
  wait_endpoints "$SH_NS" "$SH_CL-client" $(sh_pods)
  local primary svc
  for ((k = 0; k < SH_SHARDS; k++)); do
    primary=$(sh_shard_field "$k" primary)
    svc=$SH_CL-rw
    ((k == 0)) || svc=$SH_CL-s$k-rw
    [[ $(selected_pods "$SH_NS" "$svc") == "$primary" ]] || die "$svc selects $(selected_pods "$SH_NS" "$svc"), not shard $k's primary $primary"
    wait_endpoints "$SH_NS" "$svc" "$primary"
  done
}

check_shards_data() {
  # Where keys live, as a node's cluster map says (`rcluster slot`); enough keys for both shards.
  local pod keys=() i
  pod=$(sh_pods | head -1)
  for ((i = 0; i < 400; i++)); do keys+=("key-$i"); done
  "$BIN_DIR/rcluster" --endpoint "$(node_url "$SH_NS" "$pod")" --json slot "${keys[@]}" |
    python3 -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    print(d["key"], d["shard"])' >"$RUN/shard-keys.txt"
  local k n
  for ((k = 0; k < SH_SHARDS; k++)); do
    n=$(sh_keys "$k" | wc -l)
    ((n >= 100)) || die "only $n of ${#keys[@]} keys land on shard $k: $(cat "$RUN/shard-keys.txt")"
  done
  # Each key is written through a node of the other shard: the write is forwarded.
  local key through
  for ((k = 0; k < SH_SHARDS; k++)); do
    through=$(sh_shard_pods $(((k + 1) % SH_SHARDS)) | head -1)
    for key in $(sh_keys "$k" | head -"$SH_KEYS"); do
      sh_put "$through" "$key" "{\"shard\":$k,\"key\":\"$key\"}" || die "write of $key (shard $k) through $through not acknowledged: $(cat "$RUN/put.out")"
      echo "$key {\"shard\": $k, \"key\": \"$key\"}" >>"$RUN/shard-acked.txt"
    done
    log "$SH_KEYS keys of shard $k acknowledged at ack=quorum, written through $through (shard $(((k + 1) % SH_SHARDS)))"
  done
  for pod in $(sh_pods); do sh_check_records "$pod"; done
  wait_until 60 "every node serves the recorded cluster map" sh_same_map
  log "GET /v1/cluster on all 6 nodes: $(cat "$RUN/last-wait.out")"
}

# The writer of shard 0's keys during shard 1's failover: writes the keys of $RUN/shard0-keys.txt
# (shard 0's, over and over with a new value each time) alternately to each of shard 0's nodes,
# until the stop file exists; records every acknowledged write and counts the others.
start_shard0_writer() {
  local urls=() pod
  for pod in $(sh_shard_pods 0); do urls+=("$(node_url "$SH_NS" "$pod")"); done
  python3 - "$RUN/shard0-writer" "$RUN/shard0-keys.txt" "${urls[@]}" >"$RUN/logs/shard0-writer.log" 2>&1 <<'EOF' &
import json, os, sys, time, urllib.request
out, keys, urls = sys.argv[1], open(sys.argv[2]).read().split(), sys.argv[3:]
acked = open(out + ".acked", "w")
errors, n, deadline = 0, 0, time.monotonic() + 600
while not os.path.exists(out + ".stop") and time.monotonic() < deadline:
    key, url = keys[n % len(keys)], urls[n % len(urls)]
    req = urllib.request.Request(f"{url}/v1/kv/{key}?ack=quorum", data=json.dumps({"n": n}).encode(),
                                 method="PUT", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            ok = 200 <= r.status < 300
    except Exception as e:  # a refusal or no answer: counted as an error
        print(f"{key} via {url}: {e}", flush=True)
        ok = False
    if ok:
        acked.write(f'{key} {{"n": {n}}}\n')
        acked.flush()
    else:
        errors += 1
    n += 1
open(out + ".result", "w").write(json.dumps({"writes": n, "errors": errors}))
EOF
  SHARD0_WRITER=$!
}

# sh_failover delete|kill|pause: fails shard 1's primary (`kubectl delete pod`, SIGKILL of its
# process, or SIGSTOP of it until a replica has been promoted, then SIGCONT) while a writer on shard
# 0's nodes counts errors; then shard 1 has a primary of a newer term (with pause, another member),
# shard 0 had no error and no change, the failed member is a caught-up replica of the new term, and
# nothing acknowledged is lost.
sh_failover() {
  local mode=$1 what
  sh_keys 0 >"$RUN/shard0-keys.txt"
  local old term t0 t1 key shard0
  old=$(sh_shard_field 1 primary) term=$(sh_shard_field 1 term)
  shard0=$(sh_shard_field 0 term)/$(sh_shard_field 0 primary)
  rm -f "$RUN/shard0-writer".*
  start_shard0_writer
  wait_until 30 "the shard 0 writer has acknowledged writes" test -s "$RUN/shard0-writer.acked"
  local pid
  if [[ $mode == kill || $mode == pause ]]; then
    pid=$(pod_pid "$SH_NS" "$old")
    kill -0 "$pid" || die "no process for $old"
    t0=$(date +%s.%N)
    if [[ $mode == kill ]]; then
      kill -KILL "$pid"
      what="kill -9 of $old's process"
    else
      # A primary that hangs (and so cannot come back before the detection window ends).
      kill -STOP "$pid"
      what="SIGSTOP of $old's process"
    fi
  else
    t0=$(date +%s.%N)
    "$KUBECTL" delete pod "$old" -n "$SH_NS" --wait=false
    what="deletion of pod $old"
  fi
  log "shard 1's primary (term $term): $what, while shard 0 takes writes"
  # The first write of a shard 1 key acknowledged by a primary of a newer term, sent through a
  # shard 0 node (forwarded by the map the operator pushed).
  local through deadline=$((SECONDS + 180)) n=0 now primary="" pod
  through=$(sh_shard_pods 0 | head -1)
  key=$(sh_keys 1 | tail -1)
  while ((SECONDS < deadline && n < 1000)); do
    now=$(sh_shard_field 1 term)/$(sh_shard_field 1 primary)
    primary=${now#*/}
    if [[ -n $primary && ${now%%/*} -gt $term && ($mode != pause || $primary != "$old") ]] && sh_put "$through" "$key" "\"after-$mode\""; then
      t1=$(date +%s.%N)
      break
    fi
    n=$((n + 1))
    sleep 0.2
  done
  [[ -n ${t1:-} ]] || die "no shard 1 write was acknowledged by a new primary within 180 s of the $what"
  echo "$key \"after-$mode\"" >>"$RUN/shard-acked.txt"
  local took
  took=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
  log "shard 1: term $term -> ${now%%/*}, primary $old -> $primary; first write $took s after the $what"
  echo "shard 1 failover after the $what (shard 0 writing throughout): first shard 1 write after $took s, primary $primary" >>"$RUN/report.txt"
  [[ $(sh_shard_field 0 term) == "$(sh_field .status.term)" ]] || die "status.term is not shard 0's"
  if [[ $mode == pause ]]; then
    # The old primary wakes up in the old term; its nodes' term checks and the operator fence it.
    kill -CONT "$pid"
    log "$old's process continued (SIGCONT) in term $term, after $primary was promoted in term ${now%%/*}"
  fi
  # Shard 0 keeps writing until the deleted pod is back as a caught-up member of shard 1.
  wait_until 180 "shard 1 has 3 ready members again" bash -c "[[ \$(\"$KUBECTL\" get rcl $SH_CL -n $SH_NS \
    -o jsonpath='{.status.shards[?(@.shard==1)].readyReplicas}') == 3 ]]"
  touch "$RUN/shard0-writer.stop"
  wait "$SHARD0_WRITER" || die "the shard 0 writer failed: $(tail -3 "$RUN/logs/shard0-writer.log")"
  local result
  result=$(cat "$RUN/shard0-writer.result")
  log "shard 0 writer during shard 1's failover: $result"
  python3 -c "import json,sys; r = json.loads(sys.argv[1]); sys.exit(0 if r['errors'] == 0 and r['writes'] > 0 else 1)" "$result" ||
    die "shard 0 writes failed during shard 1's failover: $result; $(head -3 "$RUN/logs/shard0-writer.log")"
  echo "shard 0 writes during shard 1's failover ($mode): $result" >>"$RUN/report.txt"
  cat "$RUN/shard0-writer.acked" >>"$RUN/shard-acked.txt"
  [[ $(sh_shard_field 0 term)/$(sh_shard_field 0 primary) == "$shard0" ]] ||
    die "shard 0 changed from $shard0 to $(sh_shard_field 0 term)/$(sh_shard_field 0 primary) during shard 1's failover"
  wait_until 60 "every node serves the new cluster map" sh_same_map
  log "GET /v1/cluster on all 6 nodes after the failover: $(cat "$RUN/last-wait.out"); shard 0 still $shard0"
  for pod in $(sh_shard_pods 1); do
    [[ $pod == "$primary" ]] && continue
    wait_until 120 "$pod is a replica of shard 1's term ${now%%/*} that has re-fetched the log" \
      sh_caught_up_replica "$pod" "$primary" "${now%%/*}"
  done
  for pod in $(sh_pods); do sh_check_records "$pod"; done
}

check_shards_failover() { sh_failover delete; }
check_shards_failover_kill() { sh_failover kill; }
check_shards_failover_pause() { sh_failover pause; }

# sh_caught_up_replica POD PRIMARY TERM: POD is a replica in TERM that has applied everything
# PRIMARY committed.
sh_caught_up_replica() {
  python3 - "$(node_status "$SH_NS" "$1")" "$(node_status "$SH_NS" "$2")" "$3" <<'EOF'
import json, sys
me, primary, term = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
ok = me["role"] == "replica" and me["term"] == term and me["applied_index"] >= primary["commit_index"]
sys.exit(0 if ok else 1)
EOF
}


check_shards_garbage_collection() {
  local claims
  claims=$("$KUBECTL" get pvc -n "$SH_NS" -o name | grep -c "data-$SH_CL-")
  [[ $claims == 6 ]] || die "$claims claims, not 6"
  "$KUBECTL" delete rcl "$SH_CL" -n "$SH_NS" --wait=true --timeout 60s
  wait_until 120 "the garbage collector removes both shards' objects" owned_gone "$SH_NS" "$SH_CL"
  local left
  left=$("$KUBECTL" get statefulsets,services,configmaps,secrets,poddisruptionbudgets -n "$SH_NS" -o name |
    grep -v -e '^configmap/kube-root-ca.crt$' || true)
  [[ -z $left ]] || die "objects are left in $SH_NS: $left"
  log "both shards' StatefulSets, Services, ConfigMaps, PDBs, the Secret and pods collected; $claims claims kept"
}
