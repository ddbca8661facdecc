"""``[requests]`` in the config file: defaults of the access-request workflow.

Kept apart from ``bastion.config`` (which calls ``parse_requests``) so the
workflow's settings, including the auto-approval rules, are read and checked in
one place. Durations are written as people write them ("8h", "30m").
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bastion.errors import ConfigError
from bastion.timeparse import parse_duration

CLOCKS = ("approval", "first-connect")
KNOWN_REQUEST_KEYS = frozenset(
    {
        "approvals",
        "max_duration",
        "pending_ttl",
        "clock",
        "first_connect_ceiling",
        "break_glass_max",
        "auto_approve",
    }
)
KNOWN_RULE_KEYS = frozenset({"targets", "profiles", "users", "groups", "hours", "timezone", "max"})


@dataclass(frozen=True)
class AutoApproveRule:
    """Requests that match are approved by the bastion itself (announced like any approval).

    ``targets`` globs match requests for targets, ``profiles`` globs requests for an
    access profile; a rule that names only ``profiles`` matches no target request,
    and ``targets`` never match a profile request (what a profile reaches changes
    with labels after approval, so a target glob cannot vouch for it).
    """

    targets: tuple[str, ...] = ("*",)
    profiles: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    hours: tuple[time, time] | None = None
    timezone: str = "UTC"
    max: float = 3600.0

    def matches(
        self, *, user: str, groups: tuple[str, ...], targets: tuple[str, ...], duration: float,
        now: float, profile: str | None = None,
    ) -> bool:  # fmt: skip
        """Does a request of ``user`` for ``targets`` (or ``profile``) lasting ``duration``
        match at ``now``?"""
        if duration > self.max:
            return False
        if self.users or self.groups:
            if user not in self.users and not set(groups) & set(self.groups):
                return False
        if profile is not None:
            if not any(fnmatch.fnmatchcase(profile, g) for g in self.profiles):
                return False
        elif not targets or not all(
            any(fnmatch.fnmatchcase(t, g) for g in self.targets) for t in targets
        ):
            return False
        if self.hours is not None:
            local = datetime.fromtimestamp(now, ZoneInfo(self.timezone)).time()
            start, end = self.hours
            inside = start <= local < end if start <= end else (local >= start or local < end)
            if not inside:
                return False
        return True

    def describe(self) -> str:
        """The rule in a few words, for audit rows and notifications."""
        hours = (
            f" {self.hours[0]:%H:%M}-{self.hours[1]:%H:%M} {self.timezone}" if self.hours else ""
        )
        who = ",".join([*self.users, *(f"@{g}" for g in self.groups)]) or "anyone"
        what = ",".join([*self.targets, *(f"profile {p}" for p in self.profiles)])
        return f"auto-approve {what} for {who}{hours} up to {int(self.max)}s"


@dataclass(frozen=True)
class RequestsConfig:
    """Defaults of the request workflow (targets may override approvals and the maximum)."""

    approvals: int = 1
    max_duration: float = 8 * 3600.0
    pending_ttl: float = 3600.0
    clock: str = "approval"
    first_connect_ceiling: float = 24 * 3600.0
    """With ``clock = "first-connect"``: access ends this long after approval at the latest."""
    break_glass_max: float = 30 * 60.0
    auto_approve: tuple[AutoApproveRule, ...] = field(default_factory=tuple)


def _duration(section: dict[str, Any], key: str, default: float, where: str) -> float:
    value = section.get(key)
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        try:
            return parse_duration(value)
        except ValueError as e:
            raise ConfigError(f"{where}.{key}: {e}") from e
    raise ConfigError(f'{where}.{key} must be a duration such as "8h" or "30m", not {value!r}')


def _strings(rule: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = rule.get(key, [])
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _hours(value: object, where: str) -> tuple[time, time] | None:
    if value is None:
        return None
    try:
        assert isinstance(value, str)  # noqa: S101  narrowed for the parser; caught below
        start, end = value.split("-")
        return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
    except (AssertionError, ValueError) as e:
        raise ConfigError(f'{where}.hours must look like "08:00-18:00", not {value!r}') from e


def _rule(raw: object, index: int) -> AutoApproveRule:
    where = f"requests.auto_approve[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table ([[requests.auto_approve]])")
    unknown = set(raw) - KNOWN_RULE_KEYS
    if unknown:
        raise ConfigError(
            f"unknown key {sorted(unknown)[0]!r} in [[requests.auto_approve]]; "
            f"valid keys: {', '.join(sorted(KNOWN_RULE_KEYS))}"
        )
    tz = str(raw.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"{where}.timezone: unknown time zone {tz!r}") from e
    profiles = _strings(raw, "profiles", where)
    return AutoApproveRule(
        targets=_strings(raw, "targets", where) or (() if profiles else ("*",)),
        profiles=profiles,
        users=_strings(raw, "users", where),
        groups=_strings(raw, "groups", where),
        hours=_hours(raw.get("hours"), where),
        timezone=tz,
        max=_duration(raw, "max", 3600.0, where),
    )


def parse_requests(section: dict[str, Any]) -> RequestsConfig:
    """Read ``[requests]`` (raises ConfigError naming the setting)."""
    unknown = set(section) - KNOWN_REQUEST_KEYS
    if unknown:
        raise ConfigError(f"unknown key [requests] {sorted(unknown)[0]}")
    clock = section.get("clock", "approval")
    if clock not in CLOCKS:
        raise ConfigError(f"requests.clock must be one of {', '.join(CLOCKS)}, not {clock!r}")
    approvals = section.get("approvals", 1)
    if not isinstance(approvals, int) or isinstance(approvals, bool) or approvals < 1:
        raise ConfigError("requests.approvals must be a whole number of at least 1")
    rules = section.get("auto_approve", [])
    if not isinstance(rules, list):
        raise ConfigError("requests.auto_approve must be written as [[requests.auto_approve]]")
    return RequestsConfig(
        approvals=approvals,
        max_duration=_duration(section, "max_duration", 8 * 3600.0, "requests"),
        pending_ttl=_duration(section, "pending_ttl", 3600.0, "requests"),
        clock=str(clock),
        first_connect_ceiling=_duration(section, "first_connect_ceiling", 86400.0, "requests"),
        break_glass_max=_duration(section, "break_glass_max", 1800.0, "requests"),
        auto_approve=tuple(_rule(r, i) for i, r in enumerate(rules)),
    )


CONFIG_TEMPLATE_SECTION = """
[requests]
# Access requests (ssh USER@BASTION request TARGET --for 2h --reason "...").
# Distinct approvals a request needs (a target may ask for more: bastion target set).
approvals = 1
# Longest access a request can get, counted from approval (or the requested start).
max_duration = "8h"
# A request nobody decided within this lapses and never grants anything.
pending_ttl = "1h"
# When the clock starts: "approval", or "first-connect" (at the first connection,
# but never later than first_connect_ceiling after approval).
clock = "approval"
first_connect_ceiling = "24h"
# Break-glass: immediate access, capped, every approver notified, reviewed later.
break_glass_max = "30m"
# Requests the bastion approves itself (announced and audited like any approval):
# [[requests.auto_approve]]
# targets = ["staging-*"]        # globs over target names
# profiles = ["staging-web"]     # globs over access profile names (request --profile);
#                                # target globs never match a profile request
# groups = ["sre"]               # and/or users = ["alice"]
# hours = "08:00-18:00"          # local time in `timezone`
# timezone = "Europe/Berlin"
# max = "2h"                     # longest duration approved this way
"""
