"""Trip rules end to end (issue 16): what the corpus cannot show — the
window and backoff surviving a restart with a state file, cbctl's
configure flags, `cbctl run` reporting durationMs and `ignored`, cbctl
policy showing the new fields, and per-circuit metrics with the rates."""

import json
import os
import signal
import subprocess
import time

from conftest import CBCTL, Client, cbctl


RATE = {"tripRule": "rate", "windowType": "count", "windowSize": 10, "minimumCalls": 10,
        "failureRateThreshold": 50}


def report(c, key, outcome, **extra):
    reply = c.call({"op": "report", "key": key, "outcome": outcome, **extra})
    assert reply["ok"], reply
    return reply


def test_window_survives_a_restart(start_cbd, workdir):
    state = workdir / "state.db"
    d = start_cbd("--state-file", str(state), "--sync", "always")
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "api", "policy": RATE})["ok"]
    for _ in range(4):
        report(c, "api", "failure")
    for _ in range(5):
        report(c, "api", "success")
    c.close()
    assert d.stop() == 0

    d2 = start_cbd("--state-file", str(state), "--sync", "always")
    c = Client(d2.sock)
    window = c.call({"op": "acquire", "key": "api"})["window"]
    assert window == {"calls": 9, "failures": 4, "slow": 0, "failureRate": 44, "slowRate": 0}
    # The tenth call is judged with the nine from before the restart.
    opened = report(c, "api", "failure")
    assert opened["transition"]["cause"] == "failure-rate"


def test_layers_that_make_a_count_window_too_long_are_refused_at_start(start_cbd, workdir):
    # Alone, windowSize 20000 is a valid time window; on the built-in count
    # window it is not, and a start (or --check-config) says so.
    d = start_cbd("--trip-rule", "rate", "--window-size", "20000", wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert "windowSize" in d.log() and "count window" in d.log()
    conf = workdir / "cbd.json"
    conf.write_text(json.dumps({"policies": [{"prefix": "p/", "windowSize": 20000}]}))
    d = start_cbd("--config", str(conf), wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert 'prefix rule for "p/"' in d.log()


def test_a_reload_cannot_make_a_count_window_longer_than_its_bound(start_cbd, workdir):
    # A key's 20000-call override was a time window until a reload made the
    # default window a count one: the window stays at 10000 calls, and the
    # state file that holds it loads again.
    conf = workdir / "cbd.json"
    conf.write_text(json.dumps({"defaults": {"windowType": "time"}}))
    state = workdir / "state.db"
    d = start_cbd("--config", str(conf), "--state-file", str(state), "--sync", "always")
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "k", "policy": {
        "tripRule": "rate", "windowSize": 20000, "minimumCalls": 5}})["ok"]
    conf.write_text(json.dumps({"defaults": {"windowType": "count"}}))
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reloaded" not in d.log():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    for _ in range(3):
        report(c, "k", "failure")
    c.close()
    assert d.stop() == 0
    d2 = start_cbd("--config", str(conf), "--state-file", str(state), "--sync", "always")
    c = Client(d2.sock)
    window = c.call({"op": "acquire", "key": "k"})["window"]
    assert window["calls"] == 3 and window["failures"] == 3


def test_time_window_and_run_survive_a_restart(start_cbd, workdir):
    state = workdir / "state.db"
    d = start_cbd("--state-file", str(state), "--sync", "always")
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "slow", "policy": {
        "tripRule": "rate", "windowType": "time", "windowSize": 3_600_000,
        "slowCallDurationMs": 100, "minimumCalls": 50}})["ok"]
    report(c, "slow", "success", durationMs=500)
    report(c, "slow", "failure", durationMs=5)
    assert c.call({"op": "configure", "key": "row", "policy": {
        "tripRule": "consecutive", "failureThreshold": 3}})["ok"]
    report(c, "row", "failure")
    report(c, "row", "failure")
    c.close()
    assert d.stop() == 0

    d2 = start_cbd("--state-file", str(state), "--sync", "batch")
    c = Client(d2.sock)
    assert c.call({"op": "acquire", "key": "slow"})["window"] == {
        "calls": 2, "failures": 1, "slow": 1, "failureRate": 50, "slowRate": 50}
    # Two failures in a row before the restart, the third after: it opens.
    assert report(c, "row", "failure")["transition"]["cause"] == "consecutive"


