"""Client against the reference store's own cases (the stoma gateway's
CircuitBreakerStore: getState, recordSuccess, recordFailure, transition,
reset), through get, success, failure, transition and reset."""
from __future__ import annotations

import time

import pytest

from cbd_client import CbdError, Client

SNAPSHOT_FIELDS = ["state", "failureCount", "successCount", "lastFailureTime", "lastStateChange"]


@pytest.fixture
def client(cbd):  # type: ignore[no-untyped-def]
    with Client(cbd.socket) as client:
        yield client


def now_ms() -> int:
    return int(time.time() * 1000)


def test_unknown_key_reads_closed_with_zero_counts(client: Client) -> None:
    before = now_ms()
    reply = client.get("unknown")
    snapshot = reply["snapshot"]
    assert list(snapshot) == SNAPSHOT_FIELDS
    assert snapshot["state"] == "closed"
    assert snapshot["failureCount"] == 0
    assert snapshot["successCount"] == 0
    assert snapshot["lastFailureTime"] == 0
    assert before - 1000 <= snapshot["lastStateChange"] <= now_ms() + 1000
    assert isinstance(reply["generation"], int)


def test_two_failures_count_two_and_stamp_the_last_failure(client: Client) -> None:
    client.failure("two")
    snapshot = client.failure("two")["snapshot"]
    assert snapshot["failureCount"] == 2
    assert snapshot["lastFailureTime"] > 0
    assert snapshot["state"] == "closed"


def test_one_success_counts_one(client: Client) -> None:
    snapshot = client.success("one")["snapshot"]
    assert snapshot["successCount"] == 1
    assert snapshot["failureCount"] == 0
    assert snapshot["state"] == "closed"


def test_transition_to_closed_zeroes_both_counts(client: Client) -> None:
    client.failure("z")
    client.success("z")
    client.transition("z", "open")
    snapshot = client.transition("z", "closed")["snapshot"]
    assert (snapshot["state"], snapshot["failureCount"], snapshot["successCount"]) == ("closed", 0, 0)


def test_transition_to_half_open_zeroes_success_count_only(client: Client) -> None:
    client.failure("h")
    client.success("h")
    snapshot = client.transition("h", "half-open")["snapshot"]
    assert (snapshot["state"], snapshot["failureCount"], snapshot["successCount"]) == ("half-open", 1, 0)


def test_transition_to_open_keeps_counts_and_stamps_last_state_change(client: Client) -> None:
    client.failure("o")
    before = client.get("o")["snapshot"]
    time.sleep(0.005)
    snapshot = client.transition("o", "open")["snapshot"]
    assert snapshot["failureCount"] == 1
    assert snapshot["lastStateChange"] > before["lastStateChange"]


def test_transition_to_the_same_state_still_stamps(client: Client) -> None:
    first = client.transition("same", "open")["snapshot"]
    time.sleep(0.005)
    second = client.transition("same", "open")["snapshot"]
    assert second["state"] == "open"
    assert second["lastStateChange"] > first["lastStateChange"]


def test_reset_starts_fresh(client: Client) -> None:
    client.failure("r")
    client.success("r")
    assert client.reset("r") is True
    assert client.reset("r") is False
    snapshot = client.get("r")["snapshot"]
    assert (snapshot["failureCount"], snapshot["successCount"]) == (0, 0)


def test_circuits_are_independent(client: Client) -> None:
    client.transition("iso-a", "open")
    assert client.get("iso-b")["snapshot"]["state"] == "closed"


def test_errors_carry_the_daemons_code(client: Client) -> None:
    with pytest.raises(CbdError) as empty:
        client.get("")
    assert empty.value.code == "invalid_key"
    with pytest.raises(CbdError) as sideways:
        client.transition("k", "sideways")  # type: ignore[arg-type]
    assert sideways.value.code == "invalid_state"
    assert sideways.value.reply is not None and sideways.value.reply["ok"] is False
    # The connection is still good.
    assert client.get("k")["snapshot"]["state"] == "closed"
