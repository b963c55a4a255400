#!/usr/bin/env python3
"""Runs the conformance corpus (cases/*.json) against one cbd backend.

The corpus is the breaker's rules as data: each case names the rule it
proves, the daemon options it needs, and a sequence of steps (set the
clock, send a request, compare the reply). The same files run against every
backend, so a rule lives once and a disagreement between backends shows up
as a failing step with the request, the expected and the actual reply.

    run_corpus.py --backend memory|durable|redis [-k SUBSTRING] [--list]

Each case gets a fresh cbd on a temporary socket, started with
`--test-clock FILE`: the daemon reads the time (epoch ms) from FILE whenever
it needs it, so times in replies are exact and a case can jump 30 s ahead
without sleeping. The format of a case file is described in README.md here.

Standard library only. Exit status: 0 when every case passes, 1 when any
fails, 2 when the corpus itself is malformed or a daemon cannot start.
"""

import argparse
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CASES_DIR = HERE / "cases"

# Every case starts at this time (2001-09-09T01:46:40Z): a round number,
# so an expected time reads as "start + offset" (1000000030000 is 30 s in).
CORPUS_EPOCH_MS = 1_000_000_000_000

BACKENDS = ("memory", "durable", "redis")

# How long to wait for one reply line; an event line (from a watch) may
# trail the reply that caused it, so it gets a wait of its own.
REPLY_TIMEOUT_S = 10.0
EVENT_TIMEOUT_S = 3.0
START_TIMEOUT_S = 20.0

STEP_ACTIONS = ("clock", "advance", "send", "watch", "event", "connect")
STEP_KEYS = {
    "connect": {"connect", "level", "note"},
    "clock": {"clock", "note"},
    "advance": {"advance", "note"},
    "send": {"send", "expect", "save", "repeat", "on", "note"},
    "watch": {"watch", "as", "expect", "note"},
    "event": {"event", "expect", "save", "note"},
}
CASE_KEYS = {"name", "rule", "daemon", "steps", "why"}

# A case with `connect` steps talks to cbd as other users too: cbd gets these
# groups and a socket everyone may open, and each such connection is made by
# a relay running as `nobody` (with the writer group for "write").
PEER_UID = 65534
WRITER_GID = 4242
ADMIN_GID = 4343
PEER_LEVELS = ("read", "write")
PEER_DAEMON_ARGS = ["--writer-group", str(WRITER_GID), "--admin-group", str(ADMIN_GID),
                    "--socket-mode", "0666"]
DAEMON_KEYS = {"args", "config"}


class CorpusError(Exception):
    """The corpus itself is malformed (not a conformance failure)."""


# --- the corpus -------------------------------------------------------------

def load_corpus(directory=CASES_DIR):
    """Every case of every file, checked for shape, in file then case order:
    a misspelt step key must fail loudly, not silently check nothing."""
    cases = []
    seen = set()
    files = sorted(Path(directory).glob("*.json"))
    if not files:
        raise CorpusError(f"no case files in {directory}")
    for path in files:
        try:
            doc = json.loads(path.read_text())
        except ValueError as e:
            raise CorpusError(f"{path.name}: not valid JSON: {e}") from None
        if not isinstance(doc, dict) or set(doc) - {"topic", "about", "cases"}:
            raise CorpusError(f"{path.name}: expected an object with topic, about, cases")
        topic = doc.get("topic")
        if topic != path.stem:
            raise CorpusError(f"{path.name}: topic must be the file's name ({path.stem!r})")
        if not isinstance(doc.get("cases"), list) or not doc["cases"]:
            raise CorpusError(f"{path.name}: 'cases' must be a non-empty array")
        for i, case in enumerate(doc["cases"]):
            where = f"{path.name} case {i}"
            check_case(case, where)
            full = f"{topic}/{case['name']}"
            if full in seen:
                raise CorpusError(f"{where}: duplicate case name {full!r}")
            seen.add(full)
            cases.append(dict(case, topic=topic, id=full))
    return cases


