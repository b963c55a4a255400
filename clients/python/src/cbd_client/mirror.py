"""Mirror mode (issue #20): the breaker decides most calls in this process.

``Client(..., mirror=True)`` keeps, per key its breakers use, a small entry
(state, generation, pin, a local deny time, last use) that a watch of those
keys keeps current. Then a guarded call on a closed circuit is a dict lookup
and an append of its outcome to a queue, sent to cbd as ``reportBatch``
lines; only what the entry cannot decide goes to cbd as an ``acquire``:

1. a key not yet covered by a confirmed watch: acquire (today's behaviour),
   and the key joins the watch set. An acquire *sent* once the watch covering
   its key was confirmed seeds the entry from its circuit; one sent before
   does not (an event could have been missed between the two);
2. closed and unpinned, or pinned closed: allowed here; the outcome is queued
   with the entry's generation;
3. a deny time learned from cbd still ahead: denied here, with
   ``retry_after_ms`` what is left of it;
4. anything else (open, half-open, pinned open): acquire. A denial with
   ``retryAfterMs`` sets the deny time (rule 3); a probe's permit is reported
   at once with ``report``, not in a batch;
5. an event of a newer generation replaces the entry (and its deny time); a
   reset forgets it until the next acquire.

When the watch is lost or overflows, every entry is forgotten (calls ask cbd,
as without the mirror) until a new watch of the whole key set is confirmed;
the watch reconnects with backoff. An entry unused for ``idle_timeout``
seconds is dropped, and its key leaves the watch at its next rebuild.

Threads: the mirror's state is guarded by one lock, except what the hot
path reads and writes without it (attribute reads, an append to a bounded
deque: each one step under the GIL). Two daemon threads, started at the
first guarded call: the watcher (the watch connection, its rebuilds, the
idle scan) and the flusher (a tick every batch interval while outcomes or
batches are outstanding: it writes partial batches and what callers left,
and reads replies while callers are idle). A call that fills a batch reads
the replies that have come and writes the batch itself, and only if the
socket takes the line at once: it never waits for cbd, and a busy caller
holding the GIL does not leave the work to a thread that seldom gets it
(a thread waiting for the GIL gets it only every switch interval, 5 ms).

Batches go on the client's own pipelined connection; the watch has its own.
A cbd before protocol 9 (it answers a watch of keys as a watch of all)
turns the mirror off: the breakers then work as without it.
"""
from __future__ import annotations

import collections
import itertools
import json
import logging
import math
import os
import select
import socket as socket_module
import threading
import time
from typing import TYPE_CHECKING, Any, Callable

from . import _wire
from .errors import CbdError

if TYPE_CHECKING:
    from .client import Client

log = logging.getLogger("cbd_client")

# Called with (key, code, message) for every queued outcome cbd refused (or
# that could not be delivered), from a mirror thread or from flush().
ReportErrorHandler = Callable[[str, str, str], None]

DEFAULT_BATCH_SIZE = 100
DEFAULT_BATCH_INTERVAL_S = 0.001
DEFAULT_IDLE_TIMEOUT_S = 60.0
DEFAULT_QUEUE_LIMIT = 10_000

# Batch lines written and not yet answered, at most; beyond it a caller that
# fills a batch leaves it queued for the flusher rather than write more.
# Generous: the flusher reads their replies when it gets the GIL, which a
# busy caller hands over only every switch interval (5 ms), and then reads
# all the replies that came meanwhile in one go. 1024 replies are about
# 60 KiB, well inside the socket's buffer and cbd's 1 MiB of unsent replies.
_MAX_IN_FLIGHT = 1024
# What the reportBatch line adds around its entries (with a long id).
_BATCH_LINE_OVERHEAD = 64
# The idle scan runs at most this far apart.
_MAX_SCAN_INTERVAL_S = 1.0
_READ_CHUNK = 64 * 1024
# Chunks read from the watch per wake-up, so a flood of events cannot keep
# the watcher from its other work.
_MAX_CHUNKS_PER_READ = 16

_monotonic = time.monotonic


