"""Filling the search index: one session at a time, after it is sealed, off the relay.

``index_session`` reads a sealed session (recording and store rows), masks, and
swaps its index rows and marker in one transaction: running it again gives the
same rows, and a process killed half-way leaves that session unmarked, so the next
``reindex`` (or the node's catch-up at start) does it whole. ``SearchIndexer`` is
the node's single background thread: sessions are queued when they end and
indexed one by one, never on the event loop; a failure is logged (the index is
derived data, the recording is the evidence) and ``bastion reindex`` retries.
"""

from __future__ import annotations

import logging
import queue
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from bastion.config import Config
from bastion.s3store import is_s3_location
from bastion.search_entries import Masks, session_entries
from bastion.store import Store
from recorder import LocalStorage

log = logging.getLogger(__name__)

_STOP = ""
_CATCH_UP_LIMIT = 1_000_000  # session ids (a few MB): everything ended and not yet indexed


def masks_of(config: Config) -> Masks:
    """The content masks of a node: ``[postgres] mask_patterns``."""
    return Masks(config.postgres.mask_patterns)


def index_session(store: Store, config: Config, session_id: str, masks: Masks) -> int | None:
    """Index one session now; the number of entries (None: no such session).

    Raises RecordingError or OSError if its recording cannot be read.
    """
    session = store.get_session(session_id)
    if session is None:
        return None
    if session.recording and is_s3_location(session.recording):
        # uploaded (and the spool copy gone): read the object once into a temp file
        from bastion.recording_files import recording_file

        with (
            recording_file(config, session.recording).open() as src,
            tempfile.NamedTemporaryFile(suffix=".bastrec") as copy,
        ):
            shutil.copyfileobj(src, copy, 1 << 20)
            copy.flush()
            found = session_entries(store, session_id, copy.name, masks)
    else:
        path: str | None = None
        if session.recording:
            candidate = LocalStorage(config.recordings_dir).path_of(session.recording)
            path = str(candidate) if Path(candidate).exists() else None
        found = session_entries(store, session_id, path, masks)
    if found is None:
        return None
    store.replace_session_index(
        session_id, found.entries, source_bytes=found.source_bytes, now=time.time()
    )
    return len(found.entries)


def reindex(
    store: Store,
    config: Config,
    *,
    since: float | None = None,
    again: bool = False,
    progress: Callable[[str, int | None, str | None], None] | None = None,
) -> tuple[int, int]:
    """Index every ended session not yet indexed (``again``: all of them) started at or
    after ``since``; returns (indexed, failed). Resumable: each session commits alone."""
    masks = masks_of(config)
    done = failed = 0
    pending = store.sessions_to_index(since=since, again=again, limit=10_000_000)
    for session_id in pending:
        try:
            entries = index_session(store, config, session_id, masks)
        except Exception as e:  # one unreadable recording must not stop the others
            failed += 1
            if progress is not None:
                progress(session_id, None, str(e))
            continue
        done += 1
        if progress is not None:
            progress(session_id, entries, None)
    return done, failed


class SearchIndexer:
    """The node's indexing thread: ``submit`` a sealed session, ``close`` at stop."""

    def __init__(self, store: Store, config: Config) -> None:
        self._store = store
        self._config = config
        self._masks = masks_of(config)
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.indexed = 0
        """Sessions indexed by this thread (a metric and a test hook)."""

    def start(self, catch_up: bool = True) -> None:
        """Start the thread; ``catch_up`` first queues ended sessions not yet indexed."""
        self._thread = threading.Thread(
            target=self._run, args=(catch_up,), name="search-indexer", daemon=True
        )
        self._thread.start()

    def submit(self, session_id: str) -> None:
        """Index ``session_id`` soon (it must be sealed: its row ended)."""
        self._queue.put(session_id)

    @property
    def pending(self) -> int:
        """Sessions queued and not yet indexed."""
        return self._queue.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Stop after the session being indexed (the rest is caught up at next start)."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _run(self, catch_up: bool) -> None:
        if catch_up:
            try:
                for session_id in self._store.sessions_to_index(limit=_CATCH_UP_LIMIT):
                    self._queue.put(session_id)
            except Exception:
                log.exception("search index: listing sessions to catch up failed")
        while True:
            session_id = self._queue.get()
            if session_id == _STOP:
                return
            try:
                index_session(self._store, self._config, session_id, self._masks)
                self.indexed += 1
            except Exception:
                log.exception(
                    "search index: session %s not indexed (run 'bastion reindex')", session_id
                )
