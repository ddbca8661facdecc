"""Filling the search index: one session at a time, after it is sealed, off the relay.

``index_session`` reads a sealed session (recording and store rows), masks, and
swaps its index rows and marker in one transaction: running it again gives the
same rows, and a process killed half-way leaves that session unmarked, so the next
``reindex`` (or the node's catch-up at start) does it whole. ``SearchIndexer`` runs
``bastion reindex`` in a niced child process when sessions end, never in the
node's process; a failure is logged (the index is derived data, the recording is
the evidence) and the next run retries.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bastion.config import Config
from bastion.s3store import is_s3_location
from bastion.search_entries import (
    Masks,
    displayed_lines,
    recording_entries,
    session_entries,
    stream_lines,
)
from bastion.store import Store
from recorder import LocalStorage, RecordingError

log = logging.getLogger(__name__)


def masks_of(config: Config) -> Masks:
    """The content masks of a node: ``[postgres] mask_patterns``."""
    return Masks(config.postgres.mask_patterns)


@contextmanager
def _recording_path(config: Config, recording: str | None) -> Iterator[str | None]:
    """A local path of a session's recording for the time of the block (None: there is
    none). An uploaded one (its spool copy gone) is read once into a temp file."""
    if recording and is_s3_location(recording):
        from bastion.recording_files import recording_file

        with (
            recording_file(config, recording).open() as src,
            tempfile.NamedTemporaryFile(suffix=".bastrec") as copy,
        ):
            shutil.copyfileobj(src, copy, 1 << 20)
            copy.flush()
            yield copy.name
        return
    path: str | None = None
    if recording:
        candidate = LocalStorage(config.recordings_dir).path_of(recording)
        path = str(candidate) if Path(candidate).exists() else None
    yield path


def index_session(store: Store, config: Config, session_id: str, masks: Masks) -> int | None:
    """Index one session now; the number of entries (None: no such session).

    Raises RecordingError or OSError if its recording cannot be read.
    """
    session = store.get_session(session_id)
    if session is None:
        return None
    with _recording_path(config, session.recording) as path:
        found = session_entries(store, session_id, path, masks)
    if found is None:
        return None
    store.replace_session_index(
        session_id, found.entries, source_bytes=found.source_bytes, now=time.time(),
        output_in_stream=found.output_in_stream,
    )  # fmt: skip
    return len(found.entries)


class OutputLines:
    """A session's displayed lines read back from its recording, for a search.

    The index keeps terminal output as postings only (``bastion.store.search``); a
    search calls this for each candidate session. A session whose every displayed
    line is in its recording's plain stream (the index says so) is read as that
    stream (``stream_lines``: milliseconds); any other through the indexer's
    emulator (tens of milliseconds). Both with the indexer's masks (a masked value is
    ``***`` here too). The last ``CACHED`` sessions are kept, so stepping through one
    session's matches or searching again reads each recording once. Unreadable
    recordings give None (logged): the index is derived data, the search goes on.
    """

    CACHED = 64

    def __init__(self, store: Store, config: Config, masks: Masks | None = None) -> None:
        self._store = store
        self._config = config
        self._masks = masks if masks is not None else masks_of(config)
        self._cache: OrderedDict[tuple[str, bool], dict[str, float] | None] = OrderedDict()
        self._lock = threading.Lock()  # the control server searches from worker threads
        self.read = 0
        """Recordings run through the emulator (a metric and a test hook)."""
        self.streams = 0
        """Recordings read as a plain stream."""

    def __call__(
        self, session_id: str, must_show: str | None = None, in_stream: bool = False
    ) -> dict[str, float] | None:
        """The session's displayed lines (text -> first offset), or None.

        ``in_stream``: read the plain stream, not the emulator. ``must_show``
        (case-folded, with ``in_stream``): if the stream lacks it, no line has it and
        the answer is ``{}`` at once (what makes a false candidate cheap).
        """
        key = (session_id, in_stream)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        found = self._read(session_id, must_show if in_stream else None, in_stream)
        if found == {} and must_show is not None:
            return found  # ruled out for this text only: not cached
        with self._lock:
            self._cache[key] = found
            if len(self._cache) > self.CACHED:
                self._cache.popitem(last=False)
        return found

    def _read(
        self, session_id: str, must_show: str | None, in_stream: bool
    ) -> dict[str, float] | None:
        session = self._store.get_session(session_id)
        if session is None or not session.recording:
            return None
        try:
            with _recording_path(self._config, session.recording) as path:
                if path is None:
                    return None
                if in_stream:
                    self.streams += 1
                    found = stream_lines(path, self._masks, must_show)
                    if found is not None:
                        return found
                self.read += 1
                output = recording_entries(path)[0]
        except (RecordingError, OSError) as e:
            log.warning("search: cannot read the recording of %s: %s", session_id, e)
            return None
        return displayed_lines(output, self._masks)


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
    if again and since is None:  # everything again: start from an empty index
        store.clear_search_index()
        again = False
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
    """The node's indexer: a niced child process running ``bastion reindex`` when sessions end.

    Not a thread of the node: rendering a long terminal recording through the screen
    emulator is seconds of pure Python, and in the node's process it would hold the
    GIL that every relay needs (a 64 MB PTY stream being indexed made the next
    session's echo 20x slower). A child process at lower priority (``nice 10``)
    leaves the relays their core; ``reindex`` indexes every ended session not yet
    indexed, so one run after a burst of ends covers them all, and a run killed
    half-way is finished by the next.
    """

    NICENESS = 10

    def __init__(self, store: Store, config: Config) -> None:
        del store  # the child opens its own
        self._config = config
        self._wanted = threading.Event()
        self._stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None
        self._thread: threading.Thread | None = None
        self.runs = 0
        """Completed ``reindex`` runs (a metric and a test hook)."""

    def start(self, catch_up: bool = True) -> None:
        """Start the thread that runs the child; ``catch_up`` runs it once at once."""
        if catch_up:
            self._wanted.set()
        self._thread = threading.Thread(target=self._run, name="search-indexer", daemon=True)
        self._thread.start()

    def submit(self, session_id: str) -> None:
        """Index ``session_id`` soon (it must be sealed: its row ended)."""
        del session_id  # reindex finds every ended session not yet indexed
        self._wanted.set()

    @property
    def pending(self) -> int:
        """1 while a run is wanted or running, else 0."""
        return int(self._wanted.is_set() or self._child is not None)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child (its session is redone by the next run) and the thread."""
        self._stopping.set()
        self._wanted.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._stopping.is_set():
                return
            self._wanted.clear()
            argv = [sys.executable, "-m", "bastion", "reindex", "--config", str(self._config.path)]
            nice = shutil.which("nice")  # a command, not preexec_fn: the node has threads
            if nice is not None:
                argv = [nice, "-n", str(self.NICENESS), *argv]
            try:
                self._child = subprocess.Popen(  # noqa: S603  our interpreter, our command
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                _out, err = self._child.communicate()
                if self._child.returncode not in (0, -15) and not self._stopping.is_set():
                    log.warning(
                        "search index: 'bastion reindex' exited %s: %s",
                        self._child.returncode,
                        err.decode(errors="replace").strip()[-500:],
                    )
                self.runs += 1
            except OSError as e:
                log.error("search index: cannot start 'bastion reindex': %s", e)
            finally:
                self._child = None
