"""repack: rewrite a closed recording into large chunks, once, for a much smaller file.

Why: a live recording cuts a chunk at least every second (``kill -9`` must lose at
most about a second), so an interactive session becomes thousands of tiny zstd
frames, each compressed alone and each paying a chunk record, a frame header and
checksum, plus a signed checkpoint every few seconds. Once the session is over
none of that is needed: ``repack`` copies the events into chunks of up to
``chunk_bytes`` (default 2 MiB raw, no time bound) compressed at a high zstd level
(default 19; it runs once, off the hot path), which lets zstd exploit the
redundancy across seconds - repeated screens, prompts, log lines.

The result is an ordinary version-1 recording: same session id, ``started_at``,
``key_id`` and host ``meta``, the identical event sequence (kinds, times to the
microsecond, bytes; events are neither split nor merged), a fresh hash chain,
checkpoints, a trailer (same end kind, reason, duration and close time) signed
with the same node key, an index and a footer. The header gains one top-level
JSON key, ``repacked`` (FORMAT.md §3 and §6), naming the final hash of the file it
replaced, so an auditor can tie the new file to the hash the host stored at close.

Safety, because the file is evidence:

* The original must verify ``intact`` under the node key (and ``expected_final_hash``
  if given); anything else raises RecordingFormatError and nothing is written. A
  file closed by ``recover()`` after a crash is left as it is (``"skipped"``).
* While copying, every chunk's chain hash is recomputed and must end at the hash
  ``verify`` accepted, so bytes changed between the check and the copy are not
  laundered into a freshly signed file.
* The copy is written to a temp file in the same directory and fsynced, then
  verified (``intact``, the chain it was written with) and decoded again: the
  digest of its event stream (count, every time, kind and payload) must equal the
  original's. Only then ``os.replace`` swaps it in and the directory is fsynced. On
  any failure the temp file is removed and the original is untouched.
* Killed at any step (SIGKILL, power cut), the original is whole or the verified
  copy has replaced it; a temp copy left behind is removed by the next repack of
  that file (``tests/recorder/test_repack_kill.py`` kills a real process at each step).
* An exclusive ``flock`` on the original serialises concurrent repacks; a reader
  that already has the old file open keeps reading the old inode.
* Memory is bounded by one new chunk, one old chunk and the compressor context
  (about 36 MiB at level 19), whatever the recording's length.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import json
import os
import secrets
import stat
import struct
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Literal

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder.codec import canonical_json, read_varint, write_varint
from recorder.compat import FORMAT_VERSION
from recorder.compress import MAX_CHUNK_RAW, decompress_chunk
from recorder.errors import RecordingFormatError, RecordingWriteError
from recorder.frames import (
    END_CLOSED,
    MAX_HEADER_JSON,
    ZERO_HASH,
    Checkpoint,
    ChunkMeta,
    Footer,
    HeaderRecord,
    IndexEntry,
    IndexRecord,
    Trailer,
    chunk_hash,
    frame,
    header_hash,
)
from recorder.scan import FileScanner, Item
from recorder.storage import FileSink
from recorder.verify import VerifyResult, Walk, result_of, verify, walk

__all__ = ["REPACK_KEY", "RepackNote", "RepackPolicy", "RepackResult", "repack", "repack_note"]

REPACK_KEY = "repacked"
"""Top-level header JSON key that marks a repacked recording (FORMAT.md §3)."""

_EVENT_DIGEST = struct.Struct("<QBI")
_LOCK_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class RepackPolicy:
    """How to rewrite: chunk size, zstd level, signing density, when it is worth it.

    The defaults were measured on ``bench/recording.py``: 2 MiB chunks at level 19
    give 7.6x (interactive) to 22x (``top``) where live chunking gives 1.5-2.6x;
    level 9 gets ~90 % of that gain at ~25x the speed (about 80 MB/s against 3 MB/s
    per core), so lower ``level`` on nodes that repack a lot of bulk output.
    """

    chunk_bytes: int = 2 << 20
    """Largest raw size of a new chunk (a seek decodes at most one chunk)."""
    level: int = 19
    """zstd level of the new chunks (1-22; decompression speed barely depends on it)."""
    checkpoint_chunks: int = 4
    """Sign a checkpoint after every this many new chunks (the trailer signs the end)."""
    min_saving: float | None = 0.01
    """Replace only if the copy is at least this fraction smaller; None: always.

    Repacking changes the final hash the host stores, so a copy that saves nothing
    is not worth the churn (and the original is kept)."""

    def __post_init__(self) -> None:
        if not 64 * 1024 <= self.chunk_bytes <= MAX_CHUNK_RAW // 2:
            raise ValueError(f"chunk_bytes must be 65536..{MAX_CHUNK_RAW // 2}")
        if not 1 <= self.level <= 22:
            raise ValueError("level must be 1..22")
        if self.checkpoint_chunks < 1:
            raise ValueError("checkpoint_chunks must be at least 1")
        if self.min_saving is not None and not 0.0 <= self.min_saving < 1.0:
            raise ValueError("min_saving must be None or in [0, 1)")


@dataclass(frozen=True, slots=True)
class RepackNote:
    """The ``repacked`` object of a repacked file's header: what it replaced."""

    from_final_hash: str
    """Final hash of the replaced file (what the host stored at close)."""
    from_chunks: int
    from_size: int
    at: float
    """Wall-clock time of the repack (Unix seconds)."""


