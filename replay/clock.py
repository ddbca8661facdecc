"""The player's clock, injected so tests (and snapshots) are deterministic.

Playback advances by how much the clock moved between two ticks, times the speed.
The app uses ``MonotonicClock``; tests use ``ManualClock`` and move it explicitly, so
a test states "two seconds pass" instead of sleeping and hoping.
"""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "MonotonicClock"]


class Clock(Protocol):
    """Anything with a monotonic ``now()`` in seconds."""

    def now(self) -> float:
        """Seconds on a clock that never goes back."""
        ...


class MonotonicClock:
    """The real clock (``time.monotonic``)."""

    def now(self) -> float:
        """Seconds since an arbitrary point."""
        return time.monotonic()


class ManualClock:
    """A clock that only moves when told (``advance``): frozen unless a test moves it."""

    def __init__(self, start: float = 0.0) -> None:
        """A clock reading ``start``."""
        self._now = start

    def now(self) -> float:
        """The current reading."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self._now += seconds
