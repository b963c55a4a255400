"""cbctl end to end: stdout, stderr and exit code of every command."""

import json
import os
import re
import time

from conftest import Client, cbctl, run_on_tty


def snapshot_keys():
    return ["state", "failureCount", "successCount", "lastFailureTime", "lastStateChange"]


def test_get_prints_default_snapshot_as_one_json_line(cbd):
    r = cbctl("get", "api", sock=cbd.sock)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.count("\n") == 1
    snap = json.loads(r.stdout)
    assert list(snap) == snapshot_keys()
    assert snap["state"] == "closed"
    assert snap["failureCount"] == 0 and snap["successCount"] == 0
    assert snap["lastFailureTime"] == 0 and snap["lastStateChange"] > 0


def test_failure_success_transition_reset(cbd):
    r = cbctl("failure", "api", sock=cbd.sock)
    assert r.returncode == 0
    snap = json.loads(r.stdout)
    assert snap["failureCount"] == 1 and snap["lastFailureTime"] > 0

    r = cbctl("success", "api", sock=cbd.sock)
    assert json.loads(r.stdout)["successCount"] == 1

    r = cbctl("transition", "api", "open", sock=cbd.sock)
    assert r.returncode == 0
    snap = json.loads(r.stdout)
    assert snap["state"] == "open" and snap["failureCount"] == 1 and snap["successCount"] == 1

    r = cbctl("transition", "api", "half-open", sock=cbd.sock)
    snap = json.loads(r.stdout)
    assert snap["state"] == "half-open" and snap["successCount"] == 0 and snap["failureCount"] == 1

    r = cbctl("transition", "api", "closed", sock=cbd.sock)
    snap = json.loads(r.stdout)
    assert (snap["state"], snap["failureCount"], snap["successCount"]) == ("closed", 0, 0)

    cbctl("failure", "api", sock=cbd.sock)
    r = cbctl("reset", "api", sock=cbd.sock)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert json.loads(cbctl("get", "api", sock=cbd.sock).stdout)["failureCount"] == 0


def test_field_prints_bare_values(cbd):
    cbctl("transition", "api", "open", sock=cbd.sock)
    r = cbctl("get", "api", "--field", "state", sock=cbd.sock)
    assert (r.returncode, r.stdout) == (0, "open\n")
    r = cbctl("failure", "api", "--field", "failureCount", sock=cbd.sock)
    assert r.stdout == "1\n"
    r = cbctl("get", "api", "--field", "nonsense", sock=cbd.sock)
    assert r.returncode == 2 and r.stdout == ""


