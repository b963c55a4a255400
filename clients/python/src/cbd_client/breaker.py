"""The breaker: acquire → call → report around a piece of code, with the
permit and generation cbd gave, in three forms:

    with client.breaker("payments"):          # a context manager
        charge()

    @client.breaker("payments")               # a decorator
    def charge(): ...

    client.breaker("payments").call(charge, order)

A denied call raises CircuitOpen (with ``retry_after_ms``) without running.
An exception from the call counts as a failure and is re-raised; pass
``is_failure`` to choose which exceptions count (one it rejects is reported
as a success: the upstream answered, the answer was an error of the
caller's). BaseExceptions that are not Exceptions (KeyboardInterrupt,
SystemExit, asyncio.CancelledError) say nothing about the upstream and are
not reported; a probe permit they hold ends with its lease.

On a Client made with ``mirror=True`` the Breaker asks the client's mirror
first (see cbd_client.mirror): a call on a closed circuit is allowed here and
its outcome queued for a reportBatch; a deny time learned from cbd denies
here; everything else goes to cbd as without the mirror.

When cbd cannot serve the acquire (Unavailable, a timeout, a lost
connection, a backend outage) the call runs anyway (fail open) unless
``fail_open=False``, in which case that error is raised. A report that
fails is logged and dropped: the call's own result or exception is what
the caller gets.

AsyncBreaker is the same for AsyncClient: ``async with``, a decorator of
coroutine functions, and ``await breaker.call(fn, *args)``.
"""
from __future__ import annotations

import contextvars
import functools
import logging
import math
import time
from typing import TYPE_CHECKING, Awaitable, Callable, ParamSpec, Protocol, TypeVar

from .errors import CbdError, CircuitOpen, is_unavailable
from .types import AcquireReply, Outcome, ReportReply

from .mirror import NO_ENTRY

if TYPE_CHECKING:
    from .mirror import Mirror

log = logging.getLogger("cbd_client")

P = ParamSpec("P")
R = TypeVar("R")
FailurePredicate = Callable[[Exception], bool]


class _SyncClient(Protocol):
    def acquire(self, key: str) -> AcquireReply: ...

    def report(
        self, key: str, outcome: Outcome, generation: int | None = None, permit: str | None = None
    ) -> ReportReply: ...


class _AsyncClient(Protocol):
    async def acquire(self, key: str) -> AcquireReply: ...

    async def report(
        self, key: str, outcome: Outcome, generation: int | None = None, permit: str | None = None
    ) -> ReportReply: ...


_monotonic = time.monotonic


class _Ticket:
    """What one admitted call must report: None fields when it failed open.
    ``reports``: in mirror mode, the (success, failure) entries of a
    reportBatch to queue instead of a report."""

    __slots__ = ("generation", "permit", "reports")

    def __init__(self, generation: int | None, permit: str | None, reports: tuple[str, str] | None = None) -> None:
        self.generation = generation
        self.permit = permit
        self.reports = reports


# The tickets of the calls inside `with breaker:` blocks, innermost last. A
# context variable, so that threads and asyncio tasks sharing one breaker
# each see only their own (a threading.local would mix up tasks).
_open_blocks: contextvars.ContextVar[tuple[tuple[object, _Ticket | None], ...]] = contextvars.ContextVar(
    "cbd_client_breaker_blocks", default=()
)


def _push(breaker: object, ticket: _Ticket | None) -> None:
    _open_blocks.set(_open_blocks.get() + ((breaker, ticket),))


def _pop(breaker: object) -> _Ticket | None:
    blocks = _open_blocks.get()
    for index in range(len(blocks) - 1, -1, -1):
        if blocks[index][0] is breaker:
            _open_blocks.set(blocks[:index] + blocks[index + 1 :])
            return blocks[index][1]
    raise RuntimeError("breaker exited without having been entered in this thread or task")


