"""The Redis backend end to end: two cbd daemons on one Redis share circuits
exactly (counts, probe limits, events), and a Redis that dies or freezes
gives backend_unavailable within the timeout, never a hang or a crash, with
service back once Redis is."""

import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import Client, cbctl


class Redis:
    def __init__(self, workdir):
        self.dir = workdir / "redis"
        self.dir.mkdir(exist_ok=True)
        self.sock = str(self.dir / "redis.sock")
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            r = subprocess.run(["redis-cli", "-s", self.sock, "ping"], capture_output=True, text=True)
            if r.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-s", self.sock, *args], capture_output=True,
                              text=True, timeout=10).stdout.strip()


@pytest.fixture
def redis(workdir):
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: scripts/dev.sh deps installs it")
    r = Redis(workdir)
    r.start()
    yield r
    if r.proc.poll() is None:
        r.proc.send_signal(signal.SIGCONT)
        r.kill()


def assert_service_resumes(client, within=15):
    """Redis is back: cbd reconnects on its own (backoff up to 2 s)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        r = client.call({"op": "failure", "key": "k"})
        if r["ok"]:
            return
        assert r["error"]["code"] == "backend_unavailable", r
        time.sleep(0.1)
    raise AssertionError(f"no service {within} s after Redis came back: {r}")


def on_redis(start_cbd, workdir, redis, name, *args):
    return start_cbd("--backend", "redis", "--redis", "unix://" + redis.sock, *args,
                     sock=workdir / f"{name}.sock")


def test_reference_semantics_through_redis(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a")
    c = Client(d.sock)
    fresh = c.call({"op": "get", "key": "api", "id": 1})
    assert fresh["id"] == 1 and fresh["ok"]
    s = fresh["snapshot"]
    assert (s["state"], s["failureCount"], s["successCount"], s["lastFailureTime"]) == ("closed", 0, 0, 0)
    # Time is Redis's: within a few seconds of ours.
    assert abs(s["lastStateChange"] - time.time() * 1000) < 5000
    assert c.call({"op": "failure", "key": "api"})["snapshot"]["failureCount"] == 1
    assert c.call({"op": "success", "key": "api"})["snapshot"]["successCount"] == 1
    r = c.call({"op": "transition", "key": "api", "to": "half-open"})
    assert r["snapshot"]["state"] == "half-open" and r["snapshot"]["successCount"] == 0
    assert r["snapshot"]["failureCount"] == 1 and r["transition"]["cause"] == "manual"
    r = c.call({"op": "transition", "key": "api", "to": "closed"})
    assert r["snapshot"]["failureCount"] == 0
    conflict = c.call({"op": "transition", "key": "api", "to": "open", "expect": "open"})
    assert conflict["error"]["code"] == "conflict" and conflict["snapshot"]["state"] == "closed"
    assert c.call({"op": "reset", "key": "api"})["removed"] is True
    assert c.call({"op": "reset", "key": "api"})["removed"] is False
    # Validation stays local and exact.
    bad = c.call({"op": "transition", "key": "api", "to": "ajar", "id": "x"})
    assert bad["id"] == "x" and bad["error"]["code"] == "invalid_state"
    # Pipelined requests come back in order, each with its id.
    c.send(b"".join(json.dumps({"op": "failure", "key": "p", "id": i}).encode() + b"\n"
                    for i in range(50)))
    replies = [c.json() for _ in range(50)]
    assert [r["id"] for r in replies] == list(range(50))
    assert [r["snapshot"]["failureCount"] for r in replies] == list(range(1, 51))
    # The keys are where docs/REDIS.md says.
    assert redis.cli("HGET", "cbd:c:p", "fc") == "50"
    s = c.call({"op": "stats"})
    assert s["backend"]["kind"] == "redis" and s["backend"]["up"] is True
    assert s["circuits"] is None


def test_two_daemons_count_every_failure_exactly(start_cbd, workdir, redis):
    daemons = [on_redis(start_cbd, workdir, redis, n) for n in ("a", "b")]
    errors = []

    def work(sock):
        try:
            c = Client(sock, timeout=30)
            for _ in range(10):  # 10 pipelined batches of 100
                c.send(b'{"op":"failure","key":"shared"}\n' * 100)
                for _ in range(100):
                    if not c.json()["ok"]:
                        errors.append("not ok")
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(daemons[i % 2].sock,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for d in daemons:
        assert Client(d.sock).call({"op": "get", "key": "shared"})["snapshot"]["failureCount"] == 8000


def test_probe_limit_holds_across_daemons(start_cbd, workdir, redis):
    args = ("--half-open-max", "2", "--reset-timeout-ms", "300")
    daemons = [on_redis(start_cbd, workdir, redis, n, *args) for n in ("a", "b")]
    assert Client(daemons[0].sock).call({"op": "transition", "key": "svc", "to": "open"})["ok"]
    time.sleep(0.5)
    clients = [Client(daemons[i % 2].sock) for i in range(10)]
    results = [None] * 10
    barrier = threading.Barrier(10)

    def race(i):
        barrier.wait()
        results[i] = clients[i].call({"op": "acquire", "key": "svc"})

    threads = [threading.Thread(target=race, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r["allowed"]]
    assert len(winners) == 2
    assert len({r["permit"] for r in winners}) == 2
    assert sum(1 for r in results if r.get("transition")) == 1  # one open -> half-open
    # A permit from one daemon is good at the other: the probe closes it.
    w = winners[0]
    r = Client(daemons[1].sock).call({"op": "report", "key": "svc", "outcome": "success",
                                      "generation": w["generation"], "permit": w["permit"]})
    assert r["snapshot"]["state"] == "closed" and r["transition"]["cause"] == "probe-success"


def test_a_watcher_sees_transitions_made_through_the_other_daemon(start_cbd, workdir, redis):
    a = on_redis(start_cbd, workdir, redis, "a")
    b = on_redis(start_cbd, workdir, redis, "b")
    watcher = Client(a.sock)
    assert watcher.call({"op": "watch", "key": "svc"})["ok"] is True
    time.sleep(0.2)  # the subscription is up from the start; give the watch a moment
    Client(b.sock).call({"op": "transition", "key": "svc", "to": "open"})
    Client(b.sock).call({"op": "reset", "key": "svc"})
    event = watcher.json()
    assert event["event"] == "transition" and event["key"] == "svc"
    assert (event["from"], event["to"], event["cause"]) == ("closed", "open", "manual")
    assert event["snapshot"]["state"] == "open"
    reset = watcher.json()
    assert reset["event"] == "reset" and reset["key"] == "svc" and reset["at"] >= event["at"]
    assert "circuit 'svc': closed -> open (manual)" in a.log()


def test_a_killed_redis_gives_backend_unavailable_then_service_resumes(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a", "--backend-timeout", "500ms")
    c = Client(d.sock)
    assert c.call({"op": "failure", "key": "k"})["ok"]
    redis.kill()
    started = time.monotonic()
    r = c.call({"op": "failure", "key": "k", "id": 3})
    assert time.monotonic() - started < 2.0
    assert r["ok"] is False and r["id"] == 3 and r["error"]["code"] == "backend_unavailable"
    # Local answers still work; stats says what is wrong.
    assert c.call({"op": "ping"})["ok"]
    s = c.call({"op": "stats"})["backend"]
    assert s["up"] is False and s["unavailable"] >= 1
    # cbctl run fails open.
    run = cbctl("run", "k", "--", "true", sock=d.sock)
    assert run.returncode == 0 and "fail open" in run.stderr

    redis.start()
    assert_service_resumes(c)
    assert d.proc.poll() is None
    assert "Redis at unix://" in d.log()


def test_a_frozen_redis_gives_backend_unavailable_within_the_timeout(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a", "--backend-timeout", "400ms")
    c = Client(d.sock)
    assert c.call({"op": "get", "key": "k"})["ok"]
    redis.proc.send_signal(signal.SIGSTOP)
    try:
        for _ in range(3):
            started = time.monotonic()
            r = c.call({"op": "failure", "key": "k"})
            took = time.monotonic() - started
            assert r["ok"] is False and r["error"]["code"] == "backend_unavailable"
            assert took < 1.5, took
        assert "did not answer within 400 ms" in d.log() or "no connection within" in d.log()
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    assert_service_resumes(c)
    assert d.proc.poll() is None


def test_key_prefixes_keep_deployments_apart(start_cbd, workdir, redis):
    a = on_redis(start_cbd, workdir, redis, "a", "--redis-prefix", "blue:")
    b = on_redis(start_cbd, workdir, redis, "b", "--redis-prefix", "green:")
    Client(a.sock).call({"op": "failure", "key": "k"})
    assert Client(b.sock).call({"op": "get", "key": "k"})["snapshot"]["failureCount"] == 0
    assert redis.cli("HGET", "blue:c:k", "fc") == "1"


def test_bad_backend_flags_are_refused(start_cbd, workdir):
    from conftest import CBD
    for args, needle in [(["--backend", "redis"], "needs --redis"),
                         (["--redis", "unix:///x"], "needs --backend redis"),
                         (["--backend", "redis", "--redis", "http://x"], "unix:// or tcp://"),
                         (["--backend", "redis", "--redis", "unix:///x", "--state-file", "/tmp/x"],
                          "--state-file is for the memory backend")]:
        p = subprocess.run([CBD, "--socket", str(workdir / "x.sock"), *args], capture_output=True,
                           text=True, timeout=10)
        assert p.returncode != 0, args
        assert needle in p.stderr, (args, p.stderr)


def test_policies_in_redis_apply_on_every_daemon(start_cbd, workdir, redis):
    a = on_redis(start_cbd, workdir, redis, "a")
    b = on_redis(start_cbd, workdir, redis, "b")
    r = Client(a.sock).call({"op": "configure", "key": "svc", "policy": {"failureThreshold": 2}})
    assert r["policy"]["failureThreshold"] == 2 and r["source"]["failureThreshold"] == "key"
    assert r["source"]["resetTimeoutMs"] == "default"
    seen = Client(b.sock).call({"op": "policy", "key": "svc"})
    assert seen["policy"]["failureThreshold"] == 2 and seen["source"]["failureThreshold"] == "key"
    cb = Client(b.sock)
    assert cb.call({"op": "report", "key": "svc", "outcome": "failure"})["snapshot"]["state"] == "closed"
    opened = cb.call({"op": "report", "key": "svc", "outcome": "failure"})
    assert opened["transition"]["cause"] == "threshold"
    assert "audit: configure key=svc set=failureThreshold:2" in a.log()
    # null drops the field; "policy": null the whole override.
    r = Client(b.sock).call({"op": "configure", "key": "svc", "policy": {"failureThreshold": None,
                                                                          "halfOpenMax": 3}})
    assert r["source"]["failureThreshold"] == "default" and r["policy"]["halfOpenMax"] == 3
    r = Client(a.sock).call({"op": "configure", "key": "svc", "policy": None})
    assert r["source"]["halfOpenMax"] == "default"
    assert redis.cli("EXISTS", "cbd:policy:svc") == "0"


def test_list_pages_through_circuits_in_redis(start_cbd, workdir, redis):
    a = on_redis(start_cbd, workdir, redis, "a")
    b = on_redis(start_cbd, workdir, redis, "b")
    c = Client(a.sock)
    for i in range(25):
        c.call({"op": "failure", "key": f"svc/{i:02d}"})
    c.call({"op": "transition", "key": "svc/07", "to": "open"})
    c.call({"op": "get", "key": "other"})
    seen, after = [], None
    while True:
        req = {"op": "list", "prefix": "svc/", "limit": 10}
        if after:
            req["after"] = after
        page = Client(b.sock).call(req)
        seen += [e["key"] for e in page["circuits"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [f"svc/{i:02d}" for i in range(25)]
    opened = Client(b.sock).call({"op": "list", "state": "open"})
    assert [e["key"] for e in opened["circuits"]] == ["svc/07"]
    assert opened["circuits"][0]["snapshot"]["failureCount"] == 1
    # cbctl list works the same.
    r = cbctl("list", "--prefix", "svc/0", sock=b.sock)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 10


def test_export_and_import_move_state_between_backends(start_cbd, workdir, redis):
    memory = start_cbd("--backend", "memory", sock=workdir / "memory.sock")
    c = Client(memory.sock)
    for _ in range(3):
        c.call({"op": "failure", "key": "api"})
    c.call({"op": "transition", "key": "down", "to": "open"})
    c.call({"op": "force", "key": "pinned", "state": "open", "ttlMs": 3_600_000, "reason": "m"})
    c.call({"op": "configure", "key": "api", "policy": {"failureThreshold": 9}})
    c.call({"op": "configure", "key": "payments/eu", "policy": {"halfOpenMax": 2}})
    dump = cbctl("export", sock=memory.sock).stdout
    assert len(dump.splitlines()) == 4  # api, down, payments/eu (policy only), pinned

    shared = on_redis(start_cbd, workdir, redis, "shared", "--redis-prefix", "blue:")
    r = cbctl("import", sock=shared.sock, input=dump)
    assert r.returncode == 0, r.stderr
    assert cbctl("export", sock=shared.sock).stdout == dump
    # And on to another deployment in the same Redis, page by page.
    other = on_redis(start_cbd, workdir, redis, "other", "--redis-prefix", "green:")
    assert cbctl("import", sock=other.sock, input=dump).returncode == 0
    pages, after = [], None
    while True:
        req = {"op": "export", "limit": 2}
        if after:
            req["after"] = after
        page = Client(other.sock).call(req)
        pages += page["circuits"]
        if page["next"] is None:
            break
        after = page["next"]
    assert [json.dumps(p, separators=(",", ":")) for p in pages] == dump.splitlines()
    # The imported pin is live: it still denies, and generations go on above.
    last = max(json.loads(l).get("generation", 0) for l in dump.splitlines())
    assert Client(other.sock).call({"op": "acquire", "key": "pinned"})["allowed"] is False
    assert Client(other.sock).call({"op": "transition", "key": "x", "to": "open"})["generation"] > last


def test_values_edited_by_hand_in_redis_do_not_take_cbd_down(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a")
    c = Client(d.sock)
    c.call({"op": "failure", "key": "k"})
    c.call({"op": "configure", "key": "k", "policy": {"halfOpenMax": 2}})
    redis.cli("HSET", "cbd:c:k", "lft", "not-a-number")
    redis.cli("HSET", "cbd:policy:k", "failureThreshold", "many")
    r = c.call({"op": "export", "prefix": "k"})
    assert r["ok"] and r["circuits"][0]["snapshot"]["lastFailureTime"] == 0
    assert c.call({"op": "list"})["ok"]
    assert c.call({"op": "ping"})["ok"] and d.proc.poll() is None
