"""contrib/grafana/cbd.json against the real cbd: every metric the board
queries exists in cbd's /metrics output (with per-circuit series, as the
per-circuit panels need), with the labels and label values the queries use,
so the board and the daemon cannot drift apart."""

import json
import re
import socket
import urllib.request
from pathlib import Path

from conftest import Client, ROOT

BOARD = ROOT / "contrib" / "grafana" / "cbd.json"
# Labels Prometheus adds at scrape time, not cbd.
SCRAPE_LABELS = {"instance", "job"}
SELECTOR = re.compile(r"\b(cbd_[a-z_]+)\s*(\{[^}]*\})?")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
BY_CLAUSE = re.compile(r"\bby\s*\(([^)]*)\)")


def expressions(node):
    """Every PromQL expression in the board: panel targets and variables."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("expr", "definition") and isinstance(v, str):
                yield v
            else:
                yield from expressions(v)
    elif isinstance(node, list):
        for v in node:
            yield from expressions(v)


def parse_exposition(text):
    """{metric: [labels dict, ...]} from Prometheus text."""
    series = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? ", line)
        assert m, f"unreadable exposition line {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        series.setdefault(m.group(1), []).append(labels)
    return series


def test_every_metric_the_board_queries_exists(start_cbd):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = start_cbd("--http-listen", f"127.0.0.1:{port}")
    c = Client(d.sock)
    # Something in every state, a pin, a transition and an error, so every
    # series the board draws has a sample.
    for i in range(5):
        c.call({"op": "failure", "key": "svc/open"})
    c.call({"op": "acquire", "key": "svc/open"})
    c.call({"op": "transition", "key": "svc/half", "to": "half-open"})
    c.call({"op": "get", "key": "svc/closed"})
    c.call({"op": "force", "key": "svc/pinned", "state": "open", "reason": "grafana test"})
    c.call({"op": "nonsense"})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics?perCircuit=true",
                                timeout=10) as r:
        series = parse_exposition(r.read().decode())

    board = json.loads(BOARD.read_text())
    exprs = list(expressions(board))
    queried = {m for e in exprs for m, _ in SELECTOR.findall(e)}
    # What issue 19 asks of the board.
    assert {"cbd_requests_total", "cbd_errors_total", "cbd_circuits", "cbd_transitions_total",
            "cbd_circuit_state"} <= queried
    missing = sorted(queried - series.keys())
    assert not missing, f"the board queries metrics cbd does not export: {missing}"

    for e in exprs:
        in_expr = [m for m, _ in SELECTOR.findall(e)]
        for metric, selector in SELECTOR.findall(e):
            for label, op, value in MATCHER.findall(selector):
                if label in SCRAPE_LABELS:
                    continue
                have = {s.get(label) for s in series[metric]}
                assert have != {None}, f"{e}: {metric} has no label {label}"
                if op == "=":
                    assert value in have, f"{e}: {metric} never has {label}=\"{value}\""
        for clause in BY_CLAUSE.findall(e):
            for label in (l.strip() for l in clause.split(",")):
                if label and label not in SCRAPE_LABELS:
                    assert any(label in s for m in in_expr for s in series[m]), \
                        f"{e}: grouped by {label}, which none of {in_expr} carries"

    # Every panel has a query, and every panel that needs per-circuit
    # series sits under the row that says so.
    needs_per_circuit = False
    for panel in board["panels"]:
        if panel["type"] == "row":
            needs_per_circuit = "per-circuit" in panel["title"].lower()
            continue
        assert panel["targets"], panel["title"]
        uses = {m for t in panel["targets"] for m, _ in SELECTOR.findall(t["expr"])}
        if uses & {"cbd_circuit_state", "cbd_circuit_failures"}:
            assert needs_per_circuit, f"panel {panel['title']!r} needs per-circuit series"
