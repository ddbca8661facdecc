"""RecordingWriter: events in, a durable, compressed, tamper-evident file out.

How the requirements map to the code:

* **Independent chunks.** Events are encoded into a small per-session buffer; when
  it reaches ``chunk_bytes`` or its oldest event is ``flush_interval`` old (checked
  by ``tick()``), the buffer is compressed in one shot into its own zstd frame and
  written after a chunk record carrying its chain hash.
* **Crash safety.** Every chunk is handed to the OS with an unbuffered write as it
  is cut, so ``kill -9`` loses at most the pending buffer: ``flush_interval`` plus
  the host's tick period. ``fsync`` runs every ``fsync_interval`` and at close.
* **Tamper evidence.** Chunks extend a SHA-256 chain rooted at the header; signed
  checkpoints are written every ``checkpoint_interval`` seconds or
  ``checkpoint_chunks`` chunks, and ``close()`` writes a signed trailer and returns
  the final hash and signature for the host's database.
* **Fail closed.** Any I/O error raises RecordingWriteError from the call that hit
  it, and every later call raises too.
* **A free-space reserve.** A host may pass ``room``: after each chunk is written it
  says whether the storage is still above the host's reserve; once it is not, event
  calls raise RecordingStorageLow and ``close()`` seals what was recorded into the
  reserve, so a full disk ends a session with a verifiable file and no unrecorded
  byte delivered (one check per chunk, never per event).
* **Memory.** No compressor per writer (one per thread, shared); the buffer is
  dropped after each chunk, so an idle writer holds a few KiB.

The writer does no I/O in the background: the host calls ``tick()`` every 0.25-0.5 s
(``run_ticker`` does it from an asyncio task). Calls are serialised by a lock, so
``tick()`` may also run in a worker thread; the periodic fsync runs outside that
lock, so a slow disk never blocks the event calls of the session.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder.codec import (
    MAX_EVENT_BYTES,
    encode_record,
    exit_payload,
    resize_payload,
    structured_payload,
    structured_prefix,
)
from recorder.compress import MAX_CHUNK_RAW, compress_chunk
from recorder.errors import RecordingClosedError, RecordingStorageLow, RecordingWriteError
from recorder.events import EventKind, JSONValue
from recorder.frames import (
    END_CLOSED,
    MAX_REASON_BYTES,
    ZERO_HASH,
    Checkpoint,
    ChunkMeta,
    Footer,
    IndexEntry,
    IndexRecord,
    Trailer,
    chunk_hash,
    frame,
)
from recorder.header import build_header
from recorder.keys import key_id as fingerprint
from recorder.storage import FileSink, RecordingSink, Storage, check_session_id

__all__ = ["LiveTail", "RecordingSummary", "RecordingWriter", "WriterPolicy", "run_ticker"]

_MIN_PIECE = 4096


@dataclass(frozen=True, slots=True)
class WriterPolicy:
    """Chunking, durability and signing bounds (all times in seconds)."""

    chunk_bytes: int = 256 * 1024
    """Cut a chunk when this many raw (encoded) bytes are pending."""
    flush_interval: float = 1.0
    """Cut a chunk when its oldest event is this old (checked by tick())."""
    fsync_interval: float | None = 5.0
    """fsync at most this often while data is unsynced; None: only at close."""
    checkpoint_interval: float = 5.0
    """Sign a checkpoint this long after the last one if chunks were written since."""
    checkpoint_chunks: int = 64
    """... or after this many chunks, whichever comes first."""
    level: int = 3
    """zstd compression level."""

    def __post_init__(self) -> None:
        if not 1024 <= self.chunk_bytes <= MAX_CHUNK_RAW // 2:
            raise ValueError(f"chunk_bytes must be 1024..{MAX_CHUNK_RAW // 2}")
        if self.flush_interval <= 0 or self.checkpoint_interval <= 0:
            raise ValueError("flush_interval and checkpoint_interval must be positive")
        if self.checkpoint_chunks < 1:
            raise ValueError("checkpoint_chunks must be at least 1")


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    """What the host stores about a closed recording (final hash and signature)."""

    session_id: str
    location: str
    final_hash: str
    """Hex SHA-256 chain hash of the last chunk; pass to verify() as expected."""
    signature: str
    """Hex Ed25519 signature of the trailer (which contains final_hash)."""
    key_id: str
    last_seq: int
    events: int
    raw_bytes: int
    """Uncompressed size of all chunk contents (what ``zstd -dc`` outputs)."""
    stored_bytes: int
    """Size of the file."""
    duration: float


@dataclass(frozen=True, slots=True)
class LiveTail:
    """A consistent view of a live recording for a late reader (see ``live_tail``).

    The file holds exactly the chunks in ``chunks`` (plus header and checkpoints);
    every later event is in ``pending`` (encoded records, decode with
    ``decode_chunk(pending, pending_first_us)``) or not written yet.
    """

    chunks: tuple[IndexEntry, ...]
    pending: bytes
    pending_first_us: int
    last_us: int
    """Time of the last event recorded so far, in microseconds since the start."""


class RecordingWriter:
    """Writes one session's recording; see the module docstring for the guarantees."""

    __slots__ = (
        "_buf",
        "_chunk_first_us",
        "_chunk_events",
        "_chunks_since_checkpoint",
        "_clock",
        "_error",
        "_events",
        "_index_offsets",
        "_index_times",
        "_key",
        "_key_id",
        "_last_checkpoint",
        "_last_sync",
        "_last_us",
        "_lock",
        "_offset",
        "_pending_since",
        "_policy",
        "_prev_hash",
        "_raw_bytes",
        "_room",
        "_seq",
        "_session_id",
        "_sink",
        "_short",
        "_sink_closed",
        "_summary",
        "_sync_lock",
        "_t0",
        "_unsynced",
        "_wall_clock",
    )

    def __init__(
        self,
        sink: RecordingSink,
        session_id: str,
        signing_key: Ed25519PrivateKey,
        key_id: str,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        policy: WriterPolicy,
        room: Callable[[], str | None] | None = None,
    ) -> None:
        """Use ``create()``; this only sets fields."""
        self._room = room
        self._short: RecordingStorageLow | None = None
        self._sink = sink
        self._session_id = session_id
        self._key = signing_key
        self._key_id = key_id
        self._clock = clock
        self._wall_clock = wall_clock
        self._policy = policy
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()  # held while the sink is fsynced or closed
        self._sink_closed = False
        self._t0 = clock()
        self._buf = bytearray()
        self._chunk_first_us = 0
        self._chunk_events = 0
        self._pending_since = 0.0
        self._last_us = 0
        self._seq = 0
        self._prev_hash = ZERO_HASH
        self._offset = 0
        self._events = 0
        self._raw_bytes = 0
        self._index_times = array("Q")
        self._index_offsets = array("Q")
        self._chunks_since_checkpoint = 0
        self._last_checkpoint = self._t0
        self._last_sync = self._t0
        self._unsynced = False
        self._error: RecordingWriteError | None = None
        self._summary: RecordingSummary | None = None

    @classmethod
    def create(
        cls,
        target: Storage | str | os.PathLike[str],
        session_id: str,
        meta: Mapping[str, object],
        signing_key: Ed25519PrivateKey,
        key_id: str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        policy: WriterPolicy | None = None,
        room: Callable[[], str | None] | None = None,
    ) -> RecordingWriter:
        """Create a recording and write (and sync) its header and first checkpoint.

        ``target`` is a Storage (file placed by it) or the path of a new file.
        ``meta`` is the host's JSON-able session metadata. ``clock`` is monotonic
        (event times); ``wall_clock`` gives the recorded start time. ``room`` is
        asked after each chunk is written: a message means the storage is below the
        host's reserve (see RecordingStorageLow).

        Raises ValueError for a bad session id or metadata, RecordingWriteError if
        the file cannot be created or written (the session must not start).
        """
        check_session_id(session_id)
        kid = key_id if key_id is not None else fingerprint(signing_key)
        policy = policy if policy is not None else WriterPolicy()
        started_at = wall_clock()
        header = build_header(session_id, started_at, kid, meta)
        try:
            if isinstance(target, str | os.PathLike):
                sink: RecordingSink = FileSink.create(target)
            else:
                sink = target.create(session_id, started_at)
        except OSError as e:
            raise RecordingWriteError(
                f"cannot create the recording for session {session_id}: {e}; "
                "check that the recording directory exists, is writable and has free space"
            ) from e
        writer = cls(sink, session_id, signing_key, kid, clock, wall_clock, policy, room)
        writer._prev_hash = header.hash
        with writer._lock:
            try:
                writer._write(frame(header.encode()))
                writer._checkpoint()
                writer._sync()
            except RecordingWriteError:
                writer._close_sink()
                raise
        return writer

    # -- properties ----------------------------------------------------------------

    @property
    def session_id(self) -> str:
        """The session this recording belongs to."""
        return self._session_id

    @property
    def location(self) -> str:
        """Where the recording is stored (storage location or path)."""
        return self._sink.location

    @property
    def closed(self) -> bool:
        """True after close(), abort() or a write error."""
        return self._summary is not None or self._error is not None

    @property
    def pending_bytes(self) -> int:
        """Raw bytes buffered and not yet handed to the OS."""
        return len(self._buf)

    @property
    def last_event_time(self) -> float:
        """Time of the last recorded event, in seconds since the start (for live fan-out)."""
        return self._last_us / 1_000_000

    def live_tail(self) -> LiveTail:
        """Chunks written so far and the unflushed events, taken atomically.

        For a live watcher: read the chunks from the file, decode the pending bytes,
        and every event recorded after this call is new. Read-only.
        """
        with self._lock:
            return LiveTail(
                chunks=tuple(self._index_entries()),
                pending=bytes(self._buf),
                pending_first_us=self._chunk_first_us,
                last_us=self._last_us,
            )

    @property
    def elapsed(self) -> float:
        """Seconds since the recording started, on the writer's clock."""
        return self._clock() - self._t0

    # -- events ----------------------------------------------------------------------

    def output(self, data: bytes) -> None:
        """Record bytes sent to the user's terminal."""
        self._stream(EventKind.OUTPUT, data)

    def input(self, data: bytes) -> None:
        """Record bytes the user sent."""
        self._stream(EventKind.INPUT, data)

    def resize(self, cols: int, rows: int) -> None:
        """Record the terminal size (also call once at the start of a PTY session)."""
        self._event(EventKind.RESIZE, resize_payload(cols, rows))

    def marker(self, label: str) -> None:
        """Record a labelled point in time."""
        self._event(EventKind.MARKER, label.encode("utf-8"))

    def exit(self, status: int | None = None, signal: str | None = None) -> None:
        """Record the end of the remote process (exit status and/or signal name)."""
        self._event(EventKind.EXIT, exit_payload(status, signal))

    def event(self, name: str, payload: JSONValue, chunk: int | None = None) -> int:
        """Record a structured event (e.g. ``query``/``result``) with a JSON payload.

        Returns the seq of the chunk the event went into. With ``chunk``, the event
        is recorded only if it goes into that chunk, else nothing is recorded and 0 is
        returned: a payload that refers to an earlier event of the same chunk (a
        reader starting at any chunk finds what it refers to) is checked under the
        writer's lock, so a ``tick()`` cutting the chunk meanwhile cannot split them.
        Raises ValueError if the payload is not JSON-serialisable or over 1 MiB.
        """
        return self._event(EventKind.STRUCTURED, structured_payload(name, payload), chunk)

    def encoded_event(self, name: str, data: bytes, chunk: int | None = None) -> int:
        """``event`` with the payload already in ``canonical_json`` bytes.

        For a hot caller that builds the canonical encoding itself (the PostgreSQL
        relay's ``pg.query``, ``bastion.pg.query_log.query_json``): the bytes are
        stored as given, so they must be exactly what ``canonical_json`` makes of the
        payload. Returns and raises as ``event``.
        """
        return self._event(EventKind.STRUCTURED, structured_prefix(name) + data, chunk)

    def _stream(self, kind: EventKind, data: bytes) -> None:
        with self._lock:
            self._check_open()
            if self._short is not None:
                raise self._short
            t_us = self._now_us()
            size = len(data)
            if 0 < size <= MAX_EVENT_BYTES and size + len(self._buf) < self._policy.chunk_bytes:
                self._append(kind, data, t_us)  # the common case (a keystroke, an echo): one piece
                return
            view = memoryview(data)
            while view:
                room = self._policy.chunk_bytes - len(self._buf)
                piece = view[: min(max(room, _MIN_PIECE), MAX_EVENT_BYTES)]
                self._append(kind, piece, t_us)
                view = view[len(piece) :]
                if len(self._buf) >= self._policy.chunk_bytes:
                    self._cut()

    def _event(self, kind: EventKind, payload: bytes, chunk: int | None = None) -> int:
        """Append one whole event; the seq of its chunk (0: not ``chunk``, nothing done)."""
        if len(payload) > MAX_EVENT_BYTES:
            raise ValueError(f"event payload of {len(payload)} bytes exceeds {MAX_EVENT_BYTES}")
        with self._lock:
            self._check_open()
            if self._short is not None:
                raise self._short
            into = self._seq + 1
            if chunk is not None and chunk != into:
                return 0
            self._append(kind, payload, self._now_us())
            if len(self._buf) >= self._policy.chunk_bytes:
                self._cut()
            return into

    def _now_us(self) -> int:
        return max(round((self._clock() - self._t0) * 1_000_000), self._last_us)

    def _append(self, kind: EventKind, payload: bytes | memoryview, t_us: int) -> None:
        if not self._buf:
            self._chunk_first_us = t_us
            self._pending_since = self._clock()
            dt = 0
        else:
            dt = t_us - self._last_us
        self._buf += encode_record(kind, dt, payload)
        self._last_us = t_us
        self._chunk_events += 1
        self._events += 1

    # -- periodic driver -----------------------------------------------------------------

    def tick(self, now: float | None = None) -> None:
        """Cut, checkpoint and fsync as the time bounds require. Call every 0.25-0.5 s.

        ``now`` is a reading of the writer's clock (default: read it). A no-op on a
        closed writer; raises RecordingWriteError on a failed one. The fsync runs
        after the writer's lock is released, so other calls proceed meanwhile.
        """
        with self._lock:
            if self._summary is not None:
                return
            self._check_open()
            if self._short is not None:
                raise self._short
            now = self._clock() if now is None else now
            policy = self._policy
            if self._buf and now - self._pending_since >= policy.flush_interval:
                self._cut()
            if (
                self._chunks_since_checkpoint
                and now - self._last_checkpoint >= policy.checkpoint_interval
            ):
                self._checkpoint()
            due = (
                self._unsynced
                and policy.fsync_interval is not None
                and now - self._last_sync >= policy.fsync_interval
            )
            if due:
                self._unsynced = False
                self._last_sync = now
        if due:
            self._sync_unlocked()

    def _sync_unlocked(self) -> None:
        with self._sync_lock:
            if self._sink_closed:
                return
            try:
                self._sink.sync()
                return
            except OSError as e:
                error = e
        with self._lock:
            failure = self._error if self._error is not None else self._fail(error, "fsync")
        raise failure

    def flush(self) -> None:
        """Write the pending buffer now as a chunk (e.g. before a planned shutdown)."""
        with self._lock:
            self._check_open()
            if self._buf:
                self._cut(check_room=False)

    # -- closing ---------------------------------------------------------------------

    def close(self, reason: str = "closed") -> RecordingSummary:
        """Write the last chunk, the signed trailer, the index and footer; fsync; close.

        Returns the summary to store in the database. Calling it again returns the
        same summary. Raises RecordingWriteError if the writer failed or the final
        writes fail (the file then verifies as truncated).
        """
        raw_reason = reason.encode("utf-8")
        if len(raw_reason) > MAX_REASON_BYTES:
            raise ValueError(f"close reason is longer than {MAX_REASON_BYTES} bytes")
        with self._lock:
            if self._summary is not None:
                return self._summary
            self._check_open()
            try:
                if self._buf:
                    self._cut(check_room=False)  # sealing goes into the reserve
                trailer = self._trailer(reason)
                trailer_frame = frame(trailer.encode())
                index = IndexRecord(tuple(self._index_entries()))
                index_frame = frame(index.encode())
                trailer_offset = self._offset
                footer = Footer(trailer_offset + len(trailer_frame), trailer_offset)
                self._write(trailer_frame + index_frame + frame(footer.encode()))
                self._sync()
                self._close_sink()
            except RecordingWriteError:
                self._close_sink()
                raise
            except OSError as e:
                raise self._fail(e, "close") from e
            self._summary = RecordingSummary(
                session_id=self._session_id,
                location=self._sink.location,
                final_hash=trailer.hash.hex(),
                signature=trailer.signature.hex(),
                key_id=self._key_id,
                last_seq=self._seq,
                events=self._events,
                raw_bytes=self._raw_bytes,
                stored_bytes=self._offset,
                duration=trailer.t_end_us / 1_000_000,
            )
            return self._summary

    def abort(self) -> None:
        """Close the file without a trailer (it will verify as truncated). Never raises."""
        with self._lock:
            if self._error is None and self._summary is None:
                self._error = RecordingClosedError(
                    f"recording of session {self._session_id} was aborted"
                )
            try:
                self._close_sink()
            except OSError:
                pass

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._summary is not None:
            raise RecordingClosedError(
                f"recording of session {self._session_id} is closed; no more events"
            )

    def _fail(self, e: OSError, what: str) -> RecordingWriteError:
        self._error = RecordingWriteError(
            f"recording of session {self._session_id} failed to {what} "
            f"{self._sink.location}: {e.strerror or e}; the session must end "
            "(free disk space or fix permissions on the recording directory)"
        )
        self._error.__cause__ = e
        try:
            self._close_sink()
        except OSError:
            pass
        return self._error

    def _write(self, data: bytes) -> None:
        try:
            self._sink.write(data)
        except OSError as e:
            raise self._fail(e, "write") from e
        self._offset += len(data)
        self._unsynced = True

    def _sync(self) -> None:
        if not self._unsynced:
            return
        try:
            self._sink.sync()
        except OSError as e:
            raise self._fail(e, "fsync") from e
        self._unsynced = False
        self._last_sync = self._clock()

    def _close_sink(self) -> None:
        with self._sync_lock:
            self._sink_closed = True
            self._sink.close()

    def _cut(self, check_room: bool = True) -> None:
        raw = self._buf
        data = compress_chunk(raw, self._policy.level)
        seq = self._seq + 1
        meta = ChunkMeta(
            seq,
            self._chunk_first_us,
            self._last_us,
            self._chunk_events,
            len(raw),
            len(data),
            ZERO_HASH,
        )
        meta = replace(meta, hash=chunk_hash(self._prev_hash, meta, data))
        offset = self._offset
        self._write(frame(meta.encode()) + data)
        self._seq = seq
        self._prev_hash = meta.hash
        self._index_times.append(meta.t_first_us)
        self._index_offsets.append(offset)
        self._raw_bytes += len(raw)
        self._buf = bytearray()
        self._chunk_events = 0
        self._chunks_since_checkpoint += 1
        if self._chunks_since_checkpoint >= self._policy.checkpoint_chunks:
            self._checkpoint()
        if check_room and self._room is not None:
            short = self._room()
            if short is not None:
                self._short = RecordingStorageLow(
                    f"recording of session {self._session_id} stopped: {short}"
                )
                raise self._short

    def _checkpoint(self) -> None:
        unsigned = Checkpoint(
            self._seq,
            self._now_us(),
            round(self._wall_clock() * 1_000_000),
            self._prev_hash,
            b"",
        )
        signed = replace(unsigned, signature=self._key.sign(unsigned.signed_message()))
        self._write(frame(signed.encode()))
        self._chunks_since_checkpoint = 0
        self._last_checkpoint = self._clock()

    def _trailer(self, reason: str) -> Trailer:
        unsigned = Trailer(
            END_CLOSED,
            True,
            self._seq,
            self._now_us(),
            round(self._wall_clock() * 1_000_000),
            self._events,
            self._raw_bytes,
            0,
            reason,
            self._prev_hash,
            b"",
        )
        return replace(unsigned, signature=self._key.sign(unsigned.signed_message()))

    def _index_entries(self) -> list[IndexEntry]:
        return [
            IndexEntry(i + 1, t, off)
            for i, (t, off) in enumerate(zip(self._index_times, self._index_offsets, strict=True))
        ]


async def run_ticker(
    writer: RecordingWriter, interval: float = 0.25, *, offload: bool = False
) -> None:
    """Call ``writer.tick()`` every ``interval`` seconds until the writer is closed.

    Keep a reference to the task. With ``offload`` the tick (and its fsync) runs in
    a worker thread. A RecordingWriteError ends the task with that exception: the
    host should await the task (or add a done callback) and end the session.
    """
    while not writer.closed:
        await asyncio.sleep(interval)
        if writer.closed:
            return
        if offload:
            await asyncio.to_thread(writer.tick)
        else:
            writer.tick()
