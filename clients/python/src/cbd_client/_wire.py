"""What the sync and async clients share: the socket-path rule, the request
bodies of every operation (checked before they are sent), and the framing
and decoding of lines. No I/O here."""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from .errors import CbdError

# cbd's default --max-line-bytes. A longer line would get line_too_long and
# close the connection, losing the replies of every other request pipelined
# on it, so the client refuses such a request itself.
MAX_REQUEST_BYTES = 64 * 1024
# A reply longer than this is not from cbd (a full list page is about 3 MiB).
MAX_REPLY_BYTES = 16 * 1024 * 1024
# sockaddr_un.sun_path holds 108 bytes, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107

POLICY_FIELDS = frozenset({"failureThreshold", "resetTimeoutMs", "halfOpenMax", "successThreshold", "probeLeaseMs"})

# Reconnect backoff: the first retry waits MIN, each failed connect doubles
# it up to MAX. While it runs, calls raise Unavailable without a syscall.
MIN_BACKOFF_S = 0.05
MAX_BACKOFF_S = 2.0


def resolve_socket_path(option: str | os.PathLike[str] | None) -> str:
    """The socket path, by the rule of cbd and cbctl: the option, else
    $CBD_SOCKET, else $XDG_RUNTIME_DIR/cbd/cbd.sock for a non-root user
    whose XDG_RUNTIME_DIR is set, else /run/cbd/cbd.sock."""
    if option is not None and not isinstance(option, (str, os.PathLike)):
        raise TypeError(f"socket must be a path (str), not {type(option).__name__}")
    path = os.fspath(option) if option is not None else ""
    if not path:
        path = os.environ.get("CBD_SOCKET", "")
    if not path:
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        path = f"{runtime}/cbd/cbd.sock" if runtime and os.geteuid() != 0 else "/run/cbd/cbd.sock"
    if "\0" in path:
        raise ValueError("socket path contains a NUL byte")
    if len(os.fsencode(path)) > MAX_SOCKET_PATH_BYTES:
        raise ValueError(f"socket path is longer than {MAX_SOCKET_PATH_BYTES} bytes: {path!r}")
    return path


def check_timeout(timeout: float) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not (math.isfinite(timeout) and 0 < timeout <= 3600):
        raise ValueError(f"timeout must be more than 0 and at most 3600 seconds, not {timeout!r}")
    return float(timeout)


def _key(key: str) -> str:
    # cbd checks the key's length and characters and answers invalid_key;
    # the client only makes sure it is a string that JSON can carry.
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, not {type(key).__name__}")
    return key


