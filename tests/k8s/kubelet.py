#!/usr/bin/env python3
"""The kubelet's part for kwok's simulated nodes: run a real process for every Running pod.

kwok gives each pod an IP (from its node's podCIDR, inside 127.0.0.0/8 here) and reports it Running
and Ready, but runs nothing. This loop runs, for every such pod whose container image is one of
ours, the local binary with what the pod spec gives the container: its args with $(VAR)s expanded
from its env (values, fieldRefs, CPU resourceFieldRefs, secret and ConfigMap keys), its ConfigMap, Secret, emptyDir and
PersistentVolumeClaim mounts (a claim's data lives in the hostPath folder of its bound
PersistentVolume, so a pod created again for the claim gets its data back), and a ServiceAccount
token bound to the pod (`kubectl create token --bound-object-kind Pod`, in a kubeconfig given as
KUBECONFIG: the in-cluster config path is fixed and cannot be redirected).

What a pod network namespace would give: a listen address `0.0.0.0:PORT` becomes `POD_IP:PORT`,
and the names `HOSTNAME.SUBDOMAIN.NAMESPACE.svc[.cluster.local]` that cluster DNS would answer for
a pod under a headless Service are written to the hosts file between marker lines.

Like the kubelet: a pod that is deleted gets SIGTERM, then SIGKILL after its grace period, and only
once its process has stopped is the pod object removed (so "the pod is gone" means "its process has
stopped", as on a real node); a process that exits while its pod stays is restarted after a
back-off (10 s, doubling, at most 60 s), unless the pod's restartPolicy is Never (or OnFailure and
the exit was 0): then the pod's phase becomes Succeeded or Failed, which is how a Job's pod ends.
Children die with this process (PR_SET_PDEATHSIG). The loop polls the API server every half second
and stops after --max-seconds.
"""
import argparse
import base64
import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# How often the files of a running pod's ConfigMap and Secret volumes are rewritten from the API
# (the kubelet's sync period is about a minute; shorter keeps member changes quick here).
REFRESH_SECONDS = 5


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


class Api:
    def __init__(self, kubectl, kubeconfig):
        self.base = [kubectl, "--kubeconfig", kubeconfig, "--request-timeout", "10s"]

    def run(self, *args):
        out = subprocess.run(self.base + list(args), capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def get(self, kind, name, ns):
        return json.loads(self.run("get", kind, name, "-n", ns, "-o", "json"))


def image_program(image, programs):
    """`registry/rcluster-node:0.1.0` -> the binary for `rcluster-node`, or None."""
    name = image.rsplit("/", 1)[-1].split("@")[0].split(":")[0]
    return programs.get(name)


def field_value(pod, path):
    values = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod["status"].get("podIP", ""),
        "status.hostIP": pod["status"].get("hostIP", ""),
    }
    if path not in values:
        raise RuntimeError(f"fieldRef {path} is not supported by this test kubelet")
    return values[path]


def milli(quantity):
    """A CPU quantity ("250m", "2", "1.5") in thousandths of a CPU."""
    q = str(quantity)
    if q.endswith("m"):
        return int(q[:-1])
    return round(float(q) * 1000)


