"""The exceptions the client raises.

Every one is a CbdError, so ``except CbdError`` catches anything cbd (or the
lack of it) caused. ``code`` is cbd's own error code when cbd answered, or
one of the client's codes when it could not:

- ``unavailable``: cbd could not be reached (raised at once; see Unavailable);
- ``timeout``: no reply within the client's timeout;
- ``connection_lost``: the connection closed after the request was sent, so
  it may or may not have been applied;
- ``bad_reply``: the peer sent something that is not a cbd reply;
- ``closed``: the client was closed;
- ``circuit_open``: the breaker denied a call (see CircuitOpen).
"""
from __future__ import annotations

from typing import Any, Mapping


class CbdError(Exception):
    """An error from cbd (``code`` is its error code) or from the client."""

    code: str
    message: str
    reply: Mapping[str, Any] | None

    def __init__(self, code: str, message: str, reply: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # The whole error reply when cbd sent one: a conflict, forced or
        # no_permit reply carries the current circuit.
        self.reply = reply


class Unavailable(CbdError):
    """cbd cannot be reached: the socket is missing or refuses, or the
    client knows it is down and has not yet waited out its backoff. Raised
    without waiting, so that a caller that fails open fails in
    microseconds, not after a timeout."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class CircuitOpen(CbdError):
    """The breaker denied the call: the circuit is open, or half-open with
    every probe out, or pinned open."""

    key: str
    retry_after_ms: int | None

    def __init__(self, key: str, retry_after_ms: int | None, reply: Mapping[str, Any] | None = None) -> None:
        after = "" if retry_after_ms is None else f"; retry in {retry_after_ms} ms"
        super().__init__("circuit_open", f"circuit {key!r} is open{after}", reply)
        self.key = key
        self.retry_after_ms = retry_after_ms


# Codes that say "cbd could not serve this", not "this request was wrong":
# a breaker that fails open runs the call on these. backend_error is here
# because cbctl run fails open on it too (a damaged Redis key must not stop
# traffic).
UNAVAILABLE_CODES = frozenset(
    {
        "unavailable",
        "timeout",
        "connection_lost",
        "bad_reply",
        "too_many_connections",
        "backend_unavailable",
        "backend_error",
        "storage_unavailable",
        "internal_error",
    }
)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means cbd could not serve (as opposed to a wrong request)."""
    return isinstance(error, CbdError) and error.code in UNAVAILABLE_CODES
