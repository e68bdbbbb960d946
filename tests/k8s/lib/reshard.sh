# shellcheck shell=bash
# Resharding of manifests/examples/sharded-2x3.yaml on the real control plane: `spec.shards` 2 → 3
# → 2 while a writer keeps writing keys of every shard at ack=quorum through any node. The new
# shard's StatefulSet comes up first; slots move one range at a time with every step in
# status.reshard (the RESHARD column of `kubectl get rcl` shows it); the third shard's StatefulSet,
# Services and volumes are deleted only once it owns nothing; nothing acknowledged is lost.

# The writer: keys rk-0..rk-149 over and over with a new value each time, each write to a node
# picked in turn (any node forwards to the key's shard). A write refused with "nothing applied,
# retry" (503: slot_migrating while its range is handed over, not_primary) or not answered (a node
# going away: the node list is read again) is retried with the same value and Idempotency-Key until
# acknowledged or its 30 s run out; anything else is counted as an error. Stops at the stop file.
start_reshard_writer() {
  python3 - "$RUN/rs-writer" "$SH_NS" "$SH_CL" "$KUBECTL" >"$RUN/logs/rs-writer.log" 2>&1 <<'EOF2' &
import json, os, subprocess, sys, time, urllib.error, urllib.request
out, ns, cl, kubectl = sys.argv[1:5]
def urls():
    pods = json.loads(subprocess.run([kubectl, "get", "pods", "-n", ns, "-l", f"app.kubernetes.io/instance={cl}",
                                      "-o", "json"], capture_output=True, text=True, check=True).stdout)["items"]
    return [f"http://{p['status']['podIP']}:7000" for p in pods
            if p["status"].get("phase") == "Running" and p["status"].get("podIP")
            and not p["metadata"].get("deletionTimestamp")]
acked = open(out + ".acked", "w")
n, errors, retried, misrouted, deadline = 0, 0, 0, 0, time.monotonic() + 900
nodes, refreshed, pick = urls(), time.monotonic(), 0
while not os.path.exists(out + ".stop") and time.monotonic() < deadline:
    key, body = f"rk-{n % 150}", json.dumps({"n": n})
    give_up = time.monotonic() + 30
    while True:
        if time.monotonic() - refreshed > 5:
            nodes, refreshed = urls() or nodes, time.monotonic()
        pick += 1
        url = nodes[pick % len(nodes)]
        req = urllib.request.Request(f"{url}/v1/kv/{key}?ack=quorum", data=body.encode(), method="PUT",
                                     headers={"Content-Type": "application/json", "Idempotency-Key": f"rs-{n}"})
        try:
            with urllib.request.urlopen(req, timeout=10):
                acked.write(f"{key} {body}\n")
                acked.flush()
                break
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            # 503 and 421 both say "nothing was applied": retry (421: the node answering had an
            # older cluster map than the node it forwarded to; the client library refreshes its
            # map and retries the same way). Counted apart, so the log says how often.
            if e.code == 421:
                misrouted += 1
            if e.code in (421, 503) and time.monotonic() < give_up:
                retried += 1
                time.sleep(0.05)
                continue
            print(f"{key} via {url}: {e.code} {text}", flush=True)
        except Exception as e:  # no answer: a node going away; read the node list again
            if time.monotonic() < give_up:
                retried += 1
                refreshed = 0
                time.sleep(0.1)
                continue
            print(f"{key} via {url}: {e}", flush=True)
        errors += 1
        break
    n += 1
open(out + ".result", "w").write(json.dumps({"writes": n, "errors": errors, "retried": retried,
                                            "misrouted_421": misrouted}))
EOF2
  RS_WRITER=$!
}

stop_reshard_writer() {
  touch "$RUN/rs-writer.stop"
  wait "$RS_WRITER" || true
  RS_WRITER=
  log "writer: $(cat "$RUN/rs-writer.result" 2>/dev/null || echo 'no result')"
}

