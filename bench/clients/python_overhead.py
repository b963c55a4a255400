#!/usr/bin/env python3
"""Per-call overhead of the Python client: 10,000 sequential `failure` calls
through cbd_client.Client against the same calls over a raw socket in
Python (write a line, read a line, nothing else), on one cbd.

    bench/clients/python_overhead.py [--cbd PATH] [--calls N] [--rounds R]

Starts its own cbd (--cbd, else $CBD_BIN, else $CBD_BUILD_DIR/daemon/cbd,
else build/daemon/cbd) on a temporary socket, runs R rounds of each (raw and
client alternating, so drift hits both alike), and prints the best round of
each and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "clients" / "python" / "src"))

from cbd_client import Client  # noqa: E402


def raw_loop(path: str, key: str, calls: int) -> float:
    """The floor: one request line out, one reply line in, per call."""
    request = json.dumps({"op": "failure", "key": key}, separators=(",", ":")).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        pending = b""
        started = time.perf_counter()
        for _ in range(calls):
            sock.sendall(request)
            while b"\n" not in pending:
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("cbd closed the connection")
                pending += chunk
            pending = pending[pending.index(b"\n") + 1 :]
        return time.perf_counter() - started


def client_loop(path: str, key: str, calls: int) -> float:
    with Client(path) as client:
        client.ping()  # connect outside the timing, as the raw loop does
        started = time.perf_counter()
        for _ in range(calls):
            client.failure(key)
        return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cbd = os.environ.get("CBD_BIN") or str(
        Path(os.environ.get("CBD_BUILD_DIR") or REPO_ROOT / "build") / "daemon" / "cbd"
    )
    parser.add_argument("--cbd", default=default_cbd)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not 1 <= args.calls <= 10_000_000 or not 1 <= args.rounds <= 100:
        parser.error("--calls must be 1..10000000 and --rounds 1..100")

    with tempfile.TemporaryDirectory(prefix="cbd-bench-") as directory:
        path = os.path.join(directory, "cbd.sock")
        daemon = subprocess.Popen([args.cbd, "--socket", path, "--log-level", "warn"])
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(path):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    print(f"cbd at {args.cbd} did not start", file=sys.stderr)
                    return 1
                time.sleep(0.01)
            raw_best = client_best = float("inf")
            for round_index in range(args.rounds):
                raw_best = min(raw_best, raw_loop(path, f"raw-{round_index}", args.calls))
                client_best = min(client_best, client_loop(path, f"client-{round_index}", args.calls))
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)

    per_call = lambda total: total / args.calls * 1e6  # noqa: E731
    print(f"python raw socket: {args.calls} failure calls in {raw_best * 1000:.1f} ms ({per_call(raw_best):.1f} us/call)")
    print(f"python cbd_client: {args.calls} failure calls in {client_best * 1000:.1f} ms ({per_call(client_best):.1f} us/call)")
    print(f"ratio client/raw: {client_best / raw_best:.2f} (best of {args.rounds} rounds each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
