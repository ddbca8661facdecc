"""Where a late watcher's replay can start: the latest point that fixes the whole screen.

A watcher joining a session after a gigabyte of output must see the current screen at
once, and the node must not run a terminal emulator over every relayed byte. So the
node keeps nothing: when someone joins it reads the session's recent output backwards
and asks ``find_cut`` for the latest offset from which the screen is fully determined,
whatever came before. Feeding ``cut.prefix + data[cut.offset:]`` to a fresh emulator of
the session's size then reproduces the screen (text, cursor, main or alternate screen).

Cut points, latest wins:

* a full reset (``ESC c``);
* a clear with a known cursor: ``CSI H`` then ``CSI 2J``/``CSI J``, ``CSI 2J`` then a
  cursor position (or ``CSI r``, which homes the cursor), or entering the alternate
  screen with ``CSI ?1049h`` (which clears it) then a cursor position - allowing
  attribute, mode and title sequences in between;
* enough scrolling: a carriage return followed by at least ``2 x rows`` line feeds
  with only text, SGR, erase-in-line, title and harmless mode sequences in between
  (whatever row the cursor was on, every old line has then scrolled away).

Candidates must keep the screen they clear: after a cut made in the alternate screen
the rest may not leave it (that would reveal a main screen from before the cut), and
``CSI ?47h``/``?1047h`` (which show an uncleared alternate buffer) after the cut rule
it out. State older than the cut that still matters is replayed first (``prefix``):
entering the alternate screen, the scrolling margins and auto-wrap.

Pure: bytes in, a ``Cut`` out; no I/O. Known limits (documented): state set beyond the
window the caller passes (an alternate screen entered many MiB ago, character sets,
origin mode, tab stops, colours) is not recovered; the fallback is then the window's
last part from a line start, marked ``exact=False``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Cut", "find_cut"]

ALT_ENTER = b"\x1b[?1049h"

# Sequences allowed between a clear and the cursor position that completes it.
_FILLER = (
    rb"(?:\x1b\[[<=>?]?[0-9;:]*[mtcnq]"  # SGR, modifyOtherKeys, window ops, queries
    rb"|\x1b\[\?(?!(?:47|1047|1049|3|6)[;hl])[0-9;]*[hl]"  # harmless private modes
    rb"|\x1b\[[0-3]?J"  # more erasing
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC (title)
    rb"|\x1b[=>]"  # keypad modes
    rb")*"
)
_CUP = rb"\x1b\[[0-9;]*[Hfr]"
_HOME = rb"\x1b\[(?:1?;?1?)?[Hf]"
_CLEAR = re.compile(
    rb"\x1bc"
    rb"|\x1b\[2J" + _FILLER + _CUP + rb"|" + _CUP + _FILLER + rb"\x1b\[2J"
    rb"|" + _HOME + _FILLER + rb"\x1b\[0?J"
    rb"|\x1b\[\?1049h" + _FILLER + _CUP
)
# Alternate-screen switches (private modes 47, 1047, 1049, possibly among others) and RIS.
_TOGGLE = re.compile(rb"\x1b\[\?((?:[0-9]*;)*(?:47|1047|1049)(?:;[0-9]*)*)([hl])|\x1bc")
_MARGINS = re.compile(rb"\x1b\[([0-9]*)(?:;([0-9]*))?r")
_AUTOWRAP = re.compile(rb"\x1b\[\?7([hl])")
# Anything that is not text, CR/LF/BS/HT/BEL/NUL, SGR, erase-in-line, OSC or a harmless
# mode: a scroll run (the third kind of cut) may not contain one.
_NOT_SCROLL_SAFE = re.compile(
    rb"\x1b(?!\[[0-9;:]*m|\[[012]?K|\]|\[\?(?:1|12|25|100[0-6]|1015|2004|2026)[hl]|[=>])"
    rb"|[\x01-\x06\x0e-\x1a\x1c-\x1f\x7f]|\xc2[\x80-\x9f]"
)


@dataclass(frozen=True, slots=True)
class Cut:
    """Replay ``prefix`` then ``data[offset:]`` into a fresh emulator to get the screen."""

    offset: int
    prefix: bytes = b""
    exact: bool = True
    """False: no determining point in the window; the screen may miss older content."""

    def apply(self, data: bytes) -> bytes:
        """The bytes to feed a fresh emulator."""
        return self.prefix + data[self.offset :]


@dataclass(frozen=True, slots=True)
class _Switch:
    at: int
    enter: bool
    clears: bool  # 1049 entry clears the alternate screen; 47/1047 entry does not
    reset: bool  # RIS


def _switches(data: bytes) -> list[_Switch]:
    found = []
    for m in _TOGGLE.finditer(data):
        if m.group(0) == b"\x1bc":
            found.append(_Switch(m.start(), False, True, True))
            continue
        modes = {p for p in m.group(1).split(b";") if p}
        enter = m.group(2) == b"h"
        found.append(_Switch(m.start(), enter, b"1049" in modes, False))
    return found


def _alternate_at(switches: list[_Switch], offset: int) -> bool:
    """Whether the alternate screen is shown just before ``offset`` (unknown: no)."""
    state = False
    for s in switches:
        if s.at >= offset:
            break
        state = s.enter
    return state


def _keeps_screen(switches: list[_Switch], offset: int, alternate: bool) -> bool:
    """True if what happens after ``offset`` never shows a buffer the cut did not fix.

    ``alternate``: the cut fixed the alternate screen (the main one is unknown).
    """
    for s in switches:
        if s.at < offset:
            continue
        if s.reset:
            return True
        if s.enter and not s.clears:
            return False
        if not s.enter and alternate:
            return False
    return True


def _since_reset(data: bytes, offset: int) -> int:
    """Where the state before ``offset`` begins: just after the last full reset (RIS
    resets margins and modes, so a setting older than it no longer applies)."""
    ris = data.rfind(b"\x1bc", 0, offset)
    return 0 if ris < 0 else ris + 2


def _margins_prefix(data: bytes, offset: int, rows: int) -> tuple[bytes, bool]:
    """The last scrolling-margin setting before ``offset`` and whether it is full-screen."""
    last = None
    for m in _MARGINS.finditer(data, _since_reset(data, offset), offset):
        last = m
    if last is None:
        return b"", True
    top = int(last.group(1) or 1)
    bottom = int(last.group(2) or 0)
    full = top <= 1 and (bottom == 0 or bottom >= rows)
    return (b"" if full else last.group(0)), full


def _autowrap_prefix(data: bytes, offset: int) -> bytes:
    last = None
    for m in _AUTOWRAP.finditer(data, _since_reset(data, offset), offset):
        last = m
    return b"\x1b[?7l" if last is not None and last.group(1) == b"l" else b""


def _prefix(data: bytes, offset: int, rows: int, alternate: bool) -> bytes:
    margins, _ = _margins_prefix(data, offset, rows)
    return (ALT_ENTER if alternate else b"") + margins + _autowrap_prefix(data, offset)


def _clear_cut(data: bytes, switches: list[_Switch], rows: int) -> Cut | None:
    """The latest reset or clear-with-cursor that keeps its screen to the end."""
    candidates = [m.start() for m in _CLEAR.finditer(data)]
    for at in reversed(candidates):
        if data.startswith(b"\x1bc", at):
            return Cut(at)
        entering = data.startswith(b"\x1b[?1049h", at)
        before = _alternate_at(switches, at)
        if entering and before:
            continue  # 1049 while already in the alternate screen does not clear it
        alternate = before or entering
        rest = [s for s in switches if s.at > at] if entering else switches
        if not _keeps_screen(rest, at, alternate):
            continue
        prefix = _prefix(data, at, rows, before)
        return Cut(at, prefix)
    return None


def _scroll_cut(data: bytes, start: int, switches: list[_Switch], rows: int) -> Cut | None:
    """The latest CR followed by 2 x rows line feeds in a run of scroll-safe bytes."""
    need = 2 * rows
    seg_end = len(data)
    barriers = [(m.start(), m.end()) for m in _NOT_SCROLL_SAFE.finditer(data, start)]
    bounds = [start, *(end for _, end in barriers)]
    ends = [*(s for s, _ in barriers), len(data)]
    for seg_start, seg_end in zip(reversed(bounds), reversed(ends), strict=True):
        if seg_end - seg_start < need:
            continue
        pos = seg_end
        for _ in range(need):
            pos = data.rfind(b"\n", seg_start, pos)
            if pos < 0:
                break
        if pos < 0:
            continue
        cr = data.rfind(b"\r", seg_start, pos)
        if cr < 0:
            continue
        alternate = _alternate_at(switches, cr)
        _, full = _margins_prefix(data, cr, rows)
        if not full or not _keeps_screen(switches, cr, alternate):
            return None
        return Cut(cr, _prefix(data, cr, rows, alternate))
    return None


def find_cut(data: bytes, rows: int) -> Cut:
    """The latest offset in ``data`` (a session's recent output) that fixes the screen.

    ``rows`` is the terminal height. Never raises; without a determining point the
    result starts after the first line feed and has ``exact=False``.
    """
    rows = max(1, rows)
    switches = _switches(data)
    best = _clear_cut(data, switches, rows)
    scroll = _scroll_cut(data, best.offset if best else 0, switches, rows)
    if scroll is not None and (best is None or scroll.offset > best.offset):
        best = scroll
    if best is not None:
        return best
    nl = data.find(b"\n")
    offset = nl + 1 if 0 <= nl < len(data) // 2 else 0
    return Cut(offset, _prefix(data, offset, rows, _alternate_at(switches, offset)), exact=False)
