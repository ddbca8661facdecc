"""Target labels and the label selectors of access profiles: parsing and matching, pure.

A target carries labels (``env=staging``, ``role=web``); a profile selects targets
with a selector: comma-separated terms that must all hold. A term is
``key=value`` (the label has that value), ``key!=value`` (it is missing or has
another value), ``key`` (the label exists) or ``!key`` (it does not). The
selector is kept as text in the store and evaluated against the labels a target
has at the moment a contractor connects (``docs/decisions.md``, "Profiles and
labels"), so nothing is cached here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.errors import UsageError

if TYPE_CHECKING:  # the store imports this module
    from bastion.store.models import Profile

_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,62}")
_VALUE = re.compile(r"[A-Za-z0-9_.:/@+\-]{1,128}")

EQ, NE, EXISTS, ABSENT = "=", "!=", "exists", "absent"


def check_key(key: str) -> str:
    """A valid label key, or UsageError saying what a key may contain."""
    if not _KEY.fullmatch(key):
        raise UsageError(
            f"bad label key '{key}': use letters, digits and _ . - / "
            "(starting with a letter or digit, at most 63 characters)"
        )
    return key


def check_value(key: str, value: str) -> str:
    """A valid label value, or UsageError saying what a value may contain."""
    if not _VALUE.fullmatch(value):
        raise UsageError(
            f"bad value '{value}' for label '{key}': use 1-128 letters, digits and _ . : / @ + -"
        )
    return value


def parse_label(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` as a (key, value) pair; UsageError naming the expected form."""
    key, sep, value = text.partition("=")
    if not sep:
        raise UsageError(f"bad label '{text}': write KEY=VALUE, e.g. env=staging")
    key, value = key.strip(), value.strip()
    return check_key(key), check_value(key, value)


def parse_labels(texts: Iterable[str]) -> dict[str, str]:
    """Several ``KEY=VALUE`` labels; a key given twice is refused (which one was meant?)."""
    labels: dict[str, str] = {}
    for text in texts:
        key, value = parse_label(text)
        if key in labels and labels[key] != value:
            raise UsageError(f"label '{key}' is given twice ({labels[key]}, {value}); keep one")
        labels[key] = value
    return labels


def format_labels(labels: Mapping[str, str]) -> str:
    """Labels as ``k=v,k2=v2`` (sorted by key), or ``-`` for none."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels)) or "-"


@dataclass(frozen=True)
class Term:
    """One condition on one label."""

    key: str
    op: str
    value: str | None = None

    def holds(self, labels: Mapping[str, str]) -> bool:
        """Does this term hold for a target with ``labels``?"""
        have = labels.get(self.key)
        if self.op == EQ:
            return have == self.value
        if self.op == NE:
            return have != self.value
        if self.op == EXISTS:
            return have is not None
        return have is None

    def __str__(self) -> str:
        if self.op in (EQ, NE):
            return f"{self.key}{self.op}{self.value}"
        return self.key if self.op == EXISTS else f"!{self.key}"


@dataclass(frozen=True)
class Selector:
    """Terms that must all hold (comma = AND); never empty, so it never selects everything."""

    terms: tuple[Term, ...]

    @classmethod
    def parse(cls, text: str) -> Selector:
        """Parse ``env=staging,role!=db,team,!legacy``; UsageError names the bad term."""
        terms: list[Term] = []
        for raw in text.split(","):
            part = raw.strip()
            if not part:
                continue
            terms.append(_term(part, text))
        if not terms:
            raise UsageError(
                "a profile's selector must name at least one label, e.g. --select 'env=staging'"
            )
        return cls(tuple(terms))

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Does a target with ``labels`` fall under this selector?"""
        return all(t.holds(labels) for t in self.terms)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


def _term(part: str, whole: str) -> Term:
    if "!=" in part:
        key, _, value = part.partition("!=")
        key, value = key.strip(), value.strip()
        return Term(check_key(key), NE, check_value(key, value))
    if "=" in part:
        key, _, value = part.partition("=")
        key, value = key.strip(), value.strip()
        return Term(check_key(key), EQ, check_value(key, value))
    if part.startswith("!"):
        return Term(check_key(part[1:].strip()), ABSENT)
    if _KEY.fullmatch(part):
        return Term(part, EXISTS)
    raise UsageError(
        f"bad selector term '{part}' in '{whole}': use key=value, key!=value, key or !key"
    )


def check_profile_fit(p: Profile, login: str | None, options: frozenset[str]) -> None:
    """Refuse (UsageError) a login or options beyond what ``p`` allows a grant under it.

    The one check for both doors: ``grant add --profile`` and a request naming
    the profile (at request time and again at approval, the profile may have
    changed meanwhile).
    """
    if login is not None and p.logins and login not in p.logins:
        raise UsageError(f"profile {p.name} allows the logins {', '.join(p.logins)}, not '{login}'")
    beyond = sorted(options - p.options)
    if beyond:
        allowed = ",".join(sorted(p.options)) or "none"
        raise UsageError(
            f"profile {p.name} does not allow {','.join(beyond)} (it allows: {allowed})"
        )
