"""A child process for the multi-process tests (run as a script, not
collected by pytest):

    worker.py SOCKET failures KEY N   N failure calls on KEY; exit 0 when done
    worker.py SOCKET probe KEY        connect, print "ready", wait for a line on
                                      stdin, then acquire KEY once and print
                                      "allowed" or "denied"

Mirror mode (Client(mirror=True)); each first calls KEY through the breaker
until the mirror decides it locally, then prints "mirrored":

    mirror-failures KEY N   N guarded failures; flush; print the mirror's
                            counters as JSON (asked counts only these calls)
    mirror-stale KEY        guarded no-op calls, 1 ms apart, until the first denial decided
                            locally; print {"denied_at": monotonic time of the
                            first denial (cbd's answer to the acquire the open
                            event caused), "local_at": of the first local one,
                            "calls": n}
    mirror-probe KEY        wait until the mirror sees KEY open, make one call
                            (denied by cbd: the deny time is learned), print
                            "denied-open"; on a line on stdin make one call:
                            print "probing" from inside it and wait for another
                            line before returning, or print "denied"
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from cbd_client import CircuitOpen, Client  # noqa: E402


class UpstreamDown(Exception):
    pass


def fail() -> None:
    raise UpstreamDown()


def until(condition, what: str, seconds: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"worker {os.getpid()}: {what} within {seconds} s")
        time.sleep(0.001)


def mirrored(client: Client, key: str) -> None:
    """Calls KEY (no-op successes) until the mirror decides it locally."""
    breaker = client.breaker(key)

    def local() -> bool:
        breaker.call(lambda: None)
        entry = client.mirror_entry(key)
        return entry is not None and entry["local"]

    until(local, "the mirror did not cover the key")
    print("mirrored", flush=True)


def mirror_main(client: Client, command: str, key: str) -> int:
    breaker = client.breaker(key)
    mirrored(client, key)
    if command == "mirror-failures":
        asked = client.mirror_stats()["asked"]
        for _ in range(int(sys.argv[4])):
            try:
                breaker.call(fail)
            except UpstreamDown:
                pass
        client.flush()
        stats = client.mirror_stats()
        stats["asked"] -= asked
        print(json.dumps(stats), flush=True)
        return 0
    if command == "mirror-stale":
        calls = 0
        denied_at = None
        while True:
            # A caller that does something between calls (1 ms): 8 of them
            # back to back would send cbd more reports than it applies on
            # Redis, and the transition would wait behind them.
            time.sleep(0.001)
            calls += 1
            try:
                breaker.call(lambda: None)
            except CircuitOpen as denied:
                now = time.monotonic()
                denied_at = denied_at or now
                if denied.reply is None:  # decided here, from what cbd said
                    print(json.dumps({"denied_at": denied_at, "local_at": now, "calls": calls}), flush=True)
                    return 0
    if command == "mirror-probe":
        until(lambda: (client.mirror_entry(key) or {}).get("state") == "open", "the mirror did not see the circuit open")
        try:
            breaker.call(lambda: None)
            print("allowed-open", flush=True)
            return 1
        except CircuitOpen:
            print("denied-open", flush=True)
        sys.stdin.readline()

        def probe() -> None:
            print("probing", flush=True)
            sys.stdin.readline()

        try:
            breaker.call(probe)
        except CircuitOpen:
            print("denied", flush=True)
            sys.stdin.readline()
        return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


def main() -> int:
    socket_path, command, key = sys.argv[1:4]
    if command.startswith("mirror-"):
        with Client(socket_path, timeout=30.0, mirror=True) as client:
            return mirror_main(client, command, key)
    with Client(socket_path, timeout=30.0) as client:
        if command == "failures":
            for _ in range(int(sys.argv[4])):
                client.failure(key)
            return 0
        if command == "probe":
            client.ping()  # connected before the start signal
            print("ready", flush=True)
            sys.stdin.readline()
            reply = client.acquire(key)
            print("allowed" if reply["allowed"] else "denied", flush=True)
            return 0
    print(f"unknown command {command!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
