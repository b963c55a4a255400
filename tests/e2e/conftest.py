"""Shared fixtures for the end-to-end tests: start the real cbd on a temporary
socket, talk to it with the real cbctl and with raw socket clients."""

import os
import pty
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("CBD_BUILD_DIR", ROOT / "build"))
CBD = os.environ.get("CBD_BIN", str(BUILD / "daemon" / "cbd"))
CBCTL = os.environ.get("CBCTL_BIN", str(BUILD / "cli" / "cbctl"))


def wait_for_socket(path, proc=None, timeout=10.0):
    """Waits until something accepts connections on `path`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"cbd exited with {proc.returncode} before serving")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.connect(str(path))
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {path}")


def wait_until_serving(path, proc, timeout=60.0):
    """Waits for an answer to ping: the socket listens before cbd has loaded
    its state file (connections wait in the backlog), and cbd may still
    refuse to start then."""
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(max(0.1, deadline - time.monotonic()))
                s.connect(str(path))
                s.sendall(b'{"op":"ping"}\n')
                buf = b""
                while b"\n" not in buf:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    buf += chunk
                if b"\n" in buf and json.loads(buf.split(b"\n")[0]).get("ok"):
                    return
        except (OSError, ValueError):
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"cbd exited with {proc.returncode} before serving")
        time.sleep(0.02)
    raise TimeoutError(f"cbd at {path} did not answer a ping")


class Daemon:
    def __init__(self, proc, sock, stderr_path):
        self.proc = proc
        self.sock = str(sock)
        self.stderr_path = stderr_path

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def log(self):
        return Path(self.stderr_path).read_text(errors="replace")


class Client:
    """A raw protocol client: bytes out, lines in."""

    def __init__(self, path, timeout=10.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        self.s.connect(str(path))
        self.buf = b""

    def send(self, data: bytes):
        self.s.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(f"connection closed; buffered {self.buf[:200]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line

    def json(self):
        import json

        return json.loads(self.line())

    def call(self, obj):
        import json

        self.send(json.dumps(obj).encode() + b"\n")
        return self.json()

    def at_eof(self) -> bool:
        """True when the daemon closed the connection (after any buffered lines)."""
        try:
            return self.s.recv(65536) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


@pytest.fixture
def workdir():
    # Socket paths are limited to 107 bytes: keep them short, not in pytest's
    # long tmp_path.
    d = tempfile.mkdtemp(prefix="cbd-e2e-", dir="/tmp")
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start_cbd(workdir):
    """Factory: start_cbd(*args, sock=None, env=None) -> Daemon, stopped at teardown."""
    started = []

    def start(*args, sock=None, env=None, wait=True):
        sock = Path(sock) if sock else workdir / "cbd.sock"
        stderr_path = workdir / f"cbd-{len(started)}.log"
        full_env = dict(os.environ)
        full_env.pop("NOTIFY_SOCKET", None)
        full_env.pop("LISTEN_FDS", None)
        full_env.update(env or {})
        args = list(args)
        if BACKEND == "redis" and "--backend" not in args and "--state-file" not in args:
            args = ["--backend", "redis", "--redis", "unix://" + shared_redis(workdir)] + args
        with open(stderr_path, "wb") as err:
            proc = subprocess.Popen([CBD, "--socket", str(sock), *args], stderr=err, env=full_env)
        d = Daemon(proc, sock, stderr_path)
        started.append(d)
        if wait:
            wait_for_socket(sock, proc)
            wait_until_serving(sock, proc)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
    stop_shared_redis(workdir)


# CBD_E2E_BACKEND=redis runs the suites against cbd on Redis: every daemon a
# test starts (unless it asks for a backend or a state file itself) keeps its
# circuits in a redis-server private to the test.
BACKEND = os.environ.get("CBD_E2E_BACKEND", "memory")
_redis_servers = {}


def shared_redis(workdir):
    if workdir not in _redis_servers:
        sock = workdir / "redis.sock"
        proc = subprocess.Popen(["redis-server", "--port", "0", "--unixsocket", str(sock),
                                 "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
                                 "--dir", str(workdir)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        _redis_servers[workdir] = (proc, str(sock))
    return _redis_servers[workdir][1]


def stop_shared_redis(workdir):
    if workdir in _redis_servers:
        proc, _ = _redis_servers.pop(workdir)
        proc.kill()
        proc.wait()


@pytest.fixture
def cbd(start_cbd):
    return start_cbd()


def cbctl(*args, sock=None, env=None, input=None, timeout=30):
    """Runs the real cbctl; returns CompletedProcess with text stdout/stderr."""
    full_env = dict(os.environ)
    full_env.pop("CBD_SOCKET", None)
    full_env.update(env or {})
    cmd = [CBCTL]
    if sock is not None:
        cmd += ["--socket", str(sock)]
    cmd += list(args)
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, input=input, timeout=timeout)


def run_on_tty(args, env=None):
    """Runs cbctl with a terminal as stdout; returns what it printed."""
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(CBCTL, [CBCTL, *args], dict(os.environ, TZ="UTC", **(env or {})))
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.waitpid(pid, 0)
    return out.decode().replace("\r\n", "\n")
