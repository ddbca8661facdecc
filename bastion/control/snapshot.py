"""A late watcher's first event: the current screen, read backwards from the recording.

The node never emulates a terminal. When someone starts watching, the session's
writer hands over a consistent ``LiveTail`` (the chunks already in the file and the
events still in memory); this module reads them newest first, chunk by chunk
(``RecordingReader.chunks_newest_first``), until ``screen_cut.find_cut`` finds a
point that fixes the screen - or the window cap is reached - and returns the bytes
from there. Runs in a worker thread.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from bastion.control.messages import Snapshot
from bastion.control.screen_cut import Cut, find_cut
from bastion.pg.query_event import QueryEvent, QueryResolver
from recorder import Event, LiveTail, Output, RecordingReader

__all__ = ["FALLBACK_BYTES", "MAX_QUERIES", "MAX_WINDOW", "build_snapshot", "recorded_size"]

MAX_WINDOW = 4 * 1024 * 1024
"""Output bytes read back at most, looking for a cut point."""
FALLBACK_BYTES = 1024 * 1024
"""Without a cut point in the window, the last this many bytes are replayed (from a line
start): a watcher emulates ~1 MiB in well under a second."""
MAX_QUERIES = 200
_FIRST_WINDOW = 64 * 1024
_MAX_QUIET_CHUNKS = 64  # chunks read back for queries when a session has no output


def recorded_size(reader: RecordingReader) -> tuple[int, int] | None:
    """The terminal size in the recording's header (PTY sessions), if any."""
    cols, rows = reader.header.meta_int("cols"), reader.header.meta_int("rows")
    return (cols, rows) if cols and rows else None


def build_snapshot(
    f: BinaryIO,
    tail: LiveTail,
    session_id: str,
    size: tuple[int, int] | None,
    max_window: int = MAX_WINDOW,
    resolver: QueryResolver | None = None,
) -> Snapshot:
    """The snapshot of a live recording at ``tail`` (see the module docstring).

    ``f`` is the recording file opened when ``tail`` was taken; ``size`` is the
    terminal size last recorded (None: the header's, else 80x24). The queries are
    resolved from the chunks read (whole chunks, so every reference is found),
    through ``resolver`` if given: it then knows the texts the events after the
    tail may refer to (they are in the newest chunk read, or come later).
    """
    reader = RecordingReader(f, tail=tail)
    if size is None:
        size = recorded_size(reader) or (80, 24)
    cols, rows = size
    pieces: list[bytes] = []  # output, newest first
    have = 0
    queries: list[Event] = []  # pg.query events, newest first
    target = _FIRST_WINDOW
    cut: Cut | None = None
    whole = True  # read back to the start of the session
    lists = 0
    read: list[list[Event]] = []  # chunks with queries, newest first
    for events in reader.chunks_newest_first():
        if reader.damage:
            break  # a gap (a damaged chunk): replay from after it
        before = len(queries)
        for event in reversed(events):
            if isinstance(event, Output):
                if cut is None:
                    pieces.append(event.data)
                    have += len(event.data)
            elif len(queries) < MAX_QUERIES and QueryEvent.from_event(event):
                queries.append(event)
        if len(queries) > before or not read:
            read.append(events)
        lists += 1
        if cut is None and have >= target:
            found = find_cut(b"".join(reversed(pieces)), rows)
            if found.exact or have >= max_window:
                cut = found
            target *= 4
        queries_done = len(queries) >= MAX_QUERIES or lists > _MAX_QUIET_CHUNKS
        if (cut is not None or have == 0) and (queries_done or not queries and have):
            whole = False
            break
    payloads = _resolved(read, queries, resolver or QueryResolver())
    return Snapshot(
        session_id=session_id,
        cols=cols,
        rows=rows,
        offset=tail.last_us / 1_000_000,
        screen_bytes=_screen(b"".join(reversed(pieces)), rows, whole, cut),
        queries=payloads,
    )


def _resolved(
    read: list[list[Event]], kept: list[Event], resolver: QueryResolver
) -> list[dict[str, Any]]:
    """The payloads of the ``kept`` query events, oldest first, resolved by feeding
    ``resolver`` the chunks ``read`` (newest first) in time order."""
    wanted = {id(e) for e in kept}
    payloads: list[dict[str, Any]] = []
    for events in reversed(read):
        for event in events:
            resolved = resolver.resolve(event)
            if id(event) in wanted and (query := QueryEvent.from_event(resolved)):
                payloads.append(query.to_payload())
    return payloads


def _screen(data: bytes, rows: int, whole: bool, cut: Cut | None) -> bytes:
    """What to replay of ``data``, the output read back (``whole``: back to the start)."""
    if whole:  # the whole session's output: exact from the start, shorter if a cut exists
        found = find_cut(data, rows)
        return found.apply(data) if found.exact else data
    if cut is None:  # reading stopped before any output (have == 0)
        return b""
    screen = cut.apply(data)
    if not cut.exact and len(data) - cut.offset > FALLBACK_BYTES:
        start = len(data) - FALLBACK_BYTES
        nl = data.find(b"\n", start)
        screen = cut.prefix + data[nl + 1 if nl >= 0 else start :]
    return screen
