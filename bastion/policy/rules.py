"""Guardrail rules and the decisions they give: an ordered list, first match wins.

A rule says *what* (a command: program names and an optional regex over its
arguments; SQL: statement classes and optional table globs; a file path glob),
*where* (target name globs or ``KEY=VALUE`` labels), *who* (user names or
``@group``) and the *action* (a ``Verdict``). ``shadow`` rules only report that
they matched. Rules that do not apply to the user and target are skipped.

A text is judged in parts (*facets*): each command of a shell line, each
(class, table) pair of each SQL statement. Each part gets the first enforced rule
that matches it, or the default; the strictest part decides the whole text, so
``ls; rm -rf X`` is as denied as ``rm -rf X`` and an allowed SELECT cannot carry
a DELETE in its CTE.

What cannot be analysed (``$C -rf X``, ``eval``, an unparsable SQL text no rule
names) is never silently allowed: it gets the strictest action that any enforced
rule of that kind could give this user on this target, or the default if that is
stricter, capped at ``deny`` (``terminate`` and ``lock`` need a real match). With
no such rule and a default of allow it runs, flagged (``unanalysable`` is set, the
caller raises an alert). docs/decisions.md says why.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from functools import partial

from bastion.policy.commands import Command, parse_command_line
from bastion.policy.sql import CLASSES, ParsedSQL, escape_string_reading, parse_statements
from bastion.session.hooks import Decision, Verdict


class RuleError(ValueError):
    """A rule that cannot be applied as written (the message says which field)."""


class RuleKind(StrEnum):
    """What a rule looks at."""

    COMMAND = "command"
    SQL = "sql"
    FILE = "file"


@dataclass(frozen=True)
class Rule:
    """One guardrail; ``Rule(...)`` validates and raises ``RuleError``."""

    name: str
    kind: RuleKind
    action: Verdict
    programs: tuple[str, ...] = ()
    """Program base names or globs (``rm``, ``mkfs*``), case-sensitive as on Linux."""
    args_regex: str | None = None
    """Searched (``re.search``) in the command's arguments joined by single spaces."""
    sql_classes: frozenset[str] = frozenset()
    tables: tuple[str, ...] = ()
    """Globs matched, case-insensitively, against ``schema.table`` as written and ``table``."""
    file_glob: str | None = None
    targets: tuple[str, ...] = ()
    """Target name globs or ``KEY=VALUE`` label matches (value may be a glob); empty: all."""
    users: tuple[str, ...] = ()
    """User names or ``@group``; empty: everyone."""
    shadow: bool = False
    _args: re.Pattern[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", RuleKind(self.kind))
            object.__setattr__(self, "action", Verdict(self.action))
        except ValueError as e:
            raise RuleError(f"rule {self.name!r}: {e}") from e
        object.__setattr__(self, "programs", tuple(self.programs))
        object.__setattr__(self, "sql_classes", frozenset(self.sql_classes))
        object.__setattr__(self, "tables", tuple(self.tables))
        object.__setattr__(self, "targets", tuple(self.targets))
        object.__setattr__(self, "users", tuple(self.users))
        if not self.name:
            raise RuleError("a rule needs a name")
        self._check_shape()
        if self.args_regex is not None:
            try:
                object.__setattr__(self, "_args", re.compile(self.args_regex))
            except re.error as e:
                raise RuleError(f"rule {self.name!r}: --args is not a regex: {e}") from e
        for u in self.users:
            if not u or u == "@":
                raise RuleError(f"rule {self.name!r}: empty user or group")

    def _check_shape(self) -> None:
        given = {
            "programs": bool(self.programs) or self.args_regex is not None,
            "sql": bool(self.sql_classes or self.tables),
            "file": self.file_glob is not None,
        }
        own = {RuleKind.COMMAND: "programs", RuleKind.SQL: "sql", RuleKind.FILE: "file"}[self.kind]
        others = [k for k, v in given.items() if v and k != own]
        if others:
            raise RuleError(f"rule {self.name!r} ({self.kind}) also sets {', '.join(others)}")
        if self.kind is RuleKind.COMMAND and not self.programs:
            raise RuleError(f"rule {self.name!r}: a command rule names at least one program")
        if self.kind is RuleKind.SQL:
            if not self.sql_classes:
                raise RuleError(f"rule {self.name!r}: an SQL rule names at least one class")
            unknown = sorted(self.sql_classes - CLASSES)
            if unknown:
                raise RuleError(
                    f"rule {self.name!r}: unknown SQL classes {', '.join(unknown)} "
                    f"(known: {', '.join(sorted(CLASSES))})"
                )
        if self.kind is RuleKind.FILE and not self.file_glob:
            raise RuleError(f"rule {self.name!r}: a file rule needs a glob")

    def applies_to(
        self, user: str, groups: Iterable[str], target: str, labels: Mapping[str, str]
    ) -> bool:
        """Whether the rule covers this user on this target."""
        if self.users:
            gs = set(groups)
            if not any(u[1:] in gs if u.startswith("@") else u == user for u in self.users):
                return False
        if self.targets:
            return any(_target_matches(t, target, labels) for t in self.targets)
        return True

    def matches_command(self, cmd: Command) -> bool:
        """The program is one of the rule's and the arguments match its regex."""
        if not any(fnmatchcase(cmd.program, p) for p in self.programs):
            return False
        return self._args is None or self._args.search(" ".join(cmd.args)) is not None

    def matches_facet(self, cls: str, table: str | None) -> bool:
        """The rule names the class and (if it has table globs) the table."""
        if cls not in self.sql_classes:
            return False
        if not self.tables:
            return True
        if table is None:
            return False
        names = {table.lower(), table.rsplit(".", 1)[-1].lower()}
        return any(fnmatchcase(n, g.lower()) for g in self.tables for n in names)

    def matches_path(self, path: str) -> bool:
        """The normalised path matches the glob (``*`` crosses ``/``)."""
        return self.file_glob is not None and fnmatchcase(_normal_path(path), self.file_glob)


def _target_matches(spec: str, target: str, labels: Mapping[str, str]) -> bool:
    key, eq, value = spec.partition("=")
    if eq:
        have = labels.get(key)
        return have is not None and fnmatchcase(have, value)
    return fnmatchcase(target, spec)


def _normal_path(path: str) -> str:
    """``//etc/../etc/shadow`` is ``/etc/shadow``: globs see the path the server opens."""
    if not path:
        return path
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if path.startswith("/") else norm


@dataclass(frozen=True)
class Policy:
    """The ordered rules of a node and the action when none matches."""

    rules: tuple[Rule, ...] = ()
    default: Verdict = Verdict.ALLOW

    def __post_init__(self) -> None:
        object.__setattr__(self, "rules", tuple(self.rules))
        object.__setattr__(self, "default", Verdict(self.default))
        if self.default not in (Verdict.ALLOW, Verdict.DENY):
            raise RuleError("the default action is allow or deny")
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise RuleError(f"rule names must be unique: {', '.join(dupes)}")


@dataclass(frozen=True)
class PolicyDecision:
    """What the rules decide about one text, and what the caller must report."""

    action: Verdict
    rule: str | None = None
    """The enforced rule that decided; None when the default (or nothing) did."""
    reason: str = ""
    """Words for the contractor and the audit row."""
    part: str = ""
    """The command or statement that decided (``rm -rf X``)."""
    shadow: tuple[str, ...] = ()
    """Shadow rules that matched before the deciding rule: alerts, not enforced."""
    unanalysable: str | None = None
    """Why (part of) the text could not be analysed."""
    exact: bool = True
    """False for a typed terminal line (rebuilt from input and echo: best effort)."""

    @property
    def flagged(self) -> bool:
        """The caller raises an alert: not a plain allow, a shadow match, or unanalysable."""
        return self.action is not Verdict.ALLOW or bool(self.shadow) or bool(self.unanalysable)

    def hook_decision(self, hook: str = "policy") -> Decision:
        """The session core's ``Decision`` for this result."""
        return Decision(self.action, self.reason, rule=self.rule, hook=hook)


@dataclass(frozen=True)
class _Part:
    action: Verdict
    rule: str | None
    part: str
    reason: str


def _first_match(
    rules: Sequence[Rule],
    matches: Callable[[Rule], bool],
    default: Verdict,
    part: str,
    shadow: list[str],
) -> _Part:
    """The first enforced rule that ``matches``; shadow rules met on the way are noted."""
    for rule in rules:
        if not matches(rule):
            continue
        if rule.shadow:
            if rule.name not in shadow:
                shadow.append(rule.name)
            continue
        return _Part(rule.action, rule.name, part, f"rule {rule.name!r} ({rule.action}): {part}")
    return _Part(default, None, part, f"default ({default}): {part}")


def _strictest(parts: Sequence[_Part]) -> _Part | None:
    best: _Part | None = None
    for p in parts:  # ties keep the earliest part
        if best is None or p.action.severity > best.action.severity:
            best = p
    return best


def _unanalysable_action(rules: Sequence[Rule], default: Verdict) -> Verdict:
    """What an unknown command or statement gets: the strictest any rule could give, ≤ deny."""
    worst = max([default, *(r.action for r in rules if not r.shadow)], key=lambda v: v.severity)
    return worst if worst.severity <= Verdict.DENY.severity else Verdict.DENY


def _applicable(
    policy: Policy,
    kind: RuleKind,
    user: str,
    groups: Iterable[str],
    target: str,
    labels: Mapping[str, str],
) -> list[Rule]:
    gs = frozenset(groups)
    return [r for r in policy.rules if r.kind is kind and r.applies_to(user, gs, target, labels)]


def _decision(
    parts: list[_Part], shadow: list[str], unanalysable: str | None, exact: bool
) -> PolicyDecision:
    best = _strictest(parts)
    if best is None:
        return PolicyDecision(
            Verdict.ALLOW, reason="nothing to run", shadow=tuple(shadow), exact=exact
        )
    return PolicyDecision(
        best.action,
        rule=best.rule,
        reason=best.reason,
        part=best.part,
        shadow=tuple(shadow),
        unanalysable=unanalysable,
        exact=exact,
    )


def _command_matches(cmd: Command, rule: Rule) -> bool:
    return rule.matches_command(cmd)


def _facet_matches(cls: str, table: str | None, rule: Rule) -> bool:
    return rule.matches_facet(cls, table)


def _show(cmd: Command) -> str:
    return " ".join((cmd.program, *cmd.args))


def decide_command(
    policy: Policy,
    user: str,
    groups: Iterable[str],
    target_name: str,
    target_labels: Mapping[str, str],
    text: str,
    exact: bool,
) -> PolicyDecision:
    """Judge a command line: an exec request (``exact``) or a typed terminal line."""
    rules = _applicable(policy, RuleKind.COMMAND, user, groups, target_name, target_labels)
    parsed = parse_command_line(text)
    shadow: list[str] = []
    parts = [
        _first_match(rules, partial(_command_matches, cmd), policy.default, _show(cmd), shadow)
        for cmd in parsed.commands
    ]
    if parsed.unanalysable is not None:
        action = _unanalysable_action(rules, policy.default)
        parts.append(
            _Part(action, None, text, f"cannot be analysed ({parsed.unanalysable}): {action}")
        )
    return _decision(parts, shadow, parsed.unanalysable, exact)


def decide_sql(
    policy: Policy,
    user: str,
    groups: Iterable[str],
    target_name: str,
    target_labels: Mapping[str, str],
    text: str,
) -> PolicyDecision:
    """Judge a SQL text (one Query or Parse message): every facet of every statement.

    A text with a backslash is also judged as a server with
    ``standard_conforming_strings = off`` reads it (``escape_string_reading``), and
    the stricter decision stands: the parser reads it with the setting on, and a
    contractor can turn it off (``SET``, ``set_config``, ...) to hide a statement
    inside what looks like a string. A reading that cannot be parsed is one the
    server could not run either, so it does not count.
    """
    rules = _applicable(policy, RuleKind.SQL, user, groups, target_name, target_labels)
    decision = _decide_sql_reading(policy, rules, parse_statements(text))
    if "\\" in text:
        escaped = parse_statements(escape_string_reading(text))
        if not any("unparsable" in s.classes for s in escaped.statements):
            other = _decide_sql_reading(policy, rules, escaped)
            if other.action.severity > decision.action.severity:
                return other
    return decision


def _decide_sql_reading(policy: Policy, rules: Sequence[Rule], parsed: ParsedSQL) -> PolicyDecision:
    shadow: list[str] = []
    parts: list[_Part] = []
    errors = [s.error or "unparsable" for s in parsed.statements if "unparsable" in s.classes]
    for stmt in parsed.statements:
        for cls, table in stmt.facets:
            part = _first_match(
                rules,
                partial(_facet_matches, cls, table),
                policy.default,
                stmt.text,
                shadow,
            )
            if cls == "unparsable" and part.rule is None:  # no rule names it: fail closed
                action = _unanalysable_action(rules, policy.default)
                part = _Part(action, None, stmt.text, f"cannot be parsed ({stmt.error}): {action}")
            parts.append(part)
    return _decision(parts, shadow, "; ".join(errors) or None, True)


def decide_file(
    policy: Policy,
    user: str,
    groups: Iterable[str],
    target_name: str,
    target_labels: Mapping[str, str],
    path: str,
) -> PolicyDecision:
    """Judge one scp/sftp path."""
    rules = _applicable(policy, RuleKind.FILE, user, groups, target_name, target_labels)
    shadow: list[str] = []
    part = _first_match(rules, lambda r: r.matches_path(path), policy.default, path, shadow)
    return _decision([part], shadow, None, True)
