"""watch(): events as they happen, on a connection of their own."""
from __future__ import annotations

import threading
import time

import pytest

from cbd_client import CbdError, Client, Unavailable


def test_watch_a_prefix_sees_transitions_and_resets_in_order(cbd) -> None:  # type: ignore[no-untyped-def]
    with Client(cbd.socket) as client, client.watch(prefix="pay/") as events:
        client.transition("other", "open")  # not watched
        client.transition("pay/eu", "open")
        client.transition("pay/eu", "closed")
        client.reset("pay/eu")
        seen = [next(events) for _ in range(3)]
    assert [(e["event"], e["key"]) for e in seen] == [("transition", "pay/eu")] * 2 + [("reset", "pay/eu")]
    assert (seen[0]["from"], seen[0]["to"], seen[0]["cause"]) == ("closed", "open", "manual")
    assert seen[1]["to"] == "closed"
    assert seen[0]["generation"] < seen[1]["generation"]
    assert seen[0]["snapshot"]["state"] == "open"


def test_watch_one_key_and_close_from_another_thread(cbd) -> None:  # type: ignore[no-untyped-def]
    with Client(cbd.socket) as client:
        events = client.watch(key="one")
        received: list[dict] = []

        def consume() -> None:
            for event in events:
                received.append(event)

        consumer = threading.Thread(target=consume)
        consumer.start()
        client.force("one", "open", reason="test")
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            time.sleep(0.01)
        events.close()
        consumer.join(timeout=5)
        assert not consumer.is_alive(), "close() did not end the iteration"
        assert received[0]["cause"] == "force"
        assert received[0]["forced"]["reason"] == "test"


def test_watch_raises_when_cbd_goes_away(cbd) -> None:  # type: ignore[no-untyped-def]
    client = Client(cbd.socket)
    events = client.watch()
    cbd.stop()
    with pytest.raises(CbdError) as caught:
        next(events)
    assert caught.value.code == "connection_lost"
    assert list(events) == []


def test_watch_without_cbd_is_unavailable(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = Client(str(tmp_path / "absent.sock"))
    started = time.monotonic()
    with pytest.raises(Unavailable):
        client.watch()
    assert time.monotonic() - started < 0.05


def test_watch_refused_carries_cbds_code(cbd) -> None:  # type: ignore[no-untyped-def]
    client = Client(cbd.socket)
    with pytest.raises(CbdError) as caught:
        client.watch(key="")
    assert caught.value.code == "invalid_key"
