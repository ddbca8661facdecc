"""verify: is a recording intact, truncated by a crash, or altered - and where.

One sequential pass re-derives everything the writer committed to: the header hash
(chain link 0), each chunk's chain hash over the previous hash, its record and its
zstd frame, the events inside each chunk, every checkpoint and trailer signature,
the totals in the trailer, and the index. The first inconsistency makes the file
``altered`` and is located (chunk seq, session time, file offset) with a reason.

A file that simply stops - no trailer, every chunk present chained and valid, at
most a torn record at the very end - is ``truncated``: what ``kill -9`` or a power
cut leaves. Chunks after the last signed checkpoint are then hash-chained but not
yet signed (``signed_seq`` says how far signatures reach). A file closed by
``recover()`` is ``truncated`` with ``end == "recovered"``; only the writer's own
close makes a file ``intact``. Truncation by an attacker looks like a crash unless
the host passes the final hash it stored at close (``expected_final_hash``), which
also catches a file swapped for another validly signed recording.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import BinaryIO, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from recorder.codec import decode_chunk
from recorder.compress import decompress_chunk
from recorder.errors import RecordingFormatError
from recorder.frames import (
    END_CLOSED,
    Checkpoint,
    ChunkMeta,
    Footer,
    HeaderRecord,
    IndexEntry,
    IndexRecord,
    Trailer,
    chunk_hash,
    header_hash,
)
from recorder.header import Header, parse_header
from recorder.scan import Damaged, FileScanner, Item, Torn

__all__ = ["Status", "VerifyResult", "verify"]

Status = Literal["intact", "truncated", "altered"]


@dataclass(frozen=True)
class VerifyResult:
    """The verdict on one recording; ``str(result)`` is a one-line explanation."""

    status: Status
    reason: str
    session_id: str | None
    last_seq: int
    """Last chain link found valid (0 = header only, -1 = no header)."""
    last_time: float
    """Session time of the last event in the valid part."""
    signed_seq: int
    """Last chain link covered by a valid live signature (-1 = none)."""
    final_hash: str | None
    """Hex chain hash at ``last_seq``."""
    end: Literal["closed", "recovered"] | None = None
    end_reason: str | None = None
    bad_seq: int | None = None
    """altered: first chain link (0 = header) that cannot be trusted."""
    bad_time: float | None = None
    bad_offset: int | None = None
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True unless altered (a truncated file is trustworthy up to ``last_seq``)."""
        return self.status != "altered"

    @property
    def recovered(self) -> bool:
        """True if the file was closed by ``recover()`` after a crash."""
        return self.end == "recovered"

    def __str__(self) -> str:
        where = ""
        if self.status == "altered":
            where = f" at seq {self.bad_seq}" if self.bad_seq is not None else ""
            where += f" (t={self.bad_time:.3f}s)" if self.bad_time is not None else ""
            where += f" offset {self.bad_offset}" if self.bad_offset is not None else ""
        return f"{self.status}{where}: {self.reason}"


class _Altered(Exception):
    def __init__(self, reason: str, seq: int | None, t_us: int | None, offset: int | None):
        super().__init__(reason)
        self.reason, self.seq, self.t_us, self.offset = reason, seq, t_us, offset


@dataclass
class Walk:
    """State after a verifying pass (also what ``recover`` builds on)."""

    header: Header | None = None
    last_seq: int = -1
    prev_hash: bytes = b""
    last_t_us: int = 0
    signed_seq: int = -1
    events: int = 0
    raw_bytes: int = 0
    entries: list[IndexEntry] = field(default_factory=list)
    trailer: Trailer | None = None
    trailer_offset: int = -1
    trailer_end: int = -1
    index_offset: int = -1
    footer_seen: bool = False
    valid_end: int = 0
    torn: Torn | None = None
    altered: _Altered | None = None
    notes: list[str] = field(default_factory=list)


def walk(
    scanner: FileScanner,
    public_key: Ed25519PublicKey | None,
    expected_session_id: str | None = None,
) -> Walk:
    """Check the whole file in order; signatures are skipped if ``public_key`` is None."""
    w = Walk()
    try:
        _walk(scanner, w, public_key, expected_session_id)
    except _Altered as e:
        w.altered = e
    return w


