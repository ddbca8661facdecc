"""Which programs a shell command line would run, for command guardrails.

A regex over the typed text is what peers do and what ``ls;rm``, ``\\rm`` and
``sudo /bin/rm`` defeat. Here the line goes through ``bashlex`` (a port of bash's
own grammar), and every simple command it finds anywhere (after ``;``, ``&&``,
``||``, pipes, inside ``$(…)``, backticks, subshells, ``if``/``for``/``while``
bodies, function definitions) is reported with its program's base name and its
quote-removed argument words. Command strings that a shell or a wrapper runs
(``bash -c STR``, ``su -c STR``, ``sudo rm``, ``env X=1 rm``, ``find -exec rm``,
here-strings and here-documents fed to a shell) are followed too, up to
``MAX_DEPTH`` levels.

What cannot be known from the text alone makes the line *unanalysable*, with the
reason: a program name built at run time (``$C``, ``$(echo rm)``), ``eval``,
``source``, a shell reading commands from a pipe or a file, syntax bashlex does not
handle (``[[ ]]``, ``case``, ``$((…))``), or a line that does not parse. Callers
never treat an unanalysable line as harmless (see ``rules.decide_command``).

Results are cached by exact text (``parse_command_line``): guardrails cost one
parse per distinct line.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from bastion.policy.cache import TextCache

MAX_DEPTH = 16
"""Nesting of command strings and wrappers (``bash -c "sudo sh -c '…'"``) followed."""

MAX_TEXT = 8192
"""Longer lines are not parsed: they are unanalysable. bashlex is pure Python and
slower than linear on long pipelines (a 1 KiB line takes about a millisecond, an
8 KiB chain of pipes about half a second), and the caller waits for it."""

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "csh", "tcsh"})


@dataclass(frozen=True)
class Command:
    """One program the line would run: base name, argument words, and what wrapped it."""

    program: str
    args: tuple[str, ...] = ()
    via: tuple[str, ...] = ()
    """Wrappers and shells it runs under, outermost first (``sudo bash -c "rm x"``:
    ``("sudo", "bash")``)."""


@dataclass(frozen=True)
class ParsedLine:
    """Every command of a line; ``unanalysable`` says why the list may be incomplete."""

    text: str
    commands: tuple[Command, ...] = ()
    unanalysable: str | None = None
    opens_shell: bool = False
    """Some command starts an interactive shell (``bash``, ``sudo -i``, ``su``) that
    reads further commands from the terminal: exact for typed lines (each later line
    is checked), but for an exec request those commands are never seen."""

    @property
    def programs(self) -> tuple[str, ...]:
        """The programs in order (convenient in tests and messages)."""
        return tuple(c.program for c in self.commands)


_CACHE: TextCache[ParsedLine] = TextCache()


def parse_command_line(text: str) -> ParsedLine:
    """The commands ``text`` would run; cached by exact text. Never raises."""
    return _CACHE.get_or_compute(text, _parse_uncached)


def command_cache() -> TextCache[ParsedLine]:
    """The module's cache (benchmarks read its counters; tests clear it)."""
    return _CACHE


def _parse_uncached(text: str) -> ParsedLine:
    walk = _Walk()
    try:
        walk.line(text, (), 0)
    except RecursionError:
        walk.problem("nested too deeply to analyse")
    return ParsedLine(
        text=text,
        commands=tuple(walk.commands),
        unanalysable="; ".join(dict.fromkeys(walk.problems)) or None,
        opens_shell=walk.opens_shell,
    )


# --- bashlex ---------------------------------------------------------------

_TIME_KEYWORD = re.compile(r"(^|[;&|(){}\n!]|\bthen|\bdo|\belse)([ \t]*)time(?=[ \t\n]|$)")


def _blank(text: str) -> bool:
    return all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines())


def _bashlex_parse(text: str) -> tuple[list[Any], str]:
    """bashlex's trees and the text their positions refer to.

    bashlex has no ``time`` keyword; it is read as ``\\time``, the same command for
    our purpose. Imported here: bashlex builds its parser tables at import (about
    0.3 s), which every ``bastion`` command would pay for nothing.
    """
    import bashlex

    try:
        return list(bashlex.parse(text)), text
    except NotImplementedError as e:
        if "time command" not in str(e):
            raise
    text = _TIME_KEYWORD.sub(r"\1\2\\time", text)
    return list(bashlex.parse(text)), text


_DQ_ESCAPES = frozenset('$`"\\\n')


