#!/usr/bin/env python3
"""What the operator wrote for one ReplicatedCluster, as the API server stored it.

- Every owned object (StatefulSet, the headless, client, rw and ro Services, ConfigMap, Secret,
  PodDisruptionBudget) exists, was written by server-side apply under the field manager
  `rcluster-operator`, and has the cluster as its controller owner with blockOwnerDeletion.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--cluster", required=True)
    ap.add_argument("--also", action="append", default=[], metavar="KIND/NAME",
                    help="another object the cluster must own (e.g. secret/NAME-tls)")
    a = ap.parse_args()
    ns, name = a.namespace, a.cluster
    kube = lambda *args: get(a.kubectl, *args, "-n", ns)
    cluster = kube("get", "rcl", name)
    uid, errors = cluster["metadata"]["uid"], []

    owned = [("statefulset", name), ("service", f"{name}-headless"), ("service", f"{name}-client"),
             ("service", f"{name}-rw"), ("service", f"{name}-ro"), ("configmap", f"{name}-config"),
             ("secret", f"{name}-secret"), ("poddisruptionbudget", name)]
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
