"""cbd on Redis under more load than Redis runs within --backend-timeout.

Every client connection may have 1024 operations waiting for the backend,
and until the queue in cbd (docs/REDIS.md, *When Redis is not there*) the
sum over connections went to Redis unbounded: a flood built a backlog longer
than --backend-timeout, the oldest command timed out, cbd dropped and re-made
the connection, and everything in flight failed `backend_unavailable`, some
of it applied. These tests hold cbd to what the queue promises:

- commands wait in cbd (round robin between connections), a bounded number
  are in flight in Redis, and read-level operations never hold more than
  half of the queue: a writer keeps a short latency through a reader's flood;
- each waiting command has its own deadline (arrival + --backend-timeout);
  one not sent by then is answered `backend_unavailable` with
  `"applied": false` (surely not applied; in a `reportBatch` reply, per
  entry), so what clients were told was applied is exactly what Redis holds;
- the connection to Redis is dropped only when Redis stops answering
  (`stats.backend.disconnects` does not move under load alone).

Each test starts its own redis-server and cbd. ctest runs this suite once
(it picks its backend itself; it is not in the CBD_E2E_BACKEND=redis pass).
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import Client

SANITIZED = os.environ.get("CBD_SANITIZED") == "1"
# Under ASan and UBSan (a Debug build, cbd's loop several times slower) the
# same loads run the same paths — the queue, deadlines, refusals, batches —
# for memory errors, and every reply is still checked for what it promises
# (ok, or applied false; stored equals acknowledged); the time bounds
# (latency, the share applied within the timeout, the deadline margin) are
# the optimized build's, checked in the first pass.
TIMED = not SANITIZED
HUGE_THRESHOLD = "1000000000"
BACKEND_TIMEOUT_S = 1.0  # cbd's default --backend-timeout, which these tests use
NOBODY = 65534
WRITER_GID = 4242
ADMIN_GID = 4343
# The read-level peer's interpreter must be one `nobody` can run.
PEER_PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


class Redis:
    """A redis-server private to one test, on a unix socket, no persistence."""

    def __init__(self, workdir):
        self.dir = workdir / "redis"
        self.dir.mkdir(exist_ok=True)
        self.sock = str(self.dir / "redis.sock")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
             "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not start")
            time.sleep(0.05)

    def cli(self, *args):
        return subprocess.run(["redis-cli", "-s", self.sock, *args], capture_output=True,
                              text=True, timeout=30).stdout.strip()

    def failure_count(self, key):
        value = self.cli("HGET", "cbd:c:" + key, "fc")
        return int(value) if value else 0

    def failure_counts(self, prefix):
        """The failures counted in every circuit whose key starts with
        `prefix`, summed."""
        script = """
            local sum = 0
            for _, k in ipairs(redis.call('ZRANGEBYLEX', 'cbd:index', '[' .. ARGV[1],
                                          '[' .. ARGV[1] .. '\\255')) do
              sum = sum + tonumber(redis.call('HGET', 'cbd:c:' .. k, 'fc') or 0)
            end
            return sum"""
        return int(self.cli("EVAL", script, "0", prefix))


@pytest.fixture
def redis(workdir):
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: scripts/dev.sh deps installs it")
    r = Redis(workdir)
    yield r
    if r.proc.poll() is None:
        r.proc.send_signal(signal.SIGCONT)
        r.proc.kill()
        r.proc.wait()


def on_redis(start_cbd, redis, *args):
    return start_cbd("--backend", "redis", "--redis", "unix://" + redis.sock, *args)


def backend_stats(sock):
    return Client(sock).call({"op": "stats"})["backend"]


def line(obj):
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


# --- 1. a read-level flood does not slow a writer -----------------------------

CIRCUITS = 100_000
READERS = 16
GET_ROUNDS, GETS_PER_ROUND = 3, 1000
# 100 pages of 10,000 circuits in all (spread over the readers, each
# pipelining its share): a page costs Redis about 70 ms in steps of 64 keys,
# so 100 per reader would be two minutes of Redis time. Under ASan cbd
# builds each 1.5 MB page three times slower: half as many.
LISTS = 50 if SANITIZED else 100
WRITER_PERIOD_S = 0.005

# Loads circuits svc/000000 … in the layout of docs/REDIS.md (a closed
# circuit hash, the index, the generation counter and the per-state counts)
# in one script: about half a second, before cbd starts.
LOAD_CIRCUITS = """
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local k = string.format('svc/%06d', i)
  redis.call('HSET', 'cbd:c:' .. k, 'state', 'closed', 'fc', 0, 'sc', 0, 'lft', 0, 'lsc', 1,
             'gen', i + 1)
  redis.call('ZADD', 'cbd:index', 0, k)
