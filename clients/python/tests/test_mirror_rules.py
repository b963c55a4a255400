"""Mirror mode against a scripted cbd, for what a real one cannot be made
to do on cue: a watch confirmed late, an acquire answered after the watch
was confirmed, a batch with refused entries."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any, Callable

from cbd_client import Client

CLOSED = {"state": "closed", "failureCount": 0, "successCount": 0, "lastFailureTime": 0, "lastStateChange": 1}


def until(condition: Callable[[], Any], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.002)


class ScriptedCbd:
    """Answers acquire (closed, at ``generation``), report and reportBatch;
    confirms a watch only once ``confirm_watch`` is set, and an acquire only
    once ``answer_acquire`` is set. Records what it was sent."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.confirm_watch = threading.Event()
        self.answer_acquire = threading.Event()
        self.answer_acquire.set()
        self.acquires = 0
        self.generation = 5  # of the circuit acquire and report answer
        self.reports = 0
        self.watching_all = False  # answer as a cbd before protocol 9
        self.watches: list[list[str]] = []
        self.batches: list[list[dict[str, Any]]] = []
        self.refuse_index: int | None = None
        self._lock = threading.Lock()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen()
        self._peers: list[socket.socket] = []
        self._watchers: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                peer, _ = self._listener.accept()
            except OSError:
                return
            self._peers.append(peer)
            threading.Thread(target=self._serve, args=(peer,), daemon=True).start()

    def _serve(self, peer: socket.socket) -> None:
        with peer, peer.makefile("rb") as lines:
            for line in lines:
                request = json.loads(line)
                reply: dict[str, Any] = {"ok": True}
                if "id" in request:
                    reply["id"] = request["id"]
                op = request["op"]
                if op == "watch":
                    with self._lock:
                        self.watches.append(request["keys"])
                    self.confirm_watch.wait()
                    reply["watching"] = "all" if self.watching_all else {"keys": len(request["keys"])}
                    with self._lock:
                        self._watchers.append(peer)
                elif op == "acquire":
                    with self._lock:
                        self.acquires += 1
                    self.answer_acquire.wait()
                    reply.update(allowed=True, snapshot=CLOSED, generation=self.generation)
                elif op == "report":
                    with self._lock:
                        self.reports += 1
                    reply.update(snapshot=CLOSED, generation=self.generation)
                elif op == "reportBatch":
                    entries = request["reports"]
                    with self._lock:
                        self.batches.append(entries)
                    errors = []
                    if self.refuse_index is not None and self.refuse_index < len(entries):
                        errors = [{"index": self.refuse_index, "code": "no_permit", "message": "scripted"}]
                    reply.update(applied=len(entries) - len(errors), stale=0, errors=errors)
                else:
                    reply = {"ok": False, "error": {"code": "unknown_op", "message": op}}
                try:
                    peer.sendall((json.dumps(reply) + "\n").encode())
                except OSError:
                    return

    def event(self, event: dict[str, Any]) -> None:
        """Sends an event line on the latest watch."""
        with self._lock:
            watcher = self._watchers[-1]
        watcher.sendall((json.dumps(event) + "\n").encode())

    def close(self) -> None:
        self.confirm_watch.set()
        self.answer_acquire.set()
        self._listener.close()
        for peer in self._peers:
            try:
                peer.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        os.unlink(self.path)


