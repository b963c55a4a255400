"""Mirror mode in one process against a real cbd: what is decided locally,
what is asked, batches by size, by interval and by flush(), local denials,
events, pins, resets, probes, a lost watch, idle keys, the bounded queue."""
from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from cbd_client import CbdError, CircuitOpen, Client, Unavailable


class UpstreamDown(Exception):
    pass


def fail() -> None:
    raise UpstreamDown()


def until(condition: Callable[[], Any], what: str, seconds: float = 10.0) -> Any:
    """Polls a condition (a generous liveness bound, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.002)


def mirrored(client: Client, key: str) -> int:
    """Calls the key through the breaker (no-op successes) until the mirror
    decides it locally; how many calls it took."""
    breaker = client.breaker(key)
    calls = 0

    def local() -> bool:
        nonlocal calls
        breaker.call(lambda: None)
        calls += 1
        entry = client.mirror_entry(key)
        return entry is not None and entry["local"]

    until(local, f"the mirror did not cover {key!r}")
    return calls


def counts(client: Client, key: str) -> tuple[str, int, int]:
    snapshot = client.get(key)["snapshot"]
    return snapshot["state"], snapshot["failureCount"], snapshot["successCount"]


@pytest.fixture
def daemon(start_cbd):  # type: ignore[no-untyped-def]
    return start_cbd("--failure-threshold", "1000000", "--reset-timeout-ms", "60000")


@pytest.fixture
def admin(daemon):  # type: ignore[no-untyped-def]
    with Client(daemon.socket) as client:
        yield client


def test_closed_circuit_calls_are_decided_locally_and_counted_exactly(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True) as client:
        breaker = client.breaker("local")
        warmup = mirrored(client, "local")
        asked = client.mirror_stats()["asked"]
        for _ in range(1000):
            assert breaker.call(lambda: 7) == 7
        for _ in range(500):
            with pytest.raises(UpstreamDown):
                breaker.call(fail)
        for _ in range(250):
            with breaker:
                pass
        with pytest.raises(UpstreamDown):
            with breaker:
                raise UpstreamDown()
        assert client.mirror_stats()["asked"] == asked, "a call on a mirrored closed circuit asked cbd"
        client.flush()
        stats = client.mirror_stats()
        assert (stats["dropped"], stats["errors"], stats["unsent"], stats["stale"], stats["queued"]) == (0, 0, 0, 0, 0)
        state, failures, successes = counts(admin, "local")
        assert (state, failures, successes) == ("closed", 501, warmup + 1250)


def test_a_full_batch_goes_at_once_and_the_rest_after_the_interval(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True, mirror_batch_size=10, mirror_batch_interval=30.0) as client:
        mirrored(client, "size")
        client.flush()
        base = counts(admin, "size")[2]
        breaker = client.breaker("size")
        for _ in range(10):
            breaker.call(lambda: None)
        # The tenth call wrote the batch; nothing else would for 30 s.
        until(lambda: counts(admin, "size")[2] == base + 10, "a full batch was not sent")
        for _ in range(3):
            breaker.call(lambda: None)
        assert client.mirror_stats()["queued"] == 3
        client.flush()
        assert counts(admin, "size")[2] == base + 13
    with Client(daemon.socket, mirror=True, mirror_batch_size=1000, mirror_batch_interval=0.01) as client:
        mirrored(client, "interval")
        client.flush()
        base = counts(admin, "interval")[2]
        breaker = client.breaker("interval")
        for _ in range(3):
            breaker.call(lambda: None)
        until(lambda: counts(admin, "interval")[2] == base + 3, "the interval did not send the batch")


def test_long_keys_are_split_into_lines_cbd_takes(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    key = "long/" + "k" * 1000
    with Client(daemon.socket, mirror=True, mirror_batch_size=1000, mirror_batch_interval=30.0) as client:
        mirrored(client, key)
        client.flush()
        breaker = client.breaker(key)
        for _ in range(999):  # 999 entries of ~1 KiB: far more than one 64 KiB line
            with pytest.raises(UpstreamDown):
                breaker.call(fail)
        client.flush()
        stats = client.mirror_stats()
        assert (stats["errors"], stats["unsent"], stats["dropped"]) == (0, 0, 0)
        assert counts(admin, key)[1] == 999


def test_cbds_denial_is_then_repeated_locally(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True) as client:
        breaker = client.breaker("deny")
        mirrored(client, "deny")
        admin.transition("deny", "open")
        until(lambda: client.mirror_entry("deny")["state"] == "open", "the open event did not reach the mirror")
        asked = client.mirror_stats()["asked"]
        with pytest.raises(CircuitOpen) as by_cbd:
            breaker.call(pytest.fail)
        assert by_cbd.value.reply is not None and by_cbd.value.reply["allowed"] is False
        assert client.mirror_stats()["asked"] == asked + 1
        for _ in range(100):
            with pytest.raises(CircuitOpen) as here:
                breaker.call(pytest.fail)
            assert here.value.reply is None
            assert here.value.retry_after_ms is not None and 0 < here.value.retry_after_ms <= 60_000
        with pytest.raises(CircuitOpen):
            with breaker:
                pytest.fail("ran while denied")
        assert client.mirror_stats()["asked"] == asked + 1
        # cbd closes it: the event lifts the local denial.
        admin.transition("deny", "closed")
        until(lambda: client.mirror_entry("deny")["local"], "the close event did not reach the mirror")
        assert breaker.call(lambda: 1) == 1


def test_an_outcome_decided_before_the_circuit_opened_is_stale(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True) as client:
        breaker = client.breaker("stale")
        mirrored(client, "stale")
        client.flush()
        with pytest.raises(UpstreamDown):
            with breaker:  # allowed locally, at the closed generation
                admin.transition("stale", "open")
                until(lambda: client.mirror_entry("stale")["state"] == "open", "the open event did not reach the mirror")
                raise UpstreamDown()
        client.flush()
        assert client.mirror_stats()["stale"] == 1
        assert counts(admin, "stale")[:2] == ("open", 0)


def test_pins_closed_allow_locally_and_pins_open_deny(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True) as client:
        breaker = client.breaker("pin")
        mirrored(client, "pin")
        admin.transition("pin", "open")
        admin.force("pin", "closed", reason="test")
        until(lambda: (client.mirror_entry("pin")["forced"] or {}).get("state") == "closed", "the pin did not reach the mirror")
        asked = client.mirror_stats()["asked"]
        assert breaker.call(lambda: 2) == 2
        assert client.mirror_stats()["asked"] == asked
        admin.force("pin", "open", ttl_ms=30_000)
        until(lambda: not client.mirror_entry("pin")["local"], "the open pin did not reach the mirror")
        with pytest.raises(CircuitOpen) as by_cbd:
            breaker.call(pytest.fail)
        assert by_cbd.value.reply is not None
        with pytest.raises(CircuitOpen) as here:
            breaker.call(pytest.fail)
        assert here.value.reply is None and 0 < (here.value.retry_after_ms or 0) <= 30_000
        admin.unforce("pin")  # the state stays open, the pin goes: ask cbd again
        until(lambda: client.mirror_entry("pin")["forced"] is None, "the unpin did not reach the mirror")
        with pytest.raises(CircuitOpen) as again:
            breaker.call(pytest.fail)
        assert again.value.reply is not None


def test_a_reset_makes_the_mirror_ask_again(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True) as client:
        mirrored(client, "reset")
        client.flush()
        assert admin.reset("reset")
        until(lambda: client.mirror_entry("reset")["state"] is None, "the reset event did not reach the mirror")
        asked = client.mirror_stats()["asked"]
        client.breaker("reset").call(lambda: None)
        assert client.mirror_stats()["asked"] == asked + 1
        mirrored(client, "reset")


def test_a_probe_is_reported_at_once_with_its_permit(start_cbd) -> None:  # type: ignore[no-untyped-def]
    daemon = start_cbd("--failure-threshold", "1", "--reset-timeout-ms", "200")
    with Client(daemon.socket) as admin, Client(daemon.socket, mirror=True, mirror_batch_interval=30.0) as client:
        breaker = client.breaker("probe")
        mirrored(client, "probe")
        with pytest.raises(UpstreamDown):
            breaker.call(fail)
        client.flush()  # the failure opens it
        until(lambda: client.mirror_entry("probe")["state"] == "open", "the open event did not reach the mirror")
        time.sleep(0.25)
        states: list[str] = []
        breaker.call(lambda: states.append(admin.get("probe")["snapshot"]["state"]))
        # Reported with the permit when the call returned, not batched.
        assert states == ["half-open"]
        assert admin.get("probe")["snapshot"]["state"] == "closed"
        assert client.mirror_stats()["queued"] == 0


def test_a_lost_watch_falls_back_to_asking_and_recovers(daemon) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True) as client:
        breaker = client.breaker("lost")
        with Client(daemon.socket) as admin:
            for _ in range(3):  # generations a restarted cbd counts anew
                admin.transition("lost", "open")
                admin.transition("lost", "closed")
        mirrored(client, "lost")
        client.flush()
        daemon.stop()
        until(lambda: not client.mirror_entry("lost")["local"], "the mirror did not notice the lost watch")
        # cbd is away: fail open, in milliseconds, as without the mirror.
        started = time.monotonic()
        for _ in range(20):
            assert breaker.call(lambda: 3) == 3
        took = time.monotonic() - started
        with pytest.raises(Unavailable):
            client.breaker("lost", fail_open=False).call(pytest.fail)
        print(f"\n20 fail-open calls with cbd away: {took * 1000:.2f} ms")
        daemon.start()
        mirrored(client, "lost")
        stats = client.mirror_stats()
        assert stats["watch_losses"] >= 1 and stats["watches"] >= 2
        with Client(daemon.socket) as admin:
            admin.transition("lost", "open")
            until(lambda: client.mirror_entry("lost")["state"] == "open", "the new watch carried no event")


def test_idle_keys_leave_the_mirror(daemon) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True, mirror_idle_timeout=0.2) as client:
        mirrored(client, "idle")
        mirrored(client, "busy")
        busy = client.breaker("busy")

        def idle_dropped() -> bool:
            busy.call(lambda: None)
            return client.mirror_entry("idle") is None

        until(idle_dropped, "the idle key was not dropped")
        assert client.mirror_entry("busy") is not None
        assert client.mirror_stats()["keys"] == 1
        mirrored(client, "idle")  # used again: asked, watched, mirrored


def test_a_full_queue_drops_the_oldest_and_counts_them(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True, mirror_queue_limit=10, mirror_batch_size=1000, mirror_batch_interval=30.0) as client:
        mirrored(client, "full")
        client.flush()
        base = counts(admin, "full")[1]
        breaker = client.breaker("full")
        for _ in range(15):
            with pytest.raises(UpstreamDown):
                breaker.call(fail)
        assert client.mirror_stats()["dropped"] == 5
        client.flush()
        assert counts(admin, "full")[1] == base + 10


def test_outcomes_cbd_refuses_are_told_not_raised(start_cbd) -> None:  # type: ignore[no-untyped-def]
    daemon = start_cbd("--max-circuits", "1")
    told: list[tuple[str, str, str]] = []
    with Client(daemon.socket) as admin, Client(
        daemon.socket, mirror=True, mirror_batch_interval=30.0, on_report_error=lambda *error: told.append(error)
    ) as client:
        breaker = client.breaker("full")
        mirrored(client, "full")
        client.flush()
        for _ in range(3):
            breaker.call(lambda: None)  # queued, at the circuit's generation
        assert admin.reset("full")
        admin.get("other")  # takes the only circuit
        client.flush()
        stats = client.mirror_stats()
        assert stats["errors"] + stats["stale"] == 3
        assert len(told) == stats["errors"]
        assert all(key == "full" for key, _, _ in told)
        print(f"\nreports of a reset key with the table full: {stats['errors']} errors {sorted({c for _, c, _ in told})}, {stats['stale']} stale")


def test_options_are_checked() -> None:
    with pytest.raises(ValueError):
        Client("/nowhere", mirror=True, mirror_batch_size=1001)
    with pytest.raises(ValueError):
        Client("/nowhere", mirror=True, mirror_batch_interval=0)
    with pytest.raises(TypeError):
        Client("/nowhere", mirror=True, mirror_idle_timeout="60")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Client("/nowhere", mirror=True, on_report_error=42)  # type: ignore[arg-type]
    without = Client("/nowhere")
    without.flush()
    assert without.mirror_stats() == {} and without.mirror_entry("k") is None


def test_mirror_without_cbd_fails_open_fast_and_closed_when_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = Client(str(tmp_path / "absent.sock"), mirror=True)
    started = time.monotonic()
    for _ in range(10):
        assert client.breaker("away").call(lambda: 5) == 5
    took = time.monotonic() - started
    with pytest.raises(Unavailable):
        client.breaker("away", fail_open=False).call(pytest.fail)
    client.close()
    print(f"\n10 fail-open mirror calls without cbd: {took * 1000:.2f} ms")
    assert client.mirror_stats()["keys"] == 0


def test_a_key_cbd_refuses_stays_out_of_the_watch(daemon) -> None:  # type: ignore[no-untyped-def]
    with Client(daemon.socket, mirror=True) as client:
        with pytest.raises(CbdError) as caught:
            client.breaker("bad\u0001key").call(pytest.fail)
        assert caught.value.code == "invalid_key"
        assert client.mirror_stats()["keys"] == 0
        mirrored(client, "good")  # the watch of the valid keys works


def test_threads_sharing_a_mirrored_breaker_count_exactly(daemon, admin) -> None:  # type: ignore[no-untyped-def]
    import threading

    with Client(daemon.socket, mirror=True) as client:
        breaker = client.breaker("threads")
        mirrored(client, "threads")
        errors: list[BaseException] = []

        def work() -> None:
            try:
                for _ in range(2500):
                    try:
                        breaker.call(fail)
                    except UpstreamDown:
                        pass
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.flush()
        assert errors == []
        stats = client.mirror_stats()
        assert (stats["dropped"], stats["errors"], stats["unsent"]) == (0, 0, 0)
        assert counts(admin, "threads")[1] == 10_000
