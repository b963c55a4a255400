"""Client end to end: every operation, threads sharing one connection,
replies matched by position, bad input, and a peer that never answers."""
from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from cbd_client import CbdError, Client


@pytest.fixture
def client(cbd):  # type: ignore[no-untyped-def]
    with Client(cbd.socket) as client:
        yield client


def test_ping_names_the_protocol(client: Client) -> None:
    reply = client.ping()
    assert reply["protocol"] >= 7
    assert isinstance(reply["version"], str)


def test_threads_share_one_pipelined_connection(client: Client) -> None:
    # (The fixture's readiness probe was a connection too.)
    connections = client.stats()["connections"]["total"]

    def hammer() -> None:
        for _ in range(500):
            client.failure("threads")

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert client.get("threads")["snapshot"]["failureCount"] == 4000
    assert client.stats()["connections"]["total"] == connections


def test_a_reply_without_an_id_is_matched_by_position(client: Client) -> None:
    # cbd cannot read the id of a line with a lone surrogate: its parse_error
    # comes without one, and must still reach this call, not hang it.
    started = time.monotonic()
    with pytest.raises(CbdError) as caught:
        client.get("\ud800")
    assert caught.value.code == "parse_error"
    assert time.monotonic() - started < 1
    assert client.failure("after-parse-error")["snapshot"]["failureCount"] == 1


def test_id_less_errors_interleaved_with_threads(client: Client) -> None:
    errors: list[str] = []
    counts: list[int] = []

    def worker(index: int) -> None:
        for _ in range(100):
            if index % 2:
                try:
                    client.success("\udfff")
                except CbdError as error:
                    errors.append(error.code)
            else:
                counts.append(client.failure("mixed")["snapshot"]["failureCount"])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == ["parse_error"] * 300
    assert sorted(counts) == list(range(1, 301))


def test_acquire_report_and_conditional_transitions(start_cbd) -> None:  # type: ignore[no-untyped-def]
    daemon = start_cbd("--failure-threshold", "2", "--reset-timeout-ms", "150")
    with Client(daemon.socket) as client:
        ticket = client.acquire("api")
        assert ticket["allowed"] is True
        client.report("api", "failure", generation=ticket["generation"])
        opened = client.report("api", "failure", generation=ticket["generation"])
        assert opened["transition"] == {"from": "closed", "to": "open", "cause": "threshold"}
        denied = client.acquire("api")
        assert denied["allowed"] is False
        assert 0 < denied["retryAfterMs"] <= 150
        stale = client.report("api", "success", generation=ticket["generation"])
        assert stale["stale"] is True
        time.sleep(0.2)
        probe = client.acquire("api")
        assert probe["allowed"] is True and probe["snapshot"]["state"] == "half-open"
        with pytest.raises(CbdError) as no_permit:
            client.report("api", "success", generation=probe["generation"])
        assert no_permit.value.code == "no_permit"
        closed = client.report("api", "success", generation=probe["generation"], permit=probe["permit"])
        assert closed["transition"]["cause"] == "probe-success"
        with pytest.raises(CbdError) as conflict:
            client.transition("api", "open", expect="half-open")
        assert conflict.value.code == "conflict"
        assert conflict.value.reply is not None
        assert conflict.value.reply["snapshot"]["state"] == "closed"
        generation = client.get("api")["generation"]
        with pytest.raises(CbdError):
            client.transition("api", "open", expect_generation=generation + 1000)
        moved = client.transition("api", "open", expect="closed", expect_generation=generation)
        assert moved["snapshot"]["state"] == "open"


def test_force_unforce_configure_policy(client: Client) -> None:
    pinned = client.force("pin", "open", ttl_ms=60_000, reason="db migration")
    assert pinned["forced"]["state"] == "open"
    assert pinned["forced"]["reason"] == "db migration"
    assert pinned["forced"]["by"]["pid"] > 0
    with pytest.raises(CbdError) as refused:
        client.transition("pin", "closed")
    assert refused.value.code == "forced"
    lifted = client.unforce("pin")
    assert "forced" not in lifted
    configured = client.configure("pin", {"failureThreshold": 3, "halfOpenMax": 2})
    assert configured["policy"]["failureThreshold"] == 3
    assert configured["source"]["halfOpenMax"] == "key"
    dropped = client.configure("pin", {"halfOpenMax": None})
    assert dropped["source"]["halfOpenMax"] == "default"
    assert client.policy("pin")["policy"]["failureThreshold"] == 3
    assert client.configure("pin", None)["source"]["failureThreshold"] == "default"


def test_list_stats_metrics(client: Client) -> None:
    for index in range(25):
        client.failure(f"list/{index:02d}")
    client.failure("other")
    page = client.list(prefix="list/", limit=10)
    assert [c["key"] for c in page["circuits"]] == [f"list/{i:02d}" for i in range(10)]
    assert page["next"] == "list/09"
    assert [c["key"] for c in client.list_all(prefix="list/")] == [f"list/{i:02d}" for i in range(25)]
    assert client.stats()["circuits"]["total"] == 26
    assert "cbd_requests_total" in client.metrics()


def test_bad_input_gets_a_clear_error_before_it_is_sent(client: Client) -> None:
    with pytest.raises(TypeError, match="key must be a str"):
        client.get(7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generation must be an int"):
        client.report("k", "failure", generation=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="outcome"):
        client.report("k", "maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown policy field"):
        client.configure("k", {"failure_threshold": 3})
    with pytest.raises(ValueError, match="line limit"):
        client.get("x" * 70_000)
    with pytest.raises(ValueError, match="not both"):
        client.watch(key="a", prefix="b")
    with pytest.raises(ValueError, match="timeout"):
        Client("/tmp/x.sock", timeout=0)
    with pytest.raises(ValueError, match="longer than"):
        Client("/tmp/" + "s" * 200)
    # None of that touched the connection.
    assert client.failure("still-fine")["snapshot"]["failureCount"] == 1


def test_oversized_key_is_cbds_invalid_key(client: Client) -> None:
    with pytest.raises(CbdError) as caught:
        client.get("k" * 1025)
    assert caught.value.code == "invalid_key"


def test_times_out_on_a_peer_that_never_answers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)
        silent.listen()
        client = Client(path, timeout=0.3)
        started = time.monotonic()
        with pytest.raises(CbdError) as caught:
            client.get("x")
        took = time.monotonic() - started
        assert caught.value.code == "timeout"
        assert 0.25 <= took < 2
        client.close()
        with pytest.raises(CbdError) as closed:
            client.get("x")
        assert closed.value.code == "closed"


def test_a_forked_child_gets_its_own_connection(client: Client) -> None:
    client.failure("fork")
    connections = client.stats()["connections"]["total"]
    pid = os.fork()
    if pid == 0:
        try:
            ok = client.failure("fork")["snapshot"]["failureCount"] == 2
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert client.failure("fork")["snapshot"]["failureCount"] == 3
    assert client.stats()["connections"]["total"] == connections + 1


def test_close_from_another_thread_ends_a_waiting_call(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = str(tmp_path / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(path)
        silent.listen()
        client = Client(path, timeout=5.0)
        errors: list[str] = []

        def call() -> None:
            try:
                client.get("x")
            except CbdError as error:
                errors.append(error.code)

        waiting = threading.Thread(target=call)
        started = time.monotonic()
        waiting.start()
        time.sleep(0.1)
        client.close()
        waiting.join(timeout=5)
        assert errors == ["closed"]
        assert time.monotonic() - started < 1
