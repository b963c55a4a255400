#!/usr/bin/env python3
"""The trip-rules benchmark (issue 16), in one run:

- acquire+report pairs per second on the `rate` rule against the `count`
  rule (cbbench --op acquire-report, the same load on each), and their
  ratio (target: rate >= 0.9 x count);
- resident memory of cbd holding 1M circuits on the `count` rule, before
  and after filling (what a circuit costs), optionally against another cbd
  binary (--baseline-cbd, e.g. one built from the commit before trip rules).

    bench/trip_rules.py --build build [--seconds 5] [--rounds 3] [--circuits 1000000]
                        [--baseline-cbd /path/to/old/cbd]
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def call(sock_path, request):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(sock_path)
    s.sendall(json.dumps(request).encode() + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    s.close()
    return json.loads(buf)


class Daemon:
    def __init__(self, cbd, workdir, *args):
        self.sock = str(workdir / "cbd.sock")
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        self.proc = subprocess.Popen([cbd, "--socket", self.sock, *args],
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if call(self.sock, {"op": "ping"})["ok"]:
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{cbd} did not start")

    def rss(self):
        return call(self.sock, {"op": "stats"})["residentMemoryBytes"]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=60)


def cbbench(binary, sock, *args):
    out = subprocess.run([binary, "--socket", sock, "--json", *args], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout)


def pairs_per_second(cbd, cbbench_bin, workdir, seconds, *flags):
    d = Daemon(cbd, workdir, *flags)
    try:
        r = cbbench(cbbench_bin, d.sock, "--op", "acquire-report", "-d", str(seconds),
                    "--keys", "1000", "-c", "16")
        # cbbench counts each acquire+report pair as one operation.
        return r["opsPerSec"], r["p99Us"]
    finally:
        d.stop()


def memory_for(cbd, cbbench_bin, workdir, circuits):
    d = Daemon(cbd, workdir, "--max-circuits", str(circuits + 1000))
    try:
        before = d.rss()
        cbbench(cbbench_bin, d.sock, "--op", "success", "--sequential-keys", "--keys",
                str(circuits), "-n", str(circuits), "-c", "8", "-P", "32")
        after = d.rss()
        return before, after
    finally:
        d.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default=os.environ.get("CBD_BUILD_DIR", "build"))
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved runs of each rule")
    parser.add_argument("--circuits", type=int, default=1_000_000)
    parser.add_argument("--baseline-cbd", help="another cbd to measure memory against")
    opts = parser.parse_args()
    build = Path(opts.build)
    cbd = str(build / "daemon" / "cbd")
    bench = str(build / "bench" / "cbbench")

    with tempfile.TemporaryDirectory(prefix="cbd-trip-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        # Interleaved rounds, the median of each: on a shared machine the
        # load changes between runs, and a single pair of runs can mislead.
        counts, rates = [], []
        for _ in range(opts.rounds):
            counts.append(pairs_per_second(cbd, bench, workdir, opts.seconds))
            rates.append(pairs_per_second(
                cbd, bench, workdir, opts.seconds, "--trip-rule", "rate", "--window-size", "100",
                "--minimum-calls", "100", "--slow-call-duration-ms", "1000"))
        count_rate, count_p99 = sorted(counts)[len(counts) // 2]
        rate_rate, rate_p99 = sorted(rates)[len(rates) // 2]
        ratio = rate_rate / count_rate if count_rate else 0
        print(f"acquire+report pairs/s (median of {opts.rounds}): count {count_rate:.0f} (p99 {count_p99:.0f} us), "
              f"rate {rate_rate:.0f} (p99 {rate_p99:.0f} us): rate/count = {ratio:.2f} "
              f"({'meets' if ratio >= 0.9 else 'misses'} the 0.9 target)")

        before, after = memory_for(cbd, bench, workdir, opts.circuits)
        per = (after - before) / opts.circuits
        print(f"{opts.circuits} count-rule circuits: RSS {before / 2**20:.1f} MiB -> "
              f"{after / 2**20:.1f} MiB ({per:.0f} bytes a circuit)")
        if opts.baseline_cbd:
            b_before, b_after = memory_for(opts.baseline_cbd, bench, workdir, opts.circuits)
            b_per = (b_after - b_before) / opts.circuits
            print(f"baseline {opts.baseline_cbd}: RSS {b_before / 2**20:.1f} MiB -> "
                  f"{b_after / 2**20:.1f} MiB ({b_per:.0f} bytes a circuit); "
                  f"difference {per - b_per:+.0f} bytes a circuit")
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
