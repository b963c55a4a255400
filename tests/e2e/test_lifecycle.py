"""cbd's life: start-up rules, signals, socket activation, systemd."""

import os
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BUILD, CBD, Client, cbctl, wait_for_socket


def test_second_daemon_on_the_same_socket_refuses(start_cbd):
    first = start_cbd()
    lock = Path(first.sock + ".lock")
    held = lock.stat()
    second = start_cbd(wait=False)
    assert second.proc.wait(timeout=10) != 0
    log = second.log()
    assert "already serving" in log and first.sock in log and str(first.proc.pid) in log
    assert Client(first.sock).call({"op": "ping"})["ok"]
    # The refused one leaves the first one's lock file where it was, as it was.
    assert (lock.stat().st_ino, lock.read_text()) == (held.st_ino, f"{first.proc.pid}\n")
    # Which the first one removes when it stops: a third serves the path.
    assert first.stop() == 0
    assert not lock.exists()
    third = start_cbd()
    assert Client(third.sock).call({"op": "ping"})["ok"]


def test_stale_socket_from_killed_daemon_is_replaced(start_cbd):
    first = start_cbd()
    first.stop(signal.SIGKILL)
    assert os.path.exists(first.sock)  # left behind by the dead one
    assert os.path.exists(first.sock + ".lock")  # and its lock file, unheld
    second = start_cbd()
    assert Client(second.sock).call({"op": "ping"})["ok"]
    assert second.stop() == 0
    assert not os.path.exists(second.sock + ".lock")


def test_refuses_to_replace_a_file_that_is_not_a_socket(start_cbd, workdir):
    path = workdir / "regular-file"
    path.write_text("precious")
    d = start_cbd(sock=path, wait=False)
    assert d.proc.wait(timeout=10) != 0
    assert "not a socket" in d.log()
    assert path.read_text() == "precious"
    # Refused once it held the lock: the lock file goes with it.
    assert sorted(os.listdir(workdir)) == ["cbd-0.log", "regular-file"]


