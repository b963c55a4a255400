"""Redis Sentinel end to end (issue #18): a master, one replica and three
sentinels on 127.0.0.1, two cbd daemons on sentinel://.../cbdtest. Eight
clients send `failure` on one key through both daemons; the master is
SIGKILLed mid-load; after the failover every acknowledged failure is in the
new master's count (--redis-min-replicas 1), both daemons serve again within
2 s of +switch-master, and watchers on both still get events. The same run
with --redis-min-replicas 0 prints how many acknowledged failures were lost
(a figure for docs/REDIS.md, not a pass/fail)."""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import Client

MASTER_NAME = "cbdtest"
SLOW = os.environ.get("CBD_SANITIZED") == "1"


def free_ports(n):
    """Ports nothing listens on now, picked by the kernel."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def cli(port, *args, timeout=5):
    r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
                       capture_output=True, text=True, timeout=timeout)
    return r.stdout.strip()


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (subprocess.TimeoutExpired, OSError, ValueError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout} s")


class SwitchWatcher:
    """Our own subscription to +switch-master on one sentinel: the time the
    test sees the failover, which the 2 s bound is measured from."""

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.s.sendall(b"SUBSCRIBE +switch-master\r\n")
        self.seen = None  # (monotonic time, payload)
        self.buf = b""
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            while self.seen is None:
                chunk = self.s.recv(65536)
                if not chunk:
                    return
                self.buf += chunk
                # ["message", "+switch-master", "NAME OLDIP OLDPORT NEWIP NEWPORT"]
                at = self.buf.find(f"{MASTER_NAME} 127.0.0.1 ".encode())
                if at >= 0 and b"\r\n" in self.buf[at:]:
                    payload = self.buf[at:].split(b"\r\n", 1)[0].decode()
                    self.seen = (time.monotonic(), payload)
        except OSError:
            return

    def close(self):
        self.s.close()


class Deployment:
    """Master, replica and three sentinels, each a redis-server of Debian's."""

    def __init__(self, workdir):
        self.dir = workdir / "sentinel"
        self.dir.mkdir()
        (self.master_port, self.replica_port, *self.sentinel_ports) = free_ports(5)
        self.procs = {}

    def _server(self, name, port, *extra):
        log = open(self.dir / f"{name}.log", "wb")
        self.procs[name] = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--dbfilename", f"{name}.rdb",
             *extra], stdout=log, stderr=subprocess.STDOUT)

    def start(self):
        self._server("master", self.master_port)
        wait_until(lambda: cli(self.master_port, "ping") == "PONG", 10, "the master")
        self._server("replica", self.replica_port, "--replicaof", "127.0.0.1",
                     str(self.master_port))
        for port in self.sentinel_ports:
            conf = self.dir / f"sentinel-{port}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
                f"sentinel failover-timeout {MASTER_NAME} 10000\n"
                f"sentinel parallel-syncs {MASTER_NAME} 1\n")
            log = open(self.dir / f"sentinel-{port}.log", "wb")
            self.procs[f"sentinel-{port}"] = subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"], stdout=log, stderr=subprocess.STDOUT)
        wait_until(lambda: "master_link_status:up" in cli(self.replica_port, "info",
                                                          "replication"), 20, "the replica")

        # A failover needs each sentinel to know the replica and the other
        # two sentinels (hello messages every 2 s).
        def sentinels_ready():
            for port in self.sentinel_ports:
                fields = cli(port, "sentinel", "master", MASTER_NAME).split("\n")
                info = dict(zip(fields[::2], fields[1::2]))
                if info.get("num-slaves") != "1" or info.get("num-other-sentinels") != "2":
                    return False
            return True

        wait_until(sentinels_ready, 30, "the sentinels to know each other and the replica")

    def url(self):
        return "sentinel://" + ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports) + \
            f"/{MASTER_NAME}"

    def kill_master(self):
        self.procs["master"].send_signal(signal.SIGKILL)
        self.procs["master"].wait()

    def restart_old_master_as_replica_of(self, port):
        self._server("old-master", self.master_port, "--replicaof", "127.0.0.1", str(port))

    def wait_for_old_master_to_sync(self, new_port):
        def synced():
            return "master_link_status:up" in cli(self.master_port, "info", "replication")

        try:
            wait_until(synced, 15, "the old master syncing")
        except TimeoutError:
            # Once in many CI runs it had not synced after 30 s, with
            # nothing to show why: ask again (what an operator would do),
            # and if that does not help either, fail with what both
            # servers say.
            cli(self.master_port, "replicaof", "127.0.0.1", str(new_port))
            try:
                wait_until(synced, 15, "the old master syncing, asked a second time")
            except TimeoutError as e:
                log = (self.dir / "old-master.log").read_text(errors="replace")
                raise TimeoutError(
                    f"{e}\nold master: {cli(self.master_port, 'info', 'replication')}\n"
                    f"new master: {cli(new_port, 'info', 'replication')}\n"
                    f"old master's log (end):\n{log[-3000:]}") from None
            print("\n[sentinel] the old master synced only when asked a second time")

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.fixture
def deployment(workdir):
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is missing: scripts/dev.sh deps installs it")
    d = Deployment(workdir)
    yield d
    d.stop()


