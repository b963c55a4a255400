"""Hardening end to end: access levels, bounds on connections and buffers,
idle timeouts, the socket directory rule, the unit's security rating."""

import json
import os
import re
import resource
import socket
import subprocess
import time
from pathlib import Path

from conftest import BUILD, CBCTL, Client, cbctl

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534"]


def as_user(groups, *args):
    cmd = NOBODY + (["--groups=" + ",".join(map(str, groups))] if groups else ["--clear-groups"])
    return subprocess.run(cmd + [CBCTL, *args], capture_output=True, text=True, timeout=30)


def open_daemon(start_cbd, workdir, *args):
    os.chmod(workdir, 0o755)  # let nobody reach the socket
    return start_cbd("--socket-mode", "0666", *args)


def test_levels_by_group(start_cbd, workdir):
    d = open_daemon(start_cbd, workdir, "--writer-group", "4242", "--admin-group", "4343")
    s = ["--socket", d.sock]
    # a reader (no group) may get, not record or reset
    assert as_user([], *s, "get", "api").returncode == 0
    r = as_user([], *s, "reset", "api")
    assert r.returncode == 1 and "permission_denied" in r.stderr and "admin" in r.stderr
    r = as_user([], *s, "failure", "api")
    assert r.returncode == 1 and "permission_denied" in r.stderr and "write" in r.stderr
    # a writer may record, not force
    assert as_user([4242], *s, "failure", "api").returncode == 0
    assert as_user([4242], *s, "acquire", "api").returncode == 0
    r = as_user([4242], *s, "force", "api", "open")
    assert r.returncode == 1 and "permission_denied" in r.stderr
    # an admin may do everything
    assert as_user([4343], *s, "force", "api", "open").returncode == 0
    assert as_user([4343], *s, "reset", "api").returncode == 0
    # root always may
    assert cbctl("transition", "api", "open", sock=d.sock).returncode == 0
    log = d.log()
    assert "audit: denied reset key=api needs=admin has=read uid=65534" in log
    assert "audit: denied force key=api needs=admin has=write uid=65534" in log
    stats = Client(d.sock).call({"op": "stats"})
    assert stats["errors"]["permission_denied"] == 3


def test_without_groups_everyone_may_do_everything(start_cbd, workdir):
    d = open_daemon(start_cbd, workdir)
    assert as_user([], "--socket", d.sock, "reset", "api").returncode == 0
    assert "every peer that can connect is admin" in d.log()


def test_groups_from_the_config_file_and_reload(start_cbd, workdir):
    conf = workdir / "cbd.json"
    conf.write_text(json.dumps({"writerGroup": "4242"}))
    d = open_daemon(start_cbd, workdir, "--config", str(conf))
    assert as_user([4242], "--socket", d.sock, "failure", "k").returncode == 0
    assert as_user([4343], "--socket", d.sock, "failure", "k").returncode == 1
    conf.write_text(json.dumps({"writerGroup": "4343"}))
    d.proc.send_signal(__import__("signal").SIGHUP)
    deadline = time.monotonic() + 5
    while "reloaded" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert as_user([4343], "--socket", d.sock, "failure", "k").returncode == 0
    assert as_user([4242], "--socket", d.sock, "failure", "k").returncode == 1


