"""recover: close a recording whose writer died, so it reads and seeks like any other.

After a crash the file ends without trailer, index or footer, maybe in the middle
of a record. ``recover`` checks the whole chain (as ``verify`` does), cuts off only
a torn record at the very end, and appends a trailer marked *recovered* (signed if
a key is given, with the number of discarded bytes), the index and the footer.
``verify`` then reports ``truncated`` with ``end == "recovered"`` - distinguishable
from a clean close - and never ``altered``. A file with any other defect is left
untouched: recovery repairs crashes, it does not paper over tampering.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder.errors import RecordingFormatError, RecordingWriteError
from recorder.frames import (
    END_RECOVERED,
    MAX_REASON_BYTES,
    Footer,
    IndexRecord,
    Trailer,
    frame,
)
from recorder.scan import FileScanner
from recorder.verify import VerifyResult, Walk, result_of, walk

__all__ = ["RecoverResult", "recover"]


@dataclass(frozen=True, slots=True)
class RecoverResult:
    """What recovery did and the verdict on the file afterwards."""

    action: Literal["recovered", "indexed", "none"]
    final_hash: str
    """Hex chain hash of the last chunk (store it like a close's final hash)."""
    signature: str | None
    discarded_bytes: int
    result: VerifyResult


def recover(
    path: str | os.PathLike[str],
    signing_key: Ed25519PrivateKey | None = None,
    *,
    reason: str = "writer ended without closing (crash)",
    wall_clock: Callable[[], float] = time.time,
) -> RecoverResult:
    """Append a recovery trailer, index and footer to a crashed recording at ``path``.

    ``action`` in the result is ``"recovered"``, ``"indexed"`` (already closed but
    its index was missing) or ``"none"`` (already complete). Signatures are checked
    when ``signing_key`` is given (its public half) and the recovery trailer is then
    signed with it. Raises RecordingFormatError if the file is altered or has no
    header, RecordingWriteError if it cannot be written.
    """
    if len(reason.encode("utf-8")) > MAX_REASON_BYTES:
        raise ValueError(f"reason is longer than {MAX_REASON_BYTES} bytes")
    public = signing_key.public_key() if signing_key is not None else None
    try:
        with open(path, "r+b") as f:
            w = walk(FileScanner(f), public)
            if w.altered is not None or w.header is None:
                verdict = result_of(w)
                raise RecordingFormatError(
                    f"cannot recover {os.fspath(path)}: {verdict}; recovery only repairs "
                    "files cut short by a crash - keep this file as evidence"
                )
            if w.trailer is not None and w.footer_seen:
                signature = w.trailer.signature.hex() if w.trailer.signed else None
                return RecoverResult("none", w.prev_hash.hex(), signature, 0, result_of(w))
            size = f.seek(0, os.SEEK_END)
            trailer = w.trailer
            if trailer is None:
                keep = w.valid_end
                trailer = _recovery_trailer(w, signing_key, reason, wall_clock, size - keep)
                trailer_offset, tail = keep, frame(trailer.encode())
            else:  # closed, but the index or footer is missing or torn: rewrite both
                keep, trailer_offset, tail = w.trailer_end, w.trailer_offset, b""
            discarded = size - keep
            index_offset = keep + len(tail)
            tail += frame(IndexRecord(tuple(w.entries)).encode())
            tail += frame(Footer(index_offset, trailer_offset).encode())
            f.truncate(keep)
            f.seek(keep)
            f.write(tail)
            f.flush()
            os.fsync(f.fileno())
            f.seek(0)
            after = result_of(walk(FileScanner(f), public))
    except OSError as e:
        raise RecordingWriteError(f"cannot recover {os.fspath(path)}: {e}") from e
    action: Literal["recovered", "indexed"] = "recovered" if w.trailer is None else "indexed"
    sig = trailer.signature.hex() if trailer.signed else None
    return RecoverResult(action, w.prev_hash.hex(), sig, discarded, after)


def _recovery_trailer(
    w: Walk,
    signing_key: Ed25519PrivateKey | None,
    reason: str,
    wall_clock: Callable[[], float],
    discarded: int,
) -> Trailer:
    unsigned = Trailer(
        END_RECOVERED,
        signing_key is not None,
        w.last_seq,
        w.last_t_us,
        round(wall_clock() * 1_000_000),
        w.events,
        w.raw_bytes,
        discarded,
        reason,
        w.prev_hash,
        bytes(64),
    )
    if signing_key is None:
        return unsigned
    return replace(unsigned, signature=signing_key.sign(unsigned.signed_message()))
