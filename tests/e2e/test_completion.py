"""Shell completion for cbctl (contrib/completion), driven in real shells:
bash through its completion function as bash-completion calls it, fish
through `complete -C`, zsh checked for syntax and for its flag lists. Every
command and flag that `cbctl --help` lists must be offered, and nothing
else, so that completion cannot drift from the program; keys come from a
running cbd, and a missing or silent cbd never holds the shell up."""

import os
import re
import socket
import subprocess
import time

import pytest

from conftest import BUILD, CBCTL, ROOT, cbctl

COMPLETION = ROOT / "contrib" / "completion"
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
# An option line in CLI11's help, with its choices when it has a fixed set.
HELP_OPTION = re.compile(r"^  (?:-\w,)?(--[a-z][a-z0-9-]*)(?: \w+(?::\{([^}]*)\})?)?")
ENV = dict(os.environ, PATH=f"{BUILD / 'cli'}:{os.environ['PATH']}")
ENV.pop("CBD_SOCKET", None)


def help_options(*args):
    """{flag: [choices]} from `cbctl ARGS --help`."""
    out = subprocess.run([CBCTL, *args, "--help"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    found = {}
    for line in out.stdout.splitlines():
        if m := HELP_OPTION.match(line):
            found[m.group(1)] = m.group(2).split(",") if m.group(2) else []
    return found


def commands():
    out = subprocess.run([CBCTL, "--help"], capture_output=True, text=True, timeout=10).stdout
    section = out.split("Subcommands:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in section.splitlines() if line.startswith("  ")]


def bash_complete(line, timeout=10):
    """What bash offers on Tab at the end of `line`, as bash-completion runs
    _cbctl: the words split as readline would (no colons in these lines)."""
    script = f"""
source {BASH_COMPLETION}
source {COMPLETION / 'cbctl.bash'}
COMP_LINE=$1
COMP_POINT=${{#COMP_LINE}}
read -ra COMP_WORDS <<<"$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1))
_cbctl cbctl "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD - 1]}}"
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    r = subprocess.run(["bash", "-c", script, "bash", line], capture_output=True, text=True,
                       timeout=timeout, env=ENV)
    assert r.returncode == 0, r.stderr
    return set(filter(None, r.stdout.splitlines()))


def fish_complete(line):
    r = subprocess.run(["fish", "--no-config", "-c",
                        f"source {COMPLETION / 'cbctl.fish'}; complete -C $argv[1]", line],
                       capture_output=True, text=True, timeout=20, env=ENV)
    assert r.returncode == 0, r.stderr
    return {entry.split("\t")[0] for entry in r.stdout.splitlines() if entry}


def test_bash_registers_the_completion_function():
    r = subprocess.run(["bash", "-c", f"source {COMPLETION / 'cbctl.bash'}; complete -p cbctl"],
                       capture_output=True, text=True, timeout=10)
    assert r.stdout.strip() == "complete -F _cbctl cbctl"


def test_bash_offers_every_command_and_the_global_flags():
    assert bash_complete("cbctl ") == set(commands())
    assert bash_complete("cbctl --") == set(help_options())
    assert bash_complete("cbctl li") == {"list"}


@pytest.mark.parametrize("command", commands())
def test_bash_offers_each_commands_flags_as_its_help_lists_them(command):
    offered = bash_complete(f"cbctl {command} --")
    listed = set(help_options(command))
    assert offered == listed, (
        f"contrib/completion/cbctl.bash offers {sorted(offered - listed)} that `cbctl {command} "
        f"--help` lacks, and lacks {sorted(listed - offered)}")


@pytest.mark.parametrize("command", ["get", "success", "failure", "transition", "acquire",
                                     "report", "policy"])
def test_bash_offers_the_fields_that_field_accepts(command):
    assert bash_complete(f"cbctl {command} k --field ") == set(help_options(command)["--field"])


def test_bash_completes_policy_fields_after_a_comma():
    assert bash_complete("cbctl policy k --field mode,failure") == {
        "mode,failureThreshold", "mode,failureRateThreshold"}


def test_bash_offers_states_outcomes_and_choices():
    assert bash_complete("cbctl transition k ") == {"closed", "open", "half-open"}
    assert bash_complete("cbctl transition k h") == {"half-open"}
    assert bash_complete("cbctl force k ") == {"open", "closed"}
    assert bash_complete("cbctl report k ") == {"success", "failure", "ignored"}
    assert bash_complete("cbctl list --state ") == set(help_options("list")["--state"])
    assert bash_complete("cbctl watch --format ") == set(help_options("watch")["--format"])
    assert bash_complete("cbctl configure k --unset ") == set(help_options("configure")["--unset"])
    # After a flag's value, positionals are counted right: the state again.
    assert bash_complete("cbctl --timeout 100 transition --expect open k ") == {
        "closed", "open", "half-open"}


def test_bash_offers_keys_from_the_running_daemon(cbd):
    for key in ("svc/a", "svc/b", "other"):
        assert cbctl("get", key, sock=cbd.sock).returncode == 0
    assert bash_complete(f"cbctl --socket {cbd.sock} get svc/") == {"svc/a", "svc/b"}
    assert bash_complete(f"cbctl --socket {cbd.sock} force ") == {"svc/a", "svc/b", "other"}
    assert bash_complete(f"cbctl --socket {cbd.sock} list --prefix o") == {"other"}
    # What completion asks: the keys alone, one a line, in key order.
    r = cbctl("list", "--keys", sock=cbd.sock)
    assert r.stdout.splitlines() == ["other", "svc/a", "svc/b"]
    assert cbctl("list", "--keys", "--prefix", "svc/", sock=cbd.sock).stdout == "svc/a\nsvc/b\n"
    # Keys or JSON lines, not both.
    assert cbctl("list", "--keys", "--json", sock=cbd.sock).returncode == 2


def test_a_missing_daemon_gives_no_keys_at_once(workdir):
    started = time.monotonic()
    assert bash_complete(f"cbctl --socket {workdir}/none.sock get ") == set()
    assert time.monotonic() - started < 5


def test_a_silent_daemon_does_not_hold_the_shell(workdir):
    # Accepts, never answers: completion gives up after its short timeout.
    path = str(workdir / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(8)
        started = time.monotonic()
        assert bash_complete(f"cbctl --socket {path} get ", timeout=10) == set()
        assert time.monotonic() - started < 5


def test_fish_offers_commands_flags_states_and_keys(cbd):
    assert fish_complete("cbctl ") >= set(commands())
    for command in commands():
        offered = {w for w in fish_complete(f"cbctl {command} --") if w.startswith("--")}
        listed = set(help_options(command))
        assert offered == listed, f"cbctl.fish, {command}: offers {offered}, help lists {listed}"
    assert fish_complete("cbctl transition k ") == {"closed", "open", "half-open"}
    assert fish_complete("cbctl get k --field ") == set(help_options("get")["--field"])
    assert fish_complete("cbctl policy k --field ") == set(help_options("policy")["--field"])
    assert cbctl("get", "fish/key", sock=cbd.sock).returncode == 0
    assert "fish/key" in fish_complete(f"cbctl --socket {cbd.sock} get ")


def test_zsh_completion_parses_and_lists_every_flag():
    text = (COMPLETION / "_cbctl").read_text()
    r = subprocess.run(["zsh", "-n", str(COMPLETION / "_cbctl")], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    arms = {}
    # The command arms, inside the `argument)` arm (deeper indented).
    for names, body in re.findall(r"^ {8}([a-z|]+)\)\n(.*?);;", text, re.M | re.S):
        for name in names.split("|"):
            arms[name] = set(re.findall(r"(--[a-z][a-z0-9-]*)", body)) | {"--help"}
    for command in commands():
        assert command in arms, f"_cbctl has no case for {command}"
        listed = set(help_options(command))
        assert arms[command] == listed, f"_cbctl, {command}: has {arms[command]}, help lists {listed}"
