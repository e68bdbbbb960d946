#!/usr/bin/env python3
"""Failover time of the playground: kill -9 of the primary -> first acknowledged write; and a soak
that must see no failover at all.

    scripts/bench-failover.py [--kills 20] [--playground-args "..."]
    scripts/bench-failover.py --soak [SECONDS]      (default 600)

A release playground of 3 nodes (ack=quorum, its default detection window) runs in a temporary
folder. Each round kills the primary's process with SIGKILL (by its pid from the playground's
/status) and times, from the kill, the first write acknowledged at ack=quorum: one writer per node
sends PUTs (a replica forwards a write to the primary it knows), each with a 0.25 s timeout, retrying
at once; the first acknowledgement from any node ends the round. The killed node is restarted by the playground; the next round waits until every
node is back and the cluster is settled. Prints each round and the median, p90 and max. Loopback
only, bounded in rounds and time; stops what it starts. Run it on a quiet machine.

--soak: no kill. The same playground runs under full load (`rcluster bench`, quorum puts and
linearizable gets, closed loop) for SECONDS, and every 20-40 s one node is paused with SIGSTOP and
resumed with SIGCONT: mostly a random replica, for up to the detection window (which is also the
node's default lease), sometimes the primary, for at most 40 % of the window. Nothing in that is
a failure the coordinator should act on, so the run passes only with zero failovers (term changes
and the playground's failovers_total) and no client error beyond answers that mean "not applied".
Prints one JSON summary; exits 1 when the property does not hold. A loaded machine makes it
harder, which is fine for a property that must hold under load.
"""

import argparse
import http.client
import random
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
# The generator's longest run (`rcluster bench --duration`); a longer soak runs it again.
BENCH_MAX_SECS = 600
# Error codes that mean nothing was applied (DESIGN.md "Outcomes a client can rely on"); the client
# library retries them, and a get of a key never written answers not_found.
NOT_APPLIED = {"not_primary", "moved", "slot_migrating", "not_found"}


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


def stop(proc, timeout=60):
    """SIGTERM by pid, then SIGKILL if it does not end in time."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Monitor(threading.Thread):
    """Polls the playground's /status: every term and failovers_total seen, and the decision
    lines' failovers (from, to, why) for the summary."""

    def __init__(self):
        super().__init__(daemon=True)
        self.halt = threading.Event()
        self.terms, self.failovers, self.last_failover, self.errors = [], 0, None, 0

    def run(self):
        while not self.halt.wait(0.1):
            try:
                s = status()
            except (OSError, ValueError):
                self.errors += 1
                continue
            term = s["coordinator"]["term"]
            if not self.terms or self.terms[-1][1] != term:
                self.terms.append((time.time(), term, s["coordinator"]["primary"]))
            self.failovers = s.get("failovers_total", 0)
            self.last_failover = s.get("last_failover")