def _unquote(raw: str) -> str:
    """Bash's quote removal on one word as written (bashlex's own misses nested quotes).

    Expansions (``$x``, ``$(…)``) stay as written; such words are marked dynamic.
    """
    out: list[str] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == "\\":
            if i + 1 < n and raw[i + 1] != "\n":
                out.append(raw[i + 1])
            i += 2
        elif c == "'":
            j = raw.find("'", i + 1)
            j = n if j < 0 else j
            out.append(raw[i + 1 : j])
            i = j + 1
        elif c == '"':
            i += 1
            while i < n and raw[i] != '"':
                if raw[i] == "\\" and i + 1 < n and raw[i + 1] in _DQ_ESCAPES:
                    if raw[i + 1] != "\n":
                        out.append(raw[i + 1])
                    i += 2
                else:
                    out.append(raw[i])
                    i += 1
            i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _parse_failure(e: BaseException) -> str:
    if isinstance(e, NotImplementedError):
        what = str(e).split(",")[0].removeprefix("type = ").strip("{}")
        return f"shell syntax the parser does not support ({what})"
    import bashlex.errors

    if isinstance(e, bashlex.errors.ParsingError):
        return f"does not parse as a shell line ({e.message})"
    return f"does not parse as a shell line ({type(e).__name__})"


# --- wrappers --------------------------------------------------------------


@dataclass(frozen=True)
class _Wrapper:
    """How a prefix program (``sudo``, ``env``, ``timeout``…) finds the command it runs."""

    values: str = ""  # short options that take a value (-u USER, -uUSER)
    long_values: frozenset[str] = frozenset()  # long options taking the next word
    optional: str = ""  # short options whose value is attached only (xargs -i{})
    numeric: bool = False  # nice -10
    assignments: bool = False  # NAME=VALUE words before the command (env, sudo)
    positionals: int = 0  # words between the options and the command (timeout 5)
    no_run: str = ""  # short options after which nothing runs (command -v)
    as_shell: str = ""  # short options that run the command through a shell (sudo -s)
    always_shell: bool = False  # the rest is one shell line (watch)
    strings: str = ""  # short options whose value is a command line (su -c, flock -c)
    long_strings: frozenset[str] = frozenset()
    split_string: str = ""  # env -S: the value is split and prepended to the command
    opens_shell: bool = False  # without a command, an interactive shell starts


def _w(values: str = "", long_values: str = "", **kw: Any) -> _Wrapper:
    return _Wrapper(values=values, long_values=frozenset(long_values.split()), **kw)


_WRAPPERS: dict[str, _Wrapper] = {
    "sudo": _w(
        "CDgpRrtTUu",
        "chdir close-from group host prompt chroot role type command-timeout other-user user",
        assignments=True,
        no_run="elvK",
        as_shell="si",
        opens_shell=True,
    ),
    "doas": _w("uC", as_shell="s", opens_shell=True),
    "env": _w("uCS", "unset chdir split-string", assignments=True, split_string="S"),
    "nice": _w("n", "adjustment", numeric=True),
    "timeout": _w("sk", "signal kill-after", positionals=1),
    "xargs": _w(
        "adELnPs",
        "arg-file delimiter max-args max-procs max-chars process-slot-var",
        optional="eil",
    ),
    "nohup": _w(),
    "command": _w(no_run="vV"),
    "builtin": _w(),
    "exec": _w("a"),
    "time": _w("fo", "format output"),
    "stdbuf": _w("ioe", "input output error"),
    "ionice": _w("cnpPu", "class classdata pid pgid uid", no_run="pPu"),
    "chroot": _w("", "userspec groups", positionals=1, opens_shell=True),
    "setsid": _w(),
    "flock": _w("wE", "timeout wait conflict-exit-code", positionals=1, strings="c"),
    "watch": _w("nd", "interval", always_shell=True),
    "taskset": _w(positionals=1, no_run="p"),
    "busybox": _w(),
    "script": _w("EIOTm", "echo log-in log-out log-timing logging-format", strings="c"),
}

_SU = frozenset({"su", "runuser"})


@dataclass
class _Unwrapped:
    start: int = 0  # index of the inner command's program word
    strings: list[_Word] = field(default_factory=list)
    split: _Word | None = None
    no_run: bool = False
    as_shell: bool = False


@dataclass(frozen=True)
class _Word:
    text: str
    dynamic: bool = False  # contains an expansion whose value the text does not show


