"""On-disk records: the skippable-frame envelope, each record's layout, and hashing.

A recording is a sequence of zstd frames. Every record the recorder adds is a zstd
*skippable frame* (magic ``0x184D2A5B``, so stock ``zstd -dc`` skips it) whose
payload starts with a one-byte record type; a chunk record is followed directly by
one standard zstd frame holding the chunk's events. This module is sans-IO: it
builds and parses record payloads from bytes and raises only RecordingFormatError
on bad input. Layouts are documented byte by byte in ``FORMAT.md``.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from recorder.errors import RecordingFormatError

__all__ = [
    "DOMAIN_CHECKPOINT",
    "DOMAIN_TRAILER",
    "END_CLOSED",
    "END_RECOVERED",
    "FILE_MAGIC",
    "FLAG_SIGNED",
    "FOOTER_FRAME_SIZE",
    "FOOTER_MAGIC",
    "FRAME_HEADER_SIZE",
    "MAX_HEADER_JSON",
    "MAX_INDEX_ENTRIES",
    "MAX_REASON_BYTES",
    "SKIPPABLE_MAGIC",
    "SKIPPABLE_MAGIC_BYTES",
    "ZERO_HASH",
    "ZSTD_MAGIC",
    "Checkpoint",
    "ChunkMeta",
    "Footer",
    "HeaderRecord",
    "IndexEntry",
    "IndexRecord",
    "Record",
    "Trailer",
    "chunk_hash",
    "expected_payload_size",
    "frame",
    "header_hash",
    "max_payload_size",
    "parse_payload",
    "zstd_frame_length",
]

SKIPPABLE_MAGIC = 0x184D2A5B
SKIPPABLE_MAGIC_BYTES = struct.pack("<I", SKIPPABLE_MAGIC)
ZSTD_MAGIC = 0xFD2FB528
FRAME_HEADER_SIZE = 8
FILE_MAGIC = b"BASTREC\x00"
FOOTER_MAGIC = b"BASTREC\xff"
ZERO_HASH = bytes(32)

T_HEADER, T_CHUNK, T_CHECKPOINT, T_TRAILER, T_INDEX, T_FOOTER = b"HCKTIF"
END_CLOSED = 1
END_RECOVERED = 2
FLAG_SIGNED = 1

MAX_HEADER_JSON = 1 << 20
MAX_REASON_BYTES = 4096
MAX_INDEX_ENTRIES = 1 << 22

_CHUNK_HASHED = struct.Struct("<BIQQIII")
_CHUNK = struct.Struct("<BIQQIII32s")
_CHECKPOINT_SIGNED = struct.Struct("<BIQq32s")
_CHECKPOINT = struct.Struct("<BIQq32s64s")
_HEADER_FIXED = struct.Struct("<B8sHI")
_TRAILER_FIXED = struct.Struct("<BBBIQqQQQH")
_INDEX_ENTRY = struct.Struct("<IQQ")
_FOOTER = struct.Struct("<BQQ8s")
FOOTER_FRAME_SIZE = FRAME_HEADER_SIZE + _FOOTER.size

_DOMAIN_HEADER = b"bastrec header\x00"  # frozen for all versions
_DOMAIN_CHUNK = b"bastrec/1 chunk\x00"
DOMAIN_CHECKPOINT = b"bastrec/1 checkpoint\x00"
DOMAIN_TRAILER = b"bastrec/1 trailer\x00"


def frame(payload: bytes) -> bytes:
    """Wrap a record payload in a zstd skippable frame."""
    return SKIPPABLE_MAGIC_BYTES + struct.pack("<I", len(payload)) + payload


@dataclass(frozen=True, slots=True)
class HeaderRecord:
    """Record 'H' (chain seq 0): format version, JSON metadata, chain hash H0."""

    version: int
    json: bytes
    hash: bytes

    def signed_part(self) -> bytes:
        """The payload bytes covered by H0 (everything but the hash)."""
        return _HEADER_FIXED.pack(T_HEADER, FILE_MAGIC, self.version, len(self.json)) + self.json

    def encode(self) -> bytes:
        """The record payload."""
        return self.signed_part() + self.hash


@dataclass(frozen=True, slots=True)
class ChunkMeta:
    """Record 'C': describes the zstd frame that follows it, with its chain hash."""

    seq: int
    t_first_us: int
    t_last_us: int
    n_events: int
    raw_len: int
    data_len: int
    hash: bytes

    def hashed_part(self) -> bytes:
        """The payload bytes covered by the chunk hash (everything but the hash)."""
        return _CHUNK_HASHED.pack(
            T_CHUNK,
            self.seq,
            self.t_first_us,
            self.t_last_us,
            self.n_events,
            self.raw_len,
            self.data_len,
        )

    def encode(self) -> bytes:
        """The record payload."""
        return self.hashed_part() + self.hash


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Record 'K': an Ed25519 signature over the chain hash at ``seq``."""

    seq: int
    t_us: int
    wall_us: int
    hash: bytes
    signature: bytes

    def signed_message(self) -> bytes:
        """The exact bytes the signature covers (domain + payload minus signature)."""
        return DOMAIN_CHECKPOINT + self._body()

    def _body(self) -> bytes:
        return _CHECKPOINT_SIGNED.pack(T_CHECKPOINT, self.seq, self.t_us, self.wall_us, self.hash)

    def encode(self) -> bytes:
        """The record payload."""
        return self._body() + self.signature