def pause_one(rng, window_ms, log):
    """Pauses one node: a replica for up to the window (= the node's default lease), or the
    primary for at most 40 % of it. Returns what was done."""
    s = status()
    primary = s["coordinator"]["primary"]
    members = [m for m in s["members"] if m.get("pid")]
    replicas = [m for m in members if m["name"] != primary]
    if rng.random() < 0.7 or not primary:
        victim, kind = rng.choice(replicas), "replica"
        secs = rng.uniform(0.1, 1.0) * window_ms / 1000
    else:
        victim, kind = next(m for m in members if m["name"] == primary), "primary"
        secs = rng.uniform(0.05, 0.4) * window_ms / 1000
    pid = victim["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(secs)
    finally:
        os.kill(pid, signal.SIGCONT)
    done = {"at": round(time.time(), 3), "node": victim["name"], "role": kind,
            "paused_ms": round(secs * 1000)}
    print(json.dumps(done), file=log, flush=True)
    return done


def bench_cmd(urls, secs, out):
    return [os.path.join(REL, "rcluster"), "--endpoint", ",".join(urls), "bench",
            "--mix", "put=50,get=50", "--ack", "quorum", "--consistency", "linearizable",
            "--concurrency", "32", "--threads", "2", "--keys", "10000",
            "--duration", str(secs), "--output", out]


def soak(a, folder):
    """The soak run; returns (summary, passed)."""
    rng = random.Random(a.seed)
    settled_cluster = wait("the playground", settled)
    s = status()
    window_ms = s["settings"]["detection_window_ms"]
    urls = [m["url"] for m in settled_cluster[1]]
    term0, failovers0 = s["coordinator"]["term"], s.get("failovers_total", 0)
    monitor = Monitor()
    monitor.start()
    pauses, reports, bench_exits = [], [], []
    pause_log = open(os.path.join(folder, "pauses.jsonl"), "w")
    end = time.monotonic() + a.soak
    part = 0
    while time.monotonic() < end - 1:
        secs = min(BENCH_MAX_SECS, max(1, int(end - time.monotonic())))
        out = os.path.join(folder, f"bench-{part}.json")
        with open(os.path.join(folder, f"bench-{part}.out"), "w") as blog:
            bench = subprocess.Popen(bench_cmd(urls, secs, out), stdout=blog,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                next_pause = time.monotonic() + rng.uniform(20, 40)
                while bench.poll() is None:
                    if time.monotonic() >= next_pause and time.monotonic() < end - 5:
                        pauses.append(pause_one(rng, window_ms, pause_log))
                        next_pause = time.monotonic() + rng.uniform(20, 40)
                    time.sleep(0.2)
            finally:
                stop(bench, timeout=30)
        bench_exits.append(bench.returncode)
        if os.path.exists(out):
            with open(out) as f:
                reports.append(json.load(f))
        part += 1
    monitor.halt.set()
    monitor.join()
    s = status()
    codes = {}
    requests = ok = 0
    for r in reports:
        requests += r["total"]["count"]
        ok += r["total"]["ok"]
        for c, n in r["total"]["error_codes"].items():
            codes[c] = codes.get(c, 0) + n
    client_errors = sum(n for c, n in codes.items() if c not in NOT_APPLIED)
    term_changes = len([t for t in monitor.terms if t[1] != term0])
    failovers = s.get("failovers_total", 0) - failovers0
    summary = {
        "soak_secs": a.soak, "detection_window_ms": window_ms,
        "pauses": len(pauses),
        "replica_pauses": sum(p["role"] == "replica" for p in pauses),
        "primary_pauses": sum(p["role"] == "primary" for p in pauses),
        "longest_replica_pause_ms": max([p["paused_ms"] for p in pauses
                                         if p["role"] == "replica"], default=0),
        "longest_primary_pause_ms": max([p["paused_ms"] for p in pauses
                                         if p["role"] == "primary"], default=0),
        "requests": requests, "ok": ok,
        "throughput": round(requests / a.soak),
        "error_codes": codes, "client_errors": client_errors,
        "bench_exit_codes": bench_exits,
        "term_start": term0, "term_end": s["coordinator"]["term"],
        "term_changes": term_changes, "failovers": failovers,
        "last_failover": monitor.last_failover if failovers else None,
        "status_poll_errors": monitor.errors,
    }
    passed = failovers == 0 and term_changes == 0 and client_errors == 0 and requests > 0
    return summary, passed


def main():
    global BASE
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--soak", type=int, nargs="?", const=600, metavar="SECONDS",
                    help="no kills: SECONDS of full load with paused nodes; expects no failover")
    ap.add_argument("--seed", type=int, default=None, help="the soak's random pauses")
    ap.add_argument("--base-port", type=int, default=BASE)
    ap.add_argument("--keep", action="store_true", help="keep the playground's folder")
    ap.add_argument("--playground-args", default="", help="extra playground flags")
    a = ap.parse_args()
    BASE = a.base_port
    if a.soak is not None and a.soak < 10:
        sys.exit("--soak needs at least 10 seconds")
    if a.seed is None:
        a.seed = random.randrange(1 << 32)
    if not os.environ.get("RCLUSTER_BENCH_BIN"):
        subprocess.run(["cargo", "build", "--release", "--bins"], cwd=ROOT, check=True)
    folder = tempfile.mkdtemp(prefix="bench-failover-")
    log = open(os.path.join(folder, "playground.out"), "w")
    pg = subprocess.Popen(
        [os.path.join(REL, "rcluster-operator"), "playground", "--dir", folder, "--quiet",
         "--base-port", str(BASE), "--node-bin", os.path.join(REL, "rcluster-node")]
        + a.playground_args.split(),
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if a.soak is not None:
        passed = False
        try:
            summary, passed = soak(a, folder)
            summary["seed"] = a.seed
            if a.keep or not passed:
                summary["folder"] = folder
            print(json.dumps(summary))
        finally:
            stop(pg)
            if passed and not a.keep:
                shutil.rmtree(folder, ignore_errors=True)
        sys.exit(0 if passed else 1)
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
        stop(pg)
        shutil.rmtree(folder, ignore_errors=True)
    times.sort()
    p90 = times[min(len(times) - 1, int(len(times) * 0.9))]
    print(json.dumps({"kills": len(times), "median_ms": round(statistics.median(times) * 1000),
                      "p90_ms": round(p90 * 1000), "max_ms": round(times[-1] * 1000)}))


if __name__ == "__main__":
    main()
