"""The shapes of cbd's replies, as TypedDicts.

Replies are plain dicts with the wire's field names (``failureCount``,
``retryAfterMs``, ...), without ``ok`` and ``id``; these types describe them
for type checkers and cost nothing at run time.
"""
from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

State = Literal["closed", "open", "half-open"]
Outcome = Literal["success", "failure"]
PinState = Literal["open", "closed"]


class Snapshot(TypedDict):
    state: State
    failureCount: int
    successCount: int
    lastFailureTime: int
    lastStateChange: int


class PinnedBy(TypedDict):
    uid: int
    pid: int


class Forced(TypedDict):
    state: PinState
    until: int | None
    reason: NotRequired[str]
    by: PinnedBy


Transition = TypedDict("Transition", {"from": State, "to": State, "cause": str})


class CircuitReply(TypedDict):
    """get, success, failure, transition, force, unforce."""

    snapshot: Snapshot
    generation: int
    forced: NotRequired[Forced]
    transition: NotRequired[Transition]


class AcquireReply(TypedDict):
    allowed: bool
    permit: NotRequired[str]
    retryAfterMs: NotRequired[int]
    snapshot: Snapshot
    generation: int
    forced: NotRequired[Forced]
    transition: NotRequired[Transition]


class ReportReply(TypedDict):
    stale: NotRequired[bool]
    snapshot: Snapshot
    generation: int
    forced: NotRequired[Forced]
    transition: NotRequired[Transition]


class Policy(TypedDict):
    failureThreshold: int
    resetTimeoutMs: int
    halfOpenMax: int
    successThreshold: int
    probeLeaseMs: int


class PolicyReply(TypedDict):
    key: str
    policy: Policy
    source: dict[str, str]
    prefix: str | None


class PingReply(TypedDict):
    version: str
    protocol: int


class ListedCircuit(TypedDict):
    key: str
    snapshot: Snapshot
    generation: int
    forced: NotRequired[Forced]


class ListReply(TypedDict):
    circuits: list[ListedCircuit]
    next: str | None


# stats and watch events have many fields that grow with the protocol; they
# are dicts as cbd sends them (see docs/PROTOCOL.md, "Stats" and "Watching").
StatsReply = dict[str, Any]
WatchEvent = dict[str, Any]