def _circuit_of(reply: dict[str, Any]) -> tuple[str, int, dict[str, Any] | None] | None:
    """(state, generation, forced) of a reply or event, None if malformed."""
    snapshot = reply.get("snapshot")
    generation = reply.get("generation")
    if not isinstance(snapshot, dict) or isinstance(generation, bool) or not isinstance(generation, int):
        return None
    state = snapshot.get("state")
    if not isinstance(state, str):
        return None
    forced = reply.get("forced")
    return state, generation, forced if isinstance(forced, dict) else None


class _Entry:
    """What the mirror knows of one key. Its size does not grow with calls."""

    __slots__ = ("key", "key_json", "state", "generation", "forced", "deny_until", "used", "last_used", "seq", "local")

    def __init__(self, key: str, now: float) -> None:
        self.key = key
        self.key_json = _wire.key_json(key)
        # None: not known (never seeded, or forgotten after a reset or a
        # lost watch); calls ask cbd.
        self.state: str | None = None
        self.generation = 0
        self.forced: dict[str, Any] | None = None
        # Monotonic time until which calls are denied here; 0: none.
        self.deny_until = 0.0
        # The hot path only sets ``used`` (no clock read); the idle scan
        # turns it into ``last_used``, its own time.
        self.used = False
        self.last_used = now
        # Bumped by every event applied and every forget, so that an
        # acquire reply of the same generation sent before a reset cannot
        # seed the entry again.
        self.seq = 0
        # (success entry, failure entry) of a reportBatch while calls are
        # allowed here, else None: the one thing the hot path reads.
        self.local: tuple[str, str] | None = None

    def learn(self, state: str, generation: int, forced: dict[str, Any] | None) -> None:
        self.local = None
        self.state = state
        self.generation = generation
        self.forced = forced
        self.deny_until = 0.0
        pin = forced.get("state") if forced is not None else None
        if pin == "closed" or (pin is None and state == "closed"):
            self.local = (
                _wire.report_entry(self.key_json, "success", generation),
                _wire.report_entry(self.key_json, "failure", generation),
            )

    def forget(self) -> None:
        self.local = None
        self.state = None
        self.forced = None
        self.deny_until = 0.0
        self.seq += 1


# What a breaker holds before the mirror has an entry for its key: never local.
NO_ENTRY = _Entry("", 0.0)


