"""A headless terminal emulator for replaying recorded sessions.

The replay player and the keyframe builder turn the raw output bytes of a recording into
screens. Both need the same thing: bytes in, a grid of styled cells out, with no UI, so
this module never imports ``textual`` (``replay.keyframes`` uses it to take snapshots).

Why pyte, extended: pyte (0.8.2) is the only maintained, widely used pure-Python VT
emulator on PyPI; the alternatives are bindings to C libraries not packaged for PyPI,
UI widgets (Qt, browser xterm.js) or small unmaintained projects. pyte's *screen* model
(sparse cell buffer, cursor, margins, tab stops, line and character editing) is sound,
so ``_Screen`` subclasses ``pyte.Screen``. Its *stream parser* is not (real vim and htop
output breaks it, see ``replay.vtparser``), so our own VT500-style parser drives it.
What the subclass adds or fixes:

* the alternate screen (DECSET 1049, 1047, 47) with the main screen kept exactly;
* character widths per code point as ``wcwidth`` gives them (the model of glibc, xterm
  and VTE, which is also what vim, less and readline assume when they place the cursor);
  zero-width code points (combining marks, VS15/VS16, ZWJ) are appended to the cell
  before the cursor instead of ending the draw call and dropping the rest;
* colours as strings a renderer can use directly (Rich's colour syntax): ``"default"``,
  ``"color(N)"`` for the 256-colour palette (the 16 ANSI colours are ``color(0..15)``,
  so a theme can still map them) and ``"#rrggbb"`` for truecolor;
* xterm behaviours pyte lacks: background-colour erase, scroll up/down (``CSI S/T``), REP
  (``CSI b``, used by ncurses), tab forward/back, a single DECSC slot per screen that
  DECRC does not consume, DEC line-drawing via ``ESC ( 0``, pending-wrap reset on cursor
  motion, DECCOLM ignored (as xterm does by default: the recording's resize events give
  the size).
"""

from __future__ import annotations

import codecs
import copy
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyte
from pyte import charsets, modes
from pyte.screens import Char, Margins, Savepoint, StaticDefaultDict
from wcwidth import wcwidth

from replay.vtparser import VTParser

__all__ = ["MAX_COLS", "MAX_ROWS", "Cell", "ScreenSnapshot", "TerminalEmulator"]

MAX_COLS = 1024
MAX_ROWS = 512
"""Sizes are clamped to these so a hostile recording cannot make snapshots unbounded."""

_MAX_CLUSTER = 16  # code points kept in one cell: bounds a flood of combining marks
_GLYPH_TABLES = 256  # attribute sets whose glyphs are kept (coloured output reuses few)
_ALT_MODES = frozenset({47, 1047, 1049})
_ANSI_MODES = frozenset({modes.IRM, modes.LNM})

Line = StaticDefaultDict[int, Char]
Buffer = defaultdict[int, Line]


@lru_cache(maxsize=8192)
def _width(char: str) -> int:
    """Cells taken by one code point: 2 (wide), 1, 0 (combining...) or -1 (control)."""
    return int(wcwidth(char))


def _is_wide(data: str) -> bool:
    return bool(data) and _width(data[0]) == 2


@dataclass(frozen=True, slots=True)
class Cell:
    """One screen cell. ``char`` is ``""`` for the right half of a wide character.

    ``char`` may hold several code points: a base character and the zero-width ones
    attached to it (``"e\\u0301"``, ``"\\u2764\\ufe0f"``). Colours: ``"default"``,
    ``"color(N)"`` (palette index 0-255) or ``"#rrggbb"``.
    """

    char: str = " "
    fg: str = "default"
    bg: str = "default"
    bold: bool = False
    italic: bool = False
    underline: bool = False
    reverse: bool = False
    strikethrough: bool = False
    blink: bool = False


BLANK = Cell()


@dataclass(frozen=True, slots=True)
class ScreenSnapshot:
    """What the screen shows at one moment: an immutable grid plus the cursor.

    Invariants a renderer can rely on: ``len(lines) == rows``, every line has ``cols``
    cells, and a cell whose first code point is wide is always followed by a ``""`` cell.
    """

    cols: int
    rows: int
    lines: tuple[tuple[Cell, ...], ...]
    cursor_x: int
    cursor_y: int
    cursor_visible: bool
    alternate: bool
    """True while the alternate screen (vim, less, htop...) is shown."""
    title: str = ""

    def text(self) -> list[str]:
        """The lines as plain strings, trailing spaces stripped."""
        return ["".join(cell.char for cell in line).rstrip(" ") for line in self.lines]


