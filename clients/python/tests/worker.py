"""A child process for the multi-process tests (run as a script, not
collected by pytest):

    worker.py SOCKET failures KEY N   N failure calls on KEY; exit 0 when done
    worker.py SOCKET probe KEY        connect, print "ready", wait for a line on
                                      stdin, then acquire KEY once and print
                                      "allowed" or "denied"
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from cbd_client import Client  # noqa: E402


def main() -> int:
    socket_path, command, key = sys.argv[1:4]
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
