#!/usr/bin/env python3
"""Outcomes per second into cbd: one `report` line per outcome (pipelined,
256 in flight) against `reportBatch` lines of B outcomes (2 in flight, as
the mirroring clients send them), on one connection, on memory and on Redis,
in one run.

    bench/report_batch.py [--build build] [--outcomes N] [--batch B] [--rounds R]

Starts its own cbd (and a redis-server for the Redis rows) on temporary
sockets, alternates the two ways R times per backend and prints the median
rate of each and their ratio. Every outcome is counted back out of cbd
(failureCount), so a rate that lost outcomes cannot look good.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def wait_for(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"report_batch: no socket at {path}")
        time.sleep(0.02)


class Conn:
    def __init__(self, path: Path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(path))
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise SystemExit("report_batch: cbd closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj: dict) -> dict:
        self.send((json.dumps(obj) + "\n").encode())
        return self.line()


def pipelined(conn: Conn, lines: list[bytes], in_flight: int) -> list[dict]:
    replies, sent = [], 0
    while len(replies) < len(lines):
        while sent < len(lines) and sent - len(replies) < in_flight:
            conn.send(lines[sent])
            sent += 1
        replies.append(conn.line())
    return replies


def one_by_one(conn: Conn, key: str, n: int) -> float:
    line = (json.dumps({"op": "report", "key": key, "outcome": "failure"}) + "\n").encode()
    start = time.perf_counter()
    replies = pipelined(conn, [line] * n, 256)
    elapsed = time.perf_counter() - start
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:1]
    return n / elapsed


def batched(conn: Conn, key: str, n: int, batch: int) -> float:
    entry = {"key": key, "outcome": "failure"}
    lines = []
    for start in range(0, n, batch):
        size = min(batch, n - start)
        lines.append((json.dumps({"op": "reportBatch", "reports": [entry] * size}) + "\n").encode())
    start = time.perf_counter()
    replies = pipelined(conn, lines, 2)
    elapsed = time.perf_counter() - start
    assert all(r["ok"] and not r["errors"] for r in replies), replies[:1]
    assert sum(r["applied"] for r in replies) == n
    return n / elapsed


def run_backend(name: str, build: Path, work: Path, args) -> tuple[float, float]:
    extra, redis = [], None
    if name == "redis":
        rsock = work / "redis.sock"
        redis = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(rsock),
                                  "--save", "", "--appendonly", "no", "--dir", str(work)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(rsock)
        extra = ["--backend", "redis", "--redis", f"unix://{rsock}"]
    sock = work / f"cbd-{name}.sock"
    cbd = subprocess.Popen([str(build / "daemon" / "cbd"), "--socket", str(sock), "--log-level",
                            "warn", "--failure-threshold", "1000000000", *extra])
    try:
        wait_for(sock)
        time.sleep(0.2)
        conn = Conn(sock)
        singles, batches, total = [], [], 0
        for _ in range(args.rounds):
            singles.append(one_by_one(conn, "bench", args.outcomes))
            batches.append(batched(conn, "bench", args.outcomes, args.batch))
            total += 2 * args.outcomes
        counted = conn.call({"op": "get", "key": "bench"})["snapshot"]["failureCount"]
        assert counted == total, f"{name}: counted {counted} of {total} outcomes"
        return statistics.median(singles), statistics.median(batches)
    finally:
        cbd.terminate()
        cbd.wait()
        if redis:
            redis.kill()
            redis.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", default=os.environ.get("CBD_BUILD_DIR", str(REPO / "build")))
    p.add_argument("--outcomes", type=int, default=50_000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="cbd-batch-", dir="/tmp") as d:
        for name in ("memory", "redis"):
            single, batch = run_backend(name, Path(args.build), Path(d), args)
            print(f"{name:6}  report: {single:10,.0f} outcomes/s   reportBatch({args.batch}): "
                  f"{batch:10,.0f} outcomes/s   ratio {batch / single:5.2f}x")


if __name__ == "__main__":
    main()