def test_unknown_group_refuses_to_start(start_cbd):
    d = start_cbd("--admin-group", "no-such-group-xyz", wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert "no-such-group-xyz" in d.log()


def test_1025th_connection_is_refused_and_the_daemon_lives(start_cbd):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    d = start_cbd()  # default --max-connections 1024
    conns = []
    try:
        for _ in range(1024):
            conns.append(Client(d.sock))
        # every one of them is served
        conns[0].send(b'{"op":"ping"}\n')
        assert conns[0].json()["ok"]
        conns[-1].send(b'{"op":"ping"}\n')
        assert conns[-1].json()["ok"]
        extra = Client(d.sock)
        reply = extra.json()
        assert reply["error"]["code"] == "too_many_connections"
        assert extra.at_eof()
        # one leaves: the next one gets in
        conns.pop().close()
        deadline = time.monotonic() + 5
        while True:
            c = Client(d.sock)
            c.send(b'{"op":"stats"}\n')
            r = c.json()
            if r["ok"]:
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert r["connections"]["refused"] >= 1
        assert r["connections"]["current"] == 1024
    finally:
        for c in conns:
            c.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_a_pipeliner_that_never_reads_is_not_buffered(cbd):
    before = rss_kib(cbd.proc.pid)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(cbd.sock)
    s.setblocking(False)
    line = b'{"op":"failure","key":"flood","id":"' + b"x" * 200 + b'"}\n'
    chunk = line * 1000
    sent = 0
    deadline = time.monotonic() + 20
    stalls = 0
    while sent < 200 * 1024 * 1024 and time.monotonic() < deadline:
        try:
            sent += s.send(chunk)
            stalls = 0
        except BlockingIOError:
            stalls += 1
            if stalls > 50:  # cbd stopped reading: backpressure reached us
                break
            time.sleep(0.01)
    after = rss_kib(cbd.proc.pid)
    # cbd holds at most one read's worth of replies, not what we sent
    assert sent < 50 * 1024 * 1024
    if not os.environ.get("CBD_SANITIZED"):  # under ASan, RSS measures the sanitizer
        assert after - before < 16 * 1024, (before, after, sent)
    # others are served meanwhile
    assert Client(cbd.sock).call({"op": "ping"})["ok"]
    s.close()


def test_idle_timeout(start_cbd):
    d = start_cbd("--idle-timeout", "1s")
    idle, busy, watcher = Client(d.sock), Client(d.sock), Client(d.sock)
    assert watcher.call({"op": "watch"})["ok"]
    for _ in range(12):  # 1.2 s of pings 100 ms apart: never idle for 1 s
        assert busy.call({"op": "ping"})["ok"]
        time.sleep(0.1)
    assert idle.at_eof()
    assert busy.call({"op": "ping"})["ok"]
    Client(d.sock).call({"op": "transition", "key": "w", "to": "open"})
    assert watcher.json()["event"] == "transition"


def test_idle_timeout_off_by_default(cbd):
    c = Client(cbd.sock)
    time.sleep(0.5)
    assert c.call({"op": "ping"})["ok"]


def test_refuses_a_world_writable_socket_directory(start_cbd, workdir):
    unsafe = workdir / "unsafe"
    unsafe.mkdir()
    os.chmod(unsafe, 0o777)
    d = start_cbd(sock=unsafe / "cbd.sock", wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert "sticky bit" in d.log() and str(unsafe) in d.log()
    assert not (unsafe / "cbd.sock").exists()
    sticky = workdir / "sticky"
    sticky.mkdir()
    os.chmod(sticky, 0o1777)
    d = start_cbd(sock=sticky / "cbd.sock")
    assert Client(d.sock).call({"op": "ping"})["ok"]


def test_unit_security_rating_is_at_most_1_5():
    unit = BUILD / "systemd" / "verify" / "cbd.service"
    r = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 1.5, m.group(0)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_backs_off_and_recovers(start_cbd, workdir):
    # cbd with only 32 descriptors, and room for many more connections.
    sock = workdir / "cbd.sock"
    from conftest import CBD, wait_for_socket
    log = open(workdir / "fd.log", "wb")
    proc = subprocess.Popen(["prlimit", "--nofile=32:32", CBD, "--socket", str(sock)], stderr=log)
    try:
        wait_for_socket(sock, proc)
        clients = [Client(sock) for _ in range(60)]  # more than cbd can accept
        time.sleep(0.5)
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        assert cpu_seconds(proc.pid) - before < 0.3  # backing off, not spinning
        assert proc.poll() is None
        assert "accept failed" in (workdir / "fd.log").read_text()
        for c in clients[:50]:
            c.close()
        # the ones that waited in the backlog are served now
        for c in clients[50:]:
            assert c.call({"op": "ping"})["ok"]
            c.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        log.close()
