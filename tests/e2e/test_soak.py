"""Soak: a few hundred connections doing mixed work with random disconnects,
slow readers, half-written and malformed lines, for SOAK_SECONDS (30 in CI).
Then the daemon must answer, a designated key must hold exactly what was
acknowledged, no unexpected error may have been seen, and resident memory
must be back near where it started."""

import json
import os
import random
import socket
import threading
import time
from pathlib import Path

from conftest import Client

SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))
WORKERS = int(os.environ.get("SOAK_WORKERS", "200"))
KEYS = [f"soak/{i}" for i in range(100)]
DESIGNATED = "soak/designated"

# Codes the random work may legitimately get back.
EXPECTED_CODES = {"no_permit", "forced", "conflict"}
MALFORMED = [
    (b"garbage", "parse_error"),
    (b"[1,2]", "invalid_request"),
    (b'{"op":"explode"}', "unknown_op"),
    (b'{"op":"get","key":""}', "invalid_key"),
    (b'{"op":"transition","key":"soak/1","to":"sideways"}', "invalid_state"),
    (b"[" * 5000, "invalid_request"),
    (b'{"op":"get","key":"\xff"}', "parse_error"),
]


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def random_request(rng):
    key = rng.choice(KEYS)
    kind = rng.random()
    if kind < 0.3:
        return {"op": "get", "key": key}
    if kind < 0.5:
        return {"op": "report", "key": key, "outcome": rng.choice(["success", "failure"])}
    if kind < 0.65:
        return {"op": "acquire", "key": key}
    if kind < 0.75:
        return {"op": "failure", "key": key}
    if kind < 0.8:
        return {"op": "transition", "key": key, "to": rng.choice(["open", "closed", "half-open"]),
                "expect": rng.choice(["open", "closed"])}
    if kind < 0.85:
        return {"op": "list", "prefix": "soak/", "limit": 20}
    if kind < 0.9:
        return {"op": "stats"}
    return {"op": "policy", "key": key}


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.designated_acked = 0
        self.ops = 0
        self.unexpected = []

    def add(self, ops=0, designated=0, unexpected=None):
        with self.lock:
            self.ops += ops
            self.designated_acked += designated
            if unexpected:
                self.unexpected.append(unexpected)


def worker(sock, seed, deadline, tally):
    rng = random.Random(seed)
    while time.monotonic() < deadline:
        mode = rng.random()
        try:
            c = Client(sock, timeout=20)
            if mode < 0.55:  # honest work, pipelined, every reply read
                for _ in range(rng.randint(1, 20)):
                    batch = [random_request(rng) for _ in range(rng.randint(1, 30))]
                    designated = rng.randint(0, 3)
                    batch += [{"op": "failure", "key": DESIGNATED}] * designated
                    rng.shuffle(batch)
                    c.send(b"".join(json.dumps(r).encode() + b"\n" for r in batch))
                    acked = 0
                    for req in batch:
                        reply = c.json()
                        if not reply["ok"] and reply["error"]["code"] not in EXPECTED_CODES:
                            tally.add(unexpected=(req, reply))
                        if req.get("key") == DESIGNATED and reply["ok"]:
                            acked += 1
                    tally.add(ops=len(batch), designated=acked)
            elif mode < 0.7:  # sends, then vanishes without reading
                c.send(b"".join(json.dumps(random_request(rng)).encode() + b"\n" for _ in range(rng.randint(1, 200))))
            elif mode < 0.8:  # half a line, then gone
                c.send(b'{"op":"failure","key":"soak/half')
            elif mode < 0.9:  # malformed lines: each answered, connection survives
                for line, code in rng.sample(MALFORMED, 3):
                    c.send(line + b"\n")
                    reply = c.json()
                    if reply.get("error", {}).get("code") != code:
                        tally.add(unexpected=(line[:40], reply))
                if not c.call({"op": "ping"})["ok"]:
                    tally.add(unexpected=("ping after malformed", None))
                tally.add(ops=4)
            elif mode < 0.95:  # a slow reader
                n = rng.randint(50, 300)
                c.send(b'{"op":"get","key":"soak/1"}\n' * n)
                time.sleep(rng.uniform(0.05, 0.3))
                for _ in range(n):
                    c.line()
                tally.add(ops=n)
            else:  # a short-lived watcher that reads a little
                c.call({"op": "watch", "prefix": "soak/"})
                time.sleep(rng.uniform(0.05, 0.2))
            c.close()
        except (OSError, EOFError) as e:
            tally.add(unexpected=("connection error", repr(e)))


def test_soak(start_cbd):
    d = start_cbd("--failure-threshold", "3", "--reset-timeout-ms", "100", "--log-level", "warn")
    setup = Client(d.sock)
    for k in KEYS + [DESIGNATED]:
        setup.call({"op": "get", "key": k})
    # Warm up the allocator with a short burst, so the baseline is fair.
    warm = Tally()
    worker(d.sock, 0, time.monotonic() + 1, warm)
    time.sleep(0.5)
    before = rss_kib(d.proc.pid)
    start_failures = setup.call({"op": "get", "key": DESIGNATED})["snapshot"]["failureCount"]

    tally = Tally()
    deadline = time.monotonic() + SECONDS
    threads = [threading.Thread(target=worker, args=(d.sock, i + 1, deadline, tally)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=SECONDS + 120)
    assert not any(t.is_alive() for t in threads)

    check = Client(d.sock)
    assert check.call({"op": "ping"})["ok"]
    assert d.proc.poll() is None
    final = check.call({"op": "get", "key": DESIGNATED})["snapshot"]["failureCount"]
    assert final - start_failures == tally.designated_acked
    assert tally.unexpected == [], tally.unexpected[:5]

    # Every soak connection is gone; memory returns near its start.
    deadline = time.monotonic() + 10
    while check.call({"op": "stats"})["connections"]["current"] > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    after = rss_kib(d.proc.pid)
    stats = check.call({"op": "stats"})
    print(f"\nsoak: {SECONDS:.0f} s, {WORKERS} workers, {tally.ops} operations acknowledged, "
          f"{stats['connections']['total']} connections, rss {before} KiB -> {after} KiB")
    if not os.environ.get("CBD_SANITIZED"):  # under ASan, RSS measures the sanitizer
        assert after - before < 4 * 1024, (before, after)