@dataclass(frozen=True, slots=True)
class Trailer:
    """Record 'T': how the recording ended, totals, final hash and signature."""

    end: int
    signed: bool
    last_seq: int
    t_end_us: int
    wall_us: int
    events: int
    raw_bytes: int
    discarded_bytes: int
    reason: str
    hash: bytes
    signature: bytes

    def signed_message(self) -> bytes:
        """The exact bytes the signature covers (domain + payload minus signature)."""
        return DOMAIN_TRAILER + self._body()

    def _body(self) -> bytes:
        reason = self.reason.encode("utf-8")
        fixed = _TRAILER_FIXED.pack(
            T_TRAILER,
            self.end,
            FLAG_SIGNED if self.signed else 0,
            self.last_seq,
            self.t_end_us,
            self.wall_us,
            self.events,
            self.raw_bytes,
            self.discarded_bytes,
            len(reason),
        )
        return fixed + reason + self.hash

    def encode(self) -> bytes:
        """The record payload."""
        return self._body() + self.signature


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """Where chunk ``seq`` starts: its first event time and file offset."""

    seq: int
    t_first_us: int
    offset: int

    @property
    def time(self) -> float:
        """First event time of the chunk, in seconds since session start."""
        return self.t_first_us / 1_000_000


@dataclass(frozen=True, slots=True)
class IndexRecord:
    """Record 'I': one entry per chunk, in seq order."""

    entries: tuple[IndexEntry, ...]

    def encode(self) -> bytes:
        """The record payload."""
        parts = [struct.pack("<BI", T_INDEX, len(self.entries))]
        parts.extend(_INDEX_ENTRY.pack(e.seq, e.t_first_us, e.offset) for e in self.entries)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Footer:
    """Record 'F': always the last 33 bytes of a closed file; points at index and trailer."""

    index_offset: int
    trailer_offset: int

    def encode(self) -> bytes:
        """The record payload."""
        return _FOOTER.pack(T_FOOTER, self.index_offset, self.trailer_offset, FOOTER_MAGIC)


Record = HeaderRecord | ChunkMeta | Checkpoint | Trailer | IndexRecord | Footer

_FIXED_SIZES = {
    T_CHUNK: _CHUNK.size,
    T_CHECKPOINT: _CHECKPOINT.size,
    T_FOOTER: _FOOTER.size,
}


def expected_payload_size(prefix: bytes) -> int | None:
    """Payload size implied by a record's own fields, from a prefix of its payload.

    Returns None when the prefix is too short to tell. Raises RecordingFormatError
    for an unknown record type. Comparing this with the frame's size field lets a
    reader tell a torn write (consistent but short) from a damaged length.
    """
    if not prefix:
        return None
    rtype = prefix[0]
    if rtype in _FIXED_SIZES:
        return _FIXED_SIZES[rtype]
    if rtype == T_HEADER:
        if len(prefix) < _HEADER_FIXED.size:
            return None
        json_len: int = struct.unpack_from("<I", prefix, 11)[0]
        return _HEADER_FIXED.size + json_len + 32
    if rtype == T_TRAILER:
        if len(prefix) < _TRAILER_FIXED.size:
            return None
        reason_len: int = struct.unpack_from("<H", prefix, _TRAILER_FIXED.size - 2)[0]
        return _TRAILER_FIXED.size + reason_len + 32 + 64
    if rtype == T_INDEX:
        if len(prefix) < 5:
            return None
        count: int = struct.unpack_from("<I", prefix, 1)[0]
        return 5 + count * _INDEX_ENTRY.size
    raise RecordingFormatError(f"unknown record type {rtype:#04x}")


def max_payload_size(rtype: int) -> int:
    """Upper bound of a payload of this type (rejects absurd sizes before reading)."""
    if rtype in _FIXED_SIZES:
        return _FIXED_SIZES[rtype]
    if rtype == T_HEADER:
        return _HEADER_FIXED.size + MAX_HEADER_JSON + 32
    if rtype == T_TRAILER:
        return _TRAILER_FIXED.size + MAX_REASON_BYTES + 96
    if rtype == T_INDEX:
        return 5 + MAX_INDEX_ENTRIES * _INDEX_ENTRY.size
    raise RecordingFormatError(f"unknown record type {rtype:#04x}")


