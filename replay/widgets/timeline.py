"""The player's timeline: activity density, command and marker positions, the playhead.

Two lines: the first is a bar chart (``▁▂▃▄▅▆▇█``) of how much output (or how many
queries) each slice of the session had, so bursts and idle stretches are visible at
a glance; the second marks commands (``▲``), markers (``◆``) and the playhead
(``┃``). A click asks the player to seek there (``Timeline.Seek``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

__all__ = ["Timeline", "density_bar"]

_BLOCKS = " ▁▂▃▄▅▆▇█"


def density_bar(density: list[int], width: int) -> str:
    """``density`` resampled to ``width`` columns as block characters (log-scaled, so a
    single keystroke echo still shows beside a megabyte burst)."""
    if width <= 0:
        return ""
    if not density:
        return " " * width
    columns = []
    n = len(density)
    for x in range(width):
        lo, hi = x * n // width, max((x + 1) * n // width, x * n // width + 1)
        columns.append(sum(density[lo:hi]))
    top = max(columns)
    if top <= 0:
        return " " * width
    scale = math.log1p(top)
    out = []
    for value in columns:
        level = 0 if value <= 0 else max(1, round(math.log1p(value) / scale * 8))
        out.append(_BLOCKS[level])
    return "".join(out)


class Timeline(Widget):
    """See the module docstring; ``update`` gives it the data, ``position`` moves it."""

    DEFAULT_CSS = """
    Timeline {
        height: 2;
        background: $panel;
        color: $accent;
    }
    """

    @dataclass
    class Seek(Message):
        """The user clicked the timeline at session time ``time``."""

        offset: float
        """Session time to seek to (not ``time``: every Message already has one)."""

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 - Textual's keyword
        """An empty timeline."""
        super().__init__(id=id)
        self.duration = 0.0
        self.density: list[int] = []
        self.commands: list[float] = []
        self.markers: list[float] = []
        self.position = 0.0

    def update(
        self, duration: float, density: list[int], commands: list[float], markers: list[float]
    ) -> None:
        """Replace what the timeline shows."""
        self.duration, self.density = duration, density
        self.commands, self.markers = commands, markers
        self.refresh()

    def move(self, position: float) -> None:
        """Move the playhead."""
        if position != self.position:
            self.position = position
            self.refresh()

    def _column(self, time: float, width: int) -> int:
        if self.duration <= 0:
            return 0
        return min(width - 1, max(0, int(time / self.duration * width)))

    def render_line(self, y: int) -> Strip:
        """Line 0: density; line 1: commands, markers and the playhead."""
        width = self.size.width
        base = self.rich_style
        head = self._column(self.position, width)
        if y == 0:
            text = density_bar(self.density, width)
        elif y == 1:
            cells = [" "] * width
            for t in self.commands:
                cells[self._column(t, width)] = "▲"
            for t in self.markers:
                cells[self._column(t, width)] = "◆"
            text = "".join(cells)
        else:
            return Strip.blank(width, base)
        if width <= 0:
            return Strip.blank(0)
        head_style = base + Style(reverse=True, bold=True)
        playhead = "┃" if y == 1 and text[head] == " " else text[head]
        return Strip(
            [
                Segment(text[:head], base),
                Segment(playhead, head_style),
                Segment(text[head + 1 :], base),
            ],
            width,
        )

    def on_click(self, event: events.Click) -> None:
        """Seek to the clicked time."""
        width = self.size.width
        if width > 0 and self.duration > 0:
            self.post_message(self.Seek(event.x / width * self.duration))
