#!/usr/bin/env python3
"""Failover time of the playground: kill -9 of the primary -> first acknowledged write.

    scripts/bench-failover.py [--kills 20] [--playground-args "..."]

A release playground of 3 nodes (ack=quorum, its default detection window) runs in a temporary
folder. Each round kills the primary's process with SIGKILL (by its pid from the playground's
/status) and times, from the kill, the first write acknowledged at ack=quorum: one writer per node
sends PUTs (a replica forwards a write to the primary it knows), each with a 0.25 s timeout, retrying
at once; the first acknowledgement from any node ends the round. The killed node is restarted by the playground; the next round waits until every
node is back and the cluster is settled. Prints each round and the median, p90 and max. Loopback
only, bounded in rounds and time; stops what it starts. Run it on a quiet machine.
"""

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.environ.get("RCLUSTER_BENCH_BIN") or os.path.join(ROOT, "target", "release")
BASE = 17900


def status():
    with urllib.request.urlopen(f"http://127.0.0.1:{BASE}/status", timeout=2) as r:
        return json.loads(r.read())


def wait(what, f, deadline=60):
    end = time.time() + deadline
    while time.time() < end:
        try:
            v = f()
            if v:
                return v
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def put(url, key, n):
    host, port = url.rsplit("/", 1)[-1].split(":")
    # Short: a replica forwards to the primary it knows, and the killed primary's port (the
    # playground keeps it) accepts without answering; the next attempt goes to another node.
    c = http.client.HTTPConnection(host, int(port), timeout=0.25)
    try:
        c.request("PUT", f"/v1/kv/{key}?ack=quorum", body=str(n))
        return c.getresponse().status
    except OSError:
        return 0
    finally:
        c.close()


def first_write(urls, key, t0):
    """Seconds from t0 to the first write any node acknowledges: one writer per node, each
    retrying at once (the cluster's failover time, not one client's routing delay)."""
    done, first = threading.Event(), []

    def writer(url):
        n = 0
        while not done.is_set() and time.monotonic() - t0 < 30:
            if put(url, key, n) == 200:
                first.append(time.monotonic() - t0)
                done.set()
            n += 1

    threads = [threading.Thread(target=writer, args=(u,)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return min(first) if first else None


def settled():
    s = status()
    if not s or "members" not in s:
        return None
    members = s["members"]
    primary = s["coordinator"]["primary"]
    ok = (s.get("ready") and primary and all(m["ready"] for m in members)
          and all(m["lag_entries"] in (0, None) for m in members))
    return (primary, members) if ok else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--playground-args", default="", help="extra playground flags")
    a = ap.parse_args()
    if not os.environ.get("RCLUSTER_BENCH_BIN"):
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    folder = tempfile.mkdtemp(prefix="bench-failover-")
    log = open(os.path.join(folder, "playground.out"), "w")
    pg = subprocess.Popen(
        [os.path.join(REL, "rcluster-operator"), "playground", "--dir", folder, "--quiet",
         "--base-port", str(BASE), "--node-bin", os.path.join(REL, "rcluster-node")]
        + a.playground_args.split(),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    times = []
    try:
        wait("the playground", settled)
        for i in range(a.kills):
            primary, members = wait("a settled cluster", settled)
            victim = next(m for m in members if m["name"] == primary)
            urls = [m["url"] for m in members]
            term = status()["coordinator"]["term"]
            t0 = time.monotonic()
            os.kill(victim["pid"], signal.SIGKILL)
            took = first_write(urls, f"failover/{i}", t0)
            if took is None:
                sys.exit(f"round {i}: no write acknowledged within 30 s")
            times.append(took)
            new = wait("the record", lambda: (status()["coordinator"]["term"] > term
                                              and status()["coordinator"]["primary"]))
            print(f"round {i + 1}: killed {primary}, {new} leads, first acknowledged write "
                  f"after {took * 1000:.0f} ms", flush=True)
    finally:
        pg.send_signal(signal.SIGTERM)
        try:
            pg.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pg.kill()
        shutil.rmtree(folder, ignore_errors=True)
    times.sort()
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    print(json.dumps({"kills": len(times), "median_ms": round(statistics.median(times) * 1000),
                      "p90_ms": round(p90 * 1000), "max_ms": round(times[-1] * 1000)}))


if __name__ == "__main__":
    main()
