"""AsyncClient: the same operations as Client, as coroutines, for asyncio.

One pipelined connection per AsyncClient, opened on the first call: each
call queues a future and writes its line in one step (nothing can come
between them on the event loop), and a reader task hands the n-th reply to
the n-th future (a reply without an id is matched by position). An
AsyncClient belongs to the event loop that first uses it.

Fail-fast is as in Client: a refused or missing socket raises Unavailable at
once, and so does every call during the backoff that follows.
"""
from __future__ import annotations

import asyncio
import collections
import os
import time
from typing import Any, AsyncIterator, Mapping

from . import _wire
from .breaker import AsyncBreaker, FailurePredicate
from .client import Client
from .errors import CbdError, Unavailable
from .mirror import (
    DEFAULT_BATCH_INTERVAL_S,
    DEFAULT_BATCH_SIZE,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_QUEUE_LIMIT,
    ReportErrorHandler,
)
from .types import (
    AcquireReply,
    CircuitReply,
    ListedCircuit,
    ListReply,
    Outcome,
    PingReply,
    PinState,
    PolicyReply,
    ReportReply,
    State,
    StatsReply,
    WatchEvent,
)

# Above this many unsent bytes a call waits for the socket to drain, so a
# cbd that stops reading slows callers instead of growing a buffer.
_WRITE_HIGH_WATER = 256 * 1024


class _AsyncConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.pending: collections.deque[tuple[int, asyncio.Future[dict[str, Any]]]] = collections.deque()
        self.alive = True
        self.reader_task: asyncio.Task[None] | None = None