def resource_value(pod, container, ref):
    """A resourceFieldRef as the kubelet resolves it: the named container's CPU limit or request
    divided by the divisor, rounded up (a request not given is the limit, else 0). An unset limit
    would be the node's allocatable CPU, which nothing here asks for."""
    name = ref.get("containerName") or container["name"]
    target = next(c for c in pod["spec"]["containers"] if c["name"] == name)
    resources = target.get("resources", {})
    kind, _, what = ref["resource"].partition(".")
    if what != "cpu" or kind not in ("limits", "requests"):
        raise RuntimeError(f"resourceFieldRef {ref['resource']} is not supported by this test kubelet")
    limit = resources.get("limits", {}).get("cpu")
    if kind == "limits":
        if limit is None:
            raise RuntimeError("resourceFieldRef limits.cpu without a limit is not supported here")
        value = milli(limit)
    else:
        value = milli(resources.get("requests", {}).get("cpu", limit or 0))
    divisor = milli(ref.get("divisor", "1"))
    return str(-(-value // divisor))


def container_env(api, pod, container):
    ns = pod["metadata"]["namespace"]
    env = {}
    for var in container.get("env", []):
        src = var.get("valueFrom")
        if src is None:
            env[var["name"]] = VAR.sub(lambda m: env.get(m.group(1), m.group(0)), var.get("value", ""))
        elif "fieldRef" in src:
            env[var["name"]] = field_value(pod, src["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in src:
            env[var["name"]] = resource_value(pod, container, src["resourceFieldRef"])
        elif "secretKeyRef" in src:
            ref = src["secretKeyRef"]
            data = api.get("secret", ref["name"], ns).get("data", {})
            env[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        elif "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            env[var["name"]] = api.get("configmap", ref["name"], ns)["data"][ref["key"]]
        else:
            raise RuntimeError(f"env {var['name']}: unsupported valueFrom {sorted(src)}")
    return env


def write_items(folder, data, items, mode, decode):
    os.makedirs(folder, exist_ok=True)
    keys = [(i["key"], i["path"]) for i in items] if items else [(k, k) for k in data]
    for key, path in keys:
        if key not in data:
            raise RuntimeError(f"key {key} missing")
        target = os.path.join(folder, path)
        content = base64.b64decode(data[key]) if decode else data[key].encode()
        if os.path.exists(target):
            with open(target, "rb") as f:
                if f.read() == content:
                    continue
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # Replaced by a rename, as the kubelet's atomic writer does: a reader never sees half a file.
        with open(target + ".tmp", "wb") as f:
            f.write(content)
        os.chmod(target + ".tmp", mode)
        os.replace(target + ".tmp", target)


def volume_folders(api, pod, pod_dir, only_projected=False):
    """{volume name: host folder} for every volume of the pod this kubelet can provide.
    only_projected: refresh the ConfigMap and Secret volumes only (as the kubelet does while the
    pod runs)."""
    ns = pod["metadata"]["namespace"]
    out = {}
    for vol in pod["spec"].get("volumes", []):
        if only_projected and "configMap" not in vol and "secret" not in vol:
            continue
        name, folder = vol["name"], os.path.join(pod_dir, "volumes", vol["name"])
        if "configMap" in vol:
            src = vol["configMap"]
            cm = api.get("configmap", src["name"], ns)
            write_items(folder, cm.get("data", {}), src.get("items"), src.get("defaultMode", 0o644), False)
        elif "secret" in vol:
            src = vol["secret"]
            secret = api.get("secret", src["secretName"], ns)
            write_items(folder, secret.get("data", {}), src.get("items"), src.get("defaultMode", 0o644), True)
        elif "emptyDir" in vol:
            os.makedirs(folder, exist_ok=True)
        elif "persistentVolumeClaim" in vol:
            claim = api.get("pvc", vol["persistentVolumeClaim"]["claimName"], ns)
            pv_name = claim["spec"].get("volumeName")
            if not pv_name or claim["status"].get("phase") != "Bound":
                raise RuntimeError(f"claim {claim['metadata']['name']} is not bound")
            pv = json.loads(api.run("get", "pv", pv_name, "-o", "json"))
            folder = pv["spec"]["hostPath"]["path"]
        else:
            continue  # e.g. the projected ServiceAccount token: given as a kubeconfig instead
        out[name] = folder
    return out


def translate(arg, mounts, pod_ip):
    """Container paths -> host folders; the pod's own network namespace -> its IP."""
    for mount_path, host in mounts:
        if arg == mount_path or arg.startswith(mount_path + "/"):
            arg = host + arg[len(mount_path):]
            break
    return arg.replace("0.0.0.0:", f"{pod_ip}:")


class Pod:
    """One pod's process, its log and its restart back-off."""

    def __init__(self, pod):
        self.pod = pod
        self.proc = None
        self.refreshed = 0.0
        self.restarts = 0
        self.next_start = 0.0
        self.finished = False  # a run-to-completion pod whose process has ended

    @property
    def key(self):
        m = self.pod["metadata"]
        return f"{m['namespace']}_{m['name']}"


class Kubelet:
    def __init__(self, args):
        self.args = args
        self.api = Api(args.kubectl, args.kubeconfig)
        self.programs = dict(p.split("=", 1) for p in args.program)
        self.pods = {}  # uid -> Pod
        self.hosts = None
        os.makedirs(os.path.join(args.run_dir, "pods"), exist_ok=True)

    def pod_dir(self, pod):
        m = pod["metadata"]
        return os.path.join(self.args.run_dir, "pods", f"{m['namespace']}_{m['name']}_{m['uid'][:8]}")

    def token_kubeconfig(self, pod, pod_dir):
        m = pod["metadata"]
        sa = pod["spec"].get("serviceAccountName", "default")
        token = self.api.run("create", "token", sa, "-n", m["namespace"], "--duration", "2h",
                             "--bound-object-kind", "Pod", "--bound-object-name", m["name"],
                             "--bound-object-uid", m["uid"]).strip()
        path = os.path.join(pod_dir, "kubeconfig")
        with open(path, "w") as f:
            json.dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "pod",
                "clusters": [{"name": "c", "cluster": {"server": self.args.server,
                                                      "certificate-authority": self.args.ca}}],
                "users": [{"name": "sa", "user": {"token": token}}],
                "contexts": [{"name": "pod", "context": {"cluster": "c", "user": "sa",
                                                        "namespace": m["namespace"]}}],
            }, f)
        os.chmod(path, 0o600)
        return path

    def command(self, pod, container, program):
        if container.get("command"):
            raise RuntimeError("a command override is not supported: the image's entrypoint is the program")
        pod_dir = self.pod_dir(pod)
        os.makedirs(pod_dir, exist_ok=True)
        env = container_env(self.api, pod, container)
        folders = volume_folders(self.api, pod, pod_dir)
        mounts = []
        for m in container.get("volumeMounts", []):
            if m["name"] in folders:
                host = os.path.join(folders[m["name"]], m.get("subPath", ""))
                mounts.append((m["mountPath"].rstrip("/"), host.rstrip("/")))
        mounts.sort(key=lambda m: -len(m[0]))  # the longest mount path wins
        pod_ip = pod["status"]["podIP"]
        argv = [program] + [translate(VAR.sub(lambda v: env.get(v.group(1), v.group(0)), a), mounts, pod_ip)
                            for a in container.get("args", [])]
        env = {k: translate(v, mounts, pod_ip) for k, v in env.items()}
        if pod["spec"].get("automountServiceAccountToken", True):
            env["KUBECONFIG"] = self.token_kubeconfig(pod, pod_dir)
        env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
        env["HOSTNAME"] = pod["metadata"]["name"]
        return argv, env, pod_dir

    def start(self, p):
        pod = p.pod
        container = next(c for c in pod["spec"]["containers"]
                         if image_program(c.get("image", ""), self.programs))
        program = image_program(container["image"], self.programs)
        try:
            argv, env, pod_dir = self.command(pod, container, program)
        except (RuntimeError, KeyError, OSError) as e:
            log(f"{p.key}: cannot start yet: {e}")
            p.next_start = time.monotonic() + 1
            return
        out = open(os.path.join(self.args.run_dir, "pods", f"{p.key}.log"), "ab")
        out.write(f"--- start {' '.join(argv)}\n".encode())
        out.flush()

        def child():
            LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)

        p.proc = subprocess.Popen(argv, env=env, cwd=pod_dir, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, preexec_fn=child, start_new_session=True)
        out.close()
        with open(os.path.join(self.args.run_dir, "pods", f"{p.key}.pid"), "w") as f:
            f.write(f"{p.proc.pid}\n")
        log(f"{p.key}: started pid {p.proc.pid} on {pod['status']['podIP']} "
            f"(uid {pod['metadata']['uid'][:8]}, restart {p.restarts})")

    def stop(self, p, why):
        if p.proc is None:
            return
        grace = min(int(p.pod["spec"].get("terminationGracePeriodSeconds", 30)), self.args.max_grace)
        p.proc.send_signal(signal.SIGTERM)
        try:
            code = p.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            code = p.proc.wait()
        log(f"{p.key}: stopped pid {p.proc.pid} ({why}), exit {code}")
        p.proc = None

    def finish(self, p, code):
        """Reports the end of a run-to-completion pod's process as the pod's phase."""
        m, container = p.pod["metadata"], p.pod["spec"]["containers"][0]
        phase = "Succeeded" if code == 0 else "Failed"
        status = {"status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"},
                           {"type": "ContainersReady", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [{
                "name": container["name"], "image": container["image"], "imageID": "", "ready": False,
                "restartCount": p.restarts, "started": False,
                "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}}]}}
        self.api.run("patch", "pod", m["name"], "-n", m["namespace"], "--subresource", "status",
                     "--type", "strategic", "-p", json.dumps(status))
        p.finished = True
        log(f"{p.key}: exited with {code}; restartPolicy {p.pod['spec'].get('restartPolicy')}: pod {phase}")

    def remove_deleted(self, pods):
        """Removes the objects of deleted pods whose processes have stopped (all of this node's:
        the processes of pods no longer wanted were stopped before this is called)."""
        for pod in pods:
            m = pod["metadata"]
            if not m.get("deletionTimestamp") or m["uid"] in self.pods:
                continue
            try:
                self.api.run("delete", "pod", m["name"], "-n", m["namespace"], "--grace-period=0", "--force",
                             "--wait=false", "--ignore-not-found")
            except RuntimeError as e:
                log(f"{m['namespace']}_{m['name']}: cannot remove the deleted pod: {e}")

    def wanted(self, pods):
        out = {}
        for pod in pods:
            st, spec = pod.get("status", {}), pod["spec"]
            if pod["metadata"].get("deletionTimestamp") or st.get("phase") != "Running":
                continue
            if not st.get("podIP") or not spec.get("nodeName"):
                continue
            if any(image_program(c.get("image", ""), self.programs) for c in spec["containers"]):
                out[pod["metadata"]["uid"]] = pod
        return out

    def sync(self):
        pods = json.loads(self.api.run("get", "pods", "-A", "-o", "json"))["items"]
        wanted = self.wanted(pods)
        for uid in [u for u in self.pods if u not in wanted]:
            self.stop(self.pods.pop(uid), "pod deleted or ended")
        self.remove_deleted(pods)
        now = time.monotonic()
        for uid, pod in wanted.items():
            p = self.pods.setdefault(uid, Pod(pod))
            p.pod = pod
            if p.finished:
                continue
            if p.proc is not None and p.proc.poll() is not None:
                code = p.proc.returncode
                p.proc = None
                policy = pod["spec"].get("restartPolicy", "Always")
                if policy == "Never" or (policy == "OnFailure" and code == 0):
                    self.finish(p, code)
                    continue
                delay = min(10 * 2 ** p.restarts, 60)
                p.restarts += 1
                p.next_start = now + delay
                log(f"{p.key}: exited with {code}; restarting in {delay} s")
            if p.proc is None and now >= p.next_start:
                self.start(p)
                p.refreshed = now
            elif p.proc is not None and now - p.refreshed >= REFRESH_SECONDS:
                p.refreshed = now
                try:
                    volume_folders(self.api, pod, self.pod_dir(pod), only_projected=True)
                except (RuntimeError, KeyError, OSError) as e:
                    log(f"{p.key}: cannot refresh its ConfigMap and Secret volumes: {e}")
        self.write_hosts(wanted.values())

    def write_hosts(self, pods):
        lines = []
        for pod in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
            spec, ns = pod["spec"], pod["metadata"]["namespace"]
            if spec.get("hostname") and spec.get("subdomain"):
                name = f"{spec['hostname']}.{spec['subdomain']}.{ns}.svc"
                lines.append(f"{pod['status']['podIP']} {name} {name}.cluster.local")
        if lines != self.hosts:
            set_hosts_block(self.args.hosts_file, self.args.marker, lines)
            self.hosts = lines

    def shutdown(self):
        for p in list(self.pods.values()):
            self.stop(p, "shutting down")
        set_hosts_block(self.args.hosts_file, self.args.marker, [])


def set_hosts_block(path, marker, lines):
    """Replace the lines between our marker lines (written in place: /etc/hosts may be a mount)."""
    begin, end = f"# BEGIN {marker}", f"# END {marker}"
    with open(path) as f:
        text = f.read().splitlines()
    out, inside = [], False
    for line in text:
        if line == begin:
            inside = True
        elif line == end:
            inside = False
        elif not inside:
            out.append(line)
    if lines:
        out += [begin] + lines + [end]
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubectl", required=True)
    ap.add_argument("--kubeconfig", required=True, help="admin kubeconfig of this test kubelet")
    ap.add_argument("--server", required=True, help="API server URL for the pods' kubeconfigs")
    ap.add_argument("--ca", required=True, help="CA certificate of the API server")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--program", action="append", default=[], help="IMAGE_NAME=BINARY")
    ap.add_argument("--hosts-file", default="/etc/hosts")
    ap.add_argument("--marker", required=True, help="marks our block in the hosts file")
    ap.add_argument("--max-grace", type=int, default=15, help="cap of terminationGracePeriodSeconds")
    ap.add_argument("--max-seconds", type=int, default=3600)
    args = ap.parse_args()

    kubelet = Kubelet(args)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    deadline = time.monotonic() + args.max_seconds
    try:
        while not stop and time.monotonic() < deadline:
            try:
                kubelet.sync()
            except (RuntimeError, json.JSONDecodeError) as e:
                log(f"sync failed: {e}")
            time.sleep(0.5)
    finally:
        kubelet.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
