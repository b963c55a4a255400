"""AsyncClient: the same operations as coroutines, pipelined on one
connection; fail-fast; the async breaker in its three forms; async watch.
(Each test runs its own event loop with asyncio.run: no plugin needed.)"""
from __future__ import annotations

import asyncio
import time

import pytest

from cbd_client import AsyncClient, CbdError, CircuitOpen, Unavailable


class UpstreamDown(Exception):
    pass


def test_every_operation(start_cbd) -> None:  # type: ignore[no-untyped-def]
    daemon = start_cbd("--failure-threshold", "2", "--reset-timeout-ms", "150")

    async def main() -> None:
        async with AsyncClient(daemon.socket) as client:
            assert (await client.ping())["protocol"] >= 7
            assert (await client.get("a"))["snapshot"]["state"] == "closed"
            assert (await client.success("a"))["snapshot"]["successCount"] == 1
            assert (await client.failure("a"))["snapshot"]["failureCount"] == 1
            assert (await client.transition("a", "open", expect="closed"))["snapshot"]["state"] == "open"
            assert await client.reset("a") is True
            ticket = await client.acquire("a")
            assert ticket["allowed"] is True
            await client.report("a", "failure", generation=ticket["generation"])
            assert (await client.report("a", "failure", generation=ticket["generation"]))["transition"]["to"] == "open"
            pinned = await client.force("a", "closed", ttl_ms=1000)
            assert pinned["forced"]["state"] == "closed"
            assert "forced" not in await client.unforce("a")
            assert (await client.configure("a", {"halfOpenMax": 3}))["policy"]["halfOpenMax"] == 3
            assert (await client.policy("a"))["source"]["halfOpenMax"] == "key"
            assert [c["key"] async for c in client.list_all()] == ["a"]
            assert (await client.list(limit=1))["next"] is None
            assert (await client.stats())["circuits"]["total"] == 1
            assert "cbd_uptime_seconds" in await client.metrics()
            with pytest.raises(CbdError) as caught:
                await client.transition("a", "sideways")  # type: ignore[arg-type]
            assert caught.value.code == "invalid_state"

    asyncio.run(main())


def test_concurrent_calls_pipeline_on_one_connection(cbd) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with AsyncClient(cbd.socket) as client:
            connections = (await client.stats())["connections"]["total"]
            replies = await asyncio.gather(*(client.failure("p") for _ in range(1000)))
            assert sorted(r["snapshot"]["failureCount"] for r in replies) == list(range(1, 1001))
            # An id-less parse_error among them lands on its own call.
            results = await asyncio.gather(
                client.failure("p"), client.get("\ud800"), client.failure("p"), return_exceptions=True
            )
            assert isinstance(results[1], CbdError) and results[1].code == "parse_error"
            assert [results[0]["snapshot"]["failureCount"], results[2]["snapshot"]["failureCount"]] == [1001, 1002]  # type: ignore[index]
            assert (await client.stats())["connections"]["total"] == connections

    asyncio.run(main())


def test_fails_fast_and_recovers(cbd) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        client = AsyncClient(cbd.socket)
        assert (await client.failure("k"))["snapshot"]["failureCount"] == 1
        cbd.stop()
        await asyncio.sleep(0.05)  # the reader sees cbd close the connection
        for _ in range(20):
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await client.failure("k")
            assert time.monotonic() - started < 0.05
        cbd.start()
        deadline = time.monotonic() + 5
        while True:
            try:
                reply = await client.failure("k")
                break
            except Unavailable:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
        assert reply["snapshot"]["failureCount"] == 1
        await client.aclose()
        with pytest.raises(CbdError) as closed:
            await client.ping()
        assert closed.value.code == "closed"

    asyncio.run(main())


def test_absent_socket_fails_fast_for_concurrent_callers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        client = AsyncClient(str(tmp_path / "absent.sock"))
        started = time.monotonic()
        results = await asyncio.gather(*(client.get("x") for _ in range(10)), return_exceptions=True)
        assert all(isinstance(r, Unavailable) for r in results), results
        assert time.monotonic() - started < 0.05

    asyncio.run(main())


