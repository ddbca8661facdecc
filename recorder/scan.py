"""Reading records from a recording file, telling torn writes from damage.

``FileScanner.read_at(offset)`` returns the record there as one of:

* ``Item`` - a complete, well-formed record (a chunk record includes its zstd frame);
* ``Torn`` - the file ends inside a record whose bytes are consistent so far, or
  the rest of the file is zeros: what a crash or power cut leaves behind;
* ``Damaged`` - bytes that cannot be a record (wrong magic, a size field that
  disagrees with the record's own fields, a zstd frame of the wrong length...);
* ``None`` - end of file.

Every record's size is stated twice (the frame's size field and the record's own
fixed size or inner length), and a chunk's data length can be checked against the
zstd frame's block structure, so a single damaged byte is never mistaken for a torn
tail. ``resync`` finds the next plausible record after damage.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

from recorder.compress import MAX_CHUNK_RAW
from recorder.errors import RecordingFormatError
from recorder.frames import (
    FRAME_HEADER_SIZE,
    SKIPPABLE_MAGIC_BYTES,
    ChunkMeta,
    Record,
    expected_payload_size,
    max_payload_size,
    parse_payload,
    zstd_frame_length,
)

__all__ = ["Damaged", "FileScanner", "Item", "ScanResult", "Torn"]

MAX_DATA_LEN = MAX_CHUNK_RAW + (MAX_CHUNK_RAW >> 7) + 1024
_SEARCH_BLOCK = 1 << 20


@dataclass(frozen=True, slots=True)
class Item:
    """A complete record at ``offset``; ``end`` is where the next one starts."""

    offset: int
    end: int
    record: Record
    data: bytes | None = None
    """The chunk's zstd frame (chunk records read with ``with_data``)."""


@dataclass(frozen=True, slots=True)
class Torn:
    """The file ends inside a consistent record (or in zeros): a crash artefact."""

    offset: int
    reason: str


@dataclass(frozen=True, slots=True)
class Damaged:
    """Bytes at ``offset`` that cannot be a record."""

    offset: int
    reason: str


ScanResult = Item | Torn | Damaged | None


class FileScanner:
    """Random-access record reader over a seekable binary file."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.size = f.seek(0, io.SEEK_END)

    def pread(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer only at end of file)."""
        self._f.seek(offset)
        return self._f.read(max(0, min(n, self.size - offset)))

    def read_at(self, offset: int, with_data: bool = True) -> ScanResult:
        """Classify and parse the record at ``offset``; see the module docstring."""
        size = self.size
        if offset >= size:
            return None
        head = self.pread(offset, FRAME_HEADER_SIZE)
        if head[:4] != SKIPPABLE_MAGIC_BYTES[: len(head[:4])]:
            return self._not_a_record(offset, head)
        if len(head) < FRAME_HEADER_SIZE:
            return Torn(offset, f"file ends inside the record header at offset {offset}")
        (flen,) = struct.unpack_from("<I", head, 4)
        avail = size - offset - FRAME_HEADER_SIZE
        prefix = self.pread(offset + FRAME_HEADER_SIZE, min(flen, 64))
        if flen == 0:
            return Damaged(offset, f"empty record at offset {offset}")
        if not prefix:
            return Torn(offset, f"file ends after the record header at offset {offset}")
        try:
            expected = expected_payload_size(prefix)
            limit = max_payload_size(prefix[0])
        except RecordingFormatError as e:
            return Damaged(offset, f"{e} at offset {offset}")
        if (expected is not None and expected != flen) or flen > limit:
            return Damaged(
                offset,
                f"record at offset {offset} has size field {flen} but its contents "
                f"imply {expected}",
            )
        if flen > avail:
            return Torn(offset, f"file ends inside the record at offset {offset}")
        payload = prefix if len(prefix) == flen else self.pread(offset + FRAME_HEADER_SIZE, flen)
        try:
            record = parse_payload(payload)
        except RecordingFormatError as e:
            return Damaged(offset, f"{e} (record at offset {offset})")
        end = offset + FRAME_HEADER_SIZE + flen
        if not isinstance(record, ChunkMeta):
            return Item(offset, end, record)
        return self._chunk(offset, end, record, with_data)

    def _chunk(self, offset: int, end: int, meta: ChunkMeta, with_data: bool) -> ScanResult:
        if meta.data_len > MAX_DATA_LEN or meta.raw_len > MAX_CHUNK_RAW:
            return Damaged(offset, f"chunk {meta.seq} claims impossible sizes")
        avail = self.size - end
        if meta.data_len > avail:
            try:
                actual = zstd_frame_length(self.pread(end, avail))
            except RecordingFormatError as e:
                return Damaged(end, f"data of chunk {meta.seq}: {e}")
            if actual is None:
                return Torn(offset, f"file ends inside chunk {meta.seq} (offset {offset})")
            return Damaged(
                offset,
                f"chunk {meta.seq} says its data is {meta.data_len} bytes, "
                f"but its zstd frame is {actual}",
            )
        data = self.pread(end, meta.data_len) if with_data else None
        return Item(offset, end + meta.data_len, meta, data)

    def _not_a_record(self, offset: int, head: bytes) -> Torn | Damaged:
        if self._zeros_from(offset):
            return Torn(offset, f"{self.size - offset} zero bytes at the end (crash artefact)")
        return Damaged(offset, f"no record starts at offset {offset} (bytes {head[:4].hex()})")

    def _zeros_from(self, offset: int) -> bool:
        while offset < self.size:
            block = self.pread(offset, _SEARCH_BLOCK)
            if block.strip(b"\x00"):
                return False
            offset += len(block)
        return True

    def resync(self, offset: int) -> int | None:
        """Offset of the next readable (or torn) record after ``offset``, if any."""
        pos = offset + 1
        while pos < self.size:
            block = self.pread(pos, _SEARCH_BLOCK + 3)
            hit = block.find(SKIPPABLE_MAGIC_BYTES)
            if hit < 0:
                pos += max(1, len(block) - 3)
                continue
            candidate = pos + hit
            if isinstance(self.read_at(candidate, with_data=False), Item | Torn):
                return candidate
            pos = candidate + 1
        return None
