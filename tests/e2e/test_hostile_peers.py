"""Hostile peers end to end: what a read-level peer (uid nobody, through
setpriv) can make cbd do must not take the daemon away from writers and
admins. Each test is one way it was tried: holding every connection slot,
trickling a request a byte at a time, filling the circuit table with reads,
and flooding one connection while another waits."""

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import CBCTL, Client, cbctl

NOBODY = 65534
WRITER_UID = 4000  # any uid without a passwd entry will do
OTHER_READER_UID = 4001
WRITER_GID = 4242
ADMIN_GID = 4343


def setpriv(uid, groups=()):
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}",
            f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"]


def cbctl_as(uid, groups, *args):
    return subprocess.run(setpriv(uid, groups) + [CBCTL, *args],
                          capture_output=True, text=True, timeout=30)


def peer_script(uid, code, *args):
    """Runs Python `code` as `uid` (no groups: read level); returns the
    process, with its stdin and stdout as text pipes."""
    return subprocess.Popen(setpriv(uid) + [sys.executable, "-c", textwrap.dedent(code), *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def restricted_daemon(start_cbd, workdir, *args):
    os.chmod(workdir, 0o755)  # let other users reach the socket
    return start_cbd("--socket-mode", "0666", "--writer-group", str(WRITER_GID),
                     "--admin-group", str(ADMIN_GID), *args)


# Opens connections until one is refused, pinging each, and holds them until
# its stdin closes. Prints {"held": N, "refusal": the refusal reply}.
HOLD_EVERY_SLOT = """
    import json, socket, sys
    held, refusal = [], None
    while len(held) < 10000:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(sys.argv[1])
        # written before anything is read: a refused socket lingers, so this
        # lands and the refusal is read (not EPIPE)
        s.sendall(b'{"op":"ping"}\\n')
        reply = json.loads(s.makefile("rb").readline())
        if not reply["ok"]:
            refusal = reply
            break
        held.append(s)
    print(json.dumps({"held": len(held), "refusal": refusal}), flush=True)
    sys.stdin.read()
"""


def hold_every_slot(uid, sock):
    holder = peer_script(uid, HOLD_EVERY_SLOT, sock)
    return holder, json.loads(holder.stdout.readline())


def test_a_reader_holding_every_slot_it_can_leaves_writers_and_admins_in(start_cbd, workdir):
    d = restricted_daemon(start_cbd, workdir, "--max-connections", "64")
    holder, got = hold_every_slot(NOBODY, d.sock)
    try:
        # the reserve (1/16 of 64) is kept from read-level peers
        assert got["held"] == 60, got
        error = got["refusal"]["error"]
        assert error["code"] == "too_many_connections"
        assert "--reserved-connections 4" in error["message"]
        # root's ping and a writer's failure still get in
        assert cbctl("ping", sock=d.sock).returncode == 0
        r = cbctl_as(WRITER_UID, [WRITER_GID], "--socket", d.sock, "failure", "payments")
        assert r.returncode == 0, r.stderr
        # another reader is refused as the first was, with the reason
        r = cbctl_as(OTHER_READER_UID, [], "--socket", d.sock, "get", "payments")
        assert r.returncode != 0 and "too_many_connections" in r.stderr
        assert "kept for write- and admin-level peers" in r.stderr
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    assert "refusing a connection from uid 65534" in d.log()
    # once the reader lets go, readers get in again
    deadline = time.monotonic() + 5
    while cbctl_as(OTHER_READER_UID, [], "--socket", d.sock, "get", "payments").returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_one_uid_holds_at_most_its_share(start_cbd, workdir):
    d = restricted_daemon(start_cbd, workdir, "--max-connections", "64",
                          "--max-connections-per-uid", "10")
    holder, got = hold_every_slot(NOBODY, d.sock)
    try:
        assert got["held"] == 10, got
        assert "uid 65534" in got["refusal"]["error"]["message"]
        assert "--max-connections-per-uid 10" in got["refusal"]["error"]["message"]
        # another reader uid has its own share
        r = cbctl_as(OTHER_READER_UID, [], "--socket", d.sock, "get", "k")
        assert r.returncode == 0, r.stderr
        # root is the host itself: not held to a share
        conns = [Client(d.sock) for _ in range(20)]
        for c in conns:
            assert c.call({"op": "ping"})["ok"]
        stats = conns[0].call({"op": "stats"})
        assert stats["connections"]["refused"] >= 1
        for c in conns:
            c.close()
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def test_reserved_connections_must_leave_readers_a_slot(start_cbd):
    d = start_cbd("--max-connections", "8", "--reserved-connections", "8", wait=False)
    assert d.proc.wait(timeout=10) == 2
    assert "--reserved-connections 8" in d.log() and "below --max-connections 8" in d.log()


# Sends one byte of a request line every 0.25 s, never a newline, and prints
# how long cbd kept the connection open (or "open" after argv[2] seconds).
TRICKLE = """
    import json, socket, sys, time
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    s.settimeout(0.25)
    start = time.monotonic()
    line = b'{"op":"ping","id":"' + b"x" * 1000
    for i in range(len(line)):
        if time.monotonic() - start > float(sys.argv[2]):
            print(json.dumps({"closed_after": None}), flush=True)
            sys.exit(0)
        try:
            s.sendall(line[i:i + 1])
            if s.recv(100) == b"":
                break
        except socket.timeout:
            continue
        except OSError:
            break
    print(json.dumps({"closed_after": time.monotonic() - start}), flush=True)
"""


def trickle(sock, give_up_s):
    p = peer_script(NOBODY, TRICKLE, sock, str(give_up_s))
    out = json.loads(p.stdout.readline())
    p.wait(timeout=10)
    return out["closed_after"]


def test_idle_timeout_counts_requests_not_bytes(start_cbd, workdir):
    d = restricted_daemon(start_cbd, workdir, "--idle-timeout", "2s", "--request-timeout", "0")
    closed_after = trickle(d.sock, 8)
    assert closed_after is not None, "a trickle of bytes kept the connection for 8 s"
    assert 1.5 < closed_after < 4, closed_after


def test_an_unfinished_line_has_its_own_deadline(start_cbd, workdir):
    # --idle-timeout is off (the default): the request timeout still holds
    d = restricted_daemon(start_cbd, workdir, "--request-timeout", "1s")
    steady = Client(d.sock)
    closed_after = trickle(d.sock, 8)
    assert closed_after is not None, "a trickle of bytes kept the connection for 8 s"
    assert 0.7 < closed_after < 3, closed_after
    # a connection that finishes its lines may sit idle and trickle each
    # line in parts, as long as each is finished within the timeout
    for _ in range(4):
        steady.send(b'{"op":"pi')
        time.sleep(0.3)
        steady.send(b'ng"}\n')
        assert steady.json()["ok"]
        time.sleep(0.4)
    assert steady.call({"op": "ping"})["ok"]


def test_the_request_timeout_is_on_by_default(start_cbd, workdir):
    d = restricted_daemon(start_cbd, workdir)
    closed_after = trickle(d.sock, 15)
    assert closed_after is not None, "a trickle of bytes kept the connection for 15 s"
    assert 9 < closed_after < 13, closed_after


# Pipelines a `get` of each of argv[2] new keys on one connection and prints
# how many were answered ok, and the first error if any.
READ_NEW_KEYS = """
    import json, socket, sys
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    n = int(sys.argv[2])
    big = "k" * 1000
    s.sendall(b"".join(json.dumps({"op": "get", "key": f"{big}{i}"}).encode() + b"\\n"
                       for i in range(n)))
    f = s.makefile("rb")
    ok, error, generations = 0, None, set()
    for _ in range(n):
        reply = json.loads(f.readline())
        if reply["ok"]:
            ok += 1
            generations.add(reply["generation"])
        elif error is None:
            error = reply["error"]
    print(json.dumps({"ok": ok, "error": error, "generations": sorted(generations)}), flush=True)
"""


def test_reads_cannot_fill_the_circuit_table(start_cbd, workdir):
    d = restricted_daemon(start_cbd, workdir, "--max-circuits", "100")
    reader = peer_script(NOBODY, READ_NEW_KEYS, d.sock, "300")
    got = json.loads(reader.stdout.readline())
    reader.wait(timeout=10)
    # every read is answered (the default snapshot, generation 0) ...
    assert got == {"ok": 300, "error": None, "generations": [0]}
    # ... and nothing was created: the writers' table is untouched
    stats = Client(d.sock).call({"op": "stats"})
    assert stats["circuits"]["total"] == 0
    r = cbctl_as(WRITER_UID, [WRITER_GID], "--socket", d.sock, "failure", "payments")
    assert r.returncode == 0, r.stderr
    assert Client(d.sock).call({"op": "stats"})["circuits"]["total"] == 1


# Floods one connection with pipelined pings, reading every reply, until its
# stdin closes.
FLOOD_PINGS = """
    import socket, sys, threading
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    stop = threading.Event()
    def read():
        while not stop.is_set():
            if not s.recv(1 << 20):
                break
    threading.Thread(target=read, daemon=True).start()
    def write():
        batch = b'{"op":"ping"}\\n' * 4096
        while not stop.is_set():
            s.sendall(batch)
    threading.Thread(target=write, daemon=True).start()
    print("flooding", flush=True)
    sys.stdin.read()
    stop.set()
"""


def test_one_connections_burst_does_not_starve_the_others(start_cbd, workdir):
    """Counted, not timed: how many of the flooder's requests cbd handles
    while another connection makes one round trip. Without fairness a
    connection's whole buffer (about a thousand pings) goes in one turn;
    with it, at most 64 lines before every other ready connection."""
    d = restricted_daemon(start_cbd, workdir)
    flooder = peer_script(NOBODY, FLOOD_PINGS, d.sock)
    try:
        assert flooder.stdout.readline().strip() == "flooding"
        me = Client(d.sock)
        deadline = time.monotonic() + 20
        while me.call({"op": "stats"})["requests"]["ping"] < 50_000:  # the flood is on
            assert time.monotonic() < deadline, "the flood did not reach cbd"
            time.sleep(0.01)
        pings = []
        for _ in range(60):
            pings.append(me.call({"op": "stats"})["requests"]["ping"])
        deltas = sorted(b - a for a, b in zip(pings, pings[1:]))
        assert deltas[len(deltas) // 4] > 0, ("the flood stalled", deltas)
        median = deltas[len(deltas) // 2]
        assert median <= 400, deltas
    finally:
        flooder.stdin.close()
        flooder.wait(timeout=10)
