"""The wire protocol end to end, with raw socket clients."""

import json
import threading

import pytest

from conftest import Client


def test_pipelined_requests_in_one_write_are_answered_in_order(cbd):
    c = Client(cbd.sock)
    batch = b"".join(
        json.dumps({"op": "failure", "key": f"k{i % 7}", "id": i}).encode() + b"\n" for i in range(1000)
    )
    c.send(batch)
    replies = [c.json() for _ in range(1000)]
    assert [r["id"] for r in replies] == list(range(1000))
    assert all(r["ok"] for r in replies)
    assert replies[-1]["snapshot"]["failureCount"] == 1000 // 7 + (1 if 999 % 7 < 1000 % 7 else 0)


def test_string_ids_are_echoed_unchanged(cbd):
    c = Client(cbd.sock)
    assert c.call({"op": "ping", "id": "a \"quoted\" ü id"})["id"] == "a \"quoted\" ü id"
    assert "id" not in c.call({"op": "ping"})


def test_crlf_and_blank_lines(cbd):
    c = Client(cbd.sock)
    c.send(b'\n\r\n   \n{"op":"ping","id":1}\r\n{"op":"ping","id":2}\n')
    assert c.json()["id"] == 1
    assert c.json()["id"] == 2


def test_eight_concurrent_clients_count_exactly(cbd):
    def hammer():
        c = Client(cbd.sock)
        for _ in range(1000):
            r = c.call({"op": "failure", "key": "shared"})
            assert r["ok"]
        c.close()

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Client(cbd.sock).call({"op": "get", "key": "shared"})["snapshot"]["failureCount"] == 8000


BAD_INPUTS = [
    (b"this is not json", "parse_error"),
    (b"[1,2,3]", "invalid_request"),
    (b'"just a string"', "invalid_request"),
    (b'{"key":"a"}', "invalid_request"),
    (b'{"op":42}', "invalid_request"),
    (b'{"op":"explode"}', "unknown_op"),
    (b'{"op":"get"}', "invalid_request"),
    (b'{"op":"get","key":""}', "invalid_key"),
    (b'{"op":"get","key":"' + b"k" * 1025 + b'"}', "invalid_key"),
    (b'{"op":"get","key":"a\\u0007b"}', "invalid_key"),
    (b'{"op":"transition","key":"a"}', "invalid_request"),
    (b'{"op":"transition","key":"a","to":"half_open"}', "invalid_state"),
    (b'{"op":"ping","id":{"nested":true}}', "invalid_request"),
    (b"[" * 60000, "invalid_request"),
    (b'{"op":"get","key":"\xc3\x28"}', "parse_error"),
    (b'{"op":"get",\x00"key":"a"}', "parse_error"),
]


@pytest.mark.parametrize("line,code", BAD_INPUTS, ids=[c + str(i) for i, (_, c) in enumerate(BAD_INPUTS)])
def test_bad_input_gets_its_error_and_the_connection_survives(cbd, line, code):
    c = Client(cbd.sock)
    c.send(line + b"\n")
    reply = c.json()
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]
    assert c.call({"op": "ping"})["ok"] is True


def test_error_replies_echo_a_valid_id(cbd):
    c = Client(cbd.sock)
    reply = c.call({"op": "get", "key": "", "id": 41})
    assert reply["id"] == 41 and reply["error"]["code"] == "invalid_key"


def test_overlong_line_gets_line_too_long_then_close(cbd):
    c = Client(cbd.sock)
    c.send(b"x" * (70 * 1024))
    reply = c.json()
    assert reply["error"]["code"] == "line_too_long"
    assert c.at_eof()
    # The daemon is fine.
    assert Client(cbd.sock).call({"op": "ping"})["ok"]


def test_line_exactly_at_the_limit_is_accepted(start_cbd):
    d = start_cbd("--max-line-bytes", "1024")
    c = Client(d.sock)
    line = b'{"op":"ping","pad":"' + b"p" * (1024 - 22) + b'"}'
    assert len(line) == 1024
    c.send(line + b"\n")
    assert c.json()["ok"] is True
    c.send(line[:-2] + b'p"}' + b"\n")  # 1025 bytes
    assert c.json()["error"]["code"] == "line_too_long"


def test_half_a_line_then_disconnect_harms_nobody(cbd):
    other = Client(cbd.sock)
    for _ in range(50):
        c = Client(cbd.sock)
        c.send(b'{"op":"failure","key":"half')
        c.close()
    assert other.call({"op": "get", "key": "half"})["snapshot"]["failureCount"] == 0
    assert other.call({"op": "ping"})["ok"]


def test_client_that_disconnects_before_reading_its_replies(cbd):
    for _ in range(20):
        c = Client(cbd.sock)
        c.send(b'{"op":"failure","key":"gone"}\n' * 2000)
        c.close()
    c = Client(cbd.sock)
    assert c.call({"op": "ping"})["ok"]


def test_too_many_circuits(start_cbd):
    d = start_cbd("--max-circuits", "2")
    c = Client(d.sock)
    assert c.call({"op": "get", "key": "a"})["ok"]
    assert c.call({"op": "get", "key": "b"})["ok"]
    assert c.call({"op": "failure", "key": "c"})["error"]["code"] == "too_many_circuits"
    assert c.call({"op": "reset", "key": "a"})["removed"] is True
    assert c.call({"op": "failure", "key": "c"})["ok"]


