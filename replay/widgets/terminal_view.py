"""A Textual widget that shows an emulator screen cell for cell.

Why the Line API (``ScrollView.render_line`` returning ``Strip``s of Rich
``Segment``s): the screen is a fixed grid of styled cells, so drawing it line by line
keeps every colour, bold/underline/reverse and wide character exactly where the
emulator put it, and a session wider or taller than the console scrolls instead of
wrapping. Consecutive cells of one style become one segment; styles and rendered
lines are cached, since a playing session changes a few lines per frame.
"""

from __future__ import annotations

from functools import lru_cache

from rich.color import Color, ColorParseError
from rich.segment import Segment
from rich.style import Style
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from replay.terminal import Cell, ScreenSnapshot

__all__ = ["TerminalView", "cell_style", "line_strip"]


@lru_cache(maxsize=256)
def _colour(name: str) -> Color | None:
    if name == "default":
        return None
    try:
        return Color.parse(name)
    except ColorParseError:
        return None


@lru_cache(maxsize=4096)
def cell_style(cell: Cell, cursor: bool = False) -> Style:
    """The Rich style of one cell (the cursor cell is shown reversed)."""
    return Style(
        color=_colour(cell.fg),
        bgcolor=_colour(cell.bg),
        bold=cell.bold,
        italic=cell.italic,
        underline=cell.underline,
        reverse=cell.reverse != cursor,
        strike=cell.strikethrough,
        blink=cell.blink,
    )


@lru_cache(maxsize=1024)
def line_strip(cells: tuple[Cell, ...], cursor_x: int = -1) -> Strip:
    """One screen line as a strip: runs of one style become one segment; the right half
    of a wide character (``""``) is covered by the character itself."""
    segments: list[Segment] = []
    run: list[str] = []
    run_style: Style | None = None
    for x, cell in enumerate(cells):
        if cell.char == "":
            continue
        style = cell_style(cell, x == cursor_x)
        if style != run_style and run:
            segments.append(Segment("".join(run), run_style))
            run = []
        run_style = style
        run.append(cell.char)
    if run:
        segments.append(Segment("".join(run), run_style))
    return Strip(segments, len(cells))


HIGHLIGHT = Style(color="black", bgcolor="yellow", bold=True)
"""A search match on screen."""


def matched_columns(cells: tuple[Cell, ...], needle: str) -> list[tuple[int, int]]:
    """(start, end) cell columns of each case-insensitive occurrence of ``needle``."""
    columns: list[int] = []
    text = []
    for x, cell in enumerate(cells):
        if cell.char:
            columns.append(x)
            text.append(cell.char[:1])
    line = "".join(text).lower()
    found = []
    start = line.find(needle)
    while start >= 0 and needle:
        end = start + len(needle)
        found.append((columns[start], columns[end - 1] + 1))
        start = line.find(needle, end)
    return found


def _highlighted(strip: Strip, cells: tuple[Cell, ...], needle: str) -> Strip:
    spans = matched_columns(cells, needle)
    if not spans:
        return strip
    parts: list[Strip] = []
    x = 0
    for start, end in spans:
        parts.append(strip.crop(x, start))
        marked = strip.crop(start, end)
        parts.append(
            Strip([Segment(seg.text, (seg.style or Style()) + HIGHLIGHT) for seg in marked])
        )
        x = end
    parts.append(strip.crop(x, strip.cell_length))
    return Strip.join(parts)


class TerminalView(ScrollView, can_focus=False):
    """Shows a ``ScreenSnapshot``. A session larger than the widget is clipped and
    scrolled to keep the cursor in view (the mouse wheel scrolls too); not focusable, so
    the arrow keys stay with the player. ``clipped`` says whether part is hidden."""

    DEFAULT_CSS = """
    TerminalView {
        background: black;
        color: white;
        scrollbar-size: 0 0;
    }
    """

    def __init__(
        self,
        *,
        show_cursor: bool = True,
        highlight: str | None = None,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's keyword
        classes: str | None = None,
    ) -> None:
        """An empty view; call ``show`` with a snapshot."""
        super().__init__(name=name, id=id, classes=classes)
        self.show_cursor = show_cursor
        self.highlight = highlight.lower() if highlight else None
        """Text shown highlighted wherever a line contains it (case-insensitive)."""
        self.snapshot: ScreenSnapshot | None = None

    def show(self, snapshot: ScreenSnapshot) -> None:
        """Display ``snapshot`` (only changed lines are redrawn)."""
        if snapshot == self.snapshot:
            return
        self.snapshot = snapshot
        self.virtual_size = Size(snapshot.cols, snapshot.rows)
        height = self.scrollable_content_region.height
        top = self.scroll_offset.y
        if height > 0 and not top <= snapshot.cursor_y < top + height:
            self.scroll_to(y=max(0, snapshot.cursor_y - height + 1), animate=False, force=True)
        self.refresh()

    @property
    def clipped(self) -> bool:
        """True if the session's screen does not fit the widget."""
        snap, region = self.snapshot, self.scrollable_content_region
        return snap is not None and (snap.cols > region.width or snap.rows > region.height)

    def text(self) -> list[str]:
        """The shown screen as plain lines (what tests compare with the client's screen)."""
        return self.snapshot.text() if self.snapshot is not None else []

    def render_line(self, y: int) -> Strip:
        """Line ``y`` of the widget, scrolled."""
        width = self.scrollable_content_region.width
        snap = self.snapshot
        scroll_x, scroll_y = self.scroll_offset
        row = y + scroll_y
        if snap is None or row >= snap.rows:
            return Strip.blank(width, self.rich_style)
        cursor_x = (
            snap.cursor_x
            if self.show_cursor and snap.cursor_visible and row == snap.cursor_y
            else -1
        )
        strip = line_strip(snap.lines[row], cursor_x)
        if self.highlight:
            strip = _highlighted(strip, snap.lines[row], self.highlight)
        strip = strip.crop(scroll_x, scroll_x + width)
        return strip.extend_cell_length(width, self.rich_style).apply_style(self.rich_style)