def parse_payload(payload: bytes) -> Record:
    """Parse one record payload (the skippable frame's content).

    Raises RecordingFormatError if the payload is not exactly a valid record.
    """
    expected = expected_payload_size(payload)
    if expected is None or expected != len(payload):
        raise RecordingFormatError(
            f"record of type {payload[:1]!r} has {len(payload)} bytes, expected {expected}"
        )
    rtype = payload[0]
    if rtype == T_CHUNK:
        _, seq, t_first, t_last, n, raw_len, data_len, digest = _CHUNK.unpack(payload)
        if seq == 0 or t_last < t_first or n == 0 or raw_len == 0 or data_len == 0:
            raise RecordingFormatError(f"chunk record {seq} has impossible fields")
        return ChunkMeta(seq, t_first, t_last, n, raw_len, data_len, digest)
    if rtype == T_CHECKPOINT:
        _, seq, t_us, wall_us, digest, sig = _CHECKPOINT.unpack(payload)
        return Checkpoint(seq, t_us, wall_us, digest, sig)
    if rtype == T_HEADER:
        _, magic, version, json_len = _HEADER_FIXED.unpack_from(payload)
        if magic != FILE_MAGIC:
            raise RecordingFormatError("header record lacks the BASTREC magic")
        json_end = _HEADER_FIXED.size + json_len
        return HeaderRecord(version, payload[_HEADER_FIXED.size : json_end], payload[json_end:])
    if rtype == T_TRAILER:
        return _parse_trailer(payload)
    if rtype == T_INDEX:
        count = (len(payload) - 5) // _INDEX_ENTRY.size
        entries = tuple(
            IndexEntry(*_INDEX_ENTRY.unpack_from(payload, 5 + i * _INDEX_ENTRY.size))
            for i in range(count)
        )
        return IndexRecord(entries)
    _, index_offset, trailer_offset, magic = _FOOTER.unpack(payload)
    if magic != FOOTER_MAGIC:
        raise RecordingFormatError("footer record lacks its magic")
    return Footer(index_offset, trailer_offset)


def _parse_trailer(payload: bytes) -> Trailer:
    fields = _TRAILER_FIXED.unpack_from(payload)
    _, end, flags, last_seq, t_end, wall, events, raw_bytes, discarded, reason_len = fields
    if end not in (END_CLOSED, END_RECOVERED) or flags & ~FLAG_SIGNED:
        raise RecordingFormatError(f"trailer has unknown end kind {end} or flags {flags}")
    pos = _TRAILER_FIXED.size
    try:
        reason = payload[pos : pos + reason_len].decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordingFormatError("trailer reason is not UTF-8") from e
    pos += reason_len
    return Trailer(
        end,
        bool(flags & FLAG_SIGNED),
        last_seq,
        t_end,
        wall,
        events,
        raw_bytes,
        discarded,
        reason,
        payload[pos : pos + 32],
        payload[pos + 32 : pos + 96],
    )


def header_hash(header: HeaderRecord) -> bytes:
    """H0: SHA-256 over a domain string and the header payload without its hash.

    The header layout and this hash are the same in every format version, so any
    reader can tell a genuine newer-version file from a damaged version field.
    """
    return hashlib.sha256(_DOMAIN_HEADER + header.signed_part()).digest()


def chunk_hash(prev: bytes, meta: ChunkMeta, data_frame: bytes | memoryview) -> bytes:
    """H(seq) = SHA-256(domain || H(seq-1) || chunk payload minus hash || zstd frame)."""
    h = hashlib.sha256(_DOMAIN_CHUNK)
    h.update(prev)
    h.update(meta.hashed_part())
    h.update(data_frame)
    return h.digest()


def zstd_frame_length(buf: bytes | memoryview) -> int | None:
    """Length of the standard zstd frame at the start of ``buf`` by walking its blocks.

    Returns None if ``buf`` ends before the frame does. Raises RecordingFormatError if
    the bytes are not a zstd frame. Used to tell a torn write from a damaged length.
    """
    if len(buf) < 5:
        if bytes(buf) != struct.pack("<I", ZSTD_MAGIC)[: len(buf)]:
            raise RecordingFormatError("data does not start with the zstd frame magic")
        return None
    if struct.unpack_from("<I", buf, 0)[0] != ZSTD_MAGIC:
        raise RecordingFormatError("data does not start with the zstd frame magic")
    fhd = buf[4]
    if fhd & 0x08:
        raise RecordingFormatError("zstd frame header has the reserved bit set")
    single_segment = bool(fhd & 0x20)
    fcs_size = (0 if not single_segment else 1, 2, 4, 8)[fhd >> 6]
    pos = 5 + (0 if single_segment else 1) + (0, 1, 2, 4)[fhd & 3] + fcs_size
    while True:
        if pos + 3 > len(buf):
            return None
        block = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16
        last, btype, size = block & 1, (block >> 1) & 3, block >> 3
        if btype == 3:
            raise RecordingFormatError("zstd block of reserved type")
        if size > 1 << 17:
            raise RecordingFormatError("zstd block larger than 128 KiB")
        pos += 3 + (1 if btype == 1 else size)
        if last:
            break
    pos += 4 if fhd & 0x04 else 0
    return pos if pos <= len(buf) else None