_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _unwrap(spec: _Wrapper, words: list[_Word]) -> _Unwrapped:
    """Skip ``spec``'s options in ``words``; say where the wrapped command starts."""
    out = _Unwrapped()
    i, n = 0, len(words)
    while i < n:
        w = words[i].text
        if w == "--":
            i += 1
            break
        if w.startswith("--"):
            name, eq, value = w[2:].partition("=")
            takes = name in spec.long_values or name in spec.long_strings
            if takes and not eq and i + 1 < n:
                i += 1
                chosen = words[i]
            else:
                chosen = _Word(value, words[i].dynamic)
            if name in spec.long_strings:
                out.strings.append(chosen)
            if name == "split-string" and spec.split_string:
                out.split = chosen
            i += 1
            continue
        if w == "-" or (w.startswith("-") and spec.numeric and w[1:].isdigit()):
            i += 1
            continue
        if not w.startswith("-"):
            break
        i = _short_cluster(spec, words, i, out)
    if spec.assignments:
        while i < n and _ASSIGNMENT.match(words[i].text):
            i += 1
    out.start = min(i + spec.positionals, n)
    return out


def _short_cluster(spec: _Wrapper, words: list[_Word], i: int, out: _Unwrapped) -> int:
    """Read one ``-abc`` word (and the value word it may take); the next index."""
    w = words[i].text
    for j, ch in enumerate(w[1:], start=2):
        out.no_run |= ch in spec.no_run
        out.as_shell |= ch in spec.as_shell
        if ch in spec.optional:
            break
        if ch in spec.values or ch in spec.strings:
            rest = w[j:]
            if rest:
                value = _Word(rest, words[i].dynamic)
            elif i + 1 < len(words):
                i += 1
                value = words[i]
            else:
                break
            if ch in spec.strings:
                out.strings.append(value)
            if ch == spec.split_string:
                out.split = value
            break
    return i + 1


# --- the walk --------------------------------------------------------------


def _raw(n: Any, src: str) -> str:
    start, end = n.pos
    return src[start:end]


_GLOB_CHARS = re.compile(r"[*?\[\]{}]")
_STDIN_TTY = "tty"
_STDIN_PIPE = "pipe"
_STDIN_FILE = "file"


