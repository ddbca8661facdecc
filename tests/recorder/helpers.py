"""Comparison helpers shared by recorder tests."""

from __future__ import annotations

from collections.abc import Iterable

from recorder import Event
from recorder.events import Input, Output


def normalise(events: Iterable[Event]) -> list[tuple[object, ...]]:
    """Events as comparable tuples: µs times, adjacent same-time output/input merged.

    The writer splits large output at chunk boundaries; merging undoes that.
    """
    out: list[tuple[object, ...]] = []
    for ev in events:
        t_us = round(ev.time * 1_000_000)
        if isinstance(ev, Output | Input):
            if out and out[-1][0] == ev.kind and out[-1][1] == t_us:
                prev = out.pop()
                out.append((ev.kind, t_us, prev[2] + ev.data))  # type: ignore[operator]
                continue
            out.append((ev.kind, t_us, ev.data))
        else:
            fields = tuple(getattr(ev, f) for f in ev.__slots__ if f != "time")
            out.append((ev.kind, t_us, *fields))
    return out


def output_bytes(events: Iterable[Event]) -> bytes:
    """All output bytes, concatenated."""
    return b"".join(ev.data for ev in events if isinstance(ev, Output))