end
redis.call('SET', 'cbd:generation', n)
redis.call('HSET', 'cbd:counts', 'closed', n)
return redis.call('ZCARD', 'cbd:index')
"""

# Runs as nobody (read level). argv: socket, readers, rounds, gets per
# round, lists in all, circuits. Each connection pipelines its rounds of
# `get` (back to back, without waiting) and then its share of the `list`
# pages, reading replies as they come; prints one JSON line: replies ok,
# error codes seen (with "applied" when given), and anything unexpected.
READ_FLOOD = """
    import json, socket, sys, threading
    path, readers, rounds, per_round, lists, circuits = sys.argv[1], *map(int, sys.argv[2:])
    lock = threading.Lock()
    out = {"ok": 0, "errors": {}, "unexpected": []}

    def reader(c):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(120)
        s.connect(path)
        mine = lists // readers + (1 if c < lists % readers else 0)
        chunks = []
        for r in range(rounds):
            chunks.append(b"".join(
                b'{"op":"get","key":"svc/%06d"}\\n' % ((c * 7919 + r * 1009 + i * 97) % circuits)
                for i in range(per_round)))
        chunks.append(b"".join(
            b'{"op":"list","limit":10000,"after":"svc/%06d"}\\n' % ((c + j * readers) % 9 * 10000)
            for j in range(mine)))
        def send():
            for chunk in chunks:
                s.sendall(chunk)
        threading.Thread(target=send, daemon=True).start()
        f = s.makefile("rb")
        ok, errors, unexpected = 0, {}, []
        for _ in range(rounds * per_round + mine):
            reply = f.readline()
            if reply.startswith(b'{"ok":true'):
                ok += 1
                continue
            try:
                error = json.loads(reply)["error"]
                name = error["code"] + (":applied=" + str(error["applied"]) if "applied" in error else "")
                errors[name] = errors.get(name, 0) + 1
            except Exception:
                unexpected.append(reply[:200].decode(errors="replace"))
        with lock:
            out["ok"] += ok
            for k, v in errors.items():
                out["errors"][k] = out["errors"].get(k, 0) + v
            out["unexpected"] += unexpected[:3]

    threads = [threading.Thread(target=reader, args=(c,)) for c in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps(out), flush=True)
