"""The man pages against the programs: every flag in `--help` is described
in the man page and the man page describes no flag the program lacks (per
cbctl command too), the pages render without groff warnings, and the one
version (CMake's project(VERSION)) is what the pages, --version, ping and
debian/changelog say.

Adding a flag to cbd or cbctl: add an entry to docs/man/cbd.8.scd's OPTIONS,
under the `## ` heading of the flag's group in `cbd --help` (or cbctl.1.scd's
section for the command), a line of the form `*--the-flag* _VALUE_` followed
by a tab-indented description."""

import re
import subprocess

import pytest

from conftest import BUILD, CBCTL, CBD, ROOT, cbctl

MAN_SRC = ROOT / "docs" / "man"
MAN_OUT = BUILD / "docs" / "man"

# An option line in CLI11's help: two spaces, maybe "-h,", then the long flag.
HELP_FLAG = re.compile(r"^  (?:-\w,)?(--[a-z][a-z0-9-]*)")
# An option entry in an scdoc page: a line that starts with the bold flag.
MAN_FLAG = re.compile(r"^\*(?:-\w\*, \*)?(--[a-z][a-z0-9-]*)\*")


def help_flags(*argv):
    out = subprocess.run(list(argv) + ["--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    return {m.group(1) for line in out.stdout.splitlines() if (m := HELP_FLAG.match(line))}


def help_subcommands():
    out = subprocess.run([CBCTL, "--help"], capture_output=True, text=True, timeout=10).stdout
    section = out.split("Subcommands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ")]


def scdoc_sections(path):
    """{section heading: [lines]} for '# ' and '## ' headings."""
    sections, current = {}, None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            current = line.lstrip("#").strip()
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    return sections


def man_flags(lines):
    return {m.group(1) for line in lines if (m := MAN_FLAG.match(line))}


def drift(program, page, section, in_help, in_man):
    """A readable account of every flag on one side only; empty when none."""
    problems = []
    for flag in sorted(in_help - in_man):
        problems.append(
            f"{program} --help has {flag} but {page} section '{section}' does not describe it "
            f"(add a line '*{flag}* _VALUE_' and a tab-indented description)")
    for flag in sorted(in_man - in_help):
        problems.append(f"{page} section '{section}' describes {flag}, which {program} --help "
                        f"does not have (remove it, or add the flag)")
    return problems


def help_groups(*argv):
    """{group: {flags}} from CLI11's --help, where a group's heading is an
    unindented line ending in ':' ("Options:" holds the ungrouped ones)."""
    out = subprocess.run(list(argv) + ["--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    groups, current = {}, None
    for line in out.stdout.splitlines():
        if re.fullmatch(r"[A-Z][^:]*:", line):
            current = line[:-1]
            groups[current] = set()
        elif current is not None and (m := HELP_FLAG.match(line)):
            groups[current].add(m.group(1))
    return groups


def scdoc_subsections(path, section):
    """{subsection: [lines]} for the '## ' headings under '# section'; the
    lines before the first of them are under ''."""
    subsections, current, inside = {"": []}, "", False
    for line in path.read_text().splitlines():
        if line.startswith("# "):
            inside = line[2:].strip() == section
        elif inside and line.startswith("## "):
            current = line[3:].strip()
            subsections[current] = []
        elif inside:
            subsections[current].append(line)
    return subsections


def test_cbd_options_match_its_help():
    man = scdoc_subsections(MAN_SRC / "cbd.8.scd", "OPTIONS")
    in_man = set().union(*(man_flags(lines) for lines in man.values()))
    problems = drift("cbd", "docs/man/cbd.8.scd", "OPTIONS", help_flags(CBD), in_man)
    assert not problems, "\n".join(problems)


def test_cbd_help_groups_its_flags_as_the_man_page_does():
    groups = help_groups(CBD)
    assert list(groups) == ["Options", "Socket and access", "Limits", "Policy", "Persistence",
                            "Redis", "HTTP", "Testing"]
    man = scdoc_subsections(MAN_SRC / "cbd.8.scd", "OPTIONS")
    man_groups = {("Options" if name == "" else name): man_flags(lines)
                  for name, lines in man.items()}
    assert man_groups == groups


def test_cbd_help_names_every_value():
    # Each value says what is typed (N, MS, PATH, RULE), never CLI11's TEXT,
    # INT or UINT, and ranges read as words in the description.
    out = subprocess.run([CBD, "--help"], capture_output=True, text=True, timeout=10).stdout
    assert not re.search(r"\b(TEXT|INT|UINT)\b", out), out
    for option in ["--socket PATH", "--max-line-bytes N=65536", "--reset-timeout-ms MS",
                   "--trip-rule RULE", "--failure-rate-threshold PERCENT",
                   "--idle-timeout DURATION=0", "--config FILE",
                   "--http-listen,--metrics-listen ADDR:PORT"]:
        assert f"\n  {option} " in out or f"\n  {option}\n" in out, option
    assert "Longest request line accepted (64 to 67108864)" in out


def test_cbctl_global_options_match_its_help():
    sections = scdoc_sections(MAN_SRC / "cbctl.1.scd")
    problems = drift("cbctl", "docs/man/cbctl.1.scd", "OPTIONS", help_flags(CBCTL),
                     man_flags(sections["OPTIONS"]))
    assert not problems, "\n".join(problems)


def test_every_cbctl_command_and_its_flags_are_in_the_man_page():
    sections = scdoc_sections(MAN_SRC / "cbctl.1.scd")
    commands = help_subcommands()
    assert "get" in commands and "run" in commands  # the help was read at all
    problems = [f"cbctl has command '{c}' but docs/man/cbctl.1.scd has no '## {c}' section"
                for c in commands if c not in sections]
    documented = [name for name in sections if name.islower() and " " not in name
                  and name not in ("cbctl",)]
    problems += [f"docs/man/cbctl.1.scd has '## {name}', which cbctl --help does not list"
                 for name in documented if name not in commands]
    for c in commands:
        if c in sections:
            # Every command has -h/--help; the page says so once, globally.
            problems += drift(f"cbctl {c}", "docs/man/cbctl.1.scd", c,
                              help_flags(CBCTL, c) - {"--help"}, man_flags(sections[c]))
    assert not problems, "\n".join(problems)


def test_the_drift_check_names_a_missing_flag():
    # The comparison itself: a flag on one side only is named, with where.
    problems = drift("cbd", "cbd.8.scd", "OPTIONS", {"--a", "--b"}, {"--b", "--c"})
    assert problems[0].startswith("cbd --help has --a but cbd.8.scd section 'OPTIONS'")
    assert "describes --c, which cbd --help does not have" in problems[1]
    assert len(problems) == 2


@pytest.mark.parametrize("page", ["cbd.8", "cbctl.1", "cbd.json.5"])
def test_page_renders_without_warnings(page):
    path = MAN_OUT / page
    assert path.exists(), f"{path} was not built (the 'man' target)"
    groff = subprocess.run(["groff", "-ww", "-z", "-man", str(path)], capture_output=True,
                           text=True, timeout=30)
    assert groff.returncode == 0 and groff.stderr == "", groff.stderr
    man = subprocess.run(["man", "--warnings", "-l", str(path)], capture_output=True, text=True,
                         timeout=30, env={"MANPAGER": "cat", "MANWIDTH": "80", "PATH": "/usr/bin:/bin"})
    assert man.returncode == 0 and man.stderr == "", man.stderr
    assert "NAME" in man.stdout


def project_version():
    text = (ROOT / "CMakeLists.txt").read_text()
    match = re.search(r"project\(\s*cbd\s+VERSION\s+([0-9.]+)", text)
    assert match, "no project(cbd VERSION x.y.z) in CMakeLists.txt"
    return match.group(1)


def test_one_version_everywhere(cbd):
    version = project_version()
    for program in (CBD, CBCTL):
        out = subprocess.run([program, "--version"], capture_output=True, text=True, timeout=10)
        assert out.returncode == 0
        assert re.fullmatch(rf"cb(d|ctl) {re.escape(version)} \(protocol \d+\)\n", out.stdout), \
            out.stdout
    ping = cbctl("ping", sock=cbd.sock)
    assert f'"version":"{version}"' in ping.stdout, ping.stdout
    for page in ("cbd.8", "cbctl.1", "cbd.json.5"):
        assert f'"cbd {version}"' in (MAN_OUT / page).read_text(), page
    changelog = (ROOT / "debian" / "changelog").read_text().splitlines()[0]
    assert re.match(rf"cbd \({re.escape(version)}(-[0-9a-z.+~]+)?\) ", changelog), (
        f"debian/changelog's first entry ('{changelog}') is not for project(VERSION) {version}: "
        "add an entry with dch -v " + version)


@pytest.mark.parametrize("command", ["", "get", "success", "failure", "transition", "reset",
                                     "ping", "pipe", "acquire", "report", "force", "unforce",
                                     "configure", "policy", "watch", "list", "stats", "metrics",
                                     "export", "import", "run"])
def test_cbctl_help_names_every_value(command):
    out = subprocess.run([CBCTL, *([command] if command else []), "--help"], capture_output=True,
                         text=True, timeout=10).stdout
    assert out and not re.search(r"\b(TEXT|INT|UINT)\b", out), out
