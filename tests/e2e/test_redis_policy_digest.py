"""Hosts that disagree on policy (issue #18): every cbd on one Redis and
prefix publishes a digest of its effective defaults and prefix rules; one
whose digest differs from another live host's says so once in its log, in
`stats` and in cbd_policy_config_mismatch, and stops saying so once the
configurations agree again (after a SIGHUP reload)."""

import json
import signal
import subprocess
import time

import pytest

from conftest import Client
from test_redis import Redis


@pytest.fixture
def redis(workdir):
    r = Redis(workdir)
    r.start()
    yield r
    r.kill()


def backend(d):
    return Client(d.sock).call({"op": "stats"})["backend"]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def test_a_host_with_other_rules_is_reported_until_it_agrees(start_cbd, workdir, redis):
    conf = workdir / "b.json"
    conf.write_text(json.dumps({"defaults": {"failureThreshold": 9}}))
    url = "unix://" + redis.sock
    a = start_cbd("--backend", "redis", "--redis", url, sock=workdir / "a.sock")
    same = start_cbd("--backend", "redis", "--redis", url, "--failure-threshold", "5",
                     sock=workdir / "same.sock")
    b = start_cbd("--backend", "redis", "--redis", url, "--config", str(conf),
                  sock=workdir / "b.sock")
    # Each round is 5 s; the first at start.
    wait_for(lambda: backend(a)["policyMismatch"] and backend(b)["policyMismatch"], 20,
             "both sides to see the mismatch")
    sa, sb = backend(a), backend(b)
    assert len(sa["policyMismatch"]) == 1 and sa["policyMismatch"][0].endswith(":" + b.sock)
    assert sorted(h.rsplit(":", 1)[1] for h in sb["policyMismatch"]) == sorted([a.sock, same.sock])
    assert sa["policyDigest"] != sb["policyDigest"] and len(sa["policyDigest"]) == 16
    assert backend(same)["policyDigest"] == sa["policyDigest"]  # 5 is the built-in default
    # cbd --check-config prints the digest a start would publish.
    from conftest import CBD
    checked = subprocess.run([CBD, "--config", str(conf), "--check-config"], capture_output=True,
                             text=True, timeout=30).stdout
    assert f"policy digest: {sb['policyDigest']}" in checked.splitlines()
    assert "cbd_policy_config_mismatch 1" in Client(a.sock).call({"op": "metrics"})["text"]
    # Entries live in Redis under the prefix, with Redis's time.
    entries = redis.cli("HGETALL", "cbd:policy-digests").split("\n")
    assert len(entries) == 6
    time.sleep(5.5)  # another round: the warning is not repeated
    assert a.log().count("differ from this host's") == 1, a.log()

    conf.write_text(json.dumps({"defaults": {}}))
    b.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: not backend(a)["policyMismatch"] and not backend(b)["policyMismatch"], 20,
             "the mismatch to clear after the reload")
    assert backend(b)["policyDigest"] == backend(a)["policyDigest"]
    assert "cbd_policy_config_mismatch 0" in Client(a.sock).call({"op": "metrics"})["text"]
    assert "has this host's defaults and prefix rules again" in a.log()
    # A memory daemon has no backend and no digest.
    m = start_cbd("--backend", "memory", sock=workdir / "m.sock")
    assert Client(m.sock).call({"op": "stats"})["backend"] is None
