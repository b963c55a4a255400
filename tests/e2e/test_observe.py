"""Observing the breakers end to end: watch streams, list, stats, metrics."""

import json
import os
import socket
import subprocess
import threading
import time

from conftest import CBCTL, Client, cbctl, run_on_tty


def read_events(c, n, timeout=20):
    c.s.settimeout(timeout)
    return [c.json() for _ in range(n)]


def scenario(sock, key):
    """One client's work on its own key; returns the (event, cause) sequence a
    watcher of that key must see."""
    c = Client(sock)
    for _ in range(3):
        assert c.call({"op": "report", "key": key, "outcome": "failure"})["ok"]
    assert c.call({"op": "transition", "key": key, "to": "closed"})["ok"]
    assert c.call({"op": "force", "key": key, "state": "open"})["ok"]
    assert c.call({"op": "unforce", "key": key})["ok"]
    assert c.call({"op": "reset", "key": key})["removed"]
    c.close()


EXPECTED = [("transition", "threshold"), ("transition", "manual"), ("transition", "force"),
            ("transition", "unforce"), ("reset", None)]

KEYS = ["w/a", "w/b1", "w/b2", "w/b3", "x/1", "x/2", "x/3", "y"]


def test_three_watchers_see_exactly_their_events_in_order(start_cbd):
    d = start_cbd("--failure-threshold", "3")
    all_w, key_w, prefix_w = Client(d.sock), Client(d.sock), Client(d.sock)
    assert all_w.call({"op": "watch"}) == {"ok": True, "watching": "all"}
    assert key_w.call({"op": "watch", "key": "w/a", "id": 1}) == {"id": 1, "ok": True, "watching": {"key": "w/a"}}
    assert prefix_w.call({"op": "watch", "prefix": "w/"})["watching"] == {"prefix": "w/"}

    threads = [threading.Thread(target=scenario, args=(d.sock, k)) for k in KEYS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    per_key = len(EXPECTED)
    everything = read_events(all_w, per_key * len(KEYS))
    only_key = read_events(key_w, per_key)
    only_prefix = read_events(prefix_w, per_key * 4)

    def by_key(events):
        out = {}
        for e in events:
            out.setdefault(e["key"], []).append((e["event"], e.get("cause")))
        return out

    assert by_key(everything) == {k: EXPECTED for k in KEYS}
    assert by_key(only_key) == {"w/a": EXPECTED}
    assert by_key(only_prefix) == {k: EXPECTED for k in KEYS if k.startswith("w/")}
    # One global order: generations rise in the order events were emitted.
    gens = [e["generation"] for e in everything if e["event"] == "transition"]
    assert gens == sorted(gens) and len(set(gens)) == len(gens)
    first = everything[0]
    assert first["from"] == "closed" and first["to"] == "open" and first["at"] > 0
    assert first["snapshot"]["state"] == "open" and first["snapshot"]["failureCount"] == 3
    forced = next(e for e in everything if e.get("cause") == "force")
    assert forced["forced"]["state"] == "open"
    # Nothing more arrives for the key watcher.
    key_w.s.settimeout(0.3)
    try:
        extra = key_w.s.recv(4096)
    except socket.timeout:
        extra = b""
    assert extra == b""


def test_watchers_see_timeouts_probes_and_lease_expiry(start_cbd):
    d = start_cbd("--failure-threshold", "1", "--reset-timeout-ms", "100", "--probe-lease-ms", "400")
    w = Client(d.sock)
    w.call({"op": "watch", "key": "t"})
    c = Client(d.sock)
    c.call({"op": "report", "key": "t", "outcome": "failure"})
    time.sleep(0.15)
    probe = c.call({"op": "acquire", "key": "t"})
    c.call({"op": "report", "key": "t", "outcome": "success", "permit": probe["permit"]})
    c.call({"op": "report", "key": "t", "outcome": "failure"})
    time.sleep(0.15)
    assert c.call({"op": "acquire", "key": "t"})["allowed"]
    # nobody reports: the lease runs out on its own
    causes = [e["cause"] for e in read_events(w, 6)]
    assert causes == ["threshold", "timeout", "probe-success", "threshold", "timeout", "lease-expired"]


def test_a_watcher_that_never_reads_is_dropped_with_overflow(start_cbd):
    d = start_cbd("--watch-queue", "50")
    stuck = Client(d.sock)
    assert stuck.call({"op": "watch"})["ok"]
    # Fill the socket buffers and then the queue: the daemon must keep serving.
    c = Client(d.sock)
    batch = b"".join(json.dumps({"op": "transition", "key": "busy", "to": s}).encode() + b"\n"
                     for _ in range(250) for s in ("open", "closed"))
    # ~800 events fill the socket buffers, 50 more the queue: 2000 overflow it
    # with room to spare, and the stuck watcher then reads well within the
    # daemon's 5-second grace for the overflow line.
    for _ in range(4):
        c.send(batch)
        for _ in range(500):
            assert c.json()["ok"]
    assert c.call({"op": "ping"})["ok"]
    # Now read: some events, then the overflow line, then the end.
    stuck.s.settimeout(10)
    lines = []
    while True:
        try:
            lines.append(json.loads(stuck.line()))
        except (EOFError, ConnectionResetError):
            break
    assert lines[-1]["event"] == "overflow" and lines[-1]["dropped"] > 0
    assert all(l["event"] == "transition" for l in lines[:-1])
    stats = c.call({"op": "stats"})
    assert stats["events"]["dropped"] >= lines[-1]["dropped"]
    assert stats["watchers"] == 0
    assert "dropping it" in d.log()


def test_cbctl_watch_prints_json_lines_and_text(cbd):
    env = dict(os.environ, TZ="UTC")
    json_proc = subprocess.Popen([CBCTL, "--socket", cbd.sock, "watch", "api"], stdout=subprocess.PIPE, text=True, env=env)
    text_proc = subprocess.Popen([CBCTL, "--socket", cbd.sock, "watch", "--prefix", "a", "--format", "text"],
                                 stdout=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 10
    while Client(cbd.sock).call({"op": "stats"})["watchers"] < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    cbctl("transition", "api", "open", sock=cbd.sock)
    cbctl("transition", "other", "open", sock=cbd.sock)
    event = json.loads(json_proc.stdout.readline())
    assert event["event"] == "transition" and event["key"] == "api" and event["cause"] == "manual"
    line = text_proc.stdout.readline()
    assert "api" in line and "closed -> open" in line and "(manual" in line
    for p in (json_proc, text_proc):
        p.terminate()
        p.wait(timeout=10)


def test_list_pages_over_100000_circuits(cbd):
    c = Client(cbd.sock)
    n = 100_000
    # Pipelined in batches the client reads back before sending more (a client
    # that only writes would be throttled by cbd's backpressure).
    for start in range(0, n, 1000):
        c.send(b"".join(json.dumps({"op": "get", "key": f"svc-{i:06d}"}).encode() + b"\n"
                        for i in range(start, start + 1000)))
        for _ in range(1000):
            c.line()
    c.call({"op": "transition", "key": "svc-000042", "to": "open"})
    r = cbctl("list", sock=cbd.sock, timeout=120)  # stdout is a pipe: JSON lines
    assert r.returncode == 0, r.stderr
    keys = [json.loads(l)["key"] for l in r.stdout.splitlines()]
    assert keys == [f"svc-{i:06d}" for i in range(n)]
    # raw paging with limit and after
    page = c.call({"op": "list", "limit": 3, "after": "svc-099998"})
    assert [e["key"] for e in page["circuits"]] == ["svc-099999"] and page["next"] is None
    page = c.call({"op": "list", "limit": 2, "prefix": "svc-00004"})
    assert [e["key"] for e in page["circuits"]] == ["svc-000040", "svc-000041"]
    assert page["next"] == "svc-000041"
    r = cbctl("list", "--state", "open", sock=cbd.sock)
    assert [json.loads(l)["key"] for l in r.stdout.splitlines()] == ["svc-000042"]
    r = cbctl("list", "--prefix", "svc-00001", "--json", sock=cbd.sock)
    assert len(r.stdout.splitlines()) == 10
    assert c.call({"op": "list", "limit": 10001})["error"]["code"] == "invalid_request"


def test_cbctl_list_table_and_stats_on_a_terminal(cbd):
    cbctl("failure", "alpha", sock=cbd.sock)
    cbctl("force", "beta", "open", "--reason", "maintenance", sock=cbd.sock)
    table = run_on_tty(["--socket", cbd.sock, "list"]).splitlines()
    assert table[0].split() == ["KEY", "STATE", "FAILURES", "SUCCESSES", "LAST", "FAILURE", "LAST", "CHANGE", "FORCED"]
    assert table[1].startswith("alpha") and "closed" in table[1]
    assert 'open ("maintenance")' in table[2]  # the reason quoted, as get's pin line
    # columns line up: STATE starts at the same offset on every row
    col = table[0].index("STATE")
    assert table[1][col:].startswith("closed") and table[2][col:].startswith("open")
    stats = run_on_tty(["--socket", cbd.sock, "stats"])
    assert "circuits:    2 (closed 1, open 1, half-open 0, forced 1)" in stats


def test_stats_counts_match_what_was_sent(cbd):
    c = Client(cbd.sock)
    before = c.call({"op": "stats"})["connections"]["total"]
    for _ in range(7):
        c.call({"op": "get", "key": "s"})
    for _ in range(5):
        c.call({"op": "failure", "key": "s"})
    c.send(b"garbage\n{\"op\":\"nope\"}\n")
    c.line(), c.line()
    c.call({"op": "transition", "key": "t", "to": "half-open"})
    Client(cbd.sock).close()
    s = c.call({"op": "stats"})
    assert s["requests"]["get"] == 7 and s["requests"]["failure"] == 5
    assert s["requests"]["transition"] == 1 and s["requests"]["stats"] == 2
    assert s["errors"]["parse_error"] == 1 and s["errors"]["unknown_op"] == 1
    assert s["circuits"] == {"total": 2, "closed": 1, "open": 0, "halfOpen": 1, "forced": 0}
    # The other connection is accepted in cbd's own time (a busy machine may
    # answer this connection's stats first).
    deadline = time.monotonic() + 5
    while c.call({"op": "stats"})["connections"]["total"] != before + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.call({"op": "stats"})["connections"]["total"] == before + 1
    # The other connection's close reaches cbd in its own time.
    deadline = time.monotonic() + 5
    while c.call({"op": "stats"})["connections"]["current"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.call({"op": "stats"})["connections"]["current"] == 1
    assert s["uptimeMs"] >= 0 and s["residentMemoryBytes"] > 0
    r = cbctl("stats", sock=cbd.sock)  # not a terminal: JSON
    assert json.loads(r.stdout)["requests"]["get"] == 7
    assert s["uptimeMs"] >= 0


def promtool_check(text):
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_metrics_pass_promtool(cbd):
    c = Client(cbd.sock)
    c.call({"op": "configure", "key": "m", "policy": {"failureThreshold": 1}})
    c.call({"op": "report", "key": "m", "outcome": "failure"})
    c.call({"op": "get", "key": 'odd "key" \\ with quotes'})
    r = cbctl("metrics", sock=cbd.sock)
    assert r.returncode == 0
    assert 'cbd_transitions_total{from="closed",to="open",cause="threshold"} 1' in r.stdout
    assert 'cbd_requests_total{op="report"} 1' in r.stdout
    promtool_check(r.stdout)
    r = cbctl("metrics", "--per-circuit", sock=cbd.sock)
    assert 'cbd_circuit_state{key="m",state="open"} 1' in r.stdout
    promtool_check(r.stdout)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_metrics_http_endpoint(start_cbd):
    port = free_port()
    d = start_cbd("--metrics-listen", f"127.0.0.1:{port}")
    Client(d.sock).call({"op": "failure", "key": "h"})
    url = f"http://127.0.0.1:{port}"
    r = subprocess.run(["curl", "-sS", "-f", "-D", "-", f"{url}/metrics"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "text/plain; version=0.0.4" in r.stdout
    assert 'cbd_requests_total{op="failure"} 1' in r.stdout
    body = r.stdout.split("\n\n", 1)[1]  # text mode turned CRLF into LF
    promtool_check(body)
    code = lambda *a: subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *a],
                                     capture_output=True, text=True, timeout=30).stdout
    assert code(f"{url}/nothing-here") == "404"
    assert code("-X", "POST", f"{url}/metrics") == "405"
    # garbage on the HTTP port harms nothing
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"\x00\xff not http at all\r\n\r\n")
        s.settimeout(10)
        try:
            s.recv(100)
        except OSError:
            pass
    assert Client(d.sock).call({"op": "ping"})["ok"]


def test_bad_metrics_listen_refuses_to_start(start_cbd):
    d = start_cbd("--metrics-listen", "nonsense", wait=False)
    assert d.proc.wait(timeout=10) == 1
    assert "ADDRESS:PORT" in d.log()
