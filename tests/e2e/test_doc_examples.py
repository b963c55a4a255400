"""The docs' examples, run: what README.md and docs/PROTOCOL.md show a
reader is what cbd answers, so a protocol bump or a changed reply fails here
until the docs follow.

- docs/PROTOCOL.md: every `→ REQUEST` / `← REPLY` pair, in order, one fresh
  cbd per `## ` section (the examples of a section build on each other). A
  `(N s later)` after a request moves cbd's test clock first. What an
  example takes as already there is set up by a hidden line before it,
  `<!-- setup: → REQUEST ← REPLY -->`: sent, its reply used only to learn
  the generation it stands for.
- README.md: every `$ cbctl ARGS` line followed by its output, in order on
  one cbd, unless the command is one this test cannot run as shown (listed
  in NOT_RUN with the reason).

Matching: `…` in a reply stands for what the example leaves out (`{…}` any
object, `"…"` any string, `,…` more fields). Times, generations, ids of
processes and permits differ from run to run, so they match by kind (an
integer, 16 hex digits); a generation or permit a reply gave is put in place
of the example's own in the requests that follow.
"""

import json
import os
import re
import subprocess

import pytest

from conftest import CBCTL, ROOT, Client

T0 = 1_764_201_590_000  # the examples' first moment
# Fields whose values differ from run to run: matched by kind, not value.
BY_KIND = {"lastFailureTime", "lastStateChange", "at", "until", "uptimeMs", "generation",
           "retryAfterMs", "pid", "uid", "residentMemoryBytes", "permit"}
ANY_OBJECT, ANY_STRING, MORE = "\0any-object", "\0any-string", "\0more"


def doc_json(text):
    """A reply as a doc shows it, `…` and all, as JSON with markers."""
    text = text.replace('"…"', json.dumps(ANY_STRING))
    text = text.replace("{…}", "{" + json.dumps(ANY_OBJECT) + ":true}")
    text = text.replace(",…", "," + json.dumps(MORE) + ":true")
    return json.loads(text)


def mismatches(expected, actual, path="reply", out=None):
    out = [] if out is None else out
    if expected == ANY_STRING:
        if not isinstance(actual, str):
            out.append(f"{path}: expected a string, got {actual!r}")
    elif isinstance(expected, dict):
        if not isinstance(actual, dict):
            out.append(f"{path}: expected an object, got {actual!r}")
        elif ANY_OBJECT not in expected:
            more = expected.get(MORE, False)
            keys = [k for k in expected if k != MORE]
            for k in keys:
                if k not in actual:
                    out.append(f"{path}.{k}: in the example, not in the reply")
                elif k in BY_KIND:
                    kind_ok = (isinstance(actual[k], str) and re.fullmatch(r"[0-9a-f]{16}", actual[k])
                               if k == "permit" else
                               isinstance(actual[k], int) and not isinstance(actual[k], bool))
                    if not kind_ok:
                        out.append(f"{path}.{k}: {actual[k]!r} is not of the example's kind")
                else:
                    mismatches(expected[k], actual[k], f"{path}.{k}", out)
            if not more:
                extra = sorted(set(actual) - set(keys))
                if extra:
                    out.append(f"{path}: the reply has {extra}, the example does not")
    elif isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            out.append(f"{path}: expected {len(expected)} entries, got {actual!r}")
        else:
            for i, (e, a) in enumerate(zip(expected, actual)):
                mismatches(e, a, f"{path}[{i}]", out)
    elif expected != actual or type(expected) is not type(actual):
        out.append(f"{path}: the example says {expected!r}, cbd {actual!r}")
    return out


def set_clock(path, ms):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"{ms}\n")
    os.rename(tmp, path)


# --- docs/PROTOCOL.md ----------------------------------------------------------

REQUEST = re.compile(r"^ {4}→ (\{.*\})(?:\s+\((\d+) s later\))?\s*$")
REPLY = re.compile(r"^ {4}← (.*\S)\s*$")
SETUP = re.compile(r"^<!-- setup: → (\{.*\}) ← (\{.*\}) -->$")


def protocol_sections():
    sections, title, pairs, pending = [], None, [], None
    for number, line in enumerate((ROOT / "docs" / "PROTOCOL.md").read_text().splitlines(), 1):
        if line.startswith("## "):
            if pairs:
                sections.append((title, pairs))
            title, pairs = line[3:].strip(), []
        elif m := SETUP.match(line):
            pairs.append((number, m.group(1), 0, m.group(2), True))
        elif m := REQUEST.match(line):
            pending = (number, m.group(1), int(m.group(2) or 0))
        elif m := REPLY.match(line):
            assert pending, f"PROTOCOL.md:{number}: a reply with no request before it"
            pairs.append((*pending, m.group(1), False))
            pending = None
    if pairs:
        sections.append((title, pairs))
    return sections


SECTIONS = protocol_sections()


def test_protocol_md_has_examples_to_run():
    assert sum(not p[4] for _, pairs in SECTIONS for p in pairs) >= 12, SECTIONS