class _BreakerRules:
    """What both breakers decide the same way."""

    def __init__(self, key: str, fail_open: bool, is_failure: FailurePredicate | None) -> None:
        if not isinstance(key, str):
            raise TypeError(f"key must be a str, not {type(key).__name__}")
        if is_failure is not None and not callable(is_failure):
            raise TypeError("is_failure must be a callable taking the exception")
        self.key = key
        self.fail_open = bool(fail_open)
        self.is_failure = is_failure

    def admit(self, reply: AcquireReply) -> _Ticket:
        if not reply.get("allowed"):
            retry = reply.get("retryAfterMs")
            raise CircuitOpen(self.key, retry if isinstance(retry, int) else None, reply)
        return _Ticket(reply.get("generation"), reply.get("permit"))

    def on_acquire_error(self, error: CbdError) -> None:
        """Fail open (return) or raise, for an acquire that cbd could not serve."""
        if self.fail_open and is_unavailable(error):
            log.debug("cbd could not serve acquire %r (%s); running the call", self.key, error)
            return
        raise error

    # --- mirror mode (both breakers) ------------------------------------------

    def init_mirror(self, client: object) -> None:
        self._mirror: Mirror | None = getattr(client, "_mirror", None)
        # The key's entry (an entry the mirror forgets stops being local,
        # and the slow path looks the key up again), the queue and its
        # threshold, so that the hot path reads only this breaker.
        self._entry = NO_ENTRY
        if self._mirror is not None:
            self._entry = self._mirror.entries.get(self.key, NO_ENTRY)
            self._queue = self._mirror.queue
            self._busy_at = self._mirror.busy_at

    def decide_here(self, mirror: "Mirror", now: float) -> _Ticket | None:
        """Rules 2 and 3: a ticket for a call allowed here, CircuitOpen for
        one denied here; None: cbd decides (rules 1 and 4)."""
        entry = self._entry
        if entry.local is None:
            self._entry = entry = mirror.entries.get(self.key, NO_ENTRY)
        local = entry.local
        if local is not None:  # closed, or pinned closed
            entry.used = True
            return _Ticket(None, None, local)
        deny_until = entry.deny_until
        if deny_until > now:  # a deny time cbd gave
            entry.used = True
            raise CircuitOpen(self.key, math.ceil((deny_until - now) * 1000))
        return None

    def admit_mirrored(self, mirror: "Mirror", token: tuple, reply: AcquireReply) -> _Ticket:  # type: ignore[type-arg]
        """After cbd decided: the mirror learns from the reply; the call's
        outcome goes in a batch unless it is a probe's (with its permit)."""
        mirror.after_acquire(self.key, token, reply, _monotonic())  # type: ignore[arg-type]
        self._entry = mirror.entries.get(self.key, NO_ENTRY)
        ticket = self.admit(reply)
        generation = ticket.generation
        if ticket.permit is None and mirror.batching and isinstance(generation, int) and not isinstance(generation, bool):
            ticket.reports = mirror.reports_for(self.key, generation)
        return ticket

    def outcome(self, error: BaseException | None) -> Outcome | None:
        if error is None:
            return "success"
        if not isinstance(error, Exception):
            return None
        if self.is_failure is None or self.is_failure(error):
            return "failure"
        return "success"