def utc_time(epoch_ms):
    """An epoch time as cbctl prints it under TZ=UTC (run_on_tty's)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_ms // 1000)) + f".{epoch_ms % 1000:03d}"


def test_get_shows_a_pin_on_a_terminal(cbd):
    r = cbctl("force", "db", "open", "--ttl", "5m", "--reason", "db migration", sock=cbd.sock)
    forced = json.loads(r.stdout)["forced"]
    lines = run_on_tty(["--socket", cbd.sock, "get", "db"]).splitlines()
    assert len(lines) == 2, lines
    assert json.loads(lines[0])["state"] == "open"
    # Rounded up to the second: "5m" unless a second went by since the force.
    assert re.fullmatch(
        rf'forced: open until {re.escape(utc_time(forced["until"]))} \(in (5m|4m 5\ds)\) '
        rf'by uid {os.geteuid()} pid {forced["by"]["pid"]}: "db migration"', lines[1]), lines[1]
    # Every command that prints a snapshot shows the pin under it.
    lines = run_on_tty(["--socket", cbd.sock, "failure", "db"]).splitlines()
    assert lines[1].startswith("forced: open until ")

    # Without a TTL or a reason.
    cbctl("force", "cache", "closed", sock=cbd.sock)
    lines = run_on_tty(["--socket", cbd.sock, "get", "cache"]).splitlines()
    assert re.fullmatch(rf"forced: closed until unforced by uid {os.geteuid()} pid \d+", lines[1])

    # Not pinned: the snapshot alone, as ever.
    assert len(run_on_tty(["--socket", cbd.sock, "get", "free"]).splitlines()) == 1
    # Not a terminal: the one JSON line scripts read, pin or not.
    r = cbctl("get", "db", sock=cbd.sock)
    assert r.stdout.count("\n") == 1 and list(json.loads(r.stdout)) == snapshot_keys()
    assert cbctl("get", "db", "--field", "state", sock=cbd.sock).stdout == "open\n"


POLICY_FIELDS = ["failureThreshold", "resetTimeoutMs", "halfOpenMax", "successThreshold",
                 "probeLeaseMs", "tripRule", "windowType", "windowSize", "minimumCalls",
                 "failureRateThreshold", "slowCallDurationMs", "slowCallRateThreshold",
                 "resetTimeoutMaxMs", "mode"]


def daemon_with_layers(start_cbd, workdir):
    """A cbd whose key "pay eu/api" takes its policy from all three layers."""
    config = workdir / "cbd.json"
    config.write_text(json.dumps({"policies": [{"prefix": "pay eu/", "failureThreshold": 9}]}))
    d = start_cbd("--config", str(config))
    r = cbctl("configure", "pay eu/api", "--reset-timeout-ms", "5000", "--mode", "observe",
              sock=d.sock)
    assert r.returncode == 0, r.stderr
    return d


def test_policy_prints_a_table_on_a_terminal(start_cbd, workdir):
    d = daemon_with_layers(start_cbd, workdir)
    lines = run_on_tty(["--socket", d.sock, "policy", "pay eu/api"]).splitlines()
    rows = [re.split(r"\s{2,}", line) for line in lines]
    assert rows[0] == ["FIELD", "VALUE", "SOURCE"]
    assert [row[0] for row in rows[1:]] == POLICY_FIELDS
    table = {row[0]: row[1:] for row in rows[1:]}
    assert table["failureThreshold"] == ["9", 'prefix "pay eu/"']
    assert table["resetTimeoutMs"] == ["5000", "key"]
    assert table["mode"] == ["observe", "key"]
    assert table["tripRule"] == ["count", "default"]
    # Columns line up.
    assert len({line.index(row[1]) for line, row in zip(lines, rows)}) == 1
    # --json: the reply even on a terminal.
    out = run_on_tty(["--socket", d.sock, "policy", "--json", "pay eu/api"])
    assert json.loads(out)["source"]["mode"] == "key"


def test_policy_is_the_reply_as_json_when_not_on_a_terminal(start_cbd, workdir):
    d = daemon_with_layers(start_cbd, workdir)
    r = cbctl("policy", "pay eu/api", sock=d.sock)
    assert r.returncode == 0 and r.stdout.count("\n") == 1
    reply = Client(d.sock).call({"op": "policy", "key": "pay eu/api"})
    del reply["ok"]
    # What scripts read: the reply without "ok", in the daemon's order.
    assert r.stdout == json.dumps(reply, separators=(",", ":")) + "\n"


def test_policy_field_prints_values_one_a_line(start_cbd, workdir):
    d = daemon_with_layers(start_cbd, workdir)
    r = cbctl("policy", "pay eu/api", "--field", "mode", sock=d.sock)
    assert (r.returncode, r.stdout, r.stderr) == (0, "observe\n", "")
    # Repeated or as a comma list, in the order asked; before the key too.
    r = cbctl("policy", "--field", "failureThreshold,mode", "--field", "resetTimeoutMs",
              "pay eu/api", sock=d.sock)
    assert (r.returncode, r.stdout) == (0, "9\nobserve\n5000\n")
    # The same on a terminal: values for scripts, never a table.
    out = run_on_tty(["--socket", d.sock, "policy", "pay eu/api", "--field", "tripRule"])
    assert out == "count\n"


def test_policy_unknown_field_is_a_usage_error_naming_the_fields(workdir):
    # Refused before any connection: no cbd is needed.
    for args in (["--field", "failurethreshold"], ["--field", "mode,nonsense"]):
        r = cbctl("policy", "api", *args, sock=workdir / "none.sock")
        assert r.returncode == 2 and r.stdout == ""
        assert all(name in r.stderr for name in POLICY_FIELDS), r.stderr
    r = cbctl("policy", "api", "--field", "mode", "--json", sock=workdir / "none.sock")
    assert r.returncode == 2 and "excludes" in r.stderr


def test_ping(cbd):
    r = cbctl("ping", sock=cbd.sock)
    assert r.returncode == 0
    reply = json.loads(r.stdout)
    assert reply["ok"] is True and reply["protocol"] == 10 and reply["version"]


def test_daemon_errors_exit_1_with_code_on_stderr(cbd):
    r = cbctl("transition", "api", "half_open", sock=cbd.sock)
    assert r.returncode == 1 and r.stdout == ""
    assert "invalid_state" in r.stderr
    # cbctl does not validate keys: the daemon does.
    for bad in ["", "x" * 1025, "a\x01b"]:
        r = cbctl("get", bad, sock=cbd.sock)
        assert r.returncode == 1, bad
        assert "invalid_key" in r.stderr


def test_usage_errors_exit_2(cbd):
    for args in [[], ["get"], ["frobnicate"], ["transition", "api"], ["--timeout", "x", "ping"],
                 ["get", "a", "b"]]:
        r = cbctl(*args, sock=cbd.sock)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stdout == ""
        assert r.stderr != ""


def test_help_documents_exit_codes():
    r = cbctl("--help")
    assert r.returncode == 0
    assert "Exit codes" in r.stdout and "unreachable" in r.stdout


def test_unreachable_exits_3_naming_the_socket(workdir):
    path = str(workdir / "nobody-home.sock")
    r = cbctl("get", "api", sock=path)
    assert r.returncode == 3
    assert path in r.stderr and r.stdout == ""


def test_timeout_exits_3(workdir):
    # A listener that never answers.
    import socket

    path = str(workdir / "silent.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    try:
        r = cbctl("--timeout", "300", "get", "api", sock=path)
        assert r.returncode == 3
        assert "timed out" in r.stderr and path in r.stderr
    finally:
        srv.close()


def test_cbd_socket_environment_variable(cbd):
    r = cbctl("failure", "from-env", env={"CBD_SOCKET": cbd.sock})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["failureCount"] == 1
    # --socket wins over the environment
    r = cbctl("ping", sock=cbd.sock, env={"CBD_SOCKET": "/nonexistent/x.sock"})
    assert r.returncode == 0


def test_pipe_sends_pipelined_and_prints_every_reply(cbd):
    lines = [json.dumps({"op": "failure", "key": "bulk", "id": i}) for i in range(500)]
    r = cbctl("pipe", sock=cbd.sock, input="\n".join(lines) + "\n\n")
    assert r.returncode == 0, r.stderr
    replies = [json.loads(l) for l in r.stdout.splitlines()]
    assert [x["id"] for x in replies] == list(range(500))
    assert replies[-1]["snapshot"]["failureCount"] == 500


def test_pipe_exits_1_when_any_reply_is_an_error(cbd):
    r = cbctl("pipe", sock=cbd.sock, input='{"op":"ping"}\n{"op":"nope"}\n{"op":"ping"}')
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert len(out) == 3  # the last line had no newline and was still sent
    assert json.loads(out[1])["error"]["code"] == "unknown_op"


def test_pipe_with_empty_input(cbd):
    r = cbctl("pipe", sock=cbd.sock, input="")
    assert (r.returncode, r.stdout) == (0, "")


def test_pipe_unreachable(workdir):
    r = cbctl("pipe", sock=str(workdir / "none.sock"), input='{"op":"ping"}\n')
    assert r.returncode == 3
