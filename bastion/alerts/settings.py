"""``[alerts]`` in the config file: the detectors' thresholds (0 or absent: off).

Kept apart from ``bastion.config`` (which calls ``parse_alerts``), like
``bastion.requests_config``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bastion.errors import ConfigError, UsageError
from bastion.profiles import parse_label

KNOWN_ALERT_KEYS = frozenset(
    {
        "mfa_failures",
        "new_source_days",
        "session_bytes_out",
        "statement_rows",
        "file_bytes_out",
        "max_sessions",
        "hours",
        "user_hours",
        "label_hours",
        "timezone",
    }
)
_SIZE = re.compile(r"^\s*(\d+)\s*([KMGT]i?B?|B)?\s*$", re.I)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class AlertsConfig:
    """Thresholds; each detector is off while its threshold is 0 (or ``hours`` unset)."""

    mfa_failures: int = 0
    """Alert when a user's wrong MFA codes in ``[mfa] failure_window`` reach this count."""
    new_source_days: int = 0
    """Alert on a login from a /24 (IPv4) or /64 (IPv6) not seen for the user in N days."""
    session_bytes_out: int = 0
    """Alert once per session when the bytes sent to the contractor pass this."""
    statement_rows: int = 0
    """Alert when one SQL statement returns more rows than this (DataRows, COPY TO)."""
    file_bytes_out: int = 0
    """Alert once per session when the bytes downloaded by scp/sftp pass this."""
    max_sessions: int = 0
    """Alert when a user has more than this many live sessions on the node."""
    hours: tuple[time, time] | None = None
    """Logins outside these local hours raise an alert."""
    user_hours: tuple[tuple[str, tuple[time, time] | None], ...] = ()
    """Per user: their own window instead of ``hours`` (None: never off hours)."""
    label_hours: tuple[tuple[str, str, tuple[time, time]], ...] = ()
    """Per target label (key, value, window): sessions on such a target outside it alert."""
    timezone: str = "UTC"

    @property
    def any(self) -> bool:
        """Some detector is on."""
        return bool(
            self.mfa_failures
            or self.new_source_days
            or self.session_bytes_out
            or self.statement_rows
            or self.file_bytes_out
            or self.max_sessions
            or self.hours
            or any(window for _user, window in self.user_hours)
            or self.label_hours
        )

    def hours_for(self, user: str | None) -> tuple[time, time] | None:
        """The window that applies to ``user``: their own, else ``hours``."""
        for name, window in self.user_hours:
            if name == user:
                return window
        return self.hours

    def outside_hours(self, at: float, user: str | None = None) -> bool:
        """Is ``at`` outside ``user``'s window in ``timezone`` (False without a window)?"""
        hours = self.hours_for(user)
        return hours is not None and self.outside(at, hours)

    def outside(self, at: float, hours: tuple[time, time]) -> bool:
        """Is ``at`` outside ``hours`` in ``timezone``? (A window may wrap midnight.)"""
        local = datetime.fromtimestamp(at, ZoneInfo(self.timezone)).time()
        start, end = hours
        inside = start <= local < end if start <= end else (local >= start or local < end)
        return not inside

    def label_windows_missed(
        self, at: float, labels: Mapping[str, str]
    ) -> list[tuple[str, tuple[time, time]]]:
        """The ``KEY=VALUE`` windows of ``labels`` that ``at`` falls outside, in key order."""
        return [
            (f"{key}={value}", window)
            for key, value, window in self.label_hours
            if labels.get(key) == value and self.outside(at, window)
        ]