@dataclass(frozen=True, slots=True)
class RepackResult:
    """What ``repack`` did; store ``final_hash``/``signature`` like a close's summary."""

    action: Literal["repacked", "skipped"]
    reason: str
    """Why it was skipped, or a one-line summary of the repack."""
    path: str
    final_hash: str
    """Hex final hash of the file now at ``path`` (new if repacked, else unchanged)."""
    signature: str | None
    """Hex trailer signature of the file now at ``path`` (None: unsigned recovery)."""
    old_final_hash: str
    old_signature: str | None
    key_id: str
    events: int
    chunks_before: int
    chunks_after: int
    bytes_before: int
    bytes_after: int
    result: VerifyResult
    """The verdict on the file now at ``path``."""


def repack_note(source: str | os.PathLike[str] | BinaryIO) -> RepackNote | None:
    """The header's repack note, or None if the recording was never repacked.

    Raises RecordingFormatError if the file has no readable header or a malformed
    note, OSError if it cannot be read. Does not verify anything.
    """
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            return repack_note(f)
    item = FileScanner(source).read_at(0, with_data=False)
    if not isinstance(item, Item) or not isinstance(item.record, HeaderRecord):
        raise RecordingFormatError("no readable header at the start of the recording")
    note = _header_fields(item.record).get(REPACK_KEY)
    if note is None:
        return None
    try:
        return RepackNote(
            str(note["from_final_hash"]),
            int(note["from_chunks"]),
            int(note["from_size"]),
            float(note["at"]),
        )
    except (TypeError, KeyError, ValueError) as e:
        raise RecordingFormatError(f"malformed {REPACK_KEY!r} note in the header: {e}") from e


