"""Where recordings live: a small ``Storage`` protocol and a local-directory backend.

The writer needs only an append-only byte sink that can be synced; readers need a
seekable binary file. Keeping the protocol that small lets an S3 backend (a later
issue) spool locally and upload closed files without the writer changing. The local
backend lays files out as ``YYYY/MM/DD/<session-id>.bastrec`` (UTC start date) with
0700 directories and 0600 files, never overwrites an existing recording, and fsyncs
the directory so a new file's name survives a power cut.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

__all__ = [
    "SUFFIX",
    "FileSink",
    "LocalStorage",
    "RecordingSink",
    "Storage",
    "StoredRecording",
    "check_session_id",
]

SUFFIX = ".bastrec"
_SESSION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def check_session_id(session_id: str) -> str:
    """Return ``session_id`` if it is safe as a file name, else raise ValueError."""
    if not _SESSION_ID.fullmatch(session_id):
        raise ValueError(
            f"session id {session_id!r} must be 1-128 characters of A-Z a-z 0-9 . _ - "
            "and start with a letter or digit"
        )
    return session_id


@runtime_checkable
class RecordingSink(Protocol):
    """An append-only destination for one recording's bytes.

    ``write`` must write everything or raise OSError; after it returns the bytes
    are with the operating system (no user-space buffer), so ``kill -9`` of the
    process cannot lose them. ``sync`` makes them durable (fsync).
    """

    @property
    def location(self) -> str:
        """Where the recording is, in the storage's own terms (for the database)."""
        ...

    def write(self, data: bytes) -> None:
        """Append all of ``data`` or raise OSError."""
        ...

    def sync(self) -> None:
        """Make everything written so far durable, or raise OSError."""
        ...

    def close(self) -> None:
        """Release the sink; may raise OSError."""
        ...


@runtime_checkable
class Storage(Protocol):
    """A place recordings are created, listed and read."""

    def create(self, session_id: str, started_at: float) -> RecordingSink:
        """Create a new, empty recording; raise FileExistsError if it already exists."""
        ...

    def open_append(self, location: str) -> RecordingSink:
        """Open an existing recording to append to it (used by recovery)."""
        ...

    def open_read(self, location: str) -> BinaryIO:
        """Open a recording for reading; the file object must be seekable."""
        ...

    def list_recordings(self, prefix: str = "") -> Iterator[StoredRecording]:
        """Yield stored recordings whose location starts with ``prefix``, sorted."""
        ...


@dataclass(frozen=True, slots=True)
class StoredRecording:
    """One recording as listed by a storage backend."""

    location: str
    session_id: str
    size: int
    modified: float


class FileSink:
    """A recording file written with unbuffered ``os.write`` on a raw descriptor."""

    __slots__ = ("_fd", "_location")

    def __init__(self, fd: int, location: str) -> None:
        self._fd = fd
        self._location = location

    @classmethod
    def create(cls, path: str | os.PathLike[str], location: str | None = None) -> FileSink:
        """Create ``path`` exclusively with mode 0600 and sync its directory.

        Raises FileExistsError if it exists, OSError on any other failure.
        """
        p = Path(path)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            _fsync_dir(p.parent)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, location if location is not None else str(p))

    @classmethod
    def open_append(cls, path: str | os.PathLike[str], location: str | None = None) -> FileSink:
        """Open an existing file for appending; raises OSError if it cannot."""
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        return cls(fd, location if location is not None else str(path))

    @property
    def location(self) -> str:
        """The file's path (or the storage location it was created for)."""
        return self._location

    def write(self, data: bytes) -> None:
        """Append all of ``data``; a short write that makes no progress is ENOSPC."""
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            if written <= 0:
                raise OSError(28, "No space left on device (write made no progress)")
            view = view[written:]

    def sync(self) -> None:
        """fsync the file."""
        os.fsync(self._fd)

    def close(self) -> None:
        """Close the descriptor (idempotent)."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStorage:
    """Recordings under a local directory, one file per session, by UTC start date."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def location_for(self, session_id: str, started_at: float) -> str:
        """The relative location a session starting at ``started_at`` is stored at."""
        day = datetime.fromtimestamp(started_at, UTC)
        return f"{day:%Y/%m/%d}/{check_session_id(session_id)}{SUFFIX}"

    def path_of(self, location: str) -> Path:
        """The absolute path of a location; raises ValueError if it escapes the root."""
        rel = Path(location)
        if rel.is_absolute() or ".." in rel.parts or not location:
            raise ValueError(f"recording location {location!r} is not inside the storage")
        return self.root / rel

    def create(self, session_id: str, started_at: float) -> RecordingSink:
        """Create ``YYYY/MM/DD/<session-id>.bastrec`` (0600, dirs 0700) exclusively."""
        location = self.location_for(session_id, started_at)
        path = self.path_of(location)
        self._make_dirs(path.parent)
        return FileSink.create(path, location)

    def open_append(self, location: str) -> RecordingSink:
        """Open an existing recording for appending."""
        return FileSink.open_append(self.path_of(location), location)

    def open_read(self, location: str) -> BinaryIO:
        """Open a recording for reading."""
        return open(self.path_of(location), "rb")  # caller closes

    def list_recordings(self, prefix: str = "") -> Iterator[StoredRecording]:
        """Yield recordings in location order (which is date order, then session id)."""
        if not self.root.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            for name in sorted(filenames):
                if not name.endswith(SUFFIX):
                    continue
                path = Path(dirpath) / name
                location = path.relative_to(self.root).as_posix()
                if not location.startswith(prefix):
                    continue
                st = path.stat()
                if not stat.S_ISREG(st.st_mode):
                    continue
                yield StoredRecording(location, name[: -len(SUFFIX)], st.st_size, st.st_mtime)

    def _make_dirs(self, directory: Path) -> None:
        missing: list[Path] = []
        p = directory
        while not p.exists():
            missing.append(p)
            p = p.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                continue
            os.chmod(d, 0o700)
            _fsync_dir(d.parent)