def parse_size(value: object, where: str) -> int:
    """Bytes from an integer or "512MiB", "2G", "100k" (raises ConfigError)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ConfigError(f'{where} must be a size such as 104857600 or "100MiB", not {value!r}')
    unit = (m.group(2) or "").upper()[:1]
    return int(m.group(1)) * _UNITS[unit]


def _count(section: dict[str, Any], key: str) -> int:
    value = section.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(f"alerts.{key} must be a whole number (0: off), not {value!r}")
    return value


def _hours(value: object, where: str = "alerts.hours") -> tuple[time, time] | None:
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str):
            raise ValueError(value)
        start, end = value.split("-")
        return time.fromisoformat(start.strip()), time.fromisoformat(end.strip())
    except ValueError as e:
        raise ConfigError(f'{where} must look like "08:00-18:00" (or ""), not {value!r}') from e


def _user_hours(value: object) -> tuple[tuple[str, tuple[time, time] | None], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(
            'alerts.user_hours must be a table: [alerts.user_hours] alice = "06:00-22:00"'
        )
    return tuple(
        (str(name), _hours(window, f"alerts.user_hours.{name}"))
        for name, window in sorted(value.items())
    )


def _label_hours(value: object) -> tuple[tuple[str, str, tuple[time, time]], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise ConfigError(
            'alerts.label_hours must be a table: [alerts.label_hours] "env=prod" = "08:00-18:00"'
        )
    out = []
    for label, window in sorted(value.items()):
        where = f'alerts.label_hours."{label}"'
        try:
            key, val = parse_label(str(label))
        except UsageError as e:
            raise ConfigError(f"{where}: {e}") from e
        hours = _hours(window, where)
        if hours is None:
            raise ConfigError(
                f'{where} needs a window such as "08:00-18:00"; drop the line to have none'
            )
        out.append((key, val, hours))
    return tuple(out)


def parse_alerts(section: dict[str, Any]) -> AlertsConfig:
    """Read ``[alerts]`` (raises ConfigError naming the setting)."""
    unknown = set(section) - KNOWN_ALERT_KEYS
    if unknown:
        raise ConfigError(f"unknown key [alerts] {sorted(unknown)[0]}")
    tz = str(section.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigError(f"alerts.timezone: unknown time zone {tz!r}") from e
    return AlertsConfig(
        mfa_failures=_count(section, "mfa_failures"),
        new_source_days=_count(section, "new_source_days"),
        session_bytes_out=parse_size(
            section.get("session_bytes_out", 0), "alerts.session_bytes_out"
        ),
        statement_rows=_count(section, "statement_rows"),
        file_bytes_out=parse_size(section.get("file_bytes_out", 0), "alerts.file_bytes_out"),
        max_sessions=_count(section, "max_sessions"),
        hours=_hours(section.get("hours")),
        user_hours=_user_hours(section.get("user_hours")),
        label_hours=_label_hours(section.get("label_hours")),
        timezone=tz,
    )


CONFIG_TEMPLATE_SECTION = """
[alerts]
# Real-time alerts: an audit row alert.<name>, a marker in the session's recording and
# a notification to the [[notify.*]] sinks. 0 turns a detector off.
# Wrong MFA codes of one user within [mfa] failure_window (set below max_failures).
mfa_failures = 0
# A login from a /24 (IPv4) or /64 (IPv6) the user has not logged in from for N days.
new_source_days = 0
# Bytes sent to the contractor in one session (checked at 1, 2, 4, 8... MiB).
session_bytes_out = 0
# Rows one SQL statement returns to the client (DataRows, or the rows of a COPY ... TO).
statement_rows = 0
# Bytes one session downloads with scp or sftp (counted per file, when it is closed).
file_bytes_out = 0
# More than this many live sessions of one user on this node.
max_sessions = 0
# Logins outside these hours, e.g. "08:00-18:00" (local time in `timezone`); "": off.
hours = ""
timezone = "UTC"
# Per user, instead of `hours` ("" exempts the user); keep these tables last in [alerts].
# [alerts.user_hours]
# alice = "06:00-22:00"
# oncall-bot = ""
# Per target label, checked when a session starts on a target with that label (as well
# as the login's check against the user's window).
# [alerts.label_hours]
# "env=prod" = "08:00-18:00"
"""
