"""RecordingReader: header, index, seeking and events of a recording, either way.

Reading is tolerant: a damaged chunk is skipped (and noted in ``damage``) and the
rest still reads; a crashed file without footer is indexed by a linear scan. The
reader does not check hashes or signatures - that is ``verify``'s job - so use it
to play or export, and ``verify`` to decide whether to trust.

Chunks are independent, so a recording also reads *backwards* (newest events
first, chunk by chunk from the end): the last screen of a session or its last N
events cost a few chunks, not the whole file. A live recording reads the same way
- from a path (what is on disk when it is opened), or from its writer's
``LiveTail`` (the file's chunks plus the events still in the writer's memory).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import BinaryIO

from recorder.codec import decode_chunk
from recorder.compress import decompress_chunk
from recorder.errors import RecordingFormatError
from recorder.events import Event
from recorder.frames import END_CLOSED, ChunkMeta, HeaderRecord, IndexEntry, Trailer
from recorder.header import Header, parse_header
from recorder.index import LoadedIndex, find_start, load_footer_index, scan_index
from recorder.scan import Damaged, FileScanner, Item
from recorder.storage import Storage
from recorder.writer import LiveTail

__all__ = ["RecordingReader"]


class RecordingReader:
    """An open recording. Use ``RecordingReader.open(path)`` as a context manager."""

    def __init__(
        self, f: BinaryIO, *, owns_file: bool = False, tail: LiveTail | None = None
    ) -> None:
        """Read the header and index of the recording in the seekable file ``f``.

        With ``tail`` (from ``RecordingWriter.live_tail()``, ``f`` opened after it was
        taken) the index is the tail's chunks and the events still in the writer's
        memory come last: exactly the events recorded when the tail was taken.
        Raises RecordingFormatError if the file does not start with a readable
        header (RecordingVersionError if it is from a newer format version).
        """
        self._f = f
        self._owns = owns_file
        self._scanner = FileScanner(f)
        first = self._scanner.read_at(0)
        if not isinstance(first, Item) or not isinstance(first.record, HeaderRecord):
            why = first.reason if isinstance(first, Damaged) else "it is empty or cut short"
            raise RecordingFormatError(
                f"not a readable bastion recording: no header at the start ({why})"
            )
        self._header_record = first.record
        self.header: Header = parse_header(first.record)
        self._pending: list[Event] = []
        if tail is not None:
            self._loaded: LoadedIndex = LoadedIndex(list(tail.chunks), last_t_us=tail.last_us)
        else:
            loaded = load_footer_index(self._scanner)
            self._loaded = loaded if loaded is not None else scan_index(self._scanner, first.end)
        self.damage: list[Damaged] = list(self._loaded.damage)
        """Damaged regions found so far (by the index scan or while reading events)."""
        if tail is not None and tail.pending:
            try:
                self._pending = decode_chunk(tail.pending, tail.pending_first_us)
            except RecordingFormatError as e:  # the writer's own bytes: never expected
                self._note(Damaged(self._scanner.size, f"the writer's pending events: {e}"))

    @classmethod
    def open(
        cls, source: str | os.PathLike[str] | BinaryIO, *, tail: LiveTail | None = None
    ) -> RecordingReader:
        """Open a recording from a path or a seekable binary file object.

        ``tail``: read a live recording as its writer saw it (see ``__init__``).
        """
        if isinstance(source, str | os.PathLike):
            f = open(source, "rb")  # owned by the reader
            try:
                return cls(f, owns_file=True, tail=tail)
            except BaseException:
                f.close()
                raise
        return cls(source, tail=tail)

    @classmethod
    def from_storage(cls, storage: Storage, location: str) -> RecordingReader:
        """Open the recording at ``location`` in ``storage``."""
        f = storage.open_read(location)
        try:
            return cls(f, owns_file=True)
        except BaseException:
            f.close()
            raise

    def close(self) -> None:
        """Close the file if the reader opened it."""
        if self._owns:
            self._f.close()

    def __enter__(self) -> RecordingReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- metadata ---------------------------------------------------------------------

    @property
    def index(self) -> Sequence[IndexEntry]:
        """One entry per chunk (seq, first event time, offset), in file order."""
        return self._loaded.entries

    @property
    def indexed_from_footer(self) -> bool:
        """True if the index came from the footer (a closed file), not a scan."""
        return self._loaded.from_footer

    @property
    def trailer(self) -> Trailer | None:
        """The trailer of a closed or recovered file; None after a crash."""
        return self._loaded.trailer

    @property
    def complete(self) -> bool:
        """True if the writer closed the file itself (not a crash, not recovered)."""
        return self.trailer is not None and self.trailer.end == END_CLOSED

    @property
    def duration(self) -> float:
        """Seconds from the start to the trailer (or to the last event after a crash)."""
        if self.trailer is not None:
            return self.trailer.t_end_us / 1_000_000
        return self._loaded.last_t_us / 1_000_000

    # -- events ------------------------------------------------------------------------

    def events(self, start: float = 0.0, end: float | None = None) -> Iterator[Event]:
        """Events with ``start <= time`` (and ``time < end`` if given), in order.

        Seeks with a binary search of the index, then decodes chunk by chunk;
        damaged chunks are skipped and recorded in ``damage``. A live reader's
        pending events (see ``__init__``) come after the last chunk.
        """
        entries = self._loaded.entries
        first = find_start(entries, math.floor(start * 1_000_000))
        for events in self._chunks_from(first, end):
            for event in events:
                if event.time < start:
                    continue
                if end is not None and event.time >= end:
                    return
                yield event

    def _chunks_from(self, first: int, end: float | None) -> Iterator[list[Event]]:
        for entry in self._loaded.entries[first:]:
            if end is not None and entry.time >= end:
                return
            yield self.chunk_events(entry)
        if self._pending:
            yield self._pending

    def chunks_newest_first(self) -> Iterator[list[Event]]:
        """The events chunk by chunk from the end: newest chunk first, each in time order.

        A live reader's pending events come first (as one list). A damaged chunk is
        skipped and noted in ``damage`` (compare its length to notice the gap); every
        readable event is yielded once. Reads only as many chunks as are consumed.
        """
        if self._pending:
            yield list(self._pending)
        for entry in reversed(self._loaded.entries):
            events = self.chunk_events(entry)
            if events:
                yield events

    def events_newest_first(self) -> Iterator[Event]:
        """Every readable event, newest first: the reverse of ``events()``.

        Stop early to get the last events of a long recording cheaply.
        """
        for events in self.chunks_newest_first():
            yield from reversed(events)

    def last_events(self, n: int) -> list[Event]:
        """The last ``n`` readable events, in time order (fewer if there are fewer)."""
        if n <= 0:
            return []
        newest: list[Event] = []
        for event in self.events_newest_first():
            newest.append(event)
            if len(newest) == n:
                break
        newest.reverse()
        return newest

    def chunk_events(self, entry: IndexEntry) -> list[Event]:
        """Decode the events of one chunk; [] (and a ``damage`` note) if it is damaged."""
        item = self._scanner.read_at(entry.offset)
        if not isinstance(item, Item) or not isinstance(item.record, ChunkMeta):
            reason = item.reason if isinstance(item, Damaged) else "no chunk at indexed offset"
            self._note(Damaged(entry.offset, f"chunk {entry.seq}: {reason}"))
            return []
        meta, data = item.record, item.data
        try:
            if meta.seq != entry.seq or data is None:
                raise RecordingFormatError(f"index says seq {entry.seq}, file has {meta.seq}")
            events = decode_chunk(decompress_chunk(data, meta.raw_len), meta.t_first_us)
            if len(events) != meta.n_events:
                raise RecordingFormatError(
                    f"{len(events)} events decoded, chunk record says {meta.n_events}"
                )
        except RecordingFormatError as e:
            self._note(Damaged(entry.offset, f"chunk {entry.seq}: {e}"))
            return []
        return events

    def _note(self, damaged: Damaged) -> None:
        if damaged not in self.damage:
            self.damage.append(damaged)
