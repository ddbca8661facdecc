"""Durations and times as admins type them on the command line, and as they are shown."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bastion.errors import UsageError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """'90s', '30m', '2h', '1d', '1h30m' -> seconds (raises UsageError, a ValueError)."""
    s = text.strip().replace(" ", "")
    pos, total = 0, 0.0
    for m in _DURATION.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2).lower()]
        pos = m.end()
    if pos != len(s) or pos == 0 or total <= 0:
        raise UsageError(f"cannot read duration {text!r}; use e.g. 90s, 30m, 2h, 1d or 1h30m")
    return total


def parse_time(text: str, now: float) -> float:
    """'now', '+2h' (relative), or ISO 8601 ('2026-11-30T09:00', UTC if no zone) -> POSIX time."""
    t = text.strip()
    if t == "now":
        return now
    if t.startswith("+"):
        return now + parse_duration(t[1:])
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError as e:
        raise UsageError(
            f"cannot read time {text!r}; use ISO 8601 like 2026-11-30T09:00 (UTC), "
            "2026-11-30T09:00+01:00, 'now' or +2h"
        ) from e
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def format_duration(seconds: float) -> str:
    """A session length as people read it: 42s, 12m05s, 3h07m, 2d04h."""
    s = max(int(seconds), 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
