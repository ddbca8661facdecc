"""How the player opens a recording: a local file, or (given by the host) S3 storage.

The node's control API answers ``recording_path`` with a local path while the
recording is in its spool and with ``s3://bucket/key`` once it is uploaded. The
replay package does not know S3: the console passes a ``RecordingOpener`` that
does (``bastion.recording_files.ConfigOpener``); without one the player opens
a local file, as it always has.
"""

from __future__ import annotations

from typing import BinaryIO, Protocol

from recorder import RecordingReader

__all__ = ["RecordingOpener", "open_reader"]


class RecordingOpener(Protocol):
    """Opens what ``recording_path`` returned."""

    def open(self, path: str) -> BinaryIO:
        """A seekable binary file (raises OSError)."""
        ...

    def identity(self, path: str) -> str:
        """A key that changes whenever the recording does (the keyframe cache's key)."""
        ...


def open_reader(opener: RecordingOpener, path: str) -> RecordingReader:
    """A reader that owns the file ``opener`` opened (raises OSError, RecordingError)."""
    f = opener.open(path)
    try:
        return RecordingReader(f, owns_file=True)
    except BaseException:
        f.close()
        raise