def test_async_breaker_in_three_forms(start_cbd) -> None:  # type: ignore[no-untyped-def]
    daemon = start_cbd("--failure-threshold", "2", "--reset-timeout-ms", "200")

    async def main() -> None:
        async with AsyncClient(daemon.socket) as client:
            breaker = client.breaker("ab")

            async with breaker:
                await asyncio.sleep(0)

            @client.breaker("ab")
            async def call(fail: bool) -> str:
                if fail:
                    raise UpstreamDown()
                return "ok"

            assert await call(False) == "ok"
            with pytest.raises(UpstreamDown):
                await breaker.call(call, True)  # the failure is reported by both wrappers
            with pytest.raises(CircuitOpen) as denied:
                await call(False)
            assert denied.value.retry_after_ms is not None
            snapshot = (await client.get("ab"))["snapshot"]
            assert (snapshot["state"], snapshot["failureCount"], snapshot["successCount"]) == ("open", 2, 2)

            # Concurrent tasks keep their own tickets.
            other = client.breaker("tasks")

            async def guarded() -> None:
                async with other:
                    await asyncio.sleep(0.01)

            await asyncio.gather(*(guarded() for _ in range(20)))
            assert (await client.get("tasks"))["snapshot"]["successCount"] == 20

    asyncio.run(main())


def test_async_breaker_fails_open(tmp_path) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        client = AsyncClient(str(tmp_path / "absent.sock"))
        ran = []
        async with client.breaker("away"):
            ran.append(1)
        with pytest.raises(Unavailable):
            async with client.breaker("away", fail_open=False):
                ran.append(2)
        assert ran == [1]

    asyncio.run(main())


def test_async_watch(cbd) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with AsyncClient(cbd.socket) as client:
            async with await client.watch(key="w") as events:
                await client.transition("w", "half-open")
                await client.reset("w")
                seen = []
                async for event in events:
                    seen.append(event)
                    if len(seen) == 2:
                        break
            assert [(e["event"], e.get("to")) for e in seen] == [("transition", "half-open"), ("reset", None)]
            with pytest.raises(CbdError) as refused:
                await client.watch(key="")
            assert refused.value.code == "invalid_key"

    asyncio.run(main())


def test_async_breaker_in_mirror_mode_decides_here_and_counts_exactly(start_cbd) -> None:  # type: ignore[no-untyped-def]
    daemon = start_cbd("--failure-threshold", "1000000", "--reset-timeout-ms", "60000")

    async def main() -> None:
        async with AsyncClient(daemon.socket) as admin, AsyncClient(daemon.socket, mirror=True) as client:
            breaker = client.breaker("amirror")

            async def ok() -> int:
                return 1

            async def down() -> None:
                raise RuntimeError("down")

            deadline = time.monotonic() + 10
            warmup = 0
            while not (client.mirror_entry("amirror") or {}).get("local"):
                assert time.monotonic() < deadline, "the mirror did not cover the key"
                await breaker.call(ok)
                warmup += 1
                await asyncio.sleep(0.002)
            asked = client.mirror_stats()["asked"]
            for _ in range(300):
                assert await breaker.call(ok) == 1
            for _ in range(200):
                with pytest.raises(RuntimeError):
                    async with breaker:
                        await down()
            assert client.mirror_stats()["asked"] == asked
            await client.flush()
            stats = client.mirror_stats()
            assert (stats["errors"], stats["dropped"], stats["unsent"]) == (0, 0, 0)
            snapshot = (await admin.get("amirror"))["snapshot"]
            assert (snapshot["failureCount"], snapshot["successCount"]) == (200, warmup + 300)
            await admin.transition("amirror", "open")
            while (client.mirror_entry("amirror") or {}).get("state") != "open":
                assert time.monotonic() < deadline + 10, "the open event did not reach the mirror"
                await asyncio.sleep(0.002)
            with pytest.raises(CircuitOpen) as by_cbd:
                await breaker.call(ok)
            assert by_cbd.value.reply is not None
            with pytest.raises(CircuitOpen) as here:
                await breaker.call(ok)
            assert here.value.reply is None
            assert client.mirror_stats()["asked"] == asked + 1

    asyncio.run(main())
