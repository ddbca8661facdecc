"""Screen keyframes: emulator states taken every few seconds of a recording.

Why: a player asked to show minute 42 of a session would otherwise have to feed every
byte from the start. With keyframes it restores the last state at or before the target
time and feeds only the events after it. Keyframes are *derived* data (DESIGN.md §5):
they can always be rebuilt from the recording, so they carry their own version and a
reader rejects, rather than migrates, a version it does not know.

What a keyframe holds is the emulator's full state, not just the visible snapshot:
while vim is open the main screen is hidden but must come back on ``:q``, and the
cursor attributes, modes, margins, saved cursors and charsets all affect what the next
bytes do. Keyframes are only taken when the emulator is at rest (between escape
sequences, no partial UTF-8 character), so no parser state needs saving.

Events with equal timestamps are common (microsecond clock, bursts); a keyframe records
``skip``, how many events at exactly its ``time`` it already contains, so seeking
neither repeats nor loses one.

Serialised form (``encode``/``decode``): zstd-compressed JSON (never pickle: keyframes may
be stored next to recordings and must be safe to load). A screen line is its text, one
character per cell (``t``), the cells that are not one character - wide-character right
halves and clusters with combining marks - as ``[x, text]`` exceptions (``x``), and
run-length encoded indexes into a table of styles (``s``).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import zstandard
from pyte import charsets
from pyte.screens import Char, Cursor, Margins, Savepoint

from recorder import Event, Output, Resize
from replay.terminal import TerminalEmulator, _new_buffer

__all__ = [
    "KEYFRAME_VERSION",
    "EventSource",
    "Keyframe",
    "KeyframeError",
    "apply_event",
    "build_keyframes",
    "decode",
    "dump_state",
    "encode",
    "iter_keyframes",
    "load_state",
    "play_from",
    "seek",
]

KEYFRAME_VERSION = 1
_MAX_DECODED = 64 * 1024 * 1024  # a decompression bomb must not exhaust memory


class KeyframeError(ValueError):
    """Serialised keyframes that cannot be loaded (corrupt, or an unknown version)."""


class EventSource(Protocol):
    """Anything that can list events from a time on: ``recorder.RecordingReader``."""

    def events(self, start: float = 0.0, end: float | None = None) -> Iterator[Event]:
        """Events with ``start <= time`` in order."""
        ...


@dataclass(frozen=True)
class Keyframe:
    """The emulator state after every event up to ``time`` (and ``skip`` events at it)."""

    time: float
    skip: int
    state: dict[str, Any]
    """JSON-compatible; see ``dump_state``."""


def apply_event(emu: TerminalEmulator, event: Event) -> None:
    """Apply one recording event to the emulator (output and resize; others do nothing)."""
    if isinstance(event, Output):
        emu.feed(event.data)
    elif isinstance(event, Resize):
        emu.resize(event.cols, event.rows)


def build_keyframes(
    events: Iterable[Event],
    cols: int = 80,
    rows: int = 24,
    *,
    interval: float = 5.0,
    max_bytes: int = 256 * 1024,
) -> list[Keyframe]:
    """Play ``events`` and take a keyframe every ``interval`` s or ``max_bytes`` of output.

    ``cols`` x ``rows`` is the size at the start (a recording's header ``meta``). The
    first keyframe comes after the first interval; seeking before it starts from a blank
    emulator. Keyframes wait for the emulator to be at rest, so they may come a little
    late in a stream that ends mid-sequence.
    """
    return list(iter_keyframes(events, cols, rows, interval=interval, max_bytes=max_bytes))


def iter_keyframes(
    events: Iterable[Event],
    cols: int = 80,
    rows: int = 24,
    *,
    interval: float = 5.0,
    max_bytes: int = 256 * 1024,
) -> Iterator[Keyframe]:
    """``build_keyframes`` one keyframe at a time, so a caller can store each as it comes
    (a gigabyte recording has thousands; holding every state at once costs memory)."""
    emu = TerminalEmulator(cols, rows)
    last_time, pending_bytes = 0.0, 0
    current_time, at_current = None, 0
    for event in events:
        if event.time != current_time:
            current_time, at_current = event.time, 0
        at_current += 1
        apply_event(emu, event)
        if isinstance(event, Output):
            pending_bytes += len(event.data)
        due = event.time - last_time >= interval or pending_bytes >= max_bytes
        if due and emu.at_rest:
            yield Keyframe(event.time, at_current, dump_state(emu))
            last_time, pending_bytes = event.time, 0


def seek(
    source: EventSource,
    keyframes: list[Keyframe],
    time: float,
    cols: int = 80,
    rows: int = 24,
) -> TerminalEmulator:
    """The emulator after every event with ``event.time <= time``.

    Restores the last keyframe at or before ``time`` (``keyframes`` sorted by time, as
    ``build_keyframes`` returns them) and feeds the events after it; without one, starts
    from a blank ``cols`` x ``rows`` emulator.
    """
    index = bisect.bisect_right([k.time for k in keyframes], time) - 1
    if index >= 0:
        keyframe = keyframes[index]
        emu, start, skip = load_state(keyframe.state), keyframe.time, keyframe.skip
    else:
        emu, start, skip = TerminalEmulator(cols, rows), 0.0, 0
    return play_from(emu, source, start, skip, time)


def play_from(
    emu: TerminalEmulator, source: EventSource, start: float, skip: int, time: float
) -> TerminalEmulator:
    """Feed ``emu`` (restored at ``start``, after ``skip`` events at that instant) every
    later event up to ``time``; the one replay loop behind every seek."""
    for event in source.events(start):
        if event.time > time:
            break
        if skip and event.time == start:
            skip -= 1
            continue
        apply_event(emu, event)
    return emu


# -- state ----------------------------------------------------------------------------

_STYLE_FIELDS = Char._fields[1:]


def _charset_code(table: str) -> str:
    return next((code for code, t in charsets.MAPS.items() if t is table), "B")


def _cursor(cursor: Cursor, styles: dict[tuple[Any, ...], int]) -> list[Any]:
    return [cursor.x, cursor.y, cursor.hidden, _style(cursor.attrs, styles)]


def _style(char: Char, styles: dict[tuple[Any, ...], int]) -> int:
    return styles.setdefault(tuple(char)[1:], len(styles))


def _dump_buffer(buffer: dict[int, Any], styles: dict[tuple[Any, ...], int]) -> dict[str, Any]:
    lines: dict[str, Any] = {}
    for y, line in sorted(buffer.items()):
        if not line:
            continue
        width = max(line) + 1
        text: list[str] = []
        odd: list[list[Any]] = []
        runs: list[list[int]] = []
        for x in range(width):
            char = line[x]
            if len(char.data) == 1:
                text.append(char.data)
            else:
                text.append(" ")
                odd.append([x, char.data])
            style = _style(char, styles)
            if runs and runs[-1][0] == style:
                runs[-1][1] += 1
            else:
                runs.append([style, 1])
        lines[str(y)] = {"t": "".join(text), "x": odd, "s": runs}
    return lines


def _savepoints(points: list[Savepoint], styles: dict[tuple[Any, ...], int]) -> list[Any]:
    return [
        [_cursor(p.cursor, styles), _charset_code(p.g0_charset), _charset_code(p.g1_charset)]
        + [p.charset, p.origin, p.wrap]
        for p in points
    ]


def dump_state(emu: TerminalEmulator) -> dict[str, Any]:
    """The emulator's full state as JSON-compatible data (see the module docstring)."""
    screen = emu._screen
    styles: dict[tuple[Any, ...], int] = {tuple(screen.default_char)[1:]: 0}
    main, alt = (screen._other, screen.buffer) if screen.alternate else (screen.buffer, None)
    main_saves, alt_saves = (
        (screen._other_savepoints, screen.savepoints)
        if screen.alternate
        else (screen.savepoints, screen._other_savepoints)
    )
    state: dict[str, Any] = {
        "size": [screen.columns, screen.lines],
        "main": _dump_buffer(main, styles),
        "alt": _dump_buffer(alt if alt is not None else screen._other, styles),
        "alternate": screen.alternate,
        "cursor": _cursor(screen.cursor, styles),
        "saved": [_savepoints(main_saves, styles), _savepoints(alt_saves, styles)],
        "modes": sorted(screen.mode),
        "margins": list(screen.margins) if screen.margins else None,
        "tabstops": sorted(screen.tabstops),
        "charsets": [screen.charset, *map(_charset_code, (screen.g0_charset, screen.g1_charset))],
        "title": [screen.title, screen.icon_name],
        "last_char": screen.last_char,
    }
    state["styles"] = [list(style) for style in styles]
    return state


def load_state(state: dict[str, Any]) -> TerminalEmulator:
    """An emulator in the state ``dump_state`` saved.

    Raises KeyframeError if ``state`` is not a valid dumped state.
    """
    try:
        return _load_state(state)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise KeyframeError(f"invalid keyframe state: {e!r}") from e


def _load_state(state: dict[str, Any]) -> TerminalEmulator:  # noqa: C901  one decoder per format
    cols, rows = (int(v) for v in state["size"])
    emu = TerminalEmulator(cols, rows)
    screen = emu._screen
    styles = [Char(" ", *style) for style in state["styles"]]
    style_fields = [tuple(style) for style in state["styles"]]
    default_fields = tuple(screen.default_char)[1:]
    default_style = next((i for i, f in enumerate(style_fields) if f == default_fields), -1)
    if any(len(style) != len(_STYLE_FIELDS) for style in state["styles"]):
        raise ValueError("style with the wrong number of fields")

    def cursor(data: list[Any]) -> Cursor:
        x, y, hidden, style = data
        c = Cursor(min(int(x), cols), min(int(y), rows - 1), styles[style])
        c.hidden = bool(hidden)
        return c

    def buffer(lines: dict[str, Any]) -> Any:
        result = _new_buffer(screen.default_char)
        for key, line in lines.items():
            y = int(key)
            if not 0 <= y < rows:
                continue
            cells, x, text = result[y], 0, line["t"]
            for style, run in line["s"]:
                fields = style_fields[style]
                end = min(x + run, cols)
                if style == default_style:  # a blank default cell is what pyte returns anyway
                    for i in range(x, end):
                        if text[i] != " ":
                            cells[i] = Char(text[i], *fields)
                else:
                    for i in range(x, end):
                        cells[i] = Char(text[i], *fields)
                x += run
            for x, data in line["x"]:
                if x < cols:
                    cells[x] = cells[x]._replace(data=str(data))
        return result

    def savepoints(points: list[Any]) -> list[Savepoint]:
        maps = charsets.MAPS
        return [
            Savepoint(cursor(c), maps[g0], maps[g1], int(n), bool(o), bool(w))
            for c, g0, g1, n, o, w in points
        ]

    main, alt = buffer(state["main"]), buffer(state["alt"])
    main_saves, alt_saves = (savepoints(p) for p in state["saved"])
    screen.alternate = bool(state["alternate"])
    if screen.alternate:
        screen.buffer, screen._other = alt, main
        screen.savepoints, screen._other_savepoints = alt_saves, main_saves
    else:
        screen.buffer, screen._other = main, alt
        screen.savepoints, screen._other_savepoints = main_saves, alt_saves
    screen.cursor = cursor(state["cursor"])
    screen.mode = {int(m) for m in state["modes"]}
    margins = state["margins"]
    screen.margins = Margins(int(margins[0]), int(margins[1])) if margins else None
    screen.tabstops = {int(t) for t in state["tabstops"] if 0 <= int(t) < cols}
    charset, g0, g1 = state["charsets"]
    screen.charset = int(charset)
    screen.g0_charset, screen.g1_charset = charsets.MAPS[g0], charsets.MAPS[g1]
    screen.title, screen.icon_name = (str(s) for s in state["title"])
    screen.last_char = str(state["last_char"])[:1]
    return emu


# -- serialised form ------------------------------------------------------------------


def encode(keyframes: list[Keyframe]) -> bytes:
    """Keyframes as zstd-compressed JSON."""
    doc = {
        "version": KEYFRAME_VERSION,
        "keyframes": [[k.time, k.skip, k.state] for k in keyframes],
    }
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    return bytes(zstandard.ZstdCompressor(level=10).compress(raw))


def decode(data: bytes) -> list[Keyframe]:
    """Keyframes from ``encode``'s output.

    Raises KeyframeError if the data is corrupt or of another version; the caller can
    then rebuild them from the recording.
    """
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=_MAX_DECODED)
        doc = json.loads(raw)
        if doc.get("version") != KEYFRAME_VERSION:
            raise KeyframeError(f"keyframes version {doc.get('version')!r} is not supported")
        keyframes = [Keyframe(float(t), int(skip), state) for t, skip, state in doc["keyframes"]]
    except KeyframeError:
        raise
    except (zstandard.ZstdError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise KeyframeError(f"corrupt keyframes: {e!r}") from e
    if any(not isinstance(k.state, dict) for k in keyframes):
        raise KeyframeError("corrupt keyframes: a state is not an object")
    return keyframes