def _walk(
    scanner: FileScanner, w: Walk, key: Ed25519PublicKey | None, expected_sid: str | None
) -> None:
    first = scanner.read_at(0)
    if first is None or isinstance(first, Torn):
        w.torn = first or Torn(0, "the file is empty")
        return
    offset = _header(first, w, expected_sid)
    while True:
        item = scanner.read_at(offset)
        if item is None:
            return
        if w.footer_seen:
            raise _Altered("data after the footer", None, None, offset)
        if isinstance(item, Torn):
            w.torn = item
            return
        if isinstance(item, Damaged):
            raise _Altered(item.reason, w.last_seq + 1, w.last_t_us, item.offset)
        rec = item.record
        if isinstance(rec, ChunkMeta):
            _chunk(scanner, w, item, rec)
        elif isinstance(rec, Checkpoint):
            _checkpoint(w, item, rec, key)
        elif isinstance(rec, Trailer):
            _trailer(w, item, rec, key)
        elif isinstance(rec, IndexRecord):
            _index(w, item, rec)
        elif isinstance(rec, Footer):
            _footer(w, item, rec)
        else:
            raise _Altered("a second header record", w.last_seq + 1, w.last_t_us, item.offset)
        offset = w.valid_end = item.end


def _header(first: Item | Damaged, w: Walk, expected_sid: str | None) -> int:
    """Check the header record and start the chain from it; returns where the next starts."""
    if isinstance(first, Damaged) or not isinstance(first.record, HeaderRecord):
        why = first.reason if isinstance(first, Damaged) else "first record is not a header"
        raise _Altered(f"no valid header: {why}", 0, 0, 0)
    record = first.record
    try:
        w.header = parse_header(record)
    except RecordingFormatError as e:
        if type(e) is not RecordingFormatError:
            raise
        raise _Altered(f"header unreadable: {e}", 0, 0, 0) from e
    if header_hash(record) != record.hash:
        raise _Altered("header altered (its hash does not match)", 0, 0, 0)
    if expected_sid is not None and w.header.session_id != expected_sid:
        raise _Altered(
            f"header mismatch: the file is session {w.header.session_id!r}, "
            f"expected {expected_sid!r}",
            0,
            0,
            0,
        )
    w.last_seq, w.prev_hash, w.valid_end = 0, record.hash, first.end
    return first.end


def _footer(w: Walk, item: Item, footer: Footer) -> None:
    if footer.index_offset != w.index_offset or footer.trailer_offset != w.trailer_offset:
        raise _Altered("footer points at the wrong index or trailer", None, None, item.offset)
    w.footer_seen = True


def _chunk(scanner: FileScanner, w: Walk, item: Item, meta: ChunkMeta) -> None:
    if w.trailer is not None:
        raise _Altered("chunk after the trailer", meta.seq, meta.t_first_us, item.offset)
    expected = w.last_seq + 1
    if meta.seq != expected:
        raise _Altered(
            _seq_problem(scanner, item, meta.seq, expected), expected, w.last_t_us, item.offset
        )
    if item.data is None:
        raise _Altered("chunk data missing", meta.seq, meta.t_first_us, item.offset)
    if chunk_hash(w.prev_hash, meta, item.data) != meta.hash:
        raise _Altered("chunk altered (hash mismatch)", meta.seq, meta.t_first_us, item.offset)
    if meta.t_first_us < w.last_t_us:
        raise _Altered("chunk time goes backwards", meta.seq, meta.t_first_us, item.offset)
    try:
        events = decode_chunk(decompress_chunk(item.data, meta.raw_len), meta.t_first_us)
    except RecordingFormatError as e:
        raise _Altered(
            f"chunk content is invalid: {e}", meta.seq, meta.t_first_us, item.offset
        ) from e
    if (
        len(events) != meta.n_events
        or round(events[0].time * 1e6) != meta.t_first_us
        or round(events[-1].time * 1e6) != meta.t_last_us
    ):
        raise _Altered(
            "chunk record disagrees with its events", meta.seq, meta.t_first_us, item.offset
        )
    w.last_seq, w.prev_hash, w.last_t_us = meta.seq, meta.hash, meta.t_last_us
    w.events += meta.n_events
    w.raw_bytes += meta.raw_len
    w.entries.append(IndexEntry(meta.seq, meta.t_first_us, item.offset))