def repack(
    path: str | os.PathLike[str],
    signing_key: Ed25519PrivateKey,
    *,
    policy: RepackPolicy | None = None,
    expected_final_hash: str | bytes | None = None,
    wall_clock: Callable[[], float] = time.time,
) -> RepackResult:
    """Rewrite the closed recording at ``path`` into large chunks, atomically, in place.

    ``signing_key`` is the node key the recording was signed with (its public half
    verifies the original; the copy is signed with it). ``expected_final_hash`` is
    the hash the host stored at close, if it wants that checked too.

    Returns ``action="repacked"`` with the new final hash and signature (store
    them; the old ones are in ``old_final_hash``/``old_signature``), or
    ``"skipped"`` with the reason: recovered after a crash, already repacked, an
    older format version, or no worthwhile saving. Raises RecordingFormatError if
    the original is not intact (truncated, altered, wrong key or final hash),
    RecordingWriteError if the copy cannot be written, fails its verification or
    the original changes meanwhile - in every error case the original is untouched
    and the temp file removed. Waits while another repack of the same file holds
    its lock, then finds it repacked and skips.
    """
    policy = policy if policy is not None else RepackPolicy()
    target = Path(path)
    try:
        for _ in range(_LOCK_ATTEMPTS):
            with open(target, "rb") as f:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                if not _same_file(f, target):
                    continue  # another repack replaced it while we waited: look again
                _remove_stale_temps(target)
                job = _Job(target, f, signing_key, policy, wall_clock)
                return job.run(expected_final_hash)
    except OSError as e:
        raise RecordingWriteError(f"cannot repack {target}: {e}") from e
    raise RecordingWriteError(f"cannot repack {target}: it keeps being replaced")


def _temp_glob(target: Path) -> str:
    return f".{glob.escape(target.name)}.repack-*.tmp"


def _remove_stale_temps(target: Path) -> None:
    """Delete copies left by a repack of ``target`` that was killed (SIGKILL, power cut).

    Called with the lock on the file now at ``target`` held: a live repack of it would
    hold that lock, so every temp copy of it found now belongs to a dead process. The
    original was never touched by one (``os.replace`` is the only step that changes it).
    """
    for stale in target.parent.glob(_temp_glob(target)):
        try:
            stale.unlink()
        except FileNotFoundError:
            pass


def _same_file(f: BinaryIO, target: Path) -> bool:
    """True if ``target`` still names the open file ``f``, unmodified since it was opened."""
    a, b = os.fstat(f.fileno()), os.stat(target)
    return all(
        getattr(a, k) == getattr(b, k) for k in ("st_dev", "st_ino", "st_size", "st_mtime_ns")
    )


