"""Exceptions raised by the recorder.

Two families matter to a host. ``RecordingWriteError`` means the recording can no
longer be written: the host must fail closed (refuse or end the session).
``RecordingFormatError`` means bytes read from a recording are not a valid recording;
parsers raise nothing else on bad input, which the fuzz tests enforce.
"""

from __future__ import annotations

__all__ = [
    "KeyFileError",
    "RecordingClosedError",
    "RecordingError",
    "RecordingFormatError",
    "RecordingStorageLow",
    "RecordingVersionError",
    "RecordingWriteError",
]


class RecordingError(Exception):
    """Base class of every error the recorder raises on purpose."""


class RecordingFormatError(RecordingError):
    """Bytes that should be a recording (or part of one) are malformed."""


class RecordingVersionError(RecordingFormatError):
    """The recording uses a format version this reader cannot read."""


class RecordingWriteError(RecordingError):
    """The recording could not be written (disk full, permission, I/O error).

    The writer is unusable afterwards; the host must end or refuse the session.
    """


class RecordingClosedError(RecordingWriteError):
    """An event was given to a writer that is already closed or has failed."""


class RecordingStorageLow(RecordingWriteError):
    """The storage fell below the host's free-space reserve after a chunk was written.

    Unlike its base class the file is intact and the writer still open for ``close()``,
    which seals what was recorded into the reserve; every event call raises this again.
    The host ends the session: bytes of the event that raised were not all recorded.
    """


class KeyFileError(RecordingError):
    """A signing or verification key file is missing, unreadable or unsafe."""
