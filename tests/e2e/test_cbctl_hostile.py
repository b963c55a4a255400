"""cbctl against hostile or careless input (issue 14, items 5 and 6):
`cbctl run` ends everything it started, and numeric options are never
clamped into something nobody typed."""

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from conftest import CBCTL, cbctl

MAX_SAFE = 2**53 - 1


# --- cbctl run owns its process group ------------------------------------------

def marked_env():
    """An environment whose marker lets the test find every process the
    command started, wherever it was re-parented."""
    mark = uuid.uuid4().hex
    env = dict(os.environ)
    env.pop("CBD_SOCKET", None)
    env["CBCTL_TEST_MARK"] = mark
    return env, mark


def marked_processes(mark):
    """Live (not zombie) processes carrying `mark` in their environment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        state = stat.rsplit(")", 1)[1].split()[0]
        if f"CBCTL_TEST_MARK={mark}".encode() in environ.split(b"\0") and state != "Z":
            found.append((int(entry.name), cmdline))
    return found


def start_run(sock, env, *args):
    return subprocess.Popen([CBCTL, "--socket", sock, "run", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def wait_for_marked(mark, count, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(marked_processes(mark)) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"expected {count} marked processes, saw {marked_processes(mark)}")


def assert_all_ended(proc, mark, within):
    """cbctl has exited, its stdout pipe reaches EOF within `within` seconds
    (no survivor holds it), and no process of the command is alive."""
    try:
        out, err = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        survivors = marked_processes(mark)
        for pid, _ in survivors:
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.communicate()
        raise AssertionError(f"stdout still open; survivors: {survivors}")
    assert marked_processes(mark) == []
    return out.decode(), err.decode()


def test_timeout_ends_the_background_job_too(cbd):
    env, mark = marked_env()
    start = time.monotonic()
    p = start_run(cbd.sock, env, "k", "--timeout", "1s", "--", "sh", "-c", "sleep 30 & sleep 30")
    out, err = assert_all_ended(p, mark, within=10)
    assert p.returncode == 124
    assert "timed out after 1.0s" in err
    assert time.monotonic() - start < 5
    assert cbctl("get", "k", "--field", "failureCount", sock=cbd.sock).stdout == "1\n"


def test_sigterm_to_cbctl_ends_the_whole_group(cbd):
    env, mark = marked_env()
    p = start_run(cbd.sock, env, "k", "--", "sh", "-c", "sleep 30 & sleep 30")
    wait_for_marked(mark, 3)  # sh and both sleeps
    start = time.monotonic()
    p.send_signal(signal.SIGTERM)
    assert_all_ended(p, mark, within=10)
    assert p.returncode == 128 + signal.SIGTERM
    assert time.monotonic() - start < 3


def test_sigint_to_cbctl_kills_what_ignores_it_after_the_grace_period(cbd):
    # A non-interactive shell starts its background jobs with SIGINT
    # ignored: that sleep outlives the forwarded SIGINT and must be killed.
    env, mark = marked_env()
    p = start_run(cbd.sock, env, "k", "--kill-after", "1s", "--",
                  "sh", "-c", "sleep 30 & sleep 30")
    wait_for_marked(mark, 3)
    start = time.monotonic()
    p.send_signal(signal.SIGINT)
    assert_all_ended(p, mark, within=10)
    assert p.returncode != 0
    assert 0.9 <= time.monotonic() - start < 5


def test_a_group_that_ignores_sigterm_is_killed_after_kill_after(cbd):
    env, mark = marked_env()
    start = time.monotonic()
    p = start_run(cbd.sock, env, "k", "--timeout", "300ms", "--kill-after", "1s", "--",
                  "sh", "-c", "trap '' TERM; sleep 30 & sleep 30")
    out, err = assert_all_ended(p, mark, within=10)
    assert p.returncode == 124
    elapsed = time.monotonic() - start
    assert 1.2 <= elapsed < 5, elapsed


def test_the_default_grace_period_is_five_seconds(cbd):
    env, mark = marked_env()
    start = time.monotonic()
    p = start_run(cbd.sock, env, "k", "--timeout", "200ms", "--",
                  "sh", "-c", "trap '' TERM; sleep 30")
    assert_all_ended(p, mark, within=20)
    assert p.returncode == 124
    elapsed = time.monotonic() - start
    assert 5.1 <= elapsed < 12, elapsed


def test_the_command_runs_in_its_own_process_group(cbd):
    r = cbctl("run", "k", "--", "sh", "-c", "echo $$ $(ps -o pgid= -p $$)", sock=cbd.sock)
    assert r.returncode == 0
    pid, pgid = r.stdout.split()
    assert pid == pgid
    assert int(pgid) != os.getpgrp()


def test_a_normal_exit_is_unchanged(cbd):
    # Nothing is signalled when CMD ends by itself: its status is cbctl's.
    r = cbctl("run", "k", "--", "sh", "-c", "echo hi; exit 4", sock=cbd.sock)
    assert r.returncode == 4 and r.stdout == "hi\n"


@pytest.mark.parametrize("bad", ["0", "-1s", "soon", "1.5.2s"])
def test_bad_kill_after_is_a_usage_error(cbd, bad):
    r = cbctl("run", "k", "--kill-after", bad, "--", "true", sock=cbd.sock)
    assert r.returncode == 2 and "--kill-after" in r.stderr


# --- numbers are never clamped ------------------------------------------------

def state_of(sock, key):
    """The circuit's snapshot, generation, pin and policy, to show nothing
    reached cbd."""
    got = json.loads(cbctl("get", key, sock=sock).stdout)
    gen = cbctl("get", key, "--field", "generation", sock=sock).stdout
    policy = json.loads(cbctl("policy", key, sock=sock).stdout)
    return got, gen, policy["source"]


BAD_GENERATIONS = ["-1", "18446744073709551616", "99999999999999999999", "1.5",
                   str(MAX_SAFE + 1), "18446744073709551615", "abc", "+1", "0x10", "", " 1"]


@pytest.mark.parametrize("bad", BAD_GENERATIONS)
def test_report_generation_out_of_range_is_a_usage_error(cbd, bad):
    before = state_of(cbd.sock, "g")
    r = cbctl("report", "g", "failure", "--generation", bad, sock=cbd.sock)
    assert r.returncode == 2, r
    assert "--generation" in r.stderr
    assert r.stdout == ""
    assert state_of(cbd.sock, "g") == before


@pytest.mark.parametrize("bad", BAD_GENERATIONS)
def test_expect_generation_out_of_range_is_a_usage_error(cbd, bad):
    before = state_of(cbd.sock, "g")
    r = cbctl("transition", "g", "open", "--expect-generation", bad, sock=cbd.sock)
    assert r.returncode == 2, r
    assert "--expect-generation" in r.stderr
    assert state_of(cbd.sock, "g") == before


def test_generations_in_range_are_sent_as_typed(cbd):
    # transitions until the generation has two digits, so that reading it
    # with a leading zero as octal would name another generation
    to = "open"
    while int(cbctl("get", "g", "--field", "generation", sock=cbd.sock).stdout) < 10:
        assert cbctl("transition", "g", to, sock=cbd.sock).returncode == 0
        to = "closed" if to == "open" else "open"
    gen = cbctl("get", "g", "--field", "generation", sock=cbd.sock).stdout.strip()
    # the largest generation the protocol allows is accepted (and stale here)
    r = cbctl("report", "g", "failure", "--generation", str(MAX_SAFE), "--field", "stale",
              sock=cbd.sock)
    assert r.returncode == 0 and r.stdout == "true\n"
    # leading zeros are decimal, not octal: "010" is generation 10
    r = cbctl("transition", "g", to, "--expect-generation", "0" + gen, sock=cbd.sock)
    assert r.returncode == 0, r
    assert cbctl("get", "g", "--field", "state", sock=cbd.sock).stdout == to + "\n"


def test_report_generation_minus_one_is_no_longer_stale(cbd):
    r = cbctl("report", "g", "success", "--generation", "-1", sock=cbd.sock)
    assert r.returncode == 2 and "stale" not in r.stdout


@pytest.mark.parametrize("flag", ["--failure-threshold", "--reset-timeout-ms", "--half-open-max",
                                  "--success-threshold", "--probe-lease-ms"])
@pytest.mark.parametrize("bad", ["0", "-1", "1.5", str(MAX_SAFE + 1), "18446744073709551616",
                                 "ten", "0x10", "+1", ""])
def test_policy_values_out_of_range_are_usage_errors(cbd, flag, bad):
    before = state_of(cbd.sock, "p")
    r = cbctl("configure", "p", flag, bad, sock=cbd.sock)
    assert r.returncode == 2, r
    assert flag in r.stderr
    assert state_of(cbd.sock, "p") == before


def test_policy_value_at_the_maximum_is_accepted(cbd):
    r = cbctl("configure", "p", "--reset-timeout-ms", str(MAX_SAFE), sock=cbd.sock)
    assert r.returncode == 0, r
    policy = json.loads(cbctl("policy", "p", sock=cbd.sock).stdout)
    assert policy["policy"]["resetTimeoutMs"] == MAX_SAFE


@pytest.mark.parametrize("bad", ["-1", "0", "1.5", "3600001", "18446744073709551616", "5s"])
def test_global_timeout_out_of_range_is_a_usage_error(cbd, bad):
    r = cbctl("--timeout", bad, "ping", sock=cbd.sock)
    assert r.returncode == 2, r
    assert "--timeout" in r.stderr


@pytest.mark.parametrize("bad", ["-5m", "0", "0.4ms", "367d", "400d", "8785h", "1e3s"])
def test_ttl_out_of_range_is_a_usage_error(cbd, bad):
    before = state_of(cbd.sock, "t")
    r = cbctl("force", "t", "open", "--ttl", bad, sock=cbd.sock)
    assert r.returncode == 2, r
    assert "--ttl" in r.stderr
    assert state_of(cbd.sock, "t") == before


@pytest.mark.parametrize("bad", ["-1s", "0", "soon"])
def test_run_timeout_out_of_range_is_a_usage_error(cbd, workdir, bad):
    marker = workdir / "ran"
    r = cbctl("run", "k", "--timeout", bad, "--", "touch", str(marker), sock=cbd.sock)
    assert r.returncode == 2 and "--timeout" in r.stderr
    assert not marker.exists()


def test_usage_errors_come_before_any_connection(workdir):
    # With no cbd at all, a bad number is still exit 2 (usage), not 3
    # (unreachable): nothing was sent.
    sock = str(workdir / "nobody-here.sock")
    assert cbctl("report", "g", "failure", "--generation", "-1", sock=sock).returncode == 2
    assert cbctl("report", "g", "failure", "--generation", "1", sock=sock).returncode == 3


# --- a peer that is not cbd ----------------------------------------------------

class FakeCbd:
    """A Unix socket that answers every request line with `reply`."""

    def __init__(self, path, reply):
        import socket
        import threading

        self.path = str(path)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(8)
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading

        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn):
        with conn:
            f = conn.makefile("rb")
            for _ in f:
                conn.sendall(self.reply)

    def close(self):
        self.server.close()


# Before, each of these ended cbctl with an uncaught exception (abort, 134).
@pytest.mark.parametrize("args,reply", [
    (["get", "k"], b'{"ok":"yes"}\n'),
    (["stats"], b'{"ok":false,"error":"boom"}\n'),
    (["failure", "k"], b'{"ok":false,"error":{"code":7,"message":[]}}\n'),
], ids=["ok-not-bool", "error-not-object", "error-fields-of-the-wrong-type"])
def test_a_reply_cbd_would_never_send_is_one_line_and_exit_3(workdir, args, reply):
    fake = FakeCbd(workdir / "fake.sock", reply)
    try:
        r = cbctl(*args, sock=fake.path, timeout=10)
    finally:
        fake.close()
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert len(r.stderr.splitlines()) == 1 and fake.path in r.stderr, r.stderr
    assert "terminate" not in r.stderr and r.stdout == "", (r.stdout, r.stderr)


def test_a_pin_reason_reaches_the_terminal_quoted(workdir):
    from conftest import run_on_tty

    reply = (b'{"ok":true,"circuits":[{"key":"k","snapshot":{"state":"open","failureCount":0,'
             b'"successCount":0,"lastFailureTime":0,"lastStateChange":1},"generation":1,'
             b'"forced":{"state":"open","until":null,"reason":"\\u001b]0;owned\\u0007x",'
             b'"by":{"uid":0,"pid":1}}}],"next":null}\n')
    fake = FakeCbd(workdir / "fake.sock", reply)
    try:
        out = run_on_tty(["--socket", fake.path, "list"])
    finally:
        fake.close()
    assert "\x1b" not in out and "\x07" not in out, repr(out)
    assert '"\\u001b]0;owned\\u0007x"' in out, out