def check_case(case, where):
    if not isinstance(case, dict):
        raise CorpusError(f"{where}: a case must be an object")
    unknown = set(case) - CASE_KEYS
    if unknown:
        raise CorpusError(f"{where}: unknown keys {sorted(unknown)}")
    if not isinstance(case.get("name"), str) or not re.fullmatch(r"[a-z0-9_]+", case["name"]):
        raise CorpusError(f"{where}: 'name' must be snake_case")
    if not isinstance(case.get("rule"), str) or not case["rule"].strip():
        raise CorpusError(f"{where} ({case['name']}): every case states its 'rule'")
    daemon = case.get("daemon", {})
    if not isinstance(daemon, dict) or set(daemon) - DAEMON_KEYS:
        raise CorpusError(f"{where}: 'daemon' takes only {sorted(DAEMON_KEYS)}")
    if not all(isinstance(a, str) for a in daemon.get("args", [])):
        raise CorpusError(f"{where}: daemon.args must be strings")
    steps = case.get("steps")
    if not isinstance(steps, list) or not steps:
        raise CorpusError(f"{where}: 'steps' must be a non-empty array")
    saved_so_far = set()
    for j, step in enumerate(steps):
        if not isinstance(step, dict):
            raise CorpusError(f"{where} step {j}: a step must be an object")
        actions = [a for a in STEP_ACTIONS if a in step]
        if len(actions) != 1:
            raise CorpusError(f"{where} step {j}: exactly one of {STEP_ACTIONS} per step")
        unknown = set(step) - STEP_KEYS[actions[0]]
        if unknown:
            raise CorpusError(f"{where} step {j}: unknown keys {sorted(unknown)}")
        if actions[0] in ("clock", "advance") and not isinstance(step[actions[0]], int):
            raise CorpusError(f"{where} step {j}: {actions[0]} takes an integer (ms)")
        if actions[0] == "send" and not isinstance(step["send"], (dict, str)):
            raise CorpusError(f"{where} step {j}: send takes an object or a raw line")
        if actions[0] == "connect" and (not isinstance(step["connect"], str) or
                                        step.get("level") not in PEER_LEVELS):
            raise CorpusError(f"{where} step {j}: connect takes a name and a level "
                              f"({', '.join(PEER_LEVELS)})")
        if actions[0] == "watch" and not isinstance(step.get("as"), str):
            raise CorpusError(f"{where} step {j}: watch needs 'as' (the stream's name)")
        if "save" in step and not (isinstance(step["save"], dict) and
                                   all(isinstance(v, str) for v in step["save"].values())):
            raise CorpusError(f"{where} step {j}: save maps names to field paths")
        used = variables_in({k: v for k, v in step.items() if k != "save"})
        if used - saved_so_far:
            raise CorpusError(f"{where} step {j}: uses {sorted(used - saved_so_far)} before "
                              "any step saves them")
        saved_so_far |= set(step.get("save", {}))


# --- expectations -----------------------------------------------------------
#
# An expectation is matched against a reply as a subset: every field it
# names must be in the reply and match; fields it does not name are not
# checked. Arrays match element by element and must have the same length.
# Markers:
#   "$any"                present, any value
#   "$absent"             not present
#   "${name}"             equal to the value saved under `name`
#   {"$gt": X}, {"$ge": X}, {"$lt": X}, {"$le": X}
#                         an integer compared with X (a number or "${name}")
#   {"$ne": X}            anything but X
#   {"$type": T}          T is string, integer, boolean, object, array or null
#   {"$keys": [..]}       an object with exactly these keys, in this order

_VAR = re.compile(r"^\$\{([A-Za-z0-9_]+)\}$")
_VAR_ANYWHERE = re.compile(r"\$\{([A-Za-z0-9_]+)\}")
_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}
_COMPARE = {
    "$gt": lambda a, b: a > b,
    "$ge": lambda a, b: a >= b,
    "$lt": lambda a, b: a < b,
    "$le": lambda a, b: a <= b,
}
_MISSING = object()


