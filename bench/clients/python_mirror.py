#!/usr/bin/env python3
"""Mirror mode of the Python client (issue #20): the time of one guarded call
on a closed circuit with a no-op function, in three breakers —

  today      Client().breaker(key).call(fn): acquire + report, two round trips
  mirror     Client(mirror=True).breaker(key).call(fn): decided here, the
             outcome batched (default batch 100 / 1 ms)
  in-process a minimal breaker written for this benchmark: a counter in this
             process with the same count rule (failureThreshold failures
             since closed open it), nothing shared

— and the staleness of the mirror: the time from a transition to open in cbd
(made by this process) to the first denial in another process that mirrors
the key while calling it in a loop, over --transitions transitions.

    bench/clients/python_mirror.py [--cbd PATH] [--rounds R] [--calls N]
                                   [--today-calls N] [--batch-size B]
                                   [--transitions T] [--stale-pause-us U]

Starts its own cbd (--cbd, else $CBD_BIN, else $CBD_BUILD_DIR/daemon/cbd,
else build/daemon/cbd) on a temporary socket. Each round times a block of
calls (so the mirror's batches, written by the calling thread and answered
on its flusher thread under the same GIL, are paid inside the block) and
takes the time per call; the rounds of the modes alternate so that drift
hits all alike; each starts with the mirror's queue flushed (untimed). A
round of --calls (10,000) fits the mirror's queue, so no outcome is dropped
however far cbd falls behind; the counts printed at the end say so. (A
caller that makes calls faster than cbd applies reports, about a million a
second, for longer than that, has its oldest outcomes dropped and counted.)
Prints the median per call of each mode, the overhead (the median less a
bare call of the no-op), this process's CPU time per call (all threads: a
load-independent view), the median of calls timed one by one, and the
ratios of the overheads.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT / "clients" / "python" / "src"))

from cbd_client import CircuitOpen, Client  # noqa: E402


class InProcessOpen(Exception):
    pass


class InProcessBreaker:
    """The count rule of cbd's default policy, kept in this process only:
    failureThreshold failures since the circuit closed open it; after
    resetTimeout one probe; its success closes, its failure re-opens."""

    def __init__(self, failure_threshold: int = 5, reset_timeout: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.reset_timeout = reset_timeout
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.state != "closed":
            if self.state == "open" and time.monotonic() - self.opened_at >= self.reset_timeout:
                self.state = "half-open"
            else:
                raise InProcessOpen()
        try:
            result = fn(*args, **kwargs)
        except Exception:
            self.failures += 1
            if self.state == "half-open" or self.failures >= self.failure_threshold:
                self.state, self.opened_at = "open", time.monotonic()
            raise
        if self.state == "half-open":
            self.state, self.failures = "closed", 0
        return result


def noop() -> None:
    return None


def timed(call: Callable[[Callable[[], None]], Any], calls: int) -> tuple[float, float]:
    """Seconds per call over a block of ``calls`` calls: wall clock, and
    this process's CPU time (every thread: the mirror's included)."""
    cpu = time.process_time()
    started = time.perf_counter()
    for _ in range(calls):
        call(noop)
    return (time.perf_counter() - started) / calls, (time.process_time() - cpu) / calls


def latency(call: Callable[[Callable[[], None]], Any], calls: int) -> float:
    """The median of ``calls`` calls timed one by one, in seconds (the
    clock's own cost included: the caller subtracts the bare call's)."""
    clock = time.perf_counter_ns
    times = []
    for _ in range(calls):
        started = clock()
        call(noop)
        times.append(clock() - started)
    return statistics.median(times) / 1e9


def bare(fn: Callable[[], None]) -> None:
    fn()


def until_local(client: Client, key: str) -> None:
    breaker = client.breaker(key)
    deadline = time.monotonic() + 10
    while not (client.mirror_entry(key) or {}).get("local"):
        if time.monotonic() > deadline:
            raise SystemExit(f"the mirror did not cover {key!r} within 10 s")
        breaker.call(noop)
        time.sleep(0.001)


def stale_child(socket_path: str, key: str, pause: float) -> int:
    """The mirroring process of the staleness run: calls ``key`` in a loop
    and prints, for each change it sees, a line: {"denied": t} at the first
    denial (t its monotonic time; "local": whether the mirror decided it)
    and {"allowed": t} at the first local allowance after a denial; after
    each "allowed" it waits for "go" (or "stop") on stdin."""
    with Client(socket_path, mirror=True) as client:
        breaker = client.breaker(key)
        until_local(client, key)
        print(json.dumps({"allowed": time.monotonic()}), flush=True)
        if sys.stdin.readline().strip() == "stop":
            return 0
        denied = False
        while True:
            if pause:
                time.sleep(pause)
            try:
                breaker.call(noop)
            except CircuitOpen as denial:
                if not denied:
                    denied = True
                    print(json.dumps({"denied": time.monotonic(), "local": denial.reply is None}), flush=True)
                continue
            if denied and (client.mirror_entry(key) or {}).get("local"):
                denied = False
                print(json.dumps({"allowed": time.monotonic()}), flush=True)
                if sys.stdin.readline().strip() == "stop":
                    return 0


def staleness(socket_path: str, transitions: int, pause_us: int) -> list[float]:
    """Milliseconds from each transition to open to the child's first denial."""
    key = "bench/stale"
    child = subprocess.Popen(
        [sys.executable, __file__, "--stale-child", socket_path, key, str(pause_us)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    delays: list[float] = []
    try:
        with Client(socket_path) as admin:
            admin.configure(key, {"resetTimeoutMs": 60_000})
            assert "allowed" in json.loads(child.stdout.readline())
            for _ in range(transitions):
                child.stdin.write("go\n")
                child.stdin.flush()
                time.sleep(0.002)  # the child is calling again
                opened_at = time.monotonic()
                admin.transition(key, "open")
                denial = json.loads(child.stdout.readline())
                delays.append((denial["denied"] - opened_at) * 1000)
                admin.transition(key, "closed")
                assert "allowed" in json.loads(child.stdout.readline())
            child.stdin.write("stop\n")
            child.stdin.flush()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return delays


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--stale-child":
        return stale_child(sys.argv[2], sys.argv[3], int(sys.argv[4]) / 1e6)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_cbd = os.environ.get("CBD_BIN") or str(
        Path(os.environ.get("CBD_BUILD_DIR") or REPO_ROOT / "build") / "daemon" / "cbd"
    )
    parser.add_argument("--cbd", default=default_cbd)
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=10_000, help="calls per round, mirror and in-process")
    parser.add_argument("--today-calls", type=int, default=2_000, help="calls per round, today's mode")
    parser.add_argument("--batch-size", type=int, default=100, help="the mirror's mirror_batch_size")
    parser.add_argument("--transitions", type=int, default=200)
    parser.add_argument("--stale-pause-us", type=int, default=0, help="the mirroring process sleeps so long between calls")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 100 and 1 <= args.calls <= 10_000_000 and 1 <= args.today_calls <= 1_000_000 and 0 <= args.transitions <= 100_000):
        parser.error("--rounds 1..100, --calls 1..10000000, --today-calls 1..1000000, --transitions 0..100000")

    with tempfile.TemporaryDirectory(prefix="cbd-bench-") as directory:
        path = os.path.join(directory, "cbd.sock")
        daemon = subprocess.Popen([args.cbd, "--socket", path, "--log-level", "warn"])
        try:
            deadline = time.monotonic() + 10
            while not os.path.exists(path):
                if daemon.poll() is not None or time.monotonic() > deadline:
                    print(f"cbd at {args.cbd} did not start", file=sys.stderr)
                    return 1
                time.sleep(0.01)
            with Client(path) as plain, Client(path, mirror=True, mirror_batch_size=args.batch_size) as mirrored:
                today = plain.breaker("bench/today")
                mirror = mirrored.breaker("bench/mirror")
                local = InProcessBreaker()
                plain.ping()
                until_local(mirrored, "bench/mirror")
                modes = {"bare": bare, "in-process": local.call, "mirror": mirror.call, "today": today.call}
                results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
                latencies: dict[str, list[float]] = {mode: [] for mode in modes}
                for _ in range(args.rounds):
                    for mode, call in modes.items():
                        # Each timing starts with the mirror's queue empty
                        # (the flush is not timed).
                        mirrored.flush()
                        results[mode].append(timed(call, args.today_calls if mode == "today" else args.calls))
                        mirrored.flush()
                        latencies[mode].append(latency(call, args.today_calls))
                mirrored.flush()
                stats = mirrored.mirror_stats()
                counted = plain.get("bench/mirror")["snapshot"]["successCount"]
            delays = staleness(path, args.transitions, args.stale_pause_us) if args.transitions else []
        finally:
            daemon.terminate()
            daemon.wait(timeout=10)

    us = {mode: statistics.median(wall for wall, _ in times) * 1e6 for mode, times in results.items()}
    cpu = {mode: statistics.median(used for _, used in times) * 1e6 for mode, times in results.items()}
    one = {mode: statistics.median(times) * 1e6 for mode, times in latencies.items()}
    overhead = {mode: max(us[mode] - us["bare"], 1e-3) for mode in ("in-process", "mirror", "today")}
    one_overhead = {mode: max(one[mode] - one["bare"], 1e-3) for mode in ("in-process", "mirror", "today")}
    print(f"python, guarded no-op call on a closed circuit, median of {args.rounds} rounds "
          f"({args.calls} calls each; today's mode {args.today_calls}; mirror batch {args.batch_size}); "
          f"bare no-op call {us['bare']:.3f} us")
    print(f"  {'':10s} {'us/call':>9s} {'overhead':>9s} {'cpu us':>9s} | {'1-call':>9s} {'overhead':>9s}")
    for mode in ("in-process", "mirror", "today"):
        print(f"  {mode:10s} {us[mode]:9.3f} {overhead[mode]:9.3f} {cpu[mode]:9.3f} | {one[mode]:9.3f} {one_overhead[mode]:9.3f}")
    print("  (us/call: a block of calls, the mirror's batches paid inside it; cpu: this process's CPU per call,")
    print(f"   all threads; 1-call: median of {args.today_calls} calls timed one by one; overhead: less the bare call)")
    print(f"  mirror / in-process overhead: {overhead['mirror'] / overhead['in-process']:.2f}x blocks, "
          f"{one_overhead['mirror'] / one_overhead['in-process']:.2f}x one by one (target <= 3)")
    print(f"  today / mirror overhead:      {overhead['today'] / overhead['mirror']:.1f}x blocks, "
          f"{one_overhead['today'] / one_overhead['mirror']:.1f}x one by one (target >= 10)")
    print(f"  mirror outcomes: {stats['applied']} applied, {stats['stale']} stale, {stats['errors']} errors, "
          f"{stats['dropped']} dropped, {stats['unsent']} unsent; cbd counted {counted} successes; "
          f"{stats['asked']} acquires asked")
    if delays:
        pause = f", {args.stale_pause_us} us apart" if args.stale_pause_us else " back to back"
        print(f"staleness, transition to open in cbd -> first denial in a mirroring process calling{pause}, "
              f"{len(delays)} transitions: median {statistics.median(delays):.2f} ms, "
              f"p99 {percentile(delays, 0.99):.2f} ms, max {max(delays):.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