def _header_fields(record: HeaderRecord) -> dict[str, Any]:
    try:
        fields: Any = json.loads(record.json.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RecordingFormatError(f"header JSON is malformed: {e}") from e
    if not isinstance(fields, dict):
        raise RecordingFormatError("header JSON is not an object")
    return fields


class _EventDigest:
    """SHA-256 over every event's (time µs, kind, length, payload), chunk by chunk.

    Independent of how events are grouped into chunks, so equal digests prove the
    copy holds the original's event sequence exactly.
    """

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.events = 0
        self.last_us = 0

    def update(self, raw: bytes, t_us: int) -> None:
        view, pos, end = memoryview(raw), 0, len(raw)
        while pos < end:
            dt = read_varint(view, pos)
            if dt is None or dt[1] >= end:
                raise RecordingFormatError("chunk content ends inside an event")
            kind, pos = view[dt[1]], dt[1] + 1
            got = read_varint(view, pos)
            if got is None or got[1] + got[0] > end:
                raise RecordingFormatError("chunk content ends inside an event")
            length, pos = got
            t_us += dt[0]
            self.hash.update(_EVENT_DIGEST.pack(t_us, kind, length))
            self.hash.update(view[pos : pos + length])
            pos += length
            self.events += 1
        self.last_us = t_us


class _Job:
    """One repack: the locked original, the temp copy, and the state of the new chain."""

    def __init__(
        self,
        target: Path,
        f: BinaryIO,
        key: Ed25519PrivateKey,
        policy: RepackPolicy,
        wall_clock: Callable[[], float],
    ) -> None:
        self.target, self.f, self.key, self.policy = target, f, key, policy
        self.wall_clock = wall_clock
        self.scanner = FileScanner(f)
        self.temp = target.with_name(f".{target.name}.repack-{secrets.token_hex(4)}.tmp")
        self.sink: FileSink | None = None
        self.compressor: zstandard.ZstdCompressor | None = None
        # the copy being written
        self.buf = bytearray()
        self.buf_first_us = self.buf_last_us = self.buf_events = 0
        self.seq = self.offset = self.events = self.raw_bytes = self.since_checkpoint = 0
        self.prev = ZERO_HASH
        self.index_times = array("Q")
        self.index_offsets = array("Q")
        self.signature = ""

    # -- the whole job -------------------------------------------------------------------

    def run(self, expected_final_hash: str | bytes | None) -> RepackResult:
        w = walk(self.scanner, self.key.public_key())
        before = result_of(w, expected_final_hash)
        if before.status == "truncated" and before.recovered and w.trailer is not None:
            sig = w.trailer.signature.hex() if w.trailer.signed else None
            return self._skip(w, before, sig, "closed by recover() after a crash; left as is")
        if before.status != "intact" or w.trailer is None or w.header is None:
            raise RecordingFormatError(
                f"refusing to repack {self.target}: {before}; only recordings that verify "
                "intact are repacked - keep this file as evidence"
            )
        old_sig = w.trailer.signature.hex()
        first = self.scanner.read_at(0, with_data=False)
        if not isinstance(first, Item) or not isinstance(first.record, HeaderRecord):
            raise RecordingWriteError("the original changed while it was being read")
        fields = _header_fields(first.record)
        if REPACK_KEY in fields:
            return self._skip(w, before, old_sig, "already repacked")
        if first.record.version != FORMAT_VERSION:
            why = f"format version {first.record.version}; repack writes {FORMAT_VERSION}"
            return self._skip(w, before, old_sig, why)
        size = self.scanner.size
        fields[REPACK_KEY] = {
            "from_final_hash": w.prev_hash.hex(),
            "from_chunks": w.last_seq,
            "from_size": size,
            "at": self.wall_clock(),
        }
        body = canonical_json(fields)
        if len(body) > MAX_HEADER_JSON:
            return self._skip(w, before, old_sig, "the header would exceed its size limit")
        new_header = HeaderRecord(FORMAT_VERSION, body, ZERO_HASH)
        try:
            old = self._copy(new_header, first.record, first.end, w.trailer)
            if old.events != w.events or old.last_us != w.last_t_us:
                raise RecordingWriteError("the original changed while it was being read")
            saving = self.policy.min_saving
            if saving is not None and self.offset > size * (1.0 - saving):
                self._remove_temp()
                why = f"no worthwhile saving: the copy is {self.offset} bytes, the file {size}"
                return self._skip(w, before, old_sig, why)
            after = self._check_copy(old, w.prev_hash, w.header.session_id)
            if not _same_file(self.f, self.target):
                raise RecordingWriteError("the original changed while it was being repacked")
            os.replace(self.temp, self.target)
        except BaseException:
            self._remove_temp()
            raise
        _fsync_dir(self.target, after.final_hash or "")
        return RepackResult(
            action="repacked",
            reason=f"{w.last_seq} chunks, {size} bytes -> {self.seq} chunks, "
            f"{self.offset} bytes ({self.offset / size:.0%} of the original)",
            path=str(self.target),
            final_hash=after.final_hash or "",
            signature=self.signature,
            old_final_hash=w.prev_hash.hex(),
            old_signature=old_sig,
            key_id=w.header.key_id,
            events=w.events,
            chunks_before=w.last_seq,
            chunks_after=self.seq,
            bytes_before=size,
            bytes_after=self.offset,
            result=after,
        )

    def _skip(
        self, w: Walk, before: VerifyResult, signature: str | None, reason: str
    ) -> RepackResult:
        final = before.final_hash or ""
        return RepackResult(
            action="skipped",
            reason=reason,
            path=str(self.target),
            final_hash=final,
            signature=signature,
            old_final_hash=final,
            old_signature=signature,
            key_id=w.header.key_id if w.header is not None else "",
            events=w.events,
            chunks_before=w.last_seq,
            chunks_after=w.last_seq,
            bytes_before=self.scanner.size,
            bytes_after=self.scanner.size,
            result=before,
        )

    # -- copying -------------------------------------------------------------------------

    def _copy(
        self, new_header: HeaderRecord, old_header: HeaderRecord, offset: int, old_end: Trailer
    ) -> _EventDigest:
        """Write the whole copy to the temp file; return the original's event digest.

        The original's chain is recomputed on the way: it must end at the final hash
        that ``verify`` accepted, or the bytes changed after they were checked.
        """
        self.compressor = zstandard.ZstdCompressor(
            level=self.policy.level,
            write_checksum=True,
            write_content_size=True,
            write_dict_id=False,
        )
        self.sink = FileSink.create(self.temp)
        _copy_mode(self.f, self.temp)
        header = replace(new_header, hash=header_hash(new_header))
        self.prev = header.hash
        self._write(frame(header.encode()))
        self._checkpoint(0)
        digest = _EventDigest()
        old_prev = old_header.hash
        while True:
            item = self.scanner.read_at(offset)
            if not isinstance(item, Item):
                raise RecordingWriteError("the original changed while it was being read")
            rec = item.record
            if isinstance(rec, ChunkMeta):
                if item.data is None or chunk_hash(old_prev, rec, item.data) != rec.hash:
                    raise RecordingWriteError("the original changed while it was being read")
                old_prev = rec.hash
                self._add(rec, decompress_chunk(item.data, rec.raw_len), digest)
            elif isinstance(rec, Trailer):
                break
            offset = item.end
        if old_prev != old_end.hash:
            raise RecordingWriteError("the original changed while it was being read")
        if self.buf:
            self._cut()
        self._close(old_end)
        return digest

    def _add(self, meta: ChunkMeta, raw: bytes, digest: _EventDigest) -> None:
        """Append one old chunk's events; only its first event's time delta changes.

        An old chunk's first event has delta 0 (it counts from the chunk's
        ``t_first_us``); inside a larger chunk it must count from the previous
        event instead, so that one varint is rewritten and the rest copied as is.
        """
        digest.update(raw, meta.t_first_us)
        if self.buf and len(self.buf) + len(raw) > self.policy.chunk_bytes:
            self._cut()
        first = read_varint(raw, 0)
        if first is None:
            raise RecordingFormatError(f"chunk {meta.seq} has no events")
        if self.buf:
            self.buf += write_varint(meta.t_first_us - self.buf_last_us)
        else:
            self.buf_first_us = meta.t_first_us
            self.buf += b"\x00"
        self.buf += memoryview(raw)[first[1] :]
        self.buf_last_us = meta.t_last_us
        self.buf_events += meta.n_events

    def _cut(self) -> None:
        assert self.compressor is not None  # noqa: S101  set by _copy() first
        data: bytes = self.compressor.compress(bytes(self.buf))
        self.seq += 1
        meta = ChunkMeta(
            self.seq,
            self.buf_first_us,
            self.buf_last_us,
            self.buf_events,
            len(self.buf),
            len(data),
            ZERO_HASH,
        )
        meta = replace(meta, hash=chunk_hash(self.prev, meta, data))
        self.index_times.append(meta.t_first_us)
        self.index_offsets.append(self.offset)
        self._write(frame(meta.encode()) + data)
        self.prev = meta.hash
        self.events += self.buf_events
        self.raw_bytes += len(self.buf)
        self.buf = bytearray()
        self.buf_events = 0
        self.since_checkpoint += 1
        if self.since_checkpoint >= self.policy.checkpoint_chunks:
            self._checkpoint(meta.t_last_us)

    def _checkpoint(self, t_us: int) -> None:
        """Sign the chain so far; ``wall_us`` is when this copy was signed."""
        wall_us = round(self.wall_clock() * 1_000_000)
        unsigned = Checkpoint(self.seq, t_us, wall_us, self.prev, b"")
        signed = replace(unsigned, signature=self.key.sign(unsigned.signed_message()))
        self._write(frame(signed.encode()))
        self.since_checkpoint = 0

    def _close(self, old: Trailer) -> None:
        """Trailer (end, reason, duration, close time kept), index, footer; fsync."""
        unsigned = Trailer(
            END_CLOSED,
            True,
            self.seq,
            old.t_end_us,
            old.wall_us,
            self.events,
            self.raw_bytes,
            0,
            old.reason,
            self.prev,
            b"",
        )
        trailer = replace(unsigned, signature=self.key.sign(unsigned.signed_message()))
        self.signature = trailer.signature.hex()
        trailer_frame = frame(trailer.encode())
        entries = tuple(
            IndexEntry(i + 1, t, off)
            for i, (t, off) in enumerate(zip(self.index_times, self.index_offsets, strict=True))
        )
        index_frame = frame(IndexRecord(entries).encode())
        footer = Footer(self.offset + len(trailer_frame), self.offset)
        self._write(trailer_frame + index_frame + frame(footer.encode()))
        assert self.sink is not None  # noqa: S101  set by _copy() first
        self.sink.sync()
        self.sink.close()

    def _write(self, data: bytes) -> None:
        assert self.sink is not None  # noqa: S101  set by _copy() first
        self.sink.write(data)
        self.offset += len(data)

    # -- checking the copy -----------------------------------------------------------------

    def _check_copy(self, old: _EventDigest, old_final: bytes, session_id: str) -> VerifyResult:
        """Verify the temp file and compare its event stream with the original's."""
        with open(self.temp, "rb") as f:
            after = verify(
                f,
                self.key.public_key(),
                expected_final_hash=self.prev,
                expected_session_id=session_id,
            )
            if after.status != "intact" or after.last_seq != self.seq:
                raise RecordingWriteError(f"the repacked copy does not verify: {after}")
            note = repack_note(f)
            new = _EventDigest()
            scanner, offset = FileScanner(f), 0
            while (item := scanner.read_at(offset)) is not None:
                if not isinstance(item, Item):
                    raise RecordingWriteError(f"the repacked copy is unreadable: {item}")
                rec = item.record
                if isinstance(rec, ChunkMeta) and item.data is not None:
                    new.update(decompress_chunk(item.data, rec.raw_len), rec.t_first_us)
                offset = item.end
        if (
            new.events != old.events
            or new.last_us != old.last_us
            or new.hash.digest() != old.hash.digest()
            or note is None
            or note.from_final_hash != old_final.hex()
        ):
            raise RecordingWriteError(
                f"the repacked copy of {self.target} does not hold the same events "
                f"({new.events} against {old.events}); the original is kept"
            )
        return after

    def _remove_temp(self) -> None:
        """Best effort: close and delete the temp file (its name marks a leftover)."""
        if self.sink is not None:
            try:
                self.sink.close()
            except OSError:
                pass
        try:
            os.unlink(self.temp)
        except OSError:
            pass


def _copy_mode(original: BinaryIO, temp: Path) -> None:
    """Give the copy the original's permissions and, where allowed, its owner."""
    st = os.fstat(original.fileno())
    os.chmod(temp, stat.S_IMODE(st.st_mode))
    mine = os.stat(temp)
    if (mine.st_uid, mine.st_gid) != (st.st_uid, st.st_gid):
        try:
            os.chown(temp, st.st_uid, st.st_gid)
        except PermissionError:
            pass  # not root: the copy stays ours, as a recording we wrote would be


def _fsync_dir(target: Path, final_hash: str) -> None:
    """Make the rename durable; the new file is already in place if this fails."""
    try:
        fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise RecordingWriteError(
            f"repacked {target} (new final hash {final_hash}) but could not sync its "
            f"directory: {e}; after a power cut the original may be back"
        ) from e
