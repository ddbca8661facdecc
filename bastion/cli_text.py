"""Text helpers the session and recording commands share (no heavy imports: the
search command uses them and must start fast)."""

from __future__ import annotations

from bastion.timeparse import parse_duration, parse_time


def printable(text: str) -> str:
    """``text`` with control characters escaped: typed commands and recorded reasons come
    from the session, and must not drive the auditor's terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_bytes(n: int) -> str:
    """A byte count in 1024 steps (exact counts are in ``--json``)."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{n}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def parse_since(text: str | None, now: float) -> float | None:
    """``--since``: a duration back from now (``2h``) or a time (ISO 8601, ``now``)."""
    if not text:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        return parse_time(text, now)