class Unsaved(Exception):
    """A step needs a value that an earlier, failed step did not save."""


def variables_in(value):
    """The ${name} references anywhere in a step (raw lines included)."""
    if isinstance(value, str):
        return set(_VAR_ANYWHERE.findall(value))
    if isinstance(value, list):
        return set().union(*(variables_in(v) for v in value)) if value else set()
    if isinstance(value, dict):
        return set().union(*(variables_in(v) for v in value.values())) if value else set()
    return set()


def resolve(value, saved):
    """Replaces every "${name}" string (a whole value) with the saved value."""
    if isinstance(value, str):
        m = _VAR.match(value)
        if m:
            if m.group(1) not in saved:
                raise Unsaved(m.group(1))
            return saved[m.group(1)]
        return value
    if isinstance(value, list):
        return [resolve(v, saved) for v in value]
    if isinstance(value, dict):
        return {k: resolve(v, saved) for k, v in value.items()}
    return value


def resolve_raw(line, saved):
    """A raw request line with each ${name} replaced by its JSON text."""
    def sub(m):
        if m.group(1) not in saved:
            raise Unsaved(m.group(1))
        return json.dumps(saved[m.group(1)])
    return re.sub(r"\$\{([A-Za-z0-9_]+)\}", sub, line)


def is_operator(expected):
    return isinstance(expected, dict) and len(expected) == 1 and next(iter(expected)).startswith("$")


def same_value(a, b):
    # JSON true is not 1, and 1 is not 1.0 for a protocol of integers.
    return type(a) is type(b) and a == b


def match(expected, actual, saved, path="reply"):
    """The mismatches between an expectation and a reply, as readable lines."""
    if expected == "$absent":
        return [] if actual is _MISSING else [f"{path}: expected absent, got {show(actual)}"]
    if actual is _MISSING:
        return [f"{path}: missing"]
    if expected == "$any":
        return []
    if isinstance(expected, str) and _VAR.match(expected):
        expected = resolve(expected, saved)
        return [] if same_value(expected, actual) else [
            f"{path}: expected {show(expected)}, got {show(actual)}"]
    if is_operator(expected):
        op, arg = next(iter(expected.items()))
        if op == "$type":
            if arg not in _TYPES:
                raise CorpusError(f"{path}: unknown $type {arg!r}")
            return [] if _TYPES[arg](actual) else [f"{path}: expected a {arg}, got {show(actual)}"]
        if op == "$keys":
            if isinstance(actual, dict) and list(actual) == arg:
                return []
            got = list(actual) if isinstance(actual, dict) else show(actual)
            return [f"{path}: expected exactly the keys {arg}, got {got}"]
        if op in _COMPARE or op == "$ne":
            bound = resolve(arg, saved)
            if op == "$ne":
                ok = not same_value(actual, bound)
            else:
                ok = (_TYPES["integer"](actual) and _TYPES["integer"](bound)
                      and _COMPARE[op](actual, bound))
            return [] if ok else [f"{path}: expected {op[1:]} {show(bound)}, got {show(actual)}"]
        raise CorpusError(f"{path}: unknown marker {op!r}")
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected an object, got {show(actual)}"]
        problems = []
        for k, v in expected.items():
            problems += match(v, actual.get(k, _MISSING), saved, f"{path}.{k}")
        return problems
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return [f"{path}: expected an array, got {show(actual)}"]
        if len(expected) != len(actual):
            return [f"{path}: expected {len(expected)} elements, got {len(actual)}"]
        problems = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            problems += match(e, a, saved, f"{path}[{i}]")
        return problems
    return [] if same_value(expected, actual) else [
        f"{path}: expected {show(expected)}, got {show(actual)}"]


def field_at(reply, dotted):
    value = reply
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return _MISSING
        value = value[part]
    return value


def show(value):
    if value is _MISSING:
        return "(absent)"
    return json.dumps(value, ensure_ascii=False)


# --- the daemon and its connections -----------------------------------------

