"""Steps of the wall clock change no duration (docs/PROTOCOL.md, *Time*).

`date -s` or an NTP step moves the wall clock; cbd measures open times,
probe leases and pin TTLs on a clock that does not step, and shows epoch
times as the wall clock has them. Here `--test-clock FILE` holds two
readings, the wall clock and the monotonic one, so a test steps the first
alone, on memory and on a state file, then restarts on the state file
(after a restart the wall clock is all there is).
"""

import os

import pytest

from conftest import Client

HOUR = 3_600_000
T = 1_000_000_000_000


def set_clock(path, wall, mono):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{wall} {mono}\n")
    os.rename(tmp, path)


def call(c, request):
    reply = c.call(request)
    assert reply["ok"], (request, reply)
    return reply


@pytest.mark.parametrize("step", [-HOUR, HOUR], ids=["back", "forward"])
@pytest.mark.parametrize("store", ["memory", "state-file"])
def test_a_step_changes_no_retry_lease_or_pin(start_cbd, workdir, step, store):
    clock = workdir / "clock"
    set_clock(clock, T, T)
    args = ["--test-clock", str(clock)]
    if store == "state-file":
        args += ["--state-file", str(workdir / "state.db"), "--sync", "always"]
    d = start_cbd(*args)
    c = Client(d.sock)
    call(c, {"op": "configure", "key": "api",
             "policy": {"failureThreshold": 1, "resetTimeoutMs": 60_000}})
    call(c, {"op": "configure", "key": "lease",
             "policy": {"failureThreshold": 1, "resetTimeoutMs": 1000, "probeLeaseMs": 10_000}})
    call(c, {"op": "configure", "key": "late",
             "policy": {"failureThreshold": 1, "resetTimeoutMs": 120_000}})
    for key in ("api", "lease", "late"):
        call(c, {"op": "report", "key": key, "outcome": "failure"})

    set_clock(clock, T + 2000, T + 2000)
    probe = call(c, {"op": "acquire", "key": "lease"})
    assert probe["allowed"] and probe.get("permit"), probe
    pin = call(c, {"op": "force", "key": "gate", "state": "open", "ttlMs": 120_000})
    until = pin["forced"]["until"]
    assert until == T + 2000 + 120_000
    before = call(c, {"op": "acquire", "key": "api"})
    assert before["retryAfterMs"] == 58_000, before

    # The wall clock steps; the monotonic one does not.
    set_clock(clock, T + 2000 + step, T + 2000)
    after = call(c, {"op": "acquire", "key": "api"})
    assert abs(after["retryAfterMs"] - before["retryAfterMs"]) <= 1000, (before, after)
    # Epoch times follow the wall clock at once: the same moments, on it.
    assert after["snapshot"]["lastStateChange"] == T + step, after
    assert after["snapshot"]["lastFailureTime"] == T + step, after
    gate = call(c, {"op": "get", "key": "gate"})
    assert gate["forced"]["until"] == until + step, gate  # still 118 s from now

    # 9 s later by the monotonic clock: the lease (10 s) and the pin hold,
    # whichever way the wall clock went.
    set_clock(clock, T + 11_000 + step, T + 11_000)
    report = call(c, {"op": "report", "key": "lease", "outcome": "success",
                      "generation": probe["generation"], "permit": probe["permit"]})
    assert report["snapshot"]["state"] == "closed", report
    gate = call(c, {"op": "get", "key": "gate"})
    assert gate["snapshot"]["state"] == "open" and gate["forced"]["until"] == until + step, gate
    assert call(c, {"op": "acquire", "key": "api"})["retryAfterMs"] == 49_000
    # A transition's time is the wall clock's too.
    set_clock(clock, T + 62_000 + step, T + 62_000)
    opened = call(c, {"op": "acquire", "key": "api"})
    assert opened["allowed"] and opened["transition"]["to"] == "half-open", opened
    assert opened["snapshot"]["lastStateChange"] == T + 62_000 + step, opened
    c.close()
    if store == "memory":
        return

    # Across a restart only the wall clock is left: cbd's clock starts from
    # it again, and the state file holds epoch times. Back an hour: `late`
    # opened before the step, so its time in the file is later than now and
    # is taken as now: it waits its whole timeout from the restart, not an
    # hour more. The pin's `until` is kept as written (before the step): it
    # holds an hour longer. Forward an hour: the file's times are an hour
    # older, so `late` is due at once and the pin has lifted.
    assert d.stop() == 0
    clock.write_text(f"{T + 62_000 + step}\n")
    c = Client(start_cbd(*args).sock)
    late = call(c, {"op": "acquire", "key": "late"})
    gate = call(c, {"op": "get", "key": "gate"})
    if step < 0:
        assert late["allowed"] is False and late["retryAfterMs"] == 120_000, late
        assert late["snapshot"]["lastStateChange"] == T + 62_000 + step, late
        assert gate["forced"]["until"] == until, gate
    else:
        assert late["allowed"] is True, late
        assert "forced" not in gate and gate["snapshot"]["state"] == "open", gate
