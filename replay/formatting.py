"""How the console writes and reads times, sizes and recorded text.

Wall-clock times are shown and parsed in UTC (with a ``Z``): auditors in several
time zones compare what they see with audit rows and tickets, and a recording's
evidence must not depend on the viewer's locale. Session offsets (seconds since
the session started) are shown as ``M:SS.s`` or ``H:MM:SS``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from bastion.timeparse import format_duration

__all__ = [
    "format_bytes",
    "format_duration",
    "format_offset",
    "format_when",
    "one_line",
    "parse_offset",
    "parse_when",
    "visible_keys",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")


def format_when(ts: float) -> str:
    """``2025-05-01 12:34Z`` (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%MZ")


def format_offset(seconds: float) -> str:
    """``1:02.5`` under an hour, ``1:02:03`` above."""
    seconds = max(0.0, seconds)
    if seconds < 3600:
        m, s = divmod(seconds, 60)
        return f"{int(m)}:{s:04.1f}"
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def format_bytes(n: int) -> str:
    """``512B``, ``1.5K``, ``20M``, ``3.1G``."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{int(value)}{unit}" if unit == "B" or value >= 100 else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}T"  # pragma: no cover - loop always returns


def one_line(text: str, width: int) -> str:
    """Recorded text (a command, SQL) on one line: whitespace runs become one space,
    control characters are replaced so they cannot drive the console's terminal,
    and anything past ``width`` is cut with an ellipsis."""
    flat = " ".join(text.split())
    flat = "".join(ch if ch.isprintable() else "�" for ch in flat)
    return flat if len(flat) <= width else flat[: max(0, width - 1)] + "…"


def parse_when(text: str, now: float) -> float:
    """A filter time: ``30m``/``2h``/``3d``/``1w`` ago, or ``YYYY-MM-DD[ HH:MM]`` in UTC.

    Raises ValueError naming the accepted forms.
    """
    text = text.strip()
    match = _RELATIVE.fullmatch(text)
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    for pattern in ("%Y-%m-%d %H:%M", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return datetime.strptime(text.rstrip("Z"), pattern).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ValueError(
        f"cannot read the time {text!r}: use 30m, 2h, 3d or 1w (ago), or YYYY-MM-DD[ HH:MM] in UTC"
    )


def parse_offset(text: str) -> float:
    """A session offset: ``90``, ``1:30``, ``1:02:03`` or ``2m``/``1h``.

    Raises ValueError naming the accepted forms.
    """
    text = text.strip()
    match = _RELATIVE.fullmatch(text)
    if match:
        return float(match.group(1)) * _UNITS[match.group(2)]
    parts = text.split(":")
    try:
        if 1 <= len(parts) <= 3 and all(parts):
            total = 0.0
            for part in parts:
                total = total * 60 + float(part)
            if total >= 0:
                return total
    except ValueError:
        pass
    raise ValueError(f"cannot read the time {text!r}: use 90, 1:30, 1:02:03, 2m or 1h")


def visible_keys(text: str) -> str:
    """Typed keys made readable and harmless: Enter as ⏎, ESC as <ESC>, other control
    keys as ^X, so an overlay of recorded input cannot drive the console's terminal."""
    out = []
    for ch in text:
        if ch == "\r":
            out.append("⏎")
        elif ch == "\x1b":
            out.append("<ESC>")
        elif ch == "\x7f":
            out.append("⌫")
        elif ch < " ":
            out.append("^" + chr(ord(ch) + 64))
        elif not ch.isprintable():
            out.append(f"<{ord(ch):x}>")
        else:
            out.append(ch)
    return "".join(out)
