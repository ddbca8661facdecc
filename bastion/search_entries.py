"""What the search index holds for one session, from its recording and the store.

Kinds: ``commands`` (typed and exec command lines), ``queries`` (SQL statements),
``output`` (terminal lines as displayed, ``replay.screen_lines``), ``results``
(captured PostgreSQL rows, already masked when recorded: a masked value is ``***``)
and ``files`` (paths of audited scp/sftp operations). Every text goes through the
content masks (``[postgres] mask_patterns``, the secret detectors) before it is
returned: what a mask hides never reaches the index. Pure reading, no writes.
"""

from __future__ import annotations

import bisect
import codecs
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from bastion.pg.query_event import QUERY_EVENT, ROWS_EVENT, resolve_queries
from bastion.store import Store
from recorder import RecordingReader
from recorder.events import JSONValue, Output, Resize, Structured

MASK = "***"
_MAX_TEXT = 4096
_MAX_RESULT_ROWS = 100_000


@dataclass(frozen=True)
class SessionEntries:
    """A session's index entries and the recorded bytes they were taken from."""

    entries: list[tuple[str, float, str]]
    """(kind, offset in seconds since the start, text), each (kind, text) once."""
    source_bytes: int
    output_in_stream: bool = False
    """Every output line is in the recording's plain stream (``stream_holds_lines``)."""