# rs_wait_done SHARDS: status.reshard is gone, the map has SHARDS shards with equal slot counts, and
# the Resharding condition is False. Samples `kubectl get rcl` meanwhile (the RESHARD column).
rs_done() {
  "$KUBECTL" get rcl "$SH_CL" -n "$SH_NS" >>"$RUN/rs-get-rcl.txt" 2>&1 || true
  python3 - "$("$KUBECTL" get rcl "$SH_CL" -n "$SH_NS" -o json)" "$1" <<'EOF2'
import json, sys
s = json.loads(sys.argv[1]).get("status", {})
want = int(sys.argv[2])
if s.get("reshard"):
    sys.exit(f"moving: {s['reshard'].get('message')}")
m = s.get("slotMap") or {}
if m.get("shards") != want:
    sys.exit(f"slotMap.shards {m.get('shards')}")
counts = [0] * want
for r in m["ranges"]:
    counts[r["shard"]] += r["end"] - r["start"] + 1
if max(counts) - min(counts) > 1:
    sys.exit(f"uneven: {counts}")
cond = [c for c in s.get("conditions", []) if c["type"] == "Resharding"]
if not cond or cond[0]["status"] != "False":
    sys.exit(f"Resharding condition {cond}")
if len(s.get("shards", [])) != want or any(not x.get("primary") for x in s["shards"]):
    sys.exit(f"status.shards {[(x['shard'], x.get('primary')) for x in s.get('shards', [])]}")
print(f"epoch {m['epoch']}, slots per shard {counts}")
EOF2
}

# Every acknowledged write of the writer (its last value per key) and of the earlier steps reads
# back through POD, linearizable.
rs_check_records() {
  cat "$RUN/rs-writer.acked" >>"$RUN/shard-acked.txt"
  sh_check_records "$1"
}

check_shards_reshard() {
  rm -f "$RUN/rs-writer".* "$RUN/rs-get-rcl.txt"
  start_reshard_writer
  wait_until 60 "the writer has acknowledged writes" test -s "$RUN/rs-writer.acked"
  local t0=$SECONDS
  "$KUBECTL" patch rcl "$SH_CL" -n "$SH_NS" --type merge -p '{"spec":{"shards":3}}'
  wait_until 120 "status.reshard records the resharding to 3" bash -c "[[ \$(\"$KUBECTL\" get rcl $SH_CL -n $SH_NS \
    -o jsonpath='{.status.reshard.shards}') == 3 ]]"
  wait_until 300 "shard 2's StatefulSet is up with 3 ready pods" bash -c "[[ \$(\"$KUBECTL\" get statefulset $SH_CL-s2 \
    -n $SH_NS -o jsonpath='{.status.readyReplicas}') == 3 ]]"
  wait_until 600 "the slots are even over 3 shards" rs_done 3
  log "2 -> 3 shards in $((SECONDS - t0)) s: $(cat "$RUN/last-wait.out")"
  grep -q " slots" "$RUN/rs-get-rcl.txt" || die "kubectl get rcl never showed the progress: $(tail -5 "$RUN/rs-get-rcl.txt")"
  log "kubectl get rcl while moving: $(grep " slots" "$RUN/rs-get-rcl.txt" | head -1)"
  [[ -n $(sh_shard_field 2 slots) ]] || die "shard 2 owns no slot"

  t0=$SECONDS
  "$KUBECTL" patch rcl "$SH_CL" -n "$SH_NS" --type merge -p '{"spec":{"shards":2}}'
  wait_until 600 "the slots are even over 2 shards" rs_done 2
  log "3 -> 2 shards in $((SECONDS - t0)) s: $(cat "$RUN/last-wait.out")"
  wait_until 120 "shard 2's StatefulSet, Services and volumes are deleted" bash -c "
    [[ -z \$(\"$KUBECTL\" get statefulset,service,configmap,pdb -n $SH_NS -o name | grep -- '$SH_CL-s2') ]] &&
    [[ -z \$(\"$KUBECTL\" get pvc -n $SH_NS -o name | grep -- 'data-$SH_CL-s2-') ]]"
  stop_reshard_writer
  python3 - "$RUN/rs-writer.result" <<'EOF2' || die "the writer saw errors: $(tail -5 "$RUN/logs/rs-writer.log")"
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if r["errors"] == 0 and r["writes"] > 0 else f"{r}")
EOF2
  local reason
  for reason in ReshardStarted ReshardStep ReshardFinished ShardRemoved; do
    # Captured, not piped into `grep -q`: with many events, kubectl would die of SIGPIPE under
    # pipefail once grep has seen the first line.
    [[ -n $("$KUBECTL" get events -n "$SH_NS" --field-selector "involvedObject.name=$SH_CL,reason=$reason" -o name) ]] ||
      die "no $reason event"
  done
  wait_until 60 "every node serves the recorded cluster map" sh_same_map
  local pod
  for pod in $(sh_pods); do rs_check_records "$pod"; done
}