"""


def test_a_read_level_flood_leaves_a_writer_its_latency_and_the_connection(
        start_cbd, workdir, redis):
    assert redis.cli("EVAL", LOAD_CIRCUITS, "0", str(CIRCUITS)) == str(CIRCUITS)
    os.chmod(workdir, 0o755)  # nobody reaches cbd's socket (Redis's stays 0700)
    d = on_redis(start_cbd, redis, "--socket-mode", "0666", "--writer-group", str(WRITER_GID),
                 "--admin-group", str(ADMIN_GID), "--failure-threshold", HUGE_THRESHOLD)
    writer = Client(d.sock, timeout=30)
    assert writer.call({"op": "failure", "key": "writer"})["ok"]
    disconnects = backend_stats(d.sock)["disconnects"]

    flood = subprocess.Popen(
        ["setpriv", f"--reuid={NOBODY}", "--regid=nogroup", "--clear-groups", PEER_PYTHON, "-c",
         textwrap.dedent(READ_FLOOD), d.sock, str(READERS), str(GET_ROUNDS), str(GETS_PER_ROUND),
         str(LISTS), str(CIRCUITS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    latencies, errors = [], []
    started = time.monotonic()
    try:
        # The root writer: one failure at a time on its own connection, for
        # as long as the flood lasts.
        while flood.poll() is None:
            assert time.monotonic() - started < 120, "the flood did not end within 120 s"
            t = time.monotonic()
            reply = writer.call({"op": "failure", "key": "writer"})
            latencies.append(time.monotonic() - t)
            if not reply["ok"]:
                errors.append(reply["error"])
        out, err = flood.communicate(timeout=10)
    finally:
        if flood.poll() is None:
            flood.kill()
            flood.wait()
    assert flood.returncode == 0, err
    got = json.loads(out)
    # The flood happened and every read was answered: served, or (not sent
    # by its deadline) refused as surely not applied, and nothing else. How
    # many were served depends on the machine's speed (one CI run served
    # 46%), so it is printed, not bounded: the claim here is the writer's.
    assert got["unexpected"] == [], got
    assert set(got["errors"]) <= {"backend_unavailable:applied=False"}, got
    reads = READERS * (GET_ROUNDS * GETS_PER_ROUND) + LISTS
    assert got["ok"] + sum(got["errors"].values()) == reads, got
    assert got["ok"] > 0, got
    assert len(latencies) >= 20, (len(latencies), got)

    # A writer held up for 700 ms would have sent 140 failures in that time
    # had it had them to send, each waiting part of the 700 ms; timed one
    # at a time they count as one slow sample among hundreds of fast ones
    # (coordinated omission). So each latency L also stands for the failures
    # due every WRITER_PERIOD_S while it waited: L - P, L - 2P, … (as
    # HdrHistogram's recordValueWithExpectedInterval). Latencies under P
    # stand for themselves alone, so a writer that is never held up keeps
    # its own figures.
    corrected = sorted(latencies + [l - k * WRITER_PERIOD_S for l in latencies
                                    for k in range(1, int(l / WRITER_PERIOD_S))])
    p99 = corrected[min(len(corrected) - 1, int(len(corrected) * 0.99))]
    latencies.sort()
    summary = (f"writer: {len(latencies)} failures, p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
               f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
               f"max {latencies[-1] * 1000:.1f} ms; corrected for a failure due every "
               f"{WRITER_PERIOD_S * 1000:g} ms: {len(corrected)} samples, p99 {p99 * 1000:.1f} ms; "
               f"flood {time.monotonic() - started:.1f} s; readers: {got}")
    print(summary)
    after = backend_stats(d.sock)["disconnects"]
    summary += f"; backend.disconnects {disconnects} -> {after}"
    assert errors == [], (errors[:3], summary)
    if TIMED:
        assert p99 < 0.050, summary
    assert after == disconnects, summary
    # Every failure the writer was told about is counted, once.
    assert redis.failure_count("writer") == len(latencies) + 1


# --- 2 and 3. writers pipelining batches and single failures -----------------

WRITERS = 8
BATCHES, ENTRIES = 3, 1000  # per batch connection
SINGLES = 3000  # per single-failure connection


class Pipelined:
    """One connection that writes all its request lines at once (from a
    thread of its own) while another thread reads the replies, noting when
    each arrived. `key` starts every key its requests touch."""

    def __init__(self, sock, key, lines):
        self.key, self.lines = key, lines
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(60)
        self.s.connect(str(sock))
        self.replies, self.times, self.failed = [], [], None
        self.sent_at = None

    def start(self):
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.sent_at = time.monotonic()
        threading.Thread(target=self.s.sendall, args=(b"".join(self.lines),), daemon=True).start()

    def _read(self):
        try:
            f = self.s.makefile("rb")
            for _ in self.lines:
                reply = f.readline()
                if not reply:
                    raise EOFError("cbd closed the connection")
                self.times.append(time.monotonic())
                self.replies.append(reply)
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.failed = repr(e)

    def join(self, timeout):
        self.reader.join(timeout)
        assert not self.reader.is_alive(), f"{self.key}: {len(self.replies)} of {len(self.lines)} replies"
        assert self.failed is None, (self.key, self.failed)
        self.s.close()

    def waits(self):
        """How long each reply took from the latest moment its request can
        have reached cbd: not before it was written, and not after the
        reply before it (replies come in request order, and once the
        previous reply is out nothing holds the request back). So each wait
        is at most the request's real time in cbd: never more."""
        previous = self.sent_at
        out = []
        for t in self.times:
            out.append(t - previous)
            previous = t
        return out

    def tally(self):
        """(acknowledged, refused with applied false, ambiguous, other):
        entries for a batch connection, requests for a single one."""
        acked, refused, ambiguous, other = 0, 0, 0, []
        for raw, weight in zip(self.replies, self.weights()):
            r = json.loads(raw)
            if r["ok"] and "errors" in r:  # a reportBatch reply
                assert r["stale"] == 0, r
                acked += r["applied"]
                for e in r["errors"]:
                    if e["code"] != "backend_unavailable":
                        other.append(e)
                    elif e.get("applied") is False:
                        refused += 1
                    else:
                        ambiguous += 1
                        other.append(e)
            elif r["ok"]:
                acked += 1
            elif r["error"]["code"] == "backend_unavailable":
                if r["error"].get("applied") is False:
                    refused += weight
                else:
                    ambiguous += weight
                    other.append(r["error"])
            else:
                other.append(r["error"])
        return acked, refused, ambiguous, other

    def weights(self):
        return [ENTRIES if b'"reportBatch"' in request else 1 for request in self.lines]