class Load:
    """Eight clients, four per daemon, each sending `failure` on one key and
    counting what was sent and what was acknowledged."""

    def __init__(self, daemons, key):
        self.key = key
        self.stop = threading.Event()
        self.sent = [0] * 8
        self.acked = [0] * 8
        self.unexpected = []
        self.threads = [threading.Thread(target=self._client, args=(i, daemons[i % 2].sock),
                                         daemon=True) for i in range(8)]

    def _client(self, i, sock):
        c = Client(sock, timeout=30)
        while not self.stop.is_set():
            self.sent[i] += 1
            r = c.call({"op": "failure", "key": self.key})
            if r["ok"]:
                self.acked[i] += 1
            elif r["error"]["code"] != "backend_unavailable":
                self.unexpected.append(r)
            else:
                time.sleep(0.005)  # down: do not spin

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
        return sum(self.sent), sum(self.acked)


def first_success_after(daemon, deadline):
    """Polls `get` until one succeeds; returns the monotonic time of it."""
    c = Client(daemon.sock, timeout=30)
    while time.monotonic() < deadline:
        r = c.call({"op": "get", "key": "probe"})
        if r["ok"]:
            return time.monotonic()
        assert r["error"]["code"] == "backend_unavailable", r
        time.sleep(0.01)
    raise AssertionError(f"{daemon.sock} did not serve again: {r}")


def events_for(watcher, keys, timeout):
    """Reads a watcher's lines until a transition for every key in `keys` came."""
    watcher.s.settimeout(timeout)
    wanted = set(keys)
    deadline = time.monotonic() + timeout
    while wanted and time.monotonic() < deadline:
        e = watcher.json()
        if e.get("event") == "transition":
            wanted.discard(e["key"])
    return wanted


