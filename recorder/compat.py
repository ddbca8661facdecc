"""Format versions: refuse the future, migrate the past.

The recording format has its own version number (in the header record), separate
from the release. A reader accepts versions up to ``FORMAT_VERSION``; for older
ones it runs the header fields through ``MIGRATIONS`` step by step (version N to
N+1) so the rest of the reader only ever sees current-version fields. Version 1 is
the first, so the table is empty; a future version 2 adds ``MIGRATIONS[1]`` and
whatever per-record handling it needs here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from recorder.errors import RecordingFormatError, RecordingVersionError

__all__ = ["FORMAT_VERSION", "MIGRATIONS", "migrate_header"]

FORMAT_VERSION = 1
"""The version this code writes and the newest it reads."""

MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``MIGRATIONS[n]`` turns version-n header fields into version-(n+1) fields."""


def migrate_header(version: int, fields: dict[str, Any]) -> dict[str, Any]:
    """Return header fields upgraded from ``version`` to ``FORMAT_VERSION``.

    Raises RecordingVersionError for a version newer than this reader, and
    RecordingFormatError for version 0 or a gap in the migration table.
    """
    if version > FORMAT_VERSION:
        raise RecordingVersionError(
            f"recording format version {version} is newer than this reader supports "
            f"(up to {FORMAT_VERSION}); upgrade bastion to read it"
        )
    if version < 1:
        raise RecordingFormatError(f"recording format version {version} is not valid")
    for v in range(version, FORMAT_VERSION):
        step = MIGRATIONS.get(v)
        if step is None:
            raise RecordingFormatError(f"no migration from recording format version {v}")
        fields = step(fields)
    return fields
