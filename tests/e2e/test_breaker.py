"""The breaker policy end to end: acquire/report across processes, leases,
conditional transitions, force pins, configuration, and `cbctl run`."""

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import CBCTL, Client, cbctl, wait_for_socket

# Short timeouts; a long probe lease, so that a slow machine (the sanitizer
# run) never sees a lease run out between an acquire and its report.
FAST = ["--reset-timeout-ms", "200", "--failure-threshold", "3", "--probe-lease-ms", "10000"]


def trip(c, key, n=3):
    for _ in range(n):
        r = c.call({"op": "report", "key": key, "outcome": "failure"})
    return r


def test_reference_policy_behaviours(start_cbd):
    d = start_cbd(*FAST)
    c = Client(d.sock)
    # below the threshold: closed, calls allowed
    for _ in range(2):
        assert c.call({"op": "report", "key": "api", "outcome": "failure"})["snapshot"]["state"] == "closed"
    assert c.call({"op": "acquire", "key": "api"})["allowed"] is True
    # the threshold-th failure opens it
    r = c.call({"op": "report", "key": "api", "outcome": "failure"})
    assert r["snapshot"]["state"] == "open"
    assert r["transition"] == {"from": "closed", "to": "open", "cause": "threshold"}
    # open: denied with 0 < retryAfterMs <= resetTimeoutMs
    a = c.call({"op": "acquire", "key": "api"})
    assert a["allowed"] is False and 0 < a["retryAfterMs"] <= 200
    # another key is not affected
    assert c.call({"op": "acquire", "key": "other"})["allowed"] is True
    # after the timeout one probe goes through
    time.sleep(0.25)
    probe = c.call({"op": "acquire", "key": "api"})
    assert probe["allowed"] is True and probe["permit"]
    assert probe["transition"]["cause"] == "timeout"
    assert c.call({"op": "acquire", "key": "api"})["allowed"] is False
    # a failed probe re-opens
    r = c.call({"op": "report", "key": "api", "outcome": "failure",
                "generation": probe["generation"], "permit": probe["permit"]})
    assert r["snapshot"]["state"] == "open" and r["transition"]["cause"] == "probe-failure"
    # a successful probe closes
    time.sleep(0.25)
    probe = c.call({"op": "acquire", "key": "api"})
    r = c.call({"op": "report", "key": "api", "outcome": "success",
                "generation": probe["generation"], "permit": probe["permit"]})
    assert r["snapshot"]["state"] == "closed" and r["transition"]["cause"] == "probe-success"
    assert r["snapshot"]["failureCount"] == 0


def test_default_threshold_is_five(cbd):
    c = Client(cbd.sock)
    for i in range(4):
        assert c.call({"op": "report", "key": "d", "outcome": "failure"})["snapshot"]["state"] == "closed"
    assert c.call({"op": "report", "key": "d", "outcome": "failure"})["snapshot"]["state"] == "open"
    p = c.call({"op": "policy", "key": "d"})
    assert p["policy"] == {"failureThreshold": 5, "resetTimeoutMs": 30000, "halfOpenMax": 1,
                           "successThreshold": 1, "probeLeaseMs": 30000, "tripRule": "count",
                           "windowType": "count", "windowSize": 100, "minimumCalls": 100,
                           "failureRateThreshold": 50, "slowCallDurationMs": 0,
                           "slowCallRateThreshold": 100, "resetTimeoutMaxMs": 30000,
                           "mode": "enforce"}


def test_custom_threshold_applies(cbd):
    c = Client(cbd.sock)
    assert c.call({"op": "configure", "key": "k", "policy": {"failureThreshold": 2}})["ok"]
    c.call({"op": "report", "key": "k", "outcome": "failure"})
    assert c.call({"op": "report", "key": "k", "outcome": "failure"})["snapshot"]["state"] == "open"