class _Walk:
    """Collects commands and problems over bashlex trees (one per parse)."""

    def __init__(self) -> None:
        self.commands: list[Command] = []
        self.problems: list[str] = []
        self.opens_shell = False

    def problem(self, reason: str) -> None:
        self.problems.append(reason)

    def line(self, text: str, via: tuple[str, ...], depth: int) -> None:
        if depth > MAX_DEPTH:
            self.problem(f"commands nested more than {MAX_DEPTH} levels deep")
            return
        if len(text) > MAX_TEXT:
            self.problem(f"longer than {MAX_TEXT} characters")
            return
        if _blank(text):
            return
        try:
            trees, text = _bashlex_parse(text)
        except RecursionError:
            raise
        except Exception as e:  # bashlex raises many types on odd input; all mean "cannot tell"
            self.problem(_parse_failure(e))
            return
        for tree in trees:
            self.node(tree, text, via, depth, _STDIN_TTY)

    def node(self, n: Any, src: str, via: tuple[str, ...], depth: int, stdin: object) -> None:
        kind = n.kind
        if kind == "command":
            self.simple(n, src, via, depth, stdin)
        elif kind == "pipeline":
            stages = [p for p in n.parts if p.kind not in ("pipe", "reservedword")]
            for k, p in enumerate(stages):
                self.node(p, src, via, depth, _STDIN_PIPE if k else stdin)
        elif kind in ("list", "if", "while", "until", "for", "function"):
            self.body(n, src, via, depth, stdin)
        elif kind == "compound":
            for p in n.list:
                if p.kind not in ("reservedword", "operator"):
                    self.node(p, src, via, depth, stdin)
            for r in getattr(n, "redirects", []) or []:
                self.redirect_words(r, src, via, depth)
        elif kind in ("commandsubstitution", "processsubstitution"):
            self.node(n.command, src, via, depth, _STDIN_TTY)
        elif kind not in ("reservedword", "operator", "pipe"):
            self.problem(f"shell construct not analysed ({kind})")

    def body(self, n: Any, src: str, via: tuple[str, ...], depth: int, stdin: object) -> None:
        """The parts of a list, ``if``, loop or function definition."""
        for k, p in enumerate(n.parts):
            if p.kind == "word":
                if n.kind == "function" and k == 0 or n.kind == "for" and k == 1:
                    continue  # the function's or the loop variable's name
                self.expansions(p, src, via, depth)
            elif p.kind not in ("operator", "reservedword", "pipe"):
                self.node(p, src, via, depth, stdin)

    def expansions(self, n: Any, src: str, via: tuple[str, ...], depth: int) -> bool:
        """Walk the substitutions inside a word; True if its value is not its text."""
        dynamic = False
        for p in getattr(n, "parts", []) or []:
            if p.kind in ("commandsubstitution", "processsubstitution"):
                self.node(p.command, src, via, depth, _STDIN_TTY)
                dynamic = True
            elif p.kind == "parameter":
                dynamic = True
                value = str(getattr(p, "value", "") or "")
                if "$(" in value or "`" in value:
                    self.problem("a command substitution inside a parameter expansion")
            elif p.kind != "tilde":
                dynamic = True
        return dynamic

    def redirect_words(self, r: Any, src: str, via: tuple[str, ...], depth: int) -> None:
        target = getattr(r, "output", None)
        if target is not None and not isinstance(target, int):
            self.expansions(target, src, via, depth)

    def simple(self, n: Any, src: str, via: tuple[str, ...], depth: int, stdin: object) -> None:
        words: list[_Word] = []
        for p in n.parts:
            if p.kind == "assignment":
                self.expansions(p, src, via, depth)
                if words:  # after the program name it is an ordinary argument
                    words.append(_Word(_unquote(_raw(p, src)), True))
            elif p.kind == "word":
                dynamic = self.expansions(p, src, via, depth)
                words.append(_Word(_unquote(_raw(p, src)), dynamic))
            elif p.kind == "redirect":
                stdin = self.redirect(p, src, via, depth, stdin)
            else:
                self.node(p, src, via, depth, stdin)
        if words:
            self.run(words, via, depth, stdin)

    def redirect(self, r: Any, src: str, via: tuple[str, ...], depth: int, stdin: object) -> object:
        """Walk a redirection; what the command's standard input becomes."""
        self.redirect_words(r, src, via, depth)
        kind = r.type
        if kind in ("<<", "<<-"):
            delim = r.output
            body = str(r.heredoc.value) if getattr(r, "heredoc", None) is not None else ""
            lines = body.split("\n")
            if lines and lines[-1].strip() == delim.word:
                lines.pop()
            body = "\n".join(lines)
            quoted = any(c in src[delim.pos[0] : delim.pos[1]] for c in "'\"\\")
            dynamic = not quoted and ("$" in body or "`" in body)
            if dynamic and ("$(" in body or "`" in body):
                self.problem("a command substitution inside a here-document")
            return _Word(body, dynamic)
        if kind == "<<<":
            target = r.output
            return _Word(_unquote(_raw(target, src)), self.expansions(target, src, via, depth))
        if kind in ("<", "<>"):
            return _STDIN_FILE
        return stdin

    def run(self, words: list[_Word], via: tuple[str, ...], depth: int, stdin: object) -> None:
        """Record the command ``words`` runs, then follow what it runs in turn."""
        if depth > MAX_DEPTH:
            self.problem(f"commands nested more than {MAX_DEPTH} levels deep")
            return
        prog = words[0]
        if prog.dynamic:
            self.problem(f"the program name {prog.text!r} is computed at run time")
            return
        if _GLOB_CHARS.search(prog.text) and prog.text not in ("[", "[["):
            self.problem(f"the program name {prog.text!r} is expanded by the shell")
            return
        base = prog.text.rsplit("/", 1)[-1]
        if not base:
            return  # "" or a directory: the shell runs nothing
        rest = words[1:]
        self.commands.append(Command(base, tuple(w.text for w in rest), via))
        self.follow(base, rest, (*via, base), depth, stdin)

    def follow(
        self, base: str, rest: list[_Word], inner: tuple[str, ...], depth: int, stdin: object
    ) -> None:
        """What ``base`` runs in turn: command strings, wrapped commands, files."""
        if base == "eval":
            self.problem("eval runs text built at run time")
        elif base in ("source", ".") and rest:
            self.problem(f"{base} runs the commands of a file")
        elif base == "alias":
            for w in rest:
                _, eq, value = w.text.partition("=")
                if eq:
                    self.string(_Word(value, w.dynamic), inner, depth + 1, "an alias")
        elif base in SHELLS:
            self.shell(base, rest, inner, depth, stdin)
        elif base in _SU:
            self.su(base, rest, inner, depth)
        elif base == "find":
            self.find(rest, inner, depth)
        elif base in _WRAPPERS:
            self.wrapper(_WRAPPERS[base], rest, inner, depth, stdin)

    def string(self, w: _Word, via: tuple[str, ...], depth: int, what: str) -> None:
        """A command line given as one word (``bash -c STR``)."""
        if w.dynamic:
            self.problem(f"{what} runs a command line built at run time")
        else:
            self.line(w.text, via, depth)

    def wrapper(
        self, spec: _Wrapper, rest: list[_Word], via: tuple[str, ...], depth: int, stdin: object
    ) -> None:
        u = _unwrap(spec, rest)
        if u.no_run:
            return
        for s in u.strings:
            self.string(s, via, depth + 1, via[-1])
        tail = rest[u.start :]
        if tail and spec.strings and tail[0].text in {f"-{c}" for c in spec.strings}:
            # flock FILE -c STR: the string option after the positional operand
            if len(tail) > 1:
                self.string(tail[1], via, depth + 1, via[-1])
            return
        if u.split is not None:
            joined = _Word(
                " ".join([u.split.text, *(shlex.quote(w.text) for w in tail)]),
                u.split.dynamic or any(w.dynamic for w in tail),
            )
            self.string(joined, via, depth + 1, via[-1])
        elif u.as_shell or spec.always_shell:
            if tail:
                joined = _Word(" ".join(w.text for w in tail), any(w.dynamic for w in tail))
                self.string(joined, via, depth + 1, via[-1])
            elif u.as_shell:
                self.opens_shell = True
        elif tail:
            self.run(tail, via, depth + 1, stdin)
        elif spec.opens_shell and not u.strings:
            self.opens_shell = True

    def shell(
        self, name: str, rest: list[_Word], via: tuple[str, ...], depth: int, stdin: object
    ) -> None:
        """``bash -c STR``, ``sh script``, or a shell reading commands from its input."""
        has_c = reads_stdin = False
        i = 0
        while i < len(rest):
            w = rest[i].text
            if w == "--":
                i += 1
                break
            if w in ("-o", "+o", "-O", "+O", "--rcfile", "--init-file"):
                i += 2
                continue
            if w.startswith("--") or (w[:1] in "-+" and len(w) > 1):
                if w[:1] == "-" and not w.startswith("--"):
                    has_c |= "c" in w
                    reads_stdin |= "s" in w
                i += 1
                continue
            break
        operand = rest[i] if i < len(rest) else None
        if has_c:
            if operand is not None:
                self.string(operand, via, depth + 1, name)
            return
        if operand is not None and not reads_stdin:
            return  # a script file: the program is the shell, judged as such
        if isinstance(stdin, _Word):
            self.string(stdin, via, depth + 1, f"{name}'s input")
        elif stdin == _STDIN_TTY:
            self.opens_shell = True
        else:
            self.problem(f"{name} reads commands from a {stdin}")

    def su(self, name: str, rest: list[_Word], via: tuple[str, ...], depth: int) -> None:
        """``su [-] [user] [-c STR]``; ``runuser -u USER [--] CMD…``."""
        strings: list[_Word] = []
        user_flag = False
        i = 0
        while i < len(rest):
            w = rest[i].text
            if w == "--":
                if user_flag and i + 1 < len(rest):
                    self.run(rest[i + 1 :], via, depth + 1, _STDIN_TTY)
                    return
                i += 1
                continue
            name_, eq, value = w.partition("=")
            if w in ("-c", "--command", "--session-command") and i + 1 < len(rest):
                strings.append(rest[i + 1])
                i += 2
            elif eq and name_ in ("--command", "--session-command"):
                strings.append(_Word(value, rest[i].dynamic))
                i += 1
            elif w.startswith("-c") and len(w) > 2:
                strings.append(_Word(w[2:], rest[i].dynamic))
                i += 1
            elif w in ("-s", "-g", "-G", "-w", "--shell", "--group", "--supp-group"):
                i += 2
            elif w == "-u" and name == "runuser":
                user_flag = True
                i += 2
            elif user_flag and not w.startswith("-"):
                self.run(rest[i:], via, depth + 1, _STDIN_TTY)
                return
            else:
                i += 1
        for s in strings:
            self.string(s, via, depth + 1, name)
        if not strings:
            self.opens_shell = True

    def find(self, rest: list[_Word], via: tuple[str, ...], depth: int) -> None:
        """``find … -exec CMD … ;`` (and -execdir, -ok, -okdir) runs CMD."""
        i = 0
        while i < len(rest):
            if rest[i].text in ("-exec", "-execdir", "-ok", "-okdir"):
                j = i + 1
                while j < len(rest) and rest[j].text not in (";", "+"):
                    j += 1
                if j > i + 1:
                    self.run(rest[i + 1 : j], via, depth + 1, _STDIN_TTY)
                i = j
            i += 1
