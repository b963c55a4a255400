"""Client: the whole cbd protocol for threaded code.

Thread safety: one Client is meant to be shared by every thread of a
process. It holds ONE connection, and threads pipeline on it:

- a thread writes its request line and appends its slot to the connection's
  queue under the write lock, so the order of the queue is the order of the
  lines on the wire;
- cbd answers in request order, so the n-th reply belongs to the n-th slot
  (a reply without an id, such as a parse_error, is matched by position;
  one whose id disagrees means the stream is corrupt and the connection is
  dropped);
- whichever waiting thread holds the read lock reads replies and hands each
  to its slot until its own is filled; the others wait for the read lock and
  usually find their reply already there. No background thread.

When cbd is not there (the socket is missing or refuses) a call raises
Unavailable at once, and so does every call while the backoff that follows
runs (50 ms, doubling to 2 s); the first call after it tries to connect
again. A process that forks (gunicorn, multiprocessing) gets a fresh
connection in the child: the parent's is never used by two processes.
"""
from __future__ import annotations

import collections
import os
import select
import socket as socket_module
import threading
import time
import weakref
from typing import Any, Callable, Iterator, Mapping

from . import _wire
from .breaker import Breaker, FailurePredicate
from .errors import CbdError, Unavailable
from .mirror import (
    DEFAULT_BATCH_INTERVAL_S,
    DEFAULT_BATCH_SIZE,
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_QUEUE_LIMIT,
    Mirror,
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

_READ_CHUNK = 64 * 1024


class _Slot:
    """One request's place in a connection's queue, filled by a reader."""

    __slots__ = ("id", "reply", "error", "done")

    def __init__(self, request_id: int) -> None:
        self.id = request_id
        self.reply: dict[str, Any] | None = None
        self.error: CbdError | None = None
        self.done = False


class _Connection:
    """A connected socket, its unread bytes and its unanswered requests."""

    def __init__(self, sock: socket_module.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        self.pending: collections.deque[_Slot] = collections.deque()
        self.alive = True
        self.pid = os.getpid()
        self.poller = select.poll()
        self.poller.register(sock, select.POLLOUT)


def _wait(connection: _Connection, events: int, deadline: float) -> bool:
    """Polls until the socket is ready for ``events``; False at the deadline.

    Polls in slices of at most 100 ms and gives up (True: the caller's next
    recv or send fails and sees why) once the connection is dropped: another
    thread may have closed the descriptor, and its number may already
    belong to a new socket."""
    poller = select.poll()
    poller.register(connection.sock, events)
    while connection.alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        if poller.poll(max(1, min(100, int(remaining * 1000 + 0.999)))):
            return True
    return True


def _send_all(connection: _Connection, data: bytes, deadline: float) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[connection.sock.send(view) :]
        except BlockingIOError:
            # cbd is not reading (its reply bound is full): wait, bounded.
            if not _wait(connection, select.POLLOUT, deadline):
                raise TimeoutError("cbd did not take the request") from None


# Clients of this process, so that a forked child can drop what it inherited.
_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Client:
    """A thread-safe client of cbd over one pipelined connection.

    ``socket``: the socket path; by default $CBD_SOCKET, else
    $XDG_RUNTIME_DIR/cbd/cbd.sock for a non-root user, else /run/cbd/cbd.sock
    (the rule of cbd and cbctl). ``timeout``: seconds a call waits for its
    reply before raising CbdError('timeout').

    Replies are dicts with the wire's field names, without ``ok`` and ``id``
    (see cbd_client.types). cbd's errors raise CbdError with its code.

    ``mirror=True`` turns on mirror mode for the breakers of this client
    (see cbd_client.mirror): calls on a closed circuit are decided here and
    their outcomes sent in batches of ``mirror_batch_size`` (1 … 1000) or
    ``mirror_batch_interval`` seconds after the first queued one, whichever
    comes first; at most ``mirror_queue_limit`` outcomes wait (the oldest are
    dropped beyond it); a key unused for ``mirror_idle_timeout`` seconds is
    dropped from the mirror. ``on_report_error(key, code, message)`` hears of
    every batched outcome cbd refused or that was lost (else they are logged).
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
        self._mirror: Mirror | None = None
        if mirror:
            self._mirror = Mirror(
                self,
                batch_size=mirror_batch_size,
                batch_interval=mirror_batch_interval,
                idle_timeout=mirror_idle_timeout,
                queue_limit=mirror_queue_limit,
                on_report_error=on_report_error,
            )
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._connection: _Connection | None = None
        self._next_id = 1
        self._closed = False
        # Monotonic time before which a connect is not tried, and the next
        # backoff: the fail-fast state while cbd is known to be down.
        self._down_until = 0.0
        self._backoff = _wire.MIN_BACKOFF_S
        _clients.add(self)

    # --- the reference store ----------------------------------------------

    def get(self, key: str) -> CircuitReply:
        """The circuit (created closed if unknown)."""
        return self._call(_wire.key_op("get", key))  # type: ignore[return-value]

    def success(self, key: str) -> CircuitReply:
        """Counts a success (never changes the state)."""
        return self._call(_wire.key_op("success", key))  # type: ignore[return-value]

    def failure(self, key: str) -> CircuitReply:
        """Counts a failure and stamps lastFailureTime (never changes the state)."""
        return self._call(_wire.key_op("failure", key))  # type: ignore[return-value]

    def transition(
        self, key: str, to: State, expect: State | None = None, expect_generation: int | None = None
    ) -> CircuitReply:
        """Moves the circuit to ``to``; with ``expect``/``expect_generation``
        only if they hold (else CbdError 'conflict', whose reply has the circuit)."""
        return self._call(_wire.transition(key, to, expect, expect_generation))  # type: ignore[return-value]

    def reset(self, key: str) -> bool:
        """Removes the circuit; whether it existed."""
        return bool(self._call(_wire.key_op("reset", key))["removed"])

    def ping(self) -> PingReply:
        return self._call({"op": "ping"})  # type: ignore[return-value]

    # --- the breaker --------------------------------------------------------

    def acquire(self, key: str) -> AcquireReply:
        """May a call go ahead? ``allowed``, and ``permit`` in half-open or
        ``retryAfterMs`` when denied."""
        return self._call(_wire.key_op("acquire", key))  # type: ignore[return-value]

    def report(
        self, key: str, outcome: Outcome, generation: int | None = None, permit: str | None = None
    ) -> ReportReply:
        """The outcome of an acquired call, with the generation and permit
        acquire returned."""
        return self._call(_wire.report(key, outcome, generation, permit))  # type: ignore[return-value]

    def force(self, key: str, state: PinState, ttl_ms: int | None = None, reason: str | None = None) -> CircuitReply:
        """Pins the circuit open or closed, for ``ttl_ms`` if given."""
        return self._call(_wire.force(key, state, ttl_ms, reason))  # type: ignore[return-value]

    def unforce(self, key: str) -> CircuitReply:
        return self._call(_wire.key_op("unforce", key))  # type: ignore[return-value]

    def configure(self, key: str, policy: Mapping[str, int | None] | None) -> PolicyReply:
        """Sets the key's own policy values (wire names: failureThreshold,
        resetTimeoutMs, halfOpenMax, successThreshold, probeLeaseMs); a None
        value drops one, ``policy=None`` drops the whole override."""
        return self._call(_wire.configure(key, policy))  # type: ignore[return-value]

    def policy(self, key: str) -> PolicyReply:
        """The key's effective policy and where each value comes from."""
        return self._call(_wire.key_op("policy", key))  # type: ignore[return-value]

    def breaker(
        self, key: str, fail_open: bool = True, is_failure: FailurePredicate | None = None
    ) -> Breaker:
        """acquire → call → report around a call; see cbd_client.breaker.Breaker."""
        return Breaker(self, key, fail_open=fail_open, is_failure=is_failure)

    # --- observing -----------------------------------------------------------

    def list(
        self, prefix: str | None = None, state: State | None = None, limit: int | None = None, after: str | None = None
    ) -> ListReply:
        """One page of circuits in key order; pass ``next`` back as ``after``."""
        return self._call(_wire.list_page(prefix, state, limit, after))  # type: ignore[return-value]

    def list_all(self, prefix: str | None = None, state: State | None = None) -> Iterator[ListedCircuit]:
        """Every circuit, page by page."""
        after: str | None = None
        while True:
            page = self.list(prefix=prefix, state=state, after=after)
            yield from page["circuits"]
            if page["next"] is None:
                return
            after = page["next"]

    def stats(self) -> StatsReply:
        return self._call({"op": "stats"})

    def metrics(self, per_circuit: bool = False) -> str:
        """The counters in the Prometheus text format."""
        return str(self._call({"op": "metrics", "perCircuit": bool(per_circuit)})["text"])

    def watch(self, key: str | None = None, prefix: str | None = None) -> "Watch":
        """Events as they happen, on a connection of their own: iterate it,
        and close it (or use ``with``) to stop. All circuits by default, one
        ``key``, or the keys starting with ``prefix``."""
        return Watch(self.socket_path, _wire.watch(key, prefix), self.timeout)

    # --- mirror mode -----------------------------------------------------------

    def flush(self) -> None:
        """Mirror mode: sends every queued outcome and returns once cbd has
        answered them all (outcomes it refused are counted in
        ``mirror_stats()`` and told to ``on_report_error``, not raised).
        Without the mirror: nothing to do."""
        if self._mirror is not None:
            self._mirror.flush()

    def mirror_stats(self) -> dict[str, Any]:
        """Mirror mode's counters: ``asked`` (acquires sent to cbd),
        ``applied``, ``stale``, ``errors``, ``unsent``, ``dropped`` (batched
        outcomes by fate), ``watches``, ``watch_losses``, and now: ``keys``,
        ``covered``, ``local`` (keys decided here), ``watching``,
        ``batching`` (cbd confirmed a watch of keys: protocol 9),
        ``unsupported`` (cbd does not speak protocol 9: the mirror is off),
        ``queued``, ``in_flight`` (batches). Without the mirror: {}."""
        return {} if self._mirror is None else self._mirror.stats()

    def mirror_entry(self, key: str) -> dict[str, Any] | None:
        """What the mirror knows of ``key`` (``state``, ``generation``,
        ``forced``, ``covered``, ``local``, ``deny_ms``), or None."""
        return None if self._mirror is None else self._mirror.entry(key)

    # --- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """Closes the connection; calls waiting on it raise CbdError('closed').
        In mirror mode it flushes the queued outcomes first."""
        if self._mirror is not None:
            self._mirror.close()
        with self._write_lock:
            self._closed = True
            if self._connection is not None:
                self._drop(self._connection, CbdError("closed", "the client was closed"))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- the connection ------------------------------------------------------

    def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        connection, slot = self._send(body, deadline)
        return _wire.result(self._receive(connection, slot, deadline))

    def _send(self, body: dict[str, Any], deadline: float) -> tuple[_Connection, _Slot]:
        def line_with(request_id: int) -> bytes:
            body["id"] = request_id
            return _wire.encode(body)

        return self._send_line(line_with, deadline)

    def _send_line(self, line_with: Callable[[int], bytes], deadline: float) -> tuple[_Connection, _Slot]:
        """Writes the request line ``line_with(id)`` and queues its slot;
        the reply is for _receive. The mirror sends its batches so."""
        with self._write_lock:
            # A send that fails on a connection cbd has closed (it stopped,
            # or dropped us as idle) delivered no complete line, so it is
            # tried once more on a fresh connection.
            for attempt in range(2):
                connection = self._connect()
                request_id = self._next_id
                self._next_id += 1
                line = line_with(request_id)
                slot = _Slot(request_id)
                connection.pending.append(slot)
                try:
                    _send_all(connection, line, deadline)
                    return connection, slot
                except TimeoutError:
                    self._drop(connection, CbdError("timeout", f"cbd at {self.socket_path} did not read the request"))
                    raise slot.error or CbdError("timeout", "cbd did not read the request") from None
                except OSError as error:
                    self._drop(connection, CbdError("connection_lost", f"lost the connection to cbd at {self.socket_path}: {error}"))
                    if attempt == 1:
                        raise Unavailable(f"cbd at {self.socket_path}: {error}") from None
            raise AssertionError("unreachable")

    def _read_ready(self) -> None:
        """Reads the replies that have already come, without waiting (and
        not while another thread reads): for the mirror's batches."""
        connection = self._connection
        if connection is None or not self._read_lock.acquire(blocking=False):
            return
        try:
            # A deadline already past: _read_reply takes what is buffered
            # or readable now, and returns False rather than wait.
            while connection.alive and connection.pending and self._read_reply(connection, 0.0):
                pass
        finally:
            self._read_lock.release()

    def _wait_writable(self, deadline: float) -> None:
        """Waits (holding no lock) until the live connection is writable,
        so that the mirror's next batch line does not block the write lock
        while cbd catches up; returns at the deadline or without one."""
        connection = self._connection
        while connection is not None and connection.alive and not self._writable_now():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                connection.poller.poll(max(1, min(100, int(remaining * 1000))))
            except (OSError, ValueError):
                return

    def _writable_now(self) -> bool:
        """Whether the live connection takes a mirror batch line without
        waiting: Linux reports a Unix stream socket writable only while at
        most a quarter of its send buffer (208 KiB by default) is in use,
        so a line of at most 60 KiB goes out whole. False without one."""
        connection = self._connection
        if connection is None or not connection.alive:
            return False
        try:
            ready = connection.poller.poll(0)
        except (OSError, ValueError):
            return False
        return bool(ready) and ready[0][1] & (select.POLLOUT | select.POLLERR | select.POLLHUP | select.POLLNVAL) == select.POLLOUT

    def _connect(self) -> _Connection:
        """The live connection, or a new one; Unavailable at once if not."""
        if self._closed:
            raise CbdError("closed", "the client was closed")
        connection = self._connection
        if connection is not None and connection.alive:
            return connection
        now = time.monotonic()
        if now < self._down_until:
            raise Unavailable(f"cbd at {self.socket_path} is down; next try in {int((self._down_until - now) * 1000)} ms")
        sock = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
        try:
            # A connect to a Unix socket does not wait for the peer: it
            # succeeds, or fails at once with ENOENT, ECONNREFUSED or
            # EAGAIN (backlog full). None of those is worth waiting for.
            sock.setblocking(False)
            sock.connect(self.socket_path)
        except OSError as error:
            sock.close()
            self._down_until = now + self._backoff
            self._backoff = min(self._backoff * 2, _wire.MAX_BACKOFF_S)
            raise Unavailable(f"cannot connect to cbd at {self.socket_path}: {error.strerror or error}") from None
        self._backoff = _wire.MIN_BACKOFF_S
        self._down_until = 0.0
        self._connection = _Connection(sock)
        return self._connection

    def _drop(self, connection: _Connection, error: CbdError) -> None:
        """Closes a connection and fails every request still waiting on it.
        Called with the write lock held."""
        if not connection.alive:
            return
        connection.alive = False
        if self._connection is connection:
            self._connection = None
        for slot in connection.pending:
            if not slot.done:
                slot.error, slot.done = error, True
        connection.pending.clear()
        try:
            # Wakes a thread blocked in poll on it before the descriptor goes.
            connection.sock.shutdown(socket_module.SHUT_RDWR)
        except OSError:
            pass
        connection.sock.close()

    def _receive(self, connection: _Connection, slot: _Slot, deadline: float) -> dict[str, Any]:
        while not slot.done:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._read_lock.acquire(timeout=remaining):
                break
            try:
                while not slot.done and self._read_reply(connection, deadline):
                    pass
            finally:
                self._read_lock.release()
            if not slot.done:
                break
        if not slot.done:
            # The slot stays queued, marked done, so that its reply, should
            # it come, is matched to it and dropped: positions stay right.
            slot.error, slot.done = CbdError("timeout", f"no reply from cbd at {self.socket_path} within {self.timeout} s"), True
        if slot.error is not None:
            raise slot.error
        assert slot.reply is not None
        return slot.reply

    def _read_reply(self, connection: _Connection, deadline: float) -> bool:
        """Reads one reply and hands it to the oldest slot. False at the
        deadline. Called with the read lock held."""
        if not connection.alive:
            return True  # dropped: every slot of it is done
        buffer = connection.buffer
        newline = buffer.find(b"\n")
        while newline < 0:
            if len(buffer) > _wire.MAX_REPLY_BYTES:
                self._fail(connection, CbdError("bad_reply", f"a reply longer than {_wire.MAX_REPLY_BYTES} bytes"))
                return True
            try:
                chunk = connection.sock.recv(_READ_CHUNK)
            except BlockingIOError:
                if not _wait(connection, select.POLLIN, deadline):
                    return False
                continue
            except OSError as error:
                self._fail(connection, CbdError("connection_lost", f"lost the connection to cbd at {self.socket_path}: {error}"))
                return True
            if not chunk:
                self._fail(connection, CbdError("connection_lost", f"cbd at {self.socket_path} closed the connection"))
                return True
            start = len(buffer)
            buffer += chunk
            newline = buffer.find(b"\n", start)
        line = bytes(buffer[:newline])
        del buffer[: newline + 1]
        try:
            reply = _wire.decode(line)
        except CbdError as error:
            self._fail(connection, error)
            return True
        with self._write_lock:
            if not connection.pending:
                self._drop(connection, CbdError("bad_reply", "cbd sent a reply to no request"))
                return True
            owner = connection.pending.popleft()
        reply_id = reply.get("id")
        if reply_id is not None and reply_id != owner.id:
            self._fail(connection, CbdError("bad_reply", f"reply {reply_id!r} came in place of {owner.id}"))
            return True
        if not owner.done:
            owner.reply, owner.done = reply, True
        return True

    def _fail(self, connection: _Connection, error: CbdError) -> None:
        with self._write_lock:
            self._drop(connection, error)

    def _forget_after_fork(self) -> None:
        # The child must not read or write the parent's socket: close its
        # copy of the descriptor (the parent's stays open) and start over.
        self._write_lock = threading.Lock()
        self._read_lock = threading.Lock()
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.alive = False
            connection.sock.close()
        if self._mirror is not None:
            self._mirror.after_fork()


class Watch:
    """An iterator of watch events on a connection of its own.

    The first reply (the watch confirmed) is awaited within the client's
    timeout; after that, iteration blocks until the next event. It ends
    after an ``overflow`` event (cbd drops a watcher that falls behind) and
    when ``close()`` is called (from any thread); it raises
    CbdError('connection_lost') if cbd goes away, since events may have
    been missed.
    """

    def __init__(self, socket_path: str, request: dict[str, Any], timeout: float) -> None:
        self._socket_path = socket_path
        self._buffer = bytearray()
        self._closed = False
        self._ended = False
        self._sock = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM)
        try:
            self._sock.settimeout(timeout)
            try:
                self._sock.connect(socket_path)
            except OSError as error:
                raise Unavailable(f"cannot connect to cbd at {socket_path}: {error.strerror or error}") from None
            self._sock.sendall(_wire.encode(request))
            confirmation = _wire.decode(self._read_line())
            _wire.result(confirmation)
            self._sock.settimeout(None)
        except socket_module.timeout:
            self._sock.close()
            raise CbdError("timeout", f"cbd at {socket_path} did not confirm the watch within {timeout} s") from None
        except BaseException:
            self._sock.close()
            raise

    def _read_line(self) -> bytes:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line = bytes(self._buffer[:newline])
                del self._buffer[: newline + 1]
                return line
            if len(self._buffer) > _wire.MAX_REPLY_BYTES:
                raise CbdError("bad_reply", f"an event longer than {_wire.MAX_REPLY_BYTES} bytes")
            try:
                chunk = self._sock.recv(_READ_CHUNK)
            except socket_module.timeout:
                raise
            except OSError as error:
                chunk = b""
                if not self._closed:
                    raise CbdError("connection_lost", f"lost the watch on cbd at {self._socket_path}: {error}") from None
            if not chunk:
                if self._closed:
                    raise StopIteration
                raise CbdError("connection_lost", f"cbd at {self._socket_path} closed the watch")
            self._buffer += chunk

    def __iter__(self) -> "Watch":
        return self

    def __next__(self) -> WatchEvent:
        if self._ended or self._closed:
            raise StopIteration
        try:
            event = _wire.decode(self._read_line())
        except BaseException:
            self._end()
            raise
        if event.get("event") == "overflow":
            self._end()
        return event

    def _end(self) -> None:
        self._ended = True
        self._sock.close()

    def close(self) -> None:
        """Stops the watch; an iteration blocked in another thread ends."""
        if self._closed:
            return
        self._closed = True
        try:
            # Wakes a recv blocked in another thread; close alone may not.
            self._sock.shutdown(socket_module.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def __enter__(self) -> "Watch":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