class Breaker(_BreakerRules):
    """acquire → call → report on a Client; see the module's documentation."""

    def __init__(
        self, client: _SyncClient, key: str, fail_open: bool = True, is_failure: FailurePredicate | None = None
    ) -> None:
        super().__init__(key, fail_open, is_failure)
        self.client = client
        self.init_mirror(client)

    def _acquire(self) -> _Ticket | None:
        mirror = self._mirror
        if mirror is None:
            try:
                reply = self.client.acquire(self.key)
            except CbdError as error:
                self.on_acquire_error(error)
                return None
            return self.admit(reply)
        now = _monotonic()
        ticket = self.decide_here(mirror, now)
        if ticket is not None:
            return ticket
        token = mirror.before_acquire(self.key, now)
        try:
            reply = self.client.acquire(self.key)
        except CbdError as error:
            self.on_acquire_error(error)
            return None
        return self.admit_mirrored(mirror, token, reply)

    def _report(self, ticket: _Ticket | None, error: BaseException | None) -> None:
        outcome = self.outcome(error)
        if ticket is None or outcome is None:
            return
        if ticket.reports is not None:
            assert self._mirror is not None
            self._mirror.queue_outcome(ticket.reports[1] if outcome == "failure" else ticket.reports[0])
            return
        try:
            self.client.report(self.key, outcome, generation=ticket.generation, permit=ticket.permit)
        except CbdError as report_error:
            log.warning("could not report %s of %r to cbd: %s", outcome, self.key, report_error)

    def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Runs ``fn(*args, **kwargs)`` if the circuit allows it."""
        # The mirror's hot path, inline: the entry's reports, the call, an
        # append. Without the mirror, or when the entry is not local, the
        # first test fails and _acquire decides.
        entry = self._entry
        local = entry.local
        if local is not None:
            entry.used = True
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                outcome = self.outcome(error)
                if outcome is not None:
                    self._mirror.queue_outcome(local[1] if outcome == "failure" else local[0])  # type: ignore[union-attr]
                raise
            # Mirror.queue_outcome(local[0]), inline.
            queue = self._queue
            queued = len(queue)
            queue.append(local[0])
            if queued >= self._busy_at:
                self._mirror.queued_many(queued)  # type: ignore[union-attr]
            elif queued == 0:
                self._mirror.wake_flusher.set()  # type: ignore[union-attr]
            return result
        ticket = self._acquire()
        try:
            result = fn(*args, **kwargs)
        except BaseException as error:
            self._report(ticket, error)
            raise
        self._report(ticket, None)
        return result

    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """As a decorator: every call of ``fn`` goes through the breaker."""

        @functools.wraps(fn)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return self.call(fn, *args, **kwargs)

        return guarded

    def __enter__(self) -> "Breaker":
        _push(self, self._acquire())
        return self

    def __exit__(self, exc_type: object, error: BaseException | None, traceback: object) -> None:
        self._report(_pop(self), error)


class AsyncBreaker(_BreakerRules):
    """acquire → call → report on an AsyncClient; see the module's documentation."""

    def __init__(
        self, client: _AsyncClient, key: str, fail_open: bool = True, is_failure: FailurePredicate | None = None
    ) -> None:
        super().__init__(key, fail_open, is_failure)
        self.client = client
        self.init_mirror(client)

    async def _acquire(self) -> _Ticket | None:
        mirror = self._mirror
        if mirror is None:
            try:
                reply = await self.client.acquire(self.key)
            except CbdError as error:
                self.on_acquire_error(error)
                return None
            return self.admit(reply)
        now = _monotonic()
        ticket = self.decide_here(mirror, now)
        if ticket is not None:
            return ticket
        token = mirror.before_acquire(self.key, now)
        try:
            reply = await self.client.acquire(self.key)
        except CbdError as error:
            self.on_acquire_error(error)
            return None
        return self.admit_mirrored(mirror, token, reply)

    async def _report(self, ticket: _Ticket | None, error: BaseException | None) -> None:
        outcome = self.outcome(error)
        if ticket is None or outcome is None:
            return
        if ticket.reports is not None:
            assert self._mirror is not None
            # Queued without awaiting: the batch goes from the mirror (a
            # write only if the socket takes it at once, else its thread).
            self._mirror.queue_outcome(ticket.reports[1] if outcome == "failure" else ticket.reports[0])
            return
        try:
            await self.client.report(self.key, outcome, generation=ticket.generation, permit=ticket.permit)
        except CbdError as report_error:
            log.warning("could not report %s of %r to cbd: %s", outcome, self.key, report_error)

    async def call(self, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Awaits ``fn(*args, **kwargs)`` if the circuit allows it."""
        ticket = await self._acquire()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as error:
            await self._report(ticket, error)
            raise
        await self._report(ticket, None)
        return result

    def __call__(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        """As a decorator of a coroutine function."""

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            return await self.call(fn, *args, **kwargs)

        return guarded

    async def __aenter__(self) -> "AsyncBreaker":
        _push(self, await self._acquire())
        return self

    async def __aexit__(self, exc_type: object, error: BaseException | None, traceback: object) -> None:
        await self._report(_pop(self), error)


__all__ = ["AsyncBreaker", "Breaker", "FailurePredicate"]