@pytest.mark.parametrize("title,pairs", SECTIONS, ids=[t for t, _ in SECTIONS])
def test_protocol_md_examples(start_cbd, workdir, title, pairs):
    clock = workdir / "clock"
    now = T0
    set_clock(clock, now)
    c = Client(start_cbd("--test-clock", str(clock)).sock)
    seen = {"generation": {}, "permit": {}}  # the example's value -> this run's
    problems = []
    for number, request_text, later_s, reply_text, setup in pairs:
        if later_s:
            now += later_s * 1000
            set_clock(clock, now)
        request = json.loads(request_text)
        for field in ("generation", "permit"):
            if field in request and request[field] in seen[field]:
                request[field] = seen[field][request[field]]
        reply = c.call(request)
        expected = doc_json(reply_text)
        for field in ("generation", "permit"):
            if isinstance(expected, dict) and field in expected and field in reply:
                seen[field][expected[field]] = reply[field]
        if not setup:
            problems += [f"PROTOCOL.md:{number} {request_text}: {m}"
                         for m in mismatches(expected, reply)]
    assert not problems, "\n".join(problems)


# --- README.md ------------------------------------------------------------------

# Commands the README shows that this test does not run, and why. A new
# example is run, or named here.
NOT_RUN = {
    "run": "runs curl against a made-up upstream",
    "watch": "runs until Ctrl-C",
    "list": "a table on a terminal (its columns: test_cli's pty tests)",
    "stats": "readable text on a terminal, with this machine's numbers",
    "transition": "shown without its output (>/dev/null in the script above it)",
    "reset": "shown without its output",
    "force": "shown without its output",
    "unforce": "shown without its output",
}
COMMAND = re.compile(r"^ {4}\$ cbctl (.*?)\s*(?:#.*)?$")


def readme_examples():
    lines = (ROOT / "README.md").read_text().splitlines()
    examples = []
    for i, line in enumerate(lines):
        m = COMMAND.match(line)
        if not m:
            continue
        output = []
        for follow in lines[i + 1:]:
            if not follow.startswith("    ") or follow.startswith("    $ "):
                break
            output.append(follow[4:].split("  #")[0].rstrip())
        examples.append((i + 1, m.group(1), output))
    return examples


def test_readme_examples(start_cbd, workdir):
    examples = readme_examples()
    clock = workdir / "clock"
    set_clock(clock, T0)
    d = start_cbd("--test-clock", str(clock))
    env = {**os.environ, "CBD_SOCKET": d.sock}
    ran, problems = 0, []
    for number, args, output in examples:
        words = args.split()
        if words[0] in NOT_RUN:
            continue
        assert not set(args) & set("|<>$`;&"), f"README.md:{number}: '{args}' needs a shell"
        assert output, f"README.md:{number}: 'cbctl {args}' shows no output: run it or name it in NOT_RUN"
        set_clock(clock, T0 + 10_000)
        r = subprocess.run([CBCTL, *words], capture_output=True, text=True, env=env, timeout=30)
        got = r.stdout.splitlines()
        ran += 1
        if len(got) != len(output):
            problems.append(f"README.md:{number} cbctl {args}: shows {output}, prints {got}")
            continue
        for want, line in zip(output, got):
            if want.startswith("{"):
                problems += [f"README.md:{number} cbctl {args}: {m}"
                             for m in mismatches(doc_json(want), json.loads(line))]
            elif want != line:
                problems.append(f"README.md:{number} cbctl {args}: shows {want!r}, prints {line!r}")
    assert ran >= 3, examples
    assert not problems, "\n".join(problems)


# --- the access tables against the op table ------------------------------------

def op_levels():
    """{op name: level} from common/protocol.cpp's op table (kOps)."""
    text = (ROOT / "common" / "protocol.cpp").read_text()
    table = text[text.index("kOps = {{"):text.index("}};", text.index("kOps = {{"))]
    rows = re.findall(r'\{Op::\w+, "(\w+)",.*?AccessLevel::(\w+)\}', table, re.S)
    return {name: level.lower() for name, level in rows}


@pytest.mark.parametrize("doc,header", [("README.md", "| level | may |"),
                                        ("docs/PROTOCOL.md", "| level | operations |")])
def test_access_tables_name_every_op_at_its_level(doc, header):
    levels = op_levels()
    assert len(levels) >= 19 and set(levels.values()) == {"read", "write", "admin"}, levels
    lines = (ROOT / doc).read_text().splitlines()
    start = lines.index(header)
    shown = {}
    for line in lines[start + 2:]:
        if not line.startswith("| "):
            break
        level, ops = line.split("|")[1].strip(), line.split("|")[2]
        # Each row names the ops that level adds to the one before.
        shown[level] = set(re.findall(r"`(\w+)`", ops.split("(")[0]))
    for level in ("read", "write", "admin"):
        want = {name for name, at in levels.items() if at == level}
        assert shown.get(level) == want, (doc, level, sorted(shown.get(level, set()) ^ want))


# --- the README's cbd synopsis against cbd --help -----------------------------

def test_readme_synopsis_names_every_flag_of_cbd_help():
    from conftest import CBD

    help_text = subprocess.run([CBD, "--help"], capture_output=True, text=True,
                               timeout=30).stdout
    # Every flag but help itself and the testing group's (tests only).
    testing = help_text[help_text.index("\nTesting:"):] if "\nTesting:" in help_text else ""
    flags = set(re.findall(r"--[a-z][a-z0-9-]+", help_text)) - set(
        re.findall(r"--[a-z][a-z0-9-]+", testing)) - {"--help"}
    flags -= set(re.findall(r",(--[a-z][a-z0-9-]+)", help_text))  # other names of a flag
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("\n### cbd\n"):]
    block = block[:block.index("\n- ")]
    synopsis = "\n".join(line for line in block.splitlines() if line.startswith("    "))
    shown = set(re.findall(r"--[a-z][a-z0-9-]+", synopsis))
    assert flags and shown == flags, {"not in the README": sorted(flags - shown),
                                      "not in cbd --help": sorted(shown - flags)}
