"""A clock for the recorder's writer that moves only when the benchmark says so.

Lets a script record hours of generated terminal output in seconds, with chunks
cut by time exactly as the writer would cut them at the real pace.
"""

from __future__ import annotations


class FakeClock:
    """The writer's monotonic clock; set ``now`` to move it."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now