def writer_load(sock):
    """Every entry and every failure on a circuit of its own, which it
    creates: the three batches of a connection cover 3000 keys, as a
    mirror's batches cover many circuits. Each connection's keys share a
    prefix, so what Redis counted for it can be summed."""
    conns = []
    for c in range(WRITERS):
        lines = [line({"op": "reportBatch", "reports": [
            {"key": f"batch/{c}/{b * ENTRIES + j:04d}", "outcome": "failure"}
            for j in range(ENTRIES)]}) for b in range(BATCHES)]
        conns.append(Pipelined(sock, f"batch/{c}/", lines))
    for c in range(WRITERS):
        conns.append(Pipelined(sock, f"single/{c}/",
                               [line({"op": "failure", "key": f"single/{c}/{i:04d}"})
                                for i in range(SINGLES)]))
    return conns


TOTAL_ENTRIES = WRITERS * (BATCHES * ENTRIES + SINGLES)


def test_pipelined_batches_and_failures_are_applied_or_surely_refused(start_cbd, redis):
    d = on_redis(start_cbd, redis, "--failure-threshold", HUGE_THRESHOLD)
    disconnects = backend_stats(d.sock)["disconnects"]
    conns = writer_load(d.sock)
    for c in conns:
        c.start()
    for c in conns:
        c.join(timeout=90)
    took = max(c.times[-1] for c in conns) - min(c.sent_at for c in conns)

    acked_total, summary, problems = 0, [], []
    for c in conns:
        acked, refused, ambiguous, other = c.tally()
        stored = redis.failure_counts(c.key)
        acked_total += acked
        summary.append(f"{c.key}: acked {acked} refused {refused} ambiguous {ambiguous} stored {stored}")
        if other:
            problems.append((c.key, other[:2], len(other)))
        # What cbd said was applied is what Redis holds: no more, no less.
        if stored != acked:
            problems.append((c.key, "stored", stored, "acknowledged", acked))
    after = backend_stats(d.sock)["disconnects"]
    summary = f"load took {took:.2f} s; backend.disconnects {disconnects} -> {after}; " + "; ".join(summary)
    print(summary)
    # Every entry and every reply is ok, or refused surely not applied.
    assert problems == [], (problems[:6], summary)
    if TIMED:
        assert acked_total >= 0.9 * TOTAL_ENTRIES, (acked_total, TOTAL_ENTRIES, summary)
    assert after == disconnects, summary