def run_failover(start_cbd, workdir, deployment, min_replicas):
    deployment.start()
    daemons = [start_cbd("--backend", "redis", "--redis", deployment.url(),
                         "--redis-min-replicas", str(min_replicas),
                         "--failure-threshold", "1000000000", sock=workdir / f"{n}.sock")
               for n in ("a", "b")]
    for d in daemons:
        s = Client(d.sock).call({"op": "stats"})["backend"]
        assert s["sentinel"] is True and s["minReplicas"] == min_replicas
        assert s["master"] == f"tcp://127.0.0.1:{deployment.master_port}", s
        assert s["failovers"] == 0
    watchers = []
    for d in daemons:
        w = Client(d.sock, timeout=60)
        assert w.call({"op": "watch"})["ok"] is True
        watchers.append(w)
    switch = SwitchWatcher(deployment.sentinel_ports[0])

    load = Load(daemons, "load")
    load.start()
    time.sleep(2.0 if SLOW else 1.5)
    assert sum(load.acked) > 0, "no failure was acknowledged before the kill"
    deployment.kill_master()
    # Both daemons are probed from now on; the load stops soon after the
    # kill so that what happens after it does not hide what was lost.
    results = {}
    deadline = time.monotonic() + 40

    def probe(i):
        try:
            results[i] = first_success_after(daemons[i], deadline)
        except AssertionError as e:
            results[i] = e

    probes = [threading.Thread(target=probe, args=(i,), daemon=True) for i in range(2)]
    for p in probes:
        p.start()
    time.sleep(0.5)
    sent, acked = load.finish()
    assert not load.unexpected, load.unexpected[:3]

    wait_until(lambda: switch.seen is not None, 40, "+switch-master")
    seen_at, payload = switch.seen
    switch.close()
    new_port = int(payload.split()[4])
    assert new_port == deployment.replica_port, payload
    for p in probes:
        p.join(timeout=45)
    for i in range(2):
        assert not isinstance(results.get(i), AssertionError), results.get(i)
        assert i in results, "a probe did not finish"
        # The bound: serving again within 2 s of +switch-master.
        assert results[i] - seen_at <= 2.0, \
            f"daemon {i} served {results[i] - seen_at:.3f} s after +switch-master"

    print(f"\n[sentinel] served again {results[0] - seen_at:+.3f} s and "
          f"{results[1] - seen_at:+.3f} s after the test saw +switch-master")
    count = int(cli(new_port, "HGET", "cbd:c:load", "fc") or "0")
    lost = max(0, acked - count)
    print(f"\n[sentinel] --redis-min-replicas {min_replicas}: sent {sent}, acknowledged "
          f"{acked}, in the new master {count}, acknowledged but lost {lost}")
    assert count <= sent
    if min_replicas >= 1:
        assert count >= acked, f"{acked - count} acknowledged failures were lost"

    for d in daemons:
        s = Client(d.sock).call({"op": "stats"})["backend"]
        assert s["master"] == f"tcp://127.0.0.1:{new_port}", s
        assert s["failovers"] == 1 and s["up"] is True, s
        metrics = Client(d.sock).call({"op": "metrics"})["text"]
        assert "cbd_backend_failovers_total 1" in metrics
        assert f'cbd_backend_master{{address="tcp://127.0.0.1:{new_port}"}} 1' in metrics
        switched = [line for line in d.log().splitlines() if "Redis master switched" in line]
        assert len(switched) == 1, switched
        assert f"from tcp://127.0.0.1:{deployment.master_port} to tcp://127.0.0.1:{new_port}" \
            in switched[0]

    # The old master comes back as a replica of the new one, so that a
    # change can be replicated again; then a transition through each daemon
    # reaches the watchers on both.
    deployment.restart_old_master_as_replica_of(new_port)
    deployment.wait_for_old_master_to_sync(new_port)
    acknowledged = []  # one key per daemon, its transition acknowledged
    for n, d in enumerate(daemons):
        c = Client(d.sock, timeout=30)
        deadline = time.monotonic() + 30
        attempt = 0
        while True:
            key = f"ev-{n}-{attempt}"
            r = c.call({"op": "transition", "key": key, "to": "open"})
            if r["ok"]:
                acknowledged.append(key)
                break
            assert r["error"]["code"] == "backend_unavailable", r
            assert time.monotonic() < deadline, f"no acknowledged transition: {r}"
            attempt += 1
            time.sleep(0.1)
    for i, w in enumerate(watchers):
        missing = events_for(w, acknowledged, 30)
        assert not missing, f"the watcher on daemon {i} never saw {missing}"
    return lost


def test_acknowledged_failures_survive_a_failover(start_cbd, workdir, deployment):
    run_failover(start_cbd, workdir, deployment, 1)


def test_without_replicas_acknowledged_failures_can_be_lost(start_cbd, workdir, deployment):
    # The figure docs/REDIS.md quotes: printed, not asserted (on one host
    # the replica usually keeps up, so it is often 0).
    run_failover(start_cbd, workdir, deployment, 0)