def _seq_problem(scanner: FileScanner, item: Item, found: int, expected: int) -> str:
    if found < expected:
        return f"chunk seq {found} appears again after seq {expected - 1} (reordered or duplicated)"
    offset: int | None = item.end
    while offset is not None:
        later = scanner.read_at(offset, with_data=False)
        if not isinstance(later, Item):
            break
        if isinstance(later.record, ChunkMeta) and later.record.seq == expected:
            return (
                f"chunks reordered: expected seq {expected}, found {found} "
                f"(seq {expected} comes later)"
            )
        offset = later.end
    return f"chunk seq {expected} is missing (found seq {found} instead)"


def _signature_ok(key: Ed25519PublicKey | None, signature: bytes, message: bytes) -> bool:
    if key is None:
        return True
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def _unsigned_span(w: Walk, what: str, offset: int) -> _Altered:
    first = w.signed_seq + 1
    t_us = w.entries[first - 1].t_first_us if 0 < first <= len(w.entries) else w.last_t_us
    return _Altered(
        f"{what}: links {first}..{w.last_seq} (or the signed record itself) were altered",
        first,
        t_us,
        offset,
    )


def _checkpoint(w: Walk, item: Item, rec: Checkpoint, key: Ed25519PublicKey | None) -> None:
    if w.trailer is not None:
        raise _Altered("checkpoint after the trailer", None, None, item.offset)
    if rec.seq != w.last_seq:
        raise _Altered(
            f"checkpoint for seq {rec.seq} placed after seq {w.last_seq}",
            min(rec.seq, w.last_seq) + 1,
            w.last_t_us,
            item.offset,
        )
    if rec.seq <= w.signed_seq:
        raise _Altered(
            f"a second checkpoint for seq {rec.seq} (the writer signs each link once)",
            None,
            None,
            item.offset,
        )
    if rec.hash != w.prev_hash:
        raise _unsigned_span(w, f"checkpoint at seq {rec.seq} signs a different chain", item.offset)
    if not _signature_ok(key, rec.signature, rec.signed_message()):
        raise _unsigned_span(
            w,
            f"checkpoint signature at seq {rec.seq} does not verify (wrong public key?)",
            item.offset,
        )
    if rec.t_us < w.last_t_us:
        raise _Altered(
            "checkpoint time precedes the events it signs", rec.seq, rec.t_us, item.offset
        )
    w.signed_seq = rec.seq


def _trailer(w: Walk, item: Item, rec: Trailer, key: Ed25519PublicKey | None) -> None:
    if w.trailer is not None:
        raise _Altered("a second trailer", None, None, item.offset)
    if rec.last_seq != w.last_seq:
        raise _Altered(
            f"trailer says the last seq is {rec.last_seq}, the file has {w.last_seq}",
            min(rec.last_seq, w.last_seq) + 1,
            w.last_t_us,
            item.offset,
        )
    if rec.hash != w.prev_hash:
        raise _unsigned_span(w, "trailer signs a different chain", item.offset)
    if rec.end == END_CLOSED and not rec.signed:
        raise _Altered("a closed recording's trailer is unsigned", None, None, item.offset)
    if rec.signed and not _signature_ok(key, rec.signature, rec.signed_message()):
        raise _unsigned_span(
            w, "trailer signature does not verify (wrong public key?)", item.offset
        )
    if rec.events != w.events or rec.raw_bytes != w.raw_bytes or rec.t_end_us < w.last_t_us:
        raise _Altered("trailer totals do not match the chunks", None, None, item.offset)
    if rec.end == END_CLOSED:
        w.signed_seq = w.last_seq
    w.trailer, w.trailer_offset, w.trailer_end = rec, item.offset, item.end