class LineReader:
    """Reply lines from chunks; a subclass says how a chunk arrives."""

    buf = b""

    def recv_chunk(self, deadline):
        raise NotImplementedError

    def read_line(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            chunk = self.recv_chunk(deadline)
            if not chunk:
                raise EOFError("the daemon closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line


class Connection(LineReader):
    """One client connection: request lines out, reply lines in."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(REPLY_TIMEOUT_S)
        self.sock.connect(str(path))
        self.buf = b""

    def send_line(self, data: bytes):
        self.sock.sendall(data + b"\n")

    def recv_chunk(self, deadline):
        self.sock.settimeout(max(0.001, deadline - time.monotonic()))
        return self.sock.recv(65536)

    def close(self):
        self.sock.close()


# Copies stdin to the socket and the socket to stdout, as whoever runs it.
_RELAY = r"""
import os, socket, sys, threading
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
def up():
    while True:
        data = os.read(0, 65536)
        if not data:
            break
        s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=up, daemon=True).start()
while True:
    data = s.recv(65536)
    if not data:
        break
    os.write(1, data)
"""


class PeerConnection(LineReader):
    """A connection made by another user: a relay process under setpriv
    (uid nobody; the writer group for level "write"), so cbd sees that
    user's credentials and grants that level."""

    def __init__(self, path, level):
        if os.geteuid() != 0:
            raise CorpusError("a case with 'connect' steps needs root (setpriv)")
        groups = [f"--groups={WRITER_GID}"] if level == "write" else ["--clear-groups"]
        self.proc = subprocess.Popen(
            ["setpriv", f"--reuid={PEER_UID}", f"--regid={PEER_UID}", *groups,
             sys.executable, "-c", _RELAY, str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""

    def send_line(self, data: bytes):
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def recv_chunk(self, deadline):
        fd = self.proc.stdout.fileno()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise socket.timeout("no reply line")
        return os.read(fd, 65536)

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class TestClock:
    """The file cbd --test-clock reads; replaced atomically so that the
    daemon never reads a half-written number."""

    def __init__(self, path):
        self.path = Path(path)
        self.now = CORPUS_EPOCH_MS
        self.write()

    def set(self, ms):
        self.now = ms
        self.write()

    def write(self):
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(f"{self.now}\n")
        os.rename(tmp, self.path)


class Backend:
    """Starts cbd the way one backend needs it; owns what that backend needs
    besides (the redis-server of a run)."""

    def __init__(self, name, cbd, workdir):
        self.name = name
        self.cbd = cbd
        self.workdir = Path(workdir)
        self.redis = None
        self.redis_sock = None

    def setup(self):
        if self.name != "redis":
            return
        self.redis_sock = self.workdir / "redis.sock"
        self.redis = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.redis_sock),
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.redis.poll() is not None:
                raise CorpusError(f"redis-server exited with {self.redis.returncode}")
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.connect(str(self.redis_sock))
                    return
            except OSError:
                time.sleep(0.02)
        raise CorpusError("redis-server did not start")

    def teardown(self):
        if self.redis is not None:
            self.redis.kill()
            self.redis.wait()
            self.redis = None

    def args(self, case_dir, case_number):
        if self.name == "durable":
            return ["--state-file", str(case_dir / "state.db"), "--sync", "always"]
        if self.name == "redis":
            # A prefix per case: cases never see each other's keys, and
            # nothing needs flushing between them.
            return ["--backend", "redis", "--redis", f"unix://{self.redis_sock}",
                    "--redis-prefix", f"conformance{case_number}:"]
        return []


class Daemon:
    def __init__(self, cbd, args, sock, log_path):
        self.sock = sock
        self.log_path = log_path
        with open(log_path, "wb") as err:
            env = {k: v for k, v in os.environ.items()
                   if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "CBD_SOCKET")}
            self.proc = subprocess.Popen([cbd, "--socket", str(sock), *args],
                                         stdout=subprocess.DEVNULL, stderr=err, env=env)
        self.wait_until_serving()

    def wait_until_serving(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CorpusError(f"cbd exited with {self.proc.returncode} before serving:\n"
                                  + self.log_tail())
            try:
                c = Connection(self.sock)
                try:
                    c.send_line(b'{"op":"ping"}')
                    if json.loads(c.read_line(START_TIMEOUT_S)).get("ok"):
                        return
                finally:
                    c.close()
            except (OSError, ValueError, EOFError):
                time.sleep(0.01)
        raise CorpusError("cbd did not answer a ping:\n" + self.log_tail())

    def log_tail(self, lines=15):
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --- running a case ---------------------------------------------------------

class StepFailure:
    def __init__(self, index, step, request, expected, actual, problems):
        self.index = index
        self.step = step
        self.request = request
        self.expected = expected
        self.actual = actual
        self.problems = problems


def run_case(case, backend, cbd, workdir, case_number):
    """Runs one case on a fresh daemon; returns the failing steps."""
    case_dir = Path(tempfile.mkdtemp(prefix="c", dir=workdir))
    clock = TestClock(case_dir / "clock")
    args = ["--test-clock", str(clock.path)] + backend.args(case_dir, case_number)
    daemon_opts = case.get("daemon", {})
    if "config" in daemon_opts:
        config_path = case_dir / "cbd.json"
        config_path.write_text(json.dumps(daemon_opts["config"]))
        args += ["--config", str(config_path)]
    args += daemon_opts.get("args", [])
    if any("connect" in step for step in case["steps"]):
        args += PEER_DAEMON_ARGS
        for d in (workdir, case_dir):  # let the relays reach the socket
            os.chmod(d, 0o755)
    daemon = Daemon(cbd, args, case_dir / "cbd.sock", case_dir / "cbd.log")
    connections = {}
    failures = []
    saved = {}
    try:
        connections["main"] = Connection(daemon.sock)
        for index, step in enumerate(case["steps"]):
            try:
                failures += run_step(index, step, clock, connections, daemon, saved)
            except Unsaved as e:
                # What follows depends on a value an earlier failure did not
                # give: running on would only report that failure again.
                failures.append(StepFailure(index, step, None, None, None, [
                    f"not run: ${{{e}}} was not saved (an earlier step failed)"]))
                break
            if daemon.proc.poll() is not None:
                failures.append(StepFailure(index, step, None, None, None, [
                    f"cbd exited with {daemon.proc.returncode}:\n{daemon.log_tail()}"]))
                break
    finally:
        for c in connections.values():
            c.close()
        daemon.stop()
    shutil.rmtree(case_dir, ignore_errors=True)
    return failures


def run_step(index, step, clock, connections, daemon, saved):
    if "clock" in step:
        clock.set(step["clock"])
        return []
    if "advance" in step:
        clock.set(clock.now + step["advance"])
        return []
    if "connect" in step:
        connections[step["connect"]] = PeerConnection(daemon.sock, step["level"])
        return []
    if "watch" in step:
        conn = Connection(daemon.sock)
        connections[step["as"]] = conn
        request = resolve(step["watch"], saved)
        return exchange(index, step, conn, request, saved, REPLY_TIMEOUT_S)
    if "event" in step:
        if step["event"] not in connections:
            raise CorpusError(f"step {index}: no watch named {step['event']!r}")
        return exchange(index, step, connections[step["event"]], None, saved, EVENT_TIMEOUT_S)
    conn = connections.get(step.get("on", "main"))
    if conn is None:
        raise CorpusError(f"step {index}: no connection named {step['on']!r}")
    failures = []
    for _ in range(step.get("repeat", 1)):
        request = resolve(step["send"], saved) if isinstance(step["send"], dict) else \
            resolve_raw(step["send"], saved)
        failures += exchange(index, step, conn, request, saved, REPLY_TIMEOUT_S)
    return failures


def exchange(index, step, conn, request, saved, timeout):
    """Sends `request` (unless None: then just reads the next line), checks
    the reply against the step's expectation, saves what the step saves."""
    if request is not None:
        line = request.encode() if isinstance(request, str) else \
            json.dumps(request, separators=(",", ":"), ensure_ascii=False).encode()
        conn.send_line(line)
    expected = step.get("expect")
    try:
        raw = conn.read_line(timeout)
    except (socket.timeout, EOFError, OSError) as e:
        what = "no event" if request is None else "no reply"
        return [StepFailure(index, step, request, expected, None, [f"{what}: {e}"])]
    try:
        actual = json.loads(raw)
    except ValueError:
        return [StepFailure(index, step, request, expected, raw.decode(errors="replace"),
                            ["the reply is not JSON"])]
    problems = match(expected, actual, saved) if expected is not None else []
    for name, dotted in step.get("save", {}).items():
        value = field_at(actual, dotted)
        if value is _MISSING:
            problems.append(f"save {name}: the reply has no {dotted}")
        else:
            saved[name] = value
    if problems:
        return [StepFailure(index, step, request, expected, actual, problems)]
    return []


def report_failure(case, failures, out):
    print(f"FAIL {case['id']}", file=out)
    print(f"  rule: {case['rule']}", file=out)
    for f in failures:
        action = next(a for a in STEP_ACTIONS if a in f.step)
        print(f"  step {f.index} ({action})" + (f": {f.step['note']}" if "note" in f.step else ""),
              file=out)
        if f.request is not None:
            if isinstance(f.request, str):
                # Escaped, so that control bytes in a raw line stay visible.
                print(f"    raw line: {json.dumps(f.request, ensure_ascii=False)}", file=out)
            else:
                print(f"    request:  {json.dumps(f.request, ensure_ascii=False)}", file=out)
        if f.expected is not None:
            print(f"    expected: {json.dumps(f.expected, ensure_ascii=False)}", file=out)
        if f.actual is not None:
            print(f"    actual:   {show(f.actual) if not isinstance(f.actual, str) else f.actual}",
                  file=out)
        for p in f.problems:
            print(f"    - {p}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, default="memory")
    parser.add_argument("-k", dest="select", default="",
                        help="run only cases whose topic/name contains this")
    parser.add_argument("--list", action="store_true", help="list the cases and their rules")
    parser.add_argument("--cases", default=str(CASES_DIR), help="the corpus directory")
    opts = parser.parse_args(argv)

    try:
        cases = [c for c in load_corpus(opts.cases) if opts.select in c["id"]]
    except CorpusError as e:
        print(f"corpus error: {e}", file=sys.stderr)
        return 2
    if opts.list:
        for c in cases:
            print(f"{c['id']}: {c['rule']}")
        return 0
    if not cases:
        print(f"no case matches {opts.select!r}", file=sys.stderr)
        return 2

    build = Path(os.environ.get("CBD_BUILD_DIR", ROOT / "build"))
    cbd = os.environ.get("CBD_BIN", str(build / "daemon" / "cbd"))
    if not os.access(cbd, os.X_OK):
        print(f"cbd not found at {cbd} (set CBD_BUILD_DIR)", file=sys.stderr)
        return 2

    # Socket paths hold at most 107 bytes: a short directory under /tmp.
    workdir = tempfile.mkdtemp(prefix="cbd-conf-", dir="/tmp")
    backend = Backend(opts.backend, cbd, workdir)
    started = time.monotonic()
    failed = []
    try:
        backend.setup()
        for number, case in enumerate(cases):
            try:
                failures = run_case(case, backend, cbd, workdir, number)
            except CorpusError as e:
                print(f"ERROR {case['id']}: {e}", file=sys.stderr)
                return 2
            if failures:
                failed.append(case["id"])
                report_failure(case, failures, sys.stdout)
    finally:
        backend.teardown()
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(f"\nconformance on {opts.backend}: {len(cases) - len(failed)} of {len(cases)} cases "
          f"pass ({elapsed:.1f} s)")
    for name in failed:
        print(f"  failed: {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