@pytest.mark.parametrize("args, says", [
    (["--redis", "sentinel://127.0.0.1:26379"], "MASTERNAME"),
    (["--redis", "sentinel://sentinel.example:26379/m"], "not an IP"),
    (["--redis", "sentinel://127.0.0.1:26379,,127.0.0.1:26380/m"], "empty sentinel"),
    (["--redis", "sentinel://127.0.0.1:26379,127.0.0.1:26379/m"], "listed twice"),
    (["--redis", "sentinel://" + ",".join(f"127.0.0.1:{p}" for p in range(20000, 20017)) + "/m"],
     "more than 16 sentinels"),
    (["--redis", "sentinel://127.0.0.1:26379/my master"], "not a master name"),
    (["--redis", "tcp://127.0.0.1:6379", "--redis-sentinel-password-file", "/dev/null"],
     "needs a sentinel:// address"),
    (["--redis", "tcp://127.0.0.1:6379", "--redis-min-replicas", "17"], "--redis-min-replicas"),
    (["--redis", "tcp://redis.example:6379"], "not an IP"),
])
@pytest.mark.parametrize("check", [False, True])
def test_bad_redis_flags_are_usage_errors(workdir, args, says, check):
    from conftest import CBD

    argv = [CBD, "--socket", str(workdir / "x.sock"), "--backend", "redis", *args]
    if check:
        argv.append("--check-config")
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert says in r.stderr, r.stderr
    assert not (workdir / "x.sock").exists()


def test_min_replicas_without_a_replica_answers_unavailable(start_cbd, workdir):
    """WAIT is really sent: with no replica a change is applied but not
    acknowledged, within the backend timeout; reads still answer."""
    port, = free_ports(1)
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: cli(port, "ping") == "PONG", 10, "redis-server")
        d = start_cbd("--backend", "redis", "--redis", f"tcp://127.0.0.1:{port}",
                      "--redis-min-replicas", "1", "--backend-timeout", "500ms",
                      sock=workdir / "w.sock")
        c = Client(d.sock)
        started = time.monotonic()
        r = c.call({"op": "failure", "key": "k"})
        took = time.monotonic() - started
        assert r["ok"] is False and r["error"]["code"] == "backend_unavailable", r
        assert "0 of 1 replicas" in r["error"]["message"]
        assert "may have been applied" in r["error"]["message"]
        # The WAIT follows the change on the connection and is answered
        # within the operation's own deadline (500 ms; one WAIT, not two).
        assert took < 0.5 + 0.25, took
        assert cli(port, "HGET", "cbd:c:k", "fc") == "1"  # applied, not acknowledged
        # A pipelined burst shares WAITs: 50 changes do not take 50 timeouts.
        started = time.monotonic()
        c.send(b"".join(b'{"op":"failure","key":"k"}\n' for _ in range(50)))
        replies = [c.json() for _ in range(50)]
        assert all(x["error"]["code"] == "backend_unavailable" for x in replies)
        assert time.monotonic() - started < 5 * 0.5
        assert c.call({"op": "get", "key": "k"})["snapshot"]["failureCount"] == 51
        s = c.call({"op": "stats"})["backend"]
        assert s["replicationFailures"] == 51 and s["minReplicas"] == 1 and s["failovers"] == 0
        assert s["master"] == f"tcp://127.0.0.1:{port}" and s["sentinel"] is False
        assert "cbd_backend_replication_failures_total 51" in c.call({"op": "metrics"})["text"]
    finally:
        proc.kill()
        proc.wait()