def _palette(index: int) -> str:
    return f"color({index})"


def _new_buffer(default: Char) -> Buffer:
    return defaultdict(lambda: StaticDefaultDict[int, Char](default))


def _resize_buffer(buffer: dict[int, Line], shift: int, lines: int, columns: int) -> None:
    """Move lines up by ``shift``, keep ``lines`` of them and cut them to ``columns``."""
    old = dict(buffer)
    buffer.clear()
    for y, line in old.items():
        if 0 <= y - shift < lines:
            for x in [x for x in line if x >= columns]:
                del line[x]
            buffer[y - shift] = line


class _Screen(pyte.Screen):
    """pyte's screen plus the alternate screen, width-aware drawing and xterm fixes."""

    def __init__(self, columns: int, lines: int) -> None:
        self.alternate = False
        self._other: Buffer = _new_buffer(Char(" "))
        self._other_savepoints: list[Savepoint] = []
        self.last_char = ""
        self.scrolled_off: Callable[[str], None] | None = None
        """Called with the text of each line that leaves the screen (scrolled off the
        top, cleared, switched away from) for the search index's lines-as-displayed;
        None (the player) costs one test per scroll or clear."""
        self._glyph_attrs: Char | None = None
        self._glyphs: dict[str, Char] = {}
        self._glyph_tables: dict[Char, dict[str, Char]] = {}
        super().__init__(columns, lines)

    # -- whole-screen state -------------------------------------------------------

    def reset(self) -> None:
        """RIS: back to the main screen, both screens cleared, saved cursors dropped."""
        super().reset()
        self.alternate = False
        self._other = _new_buffer(self.default_char)
        self._other_savepoints = []
        self.savepoints = []
        self.last_char = ""

    def soft_reset(self) -> None:
        """DECSTR (``CSI ! p``): modes, margins and attributes to defaults; text stays."""
        self.mode.difference_update({modes.IRM, modes.DECOM, modes.LNM})
        self.mode.update({modes.DECAWM, modes.DECTCEM})
        self.cursor.hidden = False
        self.margins = None
        self.cursor.attrs = self.default_char
        self.charset = 0
        self.g0_charset = self.g1_charset = charsets.LAT1_MAP
        self.savepoints = []

    def _switch(self, alternate: bool) -> None:
        if alternate == self.alternate:
            return
        if self.scrolled_off is not None:
            self._lines_leave(range(self.lines))
        self.buffer, self._other = self._other, self.buffer
        self.savepoints, self._other_savepoints = self._other_savepoints, self.savepoints
        self.alternate = alternate
        self.dirty.update(range(self.lines))

    def set_mode(self, *modes_: int, **kwargs: Any) -> None:
        """SM/DECSET, with the alternate-screen modes handled here."""
        if not kwargs.get("private"):  # only IRM and LNM: pyte mistakes CSI 96 h for DECCOLM
            super().set_mode(*[m for m in modes_ if m in _ANSI_MODES])
            return
        for mode in modes_:
            if mode == 1049 and not self.alternate:
                self.save_cursor()
                self._switch(True)
                self.buffer.clear()
            elif mode in (47, 1047):
                self._switch(True)
            elif mode == 1048:
                self.save_cursor()
        rest = [m for m in modes_ if m not in _ALT_MODES and m not in (3, 1048)]
        super().set_mode(*rest, private=True)

    def reset_mode(self, *modes_: int, **kwargs: Any) -> None:
        """RM/DECRST; leaving 1049 restores the cursor saved on entry."""
        if not kwargs.get("private"):
            super().reset_mode(*[m for m in modes_ if m in _ANSI_MODES])
            return
        for mode in modes_:
            if mode == 1049 and self.alternate:
                self._switch(False)
                self.restore_cursor()
            elif mode == 1047:
                if self.alternate:
                    self.buffer.clear()
                self._switch(False)
            elif mode == 47:
                self._switch(False)
            elif mode == 1048:
                self.restore_cursor()
        rest = [m for m in modes_ if m not in _ALT_MODES and m not in (3, 1048)]
        super().reset_mode(*rest, private=True)

    def save_cursor(self) -> None:
        """DECSC: one slot per screen (pyte keeps an unbounded stack)."""
        super().save_cursor()
        del self.savepoints[:-1]

    def restore_cursor(self) -> None:
        """DECRC: the slot stays for a later DECRC; cursor visibility is not restored."""
        hidden = self.cursor.hidden
        kept = self.savepoints[-1] if self.savepoints else None
        super().restore_cursor()
        self.cursor = copy.copy(self.cursor)
        self.cursor.hidden = hidden
        if kept is not None:
            self.savepoints = [kept]

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Resize both screens, keeping the cursor's line on screen (as xterm does)."""
        lines = min(max(1, lines or self.lines), MAX_ROWS)
        columns = min(max(1, columns or self.columns), MAX_COLS)
        if lines == self.lines and columns == self.columns:
            return
        for buffer, savepoints, active in (
            (self.buffer, self.savepoints, True),
            (self._other, self._other_savepoints, False),
        ):
            points = [sp.cursor for sp in savepoints]
            if active:
                points.insert(0, self.cursor)
            shift = max(0, points[0].y - lines + 1) if points else 0
            _resize_buffer(buffer, shift, lines, columns)
            for point in points:
                point.y = max(0, min(point.y - shift, lines - 1))
                point.x = min(point.x, columns - 1)
        old_columns = self.columns
        self.lines, self.columns = lines, columns
        self.tabstops = {t for t in self.tabstops if t < columns}
        self.tabstops.update(range(max(8, (old_columns + 7) // 8 * 8), columns, 8))
        self.margins = None
        self.dirty.update(range(lines))

    def set_margins(self, top: int | None = None, bottom: int | None = None) -> None:
        """DECSTBM; a 0 bottom means the last line and the cursor goes home, as in xterm."""
        super().set_margins(top, bottom or None)
        if not top and not bottom:  # pyte does not home the cursor on a full reset
            self.cursor_position()

    # -- drawing ------------------------------------------------------------------

    def draw(self, data: str) -> None:
        """Print text at the cursor: wide characters take two cells, zero-width attach."""
        if not data:
            return
        charset = self.g1_charset if self.charset else self.g0_charset
        if charset is not charsets.LAT1_MAP:
            data = data.translate(charset)
        if data.isascii() and data.isprintable() and modes.IRM not in self.mode:
            self._draw_ascii(data)
            return
        awm = modes.DECAWM in self.mode
        for char in data:
            width = 1 if " " <= char < "\x7f" else _width(char)
            if width == 0:
                self._attach(char)
                continue
            if width < 0:
                continue
            if width == 2 and self.columns < 2:
                width = 1
            cursor = self.cursor
            if cursor.x + width > self.columns:
                self._no_room(width, awm)
            if modes.IRM in self.mode:
                self.insert_characters(width)
            self._put(cursor.x, char)
            if width == 2:
                self.buffer[cursor.y][cursor.x + 1] = cursor.attrs._replace(data="")
            cursor.x += width
            self.last_char = char
        self.dirty.add(self.cursor.y)

    def _draw_ascii(self, data: str) -> None:
        """The common case of ``draw``, a line at a time: one cell per character."""
        cursor, columns = self.cursor, self.columns
        attrs = cursor.attrs
        if attrs is not self._glyph_attrs:
            # Coloured output switches attributes every few characters and comes back
            # to the same few: keep a glyph table per attribute set, not just the last.
            tables = self._glyph_tables
            found = tables.get(attrs)
            if found is None:
                if len(tables) >= _GLYPH_TABLES:
                    tables.clear()
                found = tables[attrs] = {}
            self._glyph_attrs, self._glyphs = attrs, found
        glyphs = self._glyphs
        i, n = 0, len(data)
        while i < n:
            if cursor.x >= columns:
                if modes.DECAWM in self.mode:
                    self.carriage_return()
                    self.linefeed()
                else:  # no wrap: each character overwrites the last column
                    cursor.x, i = columns - 1, n - 1
            line = self.buffer[cursor.y]
            x = cursor.x
            for char in data[i : i + columns - x]:
                glyph = glyphs.get(char)
                if glyph is None:
                    glyph = glyphs[char] = attrs._replace(data=char)
                line[x] = glyph
                x += 1
            i += x - cursor.x
            cursor.x = x
        self.last_char = data[-1]
        self.dirty.add(cursor.y)

    def _no_room(self, width: int, awm: bool) -> None:
        """``width`` cells do not fit at the cursor: wrap (DECAWM) or overwrite the end."""
        cursor = self.cursor
        if awm:
            if cursor.x < self.columns and width == 2:
                self._put(cursor.x, " ")
            self.carriage_return()
            self.linefeed()
        else:
            cursor.x = self.columns - width

    def _put(self, x: int, data: str) -> None:
        self.buffer[self.cursor.y][x] = self.cursor.attrs._replace(data=data)

    def _attach(self, char: str) -> None:
        """Append a zero-width code point to the cell before the cursor (if any)."""
        x = min(self.cursor.x, self.columns) - 1
        line = self.buffer[self.cursor.y]
        if x > 0 and line[x].data == "":
            x -= 1
        if x < 0 or len(line[x].data) >= _MAX_CLUSTER or not line[x].data:
            return
        line[x] = line[x]._replace(data=line[x].data + char)

    def repeat_last(self, count: int | None = None) -> None:
        """REP (``CSI n b``): print the last printed character ``n`` more times."""
        if self.last_char:
            self.draw(self.last_char * min(count or 1, self.columns * self.lines))

    def blank(self) -> Char:
        """The cell erasing leaves: a space in the current background colour (BCE)."""
        return self.default_char._replace(bg=self.cursor.attrs.bg)

    def _erase(self, y: int, start: int, stop: int) -> None:
        blank = self.blank()
        if blank == self.default_char:
            if start == 0 and stop >= self.columns:
                self.buffer.pop(y, None)
            elif y in self.buffer:
                line = self.buffer[y]
                for x in range(start, min(stop, self.columns)):
                    line.pop(x, None)
        else:
            line = self.buffer[y]
            for x in range(start, min(stop, self.columns)):
                line[x] = blank
        self.dirty.add(y)

    def erase_characters(self, count: int | None = None) -> None:
        """ECH: blank ``count`` cells from the cursor; the cursor stays."""
        self._erase(self.cursor.y, self.cursor.x, self.cursor.x + (count or 1))

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        """EL: 0 cursor to end, 1 start to cursor, 2 whole line; others ignored."""
        x = min(self.cursor.x, self.columns - 1)
        spans = {0: (x, self.columns), 1: (0, x + 1), 2: (0, self.columns)}
        if how in spans:
            self._erase(self.cursor.y, *spans[how])

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        """ED: 0 cursor to end, 1 start to cursor, 2 all; 3 (scrollback) is a no-op."""
        if how == 0:
            self.erase_in_line(0)
            rows = range(self.cursor.y + 1, self.lines)
        elif how == 1:
            self.erase_in_line(1)
            rows = range(self.cursor.y)
        elif how == 2:
            rows = range(self.lines)
        else:
            return
        if self.scrolled_off is not None:
            self._lines_leave(rows if how == 2 else ())
        for y in rows:
            self._erase(y, 0, self.columns)

    def _lines_leave(self, rows: range | tuple[()]) -> None:
        """Hand rows about to be wiped (clear screen, screen switch) to ``scrolled_off``."""
        if self.scrolled_off is not None:
            for y in rows:
                if y in self.buffer:
                    self.scrolled_off(self.plain_line(y))

    def select_graphic_rendition(self, *attrs: int, **kwargs: Any) -> None:
        """SGR from plain parameters (pyte calls this itself for DECSCNM)."""
        self.sgr([[a] for a in attrs] or [[0]])

    def sgr(self, groups: list[list[int | None]]) -> None:  # noqa: C901  one branch per attribute
        """SGR with sub-parameters: ``groups`` is ``[[38, 2, None, r, g, b], [1]...]``."""
        attrs = self.cursor.attrs
        i = 0
        while i < len(groups):
            group = groups[i]
            code = group[0] or 0
            i += 1
            if code in (38, 48, 58):
                colour, i = _extended_colour(group, groups, i)
                if colour is not None and code == 38:
                    attrs = attrs._replace(fg=colour)
                elif colour is not None and code == 48:
                    attrs = attrs._replace(bg=colour)
            elif code == 0:
                attrs = self.default_char
            elif code == 39:
                attrs = attrs._replace(fg="default")
            elif code == 49:
                attrs = attrs._replace(bg="default")
            elif 30 <= code <= 37:
                attrs = attrs._replace(fg=_palette(code - 30))
            elif 40 <= code <= 47:
                attrs = attrs._replace(bg=_palette(code - 40))
            elif 90 <= code <= 97:
                attrs = attrs._replace(fg=_palette(code - 82))
            elif 100 <= code <= 107:
                attrs = attrs._replace(bg=_palette(code - 92))
            elif code in _SGR_FLAGS:
                name, value = _SGR_FLAGS[code]
                if code == 4 and len(group) > 1:  # 4:0 is "no underline", 4:1..5 styles
                    value = bool(group[1])
                flags: dict[str, Any] = {name: value}
                attrs = attrs._replace(**flags)
        self.cursor.attrs = attrs

    # -- motion -------------------------------------------------------------------

    def end_pending_wrap(self) -> None:
        """Any control but SGR cancels a pending wrap (cursor parked past the last column)."""
        if self.cursor.x >= self.columns:
            self.cursor.x = self.columns - 1

    def cursor_to_line(self, line: int | None = None) -> None:
        """VPA, relative to the top margin in origin mode (pyte asserts instead)."""
        top = self.margins.top if self.margins and modes.DECOM in self.mode else 0
        self.cursor.y = top + (line or 1) - 1
        self.ensure_vbounds()

    def plain_line(self, y: int) -> str:
        """Row ``y`` as plain text, trailing spaces stripped (no wide-character repair)."""
        line = self.buffer.get(y)
        if not line:
            return ""
        # only the written cells are in the row's dict; the rest are blanks (a
        # comprehension over every column went through ``__missing__`` for each)
        columns = self.columns
        cells = [" "] * columns
        for x, char in line.items():
            if 0 <= x < columns:
                cells[x] = char.data
        return "".join(cells).rstrip()

    def index(self) -> None:
        """IND / linefeed; a line scrolled off the top goes to ``scrolled_off`` first."""
        if self.scrolled_off is not None:
            top, bottom = self.margins or Margins(0, self.lines - 1)
            if self.cursor.y == bottom:
                self.scrolled_off(self.plain_line(top))
        super().index()

    def scroll(self, count: int) -> None:
        """SU (count > 0) / SD (count < 0) inside the scrolling margins."""
        top, bottom = self.margins or Margins(0, self.lines - 1)
        n = min(abs(count), bottom - top + 1)
        if self.scrolled_off is not None and count > 0:
            for y in range(top, top + n):
                self.scrolled_off(self.plain_line(y))
        order = range(top, bottom + 1) if count > 0 else range(bottom, top - 1, -1)
        step = n if count > 0 else -n
        for y in order:
            source = y + step
            if top <= source <= bottom and source in self.buffer:
                self.buffer[y] = self.buffer[source]
            else:
                self.buffer.pop(y, None)
        self.dirty.update(range(top, bottom + 1))

    def tab_forward(self, count: int | None = None) -> None:
        """CHT / HT: to the ``count``-th next tab stop (or the last column)."""
        for _ in range(min(count or 1, self.columns)):
            self.tab()

    def tab_back(self, count: int | None = None) -> None:
        """CBT: to the ``count``-th previous tab stop (or the first column)."""
        for _ in range(min(count or 1, self.columns)):
            stops = [t for t in self.tabstops if t < self.cursor.x]
            self.cursor.x = max(stops, default=0)

    def designate(self, slot: str, code: str) -> None:
        """SCS (``ESC ( 0`` etc.): G0/G1 charsets, even in UTF-8 (ncurses line drawing)."""
        table = charsets.MAPS.get(code)
        if table is not None and slot in "()":
            if slot == "(":
                self.g0_charset = table
            else:
                self.g1_charset = table


_SGR_FLAGS: dict[int, tuple[str, bool]] = {
    1: ("bold", True),
    3: ("italics", True),
    4: ("underscore", True),
    5: ("blink", True),
    6: ("blink", True),
    7: ("reverse", True),
    9: ("strikethrough", True),
    21: ("underscore", True),
    22: ("bold", False),
    23: ("italics", False),
    24: ("underscore", False),
    25: ("blink", False),
    27: ("reverse", False),
    29: ("strikethrough", False),
}


def _extended_colour(
    group: list[int | None], groups: list[list[int | None]], i: int
) -> tuple[str | None, int]:
    """Parse 38/48 colour; returns the colour (None if invalid) and the next index."""
    if len(group) > 1:  # colon form: 38:5:n, 38:2:r:g:b or 38:2:cs:r:g:b
        args = group[1:]
    else:  # semicolon form: the arguments are the following parameters
        args = [g[0] for g in groups[i : i + 4]]
        if not args:
            return None, i
        i += 2 if args[0] == 5 else 4 if args[0] == 2 else 1
    if args[0] == 5 and len(args) >= 2:
        n = args[1]
        return (_palette(n) if n is not None and n <= 255 else None), i
    if args[0] == 2:
        rgb = args[-3:] if len(group) > 1 and len(args) >= 5 else args[1:4]
        if len(rgb) == 3 and all(c is not None and c <= 255 for c in rgb):
            return "#" + "".join(f"{c:02x}" for c in rgb), i
    return None, i


class TerminalEmulator:
    """Bytes a program wrote to its terminal in, screens out.

    ``feed`` decodes UTF-8 incrementally (a character split across two calls is kept
    whole; invalid bytes become U+FFFD) and interprets the escape sequences. It never
    raises on any input: a recording may hold anything.
    """

    def __init__(self, cols: int = 80, rows: int = 24) -> None:
        """An emulator of ``cols`` x ``rows`` (clamped to 1..MAX_COLS and 1..MAX_ROWS)."""
        cols, rows = _clamp(cols, rows)
        self._screen = _Screen(cols, rows)
        self._parser = VTParser(self._screen)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._cells: dict[Char, Cell] = {}

    @property
    def cols(self) -> int:
        """Width in cells."""
        return int(self._screen.columns)

    @property
    def rows(self) -> int:
        """Height in lines."""
        return int(self._screen.lines)

    @property
    def alternate(self) -> bool:
        """True while the alternate screen is shown."""
        return self._screen.alternate

    @property
    def at_rest(self) -> bool:
        """True between sequences with no partial UTF-8 character pending.

        A keyframe taken at rest plus the bytes after it reproduces the screen exactly;
        at other moments the parser's and decoder's state would be lost.
        """
        return self._parser.ground and not self._decoder.getstate()[0]

    def feed(self, data: bytes) -> None:
        """Interpret output bytes of the program."""
        text = self._decoder.decode(data)
        if text:
            self._parser.feed(text)

    def resize(self, cols: int, rows: int) -> None:
        """Change the size (both screens); the cursor's line stays visible."""
        cols, rows = _clamp(cols, rows)
        self._screen.resize(rows, cols)

    def text(self) -> list[str]:
        """The visible lines as plain text, trailing spaces stripped."""
        return self.snapshot().text()

    def watch_lines(self, scrolled_off: Callable[[str], None] | None) -> None:
        """Have ``scrolled_off`` called with each line that leaves the screen: pushed off
        the top, erased by a clear screen, or hidden by an alternate-screen switch."""
        self._screen.scrolled_off = scrolled_off

    def take_changed(self) -> list[tuple[int, str]]:
        """Rows changed since the last call, as (row, plain text), cheaply (no cells)."""
        screen = self._screen
        rows = sorted(y for y in screen.dirty if 0 <= y < screen.lines)
        screen.dirty.clear()
        return [(y, screen.plain_line(y)) for y in rows]

    def snapshot(self) -> ScreenSnapshot:
        """An immutable copy of what the screen shows now."""
        screen = self._screen
        cols = screen.columns
        lines = []
        for y in range(screen.lines):
            line = screen.buffer.get(y)
            if line is None:
                lines.append((BLANK,) * cols)
            else:
                lines.append(self._row(line, cols))
        cursor = screen.cursor
        return ScreenSnapshot(
            cols=cols,
            rows=screen.lines,
            lines=tuple(lines),
            cursor_x=min(cursor.x, cols - 1),
            cursor_y=cursor.y,
            cursor_visible=not cursor.hidden,
            alternate=screen.alternate,
            title=screen.title,
        )

    def _row(self, line: Line, cols: int) -> tuple[Cell, ...]:
        """Convert one line, repairing half-overwritten wide characters as xterm shows them.

        Overwriting either half of a wide character erases the other half; pyte's
        line-editing methods do not know that, so it is enforced here: a wide character
        without its right half, or a right half without its wide character, is a blank.
        """
        chars = [line[x] for x in range(cols)]
        for x, char in enumerate(chars):
            if char.data == "":
                if x == 0 or not _is_wide(chars[x - 1].data):
                    chars[x] = char._replace(data=" ")
            elif _is_wide(char.data) and (x + 1 >= cols or line[x + 1].data != ""):
                chars[x] = char._replace(data=" ")
        cells = self._cells
        if len(cells) > 4096:
            cells.clear()
        out = []
        for char in chars:
            cell = cells.get(char)
            if cell is None:
                cell = cells[char] = Cell(
                    char.data,
                    char.fg,
                    char.bg,
                    char.bold,
                    char.italics,
                    char.underscore,
                    char.reverse,
                    char.strikethrough,
                    char.blink,
                )
            out.append(cell)
        return tuple(out)


def _clamp(cols: int, rows: int) -> tuple[int, int]:
    return min(max(1, cols), MAX_COLS), min(max(1, rows), MAX_ROWS)
