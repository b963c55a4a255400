"""cbbench and the floor server against the real thing: the counts add up."""

import json
import os
import subprocess
import time
from pathlib import Path

from conftest import BUILD, CBD, Client, wait_for_socket

CBBENCH = str(BUILD / "bench" / "cbbench")
FLOOR = str(BUILD / "bench" / "cbd-floor")


def bench(*args):
    r = subprocess.run([CBBENCH, *args, "--json"], capture_output=True, text=True, timeout=120)
    return r.returncode, json.loads(r.stdout) if r.stdout else None, r.stderr


def test_failure_counts_add_up(cbd):
    code, out, err = bench("--socket", cbd.sock, "-c", "5", "-P", "4", "-n", "5000", "--op", "failure", "--keys", "1")
    assert code == 0, err
    assert out["ops"] == 5000 and out["errors"] == 0
    assert out["opsPerSec"] > 0 and 0 < out["p50Us"] <= out["p99Us"] <= out["maxUs"] * 1.02
    assert Client(cbd.sock).call({"op": "get", "key": "api-0"})["snapshot"]["failureCount"] == 5000


def test_sequential_keys_fill_the_store(cbd):
    code, out, _ = bench("--socket", cbd.sock, "-c", "3", "-n", "3000", "--op", "get", "--keys", "3000", "--sequential-keys")
    assert code == 0 and out["ops"] == 3000
    assert Client(cbd.sock).call({"op": "stats"})["circuits"]["total"] == 3000


def test_acquire_report_and_mixes(start_cbd):
    d = start_cbd("--failure-threshold", "1000000")
    code, out, err = bench("--socket", d.sock, "-c", "4", "-P", "2", "-n", "2000", "--op", "acquire-report", "--keys", "1")
    assert code == 0, err
    assert out["ops"] == 2000
    s = Client(d.sock).call({"op": "stats"})
    assert s["requests"]["acquire"] == 2000 and s["requests"]["report"] == 2000
    code, out, _ = bench("--socket", d.sock, "-n", "1000", "--op", "mix:get=80,failure=20", "-c", "2")
    assert code == 0 and out["ops"] == 1000
    s = Client(d.sock).call({"op": "stats"})
    assert 100 < s["requests"]["failure"] < 350  # about 20% of 1000


def test_errors_are_counted_not_hidden(start_cbd):
    d = start_cbd("--max-circuits", "10")
    code, out, _ = bench("--socket", d.sock, "-n", "500", "--op", "get", "--keys", "1000")
    assert code == 1 and out["errors"] > 0 and out["ops"] + out["errors"] == 500


def test_bad_arguments():
    assert subprocess.run([CBBENCH, "--op", "nope"], capture_output=True).returncode == 2
    assert subprocess.run([CBBENCH, "--op", "mix:get=50"], capture_output=True).returncode == 2
    assert subprocess.run([CBBENCH, "--target", "redis"], capture_output=True).returncode == 2


def test_floor_answers_every_line(workdir):
    sock = str(workdir / "floor.sock")
    p = subprocess.Popen([FLOOR, sock])
    try:
        wait_for_socket(sock)
        code, out, _ = bench("--target", "floor", "--socket", sock, "-c", "3", "-P", "5", "-n", "3000")
        assert code == 0 and out["ops"] == 3000
    finally:
        p.kill()
        p.wait()


def test_ab_prints_a_row_per_load_with_no_errors():
    # bench/ab with the same build on both sides: every load answers, no
    # request fails, and each row carries both sides' figures.
    script = Path(__file__).resolve().parents[2] / "bench" / "ab"
    r = subprocess.run([str(script), str(BUILD), str(BUILD)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "DURATION": "0.2", "ROUNDS": "1"})
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| -c ")]
    assert len(rows) == 5, r.stdout
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert int(cells[1]) > 0 and int(cells[2]) > 0, row
        assert cells[6] == "0", row


def test_redis_cost_prints_a_row_per_operation_and_rule():
    # bench/redis_cost, shortened: every operation on both circuit sets
    # answers, and each row carries Redis's own cost of the script cbd ran.
    script = Path(__file__).resolve().parents[2] / "bench" / "redis_cost"
    r = subprocess.run([str(script), str(BUILD)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "CBD_BIN": CBD, "OPS": "200", "IDLE": "0.2"})
    assert r.returncode == 0, r.stderr
    rows = [[c.strip() for c in row.strip("|").split("|")] for row in r.stdout.splitlines()
            if row.startswith("| ") and not row.startswith(("| operation", "| ---"))]
    ops = ["get", "failure", "acquire", "report", "reportBatch (100)"]
    assert [(row[0], row[1]) for row in rows] == [(op, rule) for rule in ("count", "rate")
                                                  for op in ops], r.stdout
    for row in rows:
        assert row[2] in ("evalsha", "eval", "fcall", "fcall_ro"), row
        assert int(row[3]) >= 2 and float(row[4]) > 0 and float(row[5]) > 0, row
        assert row[8] in ("met", "NOT met", "—"), row


def test_redis_speed_compares_two_builds_and_counts_every_failure_back():
    # bench/redis_speed, shortened, with the same build on both sides: the
    # table prints, each load's acknowledged failures are found in Redis.
    script = Path(__file__).resolve().parents[2] / "bench" / "redis_speed"
    r = subprocess.run([str(script), str(BUILD), str(BUILD)], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "DURATION": "0.3", "ROUNDS": "1"})
    assert r.returncode == 0, r.stderr
    rows = [[c.strip() for c in row.strip("|").split("|")] for row in r.stdout.splitlines()
            if row.startswith("| ") and not row.startswith(("| in flight", "| ---"))]
    assert [row[0] for row in rows] == ["1", "16"], r.stdout
    for row in rows:
        assert row[1].endswith("/s") and float(row[3]) > 0 and float(row[5]) > 0, row
    assert "every acknowledged failure was counted back out of Redis" in r.stdout, r.stdout


def test_batch_loss_counts_what_a_kill_lost():
    # bench/batch_loss, one short round: cbd killed under load and read back;
    # what it prints adds up (per writer, acknowledged - stored is lost;
    # stored past acknowledged is at most the one request each writer had
    # in flight when cbd died).
    script = Path(__file__).resolve().parents[2] / "bench" / "batch_loss"
    r = subprocess.run([str(script), "--build", str(BUILD), "--rounds", "1", "--writers", "2",
                        "--kill-after", "0.5", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    round_, summary = [json.loads(line) for line in r.stdout.splitlines()]
    assert round_["acked"] > 0 and round_["stored"] > 0, round_
    assert round_["lost"] >= 0 and 0 <= round_["more_stored_than_acked"] <= 2, round_
    assert round_["lost"] - round_["more_stored_than_acked"] == \
        round_["acked"] - round_["stored"], round_
    assert summary["rounds"] == 1 and summary["lost"] == [round_["lost"]] * 3, summary