def test_acquires_before_the_watch_is_confirmed_do_not_seed_the_entry(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cbd = ScriptedCbd(str(tmp_path / "cbd.sock"))
    try:
        with Client(cbd.path, mirror=True) as client:
            breaker = client.breaker("k")
            breaker.call(lambda: None)  # asks; the key joins the watch set
            until(lambda: cbd.watches, "the mirror did not ask for a watch")
            assert cbd.watches[0] == ["k"]
            for _ in range(3):  # the watch is not confirmed: every call asks
                breaker.call(lambda: None)
            assert cbd.acquires == 4
            assert not client.mirror_entry("k")["local"]  # type: ignore[index]
            cbd.confirm_watch.set()
            until(lambda: client.mirror_stats()["watching"], "the watch was not confirmed")
            breaker.call(lambda: None)  # sent under the confirmed watch: seeds
            assert client.mirror_entry("k")["local"]  # type: ignore[index]
            for _ in range(10):
                breaker.call(lambda: None)
            assert cbd.acquires == 5
            client.flush()
            # Every call's outcome went out: before a watch of keys was
            # confirmed (cbd might not speak protocol 9) alone, then in
            # batches, with the generation.
            entries = [entry for batch in cbd.batches for entry in batch]
            assert (cbd.reports, len(entries)) == (4, 11)
            assert all(entry == {"key": "k", "outcome": "success", "generation": 5} for entry in entries)
    finally:
        cbd.close()


def test_an_acquire_sent_before_the_confirmation_does_not_seed_even_if_answered_after(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cbd = ScriptedCbd(str(tmp_path / "cbd.sock"))
    try:
        with Client(cbd.path, mirror=True) as client:
            breaker = client.breaker("k")
            breaker.call(lambda: None)
            until(lambda: cbd.watches, "the mirror did not ask for a watch")
            cbd.answer_acquire.clear()
            caller = threading.Thread(target=breaker.call, args=(lambda: None,))
            caller.start()
            until(lambda: cbd.acquires == 2, "the second acquire was not sent")
            cbd.confirm_watch.set()
            until(lambda: client.mirror_stats()["watching"], "the watch was not confirmed")
            cbd.answer_acquire.set()
            caller.join(timeout=10)
            # cbd may have answered that acquire before it took the watch:
            # an event between the two would be missed. It does not seed.
            assert not client.mirror_entry("k")["local"]  # type: ignore[index]
            breaker.call(lambda: None)
            assert client.mirror_entry("k")["local"]  # type: ignore[index]
            assert cbd.acquires == 3
    finally:
        cbd.close()


def test_refused_entries_are_counted_and_told_and_the_rest_applied(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cbd = ScriptedCbd(str(tmp_path / "cbd.sock"))
    cbd.confirm_watch.set()
    cbd.refuse_index = 1
    told: list[tuple[str, str, str]] = []
    try:
        with Client(cbd.path, mirror=True, mirror_batch_interval=30.0, on_report_error=lambda *e: told.append(e)) as client:
            breaker = client.breaker("k")
            until(lambda: (breaker.call(lambda: None), client.mirror_entry("k")["local"])[1], "not mirrored")  # type: ignore[index]
            client.flush()
            before = client.mirror_stats()
            for _ in range(4):
                breaker.call(lambda: None)
            client.flush()  # returns; the refusal is told, not raised
            after = client.mirror_stats()
            assert (after["applied"] - before["applied"], after["errors"] - before["errors"]) == (3, 1)
            assert told[-1] == ("k", "no_permit", "scripted")
    finally:
        cbd.close()


def test_a_cbd_before_protocol_9_turns_the_mirror_off(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cbd = ScriptedCbd(str(tmp_path / "cbd.sock"))
    cbd.watching_all = True  # it ignores "keys" and watches everything
    cbd.confirm_watch.set()
    try:
        with Client(cbd.path, mirror=True) as client:
            breaker = client.breaker("k")
            breaker.call(lambda: None)
            until(lambda: client.mirror_stats()["unsupported"], "the mirror did not notice")
            for _ in range(5):
                breaker.call(lambda: None)
            client.flush()
            # Every call asked and reported on its own, as without the mirror.
            assert (cbd.acquires, cbd.reports, cbd.batches) == (6, 6, [])
            assert client.mirror_stats()["keys"] == 0
    finally:
        cbd.close()


def test_events_newer_than_the_entry_apply_older_ones_do_not_and_an_overflow_forgets_all(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cbd = ScriptedCbd(str(tmp_path / "cbd.sock"))
    cbd.confirm_watch.set()
    opened = dict(CLOSED, state="open")
    try:
        with Client(cbd.path, mirror=True) as client:
            breaker = client.breaker("k")
            until(lambda: (breaker.call(lambda: None), client.mirror_entry("k")["local"])[1], "not mirrored")  # type: ignore[index]
            cbd.event({"event": "transition", "key": "k", "from": "closed", "to": "open", "generation": 4, "snapshot": opened})
            cbd.event({"event": "transition", "key": "other", "from": "closed", "to": "open", "generation": 9, "snapshot": opened})
            cbd.event({"event": "transition", "key": "k", "from": "closed", "to": "closed", "generation": 6, "snapshot": CLOSED,
                       "forced": {"state": "closed", "until": None, "by": {"uid": 0, "pid": 1}}})
            until(lambda: client.mirror_entry("k")["generation"] == 6, "the newer event was not applied")  # type: ignore[index]
            cbd.generation = 7  # what cbd's circuit is at by the time it is asked again
            entry = client.mirror_entry("k")
            assert entry is not None and entry["local"] and entry["forced"]["state"] == "closed"
            # Generation 4 < 5 was ignored; an unknown key's event too.
            assert client.mirror_stats()["keys"] == 1
            cbd.event({"event": "overflow", "dropped": 7})
            until(lambda: client.mirror_stats()["watch_losses"] == 1, "the overflow was not noticed")
            # A new watch of the key set follows; an acquire then re-seeds.
            until(lambda: client.mirror_stats()["watches"] == 2, "no new watch after the overflow")
            assert not client.mirror_entry("k")["local"]  # type: ignore[index]
            acquires = cbd.acquires
            breaker.call(lambda: None)
            assert cbd.acquires == acquires + 1
            assert client.mirror_entry("k")["local"]  # type: ignore[index]
    finally:
        cbd.close()


def test_an_idle_key_leaves_the_watch_at_its_next_rebuild(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cbd = ScriptedCbd(str(tmp_path / "cbd.sock"))
    cbd.confirm_watch.set()
    try:
        with Client(cbd.path, mirror=True, mirror_idle_timeout=0.2) as client:
            for key in ("idle", "busy"):
                breaker = client.breaker(key)
                until(lambda: (breaker.call(lambda: None), (client.mirror_entry(key) or {}).get("local"))[1], f"{key} not mirrored")
            assert sorted(cbd.watches[-1]) == ["busy", "idle"]
            busy = client.breaker("busy")
            until(lambda: (busy.call(lambda: None), client.mirror_entry("idle") is None)[1], "the idle key was not dropped")
            watches = len(cbd.watches)
            client.breaker("new").call(lambda: None)  # a new key: the watch is rebuilt
            until(lambda: len(cbd.watches) > watches, "the watch was not rebuilt")
            assert sorted(cbd.watches[-1]) == ["busy", "new"]
    finally:
        cbd.close()
