#!/usr/bin/env python3
"""Instructions per request on the node's put, get and quorum-put paths, counted by callgrind.

Throughput on a shared two-core machine moves with whatever else runs; instruction counts do not.
This runs a release rcluster-node under `valgrind --tool=callgrind`, sends N requests of each kind
over one keep-alive connection (100-byte values, keys k0..), and reads the node's instruction count
for each phase from callgrind dumps (`callgrind_control --dump`). The quorum phase starts two more
nodes (natively) as replicas of the counted one, so it counts the primary's share of a quorum
write: request handling, the log, and shipping to two replicas.

    scripts/bench-callgrind.py [--requests 2000] [--connections 1] [--node BIN] [--keep DIR]
                               [--no-quorum]

With `--connections C` the requests go over C connections at once (a thread each): what a request
costs when others wait beside it (wakeups, lock hand-offs, batching), which one connection hides.

Prints one line per phase and a JSON summary. Every process it starts is stopped by its pid; every
wait is bounded. Needs valgrind (Debian package `valgrind`; installed when missing and possible).
"""

import argparse
import glob
import http.client
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = b'"' + b"x" * 98 + b'"'
START_DEADLINE_S = 120


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, what):
    end = time.time() + START_DEADLINE_S
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/livez")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} did not answer within {START_DEADLINE_S} s")


def post(port, path, body, secret):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", path, body=json.dumps(body), headers={"Authorization": f"Bearer {secret}"})
    r = c.getresponse()
    r.read()
    if r.status >= 300:
        sys.exit(f"POST {path} on {port}: {r.status}")


def run(port, method, n, query="", connections=1):
    """n requests, split over `connections` connections sending at once; returns how many failed
    (a request that raised counts as failed)."""
    counts = [0] * connections

    def one(k):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        done = 0
        try:
            for i in range(k, n, connections):
                body = VALUE if method == "PUT" else None
                c.request(method, f"/v1/kv/k{i}{query}", body=body)
                r = c.getresponse()
                r.read()
                counts[k] += r.status != 200
                done += 1
        except OSError:
            counts[k] += len(range(k, n, connections)) - done
        finally:
            c.close()

    threads = [threading.Thread(target=one, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts)


def dump(pid, out_dir, label):
    """Dumps (and zeroes) the counters; returns the instructions since the last dump."""
    before = set(glob.glob(os.path.join(out_dir, "cg.out*")))
    subprocess.run(["callgrind_control", f"--dump={label}", str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.time() + 60
    while time.time() < end:
        new = set(glob.glob(os.path.join(out_dir, "cg.out*"))) - before
        for f in new:
            text = open(f, errors="replace").read()
            m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
            if m:
                return int(m.group(1))
        time.sleep(0.2)
    sys.exit(f"no callgrind dump for {label}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--node", default=os.path.join(ROOT, "target/release/rcluster-node"))
    ap.add_argument("--keep", help="keep the callgrind dumps in this folder (for callgrind_annotate)")
    ap.add_argument("--connections", type=int, default=1)
    ap.add_argument("--no-quorum", action="store_true")
    a = ap.parse_args()
    if a.connections < 1 or a.requests < a.connections:
        sys.exit("--connections must be at least 1 and at most --requests")
    if not shutil.which("valgrind"):
        subprocess.run(["sudo", "-n", "apt-get", "install", "-y", "valgrind"], check=False)
        if not shutil.which("valgrind"):
            sys.exit("valgrind is not installed (apt-get install valgrind)")
    if not os.path.exists(a.node):
        subprocess.run(["cargo", "build", "--release", "-p", "rcluster-node", "--bins"], cwd=ROOT,
                       check=True)
    result = {"requests": a.requests, "connections": a.connections, "valgrind": subprocess.run(
        ["valgrind", "--version"], capture_output=True, text=True).stdout.strip(), "phases": {}}
    # One node alone for put and get (as a single-node deployment runs), then three for quorum.
    session(a, [("put", "PUT", "?ack=one"), ("get", "GET", "")], 1, result)
    if not a.no_quorum:
        session(a, [("quorum put", "PUT", "?ack=quorum")], 3, result)
    print(json.dumps(result, indent=2))


def session(a, phases, nodes, result):
    work = tempfile.mkdtemp(prefix="rcluster-callgrind.")
    out_dir = os.path.join(a.keep, f"{nodes}-nodes") if a.keep else work
    os.makedirs(out_dir, exist_ok=True)
    # Dumps of an earlier run in a kept folder share the new dumps' names: a dump that overwrites
    # one would never be seen as new.
    for old in glob.glob(os.path.join(out_dir, "cg.out*")):
        os.remove(old)
    procs = []
    try:
        secret = secrets.token_hex(32)
        secret_file = os.path.join(work, "secret")
        with open(secret_file, "w") as f:
            f.write(secret)
        ports = [free_port() for _ in range(nodes)]
        members = [] if nodes == 1 else sum(
            (["--member", f"n{i + 1}=http://127.0.0.1:{p}"] for i, p in enumerate(ports)), [])
        common = ["--secret-file", secret_file, "--fsync", "always"] + members

        def start(i, under_valgrind):
            args = [a.node, "--name", f"n{i + 1}", "--data-dir", os.path.join(work, f"d{i + 1}"),
                    "--listen", f"127.0.0.1:{ports[i]}"] + common
            if under_valgrind:
                args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/cg.out",
                        "--dump-instr=no"] + args
            p = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                                 stderr=open(os.path.join(work, f"n{i + 1}.err"), "w"))
            procs.append(p)
            wait_ready(ports[i], p, f"node n{i + 1}")
            return p

        counted = start(0, True)
        for i in range(1, nodes):
            start(i, False)
        if nodes > 1:
            post(ports[0], "/internal/v1/promote", {"term": 1}, secret)
            for i in range(1, nodes):
                post(ports[i], "/internal/v1/follow", {"term": 1, "primary": "n1"}, secret)
        n = a.requests
        # Warm-up: the connection, caches, the first allocations of every map.
        query = phases[0][2]
        run(ports[0], "PUT", 200, query)
        run(ports[0], "GET", 200)
        dump(counted.pid, out_dir, "warmup")
        for label, method, query in phases:
            errors = run(ports[0], method, n, query, a.connections)
            total = dump(counted.pid, out_dir, label.replace(" ", "-"))
            per = total / n
            result["phases"][label] = {"instructions_per_request": round(per), "errors": errors}
            print(f"{label:<12} {per:>10.0f} instructions/request ({n} requests, "
                  f"{a.connections} connections, {errors} errors)",
                  file=sys.stderr)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=60)
        shutil.rmtree(work, ignore_errors=True)

if __name__ == "__main__":
    main()