def set_clock(path, ms):
    """The file `cbd --test-clock` reads, replaced at once."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{ms}\n")
    os.rename(tmp, path)


def test_backoff_survives_a_restart(start_cbd, workdir):
    # On a test clock: a restart (slow under a sanitizer) takes no time.
    state, clock = workdir / "state.db", workdir / "clock"
    start = 1_000_000_000_000
    set_clock(clock, start)
    args = ("--state-file", str(state), "--sync", "always", "--test-clock", str(clock))
    d = start_cbd(*args)
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "api", "policy": {
        "failureThreshold": 1, "resetTimeoutMs": 100, "resetTimeoutMaxMs": 3_600_000}})["ok"]
    report(c, "api", "failure")
    set_clock(clock, start + 150)
    probe = c.call({"op": "acquire", "key": "api"})
    assert probe["allowed"] and probe["permit"]
    report(c, "api", "failure", permit=probe["permit"])
    c.close()
    assert d.stop() == 0

    d2 = start_cbd(*args)
    denied = Client(d2.sock).call({"op": "acquire", "key": "api"})
    # Re-opened once: 200 ms, not 100, even after the restart.
    assert denied["allowed"] is False and denied["retryAfterMs"] == 200, denied


def test_cbctl_configure_and_policy_know_every_field(cbd):
    r = cbctl("configure", "api", "--trip-rule", "rate", "--window-type", "time",
              "--window-size", "60000", "--minimum-calls", "20", "--failure-rate-threshold", "25",
              "--slow-call-duration-ms", "800", "--slow-call-rate-threshold", "60",
              "--reset-timeout-max-ms", "600000", "--mode", "observe", sock=cbd.sock)
    assert r.returncode == 0, r.stderr
    r = cbctl("policy", "api", sock=cbd.sock)
    assert r.returncode == 0, r.stderr
    for text in ("tripRule", "rate", "windowType", "time", "60000", "minimumCalls",
                 "failureRateThreshold", "slowCallDurationMs", "800", "resetTimeoutMaxMs",
                 "600000", "mode", "observe"):
        assert text in r.stdout, (text, r.stdout)
    # Bad values are refused by cbctl itself, naming the field.
    r = cbctl("configure", "api", "--trip-rule", "ratio", sock=cbd.sock)
    assert r.returncode != 0 and "tripRule" in r.stderr
    r = cbctl("configure", "api", "--failure-rate-threshold", "101", sock=cbd.sock)
    assert r.returncode != 0 and "failureRateThreshold" in r.stderr
    # A combination the daemon refuses: the message names the field.
    r = cbctl("configure", "api", "--reset-timeout-ms", "1000", "--reset-timeout-max-ms", "10",
              sock=cbd.sock)
    assert r.returncode != 0 and "resetTimeoutMaxMs" in (r.stderr + r.stdout)


def test_cbd_refuses_flags_that_cannot_hold_together(start_cbd, workdir):
    d = start_cbd("--reset-timeout-ms", "1000", "--reset-timeout-max-ms", "10", wait=False)
    assert d.proc.wait(timeout=30) != 0
    assert "resetTimeoutMaxMs" in d.log()
    d = start_cbd("--trip-rule", "sometimes", wait=False)
    assert d.proc.wait(timeout=30) != 0
    assert "tripRule" in d.log()


def test_cbctl_run_reports_duration(start_cbd):
    d = start_cbd()
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "job", "policy": {
        "tripRule": "rate", "windowSize": 1, "slowCallDurationMs": 200,
        "slowCallRateThreshold": 100}})["ok"]
    r = cbctl("run", "job", "--", "sleep", "0.3", sock=d.sock)
    assert r.returncode == 0, r.stderr
    # One slow success fills the window of one: 100% slow opens the circuit.
    got = c.call({"op": "get", "key": "job"})
    assert got["snapshot"]["state"] == "open", got
    assert got["snapshot"]["successCount"] == 1


def test_cbctl_run_interrupted_reports_ignored(start_cbd):
    d = start_cbd()
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "job", "policy": {"failureThreshold": 1}})["ok"]
    proc = subprocess.Popen([CBCTL, "--socket", d.sock, "run", "job", "--", "sleep", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=20)
    got = c.call({"op": "get", "key": "job"})
    # Neither a failure (the circuit would be open) nor a success.
    assert got["snapshot"] == {**got["snapshot"], "state": "closed", "failureCount": 0,
                               "successCount": 0}


def test_cbctl_run_whose_command_dies_of_sigint_reports_ignored(start_cbd):
    # Ctrl-C at a terminal reaches the foreground group, CMD's, not cbctl.
    d = start_cbd()
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "job", "policy": {"failureThreshold": 1}})["ok"]
    r = cbctl("run", "job", "--", "sh", "-c", "kill -INT $$", sock=d.sock)
    assert r.returncode == 130, r.stderr
    got = c.call({"op": "get", "key": "job"})
    assert got["snapshot"] == {**got["snapshot"], "state": "closed", "failureCount": 0,
                               "successCount": 0}


def test_per_circuit_metrics_show_the_rates(start_cbd):
    # Per-circuit series exist on the memory backend only (docs/REDIS.md).
    d = start_cbd("--backend", "memory")
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "api", "policy": RATE})["ok"]
    report(c, "api", "failure")
    report(c, "api", "success")
    report(c, "plain", "failure")
    text = c.call({"op": "metrics", "perCircuit": True})["text"]
    assert 'cbd_circuit_failure_rate{key="api"} 50' in text
    assert 'cbd_circuit_slow_call_rate{key="api"} 0' in text
    assert 'cbd_circuit_failure_rate{key="plain"}' not in text


def test_bad_trip_rule_input_keeps_the_daemon_up(cbd):
    c = Client(cbd.sock)
    for bad in ({"op": "report", "key": "a", "outcome": "ignored", "durationMs": 1e3},
                {"op": "report", "key": "a", "outcome": "meh"},
                {"op": "configure", "key": "a", "policy": {"mode": ["observe"]}},
                {"op": "configure", "key": "a", "policy": {"windowSize": 0}}):
        reply = c.call(bad)
        assert reply["ok"] is False and reply["error"]["code"] == "invalid_request", (bad, reply)
    assert c.call({"op": "ping"})["ok"]


def test_cbctl_report_takes_ignored_and_a_duration(start_cbd):
    d = start_cbd()
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "api", "policy": {
        "tripRule": "rate", "windowSize": 2, "slowCallDurationMs": 100}})["ok"]
    r = cbctl("report", "api", "success", "--duration-ms", "150", sock=d.sock)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["window"]["slow"] == 1
    r = cbctl("report", "api", "ignored", sock=d.sock)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["window"]["calls"] == 1
    r = cbctl("report", "api", "success", "--duration-ms", "86400001", sock=d.sock)
    assert r.returncode != 0


def test_a_schema_1_state_file_gains_the_rule_column(start_cbd, workdir):
    """A state file written before trip rules (schema 1) is read as it is and
    upgraded in place: its circuits load, and trip-rule state is kept from
    then on."""
    import sqlite3

    state = workdir / "state.db"
    db = sqlite3.connect(state)
    db.executescript("""
        CREATE TABLE circuits (key TEXT PRIMARY KEY NOT NULL, state TEXT, failure_count INTEGER,
            success_count INTEGER, last_failure_time INTEGER, last_state_change INTEGER,
            generation INTEGER, pin_state TEXT, pin_until INTEGER, pin_reason TEXT,
            pin_uid INTEGER, pin_pid INTEGER, policy TEXT) WITHOUT ROWID;
        CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO meta VALUES ('last_generation', 7);
        INSERT INTO circuits VALUES ('old', 'closed', 2, 1, 5, 4, 7, NULL, NULL, NULL, NULL, NULL,
                                     '{"tripRule":"consecutive","failureThreshold":4}');
        PRAGMA application_id = 1667392561;
        PRAGMA user_version = 1;
    """)
    db.commit()
    db.close()

    d = start_cbd("--state-file", str(state), "--sync", "always")
    c = Client(d.sock)
    assert c.call({"op": "get", "key": "old"})["snapshot"]["failureCount"] == 2
    assert c.call({"op": "policy", "key": "old"})["policy"]["tripRule"] == "consecutive"
    report(c, "old", "failure")
    c.close()
    assert d.stop() == 0

    db = sqlite3.connect(state)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    rule = db.execute("SELECT rule FROM circuits WHERE key = 'old'").fetchone()[0]
    db.close()
    assert json.loads(rule) == {"run": 1}


def test_a_bad_rule_column_is_refused_at_start(start_cbd, workdir):
    state = workdir / "state.db"
    d = start_cbd("--state-file", str(state), "--sync", "always")
    c = Client(d.sock)
    assert c.call({"op": "configure", "key": "k", "policy": {"tripRule": "consecutive"}})["ok"]
    report(c, "k", "failure")
    c.close()
    assert d.stop() == 0
    import sqlite3

    db = sqlite3.connect(state)
    db.execute("""UPDATE circuits SET rule = '{"run":-3}' WHERE key = 'k'""")
    db.commit()
    db.close()
    d2 = start_cbd("--state-file", str(state), wait=False)
    assert d2.proc.wait(timeout=30) != 0
    assert "trip-rule state" in d2.log()