def _index(w: Walk, item: Item, rec: IndexRecord) -> None:
    if w.trailer is None or w.index_offset >= 0:
        raise _Altered("index record out of place", None, None, item.offset)
    if list(rec.entries) != w.entries:
        bad = next(
            (a.seq for a, b in zip(rec.entries, w.entries, strict=False) if a != b),
            min(len(rec.entries), len(w.entries)) + 1,
        )
        raise _Altered("index does not match the chunks", bad, None, item.offset)
    w.index_offset = item.offset


def verify(
    source: str | os.PathLike[str] | BinaryIO,
    public_key: Ed25519PublicKey,
    expected_final_hash: str | bytes | None = None,
    expected_session_id: str | None = None,
) -> VerifyResult:
    """Verify a recording against the node's public key.

    ``expected_final_hash`` is the ``final_hash`` the host stored when the writer
    closed (hex or bytes); ``expected_session_id`` the session the file should be.
    Raises OSError if the file cannot be read and RecordingVersionError if it is
    from a newer format version; every defect in the file is a result, not an error.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return verify(f, public_key, expected_final_hash, expected_session_id)
    w = walk(FileScanner(source), public_key, expected_session_id)
    return result_of(w, expected_final_hash)


def result_of(w: Walk, expected_final_hash: str | bytes | None = None) -> VerifyResult:
    """Turn a finished walk into a VerifyResult."""
    final = w.prev_hash.hex() if w.prev_hash else None
    trailer = w.trailer
    end: Literal["closed", "recovered"] | None = None
    if trailer is not None:
        end = "closed" if trailer.end == END_CLOSED else "recovered"
    notes = list(w.notes)
    if w.torn is not None:
        notes.append(w.torn.reason)
    if trailer is not None and not w.footer_seen:
        notes.append("no index/footer after the trailer (run recover to add them)")
    if trailer is not None and trailer.discarded_bytes:
        notes.append(f"recovery discarded {trailer.discarded_bytes} bytes of a torn record")
    base = VerifyResult(
        status="truncated",
        reason="",
        session_id=w.header.session_id if w.header else None,
        last_seq=w.last_seq,
        last_time=w.last_t_us / 1e6,
        signed_seq=w.signed_seq,
        final_hash=final,
        end=end,
        end_reason=trailer.reason if trailer else None,
        notes=tuple(notes),
    )
    if w.altered is not None:
        a = w.altered
        return replace(
            base,
            status="altered",
            reason=a.reason,
            bad_seq=a.seq,
            bad_time=None if a.t_us is None else a.t_us / 1e6,
            bad_offset=a.offset,
        )
    if expected_final_hash is not None:
        want = (
            expected_final_hash.hex()
            if isinstance(expected_final_hash, bytes)
            else expected_final_hash.lower()
        )
        if trailer is None:
            return replace(
                base,
                status="altered",
                reason="the file has no trailer but the host recorded a final hash: "
                "its end was cut off",
                bad_seq=w.last_seq + 1,
                bad_time=w.last_t_us / 1e6,
                bad_offset=w.valid_end,
            )
        if final != want:
            return replace(
                base,
                status="altered",
                reason=f"final hash {final} does not match the expected {want} "
                "(a different or rewritten recording)",
            )
    if w.header is None:
        return replace(base, reason="the file ends before its header is complete")
    span = f"complete up to seq {w.last_seq} at t={w.last_t_us / 1e6:.3f}s"
    if trailer is None:
        return replace(
            base,
            reason=f"no trailer (the writer stopped without closing, e.g. a crash): {span}, "
            f"signed up to seq {w.signed_seq}",
        )
    if end == "recovered":
        return replace(
            base,
            reason=f"ended by a crash and closed by recovery ({trailer.reason}): {span}, "
            f"live-signed up to seq {w.signed_seq}",
        )
    return replace(
        base,
        status="intact",
        reason=f"closed ({trailer.reason}); {w.last_seq} chunks, all hashes and signatures valid",
    )