class _WatchConnection:
    """A watch of a key set on a connection of its own, read without blocking."""

    def __init__(self, sock: socket_module.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()
        # What cbd confirmed: {"keys": n} from protocol 9; a cbd before it
        # ignores ``keys`` and watches everything ("all").
        self.watching: Any = None

    @classmethod
    def open(cls, path: str, keys: list[str], timeout: float) -> "_WatchConnection":
        """Connects, asks the watch and waits for its confirmation (within
        ``timeout``); CbdError when cbd refuses, OSError when unreachable."""
        sock = socket_module.socket(socket_module.AF_UNIX, socket_module.SOCK_STREAM | socket_module.SOCK_CLOEXEC)
        try:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(_wire.encode(_wire.watch_keys(keys)))
            watch = cls(sock)
            while b"\n" not in watch.buffer:
                if len(watch.buffer) > _wire.MAX_REPLY_BYTES:
                    raise CbdError("bad_reply", "an overlong watch confirmation")
                chunk = sock.recv(_READ_CHUNK)
                if not chunk:
                    raise CbdError("connection_lost", f"cbd at {path} closed the watch before confirming it")
                watch.buffer += chunk
            newline = watch.buffer.index(b"\n")
            confirmation = _wire.decode(bytes(watch.buffer[:newline]))
            del watch.buffer[: newline + 1]
            watch.watching = _wire.result(confirmation).get("watching")
            sock.setblocking(False)
            return watch
        except BaseException:
            sock.close()
            raise

    def read_lines(self) -> tuple[list[bytes], bool]:
        """The complete lines readable now, and whether the watch ended
        (cbd closed it, or a line overran the bound)."""
        closed = False
        for _ in range(_MAX_CHUNKS_PER_READ):
            try:
                chunk = self.sock.recv(_READ_CHUNK)
            except BlockingIOError:
                break
            except OSError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            self.buffer += chunk
            if len(chunk) < _READ_CHUNK:
                break
        # The lines before a close still count (an overflow, say).
        return self.take_lines(), closed or len(self.buffer) > _wire.MAX_REPLY_BYTES

    def take_lines(self) -> list[bytes]:
        end = self.buffer.rfind(b"\n")
        if end < 0:
            return []
        lines = bytes(self.buffer[:end]).split(b"\n")
        del self.buffer[: end + 1]
        return lines

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Mirror:
    """The mirror of one Client; see the module's documentation. Made by
    ``Client(..., mirror=True)``; the breakers of that client use it."""

    def __init__(
        self,
        client: "Client",
        batch_size: int = DEFAULT_BATCH_SIZE,
        batch_interval: float = DEFAULT_BATCH_INTERVAL_S,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT_S,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        on_report_error: ReportErrorHandler | None = None,
    ) -> None:
        self.batch_size = _bounded_int("mirror_batch_size", batch_size, 1, _wire.MAX_BATCH_ENTRIES)
        self.batch_interval = _bounded_seconds("mirror_batch_interval", batch_interval, 60.0)
        self.idle_timeout = _bounded_seconds("mirror_idle_timeout", idle_timeout, 7 * 86400.0)
        self.queue_limit = _bounded_int("mirror_queue_limit", queue_limit, 1, 10_000_000)
        if on_report_error is not None and not callable(on_report_error):
            raise TypeError("on_report_error must be a callable taking (key, code, message)")
        self.on_report_error = on_report_error
        # The queue length from which an append must look further (a full
        # batch, a full queue); below it, only the first outcome of a batch
        # wakes the flusher for the interval.
        self.busy_at = min(self.batch_size - 1, self.queue_limit)
        self._client = client
        # The report entries of locally decided calls, oldest first; full,
        # an append drops the oldest (counted in ``dropped``). One deque for
        # the mirror's life (cleared after fork): breakers keep a reference.
        self.queue: collections.deque[str] = collections.deque(maxlen=self.queue_limit)
        self._init_state()

    def _init_state(self) -> None:
        """Everything a process's mirror starts with (again after fork)."""
        self._lock = threading.Lock()
        # Key -> entry, for every key in (or waiting for) the watch set, at
        # most MAX_WATCH_KEYS whose watch line fits MAX_BATCH_BYTES.
        self.entries: dict[str, _Entry] = {}
        self._watch_bytes = 0
        self._send_lock = threading.Lock()
        self._settle_lock = threading.Lock()
        # Batches written and not yet answered, in the order written:
        # (connection, slot, the batch's entries).
        self._in_flight: collections.deque[tuple[Any, Any, list[str]]] = collections.deque()
        # The keys of the confirmed watch; empty while there is none.
        self._confirmed: frozenset[str] = frozenset()
        # Bumped at every lost watch: a reply to an acquire sent before the
        # loss must not seed an entry.
        self._lost_epoch = 0
        self._rebuild = False
        self._started = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.wake_flusher = threading.Event()
        self._stop = threading.Event()
        self._wake_read = self._wake_write = -1
        self._watch: _WatchConnection | None = None
        # Known once a watch of keys is confirmed (cbd speaks protocol 9):
        # until then a call cbd allowed is reported alone, not batched.
        self.batching = False
        # cbd turned out not to speak protocol 9: the mirror stays empty.
        self.unsupported = False
        self._send_failing = False
        self._last_warning = 0.0
        self._unlogged = 0
        self._dropped = itertools.count()
        # Lines taken from the queue and not yet written (long keys make
        # more than one line of a batch). Under the send lock.
        self._split: collections.deque[list[str]] = collections.deque()
        # Batches callers tried to write: the flusher waits for replies only
        # in a tick without any (the callers read them while they write).
        self._caller_writes = 0
        self.counts = {
            "asked": 0,  # acquires the breakers sent to cbd
            "applied": 0,  # outcomes cbd recorded
            "stale": 0,  # outcomes of an older generation: they count nowhere
            "errors": 0,  # outcomes cbd refused (or that got no answer)
            "unsent": 0,  # outcomes that could not be written to cbd
            "watch_losses": 0,  # watches lost or overflowed
            "watches": 0,  # watches confirmed
        }

    # --- what the breakers call ------------------------------------------

    def queue_outcome(self, report: str) -> None:
        """Queues one outcome (a report_entry): a length, an append, and
        rarely a wake-up or a write. Breaker.call has the same inline."""
        queue = self.queue
        queued = len(queue)
        queue.append(report)
        if queued >= self.busy_at:
            self.queued_many(queued)
        elif queued == 0:
            self.wake_flusher.set()

    def queued_many(self, queued: int) -> None:
        """After an append to a queue that held ``queued`` outcomes, at
        least busy_at: count a drop, write a full batch. While cbd is
        behind, a write is tried once per batch_size calls."""
        if queued >= self.queue_limit:
            dropped = next(self._dropped)  # atomic, and cheaper than the lock
            if queued + 1 < self.batch_size or dropped % self.batch_size:
                return
        elif (queued + 1) % self.batch_size:
            return
        self._send_queued(blocking=False)

    def before_acquire(self, key: str, now: float) -> tuple[_Entry | None, int, int, bool]:
        """Before a breaker's acquire: what after_acquire needs to judge
        whether the reply may seed the entry."""
        if not self._started:
            self._start()
        with self._lock:
            self.counts["asked"] += 1
            entry = self.entries.get(key)
            covered = key in self._confirmed
            if entry is None and covered:
                # Events of the key arrive from now on: they must find an
                # entry, so that a reply older than them cannot seed it.
                entry = self._add_entry(key, now)
            if entry is not None:
                entry.last_used = now
            return entry, entry.seq if entry is not None else 0, self._lost_epoch, covered and entry is not None

    def after_acquire(self, key: str, token: tuple[_Entry | None, int, int, bool], reply: dict[str, Any], now: float) -> None:
        """After a breaker's acquire: the key joins the watch set, and the
        reply seeds or updates its entry when rule 1 allows."""
        sent_entry, sent_seq, sent_epoch, covered = token
        circuit = _circuit_of(reply)
        rebuild = False
        with self._lock:
            if self._stopping:
                return
            entry = self.entries.get(key)
            if entry is None:
                if self.unsupported:
                    return
                # The key proved valid: it may join the watch set.
                entry = self._add_entry(key, now)
                if entry is None:
                    return  # over the watch's bounds: this key is not mirrored
                rebuild = not self._rebuild
                self._rebuild = True
            if (
                circuit is None
                or not covered
                or entry is not sent_entry
                or sent_epoch != self._lost_epoch
                or key not in self._confirmed
            ):
                pass
            else:
                state, generation, forced = circuit
                if generation > entry.generation or (generation == entry.generation and entry.seq == sent_seq):
                    entry.learn(state, generation, forced)
                    retry = reply.get("retryAfterMs")
                    if not reply.get("allowed") and isinstance(retry, int) and not isinstance(retry, bool) and retry > 0:
                        entry.deny_until = now + retry / 1000.0
        if rebuild:
            self._wake_watcher()

    def reports_for(self, key: str, generation: int) -> tuple[str, str]:
        """The (success, failure) report entries of a call cbd allowed
        without a permit, to be queued like a local one."""
        key_json = _wire.key_json(key)
        return (_wire.report_entry(key_json, "success", generation), _wire.report_entry(key_json, "failure", generation))

    # --- the client's API ----------------------------------------------------

    def flush(self) -> None:
        """Sends every outcome queued so far and waits until cbd has
        answered them all (each batch within the client's timeout)."""
        if not self._started:
            return
        self._send_queued(blocking=True, limit=len(self.queue))
        self._settle()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            stats: dict[str, Any] = dict(self.counts)
            # itertools.count shows its next value only in its repr.
            stats["dropped"] = int(repr(self._dropped)[6:-1])
            stats["keys"] = len(self.entries)
            stats["covered"] = sum(1 for key in self.entries if key in self._confirmed)
            stats["local"] = sum(1 for entry in self.entries.values() if entry.local is not None)
            stats["watching"] = bool(self._confirmed)
            stats["batching"] = self.batching
            stats["unsupported"] = self.unsupported
        stats["queued"] = len(self.queue)
        stats["in_flight"] = len(self._in_flight)
        return stats

    def entry(self, key: str) -> dict[str, Any] | None:
        """What the mirror knows of ``key`` now, or None."""
        now = _monotonic()
        with self._lock:
            entry = self.entries.get(key)
            if entry is None:
                return None
            return {
                "state": entry.state,
                "generation": entry.generation,
                "forced": entry.forced,
                "covered": key in self._confirmed,
                "local": entry.local is not None,
                "deny_ms": max(0, math.ceil((entry.deny_until - now) * 1000)),
            }

    def close(self) -> None:
        """Flushes, then stops the threads and forgets every entry."""
        try:
            self.flush()
        except Exception as error:  # close() must close
            log.warning("cbd mirror: the last flush failed: %s", error)
        with self._lock:
            self._stopping = True
            for entry in self.entries.values():
                entry.forget()
            self.entries.clear()
            self._confirmed = frozenset()
        self._stop.set()
        self.wake_flusher.set()
        self._wake_watcher()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        for fd in (self._wake_read, self._wake_write):
            if fd >= 0:
                os.close(fd)
        self._wake_read = self._wake_write = -1

    def after_fork(self) -> None:
        """In a forked child: drop the parent's threads, queue and watch
        (the parent sends its own outcomes) and start over."""
        for fd in (self._wake_read, self._wake_write):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        watch = self._watch
        stopping = self._stopping
        for entry in self.entries.values():
            entry.forget()  # breakers may hold them: no longer local
        self.queue.clear()
        self._init_state()
        self._stopping = stopping
        if watch is not None:
            watch.close()

    # --- entries and the watch set -------------------------------------------

    def _add_entry(self, key: str, now: float) -> _Entry | None:
        """A new entry, or None beyond the watch's bounds. Lock held."""
        entry = _Entry(key, now)
        cost = len(entry.key_json) + 1
        if len(self.entries) >= _wire.MAX_WATCH_KEYS or self._watch_bytes + cost > _wire.MAX_BATCH_BYTES - _BATCH_LINE_OVERHEAD:
            return None
        self.entries[key] = entry
        self._watch_bytes += cost
        return entry

    def _drop_idle(self, now: float) -> None:
        with self._lock:
            idle = []
            for key, entry in self.entries.items():
                if entry.used:
                    entry.used = False
                    entry.last_used = now
                elif now - entry.last_used > self.idle_timeout:
                    idle.append(key)
            for key in idle:
                entry = self.entries.pop(key)
                entry.forget()
                self._watch_bytes -= len(entry.key_json) + 1
        if idle:
            log.debug("cbd mirror: dropped %d idle keys", len(idle))

    def _forget_all(self) -> None:
        with self._lock:
            self._lost_epoch += 1
            self.counts["watch_losses"] += 1
            for entry in self.entries.values():
                entry.forget()
                # The cbd behind the next watch may be another one (a
                # restart of the memory backend counts generations anew):
                # only what comes after that watch is confirmed counts.
                entry.generation = 0

    def _lose_watch(self, why: str) -> None:
        with self._lock:
            self._confirmed = frozenset()
        self._forget_all()
        log.warning("cbd mirror: %s; calls ask cbd until a new watch is confirmed", why)

    def _apply_events(self, lines: list[bytes]) -> bool:
        """Applies event lines; False when the watch must be given up (an
        overflow, a line that is not an event)."""
        events = []
        for line in lines:
            if not line.strip():
                continue
            try:
                event = _wire.decode(line)
            except CbdError:
                return False
            if event.get("event") == "overflow":
                return False
            events.append(event)
        if not events:
            return True
        with self._lock:
            for event in events:
                entry = self.entries.get(event.get("key"))  # type: ignore[arg-type]
                if entry is None:
                    continue
                kind = event.get("event")
                if kind == "reset":
                    entry.forget()
                elif kind == "transition":
                    circuit = _circuit_of(event)
                    if circuit is not None and circuit[1] > entry.generation:
                        entry.learn(*circuit)
                        entry.seq += 1
        return True

    # --- threads ----------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._started or self._stopping:
                return
            self._started = True
            self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._threads = [
                threading.Thread(target=self._watch_loop, name="cbd-mirror-watch", daemon=True),
                threading.Thread(target=self._flush_loop, name="cbd-mirror-flush", daemon=True),
            ]
        for thread in self._threads:
            thread.start()

    def _wake_watcher(self) -> None:
        if self._wake_write >= 0:
            try:
                os.write(self._wake_write, b"w")
            except (BlockingIOError, OSError):
                pass  # a wake-up is already pending, or the mirror closed

    def _watch_loop(self) -> None:
        backoff = 0.0
        next_try = 0.0
        scan_interval = min(_MAX_SCAN_INTERVAL_S, self.idle_timeout / 4)
        next_scan = _monotonic() + scan_interval
        poller = select.poll()
        poller.register(self._wake_read, select.POLLIN)
        try:
            while not self._stopping:
                now = _monotonic()
                with self._lock:
                    wanted = bool(self.entries) and (self._rebuild or self._watch is None)
                if wanted and now >= next_try:
                    if self._open_watch(poller):
                        backoff = 0.0
                    else:
                        backoff = min(backoff * 2, _wire.MAX_BACKOFF_S) if backoff else _wire.MIN_BACKOFF_S
                        next_try = _monotonic() + backoff
                    continue
                if now >= next_scan:
                    self._drop_idle(now)
                    next_scan = now + scan_interval
                wait = next_scan - now
                if wanted:
                    wait = min(wait, next_try - now)
                for fd, _ in poller.poll(max(1, int(wait * 1000 + 0.999))):
                    if fd == self._wake_read:
                        try:
                            while os.read(self._wake_read, 4096):
                                pass
                        except (BlockingIOError, OSError):
                            pass
                    elif self._watch is not None and fd == self._watch.sock.fileno():
                        self._read_watch(poller)
        except Exception:  # a bug: say so, and leave the breakers asking cbd
            log.exception("cbd mirror: the watch thread failed")
            self._lose_watch("the watch thread failed")
        finally:
            if self._watch is not None:
                self._watch.close()
                self._watch = None

    def _open_watch(self, poller: select.poll) -> bool:
        """Opens the watch of the whole key set; once confirmed it replaces
        the old one. False when it could not be had."""
        with self._lock:
            keys = list(self.entries)
            self._rebuild = False
        try:
            fresh = _WatchConnection.open(self._client.socket_path, keys, self._client.timeout)
        except (OSError, CbdError) as error:
            with self._lock:
                self._rebuild = True
            log.debug("cbd mirror: could not watch %d keys: %s", len(keys), error)
            return False
        if not (isinstance(fresh.watching, dict) and "keys" in fresh.watching):
            # A cbd before protocol 9: no watch of a key set, no reportBatch.
            # The breakers go on as without the mirror.
            fresh.close()
            with self._lock:
                self.unsupported = True
                for entry in self.entries.values():
                    entry.forget()
                self.entries.clear()
                self._watch_bytes = 0
            log.warning("cbd at %s does not speak protocol 9 (watch of keys, reportBatch): mirror mode is off", self._client.socket_path)
            return True
        old = self._watch
        if old is not None:
            # Events the old watch carried before the new one was confirmed
            # are already written by cbd (it writes events as they happen):
            # read them, then close it. Later ones come on the new one;
            # those seen on both are told apart by generation.
            lines, _ = old.read_lines()
            complete = self._apply_events(lines)
            poller.unregister(old.sock)
            old.close()
            if not complete:
                # It overflowed: entries may have missed events. They are
                # seeded again under the new watch.
                self._forget_all()
        with self._lock:
            self._confirmed = frozenset(keys)
            self.counts["watches"] += 1
            self.batching = True
            # Keys that arrived while the watch was being opened need another.
            if any(key not in self._confirmed for key in self.entries):
                self._rebuild = True
        self._watch = fresh
        poller.register(fresh.sock, select.POLLIN)
        if not self._apply_events(fresh.take_lines()):
            self._give_up_watch(poller, "the watch overflowed")
        return True

    def _read_watch(self, poller: select.poll) -> None:
        assert self._watch is not None
        lines, ended = self._watch.read_lines()
        if not self._apply_events(lines):
            self._give_up_watch(poller, "the watch overflowed (or sent a line that is not an event)")
        elif ended:
            self._give_up_watch(poller, "lost the watch connection to cbd")

    def _give_up_watch(self, poller: select.poll, why: str) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            poller.unregister(watch.sock)
            watch.close()
        self._lose_watch(why)

    def _flush_loop(self) -> None:
        """Idle until an outcome is queued; then a tick every batch interval
        while outcomes or batches are outstanding: writes what the callers
        left (a partial batch, or batches cbd was too slow to take at
        once) and reads the replies. Callers that fill batches write and
        read themselves, so that a busy caller rarely hands the GIL here."""
        wake = self.wake_flusher
        while not self._stopping:
            wake.wait()
            wake.clear()
            while not self._stopping and (self.queue or self._in_flight or self._split):
                caller_writes = self._caller_writes
                self._stop.wait(self.batch_interval)
                try:
                    if self.queue or self._split:
                        self._send_queued(blocking=True, limit=len(self.queue))
                    self._settle(wait=self._caller_writes == caller_writes)
                except Exception:
                    log.exception("cbd mirror: the flush thread failed a round")

    # --- batches ----------------------------------------------------------------

    def _send_queued(self, blocking: bool, limit: int | None = None) -> None:
        """Writes queued outcomes as reportBatch lines: one line from a
        call that filled a batch (``blocking`` False: only if the line goes
        out without waiting — not while another thread writes, not beyond
        _MAX_IN_FLIGHT, not into a full socket), else up to ``limit``
        outcomes, waiting for the socket as needed."""
        if not self._send_lock.acquire(blocking=blocking):
            return
        try:
            if not blocking:
                # The caller reads the replies that have come (no waiting,
                # and no other thread to hand the GIL to), and writes only
                # if the line goes out at once. If cbd is behind (or there
                # is no connection yet) the caller does not wait for it:
                # the queue fills, drops its oldest, and the flusher's next
                # tick writes what is left.
                self._caller_writes += 1
                self._settle(wait=False)
                if len(self._in_flight) >= _MAX_IN_FLIGHT or not self._client._writable_now():
                    return
            taken = 0
            while self._split or (self.queue and (limit is None or taken < limit)):
                if blocking:
                    # Wait for room outside the client's write lock, which
                    # the callers' own reads need.
                    self._client._wait_writable(_monotonic() + self._client.timeout)
                if not self._split:
                    self._split.extend(self._take_lines())
                line = self._split.popleft()
                taken += len(line)
                self._write_batch(line)
                if not blocking:
                    return
        finally:
            self._send_lock.release()

    def _take_lines(self) -> list[list[str]]:
        """Takes up to MAX_BATCH_ENTRIES queued entries, as lines of under
        MAX_BATCH_BYTES (one, unless keys are long). Called with the send
        lock held: the only taker, while others only append (an append to
        the full deque drops one and adds one), so the count stays there."""
        queue = self.queue
        popleft = queue.popleft
        taken = [popleft() for _ in range(min(len(queue), _wire.MAX_BATCH_ENTRIES))]
        if sum(map(len, taken)) + len(taken) + _BATCH_LINE_OVERHEAD <= _wire.MAX_BATCH_BYTES:
            return [taken]
        lines: list[list[str]] = []
        line: list[str] = []
        size = _BATCH_LINE_OVERHEAD
        for report in taken:
            if line and size + len(report) + 1 > _wire.MAX_BATCH_BYTES:
                lines.append(line)
                line, size = [], _BATCH_LINE_OVERHEAD
            line.append(report)
            size += len(report) + 1
        lines.append(line)
        return lines

    def _write_batch(self, batch: list[str]) -> None:
        client = self._client
        try:
            connection, slot = client._send_line(
                lambda request_id: _wire.report_batch_line(request_id, batch), _monotonic() + client.timeout
            )
        except CbdError as error:
            self._refused(batch, error.code, f"not sent: {error.message}", "unsent")
            return
        self._send_failing = False
        self._in_flight.append((connection, slot, batch))

    def _settle(self, wait: bool = True) -> None:
        """Reads the answers of the batches in flight, in order, and counts
        them; without ``wait`` only those already come (and not while
        another thread settles)."""
        client = self._client
        if not self._settle_lock.acquire(blocking=wait):
            return
        try:
            if not wait:
                client._read_ready()
            while self._in_flight:
                connection, slot, batch = self._in_flight[0]
                if not wait and not slot.done:
                    return
                try:
                    reply = _wire.result(client._receive(connection, slot, _monotonic() + client.timeout))
                except CbdError as error:
                    self._refused(batch, error.code, error.message, "errors")
                else:
                    self._count(batch, reply)
                self._in_flight.popleft()
        finally:
            self._settle_lock.release()

    def _count(self, batch: list[str], reply: dict[str, Any]) -> None:
        applied, stale, errors = reply.get("applied"), reply.get("stale"), reply.get("errors")
        if not isinstance(applied, int) or not isinstance(stale, int) or not isinstance(errors, list):
            self._refused(batch, "bad_reply", "a reportBatch reply without applied, stale and errors", "errors")
            return
        with self._lock:
            self.counts["applied"] += applied
            self.counts["stale"] += stale
            self.counts["errors"] += len(errors)
        if applied + stale + len(errors) != len(batch):
            log.warning("cbd mirror: a batch of %d outcomes answered %d applied, %d stale, %d errors", len(batch), applied, stale, len(errors))
        if errors:
            failed = []
            for error in errors:
                index = error.get("index") if isinstance(error, dict) else None
                if isinstance(index, int) and 0 <= index < len(batch):
                    failed.append((_key_of(batch[index]), str(error.get("code")), str(error.get("message"))))
            self._tell(failed, f"cbd refused {len(errors)} of {len(batch)} batched outcomes")

    def _refused(self, batch: list[str], code: str, message: str, counter: str) -> None:
        """A whole batch cbd did not take: counted, told, never raised."""
        with self._lock:
            self.counts[counter] += len(batch)
        if counter == "unsent":
            if self._send_failing:
                return  # told once per outage
            self._send_failing = True
        self._tell([(_key_of(report), code, message) for report in batch], f"{len(batch)} batched outcomes lost ({code})")

    def _tell(self, failed: list[tuple[str, str, str]], summary: str) -> None:
        handler = self.on_report_error
        if handler is None:
            # At most one warning a second: an outage fails every batch.
            now = _monotonic()
            if now - self._last_warning < 1.0:
                self._unlogged += 1
                return
            first = f": {failed[0][0]!r} {failed[0][1]}: {failed[0][2]}" if failed else ""
            more = f" (and {self._unlogged} more such warnings in the last second)" if self._unlogged else ""
            log.warning("cbd mirror: %s%s%s", summary, first, more)
            self._last_warning, self._unlogged = now, 0
            return
        for key, code, message in failed:
            try:
                handler(key, code, message)
            except Exception:
                log.exception("cbd mirror: on_report_error raised")


def _key_of(report: str) -> str:
    try:
        return str(json.loads(report)["key"])
    except (ValueError, KeyError, TypeError):
        return ""


def _bounded_int(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low} … {high}, not {value}")
    return value


def _bounded_seconds(name: str, value: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if not (math.isfinite(value) and 0 < value <= high):
        raise ValueError(f"{name} must be more than 0 and at most {high:g} seconds, not {value!r}")
    return float(value)