class Masks:
    """Content masks applied to every indexed text."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self._patterns = tuple(re.compile(p) for p in patterns)

    def apply(self, text: str) -> str:
        """``text`` with every match of a mask replaced by ``***``."""
        for pattern in self._patterns:
            text = pattern.sub(MASK, text)
        return text


def _cell(value: JSONValue) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return value
    return str(value)


def _result_lines(payload: JSONValue) -> list[str]:
    """One line per captured row: its values joined by `` | `` (masked ones are ``***``)."""
    if not isinstance(payload, dict):
        return []
    found = payload.get("rows")
    if not isinstance(found, list):
        return []
    lines = []
    for row in found:
        if isinstance(row, list):
            lines.append(" | ".join(_cell(v) for v in row))
        elif isinstance(row, dict):
            lines.append(" | ".join(_cell(v) for v in row.values()))
        else:
            lines.append(_cell(row))
    return lines


def _file_transfer(request: str | None) -> bool:
    """True for an sftp subsystem or an scp/rsync exec: its data is files, not a screen
    (their names are indexed from the audit rows instead)."""
    if not request:
        return False
    if request.startswith("subsystem "):
        return True
    if request.startswith("exec "):
        words = request[5:].strip("'\"").split()
        return bool(words) and words[0].rsplit("/", 1)[-1] in ("scp", "rsync")
    return False


def _binary(text: str) -> bool:
    """A line that is mostly undecodable or control characters (a binary stream on a
    terminal-less channel): not worth indexing."""
    bad = sum(1 for c in text if c == "\ufffd" or (c < " " and c != "\t"))
    return bad * 4 > len(text)


MAX_STREAM = 8 << 20
"""Output bytes past which a session gets no plain stream (its lines are not checked)."""

_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, DCS, SOS, PM, APC
    r"|\x1b[ -/]*[0-~]"  # other escapes
    r"|[\x00-\x09\x0b-\x1f\x7f]"  # controls but the newline
)


def plain_stream(data: bytes) -> str:
    """A session's terminal output as text without escapes or controls, case-folded.

    Why: when every line the terminal displayed is a substring of this (plain
    scrolling output: logs, listings, typed lines), a text absent from it was not
    displayed either, and a search can rule a candidate session out by reading its
    recording, without running the emulator (``stream_holds_lines``)."""
    return _ESCAPES.sub("", data.decode("utf-8", "replace")).lower()


def stream_holds_lines(stream: str | None, lines: Iterable[str]) -> bool:
    """True if every displayed line (before masking) is a substring of ``stream``."""
    if stream is None:
        return False
    return all(line.strip()[:_MAX_TEXT].lower() in stream for line in lines)


def _stream_events(path: str) -> list[tuple[float, bytes]] | None:
    """A recording's output events (time, bytes); None past ``MAX_STREAM`` or for a
    file transfer (no screen)."""
    with RecordingReader.open(path) as reader:
        if _file_transfer(reader.header.meta_str("request")):
            return None
        found: list[tuple[float, bytes]] = []
        size = 0
        for event in reader.events():
            if isinstance(event, Output):
                size += len(event.data)
                if size > MAX_STREAM:
                    return None
                found.append((event.time, event.data))
    return found


_STREAM_LINE = 4096  # characters of a stream line per entry; longer lines are cut in
_STREAM_OVERLAP = 256  # pieces that overlap by this much, so a text across a cut is found


def stream_lines(path: str, masks: Masks, must_show: str | None = None) -> dict[str, float] | None:
    """The lines of a recording's plain stream (text -> offset of the event that
    completed it), masked as the index's lines are; None without a stream.

    For a session whose every displayed line is in its stream (``stream_holds_lines``)
    these are what the terminal showed, found in milliseconds instead of an emulator
    run: a line is taken whole where the screen wrapped it, and a hit's offset is the
    moment its text was written, when the player shows it. ``must_show``
    (case-folded): if the stream lacks it, ``{}`` at once.
    """
    events = _stream_events(path)
    if events is None:
        return None
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    starts: list[int] = []  # where each event's text begins in ``decoded``
    times: list[float] = []
    pieces: list[str] = []
    length = 0
    for at, data in events:
        text = decoder.decode(data)
        starts.append(length)
        times.append(at)
        pieces.append(text)
        length += len(text)
    decoded = "".join(pieces) + decoder.decode(b"", final=True)
    kept: list[str] = []
    origin: list[tuple[int, int]] = []  # (position in plain, position in decoded)
    plain_at = last = 0
    for match in _ESCAPES.finditer(decoded):
        if match.start() > last:
            origin.append((plain_at, last))
            kept.append(decoded[last : match.start()])
            plain_at += match.start() - last
        last = match.end()
    if last < len(decoded):
        origin.append((plain_at, last))
        kept.append(decoded[last:])
    plain = "".join(kept)
    if must_show is not None and must_show not in plain.lower():
        return {}
    marks = [o[0] for o in origin]

    def time_of(position: int) -> float:
        i = bisect.bisect_right(marks, position) - 1
        source = origin[i][1] + position - origin[i][0] if i >= 0 else 0
        return times[max(0, bisect.bisect_right(starts, source) - 1)]

    found: dict[str, float] = {}
    for piece, end in _pieces(plain):
        if _binary(piece):
            continue
        text = _indexed_text(piece, masks)
        at = max(0.0, round(time_of(end - 1), 3))
        if text and (text not in found or at < found[text]):
            found[text] = at
    return found


def _pieces(plain: str) -> Iterator[tuple[str, int]]:
    """The non-blank lines of a stream, long ones in overlapping pieces, each with the
    position in ``plain`` just past its end."""
    position = 0
    step = _STREAM_LINE - _STREAM_OVERLAP
    for line in plain.split("\n"):
        for cut in range(0, max(1, len(line) - _STREAM_OVERLAP), step):
            piece = line[cut : cut + _STREAM_LINE]
            if piece.strip():
                yield piece, position + cut + len(piece)
        position += len(line) + 1


def recording_entries(
    path: str,
) -> tuple[dict[str, float], dict[str, float], dict[str, float], int, bool]:
    """(output lines, result lines, statements) -> first offset, the output bytes read,
    and whether every output line is a substring of the plain stream."""
    from replay.screen_lines import DisplayedLines  # headless emulator; loaded only to index

    results: dict[str, float] = {}
    statements: dict[str, float] = {}
    size = 0
    parts: list[bytes] | None = []
    with RecordingReader.open(path) as reader:
        header = reader.header
        lines = DisplayedLines(header.meta_int("cols") or 80, header.meta_int("rows") or 24)
        screen = not _file_transfer(header.meta_str("request"))
        for event in resolve_queries(reader.events()):
            if isinstance(event, Output) and screen:
                size += len(event.data)
                lines.feed(event.time, event.data)
                if parts is not None and size > MAX_STREAM:
                    parts = None
                elif parts is not None:
                    parts.append(event.data)
            elif isinstance(event, Resize):
                lines.resize(event.time, event.cols, event.rows)
            elif isinstance(event, Structured):
                if event.name == ROWS_EVENT and len(results) < _MAX_RESULT_ROWS:
                    for line in _result_lines(event.payload):
                        size += len(line)
                        results.setdefault(line[:_MAX_TEXT], event.time)
                elif event.name == QUERY_EVENT and isinstance(event.payload, dict):
                    sql = event.payload.get("sql")
                    if isinstance(sql, str) and sql.strip():
                        size += len(sql)
                        statements.setdefault(sql.strip()[:_MAX_TEXT], event.time)
    shown = lines.finish()
    stream = plain_stream(b"".join(parts)) if parts is not None and screen else None
    return shown, results, statements, size, stream_holds_lines(stream, shown)


def _indexed_text(text: str, masks: Masks) -> str:
    """What the index keeps of a text ('' for nothing): trimmed, bounded, masked."""
    text = masks.apply(text.strip()[:_MAX_TEXT])
    return "" if text == MASK else text


def displayed_lines(output: dict[str, float], masks: Masks) -> dict[str, float]:
    """The ``output`` entries of a session (text -> offset) from the lines its terminal
    displayed: what the indexer indexes and what a search reads back, the same way."""
    found: dict[str, float] = {}
    for raw, at in output.items():
        if _binary(raw):
            continue
        text = _indexed_text(raw, masks)
        if not text:
            continue
        offset = max(0.0, round(at, 3))
        if text not in found or offset < found[text]:
            found[text] = offset
    return found


def session_entries(
    store: Store, session_id: str, recording: str | None, masks: Masks
) -> SessionEntries | None:
    """Everything to index for ``session_id`` (None if there is no such session).

    ``recording`` is the path of its recording (None or missing: store sources only).
    Raises RecordingError or OSError if the recording cannot be read.
    """
    sources = store.session_sources(session_id)
    if sources is None:
        return None
    session, commands, files = sources
    start = session.started_at
    found: dict[tuple[str, str], float] = {}

    def add(kind: str, offset: float, text: str) -> None:
        text = _indexed_text(text, masks)
        if not text:
            return
        key = (kind, text)
        offset = max(0.0, round(offset, 3))
        if key not in found or offset < found[key]:
            found[key] = offset

    typed = "queries" if session.protocol == "postgres" else "commands"
    for at, text in commands:
        add(typed, at - start, text)
    for at, path in files:
        add("files", at - start, path)
    size = 0
    in_stream = False
    if recording is not None:
        output, results, statements, size, in_stream = recording_entries(recording)
        for text, offset in displayed_lines(output, masks).items():
            found[("output", text)] = offset  # already masked: what a search reads back
        for text, offset in results.items():
            add("results", offset, text)
        for text, offset in statements.items():
            add("queries", offset, text)
    entries = sorted((kind, offset, text) for (kind, text), offset in found.items())
    return SessionEntries(entries, size, in_stream)
