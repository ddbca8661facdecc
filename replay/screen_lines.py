"""The lines a terminal displayed, for the search index: text as it appeared on screen.

``DisplayedLines`` drives the player's emulator (``replay.terminal``) with a
recording's output and keeps each distinct line once, with the first moment it
was on screen: escape sequences, colours and cursor motion are gone, a line being
typed is kept whole (a row that only grew is the same line, dated when it was
complete, so the player opened there shows all of it), and a full-screen
program redrawing the same rows (``top``, ``watch``) adds only the rows that
changed. Lines pushed off the top within one burst of output (``cat`` of a long
file) are caught as they scroll off. Headless: no ``textual`` (the node imports it).
"""

from __future__ import annotations

from replay.terminal import TerminalEmulator

__all__ = ["DisplayedLines"]

MAX_LINES = 200_000
"""Distinct lines kept per session; past it new lines are dropped (bounded memory)."""
_MAX_LINE = 1024


class DisplayedLines:
    """Feed output and resizes in time order; ``lines`` holds text -> first offset."""

    def __init__(self, cols: int = 80, rows: int = 24, max_lines: int = MAX_LINES) -> None:
        self._emu = TerminalEmulator(cols, rows)
        self._emu.watch_lines(self._scrolled_off)
        self._rows: dict[int, tuple[str, float]] = {}
        self._now = 0.0
        self._max = max_lines
        self.lines: dict[str, float] = {}
        """Each distinct non-blank line (stripped) and the first offset it was seen."""

    def _emit(self, text: str, at: float) -> None:
        text = text.strip()[:_MAX_LINE]
        if not text:
            return
        first = self.lines.get(text)
        if first is None:
            if len(self.lines) < self._max:
                self.lines[text] = at
        elif at < first:
            self.lines[text] = at

    def _scrolled_off(self, text: str) -> None:
        at = self._now
        for row_text, first in self._rows.values():
            if row_text == text:
                at = min(at, first)
                break
        self._emit(text, at)

    def feed(self, at: float, data: bytes) -> None:
        """Output the program wrote at offset ``at``."""
        self._now = at
        self._emu.feed(data)
        self._settle(at)

    def resize(self, at: float, cols: int, rows: int) -> None:
        """The terminal changed size at offset ``at``."""
        self._now = at
        self._emu.resize(cols, rows)
        self._settle(at)

    def _settle(self, at: float) -> None:
        for y, text in self._emu.take_changed():
            old = self._rows.get(y)
            if old is None or not old[0]:
                self._rows[y] = (text, at)
                continue
            old_text, first = old
            if text == old_text:
                continue
            if text.startswith(old_text):  # the line grew (typing, a progress bar): its
                self._rows[y] = (text, at)  # moment is when it was complete
            else:
                self._emit(old_text, first)
                self._rows[y] = (text, at)

    def finish(self) -> dict[str, float]:
        """Add what the screen shows at the end; returns ``lines``."""
        for text, first in self._rows.values():
            self._emit(text, first)
        self._rows.clear()
        return self.lines