@pytest.mark.parametrize("args, message", [
    (["--config", "/nonexistent/cbd.json"], "/nonexistent/cbd.json"),
    (["--http-listen", "0.0.0.0:0"], "not a loopback address"),
], ids=["missing-config", "remote-http"])
def test_a_start_refused_after_the_lock_leaves_no_lock_file(start_cbd, workdir, args, message):
    d = start_cbd(*args, wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert message in d.log()
    assert not os.path.exists(d.sock) and not os.path.exists(d.sock + ".lock")


def test_sigterm_exits_zero_and_removes_the_socket(cbd):
    assert Client(cbd.sock).call({"op": "ping"})["ok"]
    assert os.path.exists(cbd.sock + ".lock")
    assert cbd.stop(signal.SIGTERM) == 0
    assert not os.path.exists(cbd.sock)
    assert not os.path.exists(cbd.sock + ".lock")


def test_sigint_exits_zero(cbd):
    assert cbd.stop(signal.SIGINT) == 0
    assert not os.path.exists(cbd.sock)
    assert not os.path.exists(cbd.sock + ".lock")


def test_shutdown_answers_what_was_read(cbd):
    c = Client(cbd.sock)
    c.send(b'{"op":"failure","key":"k"}\n' * 100)
    first = c.json()
    assert first["ok"]
    cbd.proc.send_signal(signal.SIGTERM)
    got = 1
    try:
        while True:
            assert c.json()["ok"]
            got += 1
    except (EOFError, ConnectionResetError):
        pass
    assert got == 100
    assert cbd.proc.wait(timeout=10) == 0


def test_socket_mode(start_cbd):
    d = start_cbd("--socket-mode", "0600")
    assert stat.S_IMODE(os.stat(d.sock).st_mode) == 0o600
    d.stop()
    d = start_cbd("--socket-mode", "0666")
    assert stat.S_IMODE(os.stat(d.sock).st_mode) == 0o666


def test_default_socket_mode_is_0660(cbd):
    assert stat.S_IMODE(os.stat(cbd.sock).st_mode) == 0o660


def test_bad_socket_mode_is_a_usage_error(workdir):
    r = subprocess.run([CBD, "--socket", str(workdir / "s"), "--socket-mode", "999"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "socket-mode" in r.stderr


def test_creates_missing_parent_directory(start_cbd, workdir):
    d = start_cbd(sock=workdir / "a" / "b" / "cbd.sock")
    assert Client(d.sock).call({"op": "ping"})["ok"]


def test_socket_path_from_environment(start_cbd, workdir):
    # CBD_SOCKET is used when --socket is absent; start cbd without --socket.
    path = str(workdir / "env.sock")
    env = dict(os.environ, CBD_SOCKET=path)
    proc = subprocess.Popen([CBD], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for_socket(path, proc)
        assert cbctl("ping", env={"CBD_SOCKET": path}).returncode == 0
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0


def test_version_flag():
    r = subprocess.run([CBD, "--version"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "protocol 10" in r.stdout


def recv_notifications(sock, until, timeout=10.0):
    """Collects sd_notify datagrams until one contains `until`."""
    sock.settimeout(timeout)
    messages = []
    while True:
        msg = sock.recv(4096).decode()
        messages.append(msg)
        if until in msg:
            return messages


def test_ready_stopping_and_watchdog_notifications(start_cbd, workdir):
    notify_path = str(workdir / "notify")
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    n.bind(notify_path)
    d = start_cbd(env={"NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "200000"}, wait=False)
    msgs = recv_notifications(n, "READY=1")
    # READY=1 comes only once the socket accepts connections.
    assert Client(d.sock).call({"op": "ping"})["ok"]
    # Pings come from the event loop, every WATCHDOG_USEC / 2.
    msgs = recv_notifications(n, "WATCHDOG=1")
    recv_notifications(n, "WATCHDOG=1", timeout=1.0)
    d.proc.send_signal(signal.SIGTERM)
    recv_notifications(n, "STOPPING=1")
    assert d.proc.wait(timeout=10) == 0


def test_socket_activation(workdir):
    path = str(workdir / "activated.sock")
    proc = subprocess.Popen(["systemd-socket-activate", "-l", path, CBD],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.02)
        c = Client(path)
        assert c.call({"op": "failure", "key": "sa"})["snapshot"]["failureCount"] == 1
        assert cbctl("get", "sa", "--field", "failureCount", sock=path).stdout == "1\n"
        # systemd owns the socket and runs one service for it: no lock file.
        assert not os.path.exists(path + ".lock")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    # cbd never unlinks the socket systemd gave it, and leaves nothing beside it.
    assert os.path.exists(path)
    assert sorted(os.listdir(workdir)) == ["activated.sock"]
    assert "socket activation" in proc.stderr.read()


def test_systemd_analyze_verify_accepts_the_units(workdir):
    units = BUILD / "systemd" / "verify"
    r = subprocess.run(["systemd-analyze", "verify", str(units / "cbd.socket"), str(units / "cbd.service")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    xdg = workdir / "xdg"
    xdg.mkdir(mode=0o700)
    r = subprocess.run(["systemd-analyze", "--user", "verify", str(units / "user" / "cbd.socket"),
                        str(units / "user" / "cbd.service")],
                       capture_output=True, text=True, timeout=60, env=dict(os.environ, XDG_RUNTIME_DIR=str(xdg)))
    assert r.returncode == 0, r.stderr


def test_cmake_install_puts_binaries_and_units_in_place(workdir):
    prefix = workdir / "prefix"
    r = subprocess.run(["cmake", "--install", str(BUILD), "--prefix", str(prefix)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for rel in ["sbin/cbd", "bin/cbctl", "lib/systemd/system/cbd.service", "lib/systemd/system/cbd.socket",
                "lib/systemd/user/cbd.service", "lib/systemd/user/cbd.socket", "lib/sysusers.d/cbd.conf"]:
        assert (prefix / rel).exists(), rel
    unit = (prefix / "lib/systemd/system/cbd.service").read_text()
    # the units start the daemon from sbin, where it is installed
    assert any(l.startswith("ExecStart=") and "/sbin/cbd " in l for l in unit.splitlines())
    assert "Type=notify" in unit and "DynamicUser=yes" in unit
    assert not any(l.startswith("RuntimeDirectory=") for l in unit.splitlines())
    # Circuits persist in the unit's state directory.
    assert "StateDirectory=cbd" in unit.splitlines()
    assert "--state-file %S/cbd/state.db" in unit
    user_unit = (prefix / "lib/systemd/user/cbd.service").read_text()
    assert "StateDirectory=cbd" in user_unit.splitlines() and "--state-file %S/cbd/state.db" in user_unit
    assert "ListenStream=/run/cbd/cbd.sock" in (prefix / "lib/systemd/system/cbd.socket").read_text()