@pytest.mark.parametrize(
    "line",
    [
        b'{"op":"failure","key":"nul"}\x00junk',
        b'{"op":"failure","key":"nul"}\x00',
        b'{"op":"transition","key":"nul","to":"open"} \x00 ',
        b'{"op":"import","key":"nul","snapshot":{"state":"open","failureCount":9,"successCount":0,'
        b'"lastFailureTime":1,"lastStateChange":1},"generation":5}\x00',
    ],
    ids=["after-object", "last-byte", "amid-whitespace", "import"],
)
def test_a_nul_after_a_valid_object_is_parse_error_and_nothing_is_applied(cbd, line):
    c = Client(cbd.sock)
    before = c.call({"op": "list", "prefix": "nul"})
    assert before["circuits"] == []
    c.send(line + b"\n")
    reply = c.json()
    assert reply["ok"] is False
    assert reply["error"]["code"] == "parse_error"
    # Nothing was applied: no circuit was created, and the connection still works.
    assert c.call({"op": "list", "prefix": "nul"})["circuits"] == []
    assert c.call({"op": "list"})["circuits"] == []


def test_a_nul_after_a_valid_object_does_not_change_an_existing_circuit(cbd):
    c = Client(cbd.sock)
    first = c.call({"op": "failure", "key": "nul-existing"})
    c.send(b'{"op":"failure","key":"nul-existing"}\x00junk\n')
    assert c.json()["error"]["code"] == "parse_error"
    after = c.call({"op": "get", "key": "nul-existing"})
    assert after["snapshot"] == first["snapshot"]
    assert after["generation"] == first["generation"]


MAX_SAFE = 2**53 - 1
OUT_OF_RANGE = [2**53, 2**64 - 1, 10**18 - 1]


def test_an_imported_generation_past_2_53_is_refused_and_generations_stay_unique(cbd):
    c = Client(cbd.sock)
    held = c.call({"op": "failure", "key": "gen-a"})["generation"]
    for g in OUT_OF_RANGE:
        r = c.call({"op": "import", "key": "gen-huge", "generation": g,
                    "snapshot": {"state": "closed", "failureCount": 0, "successCount": 0,
                                 "lastFailureTime": 0, "lastStateChange": 1}})
        assert r["ok"] is False
        assert r["error"]["code"] == "invalid_request"
        assert "'generation'" in r["error"]["message"]
    assert c.call({"op": "list", "prefix": "gen-huge"})["circuits"] == []
    # New circuits take generations no other circuit holds, so a report from
    # one circuit's generation is stale on another.
    fresh = c.call({"op": "failure", "key": "gen-b"})["generation"]
    assert fresh > held
    r = c.call({"op": "report", "key": "gen-a", "outcome": "success", "generation": fresh})
    assert r["stale"] is True


@pytest.mark.parametrize("n", OUT_OF_RANGE)
@pytest.mark.parametrize(
    "request_of,field",
    [
        (lambda n: {"op": "report", "key": "r", "outcome": "success", "generation": n}, "'generation'"),
        (lambda n: {"op": "transition", "key": "r", "to": "open", "expectGeneration": n}, "'expectGeneration'"),
        (lambda n: {"op": "import", "key": "r", "generation": 1,
                    "snapshot": {"state": "open", "failureCount": n, "successCount": 0,
                                 "lastFailureTime": 0, "lastStateChange": 1}}, "snapshot.failureCount"),
        (lambda n: {"op": "import", "key": "r", "generation": 1,
                    "snapshot": {"state": "open", "failureCount": 0, "successCount": 0,
                                 "lastFailureTime": 0, "lastStateChange": 1},
                    "forced": {"state": "open", "until": n}}, "forced.until"),
        (lambda n: {"op": "configure", "key": "r", "policy": {"probeLeaseMs": n}}, "probeLeaseMs"),
        (lambda n: {"op": "force", "key": "r", "state": "open", "ttlMs": n}, "ttlMs"),
    ],
    ids=["report", "expectGeneration", "snapshot", "until", "policy", "ttlMs"],
)
def test_numbers_past_their_range_are_invalid_request_naming_the_field(cbd, request_of, field, n):
    c = Client(cbd.sock)
    r = c.call(request_of(n))
    assert r["ok"] is False
    assert r["error"]["code"] == "invalid_request"
    assert field in r["error"]["message"]
    assert c.call({"op": "list", "prefix": "r"})["circuits"] == []


def test_the_largest_generation_is_accepted_and_then_changes_are_refused(start_cbd):
    # The memory store's own rule (Redis keeps its counter in Redis).
    d = start_cbd("--backend", "memory")
    c = Client(d.sock)
    r = c.call({"op": "import", "key": "top", "generation": MAX_SAFE,
                "snapshot": {"state": "closed", "failureCount": 0, "successCount": 0,
                             "lastFailureTime": 0, "lastStateChange": 1}})
    assert r["ok"] is True and r["generation"] == MAX_SAFE
    # No generation is left: a change is refused, never given a reused or wrapped one.
    for op in ({"op": "failure", "key": "next"}, {"op": "transition", "key": "top", "to": "open"}):
        r = c.call(op)
        assert r["ok"] is False
        assert r["error"]["code"] == "backend_error"
    assert [e["key"] for e in c.call({"op": "list"})["circuits"]] == ["top"]
    assert c.call({"op": "ping"})["ok"] is True
