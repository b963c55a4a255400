"""Many processes on one cbd: counts are exact, and one half-open probe
goes to exactly one of them."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from cbd_client import Client

WORKER = str(Path(__file__).with_name("worker.py"))


def test_8_processes_x_1000_failures_make_exactly_8000(cbd) -> None:  # type: ignore[no-untyped-def]
    workers = [
        subprocess.Popen([sys.executable, WORKER, cbd.socket, "failures", "shared", "1000"]) for _ in range(8)
    ]
    assert [worker.wait(timeout=90) for worker in workers] == [0] * 8
    with Client(cbd.socket) as client:
        assert client.get("shared")["snapshot"]["failureCount"] == 8000


def test_10_processes_race_for_one_half_open_probe_and_exactly_one_wins(cbd) -> None:  # type: ignore[no-untyped-def]
    with Client(cbd.socket) as client:
        client.configure("race", {"failureThreshold": 1, "resetTimeoutMs": 200, "halfOpenMax": 1, "probeLeaseMs": 60_000})
        ticket = client.acquire("race")
        opened = client.report("race", "failure", generation=ticket["generation"])
        assert opened["snapshot"]["state"] == "open"
        workers = [
            subprocess.Popen(
                [sys.executable, WORKER, cbd.socket, "probe", "race"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(10)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
            # Past resetTimeoutMs: the first acquire moves the circuit to
            # half-open and takes the only probe; every other is denied.
            time.sleep(0.25)
            for worker in workers:
                assert worker.stdin is not None
                worker.stdin.write("go\n")
                worker.stdin.flush()
            answers = [worker.communicate(timeout=30)[0].strip() for worker in workers]
        finally:
            for worker in workers:
                if worker.poll() is None:
                    worker.kill()
                    worker.wait()
        assert sorted(answers) == ["allowed"] + ["denied"] * 9
        assert [worker.returncode for worker in workers] == [0] * 10
        assert client.get("race")["snapshot"]["state"] == "half-open"