class AsyncClient:
    """An asyncio client of cbd; see the module's documentation.

    ``socket`` and ``timeout`` as in Client. Replies are dicts with the wire's
    field names, without ``ok`` and ``id``.

    ``mirror=True`` and the ``mirror_*`` options as in Client: the breakers
    decide calls on closed circuits here. The mirror runs on threads with a
    Client of its own (its batches, its watch): a breaker never awaits it on
    the hot path; ``await flush()`` and ``aclose()`` wait for it.
    """

    socket_path: str
    timeout: float

    def __init__(
        self,
        socket: str | os.PathLike[str] | None = None,
        timeout: float = 5.0,
        *,
        mirror: bool = False,
        mirror_batch_size: int = DEFAULT_BATCH_SIZE,
        mirror_batch_interval: float = DEFAULT_BATCH_INTERVAL_S,
        mirror_idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
        mirror_queue_limit: int = DEFAULT_QUEUE_LIMIT,
        on_report_error: ReportErrorHandler | None = None,
    ) -> None:
        self.socket_path = _wire.resolve_socket_path(socket)
        self.timeout = _wire.check_timeout(timeout)
        self._mirror_client: Client | None = None
        self._mirror = None
        if mirror:
            self._mirror_client = Client(
                self.socket_path,
                self.timeout,
                mirror=True,
                mirror_batch_size=mirror_batch_size,
                mirror_batch_interval=mirror_batch_interval,
                mirror_idle_timeout=mirror_idle_timeout,
                mirror_queue_limit=mirror_queue_limit,
                on_report_error=on_report_error,
            )
            self._mirror = self._mirror_client._mirror
        self._connection: _AsyncConnection | None = None
        self._connecting: asyncio.Future[_AsyncConnection] | None = None
        self._next_id = 1
        self._closed = False
        self._down_until = 0.0
        self._backoff = _wire.MIN_BACKOFF_S

    # --- the reference store ----------------------------------------------

    async def get(self, key: str) -> CircuitReply:
        return await self._call(_wire.key_op("get", key))  # type: ignore[return-value]

    async def success(self, key: str) -> CircuitReply:
        return await self._call(_wire.key_op("success", key))  # type: ignore[return-value]

    async def failure(self, key: str) -> CircuitReply:
        return await self._call(_wire.key_op("failure", key))  # type: ignore[return-value]

    async def transition(
        self, key: str, to: State, expect: State | None = None, expect_generation: int | None = None
    ) -> CircuitReply:
        return await self._call(_wire.transition(key, to, expect, expect_generation))  # type: ignore[return-value]

    async def reset(self, key: str) -> bool:
        return bool((await self._call(_wire.key_op("reset", key)))["removed"])

    async def ping(self) -> PingReply:
        return await self._call({"op": "ping"})  # type: ignore[return-value]

    # --- the breaker --------------------------------------------------------

    async def acquire(self, key: str) -> AcquireReply:
        return await self._call(_wire.key_op("acquire", key))  # type: ignore[return-value]

    async def report(
        self, key: str, outcome: Outcome, generation: int | None = None, permit: str | None = None
    ) -> ReportReply:
        return await self._call(_wire.report(key, outcome, generation, permit))  # type: ignore[return-value]

    async def force(
        self, key: str, state: PinState, ttl_ms: int | None = None, reason: str | None = None
    ) -> CircuitReply:
        return await self._call(_wire.force(key, state, ttl_ms, reason))  # type: ignore[return-value]

    async def unforce(self, key: str) -> CircuitReply:
        return await self._call(_wire.key_op("unforce", key))  # type: ignore[return-value]

    async def configure(self, key: str, policy: Mapping[str, int | None] | None) -> PolicyReply:
        return await self._call(_wire.configure(key, policy))  # type: ignore[return-value]

    async def policy(self, key: str) -> PolicyReply:
        return await self._call(_wire.key_op("policy", key))  # type: ignore[return-value]

    def breaker(
        self, key: str, fail_open: bool = True, is_failure: FailurePredicate | None = None
    ) -> AsyncBreaker:
        """acquire → call → report around a coroutine; see cbd_client.breaker."""
        return AsyncBreaker(self, key, fail_open=fail_open, is_failure=is_failure)

    # --- observing -----------------------------------------------------------

    async def list(
        self, prefix: str | None = None, state: State | None = None, limit: int | None = None, after: str | None = None
    ) -> ListReply:
        return await self._call(_wire.list_page(prefix, state, limit, after))  # type: ignore[return-value]

    async def list_all(self, prefix: str | None = None, state: State | None = None) -> AsyncIterator[ListedCircuit]:
        after: str | None = None
        while True:
            page = await self.list(prefix=prefix, state=state, after=after)
            for circuit in page["circuits"]:
                yield circuit
            if page["next"] is None:
                return
            after = page["next"]

    async def stats(self) -> StatsReply:
        return await self._call({"op": "stats"})

    async def metrics(self, per_circuit: bool = False) -> str:
        return str((await self._call({"op": "metrics", "perCircuit": bool(per_circuit)}))["text"])

    async def watch(self, key: str | None = None, prefix: str | None = None) -> "AsyncWatch":
        """Events as they happen, on a connection of their own, once cbd has
        confirmed the watch: ``async for event in await client.watch(): ...``;
        ``await w.aclose()`` (or ``async with``) stops it."""
        request = _wire.watch(key, prefix)
        try:
            reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=_wire.MAX_REPLY_BYTES)
        except OSError as error:
            raise Unavailable(f"cannot connect to cbd at {self.socket_path}: {error.strerror or error}") from None
        watch = AsyncWatch(self.socket_path, reader, writer)
        try:
            writer.write(_wire.encode(request))
            try:
                async with asyncio.timeout(self.timeout):
                    _wire.result(await watch._next_message())
            except TimeoutError:
                raise CbdError("timeout", f"cbd at {self.socket_path} did not confirm the watch within {self.timeout} s") from None
        except BaseException:
            await watch.aclose()
            raise
        return watch

    # --- mirror mode -----------------------------------------------------------

    async def flush(self) -> None:
        """Mirror mode: sends every queued outcome and returns once cbd has
        answered them all (see Client.flush). Without the mirror: nothing."""
        if self._mirror_client is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._mirror_client.flush)

    def mirror_stats(self) -> dict[str, Any]:
        """As Client.mirror_stats."""
        return {} if self._mirror_client is None else self._mirror_client.mirror_stats()

    def mirror_entry(self, key: str) -> dict[str, Any] | None:
        """As Client.mirror_entry."""
        return None if self._mirror_client is None else self._mirror_client.mirror_entry(key)

    # --- lifetime -------------------------------------------------------------

    async def aclose(self) -> None:
        """Closes the connection; calls waiting on it raise CbdError('closed').
        In mirror mode it flushes the queued outcomes first."""
        if self._mirror_client is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._mirror_client.close)
        self._closed = True
        connection = self._connection
        if connection is not None:
            self._drop(connection, CbdError("closed", "the client was closed"))
            if connection.reader_task is not None and connection.reader_task is not asyncio.current_task():
                connection.reader_task.cancel()
                try:
                    await connection.reader_task
                except (asyncio.CancelledError, Exception):
                    pass
            try:
                await connection.writer.wait_closed()
            except OSError:
                pass

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # --- the connection ------------------------------------------------------

    async def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        line_body = dict(body)
        connection = self._connection
        if connection is None or not connection.alive:
            connection = await self._connect()
        request_id = self._next_id
        self._next_id += 1
        line_body["id"] = request_id
        line = _wire.encode(line_body)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        # Queue and write in one step: no other call can come between them.
        connection.pending.append((request_id, future))
        connection.writer.write(line)
        try:
            async with asyncio.timeout(self.timeout):
                if connection.writer.transport.get_write_buffer_size() > _WRITE_HIGH_WATER:
                    await connection.writer.drain()
                reply = await future
        except TimeoutError:
            # The future stays queued (cancelled), so that its reply, should
            # it come, is matched to it and dropped: positions stay right.
            raise CbdError("timeout", f"no reply from cbd at {self.socket_path} within {self.timeout} s") from None
        except ConnectionError as error:
            self._drop(connection, CbdError("connection_lost", f"lost the connection to cbd at {self.socket_path}: {error}"))
            raise CbdError("connection_lost", f"lost the connection to cbd at {self.socket_path}: {error}") from None
        return _wire.result(reply)

    async def _connect(self) -> _AsyncConnection:
        if self._closed:
            raise CbdError("closed", "the client was closed")
        if self._connecting is not None:
            # Another call is connecting: share its result.
            return await asyncio.shield(self._connecting)
        now = time.monotonic()
        if now < self._down_until:
            raise Unavailable(f"cbd at {self.socket_path} is down; next try in {int((self._down_until - now) * 1000)} ms")
        loop = asyncio.get_running_loop()
        self._connecting = loop.create_future()
        connecting = self._connecting
        try:
            try:
                # A Unix connect succeeds or fails at once; the timeout only
                # bounds a cbd whose listen backlog is full.
                async with asyncio.timeout(self.timeout):
                    reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=_wire.MAX_REPLY_BYTES)
            except (OSError, TimeoutError) as error:
                self._down_until = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, _wire.MAX_BACKOFF_S)
                reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error) or "timed out"
                raise Unavailable(f"cannot connect to cbd at {self.socket_path}: {reason}") from None
            self._backoff = _wire.MIN_BACKOFF_S
            self._down_until = 0.0
            connection = _AsyncConnection(reader, writer)
            connection.reader_task = loop.create_task(self._read_replies(connection))
            self._connection = connection
            connecting.set_result(connection)
            return connection
        except BaseException as error:
            connecting.set_exception(error if isinstance(error, Exception) else CbdError("unavailable", "connect cancelled"))
            # Nobody may be waiting on it; do not let asyncio log that.
            connecting.exception()
            raise
        finally:
            self._connecting = None

    async def _read_replies(self, connection: _AsyncConnection) -> None:
        """The connection's reader: each reply to the oldest request."""
        error: CbdError
        try:
            while True:
                line = await connection.reader.readline()
                if not line.endswith(b"\n"):
                    error = CbdError("connection_lost", f"cbd at {self.socket_path} closed the connection")
                    break
                reply = _wire.decode(line)
                if not connection.pending:
                    error = CbdError("bad_reply", "cbd sent a reply to no request")
                    break
                request_id, future = connection.pending.popleft()
                reply_id = reply.get("id")
                if reply_id is not None and reply_id != request_id:
                    error = CbdError("bad_reply", f"reply {reply_id!r} came in place of {request_id}")
                    break
                if not future.done():
                    future.set_result(reply)
        except CbdError as bad:
            error = bad
        except ValueError:
            # StreamReader's limit: a line longer than any reply of cbd's.
            error = CbdError("bad_reply", f"a reply longer than {_wire.MAX_REPLY_BYTES} bytes")
        except OSError as lost:
            error = CbdError("connection_lost", f"lost the connection to cbd at {self.socket_path}: {lost}")
        self._drop(connection, error)

    def _drop(self, connection: _AsyncConnection, error: CbdError) -> None:
        if not connection.alive:
            return
        connection.alive = False
        if self._connection is connection:
            self._connection = None
        while connection.pending:
            _, future = connection.pending.popleft()
            if not future.done():
                future.set_exception(error)
        connection.writer.close()


