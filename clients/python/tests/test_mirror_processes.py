"""Mirror mode across processes, on cbd's memory backend and on Redis:
counts stay exact, one half-open probe goes to exactly one process, and
every mirror sees a circuit open (the time it took is printed)."""
from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from cbd_client import Client

WORKER = str(Path(__file__).with_name("worker.py"))


def free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def redis_server() -> Iterator[str]:
    """A redis-server of this module's own on a free port, no persistence."""
    directory = tempfile.mkdtemp(prefix="cbd-py-redis-")
    port = free_tcp_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", directory],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            assert proc.poll() is None, f"redis-server exited with {proc.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not answer within 10 s"
            time.sleep(0.02)
        yield f"tcp://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


@pytest.fixture(params=["memory", "redis"])
def backend(request, start_cbd):  # type: ignore[no-untyped-def]
    """A cbd on the memory backend, or on the module's Redis."""
    if request.param == "redis":
        # A generous backend timeout: the machine is shared with builds, and
        # a Redis round trip that takes a second there is load, not a bug.
        return start_cbd("--backend", "redis", "--redis", request.getfixturevalue("redis_server"), "--backend-timeout", "10s")
    return start_cbd()


def spawn(daemon, *args: str, stdin: bool = False) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        [sys.executable, WORKER, daemon.socket, *args],
        stdin=subprocess.PIPE if stdin else None,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_line(worker: subprocess.Popen[str]) -> str:
    assert worker.stdout is not None
    return worker.stdout.readline().strip()


def finish(workers: list[subprocess.Popen[str]]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.kill()
        worker.wait(timeout=30)


def test_8_mirroring_processes_x_10000_failures_count_exactly_80000(backend) -> None:  # type: ignore[no-untyped-def]
    with Client(backend.socket, timeout=30.0) as client:
        client.configure("exact", {"failureThreshold": 1_000_000_000})
        started = time.monotonic()
        workers = [spawn(backend, "mirror-failures", "exact", "10000") for _ in range(8)]
        try:
            assert [read_line(worker) for worker in workers] == ["mirrored"] * 8
            results = [json.loads(read_line(worker)) for worker in workers]
            assert [worker.wait(timeout=60) for worker in workers] == [0] * 8
        finally:
            finish(workers)
        took = time.monotonic() - started
        # Every failure was decided in its process (no acquire), none was
        # dropped or refused, and cbd counted each exactly once.
        assert [result["asked"] for result in results] == [0] * 8
        assert [(result["dropped"], result["errors"], result["unsent"], result["stale"]) for result in results] == [(0, 0, 0, 0)] * 8
        snapshot = client.get("exact")["snapshot"]
        assert (snapshot["state"], snapshot["failureCount"]) == ("closed", 80_000)
        print(f"\n[{backend.args or 'memory'}] 8 x 10000 mirrored failures in {took:.2f} s (processes included)")


def test_10_mirroring_processes_race_for_one_half_open_probe(backend) -> None:  # type: ignore[no-untyped-def]
    with Client(backend.socket, timeout=30.0) as client:
        client.configure("race", {"failureThreshold": 1, "resetTimeoutMs": 1500, "halfOpenMax": 1, "probeLeaseMs": 60_000})
        workers = [spawn(backend, "mirror-probe", "race", stdin=True) for _ in range(10)]
        try:
            assert [read_line(worker) for worker in workers] == ["mirrored"] * 10
            ticket = client.acquire("race")
            opened_at = time.monotonic()
            assert client.report("race", "failure", generation=ticket["generation"])["snapshot"]["state"] == "open"
            # Each mirror sees the event and learns the deny time from cbd.
            assert [read_line(worker) for worker in workers] == ["denied-open"] * 10
            time.sleep(max(0.0, opened_at + 1.6 - time.monotonic()))
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            answers = [read_line(worker) for worker in workers]
            assert sorted(answers) == ["denied"] * 9 + ["probing"]
            assert client.get("race")["snapshot"]["state"] == "half-open"
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("done\n")
                worker.stdin.flush()
            assert [worker.wait(timeout=30) for worker in workers] == [0] * 10
        finally:
            finish(workers)
        # The probe's success was reported at once, with its permit.
        assert client.get("race")["snapshot"]["state"] == "closed"


def test_8_mirrors_all_see_a_circuit_cbd_opened(backend) -> None:  # type: ignore[no-untyped-def]
    with Client(backend.socket, timeout=30.0) as client:
        client.configure("stale", {"resetTimeoutMs": 60_000})
        workers = [spawn(backend, "mirror-stale", "stale") for _ in range(8)]
        try:
            assert [read_line(worker) for worker in workers] == ["mirrored"] * 8
            opened_at = time.monotonic()
            client.transition("stale", "open")
            results = [json.loads(read_line(worker)) for worker in workers]
            assert [worker.wait(timeout=30) for worker in workers] == [0] * 8
        finally:
            finish(workers)
        assert client.get("stale")["snapshot"]["state"] == "open"
    first = sorted((result["denied_at"] - opened_at) * 1000 for result in results)
    local = sorted((result["local_at"] - opened_at) * 1000 for result in results)
    # Printed, not asserted: the machine is shared.
    print(
        f"\n[{backend.args or 'memory'}] transition -> denial in 8 mirroring processes: first denial "
        f"median {statistics.median(first):.2f} ms, max {first[-1]:.2f} ms; first local denial "
        f"median {statistics.median(local):.2f} ms, max {local[-1]:.2f} ms; calls: {[r['calls'] for r in results]}"
    )