# Replies are noted by this process's reader threads (16 of them, parsing
# nothing while the load runs) and cbd answers a deadline from its event
# loop: half the timeout covers both, and stays below what a deadline
# started when the command was sent to Redis, not when it reached cbd, would
# give (up to twice the timeout). ASan makes cbd's loop three times slower.
REPLY_MARGIN_S = 0.75 if SANITIZED else 0.5
RESUME_WITHIN_S = 2.0 if SANITIZED else 1.0
FREEZE_S = 3.0


def test_a_frozen_redis_answers_every_waiting_request_by_its_deadline(start_cbd, redis):
    d = on_redis(start_cbd, redis, "--failure-threshold", HUGE_THRESHOLD)
    probe = Client(d.sock, timeout=30)
    assert probe.call({"op": "failure", "key": "probe"})["ok"]
    conns = writer_load(d.sock)
    for c in conns:
        c.start()
    # In the middle: the load costs Redis about two seconds, and is under
    # way once a few thousand replies are in.
    deadline = time.monotonic() + 30
    while sum(len(c.replies) for c in conns) < 2000:
        assert time.monotonic() < deadline, "the load did not start"
        time.sleep(0.005)
    redis.proc.send_signal(signal.SIGSTOP)
    frozen_at = time.monotonic()
    answered_before = sum(len(c.replies) for c in conns)
    try:
        time.sleep(FREEZE_S)
    finally:
        redis.proc.send_signal(signal.SIGCONT)
    thawed_at = time.monotonic()

    # Service resumes: a failure succeeds within a second of SIGCONT.
    resumed_after, last = None, None
    while time.monotonic() - thawed_at < 10:
        last = probe.call({"op": "failure", "key": "probe"})
        if last["ok"]:
            resumed_after = time.monotonic() - thawed_at
            break
        assert last["error"]["code"] == "backend_unavailable", last
        time.sleep(0.02)

    for c in conns:
        c.join(timeout=90)
    assert answered_before < sum(len(c.lines) for c in conns), "the load was over before the freeze"

    summary, problems, slowest = [], [], (0.0, None)
    refused_total = 0
    for c in conns:
        waits = c.waits()
        worst = max(waits)
        if worst > slowest[0]:
            slowest = (worst, c.key, waits.index(worst))
        acked, refused, ambiguous, other = c.tally()
        refused_total += refused
        stored = redis.failure_counts(c.key)
        summary.append(f"{c.key}: acked {acked} refused {refused} ambiguous {ambiguous} "
                       f"stored {stored} slowest {worst:.2f}s")
        # Every acknowledged failure is stored; a refusal that says
        # applied false is not.
        if not acked <= stored <= acked + ambiguous:
            problems.append((c.key, "acked", acked, "stored", stored, "ambiguous", ambiguous))
        problems += [(c.key, e) for e in other if e.get("code") != "backend_unavailable"][:2]
    summary = "; ".join(summary)
    print(f"froze {frozen_at - conns[0].sent_at:.2f}s into the load; resumed after "
          f"{resumed_after}; slowest reply {slowest}; {summary}")
    assert problems == [], (problems[:6], summary)
    # Everything waiting was answered by its deadline.
    if TIMED:
        assert slowest[0] <= BACKEND_TIMEOUT_S + REPLY_MARGIN_S, (slowest, summary)
    # What waited in cbd for a frozen Redis was never sent: refused as
    # surely not applied, a client may retry it.
    assert refused_total > 0, summary
    assert resumed_after is not None and resumed_after <= RESUME_WITHIN_S, (resumed_after, last)
