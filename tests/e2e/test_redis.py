"""The Redis backend end to end: two cbd daemons on one Redis share circuits
exactly (counts, probe limits, events), and a Redis that dies or freezes
gives backend_unavailable within the timeout, never a hang or a crash, with
service back once Redis is."""

import json
import os
import shutil
import signal
import socket
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
    assert s["backend"]["unavailable"] == 0


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


class Resp:
    """A raw Redis client (RESP over the unix socket): pipelines of commands
    for bulk loading, and structured replies (SLOWLOG GET)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rb")

    def send(self, *commands):
        out = []
        for cmd in commands:
            out.append(b"*%d\r\n" % len(cmd))
            for a in cmd:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.s.sendall(b"".join(out))

    def read(self):
        line = self.f.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError(f"unexpected RESP {line!r}")

    def call(self, *cmd):
        self.send(cmd)
        return self.read()

    def pipeline(self, commands, batch=2000):
        for i in range(0, len(commands), batch):
            part = commands[i:i + batch]
            self.send(*part)
            for _ in part:
                r = self.read()
                assert not isinstance(r, RuntimeError), r

    def close(self):
        self.s.close()


def backend_error(reply, *names):
    """The reply is backend_error and its message names every one of `names`."""
    assert reply["ok"] is False and reply["error"]["code"] == "backend_error", reply
    for n in names:
        assert n in reply["error"]["message"], (n, reply)


def test_a_flushed_function_library_is_not_an_outage(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a")
    c = Client(d.sock)
    assert c.call({"op": "failure", "key": "k"})["ok"]
    assert "cbd_" in redis.cli("FUNCTION", "LIST", "LIBRARYNAME", "cbd_*")
    # As after a Redis that lost its data (FUNCTION FLUSH, an empty restart).
    assert redis.cli("FUNCTION", "FLUSH") == "OK"
    started = time.monotonic()
    # Pipelined: they find the library gone (alone or in one batch), are
    # answered nothing, and are sent again once it is loaded again.
    c.send(b"".join(json.dumps({"op": "failure", "key": "k", "id": i}).encode() + b"\n"
                    for i in range(20)))
    replies = [c.json() for _ in range(20)]
    assert all(r["ok"] for r in replies), [r for r in replies if not r["ok"]][:1]
    assert [r["snapshot"]["failureCount"] for r in replies] == list(range(2, 22))
    for op in ("get", "acquire", "success", "policy"):
        assert c.call({"op": op, "key": "k"})["ok"], op
    assert c.call({"op": "list"})["ok"] and c.call({"op": "export"})["ok"]
    assert time.monotonic() - started < 1.0
    # And again: the library is loaded each time it is lost.
    redis.cli("FUNCTION", "FLUSH")
    assert c.call({"op": "get", "key": "k"})["ok"]
    s = c.call({"op": "stats"})
    assert s["backend"]["unavailable"] == 0 and s["backend"]["up"] is True
    assert s["errors"]["backend_unavailable"] == 0


def test_a_key_of_the_wrong_type_is_a_backend_error_not_an_outage(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a", "--backend-timeout", "500ms")
    c = Client(d.sock)
    redis.cli("SET", "cbd:c:k", "x")
    for _ in range(3):  # answered at once every time: no retry, no wait
        started = time.monotonic()
        backend_error(c.call({"op": "get", "key": "k"}), "cbd:c:k", "WRONGTYPE")
        assert time.monotonic() - started < 0.4
    backend_error(c.call({"op": "failure", "key": "k"}), "cbd:c:k")
    # A policy of the wrong type, and the generation counter.
    redis.cli("SET", "cbd:policy:p", "x")
    backend_error(c.call({"op": "acquire", "key": "p"}), "cbd:policy:p")
    backend_error(c.call({"op": "policy", "key": "p"}), "cbd:policy:p")
    # Other keys are served; the backend is up and no outage is counted.
    assert c.call({"op": "failure", "key": "fine"})["ok"]
    s = c.call({"op": "stats"})
    assert s["backend"]["up"] is True and s["backend"]["unavailable"] == 0
    assert s["errors"]["backend_unavailable"] == 0 and s["errors"]["backend_error"] >= 6
    # cbctl run does not treat it as an outage either way: it says what is wrong.
    # reset and clearing the override are how an operator repairs the keys.
    assert c.call({"op": "reset", "key": "k"})["removed"] is True
    assert c.call({"op": "get", "key": "k"})["ok"]
    assert c.call({"op": "configure", "key": "p", "policy": None})["ok"]
    assert c.call({"op": "acquire", "key": "p"})["ok"]
    redis.cli("SET", "cbd:generation", "lots")
    backend_error(c.call({"op": "get", "key": "new"}), "cbd:generation")
    assert "Redis backend: " in d.log() and d.proc.poll() is None


def test_values_in_redis_are_checked_like_imported_ones(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a")
    c = Client(d.sock)
    c.call({"op": "failure", "key": "k"})
    cases = [("sc", "-5"), ("fc", "9007199254740992"), ("lft", "not-a-number"), ("gen", "1.5"),
             ("state", "ajar"), ("lsc", "")]
    for field, value in cases:
        good = redis.cli("HGET", "cbd:c:k", field)
        redis.cli("HSET", "cbd:c:k", field, value)
        backend_error(c.call({"op": "get", "key": "k"}), "cbd:c:k", f"field {field}")
        redis.cli("HSET", "cbd:c:k", field, good)
    # The largest count there is reads back exactly, and stops there.
    redis.cli("HSET", "cbd:c:k", "sc", "9007199254740991")
    assert c.call({"op": "get", "key": "k"})["snapshot"]["successCount"] == 9007199254740991
    assert c.call({"op": "success", "key": "k"})["snapshot"]["successCount"] == 9007199254740991
    # Pin fields.
    c.call({"op": "force", "key": "pin", "state": "open", "reason": "r"})
    for field, value in [("ps", "half-open"), ("puid", "-1"), ("ppid", "4294967296"),
                         ("pr", "x" * 300)]:
        good = redis.cli("HGET", "cbd:c:pin", field)
        redis.cli("HSET", "cbd:c:pin", field, value)
        backend_error(c.call({"op": "get", "key": "pin"}), "cbd:c:pin", f"field {field}")
        redis.cli("HSET", "cbd:c:pin", field, good)
    assert c.call({"op": "get", "key": "pin"})["ok"]
    # Policy override fields: never applied out of range.
    c.call({"op": "configure", "key": "k", "policy": {"halfOpenMax": 2}})
    for value in ("-3", "0", "many", "9007199254740993"):
        redis.cli("HSET", "cbd:policy:k", "failureThreshold", value)
        for op in ({"op": "report", "key": "k", "outcome": "failure"}, {"op": "policy", "key": "k"},
                   {"op": "acquire", "key": "k"}):
            backend_error(c.call(op), "cbd:policy:k", "failureThreshold", value)
    # Reading many: list and export say which key is bad; nothing wraps.
    backend_error(c.call({"op": "export"}), "cbd:policy:k", "failureThreshold")
    redis.cli("HSET", "cbd:policy:k", "failureThreshold", "3")
    redis.cli("HSET", "cbd:c:k", "fc", "-1")
    backend_error(c.call({"op": "list"}), "cbd:c:k", "field fc")
    backend_error(c.call({"op": "export"}), "cbd:c:k", "field fc")
    assert c.call({"op": "ping"})["ok"] and d.proc.poll() is None


def test_generation_counter_never_passes_2_53_minus_1(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a")
    c = Client(d.sock)
    top = 2**53 - 1
    snap = {"state": "closed", "failureCount": 0, "successCount": 0, "lastFailureTime": 0,
            "lastStateChange": 1}
    assert c.call({"op": "import", "key": "big", "snapshot": snap, "generation": top})["ok"]
    assert redis.cli("GET", "cbd:generation") == str(top)
    assert c.call({"op": "get", "key": "big"})["generation"] == top
    # Every new generation would pass it: refused, naming the counter.
    backend_error(c.call({"op": "transition", "key": "big", "to": "open"}), "cbd:generation")
    backend_error(c.call({"op": "get", "key": "new"}), "cbd:generation")
    assert redis.cli("GET", "cbd:generation") == str(top)
    assert c.call({"op": "get", "key": "big"})["snapshot"]["state"] == "closed"
    # A generation past it is never stored (the protocol refuses it, or Redis does).
    r = c.call({"op": "import", "key": "bigger", "snapshot": snap, "generation": 2**53})
    assert r["ok"] is False, r
    assert redis.cli("GET", "cbd:generation") == str(top)
    assert redis.cli("EXISTS", "cbd:c:bigger") == "0"


def set_clock(path, ms):
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(ms))
    os.replace(tmp, path)


def test_a_key_override_of_reset_timeout_sets_the_probe_lease_as_in_memory(start_cbd, workdir, redis):
    clock = workdir / "clock"
    t0 = 1_700_000_000_000
    set_clock(clock, t0)
    d = on_redis(start_cbd, workdir, redis, "a", "--test-clock", str(clock))
    c = Client(d.sock)
    r = c.call({"op": "configure", "key": "svc", "policy": {"resetTimeoutMs": 600}})
    assert r["policy"]["probeLeaseMs"] == 600 and r["source"]["probeLeaseMs"] == "key", r
    p = c.call({"op": "policy", "key": "svc"})
    assert p["policy"]["probeLeaseMs"] == 600 and p["source"]["probeLeaseMs"] == "key"
    assert c.call({"op": "transition", "key": "svc", "to": "open"})["ok"]
    set_clock(clock, t0 + 600)
    a = c.call({"op": "acquire", "key": "svc"})
    assert a["allowed"] is True and a["snapshot"]["state"] == "half-open"
    # The lease is the key's reset timeout, not the daemon's 30 s.
    set_clock(clock, t0 + 1201)
    g = c.call({"op": "get", "key": "svc"})
    assert g["snapshot"]["state"] == "open" and g["snapshot"]["failureCount"] == 1, g
    # An explicit lease anywhere wins over the derivation.
    r = c.call({"op": "configure", "key": "svc", "policy": {"probeLeaseMs": 5000}})
    assert r["policy"]["probeLeaseMs"] == 5000


def test_list_has_no_next_after_an_exactly_full_last_page(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a")
    c = Client(d.sock)
    for i in range(10):
        c.call({"op": "failure", "key": f"svc/{i}"})
    c.call({"op": "get", "key": "zzz"})
    r = c.call({"op": "list", "prefix": "svc/", "limit": 10})
    assert len(r["circuits"]) == 10 and r["next"] is None
    r = c.call({"op": "list", "prefix": "svc/", "limit": 5})
    assert r["next"] == "svc/4"
    r = c.call({"op": "list", "prefix": "svc/", "limit": 5, "after": "svc/4"})
    assert [e["key"] for e in r["circuits"]] == [f"svc/{i}" for i in range(5, 10)]
    assert r["next"] is None
    c.call({"op": "transition", "key": "svc/3", "to": "open"})
    r = c.call({"op": "list", "state": "open", "limit": 1})
    assert [e["key"] for e in r["circuits"]] == ["svc/3"] and r["next"] is None


def test_key_policies_are_capped_at_max_circuits(start_cbd, workdir, redis):
    d = on_redis(start_cbd, workdir, redis, "a", "--max-circuits", "3")
    c = Client(d.sock)
    for k in ("a", "b", "c"):
        assert c.call({"op": "configure", "key": k, "policy": {"halfOpenMax": 2}})["ok"]
    r = c.call({"op": "configure", "key": "d", "policy": {"halfOpenMax": 2}})
    assert r["ok"] is False and r["error"]["code"] == "too_many_circuits", r
    assert redis.cli("EXISTS", "cbd:policy:d") == "0"
    # Changing an existing one, or reading, is not a new one.
    assert c.call({"op": "configure", "key": "a", "policy": {"halfOpenMax": 3}})["ok"]
    assert c.call({"op": "policy", "key": "d"})["ok"]
    assert c.call({"op": "configure", "key": "a", "policy": None})["ok"]
    assert c.call({"op": "configure", "key": "d", "policy": {"halfOpenMax": 2}})["ok"]
    # import counts them the same way.
    r = c.call({"op": "import", "key": "e", "policy": {"halfOpenMax": 2}})
    assert r["ok"] is False and r["error"]["code"] == "too_many_circuits", r


def test_the_test_clock_drives_every_script_and_the_sweep(start_cbd, workdir, redis):
    clock = workdir / "clock"
    t0 = 1_600_000_000_000  # far from now: Redis's TIME would show
    set_clock(clock, t0)
    d = on_redis(start_cbd, workdir, redis, "a", "--test-clock", str(clock),
                 "--reset-timeout-ms", "1000", "--probe-lease-ms", "500")
    c = Client(d.sock)
    assert c.call({"op": "get", "key": "k"})["snapshot"]["lastStateChange"] == t0
    assert c.call({"op": "failure", "key": "k"})["snapshot"]["lastFailureTime"] == t0
    f = c.call({"op": "force", "key": "pin", "state": "open", "ttlMs": 1000})
    assert f["forced"]["until"] == t0 + 1000
    c.call({"op": "transition", "key": "k", "to": "open"})
    set_clock(clock, t0 + 999)
    assert c.call({"op": "acquire", "key": "k"})["retryAfterMs"] == 1
    set_clock(clock, t0 + 1000)
    a = c.call({"op": "acquire", "key": "k"})
    assert a["allowed"] is True and a["snapshot"]["lastStateChange"] == t0 + 1000
    # Nobody touches either circuit: the sweep settles both, on the test clock.
    set_clock(clock, t0 + 1500)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if redis.cli("HGET", "cbd:c:k", "state") == "open" and \
                redis.cli("HEXISTS", "cbd:c:pin", "ps") == "0":
            break
        time.sleep(0.05)
    assert redis.cli("HGET", "cbd:c:k", "state") == "open"
    assert redis.cli("HGET", "cbd:c:k", "lsc") == str(t0 + 1500)
    assert redis.cli("HEXISTS", "cbd:c:pin", "ps") == "0"


def test_stats_count_the_circuits_in_redis(start_cbd, workdir, redis):
    a = on_redis(start_cbd, workdir, redis, "a")
    b = on_redis(start_cbd, workdir, redis, "b")
    ca = Client(a.sock)
    for i in range(5):
        ca.call({"op": "get", "key": f"k{i}"})
    ca.call({"op": "transition", "key": "k0", "to": "open"})
    ca.call({"op": "transition", "key": "k1", "to": "half-open"})
    ca.call({"op": "force", "key": "k2", "state": "open"})
    ca.call({"op": "reset", "key": "k4"})
    want = {"total": 4, "closed": 1, "open": 2, "halfOpen": 1, "forced": 1}
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # refreshed by the sweep, every 100 ms
        s = Client(b.sock).call({"op": "stats"})
        if s["circuits"] == want:
            break
        time.sleep(0.05)
    assert s["circuits"] == want
    m = Client(b.sock).call({"op": "metrics"})["text"]
    assert "cbd_circuits" in m


def test_list_and_export_never_block_redis_at_100k_circuits(start_cbd, workdir, redis):
    n = 100_000
    r = Resp(redis.sock)
    cmds, members = [], []
    for i in range(n):
        k = f"svc/{i:06d}"
        cmds.append(("HSET", "cbd:c:" + k, "state", "open" if i % 1000 == 0 else "closed",
                     "fc", 0, "sc", 0, "lft", 0, "lsc", 1, "gen", i + 1))
        members += [0, k]
        if len(members) == 2000:
            cmds.append(("ZADD", "cbd:index", *members))
            members = []
    cmds.append(("SET", "cbd:generation", n))
    cmds.append(("HSET", "cbd:counts", "closed", n - n // 1000, "open", n // 1000))
    r.pipeline(cmds)
    assert r.call("ZCARD", "cbd:index") == n
    a = on_redis(start_cbd, workdir, redis, "a")
    b = on_redis(start_cbd, workdir, redis, "b", "--backend-timeout", "100ms")
    r.call("CONFIG", "SET", "slowlog-log-slower-than", "10000")
    r.call("SLOWLOG", "RESET")

    ca = Client(a.sock, timeout=30)
    seen, after = 0, None
    for _ in range(3):
        req = {"op": "list", "limit": 10000}
        if after:
            req["after"] = after
        page = ca.call(req)
        assert page["ok"] and len(page["circuits"]) == 10000, page.get("error")
        seen += len(page["circuits"])
        after = page["next"]
    assert after == "svc/029999"
    # A filter that matches one key in 1000 examines the whole index, in steps.
    opened = ca.call({"op": "list", "state": "open", "limit": 10000})
    assert len(opened["circuits"]) == 100 and opened["next"] is None
    exported = ca.call({"op": "export", "limit": 10000, "after": "svc/050000"})
    assert len(exported["circuits"]) == 10000 and exported["next"] == "svc/060000"
    slow = [e for e in r.call("SLOWLOG", "GET", "1000")
            if e[3] and str(e[3][0]).upper() in ("EVAL", "EVALSHA", "FCALL")]
    assert slow == [], [(e[2], e[3][9:]) for e in slow][:8]

    # While one daemon runs 100 such lists, the other's operations go on.
    lister_errors = []

    def lister():
        try:
            cl = Client(a.sock, timeout=30)
            for i in range(100):
                page = cl.call({"op": "list", "limit": 10000, "after": f"svc/{(i % 9) * 10000:06d}"})
                if not page["ok"]:
                    lister_errors.append(page["error"])
        except Exception as e:  # noqa: BLE001 - reported below
            lister_errors.append(repr(e))

    t = threading.Thread(target=lister)
    t.start()
    cb = Client(b.sock)
    served, unavailable = 0, []
    while t.is_alive():
        reply = cb.call({"op": "failure", "key": "other"})
        if not reply["ok"]:
            unavailable.append(reply["error"])
        served += 1
    t.join()
    assert lister_errors == []
    assert unavailable == [] and served > 100, (served, unavailable[:3])
    assert Client(b.sock).call({"op": "stats"})["backend"]["unavailable"] == 0
    r.close()


# --- a Redis that needs a password ------------------------------------------

# Inner spaces on purpose: only one trailing newline is stripped, nothing else.
REDIS_PASSWORD = "s3cret with spaces"


class RedisWithPassword(Redis):
    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir),
             "--requirepass", REDIS_PASSWORD],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.cli("ping") == "PONG":
                return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-s", self.sock, "--no-auth-warning",
                               "-a", REDIS_PASSWORD, *args],
                              capture_output=True, text=True, timeout=10).stdout.strip()


@pytest.fixture
def redis_with_password(workdir):
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: scripts/dev.sh deps installs it")
    r = RedisWithPassword(workdir)
    r.start()
    yield r
    if r.proc.poll() is None:
        r.kill()


def connected_lines(log):
    # "connected to Redis at ..." as logged, not "not connected to Redis" in
    # an error text.
    return [line for line in log.splitlines() if "info: connected to Redis at" in line]


@pytest.mark.parametrize("ending", ["\r\n", "\n"], ids=["crlf", "lf"])
def test_a_password_file_with_a_trailing_newline_authenticates(start_cbd, workdir,
                                                               redis_with_password, ending):
    password_file = workdir / "redis-password"
    password_file.write_bytes((REDIS_PASSWORD + ending).encode())
    d = on_redis(start_cbd, workdir, redis_with_password, "a",
                 "--redis-password-file", str(password_file))
    c = Client(d.sock)
    assert_service_resumes(c, within=5)
    assert redis_with_password.cli("HGET", "cbd:c:k", "fc") == "1"
    # The command and the event connections: each logged once, after AUTH
    # (the event connection may still be on its way).
    deadline = time.monotonic() + 5
    while len(connected_lines(d.log())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(connected_lines(d.log())) == 2, d.log()
    assert "WRONGPASS" not in d.log()


@pytest.mark.parametrize("content", [b"", b"\n", b"\r\n"], ids=["empty", "lf", "crlf"])
def test_an_empty_password_file_is_refused_as_empty(workdir, content):
    from conftest import CBD
    password_file = workdir / "redis-password"
    password_file.write_bytes(content)
    p = subprocess.run([CBD, "--socket", str(workdir / "x.sock"), "--backend", "redis",
                        "--redis", "unix:///nonexistent/redis.sock",
                        "--redis-password-file", str(password_file)],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, p.stderr
    assert f"cbd: {password_file} is empty" in p.stderr
    assert "cannot read" not in p.stderr


def test_a_missing_password_file_says_why_it_cannot_be_read(workdir):
    from conftest import CBD
    password_file = workdir / "no-such-file"
    p = subprocess.run([CBD, "--socket", str(workdir / "x.sock"), "--backend", "redis",
                        "--redis", "unix:///nonexistent/redis.sock",
                        "--redis-password-file", str(password_file)],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 2, p.stderr
    assert f"cbd: cannot read {password_file}: No such file or directory" in p.stderr


def test_a_wrong_password_is_never_connected_and_answers_backend_unavailable(
        start_cbd, workdir, redis_with_password):
    password_file = workdir / "redis-password"
    password_file.write_bytes(b"not the password\n")
    d = on_redis(start_cbd, workdir, redis_with_password, "a",
                 "--redis-password-file", str(password_file), "--backend-timeout", "500ms")
    c = Client(d.sock)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        started = time.monotonic()
        r = c.call({"op": "failure", "key": "k"})
        assert time.monotonic() - started < 1.0
        assert r["ok"] is False and r["error"]["code"] == "backend_unavailable", r
        time.sleep(0.1)
    assert c.call({"op": "stats"})["backend"]["up"] is False
    log = d.log()
    assert connected_lines(log) == [], log
    assert "WRONGPASS" in log
    # Retries back off: a refused AUTH is logged once per connection, not
    # every 100 ms.
    assert log.count("refused the connection's set-up") <= 2, log
    assert redis_with_password.cli("EXISTS", "cbd:c:k") == "0"
    assert d.proc.poll() is None


def test_a_redis_before_7_is_refused_naming_the_version_found(start_cbd, workdir):
    """A server that answers like Redis 6.2 (no Functions): cbd's command
    connection never comes up, the log says which version it found and what
    it needs, and operations are answered backend_unavailable, surely not
    applied, at once."""
    path = str(workdir / "old-redis.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    info = b"# Server\r\nredis_version:6.2.14\r\nredis_mode:standalone\r\n"

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    def answer(conn):
        with conn:
            buf = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                # Answer each command by its name, well enough for cbd's set-up.
                while b"\r\n" in buf:
                    if b"INFO" in buf.upper():
                        conn.sendall(b"$%d\r\n%s\r\n" % (len(info), info))
                    elif b"SUBSCRIBE" in buf.upper():
                        conn.sendall(b"*3\r\n$9\r\nsubscribe\r\n$10\r\ncbd:events\r\n:1\r\n")
                    else:
                        conn.sendall(b"-ERR unknown command\r\n")
                    buf = b""

    threading.Thread(target=serve, daemon=True).start()
    try:
        d = start_cbd("--backend", "redis", "--redis", "unix://" + path, "--backend-timeout", "500ms")
        c = Client(d.sock)
        deadline = time.monotonic() + 10
        while "needs Redis 7.0 or newer" not in d.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = d.log()
        assert "cbd needs Redis 7.0 or newer" in log and "runs Redis 6.2.14" in log, log
        started = time.monotonic()
        r = c.call({"op": "failure", "key": "k"})
        assert time.monotonic() - started < 0.5
        assert r["ok"] is False and r["error"]["code"] == "backend_unavailable", r
        assert r["error"].get("applied") is False, r
        s = c.call({"op": "stats"})["backend"]
        assert s["up"] is False and s["redisVersion"] == "6.2.14", s
        assert d.proc.poll() is None
    finally:
        server.close()
