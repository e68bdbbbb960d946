#!/usr/bin/env python3
"""What the operator wrote for one ReplicatedCluster, as the API server stored it.

- Every owned object (per shard: StatefulSet, rw and ro Services, ConfigMap, PodDisruptionBudget;
  once per cluster: the headless and client Services, Secret) exists, was written by server-side
  apply under the field manager `rcluster-operator`, and has the cluster as its controller owner
  with blockOwnerDeletion. Shard 0's objects carry the cluster's own name, shard k's `NAME-sK`.
- With --shards N > 1: `status.shards` has N records, each naming a primary among that shard's
  pods and a term; `status.slotMap` gives every slot exactly one owner among the N shards; and
  every member pod carries its shard's label.
- The status was written through the status subresource by the same manager, is current
  (observedGeneration), names a primary and a term, and carries the conditions.
- The operator published events about the cluster.
- Every member pod was admitted in a namespace enforcing the "restricted" Pod Security Standard.
"""
import argparse
import json
import subprocess
import sys

MANAGER = "rcluster-operator"
CONDITIONS = {"Ready", "Available", "FailingOver", "Degraded"}


def get(kubectl, *args):
    out = subprocess.run([kubectl, *args, "-o", "json", "--show-managed-fields"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def shard_name(cluster, k):
    return cluster if k == 0 else f"{cluster}-s{k}"


def shard_errors(kube, name, shards, status):
    """status.shards and status.slotMap of a cluster of SHARDS shards, and its pods' shard labels."""
    errors = []
    records = {s["shard"]: s for s in status.get("shards", [])}
    if sorted(records) != list(range(shards)):
        errors.append(f"status.shards has records for shards {sorted(records)}, not 0..{shards - 1}")
    for k, rec in sorted(records.items()):
        prefix = shard_name(name, k) + "-"
        primary = rec.get("primary") or ""
        # Shard 0's pods are NAME-<ordinal>; shard k's NAME-sK-<ordinal>.
        if not primary.startswith(prefix) or not primary[len(prefix):].isdigit():
            errors.append(f"shard {k}: primary {primary!r} is not one of its pods {prefix}<n>")
        if int(rec.get("term", 0)) < 1:
            errors.append(f"shard {k}: term {rec.get('term')}")
    print("status.shards: " + ", ".join(f"shard {k} primary {r.get('primary')} term {r.get('term')} "
                                        f"slots {r.get('slots')}" for k, r in sorted(records.items())))
    m = status.get("slotMap") or {}
    owner = {}
    for r in m.get("ranges", []):
        if not 0 <= r["shard"] < shards:
            errors.append(f"status.slotMap: range {r} names no shard of the cluster")
        for slot in range(r["start"], r["end"] + 1):
            if slot in owner:
                errors.append(f"status.slotMap: slot {slot} has two owners")
                break
            owner[slot] = r["shard"]
    slots = m.get("slots", 0)
    if slots < 1 or sorted(owner) != list(range(slots)):
        errors.append(f"status.slotMap does not give each of its {slots} slots an owner: {m}")
    if set(owner.values()) != set(range(shards)):
        errors.append(f"status.slotMap leaves shards {set(range(shards)) - set(owner.values())} without slots")
    if m.get("shards") != shards:
        errors.append(f"status.slotMap.shards is {m.get('shards')}, not {shards}")
    print(f"status.slotMap: epoch {m.get('epoch')}, {slots} slots, each owned by one of {shards} shards")
    for pod in kube("get", "pods", "-l", f"app.kubernetes.io/instance={name}")["items"]:
        label = pod["metadata"].get("labels", {}).get("rcluster.dev/shard")
        pod_name = pod["metadata"]["name"]
        want = next(k for k in reversed(range(shards)) if k == 0 or pod_name.startswith(shard_name(name, k) + "-"))
        if label != str(want):
            errors.append(f"pod {pod_name}: label rcluster.dev/shard={label}, not {want}")
    return errors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--also", action="append", default=[], metavar="KIND/NAME",
                    help="another object the cluster must own (e.g. secret/NAME-tls)")
    a = ap.parse_args()
    ns, name = a.namespace, a.cluster
    kube = lambda *args: get(a.kubectl, *args, "-n", ns)
    cluster = kube("get", "rcl", name)
    uid, errors = cluster["metadata"]["uid"], []

    owned = [("service", f"{name}-headless"), ("service", f"{name}-client"), ("secret", f"{name}-secret")]
    for k in range(a.shards):
        shard = shard_name(name, k)
        owned += [("statefulset", shard), ("service", f"{shard}-rw"), ("service", f"{shard}-ro"),
                  ("configmap", f"{shard}-config"), ("poddisruptionbudget", shard)]
    owned += [tuple(o.split("/", 1)) for o in a.also]
    for kind, obj_name in owned:
        obj = kube("get", kind, obj_name)
        where = f"{kind}/{obj_name}"
        applied = [m for m in obj["metadata"].get("managedFields", [])
                   if m["manager"] == MANAGER and m["operation"] == "Apply"]
        if not applied:
            managers = [(m["manager"], m["operation"]) for m in obj["metadata"].get("managedFields", [])]
            errors.append(f"{where}: not server-side applied by {MANAGER} (managers: {managers})")
        owners = [o for o in obj["metadata"].get("ownerReferences", []) if o.get("controller")]
        if len(owners) != 1 or owners[0]["uid"] != uid or owners[0]["kind"] != "ReplicatedCluster":
            errors.append(f"{where}: controller owner is {owners}, not ReplicatedCluster {name} ({uid})")
        elif not owners[0].get("blockOwnerDeletion"):
            errors.append(f"{where}: owner reference without blockOwnerDeletion")
    print(f"owned objects: {', '.join(f'{k}/{n}' for k, n in owned)}: applied by {MANAGER}, owned by {name}")

    status = cluster.get("status", {})
    status_writers = [m for m in cluster["metadata"].get("managedFields", [])
                      if m["manager"] == MANAGER and m.get("subresource") == "status"]
    if not status_writers:
        errors.append("status was not written through the status subresource by the operator")
    spec_writers = [m for m in cluster["metadata"].get("managedFields", [])
                    if m["manager"] == MANAGER and not m.get("subresource")
                    and "f:spec" in json.dumps(m.get("fieldsV1", {}))]
    if spec_writers:
        errors.append(f"the operator owns spec fields of the cluster: {spec_writers}")
    if status.get("observedGeneration") != cluster["metadata"]["generation"]:
        errors.append(f"observedGeneration {status.get('observedGeneration')} != generation "
                      f"{cluster['metadata']['generation']}")
    if not status.get("primary") or int(status.get("term", 0)) < 1:
        errors.append(f"status names no primary and term: {status}")
    if a.shards > 1:
        errors += shard_errors(kube, name, a.shards, status)
    types = {c["type"] for c in status.get("conditions", [])}
    if not CONDITIONS <= types:
        errors.append(f"conditions {sorted(types)} lack {sorted(CONDITIONS - types)}")
    print(f"status: phase {status.get('phase')}, primary {status.get('primary')}, term {status.get('term')}, "
          f"conditions {', '.join(sorted(c['type'] + '=' + c['status'] for c in status.get('conditions', [])))}")

    events = [e for e in kube("get", "events.events.k8s.io")["items"]
              if e.get("regarding", {}).get("uid") == uid]
    ours = [e for e in events if e.get("reportingController") == MANAGER]
    if not ours:
        errors.append(f"no event from {MANAGER} about the cluster (events: {len(events)})")
    print(f"events from {MANAGER} about {name}: {sorted({e['reason'] for e in ours})}")

    pods = kube("get", "pods", "-l", f"app.kubernetes.io/instance={name}")["items"]
    ns_obj = get(a.kubectl, "get", "namespace", ns)
    if ns_obj["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted":
        errors.append(f"namespace {ns} does not enforce the restricted Pod Security Standard")
    print(f"{len(pods)} member pods admitted under Pod Security 'restricted'")

    for e in errors:
        print("ERROR:", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