@pytest.mark.parametrize("half_open_max", [1, 3])
def test_concurrent_acquirers_get_exactly_half_open_max_probes(start_cbd, half_open_max):
    d = start_cbd(*FAST, "--half-open-max", str(half_open_max))
    c = Client(d.sock)
    trip(c, "race")
    time.sleep(0.25)  # the reset timeout has passed

    clients = [Client(d.sock) for _ in range(10)]
    barrier = threading.Barrier(10)
    results = [None] * 10

    def go(i):
        barrier.wait()
        results[i] = clients[i].call({"op": "acquire", "key": "race"})

    threads = [threading.Thread(target=go, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowed = [r for r in results if r["allowed"]]
    assert len(allowed) == half_open_max
    assert len({r["permit"] for r in allowed}) == half_open_max
    # exactly one open -> half-open transition, whoever asked first
    assert sum(1 for r in results if "transition" in r) == 1
    assert len({r["generation"] for r in results}) == 1
    # On Redis the transition reaches the log through pub/sub, a moment
    # after the replies: wait for it, then count.
    deadline = time.monotonic() + 5
    while "open -> half-open (timeout)" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert d.log().count("open -> half-open (timeout)") == 1


def test_unreported_permit_expires_and_reopens(start_cbd):
    d = start_cbd("--reset-timeout-ms", "200", "--failure-threshold", "3", "--probe-lease-ms", "300")
    c = Client(d.sock)
    trip(c, "lease")
    time.sleep(0.25)
    probe = c.call({"op": "acquire", "key": "lease"})
    assert probe["allowed"]
    # nobody touches the circuit: the daemon's own timer notices
    deadline = time.monotonic() + 5
    while "lease-expired" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "half-open -> open (lease-expired)" in d.log()
    snap = c.call({"op": "get", "key": "lease"})
    assert snap["snapshot"]["state"] == "open" and snap["snapshot"]["failureCount"] == 4
    # the late report is stale
    late = c.call({"op": "report", "key": "lease", "outcome": "success",
                   "generation": probe["generation"], "permit": probe["permit"]})
    assert late["stale"] is True and late["snapshot"]["state"] == "open"


def test_stale_success_does_not_close(start_cbd):
    d = start_cbd(*FAST)
    c = Client(d.sock)
    before = c.call({"op": "acquire", "key": "s"})  # allowed while closed
    trip(c, "s")  # meanwhile, others trip it
    r = c.call({"op": "report", "key": "s", "outcome": "success", "generation": before["generation"]})
    assert r["stale"] is True
    assert r["snapshot"]["state"] == "open" and r["snapshot"]["successCount"] == 0


def test_half_open_report_without_permit(start_cbd):
    d = start_cbd(*FAST)
    c = Client(d.sock)
    trip(c, "p")
    time.sleep(0.25)
    c.call({"op": "acquire", "key": "p"})
    r = c.call({"op": "report", "key": "p", "outcome": "success", "id": 3})
    assert r["ok"] is False and r["id"] == 3
    assert r["error"]["code"] == "no_permit"
    assert r["snapshot"]["state"] == "half-open"


def test_two_conditional_transitions_one_wins(cbd):
    cbctl("get", "cond", sock=cbd.sock)
    procs = [subprocess.Popen([CBCTL, "--socket", cbd.sock, "transition", "cond", "open", "--expect", "closed"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=10) + (p.returncode,) for p in procs]
    codes = sorted(o[2] for o in outs)
    assert codes == [0, 1]
    loser = next(o for o in outs if o[2] == 1)
    assert "conflict" in loser[1]
    # expectGeneration over the raw protocol
    c = Client(cbd.sock)
    g = c.call({"op": "get", "key": "cond"})["generation"]
    assert c.call({"op": "transition", "key": "cond", "to": "closed", "expectGeneration": g + 1})["error"]["code"] == "conflict"
    assert c.call({"op": "transition", "key": "cond", "to": "closed", "expectGeneration": g})["ok"]


def test_force_with_ttl(start_cbd, workdir):
    os.chmod(workdir, 0o755)
    d = start_cbd(*FAST, "--socket-mode", "0666")
    c = Client(d.sock)
    # an unprivileged user pins it, so the audit line shows its uid
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        CBCTL, "--socket", d.sock, "force", "pin", "open", "--ttl", "1500ms",
                        "--reason", "db migration"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    pinned = json.loads(r.stdout)
    assert pinned["forced"]["state"] == "open" and pinned["forced"]["reason"] == "db migration"
    assert pinned["forced"]["by"]["uid"] == 65534 and pinned["forced"]["until"] > 0
    assert "audit: force key=pin state=open" in d.log() and "uid=65534" in d.log()

    time.sleep(0.25)  # past the reset timeout, but pinned
    assert c.call({"op": "acquire", "key": "pin"})["allowed"] is False
    r = c.call({"op": "report", "key": "pin", "outcome": "success"})
    assert r["snapshot"]["successCount"] == 1 and r["snapshot"]["state"] == "open"
    refused = c.call({"op": "transition", "key": "pin", "to": "closed"})
    assert refused["error"]["code"] == "forced" and refused["forced"]["state"] == "open"
    assert "forced" in c.call({"op": "get", "key": "pin"})

    deadline = time.monotonic() + 5  # the pin lifts by itself
    while "force-expired" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "force-expired" in d.log()
    g = c.call({"op": "get", "key": "pin"})
    assert "forced" not in g
    a = c.call({"op": "acquire", "key": "pin"})
    assert a["allowed"] is True and a["snapshot"]["state"] == "half-open"


def test_force_closed_and_unforce_with_cbctl(cbd):
    r = cbctl("force", "fc", "closed", "--reason", "trust me", sock=cbd.sock)
    assert r.returncode == 0 and json.loads(r.stdout)["forced"]["state"] == "closed"
    for _ in range(10):
        cbctl("report", "fc", "failure", sock=cbd.sock)
    r = cbctl("acquire", "fc", sock=cbd.sock)
    assert r.returncode == 0 and json.loads(r.stdout)["allowed"] is True
    r = cbctl("unforce", "fc", sock=cbd.sock)
    assert r.returncode == 0 and "forced" not in json.loads(r.stdout)
    assert "audit: unforce key=fc" in cbd.log()
    r = cbctl("force", "fc", "half-open", sock=cbd.sock)
    assert r.returncode == 1 and "invalid_state" in r.stderr


def test_cbctl_acquire_and_report(start_cbd):
    d = start_cbd(*FAST)
    r = cbctl("acquire", "cli", sock=d.sock)
    assert r.returncode == 0
    gen = json.loads(r.stdout)["generation"]
    for _ in range(3):
        r = cbctl("report", "cli", "failure", "--generation", str(gen), sock=d.sock)
        assert r.returncode == 0
    assert json.loads(r.stdout)["transition"]["cause"] == "threshold"
    r = cbctl("acquire", "cli", sock=d.sock)
    assert r.returncode == 75 and json.loads(r.stdout)["allowed"] is False
    time.sleep(0.25)
    permit = cbctl("acquire", "cli", "--field", "permit", sock=d.sock).stdout.strip()
    gen = cbctl("get", "cli", "--field", "generation", sock=d.sock).stdout.strip()
    r = cbctl("report", "cli", "success", "--generation", gen, "--permit", permit, sock=d.sock)
    assert r.returncode == 0 and json.loads(r.stdout)["snapshot"]["state"] == "closed"
    r = cbctl("report", "cli", "maybe", sock=d.sock)
    assert r.returncode == 2


def test_configure_and_policy_with_cbctl(cbd):
    r = cbctl("configure", "api", "--failure-threshold", "3", "--half-open-max", "2", sock=cbd.sock)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["policy"]["failureThreshold"] == 3 and out["source"]["halfOpenMax"] == "key"
    r = cbctl("configure", "api", "--unset", "halfOpenMax", sock=cbd.sock)
    assert json.loads(r.stdout)["policy"]["halfOpenMax"] == 1
    r = cbctl("configure", "api", "--failure-threshold", "0", sock=cbd.sock)
    assert r.returncode == 2 and "--failure-threshold" in r.stderr
    r = cbctl("configure", "api", "--clear", sock=cbd.sock)
    assert json.loads(r.stdout)["source"]["failureThreshold"] == "default"
    r = cbctl("policy", "api", sock=cbd.sock)
    assert r.returncode == 0 and json.loads(r.stdout)["key"] == "api"
    assert "audit: configure key=api" in cbd.log()


def test_invalid_policy_values_over_the_wire(cbd):
    c = Client(cbd.sock)
    for value in [0, -1, 1.5, "3", True, None]:
        r = c.call({"op": "configure", "key": "x", "policy": {"resetTimeoutMs": value}})
        if value is None:
            assert r["ok"]  # null removes the field
            continue
        assert r["error"]["code"] == "invalid_request", value
        assert "resetTimeoutMs" in r["error"]["message"]


CONFIG = {
    "defaults": {"failureThreshold": 4, "resetTimeoutMs": 1000},
    "policies": [{"prefix": "pay", "failureThreshold": 3},
                 {"prefix": "payments/", "failureThreshold": 2, "halfOpenMax": 2}],
}


def test_config_file_prefix_rules_and_sighup_reload(start_cbd, workdir):
    path = workdir / "cbd.json"
    path.write_text(json.dumps(CONFIG))
    d = start_cbd("--config", str(path), "--success-threshold", "2")
    c = Client(d.sock)
    p = c.call({"op": "policy", "key": "payments/eu"})
    assert p["policy"]["failureThreshold"] == 2 and p["prefix"] == "payments/"
    assert p["policy"]["successThreshold"] == 2  # the flag
    assert p["policy"]["resetTimeoutMs"] == 1000 and p["source"]["resetTimeoutMs"] == "default"
    assert c.call({"op": "policy", "key": "payroll"})["policy"]["failureThreshold"] == 3
    assert c.call({"op": "policy", "key": "search"})["policy"]["failureThreshold"] == 4
    c.call({"op": "configure", "key": "payments/eu", "policy": {"failureThreshold": 9}})
    assert c.call({"op": "policy", "key": "payments/eu"})["source"]["failureThreshold"] == "key"

    # reload a changed file
    changed = dict(CONFIG, policies=[{"prefix": "payments/", "failureThreshold": 7}])
    path.write_text(json.dumps(changed))
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "reloaded" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.call({"op": "policy", "key": "payments/us"})["policy"]["failureThreshold"] == 7
    assert c.call({"op": "policy", "key": "payroll"})["policy"]["failureThreshold"] == 4
    assert c.call({"op": "policy", "key": "payments/eu"})["policy"]["failureThreshold"] == 9

    # a broken file is refused and the previous configuration stays
    path.write_text('{"defaults": {"failureThreshold": 0}}')
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while "keeping the previous configuration" not in d.log() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "keeping the previous configuration" in d.log()
    assert "failureThreshold" in d.log()
    assert c.call({"op": "policy", "key": "payments/us"})["policy"]["failureThreshold"] == 7
    assert d.proc.poll() is None


def test_bad_config_file_refuses_to_start(start_cbd, workdir):
    path = workdir / "bad.json"
    path.write_text('{"policies": [{"prefix": "a", "halfOpenMax": "two"}]}')
    d = start_cbd("--config", str(path), wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert str(path) in d.log() and "halfOpenMax" in d.log()
    d = start_cbd("--config", str(workdir / "missing.json"), wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert "missing.json" in d.log()


def test_bad_policy_flag_is_a_usage_error(workdir):
    from conftest import CBD
    r = subprocess.run([CBD, "--socket", str(workdir / "s"), "--failure-threshold", "0"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 2


# --- cbctl run ---------------------------------------------------------------

def run(sock, *args, **kw):
    return cbctl("run", *args, sock=sock, **kw)


def test_run_exit_codes_and_reports(start_cbd, workdir):
    d = start_cbd(*FAST)
    assert run(d.sock, "r", "--", "true").returncode == 0
    assert cbctl("get", "r", "--field", "successCount", sock=d.sock).stdout == "1\n"
    assert run(d.sock, "r", "--", "sh", "-c", "exit 7").returncode == 7
    assert run(d.sock, "r", "--success-codes", "0,3", "--", "sh", "-c", "exit 3").returncode == 3
    assert cbctl("get", "r", "--field", "failureCount", sock=d.sock).stdout == "1\n"
    r = run(d.sock, "r", "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM
    assert cbctl("get", "r", "--field", "failureCount", sock=d.sock).stdout == "2\n"
    # the third failure opens it: CMD does not run, exit 75
    run(d.sock, "r", "--", "false")
    marker = workdir / "ran"
    r = run(d.sock, "r", "--", "touch", str(marker))
    assert r.returncode == 75
    assert not marker.exists()
    assert "circuit 'r' is open; retry in" in r.stderr


def test_run_passes_stdio_through(cbd):
    r = run(cbd.sock, "io", "--", "sh", "-c", "cat; echo err >&2", input="hello\n")
    assert r.returncode == 0 and r.stdout == "hello\n" and r.stderr == "err\n"


def test_run_timeout_kills_and_counts_a_failure(cbd):
    t = time.monotonic()
    r = run(cbd.sock, "slow", "--timeout", "300ms", "--", "sleep", "10")
    assert r.returncode == 124
    assert time.monotonic() - t < 5
    assert cbctl("get", "slow", "--field", "failureCount", sock=cbd.sock).stdout == "1\n"
    # a command that ignores TERM is killed
    r = run(cbd.sock, "slow", "--timeout", "200ms", "--", "sh", "-c", "trap '' TERM; sleep 10")
    assert r.returncode == 124


def test_run_forwards_sigterm(cbd, workdir):
    script = workdir / "trap.sh"
    script.write_text("trap 'echo got-term; exit 3' TERM\nwhile :; do sleep 0.05; done\n")
    p = subprocess.Popen([CBCTL, "--socket", cbd.sock, "run", "fw", "--", "sh", str(script)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 3 and "got-term" in out


def test_run_missing_command(cbd):
    r = run(cbd.sock, "nf", "--", "definitely-not-a-command-xyz")
    assert r.returncode == 127 and "cannot run" in r.stderr


def test_run_fails_open_when_cbd_is_down(workdir):
    marker = workdir / "ran"
    sock = str(workdir / "down.sock")
    r = run(sock, "k", "--", "touch", str(marker))
    assert r.returncode == 0 and marker.exists()
    assert "warning" in r.stderr and sock in r.stderr
    marker.unlink()
    r = run(sock, "k", "--fail-closed", "--", "touch", str(marker))
    assert r.returncode == 3 and not marker.exists()


def test_run_usage_errors(cbd):
    assert run(cbd.sock, "k").returncode == 2
    assert run(cbd.sock, "k", "--timeout", "soon", "--", "true").returncode == 2
    assert run(cbd.sock, "k", "--success-codes", "0,x", "--", "true").returncode == 2


def test_a_shell_script_trips_a_circuit_and_watches_it_recover(start_cbd, workdir):
    d = start_cbd(*FAST)
    flag = workdir / "upstream-down"
    flag.touch()
    script = workdir / "scenario.sh"
    script.write_text(f"""
set -u
cbctl() {{ "{CBCTL}" --socket "{d.sock}" "$@"; }}
upstream() {{ cbctl run payments -- sh -c 'test ! -e "{flag}"'; }}
for i in 1 2 3; do upstream; echo "call $i: $?"; done
upstream; echo "while open: $?"
echo "state: $(cbctl get payments --field state)"
rm -f "{flag}"                      # the upstream recovers
sleep 0.3                           # past resetTimeoutMs
upstream; echo "probe: $?"
echo "state: $(cbctl get payments --field state)"
""")
    r = subprocess.run(["sh", str(script)], capture_output=True, text=True, timeout=30)
    assert r.stdout.splitlines() == [
        "call 1: 1", "call 2: 1", "call 3: 1",
        "while open: 75",
        "state: open",
        "probe: 0",
        "state: closed",
    ], r.stderr
