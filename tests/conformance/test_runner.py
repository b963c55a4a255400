"""The conformance runner's own checks: a matcher that accepted everything, or
a corpus loader that let a misspelt step through, would make every backend
pass. These prove that both refuse what they must."""

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_corpus as rc  # noqa: E402


def problems(expected, actual, saved=None):
    return rc.match(expected, actual, saved or {})


# --- the matcher ---------------------------------------------------------------

def test_subset_match_ignores_fields_not_named():
    assert problems({"ok": True}, {"ok": True, "snapshot": {}}) == []


def test_a_different_value_is_reported_with_its_path():
    out = problems({"snapshot": {"state": "open"}}, {"snapshot": {"state": "closed"}})
    assert out == ['reply.snapshot.state: expected "open", got "closed"']


def test_a_missing_field_fails():
    assert problems({"stale": True}, {"ok": True}) == ["reply.stale: missing"]


def test_types_are_not_confused():
    # JSON true is not 1, 1 is not 1.0, "1" is not 1.
    assert problems({"n": 1}, {"n": True})
    assert problems({"n": 1}, {"n": 1.0})
    assert problems({"n": 1}, {"n": "1"})
    assert problems({"n": None}, {"n": 0})


def test_absent_and_any():
    assert problems({"forced": "$absent"}, {"ok": True}) == []
    assert problems({"forced": "$absent"}, {"forced": None})
    assert problems({"permit": "$any"}, {"permit": "x"}) == []
    assert problems({"permit": "$any"}, {}) == ["reply.permit: missing"]


def test_arrays_match_by_length_and_element():
    assert problems([{"key": "a"}], [{"key": "a", "x": 1}]) == []
    assert problems([{"key": "a"}], [{"key": "a"}, {"key": "b"}])
    assert problems([{"key": "a"}, {"key": "b"}], [{"key": "b"}, {"key": "a"}])
    assert problems([], {"not": "a list"})


def test_comparisons_and_saved_values():
    saved = {"g": 7, "p": "abc"}
    assert problems({"generation": {"$gt": "${g}"}}, {"generation": 8}, saved) == []
    assert problems({"generation": {"$gt": "${g}"}}, {"generation": 7}, saved)
    assert problems({"generation": {"$ge": 7}}, {"generation": 7}) == []
    assert problems({"generation": {"$lt": 7}}, {"generation": 7})
    assert problems({"generation": {"$gt": 1}}, {"generation": "9"})
    assert problems({"generation": "${g}"}, {"generation": 7}, saved) == []
    assert problems({"generation": "${g}"}, {"generation": 8}, saved)
    assert problems({"permit": {"$ne": "${p}"}}, {"permit": "abd"}, saved) == []
    assert problems({"permit": {"$ne": "${p}"}}, {"permit": "abc"}, saved)


def test_type_and_keys_markers():
    assert problems({"p": {"$type": "string"}}, {"p": "x"}) == []
    assert problems({"p": {"$type": "string"}}, {"p": 1})
    assert problems({"g": {"$type": "integer"}}, {"g": True})
    keys = {"$keys": ["a", "b"]}
    assert problems({"o": keys}, {"o": {"a": 1, "b": 2}}) == []
    assert problems({"o": keys}, {"o": {"b": 2, "a": 1}})
    assert problems({"o": keys}, {"o": {"a": 1, "b": 2, "c": 3}})


def test_an_unknown_marker_is_a_corpus_error():
    with pytest.raises(rc.CorpusError):
        problems({"n": {"$gte": 1}}, {"n": 1})


def test_requests_take_saved_values_whole_or_inside_raw_lines():
    saved = {"g": 7, "p": "abc"}
    assert rc.resolve({"generation": "${g}", "permit": "${p}"}, saved) == \
        {"generation": 7, "permit": "abc"}
    assert rc.resolve_raw('{"generation":${g}}', saved) == '{"generation":7}'
    with pytest.raises(rc.Unsaved):
        rc.resolve({"permit": "${q}"}, saved)


# --- the corpus loader ---------------------------------------------------------

def load(cases, topic="t"):
    with tempfile.TemporaryDirectory() as d:
        Path(d, f"{topic}.json").write_text(json.dumps({"topic": topic, "about": "", "cases": cases}))
        return rc.load_corpus(d)


GOOD = {"name": "c", "rule": "r", "steps": [{"send": {"op": "ping"}, "expect": {"ok": True}}]}


def test_a_good_case_loads():
    [case] = load([GOOD])
    assert case["id"] == "t/c"


@pytest.mark.parametrize("bad", [
    dict(GOOD, rule=""),                                            # every case states its rule
    {k: v for k, v in GOOD.items() if k != "rule"},
    dict(GOOD, name="Bad Name"),
    dict(GOOD, steps=[]),
    dict(GOOD, steps=[{"send": {"op": "ping"}, "expext": {"ok": True}}]),   # misspelt key
    dict(GOOD, steps=[{"send": {"op": "ping"}, "advance": 5}]),     # two actions in one step
    dict(GOOD, steps=[{"advance": "5"}]),
    dict(GOOD, steps=[{"send": {"op": "get", "key": "${g}"}}]),     # used before saved
    dict(GOOD, steps=[{"send": "${g}", "save": {"g": "generation"}}]),
    dict(GOOD, steps=[{"event": "w"}, {"watch": {"op": "watch"}}]),  # watch needs "as"
    dict(GOOD, daemon={"flags": ["--x"]}),
])
def test_a_malformed_case_is_refused(bad):
    with pytest.raises(rc.CorpusError):
        load([bad])


def test_duplicate_names_and_a_wrong_topic_are_refused():
    with pytest.raises(rc.CorpusError):
        load([GOOD, GOOD])
    with tempfile.TemporaryDirectory() as d:
        Path(d, "x.json").write_text(json.dumps({"topic": "y", "about": "", "cases": [GOOD]}))
        with pytest.raises(rc.CorpusError):
            rc.load_corpus(d)


def test_the_real_corpus_loads_and_every_case_states_a_rule():
    cases = rc.load_corpus()
    assert len(cases) > 100
    assert all(c["rule"].strip() for c in cases)


# --- against the real daemon -----------------------------------------------------

CBD = Path(os.environ.get("CBD_BUILD_DIR", rc.ROOT / "build")) / "daemon" / "cbd"


def test_a_wrong_expectation_fails_on_a_real_daemon():
    case = {"id": "t/wrong", "name": "wrong", "rule": "r", "steps": [
        {"advance": 250},
        {"send": {"op": "failure", "key": "a"}, "save": {"g": "generation"}},
        {"send": {"op": "get", "key": "a"},
         "expect": {"snapshot": {"failureCount": 2, "lastFailureTime": 1000000000250},
                    "generation": "${g}"}},
        {"send": {"op": "report", "key": "a", "outcome": "success", "permit": "${nope}"}},
    ]}
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        backend = rc.Backend("memory", str(CBD), d)
        failures = rc.run_case(case, backend, str(CBD), d, 0)
    assert [f.index for f in failures] == [2, 3]
    assert failures[0].problems == ["reply.snapshot.failureCount: expected 2, got 1"]
    assert "not run" in failures[1].problems[0]
