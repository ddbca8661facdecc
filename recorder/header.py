"""The header record: what session a recording belongs to, and its format version.

The header is the first record of every file and link 0 of the hash chain, so its
metadata cannot be changed without breaking every later hash. Its JSON holds the
fields the recorder needs (session id, wall-clock start, signing key id) plus a
free-form ``meta`` object from the host (user, target, grant, node, protocol,
terminal size, ...; see FORMAT.md for the conventional keys).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recorder.codec import canonical_json
from recorder.compat import FORMAT_VERSION, migrate_header
from recorder.errors import RecordingFormatError
from recorder.events import JSONValue
from recorder.frames import MAX_HEADER_JSON, ZERO_HASH, HeaderRecord, header_hash

__all__ = ["Header", "build_header", "parse_header"]


@dataclass(frozen=True)
class Header:
    """Decoded header: format version, session id, start time, key id, host metadata."""

    version: int
    session_id: str
    started_at: float
    """Wall-clock start (Unix seconds); event times are offsets from it."""
    key_id: str
    meta: Mapping[str, JSONValue] = field(default_factory=dict)

    def meta_int(self, key: str) -> int | None:
        """``meta[key]`` if it is an integer, else None (for optional conventions)."""
        value = self.meta.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def meta_str(self, key: str) -> str | None:
        """``meta[key]`` if it is a string, else None."""
        value = self.meta.get(key)
        return value if isinstance(value, str) else None


def build_header(
    session_id: str, started_at: float, key_id: str, meta: Mapping[str, object]
) -> HeaderRecord:
    """Build the header record (with H0) for a new recording.

    Raises ValueError if ``meta`` is not JSON-serialisable or too large.
    """
    body = canonical_json(
        {
            "session_id": session_id,
            "started_at": started_at,
            "key_id": key_id,
            "clock": "monotonic",
            "meta": dict(meta),
        }
    )
    if len(body) > MAX_HEADER_JSON:
        raise ValueError(f"header metadata is {len(body)} bytes; the limit is {MAX_HEADER_JSON}")
    record = HeaderRecord(FORMAT_VERSION, body, ZERO_HASH)
    return HeaderRecord(FORMAT_VERSION, body, header_hash(record))


def parse_header(record: HeaderRecord) -> Header:
    """Decode a header record, migrating older versions.

    Raises RecordingVersionError for a future version (only if the header's hash
    is intact: a damaged version field is a RecordingFormatError), and
    RecordingFormatError if the JSON is malformed or lacks a required field.
    """
    if record.version > FORMAT_VERSION and header_hash(record) != record.hash:
        raise RecordingFormatError(
            f"header is damaged (hash mismatch; its version field says {record.version})"
        )
    try:
        fields: Any = json.loads(record.json.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RecordingFormatError(f"header JSON is malformed: {e}") from e
    if not isinstance(fields, dict):
        raise RecordingFormatError("header JSON is not an object")
    fields = migrate_header(record.version, fields)
    session_id = fields.get("session_id")
    started_at = fields.get("started_at")
    key = fields.get("key_id")
    meta = fields.get("meta", {})
    if (
        not isinstance(session_id, str)
        or not isinstance(started_at, int | float)
        or isinstance(started_at, bool)
        or not isinstance(key, str)
        or not isinstance(meta, dict)
    ):
        raise RecordingFormatError(
            "header lacks session_id/started_at/key_id or has them with the wrong type"
        )
    return Header(record.version, session_id, float(started_at), key, meta)
