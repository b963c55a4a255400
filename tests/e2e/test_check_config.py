"""`cbd --check-config`: the flags and --config read as a start reads them,
the effective defaults and prefix rules printed, or the first error; exit 0
or 1; no socket and no state file touched. And the system unit runs it before
it sends SIGHUP, so a reload refuses a bad file."""

import json
import re
import shlex
import subprocess

from conftest import BUILD, CBD, cbctl


def check(*args, env=None):
    return subprocess.run([CBD, "--check-config", *args], capture_output=True, text=True,
                          timeout=30, env=env)


def write(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return path


def test_a_good_file_prints_the_effective_defaults_and_rules(workdir):
    config = write(workdir / "cbd.json", {
        "defaults": {"failureThreshold": 7, "resetTimeoutMs": 2000},
        "policies": [{"prefix": "pay/", "halfOpenMax": 3},
                     {"prefix": "pay/eu/", "resetTimeoutMs": 9000}]})
    r = check("--config", str(config), "--failure-threshold", "9")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"config file: {config}" in lines
    # The flag beats the file, and the probe lease and the backoff cap follow
    # the reset timeout. All fourteen policy fields, in the policy table's order.
    assert ('defaults: {"failureThreshold":9,"resetTimeoutMs":2000,"halfOpenMax":1,'
            '"successThreshold":1,"probeLeaseMs":2000,"tripRule":"count","windowType":"count",'
            '"windowSize":100,"minimumCalls":100,"failureRateThreshold":50,'
            '"slowCallDurationMs":0,"slowCallRateThreshold":100,"resetTimeoutMaxMs":2000,'
            '"mode":"enforce"}') in lines
    assert "prefix rules: 2" in lines
    assert ('  "pay/": {"failureThreshold":9,"resetTimeoutMs":2000,"halfOpenMax":3,'
            '"successThreshold":1,"probeLeaseMs":2000,"tripRule":"count","windowType":"count",'
            '"windowSize":100,"minimumCalls":100,"failureRateThreshold":50,'
            '"slowCallDurationMs":0,"slowCallRateThreshold":100,"resetTimeoutMaxMs":2000,'
            '"mode":"enforce"}') in lines
    # The longest prefix wins alone: pay/eu/ does not inherit pay/'s halfOpenMax.
    assert ('  "pay/eu/": {"failureThreshold":9,"resetTimeoutMs":9000,"halfOpenMax":1,'
            '"successThreshold":1,"probeLeaseMs":9000,"tripRule":"count","windowType":"count",'
            '"windowSize":100,"minimumCalls":100,"failureRateThreshold":50,'
            '"slowCallDurationMs":0,"slowCallRateThreshold":100,"resetTimeoutMaxMs":9000,'
            '"mode":"enforce"}') in lines
    assert lines[-1] == "configuration OK"
    assert r.stderr == ""


def test_what_check_config_prints_is_what_the_daemon_then_uses(workdir, start_cbd):
    config = write(workdir / "cbd.json", {"policies": [{"prefix": "a/", "failureThreshold": 2}]})
    r = check("--config", str(config))
    assert r.returncode == 0
    d = start_cbd("--config", str(config))
    policy = json.loads(cbctl("policy", "a/x", sock=d.sock).stdout)
    printed = json.loads(r.stdout.split('"a/": ', 1)[1].splitlines()[0])
    assert policy["policy"] == printed


def test_no_file_means_the_built_in_defaults():
    r = check()
    assert r.returncode == 0
    assert "config file: none" in r.stdout
    assert "prefix rules: 0" in r.stdout


def test_a_bad_file_is_the_first_error_with_its_place_and_exit_1(workdir):
    config = write(workdir / "cbd.json", {"policies": [{"prefix": "ok/"},
                                                        {"prefix": "x/", "failureThreshold": 0}]})
    r = check("--config", str(config))
    assert r.returncode == 1
    assert r.stdout == ""
    assert str(config) in r.stderr
    assert "policies[1]" in r.stderr and "failureThreshold" in r.stderr


def test_unreadable_and_malformed_files_exit_1(workdir):
    r = check("--config", str(workdir / "missing.json"))
    assert r.returncode == 1 and "missing.json" in r.stderr
    r = check("--config", str(write(workdir / "broken.json", '{"defaults": [1,')))
    assert r.returncode == 1 and "not valid JSON" in r.stderr


def test_an_unknown_group_exits_1():
    r = check("--admin-group", "no-such-group-cbd-test")
    assert r.returncode == 1
    assert "admin group" in r.stderr


def test_it_touches_no_socket_and_no_state_file(workdir):
    sock = workdir / "cbd.sock"
    state = workdir / "state.db"
    r = check("--socket", str(sock), "--state-file", str(state), "--sync", "always")
    assert r.returncode == 0, r.stderr
    assert not sock.exists()
    assert not state.exists()
    # Nor Redis: an address nothing listens on is not dialled.
    r = check("--backend", "redis", "--redis", f"unix://{workdir}/no-redis.sock")
    assert r.returncode == 0, r.stderr


def test_the_system_unit_checks_before_it_signals(workdir):
    unit = (BUILD / "systemd" / "verify" / "cbd.service").read_text()
    reloads = re.findall(r"^ExecReload=(.*)$", unit, re.M)
    assert len(reloads) == 2 and reloads[1] == "/bin/kill -HUP $MAINPID", reloads
    assert "--check-config" in reloads[0]
    start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
    # The check gets the same flags as the start, so it reads what a start reads.
    assert reloads[0].replace(" --check-config", "") == start
    # Run as systemd would (%S and $CBD_OPTIONS filled in) on a bad file: refused.
    bad = write(workdir / "bad.json", {"defaults": {"nope": 1}})
    argv = [a.replace("%S", str(workdir)) for a in shlex.split(reloads[0])]
    argv = [a for a in argv if a != "$CBD_OPTIONS"] + ["--config", str(bad)]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "nope" in r.stderr
    assert not (workdir / "cbd").exists()


def test_the_shipped_files_are_valid_and_the_man_page_shows_the_example():
    from conftest import ROOT

    # /etc/cbd/cbd.json as the package ships it.
    assert check("--config", str(ROOT / "debian" / "cbd.json")).returncode == 0
    example = ROOT / "debian" / "examples" / "cbd.json"
    # Its groups are examples too: the flags (which beat the file) stand in
    # for groups this machine may not have.
    r = check("--config", str(example), "--writer-group", "0", "--admin-group", "0")
    assert r.returncode == 0, r.stderr
    assert "prefix rules: 2" in r.stdout
    page = (ROOT / "docs" / "man" / "cbd.json.5.scd").read_text()
    shown = page.split("# EXAMPLE\n\n```\n", 1)[1].split("```", 1)[0]
    assert shown == example.read_text(), "cbd.json(5)'s EXAMPLE differs from debian/examples/cbd.json"
