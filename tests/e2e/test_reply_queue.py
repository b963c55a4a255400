"""The reply queue end to end: replies leave in request order on every backend
(memory, --sync always, Redis), `watch` pipelined behind pending requests
gets its events only after them, a failed commit never reaches a client as
ok, and a client that pipelines without reading is held to the output bound
while everyone else is served."""

import json
import os
import socket
import threading
import time

import pytest

from conftest import Client, shared_redis

SANITIZED = os.environ.get("CBD_SANITIZED") == "1"

PIPELINE = (b'{"op":"ping","id":1}\n{"op":"failure","key":"w","id":2}\n'
            b'{"op":"watch","id":3}\n')


def backend_args(name, workdir):
    if name == "durable":
        return ["--state-file", str(workdir / "state.db"), "--sync", "always"]
    if name == "redis":
        return ["--backend", "redis", "--redis", "unix://" + shared_redis(workdir)]
    return []


class Transitions(threading.Thread):
    """Another client making transitions on the watched key all along."""

    def __init__(self, sock, refused_ok=False):
        super().__init__(daemon=True)
        self.client = Client(sock)
        self.refused_ok = refused_ok  # while commits fail, transitions are refused
        self.halt = threading.Event()
        self.count = 0

    def run(self):
        to = ["open", "closed"]
        while not self.halt.is_set():
            r = self.client.call({"op": "transition", "key": "w", "to": to[self.count % 2]})
            assert r["ok"] or (self.refused_ok and
                               r["error"]["code"] == "storage_unavailable"), r
            self.count += 1

    def stop(self):
        self.halt.set()
        self.join(timeout=30)
        self.client.close()


def read_pipeline_replies(c):
    """The three replies of PIPELINE, in order, then at most a few events."""
    ping, failure, watching = c.json(), c.json(), c.json()
    assert ping["id"] == 1 and ping["ok"] is True, ping
    assert failure["id"] == 2, failure
    assert watching["id"] == 3 and watching["watching"] == "all", watching
    return failure


@pytest.mark.parametrize("backend", ["memory", "durable", "redis"])
def test_pipelined_ping_failure_watch_answers_in_order_on_every_backend(start_cbd, workdir,
                                                                       backend):
    d = start_cbd(*backend_args(backend, workdir), "--max-connections", "4096")
    mover = Transitions(d.sock)
    mover.start()
    connections = 400 if SANITIZED else 2000
    failures = 0
    try:
        batch = 50
        for start in range(0, connections, batch):
            clients = [Client(d.sock) for _ in range(batch)]
            for c in clients:
                c.send(PIPELINE)
            for c in clients:
                failure = read_pipeline_replies(c)
                assert failure["ok"] is True, failure
                failures += 1
                # What follows is events (the mover never stops), never a reply.
                for _ in range(2):
                    event = c.json()
                    assert "event" in event and "id" not in event, event
                c.close()
    finally:
        mover.stop()
    assert d.proc.poll() is None, d.log()
    assert mover.count > 0
    c = Client(d.sock)
    assert c.call({"op": "ping"})["ok"]
    assert c.call({"op": "get", "key": "w"})["snapshot"]["failureCount"] >= 0
    c.close()
    assert failures == connections


def test_a_failed_commit_is_never_acknowledged_to_a_pipelined_watcher(start_cbd, workdir):
    fault = workdir / "fault"
    d = start_cbd("--state-file", str(workdir / "state.db"), "--sync", "always",
                  env={"CBD_STORAGE_FAULT_FILE": str(fault)})
    fault.write_text("full\n")
    # Transitions go on all along; they are refused too (each is undone when
    # its commit fails), but their events reach the watchers first.
    mover = Transitions(d.sock, refused_ok=True)
    mover.start()
    try:
        for _ in range(100 if SANITIZED else 500):
            c = Client(d.sock)
            c.send(PIPELINE)
            failure = read_pipeline_replies(c)
            assert failure["ok"] is False, failure
            assert failure["error"]["code"] == "storage_unavailable", failure
            c.close()
    finally:
        mover.stop()
    assert d.proc.poll() is None, d.log()
    fault.unlink()
    c = Client(d.sock)
    # Nothing that was refused was applied.
    assert c.call({"op": "get", "key": "w"})["snapshot"]["failureCount"] == 0
    c.send(PIPELINE)
    assert read_pipeline_replies(c)["ok"] is True
    c.close()


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fill(sock, n):
    """n circuits, pipelined in chunks."""
    c = Client(sock, timeout=60)
    chunk = 1000
    for start in range(0, n, chunk):
        c.send(b"".join(b'{"op":"failure","key":"k%06d"}\n' % i
                        for i in range(start, min(n, start + chunk))))
        for _ in range(min(chunk, n - start)):
            assert json.loads(c.line())["ok"]
    c.close()


def test_a_reader_that_never_reads_is_held_to_the_output_bound(start_cbd):
    d = start_cbd()
    fill(d.sock, 10_000)
    base = rss_bytes(d.proc.pid)

    flood = Client(d.sock)
    lines = b"".join(b'{"op":"list","limit":10000,"id":%d}\n' % i for i in range(800))
    # It writes 800 list requests (about 30 KB) and reads nothing. cbd must
    # neither build every reply at once nor stop serving others.
    writer = threading.Thread(target=lambda: flood.s.sendall(lines), daemon=True)
    writer.start()

    other = Client(d.sock)
    worst = 0.0
    peak = base
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        t0 = time.monotonic()
        assert other.call({"op": "ping"})["ok"]
        worst = max(worst, time.monotonic() - t0)
        peak = max(peak, rss_bytes(d.proc.pid))
        time.sleep(0.02)
    limit = 1.0 if SANITIZED else 0.2
    assert worst < limit, f"a ping took {worst * 1000:.0f} ms during the flood"
    if not SANITIZED:  # ASan's shadow memory and quarantine make RSS meaningless
        assert peak - base < 256 * 1024 * 1024, f"RSS grew by {(peak - base) >> 20} MiB"

    # Every request is still answered, in order, once the client reads.
    for i in range(3):
        reply = json.loads(flood.line())
        assert reply["id"] == i and len(reply["circuits"]) == 10_000
    flood.close()
    assert other.call({"op": "ping"})["ok"]
    other.close()
    assert d.proc.poll() is None


def test_every_pipelined_request_is_answered_in_order_past_the_bound(start_cbd):
    d = start_cbd()
    fill(d.sock, 2_000)
    c = Client(d.sock, timeout=60)
    # 60 pages of ~300 KB: several times the bound, sent before reading.
    n = 60
    c.send(b"".join(b'{"op":"list","limit":2000,"id":%d}\n{"op":"ping","id":"p%d"}\n' % (i, i)
                    for i in range(n)))
    time.sleep(0.5)
    for i in range(n):
        page = json.loads(c.line())
        assert page["id"] == i and len(page["circuits"]) == 2000
        assert json.loads(c.line())["id"] == f"p{i}"
    c.close()


def test_a_client_that_half_closes_still_gets_every_reply(start_cbd):
    d = start_cbd()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(d.sock)
    s.sendall(b"".join(b'{"op":"failure","key":"h","id":%d}\n' % i for i in range(100)))
    s.shutdown(socket.SHUT_WR)
    data = b""
    s.settimeout(10)
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    replies = [json.loads(line) for line in data.splitlines()]
    assert [r["id"] for r in replies] == list(range(100))
    assert replies[-1]["snapshot"]["failureCount"] == 100
    s.close()
