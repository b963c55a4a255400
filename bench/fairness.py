#!/usr/bin/env python3
"""Fairness between connections: a writer's `failure` latency alone, and
while read-level peers flood `list` pages.

    bench/fairness.py [--cbd build/daemon/cbd] [--baseline OTHER_CBD]
                      [--readers 20] [--circuits 5000] [--calls 2000]

Starts each cbd given on a temporary socket, creates --circuits circuits,
then measures the writer's round trips (one `failure` at a time, waiting
for each reply): first alone, then while --readers connections (one
process each) pipeline `{"op":"list","limit":1000}` as fast as cbd takes
them and read every page. Prints p50/p99/max per cbd; with --baseline, the
same load on a second binary (for example one built from an older commit),
so the two can be compared from one run.

Standard library only. Numbers, not a test: run it on a quiet machine.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def start_cbd(binary, workdir):
    sock = os.path.join(workdir, "cbd.sock")
    log = open(os.path.join(workdir, "cbd.log"), "wb")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "CBD_SOCKET")}
    proc = subprocess.Popen([binary, "--socket", sock, "--log-level", "warn"],
                            stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            s = connect(sock)
            s.sendall(b'{"op":"ping"}\n')
            if s.recv(4096):
                s.close()
                return proc, sock
        except OSError:
            time.sleep(0.02)
    proc.kill()
    sys.exit(f"{binary} did not start (see {workdir}/cbd.log)")


def create_circuits(sock, n):
    s = connect(sock)
    f = s.makefile("rb")
    batch = 500
    for start in range(0, n, batch):
        count = min(batch, n - start)
        s.sendall(b"".join(json.dumps({"op": "failure", "key": f"svc/{i:06d}"}).encode() + b"\n"
                           for i in range(start, start + count)))
        for _ in range(count):
            if not json.loads(f.readline())["ok"]:
                sys.exit("creating circuits failed")
    s.close()


def flood_lists(sock, ready, stop):
    """One reader: pipelines list pages without waiting for them, and reads
    every reply (so cbd's output bound is not what slows it down)."""
    s = connect(sock)
    line = b'{"op":"list","limit":1000}\n' * 8

    def read():
        while not stop.is_set():
            try:
                if not s.recv(1 << 20):
                    return
            except OSError:
                return

    threading.Thread(target=read, daemon=True).start()
    ready.set()
    while not stop.is_set():
        try:
            s.sendall(line)
        except OSError:
            return


def writer_latencies(sock, calls, max_seconds):
    s = connect(sock)
    f = s.makefile("rb")
    request = b'{"op":"failure","key":"writer"}\n'
    out = []
    deadline = time.monotonic() + max_seconds
    for _ in range(calls):
        t0 = time.perf_counter()
        s.sendall(request)
        reply = f.readline()
        out.append((time.perf_counter() - t0) * 1000.0)
        if not reply.startswith(b'{"ok":true'):
            sys.exit(f"writer got {reply[:200]!r}")
        if time.monotonic() > deadline:
            break
    s.close()
    return out


def stats_lists(sock):
    s = connect(sock)
    s.sendall(b'{"op":"stats"}\n')
    reply = json.loads(s.makefile("rb").readline())
    s.close()
    return reply["requests"]["list"]


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * len(sorted_values))) - 1))
    return sorted_values[k]


def summary(values):
    v = sorted(values)
    return (f"p50 {percentile(v, 50):8.2f} ms   p99 {percentile(v, 99):8.2f} ms   "
            f"max {v[-1]:8.2f} ms   ({len(v)} calls)")


def measure(binary, opts):
    workdir = tempfile.mkdtemp(prefix="cbd-fair-", dir="/tmp")
    proc, sock = start_cbd(binary, workdir)
    try:
        create_circuits(sock, opts.circuits)
        alone = writer_latencies(sock, opts.calls, 30)
        stop = multiprocessing.Event()
        readers = []
        for _ in range(opts.readers):
            ready = multiprocessing.Event()
            p = multiprocessing.Process(target=flood_lists, args=(sock, ready, stop), daemon=True)
            p.start()
            readers.append((p, ready))
        for _, ready in readers:
            ready.wait(10)
        time.sleep(0.5)  # let the flood build up
        lists_before, t0 = stats_lists(sock), time.monotonic()
        flooded = writer_latencies(sock, opts.calls, opts.flood_seconds)
        pages_per_s = (stats_lists(sock) - lists_before) / (time.monotonic() - t0)
        stop.set()
        for p, _ in readers:
            p.join(5)
            if p.is_alive():
                p.kill()
        return alone, flooded, pages_per_s
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cbd", default=str(ROOT / "build" / "daemon" / "cbd"))
    parser.add_argument("--baseline", help="a second cbd binary to run the same load against")
    parser.add_argument("--readers", type=int, default=20)
    parser.add_argument("--circuits", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--flood-seconds", type=float, default=20.0,
                        help="stop measuring under the flood after this long")
    opts = parser.parse_args()

    print(f"writer: one `failure` at a time; flood: {opts.readers} connections pipelining "
          f"list limit 1000 over {opts.circuits} circuits; {os.cpu_count()} CPUs")
    for label, binary in (("cbd", opts.cbd), ("baseline", opts.baseline)):
        if not binary:
            continue
        alone, flooded, pages_per_s = measure(binary, opts)
        print(f"{label:8} {binary}")
        print(f"  alone        {summary(alone)}")
        print(f"  under flood  {summary(flooded)}   readers got {pages_per_s:,.0f} pages/s")


if __name__ == "__main__":
    main()
