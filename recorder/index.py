"""The chunk index: where each chunk starts, for O(log n) seeking.

A closed file ends with an index record (one ``IndexEntry`` per chunk: seq, first
event time, file offset) and a fixed-size footer pointing at it, so a reader finds
the index with one read from the end. A crashed (or damaged) file has no footer;
``scan_index`` rebuilds the same entries with a linear pass over the records,
reading chunk records but not their data, and skipping damage.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field

from recorder.frames import (
    FOOTER_FRAME_SIZE,
    ChunkMeta,
    Footer,
    HeaderRecord,
    IndexEntry,
    IndexRecord,
    Trailer,
)
from recorder.scan import Damaged, FileScanner, Item, Torn

__all__ = ["IndexEntry", "LoadedIndex", "find_start", "load_footer_index", "scan_index"]


@dataclass(slots=True)
class LoadedIndex:
    """Chunk entries plus what was learnt finding them."""

    entries: list[IndexEntry]
    trailer: Trailer | None = None
    from_footer: bool = False
    last_t_us: int = 0
    """Time of the last event in the last chunk (0 if no chunks)."""
    damage: list[Damaged] = field(default_factory=list)
    torn: Torn | None = None


def load_footer_index(scanner: FileScanner) -> LoadedIndex | None:
    """Index from the footer of a closed file, or None if there is no valid footer.

    The footer, index and trailer must line up exactly and the first and last
    entries must point at chunk records with the right seq; otherwise the caller
    falls back to ``scan_index``.
    """
    size = scanner.size
    if size < FOOTER_FRAME_SIZE:
        return None
    footer_item = scanner.read_at(size - FOOTER_FRAME_SIZE, with_data=False)
    if not isinstance(footer_item, Item) or not isinstance(footer_item.record, Footer):
        return None
    footer = footer_item.record
    index_item = scanner.read_at(footer.index_offset, with_data=False)
    trailer_item = scanner.read_at(footer.trailer_offset, with_data=False)
    if (
        not isinstance(index_item, Item)
        or not isinstance(index_item.record, IndexRecord)
        or index_item.end != footer_item.offset
        or not isinstance(trailer_item, Item)
        or not isinstance(trailer_item.record, Trailer)
        or trailer_item.end != index_item.offset
    ):
        return None
    entries = list(index_item.record.entries)
    last_t_us = 0
    for entry in (entries[:1] + entries[-1:]) if entries else []:
        chunk = scanner.read_at(entry.offset, with_data=False)
        if not (
            isinstance(chunk, Item)
            and isinstance(chunk.record, ChunkMeta)
            and chunk.record.seq == entry.seq
            and chunk.record.t_first_us == entry.t_first_us
        ):
            return None
        last_t_us = chunk.record.t_last_us
    return LoadedIndex(entries, trailer_item.record, True, last_t_us)


def scan_index(scanner: FileScanner, start: int = 0) -> LoadedIndex:
    """Rebuild the index with a linear scan from ``start``, tolerating damage."""
    loaded = LoadedIndex([])
    offset: int | None = start
    while offset is not None:
        item = scanner.read_at(offset, with_data=False)
        if item is None:
            break
        if isinstance(item, Torn):
            loaded.torn = item
            break
        if isinstance(item, Damaged):
            loaded.damage.append(item)
            offset = scanner.resync(offset)
            continue
        record = item.record
        if isinstance(record, ChunkMeta):
            loaded.entries.append(IndexEntry(record.seq, record.t_first_us, item.offset))
            loaded.last_t_us = max(loaded.last_t_us, record.t_last_us)
        elif isinstance(record, Trailer) and loaded.trailer is None:
            loaded.trailer = record
        elif isinstance(record, HeaderRecord) and item.offset != 0:
            loaded.damage.append(Damaged(item.offset, "a second header record"))
        offset = item.end
    return loaded


def find_start(entries: Sequence[IndexEntry], t_us: int) -> int:
    """Position of the first entry whose chunk can hold an event at or after ``t_us``.

    Chunks are in time order and a chunk's events lie between its first time and
    the next chunk's first time, so the answer is the last chunk starting strictly
    before ``t_us`` (equal start times may hide earlier events at exactly ``t_us``).
    """
    return max(0, bisect.bisect_left(entries, t_us, key=_first_us) - 1)


def _first_us(entry: IndexEntry) -> int:
    return entry.t_first_us
