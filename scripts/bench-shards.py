#!/usr/bin/env python3
"""Shard and resharding figures on this machine (loopback only, every run bounded in time).

    scripts/bench-shards.py [--keys 300000] [--value-size 1024] [--seconds 5]

1. Redis (appendfsync always) SET/GET with redis-benchmark: the reference of the same run.
2. A release playground of 2 shards x 2 nodes, seeded with --keys records of --value-size bytes at
   ack=quorum (`rcluster bench`).
3. wrk, 32 connections, quorum PUTs of keys one shard owns: sent to that shard's primary directly
   (Rcluster-Direct) and through a node of the other shard (forwarded); GETs the same two ways.
4. The playground is started again with --shards 3: slots move 2 -> 3 while a probe writes 256 keys
   round robin (ack=quorum; a write refused as slot_migrating is retried at once) and wrk loads the shard
   the current move does not touch. Reported: each move's duration and keys moved, the longest time
   from a write's first slot_migrating refusal to its acknowledgement (the write pause a client sees),
   and the untouched shard's rate during the move against its rate before.

With --scale instead: the same 4 nodes as 1 x 4, 2 x 2 and 4 x 1 shards (fresh playgrounds, no
seed). For each: quorum PUTs and quorum publishes sent to every shard's primary at once (one wrk per
shard, 32 connections in all) and the same load through one node that must forward (a replica for one
shard, a node of another shard otherwise); the aggregate rate, p99, and the nodes' CPU time per
request (from /proc: the per-shard cost, which should stay flat while two cores bound the total).

Needs wrk and redis-server (installed with apt-get when missing). Run it on a quiet machine: no
build, test or other load; it prints the figures and writes them to bench-shards.json.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# RCLUSTER_BENCH_BIN: a folder of already built binaries (a smoke run of this script); figures
# count only from the release build it makes by default.
REL = os.environ.get("RCLUSTER_BENCH_BIN") or os.path.join(ROOT, "target", "release")
BASE = 17600
WRK_LUA = r"""
local list = {}
for k in string.gmatch(os.getenv("BENCH_KEYS"), "[^,]+") do table.insert(list, k) end
local method = os.getenv("BENCH_METHOD")
local body = '"' .. string.rep("x", tonumber(os.getenv("BENCH_SIZE")) - 2) .. '"'
local i = 0
request = function()
  i = i + 1
  local key = list[(i % #list) + 1]
  if method == "PUT" then
    return wrk.format("PUT", "/v1/kv/" .. key .. "?ack=quorum", nil, body)
  end
  if method == "PUBLISH" then
    return wrk.format("POST", "/v1/topics/" .. key .. "/messages?ack=quorum", nil, body)
  end
  return wrk.format("GET", "/v1/kv/" .. key)
end
"""


def need(tool, package):
    if shutil.which(tool):
        return
    print(f"installing {package}", flush=True)
    subprocess.run(["apt-get", "install", "-y", "-q", package], check=True,
                   stdout=subprocess.DEVNULL)


def get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def request(port, method, path, body=None, headers=None, timeout=5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait(what, f, deadline=120):
    end = time.time() + deadline
    while time.time() < end:
        try:
            v = f()
            if v:
                return v
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


class Playground:
    running = []

    def __init__(self, folder, shards, replicas=2):
        self.shards = shards
        self.log = open(os.path.join(folder, f"playground-{shards}.out"), "w")
        self.proc = subprocess.Popen(
            [os.path.join(REL, "rcluster-operator"), "playground", "--dir", folder, "--quiet",
             "--replicas", str(replicas), "--shards", str(shards), "--base-port", str(BASE),
             "--node-bin", os.path.join(REL, "rcluster-node")],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        Playground.running.append(self.proc)
        # A restart replays every node's log first: minutes with a large data set.
        wait("the playground", lambda: (self.status() or {}).get("ready"), deadline=900)

    def status(self):
        return get(f"http://127.0.0.1:{BASE}/status") or {}

    def primary_port(self, shard):
        doc = self.status()["shards"][shard]
        name = doc["coordinator"]["primary"]
        url = next(m["url"] for m in doc["members"] if m["name"] == name)
        return int(url.rsplit(":", 1)[1])

    def node_pids(self):
        return [m["pid"] for sh in self.status()["shards"] for m in sh["members"] if m.get("pid")]

    def node_ports(self, shard):
        return [int(m["url"].rsplit(":", 1)[1]) for m in self.status()["shards"][shard]["members"]]

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def wrk(port, keys, method, size, seconds, direct, connections=32, detail=False):
    env = dict(os.environ, BENCH_KEYS=",".join(keys), BENCH_METHOD=method, BENCH_SIZE=str(size))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(WRK_LUA)
    threads = min(2, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", f.name]
    if direct:
        cmd += ["-H", "Rcluster-Direct: 1"]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}"], env=env, capture_output=True,
                         text=True, timeout=seconds + 30).stdout
    os.unlink(f.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    bad = int(bad.group(1)) if bad else 0
    if not detail:
        return rate, bad
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return {"rate": rate, "requests": total, "non_2xx": bad, "p99_ms": p99_ms}


def cpu_seconds(pids):
    """User + system CPU seconds the processes used so far (from /proc/PID/stat)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def owned_topics(port, n, prefix):
    """Topics the shard behind `port` owns, created there with a bounded retention."""
    topics, i = [], 0
    while len(topics) < n:
        name = f"{prefix}{i}"
        status, _ = request(port, "PUT", f"/v1/topics/{name}", body='{"max_messages":5000}',
                            headers={"Rcluster-Direct": "1"})
        if status == 200:
            topics.append(name)
        i += 1
    return topics


def load(pg, method, size, seconds, forwarded):
    """The load at every shard's primary at once, or all of it through one node that forwards
    every request (one shard: a replica; more: shard 0's primary, with the other shards' keys):
    the aggregate rate, the worst p99 and the nodes' CPU microseconds per acknowledged request."""
    shards = pg.shards
    owners = [pg.primary_port(k) for k in range(shards)]
    keys = [owned_topics(owners[k], 16, f"s{k}t") if method == "PUBLISH"
            else owned_keys(owners[k], 64, f"s{k}k") for k in range(shards)]
    if not forwarded:
        jobs = [(owners[k], keys[k], True) for k in range(shards)]
    elif shards == 1:
        jobs = [(next(p for p in pg.node_ports(0) if p != owners[0]), keys[0], False)]
    else:
        jobs = [(owners[0], [key for k in range(1, shards) for key in keys[k]], False)]
    pids = pg.node_pids()
    results, threads = [None] * len(jobs), []
    conns = 32 // len(jobs)
    cpu0 = cpu_seconds(pids)
    for i, (port, ks, direct) in enumerate(jobs):
        def one(i=i, port=port, ks=ks, direct=direct):
            results[i] = wrk(port, ks, method, size, seconds, direct, conns, detail=True)
        t = threading.Thread(target=one)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    cpu = cpu_seconds(pids) - cpu0
    ok = sum(r["requests"] - r["non_2xx"] for r in results)
    return {
        "rate": round(sum(r["rate"] for r in results)),
        "p99_ms": max(r["p99_ms"] for r in results),
        "non_2xx": sum(r["non_2xx"] for r in results),
        "node_cpu_us_per_request": round(cpu * 1e6 / ok, 1) if ok else None,
    }


def scale(a, results):
    """1 x 4, 2 x 2 and 4 x 1 shards x nodes: the same four nodes, sharded more each time."""
    results["scale"] = {}
    for shards in (1, 2, 4):
        folder = tempfile.mkdtemp(prefix="bench-scale-")
        pg = Playground(folder, shards, replicas=4 // shards)
        figures = {}
        for method in ("PUT", "PUBLISH"):
            for how in ("direct", "forwarded"):
                figures[f"{method} {how}"] = load(pg, method, a.value_size, a.seconds,
                                                  how == "forwarded")
                print(shards, "shards", method, how, figures[f"{method} {how}"], flush=True)
        pg.stop()
        shutil.rmtree(folder, ignore_errors=True)
        results["scale"][f"{shards}x{4 // shards}"] = figures


def owned_keys(port, n, prefix):
    """Keys the shard behind `port` owns: a direct GET answers 404 (or 200), not 421."""
    keys, i = [], 0
    while len(keys) < n:
        status, _ = request(port, "GET", f"/v1/kv/{prefix}{i}", headers={"Rcluster-Direct": "1"})
        if status in (200, 404):
            keys.append(f"{prefix}{i}")
        i += 1
    return keys


def redis(seconds):
    port = 16399
    d = tempfile.mkdtemp()
    p = subprocess.Popen(["redis-server", "--port", str(port), "--dir", d, "--save", "",
                          "--appendonly", "yes", "--appendfsync", "always"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait("redis", lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"],
                                             capture_output=True, text=True).stdout.strip() == "PONG")
        out = subprocess.run(["redis-benchmark", "-p", str(port), "-c", "32", "-n", "200000",
                              "-d", "1024", "-t", "set,get", "-q"],
                             capture_output=True, text=True, timeout=max(300, seconds * 20)).stdout
        rates = dict((m.group(1), float(m.group(2)))
                     for m in re.finditer(r"(SET|GET): ([\d.]+) requests per second", out))
        return rates
    finally:
        p.terminate()
        p.wait()
        shutil.rmtree(d, ignore_errors=True)


class Probe(threading.Thread):
    """Writes probe0..probe255 in turn at ack=quorum. A write refused because its slot is moving
    is retried at once until it is acknowledged, as a client would: the longest such wait is the
    write pause a client sees (`pause`)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.stop, self.pause, self.errors, self.acked = port, False, 0.0, {}, 0

    def put(self, k, n):
        try:
            status, body = request(self.port, "PUT", f"/v1/kv/{k}?ack=quorum", body=str(n))
        except OSError as e:
            return 0, str(e)
        code = re.search(rb'"code":"(\w+)"', body)
        return status, (code.group(1).decode() if code else str(status))

    def run(self):
        n = 0
        while not self.stop:
            k = f"probe{n % 256}"
            n += 1
            status, code = self.put(k, n)
            if code == "slot_migrating":
                refused_at = time.time()
                while code == "slot_migrating" and time.time() - refused_at < 30:
                    self.errors[code] = self.errors.get(code, 0) + 1
                    status, code = self.put(k, n)
                if status == 200:
                    self.pause = max(self.pause, time.time() - refused_at)
            if status == 200:
                self.acked += 1
            else:
                self.errors[code] = self.errors.get(code, 0) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=300000)
    ap.add_argument("--value-size", type=int, default=1024)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--scale", action="store_true", help="1, 2 and 4 shards over 4 nodes")
    a = ap.parse_args()
    need("wrk", "wrk")
    need("redis-server", "redis-server")
    if not os.environ.get("RCLUSTER_BENCH_BIN"):
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    results = {"redis": None if os.environ.get("RCLUSTER_BENCH_BIN") else redis(a.seconds)}
    print("redis", results["redis"], flush=True)
    if a.scale:
        scale(a, results)
        print(json.dumps(results, indent=2))
        with open(os.path.join(ROOT, "bench-shards-scale.json"), "w") as f:
            json.dump(results, f, indent=2)
        return
    folder = tempfile.mkdtemp(prefix="bench-shards-")
    pg = Playground(folder, 2)
    entry = int(pg.status()["shards"][0]["members"][0]["url"].rsplit(":", 1)[1])
    seed = subprocess.run(
        [os.path.join(REL, "rcluster"), "bench", "--endpoint", f"http://127.0.0.1:{entry}",
         "--api", "put", "--keys", str(a.keys), "--key-prefix", "seed", "--requests",
         str(a.keys), "--value-size", str(a.value_size), "--ack", "quorum", "--concurrency", "32"],
        capture_output=True, text=True, timeout=1800)
    print(seed.stdout[-600:], flush=True)
    # Routing: quorum puts and gets of shard 1's keys, at its primary and through shard 0.
    owner, other = pg.primary_port(1), pg.primary_port(0)
    keys = owned_keys(owner, 64, "route")
    routing = {}
    for method in ("PUT", "GET"):
        routing[method] = {
            "direct": wrk(owner, keys, method, a.value_size, a.seconds, True),
            "forwarded": wrk(other, keys, method, a.value_size, a.seconds, False),
        }
        print(method, routing[method], flush=True)
    results["routing"] = routing
    untouched_keys = {k: owned_keys(pg.primary_port(k), 64, f"u{k}-") for k in (0, 1)}
    before = {k: wrk(pg.primary_port(k), untouched_keys[k], "PUT", a.value_size, a.seconds,
                     True)[0] for k in (0, 1)}
    pg.stop()

    # 2 -> 3 shards, under the probe; wrk on the untouched shard during the first move.
    started = time.time()
    pg = Playground(folder, 3)
    probe = Probe(entry)
    probe.start()
    m = wait("the first move", lambda: (pg.status().get("reshard") or {}).get("migration"))
    untouched = ({0, 1} - {m["from"]}).pop()
    during = wrk(pg.primary_port(untouched), untouched_keys[untouched], "PUT", a.value_size,
                 a.seconds, True)
    now = (pg.status().get("reshard") or {}).get("migration") or {}
    still = now.get("start") == m["start"]
    wait("the resharding", lambda: pg.status().get("reshard") is None, deadline=1800)
    total = time.time() - started
    probe.stop = True
    probe.join()
    moves = [d for d in get(f"http://127.0.0.1:{BASE}/decisions")["decisions"]
             if d.get("kind") == "reshard"]
    spans = []
    for d in moves:
        mig = d.get("migration")
        if mig and d["text"].endswith("(copying)") and "moved" not in d["text"]:
            spans.append({"range": f"{mig['start']}-{mig['end']}", "from": mig["from"],
                          "to": mig["to"], "started_ms": d["at_ms"]})
        elif mig and "moved" in d["text"]:
            for s in spans:
                if s["range"] == f"{mig['start']}-{mig['end']}":
                    s["seconds"] = (d["at_ms"] - s["started_ms"]) / 1000
    records = [get(f"http://127.0.0.1:{pg.primary_port(k)}/v1/status")["records"]
               for k in range(3)]
    results["reshard"] = {
        "moves": spans, "total_seconds": total, "records_per_shard": records,
        "longest_write_pause_s": probe.pause, "probe_acked": probe.acked,
        "probe_errors": probe.errors,
        "untouched_shard": untouched, "untouched_put_rate_before": before[untouched],
        "untouched_put_rate_during": during[0], "move_still_running_after_wrk": still,
    }
    pg.stop()
    print(json.dumps(results, indent=2))
    with open(os.path.join(ROOT, "bench-shards.json"), "w") as f:
        json.dump(results, f, indent=2)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in Playground.running:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=60)
