"""Opening a session's recording wherever it is: the node's spool, or S3 storage.

A session row's ``recording`` is a spool location (``YYYY/MM/DD/<id>.bastrec``,
under ``[recording] dir``) until the uploader moves it, then ``s3://bucket/key``.
Readers (``verify``, ``export``, ``sessions show``, the console's player) take a
``RecordingFile`` and get a seekable binary file either way: a local file, or
ranged GETs (a seek downloads only the chunks it needs, never the whole object).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from bastion.config import Config
from bastion.s3_config import S3Config
from bastion.s3store import (
    READ_BUFFER,
    RangedObject,
    S3Location,
    is_s3_location,
    make_client,
    open_object,
)
from recorder import LocalStorage

__all__ = ["ConfigOpener", "RecordingFile", "recording_file"]

_clients: dict[S3Config, Any] = {}


def _client(config: S3Config) -> Any:
    """One client per S3 setting per process (boto3 clients are thread-safe)."""
    client = _clients.get(config)
    if client is None:
        client = _clients[config] = make_client(config)
    return client


@dataclass(frozen=True)
class RecordingFile:
    """A recording to read: a local ``path`` or an object ``s3`` reached with ``s3_config``."""

    path: Path | None = None
    s3: S3Location | None = None
    s3_config: S3Config | None = None

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else str(self.s3)

    def identity(self) -> str | None:
        """The S3 object's location, size and ETag (one HEAD); None for a local file."""
        if self.s3 is None or self.s3_config is None:
            return None
        return RangedObject(_client(self.s3_config), self.s3).identity

    def exists(self) -> bool:
        """Is the file (object) there? An unreachable store raises OSError."""
        if self.path is not None:
            return self.path.exists()
        try:
            self.open().close()
        except FileNotFoundError:
            return False
        return True

    def open(self, buffer_size: int = READ_BUFFER) -> BinaryIO:
        """A seekable binary file (raises OSError, FileNotFoundError if it is gone)."""
        if self.path is not None:
            return open(self.path, "rb")  # caller closes
        assert self.s3 is not None and self.s3_config is not None  # noqa: S101  by construction
        return open_object(_client(self.s3_config), self.s3, buffer_size)


def recording_file(config: Config, location: str) -> RecordingFile:
    """Where the recording at ``location`` (a session row's ``recording``) is read from.

    An ``s3://`` location is read with this config's ``[recording.s3]`` endpoint and
    region (AWS S3 itself when the config has none). Raises ValueError for a spool
    location that escapes ``[recording] dir``.
    """
    if is_s3_location(location):
        s3 = S3Location.parse(location)
        settings = config.recording_s3 or S3Config(bucket=s3.bucket)
        if settings.bucket != s3.bucket:
            settings = S3Config(
                s3.bucket, "", settings.endpoint_url, settings.region, settings.retry_max
            )
        return RecordingFile(s3=s3, s3_config=settings)
    return RecordingFile(path=LocalStorage(config.recordings_dir).path_of(location))


class ConfigOpener:
    """The console's ``replay.opening.RecordingOpener``: local paths, and ``s3://``
    locations read with this config's ``[recording.s3]`` settings."""

    def __init__(self, config: Config) -> None:
        self.config = config

    def open(self, path: str) -> BinaryIO:
        """A seekable binary file (raises OSError)."""
        if is_s3_location(path):
            return recording_file(self.config, path).open()
        return open(path, "rb")  # the reader owns it

    def identity(self, path: str) -> str:
        """The object's location, size and ETag, or the local file's path, size and mtime."""
        if is_s3_location(path):
            found = recording_file(self.config, path).identity()
            assert found is not None  # noqa: S101  an s3:// location
            return found
        st = os.stat(path)
        return f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}"