class AsyncWatch:
    """An async iterator of watch events on a connection of its own. Ends
    after an ``overflow`` event and on ``aclose()``; raises
    CbdError('connection_lost') if cbd goes away."""

    def __init__(self, socket_path: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._socket_path = socket_path
        self._reader = reader
        self._writer = writer
        self._closed = False
        self._ended = False

    async def _next_message(self) -> dict[str, Any]:
        try:
            line = await self._reader.readline()
        except ValueError:
            raise CbdError("bad_reply", f"an event longer than {_wire.MAX_REPLY_BYTES} bytes") from None
        except OSError as error:
            raise CbdError("connection_lost", f"lost the watch on cbd at {self._socket_path}: {error}") from None
        if not line.endswith(b"\n"):
            raise CbdError("connection_lost", f"cbd at {self._socket_path} closed the watch")
        return _wire.decode(line)

    def __aiter__(self) -> "AsyncWatch":
        return self

    async def __anext__(self) -> WatchEvent:
        if self._ended or self._closed:
            raise StopAsyncIteration
        try:
            event = await self._next_message()
        except CbdError:
            if self._closed:
                raise StopAsyncIteration from None
            await self.aclose()
            raise
        if event.get("event") == "overflow":
            self._ended = True
            await self.aclose()
        return event

    async def aclose(self) -> None:
        self._closed = True
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except OSError:
            pass

    async def __aenter__(self) -> "AsyncWatch":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