class FakeSentinel:
    """Speaks just enough of the protocol to be a sentinel that answers
    `answer` (raw bytes) to SENTINEL get-master-addr-by-name."""

    def __init__(self, answer):
        self.answer = answer
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.asked = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                # Commands arrive as RESP arrays; the first bulk string names it.
                while buf.startswith(b"*"):
                    parts = buf.split(b"\r\n")
                    n = int(parts[0][1:])
                    if len(parts) < 1 + 2 * n + 1:
                        break
                    words = [parts[2 + 2 * i] for i in range(n)]
                    buf = b"\r\n".join(parts[1 + 2 * n:])
                    cmd = words[0].upper()
                    if cmd == b"SENTINEL":
                        self.asked += 1
                        conn.sendall(self.answer)
                    elif cmd == b"SUBSCRIBE":
                        conn.sendall(b"*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n")
                    elif cmd == b"PING":
                        conn.sendall(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n")
                    else:
                        conn.sendall(b"-ERR unknown command\r\n")
        except OSError:
            return

    def close(self):
        self.server.close()


def resp_address(ip, port):
    ip, port = ip.encode(), str(port).encode()
    return b"*2\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(ip), ip, len(port), port)


def fails_fast(daemon):
    c = Client(daemon.sock)
    for _ in range(5):
        started = time.monotonic()
        r = c.call({"op": "failure", "key": "k"})
        assert r["ok"] is False and r["error"]["code"] == "backend_unavailable", r
        assert time.monotonic() - started < 0.5  # at once, not after a timeout
    assert c.call({"op": "ping"})["ok"]


@pytest.mark.parametrize("answer, logged", [
    (resp_address("redis.example", 6379), "is not an IP and a port"),
    (resp_address("127.0.0.1", 99999), "is not an IP and a port"),
    (b"$-1\r\n", "does not know the master name"),
    (b":42\r\n", "not an address"),
    (b"*2\r\n$3\r\nabc\r\n", None),  # half a reply: the question times out
    (b"hello there\r\n", "unreadable reply"),
])
def test_a_sentinel_answering_garbage_is_logged_and_operations_fail_fast(start_cbd, workdir,
                                                                          answer, logged):
    fake = FakeSentinel(answer)
    try:
        d = start_cbd("--backend", "redis", "--redis", f"sentinel://127.0.0.1:{fake.port}/m",
                      "--backend-timeout", "300ms", sock=workdir / "g.sock")
        wait_until(lambda: fake.asked >= 2, 20, "cbd to ask the sentinel twice")
        fails_fast(d)
        assert d.proc.poll() is None
        if logged:
            wait_until(lambda: logged in d.log(), 10, f"the log to say {logged!r}")
            assert d.log().count(logged) == 1, d.log()  # once, not every 200 ms
        s = Client(d.sock).call({"op": "stats"})["backend"]
        assert s["up"] is False and s["master"] is None and s["sentinel"] is True
    finally:
        fake.close()


def test_the_next_sentinel_is_asked_and_role_is_checked(start_cbd, workdir):
    """The first sentinel names a host name, the second a Redis that ROLE
    says is a replica, the third the master: cbd ends on the master."""
    master_port, replica_port = free_ports(2)
    procs = [subprocess.Popen(["redis-server", "--port", str(master_port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    wait_until(lambda: cli(master_port, "ping") == "PONG", 10, "the master")
    procs.append(subprocess.Popen(["redis-server", "--port", str(replica_port), "--bind",
                                   "127.0.0.1", "--save", "", "--appendonly", "no", "--dir",
                                   str(workdir), "--dbfilename", "r.rdb", "--replicaof",
                                   "127.0.0.1", str(master_port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    fakes = []
    try:
        wait_until(lambda: cli(replica_port, "ping") == "PONG", 10, "the replica")
        garbage = FakeSentinel(resp_address("redis.example", 6379))
        to_replica = FakeSentinel(resp_address("127.0.0.1", replica_port))
        fakes = [garbage, to_replica]
        d = start_cbd("--backend", "redis", "--redis",
                      f"sentinel://127.0.0.1:{garbage.port},127.0.0.1:{to_replica.port}/m",
                      sock=workdir / "r.sock")
        wait_until(lambda: "is a slave, not the master" in d.log(), 20, "the ROLE check")
        fails_fast(d)
        assert "is not an IP and a port" in d.log()
        # The sentinels change their minds: the second names the master now.
        to_replica.answer = resp_address("127.0.0.1", master_port)
        garbage.answer = resp_address("127.0.0.1", master_port)
        c = Client(d.sock)
        deadline = time.monotonic() + 20
        while True:
            r = c.call({"op": "failure", "key": "k"})
            if r["ok"]:
                break
            assert time.monotonic() < deadline, r
            time.sleep(0.05)
        s = c.call({"op": "stats"})["backend"]
        assert s["master"] == f"tcp://127.0.0.1:{master_port}" and s["failovers"] == 1, s
        assert "Redis master switched from tcp://127.0.0.1:%d to tcp://127.0.0.1:%d" % (
            replica_port, master_port) in d.log()
    finally:
        for f in fakes:
            f.close()
        for p in procs:
            p.kill()
            p.wait()


def test_a_master_that_answers_readonly_is_left_for_the_one_the_sentinels_name(start_cbd,
                                                                               workdir):
    """The master is demoted behind cbd's back (REPLICAOF, no announcement
    reaches cbd): its next write answers READONLY, cbd drops it, ROLE
    refuses it, and cbd moves to the master the sentinel names now."""
    a_port, b_port = free_ports(2)
    procs = []
    for port, name in ((a_port, "a"), (b_port, "b")):
        procs.append(subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir), "--dbfilename", f"{name}.rdb"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    fake = None
    try:
        for port in (a_port, b_port):
            wait_until(lambda: cli(port, "ping") == "PONG", 10, "redis-server")
        fake = FakeSentinel(resp_address("127.0.0.1", a_port))
        d = start_cbd("--backend", "redis", "--redis", f"sentinel://127.0.0.1:{fake.port}/m",
                      sock=workdir / "ro.sock")
        c = Client(d.sock)
        wait_until(lambda: c.call({"op": "failure", "key": "k"})["ok"], 20, "service on a")
        fake.answer = resp_address("127.0.0.1", b_port)
        assert cli(a_port, "REPLICAOF", "127.0.0.1", str(b_port)) == "OK"
        r = c.call({"op": "failure", "key": "k"})
        assert r["ok"] is False and r["error"]["code"] == "backend_unavailable", r
        assert "READONLY" in r["error"]["message"]
        started = time.monotonic()
        while not c.call({"op": "failure", "key": "k"})["ok"]:
            assert time.monotonic() - started < 10, "cbd did not move to the new master"
            time.sleep(0.02)
        assert "the master answered READONLY" in d.log()
        s = c.call({"op": "stats"})["backend"]
        assert s["master"] == f"tcp://127.0.0.1:{b_port}" and s["failovers"] == 1, s
    finally:
        if fake:
            fake.close()
        for p in procs:
            p.kill()
            p.wait()


def test_sentinels_that_require_auth(start_cbd, workdir):
    """--redis-sentinel-password-file: AUTH on every sentinel connection;
    without it the sentinel refuses and cbd says so, serving nothing."""
    master_port, sentinel_port = free_ports(2)
    master = subprocess.Popen(["redis-server", "--port", str(master_port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    conf = workdir / "sentinel.conf"
    conf.write_text(f"port {sentinel_port}\nbind 127.0.0.1\ndir {workdir}\n"
                    "requirepass s3cret\n"
                    f"sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 1\n")
    sentinel = subprocess.Popen(["redis-server", str(conf), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: cli(master_port, "ping") == "PONG", 10, "the master")
        wait_until(lambda: "NOAUTH" in cli(sentinel_port, "ping") or
                   "Authentication" in cli(sentinel_port, "ping"), 10, "the sentinel")
        url = f"sentinel://127.0.0.1:{sentinel_port}/{MASTER_NAME}"
        refused = start_cbd("--backend", "redis", "--redis", url, sock=workdir / "n.sock")
        wait_until(lambda: "NOAUTH" in refused.log() or "Authentication" in refused.log(), 10,
                   "the refusal in the log")
        fails_fast(refused)
        pw = workdir / "sentinel.pass"
        pw.write_text("s3cret\n")
        d = start_cbd("--backend", "redis", "--redis", url, "--redis-sentinel-password-file",
                      str(pw), sock=workdir / "p.sock")
        c = Client(d.sock)
        wait_until(lambda: c.call({"op": "failure", "key": "k"})["ok"], 20, "service")
        assert c.call({"op": "stats"})["backend"]["master"] == f"tcp://127.0.0.1:{master_port}"
        # The Redis itself needs no password here: the sentinels' is theirs alone.
        assert cli(master_port, "HGET", "cbd:c:k", "fc") == "1"
    finally:
        for p in (sentinel, master):
            p.kill()
            p.wait()