def _int(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


def _str(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


# --- request bodies, one per operation ------------------------------------


def key_op(op: str, key: str) -> dict[str, Any]:
    return {"op": op, "key": _key(key)}


def transition(key: str, to: str, expect: str | None, expect_generation: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"op": "transition", "key": _key(key), "to": _str("to", to)}
    if expect is not None:
        body["expect"] = _str("expect", expect)
    if expect_generation is not None:
        body["expectGeneration"] = _int("expect_generation", expect_generation)
    return body


def report(key: str, outcome: str, generation: int | None, permit: str | None) -> dict[str, Any]:
    if outcome not in ("success", "failure"):
        raise ValueError(f"outcome must be 'success' or 'failure', not {outcome!r}")
    body: dict[str, Any] = {"op": "report", "key": _key(key), "outcome": outcome}
    if generation is not None:
        body["generation"] = _int("generation", generation)
    if permit is not None:
        body["permit"] = _str("permit", permit)
    return body


def force(key: str, state: str, ttl_ms: int | None, reason: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"op": "force", "key": _key(key), "state": _str("state", state)}
    if ttl_ms is not None:
        body["ttlMs"] = _int("ttl_ms", ttl_ms)
    if reason is not None:
        body["reason"] = _str("reason", reason)
    return body


def configure(key: str, policy: Mapping[str, int | None] | None) -> dict[str, Any]:
    if policy is None:
        return {"op": "configure", "key": _key(key), "policy": None}
    if not isinstance(policy, Mapping):
        raise TypeError(f"policy must be a mapping or None, not {type(policy).__name__}")
    fields: dict[str, int | None] = {}
    for name, value in policy.items():
        if name not in POLICY_FIELDS:
            raise ValueError(f"unknown policy field {name!r}; expected one of {', '.join(sorted(POLICY_FIELDS))}")
        fields[name] = None if value is None else _int(name, value)
    return {"op": "configure", "key": _key(key), "policy": fields}


def list_page(prefix: str | None, state: str | None, limit: int | None, after: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"op": "list"}
    if prefix is not None:
        body["prefix"] = _str("prefix", prefix)
    if state is not None:
        body["state"] = _str("state", state)
    if limit is not None:
        body["limit"] = _int("limit", limit)
    if after is not None:
        body["after"] = _str("after", after)
    return body


def watch_keys(keys: list[str]) -> dict[str, Any]:
    """The watch of exactly these keys (protocol 9), as the mirror asks it."""
    return {"op": "watch", "keys": [_key(key) for key in keys]}


def watch(key: str | None, prefix: str | None) -> dict[str, Any]:
    if key is not None and prefix is not None:
        raise ValueError("watch takes a key or a prefix, not both")
    body: dict[str, Any] = {"op": "watch"}
    if key is not None:
        body["key"] = _key(key)
    if prefix is not None:
        body["prefix"] = _str("prefix", prefix)
    return body


# --- framing ----------------------------------------------------------------

# Made once: json.dumps and json.loads build or look these up on every call.
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode
_decode_json = json.JSONDecoder().decode


def encode(body: Mapping[str, Any]) -> bytes:
    """One request line. ensure_ascii keeps it free of raw newlines and of
    anything that is not valid UTF-8 (a lone surrogate is sent escaped, and
    cbd answers it with parse_error, matched by position)."""
    line = (_encode_json(body) + "\n").encode("ascii")
    if len(line) > MAX_REQUEST_BYTES:
        raise ValueError(f"request of {len(line)} bytes is longer than cbd's line limit ({MAX_REQUEST_BYTES})")
    return line


# reportBatch (protocol 9): at most this many entries per line, and lines
# kept under this many bytes, well inside cbd's 64 KiB line limit.
MAX_BATCH_ENTRIES = 1000
MAX_BATCH_BYTES = 60 * 1024
# The watch of a key set: at most this many keys, in a line of at most
# MAX_BATCH_BYTES.
MAX_WATCH_KEYS = 1000


def key_json(key: str) -> str:
    """The key as a JSON string, made once per mirrored key."""
    return _encode_json(_key(key))


def report_entry(key_json: str, outcome: str, generation: int) -> str:
    """One entry of a reportBatch, made once per key, generation and
    outcome, so that queueing an outcome is an append of a ready string."""
    return f'{{"key":{key_json},"outcome":"{outcome}","generation":{generation}}}'


def report_batch_line(request_id: int, entries: list[str]) -> bytes:
    """A reportBatch request line from entries made by report_entry."""
    return f'{{"op":"reportBatch","id":{request_id},"reports":[{",".join(entries)}]}}\n'.encode("ascii")


def decode(line: bytes) -> dict[str, Any]:
    """A reply line as a dict; CbdError('bad_reply') when it is not one."""
    try:
        reply = _decode_json(line.decode("utf-8"))
    except ValueError as error:
        raise CbdError("bad_reply", f"cbd sent a line that is not JSON: {error}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok", reply.get("event")), (bool, str)):
        raise CbdError("bad_reply", "cbd sent a line that is not a reply")
    return reply


def result(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply without ok and id, or the CbdError it carries (with the
    whole reply)."""
    if reply.get("ok") is True:
        reply.pop("ok")
        reply.pop("id", None)
        return reply
    error = reply.get("error")
    code, message = "bad_reply", "cbd answered an error without a code"
    if isinstance(error, dict):
        code = str(error.get("code", code))
        message = str(error.get("message", message))
    raise CbdError(code, message, reply)
