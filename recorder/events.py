"""The events a recording holds, as frozen dataclasses.

One dataclass per kind keeps every field typed (narrow with ``isinstance`` or
``match``). ``time`` is seconds since the session started, measured on a monotonic
clock and stored with microsecond resolution; it never decreases within a recording.
The wall-clock start of the session is ``Header.started_at``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import ClassVar, TypeAlias

__all__ = [
    "Event",
    "EventKind",
    "Exit",
    "Input",
    "JSONValue",
    "Marker",
    "Output",
    "Resize",
    "Structured",
]

JSONValue: TypeAlias = None | bool | int | float | str | list["JSONValue"] | dict[str, "JSONValue"]


class EventKind(enum.IntEnum):
    """Kind codes; the integer is the byte stored in the chunk encoding."""

    OUTPUT = 1
    INPUT = 2
    RESIZE = 3
    MARKER = 4
    EXIT = 5
    STRUCTURED = 6


@dataclass(frozen=True, slots=True)
class Output:
    """Bytes the target sent to the user's terminal (raw, lossless)."""

    time: float
    data: bytes
    kind: ClassVar[EventKind] = EventKind.OUTPUT


@dataclass(frozen=True, slots=True)
class Input:
    """Bytes the user sent towards the target (keystrokes, pastes)."""

    time: float
    data: bytes
    kind: ClassVar[EventKind] = EventKind.INPUT


@dataclass(frozen=True, slots=True)
class Resize:
    """The user's terminal changed size."""

    time: float
    cols: int
    rows: int
    kind: ClassVar[EventKind] = EventKind.RESIZE


@dataclass(frozen=True, slots=True)
class Marker:
    """A labelled point in time (set by the host or an auditor)."""

    time: float
    label: str
    kind: ClassVar[EventKind] = EventKind.MARKER


@dataclass(frozen=True, slots=True)
class Exit:
    """The remote process ended, with an exit status and/or a signal name."""

    time: float
    status: int | None = None
    signal: str | None = None
    kind: ClassVar[EventKind] = EventKind.EXIT


@dataclass(frozen=True, slots=True)
class Structured:
    """A named event with a JSON payload (PostgreSQL ``query``, ``result`` ...)."""

    time: float
    name: str
    payload: JSONValue
    kind: ClassVar[EventKind] = EventKind.STRUCTURED


Event: TypeAlias = Output | Input | Resize | Marker | Exit | Structured
