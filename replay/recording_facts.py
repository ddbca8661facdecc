"""One pass over a recording: keyframes plus what the player's panels show.

Why one pass: commands, markers, typed input, database queries and the activity
density of the timeline all come from the same events the keyframes are built from;
reading a large recording twice would double the wait when it is first opened. The
result is cached (``replay.cache``), so later opens start at once.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bastion.pg.query_event import QueryEvent, QueryResolver
from recorder import Event, Input, Marker, Output, RecordingReader, extract_commands
from replay.keyframe_store import KeyframeStore

__all__ = ["DENSITY_BUCKETS", "RecordingFacts", "header_size", "scan_recording"]

DENSITY_BUCKETS = 400
_MAX_INPUT = 4 * 1024 * 1024  # typed input kept for the overlay (a paste flood is cut)


@dataclass
class RecordingFacts:
    """What the player shows besides the screen, all times in session seconds."""

    duration: float
    commands: list[tuple[float, str]] = field(default_factory=list)
    markers: list[tuple[float, str]] = field(default_factory=list)
    inputs: list[tuple[float, bytes]] = field(default_factory=list)
    queries: list[dict[str, Any]] = field(default_factory=list)
    density: list[int] = field(default_factory=lambda: [0] * DENSITY_BUCKETS)
    """Output bytes (or queries) per equal slice of the duration."""

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible form for the cache."""
        return {
            "duration": self.duration,
            "commands": self.commands,
            "markers": self.markers,
            "inputs": [[t, base64.b64encode(d).decode()] for t, d in self.inputs],
            "queries": self.queries,
            "density": self.density,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RecordingFacts:
        """Inverse of ``to_json``; raises ValueError/KeyError/TypeError if malformed."""
        return cls(
            duration=float(doc["duration"]),
            commands=[(float(t), str(s)) for t, s in doc["commands"]],
            markers=[(float(t), str(s)) for t, s in doc["markers"]],
            inputs=[(float(t), base64.b64decode(d)) for t, d in doc["inputs"]],
            queries=[q for q in doc["queries"] if isinstance(q, dict)],
            density=[int(n) for n in doc["density"]],
        )


def header_size(reader: RecordingReader) -> tuple[int, int]:
    """The terminal size at the start, from the header's ``cols``/``rows`` (80x24 if absent)."""
    meta = reader.header.meta
    cols, rows = meta.get("cols"), meta.get("rows")
    return (
        cols if isinstance(cols, int) and cols > 0 else 80,
        rows if isinstance(rows, int) and rows > 0 else 24,
    )


class IndexingStopped(Exception):
    """The caller asked the scan to stop (the player was closed while indexing)."""


def scan_recording(
    reader: RecordingReader, identity: str = "", stop: Callable[[], bool] | None = None
) -> tuple[KeyframeStore, RecordingFacts]:
    """Read every event once; return the keyframes and the facts (see the module doc).

    ``stop`` is polled between events; when it returns True the scan raises
    IndexingStopped, so closing the player never waits for a gigabyte to be read.
    """
    duration = max(reader.duration, 1e-6)
    facts = RecordingFacts(duration=reader.duration)
    kept_input = 0
    buckets = len(facts.density)
    resolver = QueryResolver()  # prepared statements' text, from the event that carries it

    def tap() -> Iterator[Event]:
        nonlocal kept_input
        for event in reader.events():
            if stop is not None and stop():
                raise IndexingStopped
            slot = min(buckets - 1, int(event.time / duration * buckets))
            if isinstance(event, Output):
                facts.density[slot] += len(event.data)
            elif isinstance(event, Input):
                if kept_input < _MAX_INPUT:
                    facts.inputs.append((event.time, event.data))
                    kept_input += len(event.data)
            elif isinstance(event, Marker):
                facts.markers.append((event.time, event.label))
            elif query := QueryEvent.from_event(resolver.resolve(event)):
                facts.queries.append(query.to_payload())
                facts.density[slot] += 1
            yield event

    cols, rows = header_size(reader)
    store = KeyframeStore.build(tap(), cols, rows, identity=identity)
    facts.commands = extract_commands(Input(t, d) for t, d in facts.inputs)
    return store, facts
