"""Fail fast: with cbd absent, refusing, or stopped, calls raise Unavailable
well under 50 ms, keep doing so while the backoff runs, and go through
again once cbd is back."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from cbd_client import CbdError, Client, Unavailable

FAST_S = 0.05


def timed_unavailable(client: Client) -> float:
    started = time.monotonic()
    with pytest.raises(Unavailable) as caught:
        client.failure("k")
    took = time.monotonic() - started
    assert caught.value.code == "unavailable"
    assert client.socket_path in str(caught.value)
    return took


def test_absent_socket_fails_fast_every_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = Client(str(tmp_path / "absent.sock"), timeout=5.0)
    # The first call tries to connect (ENOENT); the next ones fall inside
    # the backoff and do not even try; after it, one try again.
    times = [timed_unavailable(client) for _ in range(50)]
    time.sleep(0.1)
    times.append(timed_unavailable(client))
    assert max(times) < FAST_S, times


def test_refusing_socket_fails_fast(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "refusing.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound_not_listening:
        bound_not_listening.bind(path)
        client = Client(path, timeout=5.0)
        assert timed_unavailable(client) < FAST_S


def test_after_cbd_stops_calls_fail_fast_and_recover_when_it_returns(cbd) -> None:  # type: ignore[no-untyped-def]
    client = Client(cbd.socket, timeout=5.0)
    assert client.failure("k")["snapshot"]["failureCount"] == 1
    assert cbd.stop() == 0
    # The idle connection cbd closed: the call finds it dead, tries once to
    # connect anew, and fails at once; so does every call after it.
    times = [timed_unavailable(client) for _ in range(20)]
    assert max(times) < FAST_S, times
    cbd.start()
    # Back: the first call after the backoff (at most 2 s) connects again.
    deadline = time.monotonic() + 5
    while True:
        started = time.monotonic()
        try:
            reply = client.failure("k")
            break
        except Unavailable:
            assert time.monotonic() - started < FAST_S
            assert time.monotonic() < deadline, "never reconnected"
            time.sleep(0.01)
    assert reply["snapshot"]["failureCount"] == 1  # memory-only: a fresh circuit
    client.close()


def test_a_call_in_flight_when_cbd_dies_is_connection_lost(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A fake cbd that accepts, reads the request, and closes without an
    # answer: the request may have been applied, so the caller is told so.
    path = str(tmp_path / "dying.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen()
        client = Client(path, timeout=5.0)

        def accept_read_close() -> None:
            peer, _ = listener.accept()
            peer.recv(4096)
            peer.close()

        server = threading.Thread(target=accept_read_close)
        server.start()
        started = time.monotonic()
        with pytest.raises(CbdError) as caught:
            client.failure("k")
        server.join()
        assert caught.value.code == "connection_lost"
        assert time.monotonic() - started < 1
        client.close()


def test_a_restarted_cbd_is_reached_without_an_error(cbd) -> None:  # type: ignore[no-untyped-def]
    # cbd closed the idle connection; the next write finds it closed before
    # sending a whole line, so the call goes out again on a new connection.
    client = Client(cbd.socket)
    assert client.failure("k")["snapshot"]["failureCount"] == 1
    cbd.stop()
    cbd.start()
    assert client.failure("k")["snapshot"]["failureCount"] == 1
    client.close()
