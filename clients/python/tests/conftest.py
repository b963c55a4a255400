"""Starts a real cbd on a temporary socket for the tests: $CBD_BIN, else
$CBD_BUILD_DIR/daemon/cbd, else the repository's build/daemon/cbd. A missing
binary fails the tests; it never skips them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]
CLIENT_ROOT = Path(__file__).resolve().parents[1]


def cbd_binary() -> str:
    if os.environ.get("CBD_BIN"):
        return os.environ["CBD_BIN"]
    build = Path(os.environ.get("CBD_BUILD_DIR") or REPO_ROOT / "build")
    return str(build / "daemon" / "cbd")


def can_connect(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(path)
            return True
        except OSError:
            return False


class Daemon:
    """One cbd on a socket in its own temporary directory."""

    def __init__(self, *args: str) -> None:
        self.dir = tempfile.mkdtemp(prefix="cbd-py-")
        self.socket = os.path.join(self.dir, "cbd.sock")
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = cbd_binary()
        assert os.access(binary, os.X_OK), f"no cbd at {binary}: set CBD_BUILD_DIR or CBD_BIN"
        self.proc = subprocess.Popen(
            [binary, "--socket", self.socket, "--log-level", "warn", *self.args], stdout=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while not can_connect(self.socket):
            assert self.proc.poll() is None, f"cbd exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, "cbd did not start listening within 10 s"
            time.sleep(0.01)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=10)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for name in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, name))
        os.rmdir(self.dir)


@pytest.fixture
def start_cbd() -> Iterator[object]:
    """A factory: start_cbd("--failure-threshold", "2") -> a running Daemon."""
    started: list[Daemon] = []

    def start(*args: str) -> Daemon:
        daemon = Daemon(*args)
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.cleanup()


@pytest.fixture
def cbd(start_cbd) -> Daemon:  # type: ignore[no-untyped-def]
    return start_cbd()
