"""client.breaker(key): acquire → call → report, as a context manager, a
decorator and .call; CircuitOpen when denied; a predicate for what counts
as a failure; fail open (or not) when cbd is away."""
from __future__ import annotations

import threading
import time

import pytest

from cbd_client import CbdError, CircuitOpen, Client, Unavailable


class UpstreamDown(Exception):
    pass


class NotFound(Exception):
    pass


@pytest.fixture
def client(start_cbd):  # type: ignore[no-untyped-def]
    daemon = start_cbd("--failure-threshold", "2", "--reset-timeout-ms", "300")
    with Client(daemon.socket) as client:
        yield client


def counts(client: Client, key: str) -> tuple[str, int, int]:
    snapshot = client.get(key)["snapshot"]
    return snapshot["state"], snapshot["failureCount"], snapshot["successCount"]


def test_context_manager_reports_and_then_denies(client: Client) -> None:
    breaker = client.breaker("cm")
    with breaker:
        pass
    assert counts(client, "cm") == ("closed", 0, 1)
    for _ in range(2):
        with pytest.raises(UpstreamDown):
            with breaker:
                raise UpstreamDown()
    assert counts(client, "cm") == ("open", 2, 1)
    ran = False
    with pytest.raises(CircuitOpen) as denied:
        with breaker:
            ran = True
    assert not ran
    assert denied.value.code == "circuit_open"
    assert denied.value.key == "cm"
    assert denied.value.retry_after_ms is not None and 0 < denied.value.retry_after_ms <= 300
    assert denied.value.reply is not None and denied.value.reply["allowed"] is False
    # The probe after the reset timeout carries the permit and closes it.
    time.sleep(0.35)
    with breaker:
        assert client.get("cm")["snapshot"]["state"] == "half-open"
    assert counts(client, "cm")[0] == "closed"


def test_decorator(client: Client) -> None:
    calls: list[int] = []

    @client.breaker("deco")
    def charge(amount: int, *, fail: bool = False) -> str:
        calls.append(amount)
        if fail:
            raise UpstreamDown()
        return f"charged {amount}"

    assert charge.__name__ == "charge"
    assert charge(5) == "charged 5"
    with pytest.raises(UpstreamDown):
        charge(6, fail=True)
    with pytest.raises(UpstreamDown):
        charge(7, fail=True)
    with pytest.raises(CircuitOpen):
        charge(8)
    assert calls == [5, 6, 7]
    assert counts(client, "deco") == ("open", 2, 1)


def test_call_with_arguments_and_a_failure_predicate(client: Client) -> None:
    breaker = client.breaker("pred", is_failure=lambda error: not isinstance(error, NotFound))

    def lookup(name: str, missing: bool) -> str:
        if missing:
            raise NotFound(name)
        return name.upper()

    assert breaker.call(lookup, "a", False) == "A"
    for _ in range(3):
        with pytest.raises(NotFound):
            breaker.call(lookup, "b", missing=True)
    # NotFound is the upstream answering: reported as success, not failure.
    assert counts(client, "pred") == ("closed", 0, 4)
    with pytest.raises(UpstreamDown):
        breaker.call(lambda: (_ for _ in ()).throw(UpstreamDown()))
    assert counts(client, "pred") == ("closed", 1, 4)


def test_a_stale_outcome_does_not_close_a_reopened_circuit(client: Client) -> None:
    breaker = client.breaker("stale")
    with breaker:
        # Meanwhile, other callers open the circuit.
        for _ in range(2):
            ticket = client.acquire("stale")
            client.report("stale", "failure", generation=ticket["generation"])
    assert counts(client, "stale")[0] == "open"


def test_nested_and_threaded_blocks_keep_their_own_tickets(client: Client) -> None:
    breaker = client.breaker("nest")
    with breaker:
        with breaker:
            pass
    assert counts(client, "nest") == ("closed", 0, 2)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                with breaker:
                    pass
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert counts(client, "nest") == ("closed", 0, 202)


def test_fails_open_when_cbd_is_away_and_closed_when_asked(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = Client(str(tmp_path / "absent.sock"))
    started = time.monotonic()
    with client.breaker("away"):
        ran = True
    assert ran
    assert client.breaker("away").call(lambda: 42) == 42
    with pytest.raises(UpstreamDown):
        with client.breaker("away"):
            raise UpstreamDown()
    assert time.monotonic() - started < 0.05
    with pytest.raises(Unavailable):
        with client.breaker("away", fail_open=False):
            pytest.fail("ran although fail_open=False")


def test_a_wrong_request_is_not_failed_open(client: Client) -> None:
    with pytest.raises(CbdError) as caught:
        with client.breaker(""):
            pytest.fail("ran with an invalid key")
    assert caught.value.code == "invalid_key"
