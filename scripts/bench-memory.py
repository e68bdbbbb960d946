#!/usr/bin/env python3
"""RSS per record of one rcluster node against Redis, for the same records (loopback only).

Starts a release rcluster-node with a temporary data directory (--fsync interval: only to load
faster; the records are the same), loads N records k0..k{N-1} of 100-byte values through a few
pipelined HTTP connections (with an Idempotency-Key per write, as the client library sends, or
without), reads VmRSS from /proc before and after, restarts the node on the same data and reads it
again; then loads the same keys into a redis-server (no persistence) for the ratio.

    scripts/bench-memory.py [--records 2000000] [--idem both|yes|no] [--no-redis] [--node BIN]
                            [--node-arg=--idempotency-keys=100000 ...]

Every process it starts is stopped by its pid; every wait is bounded. Prints one line per
measurement and a JSON summary on stdout. RSS is not a timing: a busy machine changes how long the
load takes, not what it measures.
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUE = b'"' + b"x" * 98 + b'"'  # 100 bytes of JSON, as scripts/bench.sh writes
CONNECTIONS = 8
BATCH = 256  # requests in flight per connection
LOAD_DEADLINE_S = 1200


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def wait_for(what, cond, deadline_s=60):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if cond():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def http_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)


def read_responses(sock, buf, count):
    """Reads `count` HTTP/1.1 responses; returns (statuses, leftover bytes)."""
    statuses = []
    while len(statuses) < count:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise OSError("connection closed")
            buf += chunk
            continue
        head = buf[:end].decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, val = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(val)
        while len(buf) < end + 4 + length:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise OSError("connection closed")
            buf += chunk
        statuses.append(int(head.split(" ", 2)[1]))
        buf = buf[end + 4 + length :]
    return statuses, buf


DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def idem_key(prefix, i):
    """The client library's key shape (proto/src/idempotency.rs): 11 random digits, then the
    counter's, 6 bits a digit, least significant first."""
    digits = []
    while True:
        digits.append(DIGITS[i & 63])
        i >>= 6
        if i == 0:
            return prefix + "".join(digits)


def load_rcluster(port, records, idem):
    """PUTs k0..k{records-1}; returns the count of non-2xx answers."""
    errors = [0]
    prefix = "".join(DIGITS[b & 63] for b in os.urandom(11))

    def worker(w):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        buf = b""
        ids = range(w, records, CONNECTIONS)
        for start in range(0, len(ids), BATCH):
            out = []
            for i in ids[start : start + BATCH]:
                head = f"PUT /v1/kv/k{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(VALUE)}\r\n"
                if idem:
                    head += f"Idempotency-Key: {idem_key(prefix, i)}\r\n"
                out.append(head.encode() + b"\r\n" + VALUE)
            sock.sendall(b"".join(out))
            statuses, buf = read_responses(sock, buf, len(out))
            errors[0] += sum(1 for s in statuses if s // 100 != 2)
        sock.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_DEADLINE_S)
        if t.is_alive():
            raise SystemExit("load did not finish in time")
    return errors[0]


class Node:
    def __init__(self, binary, port, data, extra):
        self.binary, self.port, self.data, self.extra = binary, port, data, extra
        self.proc = None

    def start(self):
        log = open(os.path.join(self.data, "..", f"node-{self.port}.log"), "ab")
        self.proc = subprocess.Popen(
            [self.binary, "--name", "m1", "--data-dir", self.data,
             "--listen", f"127.0.0.1:{self.port}", "--fsync", "interval", *self.extra],
            stdout=log, stderr=log)
        wait_for("the node to be ready",
                 lambda: http_json(self.port, "/v1/status").get("records") is not None, 120)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def measure_rcluster(args, idem, work):
    data = os.path.join(work, f"node-idem-{idem}")
    os.makedirs(data)
    node = Node(args.node, args.port, data, args.node_arg)
    result = {"idempotency_keys": idem}
    try:
        node.start()
        before, _ = rss_kib(node.proc.pid)
        started = time.monotonic()
        result["errors"] = load_rcluster(args.port, args.records, idem)
        result["load_s"] = round(time.monotonic() - started, 1)
        after, peak = rss_kib(node.proc.pid)
        status = http_json(args.port, "/v1/status")
        n = status["records"]
        result.update(records=n, rss_before_kib=before, rss_after_kib=after, peak_kib=peak,
                      bytes_per_record=round((after - before) * 1024 / n, 1))
        node.stop()
        node.start()
        wait_for("the restarted node to hold every record",
                 lambda: http_json(args.port, "/v1/status")["records"] == n, 600)
        restarted, _ = rss_kib(node.proc.pid)
        result.update(rss_restarted_kib=restarted,
                      bytes_per_record_restarted=round((restarted - before) * 1024 / n, 1))
    finally:
        node.stop()
    print(f"rcluster idem={idem}: {result['bytes_per_record']} B/record "
          f"({result['bytes_per_record_restarted']} after a restart), RSS {after} KiB, "
          f"peak {peak} KiB, {result['errors']} errors, load {result['load_s']} s", file=sys.stderr)
    return result


def measure_redis(args, work):
    d = os.path.join(work, "redis")
    os.makedirs(d)
    proc = subprocess.Popen(
        ["redis-server", "--port", str(args.redis_port), "--bind", "127.0.0.1", "--dir", d,
         "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        cli = ["redis-cli", "-p", str(args.redis_port)]
        wait_for("redis", lambda: subprocess.run(cli + ["ping"], capture_output=True).stdout.strip() == b"PONG")
        before, _ = rss_kib(proc.pid)
        pipe = subprocess.Popen(cli + ["--pipe"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        value = b"x" * 100
        for start in range(0, args.records, 10000):
            chunk = []
            for i in range(start, min(start + 10000, args.records)):
                k = f"k{i}".encode()
                chunk.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$100\r\n%s\r\n" % (len(k), k, value))
            pipe.stdin.write(b"".join(chunk))
        pipe.stdin.close()
        pipe.wait(600)
        after, _ = rss_kib(proc.pid)
        n = int(subprocess.run(cli + ["dbsize"], capture_output=True).stdout)
    finally:
        proc.terminate()
        proc.wait(30)
    per = round((after - before) * 1024 / n, 1)
    print(f"redis: {per} B/record, RSS {after} KiB", file=sys.stderr)
    return {"records": n, "rss_before_kib": before, "rss_after_kib": after, "bytes_per_record": per}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records", type=int, default=2_000_000)
    p.add_argument("--idem", choices=["both", "yes", "no"], default="both")
    p.add_argument("--no-redis", action="store_true")
    p.add_argument("--node", default=os.path.join(ROOT, "target/release/rcluster-node"))
    p.add_argument("--node-arg", action="append", default=[],
                   help="an extra node flag (repeatable), e.g. --node-arg=--idempotency-keys=100000")
    p.add_argument("--port", type=int, default=17190)
    p.add_argument("--redis-port", type=int, default=16390)
    args = p.parse_args()
    if not os.access(args.node, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "-p", "rcluster-node", "--bin", "rcluster-node"],
                       cwd=ROOT, check=True)
    load = open("/proc/loadavg").read().split()[:3]
    out = {"records": args.records, "loadavg": load, "rcluster": []}
    work = tempfile.mkdtemp(prefix="rcluster-mem-")
    try:
        for idem in {"both": [False, True], "yes": [True], "no": [False]}[args.idem]:
            out["rcluster"].append(measure_rcluster(args, idem, work))
        if not args.no_redis and shutil.which("redis-server"):
            out["redis"] = measure_redis(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
