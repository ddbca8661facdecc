"""Recording on the bastion: one writer per session, one ticker per node, fail closed.

``recorder`` knows nothing of SSH; this module is the host side. It creates a
writer when a session starts (a failure refuses the session), feeds it what
crosses the relay, drives every writer's time-bound flush from one task (idle
sessions cost no task and no compressor), ends a session whose recording can no
longer be written, and on start-up repairs recordings a crash left open.

Full storage is met before it is full: below ``[recording] min_free_bytes`` new
sessions are refused, and live ones end as ``recording-failed`` with their files
sealed into that reserve (what the contractor was sent is all in the file, and it
verifies). A real ENOSPC or read-only remount still ends the session, unsealed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bastion import audit_actions as actions
from bastion.config import Config
from bastion.pg.query_event import QUERY_EVENT, searchable_queries
from bastion.store import Store
from recorder import (
    LocalStorage,
    RecordingReader,
    RecordingStorageLow,
    RecordingSummary,
    RecordingWriteError,
    RecordingWriter,
    RepackPolicy,
    RepackResult,
    extract_commands,
    recover,
    repack,
)
from recorder.errors import RecordingError
from recorder.events import Event, Input, JSONValue, Marker, Output, Resize, Structured
from recorder.keys import key_id, load_signing_key

log = logging.getLogger(__name__)

TICK_INTERVAL = 0.25
FAIL_CLOSED = "refuse"
FAIL_OPEN = "continue"


class RecordingSubscriber(Protocol):
    """A live watcher of one recording (the control API's watch streams)."""

    def event(self, event: Event) -> None:
        """A recorded event; called on the event loop, must never block or raise."""

    def closed(self, reason: str) -> None:
        """The recording ended (closed or failed); may be called from a worker thread."""


@dataclass(eq=False)
class LiveRecording:
    """One session's writer plus what to do if writing fails."""

    writer: RecordingWriter
    on_failure: Callable[[str], None]
    failed: str | None = None
    sealable: bool = False
    """The failure was the free-space reserve: ``close`` still seals the file."""
    summary: RecordingSummary | None = None
    _service: RecordingService | None = field(default=None, repr=False)
    subscribers: tuple[RecordingSubscriber, ...] = ()
    """Live watchers; empty (the relay pays one truth test) unless someone watches."""
    size: tuple[int, int] | None = None
    """The terminal size last recorded (cols, rows), for a late watcher's snapshot."""

    def subscribe(self, sub: RecordingSubscriber) -> None:
        """Fan every later event out to ``sub`` (call on the event loop)."""
        self.subscribers = (*self.subscribers, sub)

    def unsubscribe(self, sub: RecordingSubscriber) -> None:
        """Stop fanning out to ``sub``."""
        self.subscribers = tuple(s for s in self.subscribers if s is not sub)

    def _publish(self, event: Event) -> None:
        for sub in self.subscribers:
            sub.event(event)

    def _publish_end(self, reason: str) -> None:
        subs, self.subscribers = self.subscribers, ()
        for sub in subs:
            sub.closed(reason)

    def _guard(self, op: Callable[[], None]) -> None:
        if self.failed is not None:
            return
        try:
            op()
        except RecordingStorageLow as e:
            self._fail(str(e), sealable=True)
        except RecordingWriteError as e:
            self._fail(str(e))
        except ValueError as e:  # an event the format cannot hold: unrecorded means ended
            self._fail(f"event could not be recorded: {e}")

    def _fail(self, message: str, sealable: bool = False) -> None:
        if self.failed is not None:
            return
        self.failed = message
        self.sealable = sealable
        log.error("recording of session %s failed: %s", self.writer.session_id, message)
        if self.subscribers:
            self._publish_end(f"recording-failed: {message}")
        if self._service is not None:
            self._service.forget(self)
        self.on_failure(message)

    def output(self, data: bytes) -> None:
        """What the contractor saw (stdout and stderr, and the bastion's own notices)."""
        # Hot path (every relayed packet): no closure, one try.
        if self.failed is None:
            try:
                self.writer.output(data)
                if self.subscribers:
                    self._publish(Output(self.writer.last_event_time, data))
            except RecordingStorageLow as e:
                self._fail(str(e), sealable=True)
            except RecordingWriteError as e:
                self._fail(str(e))

    def input(self, data: bytes) -> None:
        """What the contractor typed or sent."""
        if self.failed is None:
            try:
                self.writer.input(data)
                if self.subscribers:
                    self._publish(Input(self.writer.last_event_time, data))
            except RecordingStorageLow as e:
                self._fail(str(e), sealable=True)
            except RecordingWriteError as e:
                self._fail(str(e))

    def resize(self, cols: int, rows: int) -> None:
        """A terminal size change."""
        self._guard(lambda: self.writer.resize(cols, rows))
        self.size = (cols, rows)
        if self.subscribers and self.failed is None:
            self._publish(Resize(self.writer.last_event_time, cols, rows))

    def marker(self, label: str) -> None:
        """A named moment (warnings, termination, file transfers)."""
        self._guard(lambda: self.writer.marker(label[:200]))
        if self.subscribers and self.failed is None:
            self._publish(Marker(self.writer.last_event_time, label[:200]))

    def event(self, name: str, payload: JSONValue, chunk: int | None = None) -> int:
        """A structured event (``bastion.pg.query_event``: a query and its optional rows).

        Returns the seq of the chunk it went into; with ``chunk``, records it only if
        it goes into that chunk (``RecordingWriter.event``), else returns 0. A failed
        recording records nothing and returns -1 (nothing to retry).
        """
        into = self._structured(self.writer.event, name, payload, chunk)
        if into > 0 and self.subscribers:
            self._publish(Structured(self.writer.last_event_time, name, payload))
        return into

    def encoded_event(self, name: str, data: bytes, chunk: int | None = None) -> int:
        """``event`` with the payload already in ``canonical_json`` bytes (the relay's
        ``pg.query``, ``bastion.pg.query_log.query_json``); a watcher is handed the
        payload parsed back from them (the same JSON value)."""
        into = self._structured(self.writer.encoded_event, name, data, chunk)
        if into > 0 and self.subscribers:
            self._publish(Structured(self.writer.last_event_time, name, json.loads(data)))
        return into

    def _structured(
        self,
        write: Callable[[str, Any, int | None], int],
        name: str,
        body: Any,
        chunk: int | None,
    ) -> int:
        # Hot path (every query of a database session): no closure.
        if self.failed is not None:
            return -1
        try:
            return write(name, body, chunk)
        except RecordingStorageLow as e:
            self._fail(str(e), sealable=True)
        except RecordingWriteError as e:
            self._fail(str(e))
        except ValueError as e:  # an event the format cannot hold: unrecorded means ended
            self._fail(f"event could not be recorded: {e}")
        return -1

    def exit(self, status: int | None = None, signal: str | None = None) -> None:
        """How the remote side ended."""
        self._guard(lambda: self.writer.exit(status=status, signal=signal))

    def tick_in_worker(self) -> tuple[str, bool] | None:
        """Time-bound chunking, fsync and checkpoints; runs in a worker thread, so it
        returns a failure (message, sealable) instead of acting on it (the loop does)."""
        if self.failed is not None:
            return None
        try:
            self.writer.tick()
        except RecordingStorageLow as e:
            return str(e), True
        except RecordingWriteError as e:
            return str(e), False
        return None

    def close(self, reason: str) -> RecordingSummary | None:
        """Finish the file (signed trailer, index); None if it had already failed."""
        if self._service is not None:
            self._service.forget(self)
        if self.subscribers:
            self._publish_end(reason)
        if self.summary is not None:
            return self.summary
        if self.failed is not None and not self.sealable:
            self.writer.abort()
            return None
        try:
            self.summary = self.writer.close(reason[:200])
        except RecordingWriteError as e:
            self.failed = str(e)
            log.error("closing recording %s failed: %s", self.writer.session_id, e)
            return None
        return self.summary


class RecordingService:
    """The node's recording storage, signing key and ticker."""

    def __init__(self, config: Config) -> None:
        self.storage = LocalStorage(config.recordings_dir)
        self.signing_key = load_signing_key(config.recording_signing_key)
        self.key_id = key_id(self.signing_key)
        self.fail_mode = config.recording_on_failure
        self.repack_level = config.recording_repack_level
        self.min_free_bytes = config.recording_min_free_bytes
        self._live: set[LiveRecording] = set()

    def storage_problem(self) -> str | None:
        """Why recordings cannot be written now (read-only, below the reserve), or None.

        One statvfs: asked when a session starts, once a tick, after each chunk a
        writer cuts, and by ``/healthz``.
        """
        root = self.storage.root
        where = root
        while not where.exists() and where != where.parent:  # created with the first file
            where = where.parent
        try:
            st = os.statvfs(where)
        except OSError as e:
            return f"the recording directory {root} cannot be checked: {e.strerror or e}"
        if st.f_flag & os.ST_RDONLY:
            return f"the recording directory {root} is on a read-only file system"
        free = st.f_bavail * st.f_frsize
        if free < self.min_free_bytes:
            return (
                f"the recording storage {root} has {free} bytes free, less than "
                f"[recording] min_free_bytes = {self.min_free_bytes}; free disk space there"
            )
        return None

    @property
    def fail_closed(self) -> bool:
        """True unless the admin explicitly chose to let sessions run unrecorded."""
        return self.fail_mode != FAIL_OPEN

    def start(
        self, session_id: str, meta: Mapping[str, object], on_failure: Callable[[str], None]
    ) -> LiveRecording:
        """Create the session's recording (raises RecordingWriteError: refuse the session)."""
        problem = self.storage_problem()
        if problem is not None:
            raise RecordingWriteError(f"no recording for session {session_id}: {problem}")
        writer = RecordingWriter.create(
            self.storage,
            session_id,
            dict(meta),
            self.signing_key,
            self.key_id,
            room=self.storage_problem if self.min_free_bytes > 0 else None,
        )
        rec = LiveRecording(writer, on_failure, _service=self)
        self._live.add(rec)
        return rec

    def find(self, session_id: str) -> LiveRecording | None:
        """The recording being written for ``session_id`` on this node, if any."""
        for rec in self._live:
            if rec.writer.session_id == session_id:
                return rec
        return None

    def forget(self, rec: LiveRecording) -> None:
        """Stop ticking a recording (closed or failed)."""
        self._live.discard(rec)

    @property
    def live_count(self) -> int:
        """Recordings being written now."""
        return len(self._live)

    async def run_ticker(self, interval: float = TICK_INTERVAL) -> None:
        """Tick every live writer until cancelled: one task for the whole node, and the
        ticks (with their fsyncs) in a worker thread so the relay loop never waits on disk."""
        while True:
            await asyncio.sleep(interval)
            live = list(self._live)
            if not live:
                continue
            failures = await asyncio.to_thread(_tick_all, live, self.storage_problem)
            for rec, (message, sealable) in failures:
                rec._fail(message, sealable)

    def repack_closed(self, location: str, final_hash: str) -> RepackResult | None:
        """Rewrite a closed recording into large chunks (None when repacking is off).

        Raises RecordingError if the file is not intact (it is then left untouched).
        """
        if self.repack_level <= 0:
            return None
        return repack(
            self.path_of(location),
            self.signing_key,
            policy=RepackPolicy(level=self.repack_level),
            expected_final_hash=final_hash,
        )

    def path_of(self, location: str) -> str:
        """Filesystem path of a recording in the spool; ValueError for one uploaded to S3
        (read those through ``bastion.recording_files``)."""
        if location.startswith("s3://"):
            raise ValueError(f"{location} is in S3 storage, not in the spool")
        return str(self.storage.path_of(location))


def _tick_all(
    live: list[LiveRecording], storage_problem: Callable[[], str | None]
) -> list[tuple[LiveRecording, tuple[str, bool]]]:
    """One tick of every writer; below the reserve, every live recording stops (sealable),
    idle ones too: they could not record their next byte."""
    problem = storage_problem()
    if problem is not None:
        return [(rec, (f"recording stopped: {problem}", True)) for rec in live]
    failures = []
    for rec in live:
        failure = rec.tick_in_worker()
        if failure is not None:
            failures.append((rec, failure))
    return failures


def extract_session_commands(path: str) -> list[tuple[float, str]]:
    """Typed command lines of a recording with absolute times, for the search index."""
    return recorded_totals(path).commands


@dataclass(frozen=True, slots=True)
class RecordedTotals:
    """What the readable events of a recording add up to (a crashed session's totals)."""

    events: int
    bytes_in: int
    """Bytes of the recorded input events (what the user sent)."""
    bytes_out: int
    """Bytes of the recorded output events (what the target sent)."""
    ended_at: float
    """Wall-clock time of the last readable event (the header's start if none)."""
    commands: list[tuple[float, str]]
    """Typed command lines and SQL statements with absolute times, for the search index."""


def recorded_totals(path: str) -> RecordedTotals:
    """Counts, end time and searchable lines of the readable events of the recording at ``path``.

    One pass over the file (two for a database session); damaged chunks are skipped.
    Raises RecordingFormatError if the file has no readable header, OSError if it
    cannot be opened.
    """
    events = bytes_in = bytes_out = 0
    last = 0.0
    database = False

    def counted(source: Iterator[Event]) -> Iterator[Event]:
        nonlocal events, bytes_in, bytes_out, last, database
        for event in source:
            events += 1
            last = event.time
            if isinstance(event, Input):
                bytes_in += len(event.data)
            elif isinstance(event, Output):
                bytes_out += len(event.data)
            elif isinstance(event, Structured) and event.name == QUERY_EVENT:
                database = True
            yield event

    with RecordingReader.open(path) as reader:
        start = reader.header.started_at
        found = extract_commands(counted(reader.events()))
        commands = [(start + t, text) for t, text in found]
        if database:  # a second pass, only for database sessions: memory stays bounded
            commands += searchable_queries(reader.events(), start)
            commands.sort(key=lambda c: c[0])
    return RecordedTotals(events, bytes_in, bytes_out, start + last, commands)


def recover_crashed_sessions(service: RecordingService, store: Store, node: str) -> list[str]:
    """End sessions this node left live when it died; repair their recordings.

    Each recording gets a signed recovery trailer and index (``bastion verify`` then
    says it was cut short, not altered); the session row gets its final hash, end
    reason ``node-crash``, and the counts and end time of what the recording holds:
    the last recorded event is the last known moment of the session, the restart
    may be hours later. Without a recording it can repair, it ends now with the stored counts.
    Returns the recovered session ids.
    """
    recovered: list[str] = []
    now = time.time()
    for s in store.list_sessions(live=True, limit=100_000):
        if s.node != node:
            continue
        final_hash = signature = None
        detail = "no recording"
        totals: RecordedTotals | None = None
        if s.recording:
            path = service.path_of(s.recording)
            try:
                result = recover(path, service.signing_key)
                final_hash, signature = result.final_hash, result.signature
                detail = f"recording {result.action}: {result.result}"
                totals = recorded_totals(path)
                store.add_session_commands(s.id, totals.commands)
            except (RecordingError, OSError) as e:
                detail = f"recording could not be recovered: {e}"
                log.error("session %s: %s", s.id, detail)
        store.end_session(
            s.id,
            ended_at=min(now, max(s.started_at, totals.ended_at)) if totals else now,
            reason="node-crash",
            bytes_in=totals.bytes_in if totals else s.bytes_in,
            bytes_out=totals.bytes_out if totals else s.bytes_out,
            events=totals.events if totals else s.events,
            final_hash=final_hash,
            final_signature=signature,
        )
        store.append_audit(
            "node",
            actions.SESSION_RECOVERED,
            s.target_name,
            {"session": s.id, "user": s.user_name, "detail": detail},
            now,
        )
        recovered.append(s.id)
    return recovered
