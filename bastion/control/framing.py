"""Newline-delimited JSON framing for the control API, sans-IO (h11-style).

``LineFramer.receive_data(bytes)`` then ``next_message()`` until it returns None;
``encode(message)`` gives the bytes to send. A line longer than ``max_line`` (a peer
that never sends a newline) or one that is not a JSON object raises
``ControlProtocolError``; the connection is then closed, never buffered without bound.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["DEFAULT_MAX_LINE", "ControlProtocolError", "LineFramer", "encode"]

DEFAULT_MAX_LINE = 32 * 1024 * 1024
"""Big enough for a snapshot of a few MiB of screen bytes in base64."""


class ControlProtocolError(Exception):
    """The peer broke the framing or sent something that is not a JSON object."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as a compact JSON line (ASCII only, so no newline can hide inside)."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"


class LineFramer:
    """Splits a byte stream into JSON objects, one per line."""

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        """``max_line``: the longest line accepted, in bytes (without the newline)."""
        self.max_line = max_line
        self._buf = bytearray()
        self._scanned = 0  # bytes of _buf known to hold no newline

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the peer."""
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as messages."""
        return len(self._buf)

    def next_line(self) -> bytes | None:
        """The next complete line without its newline, or None if more bytes are needed.

        Raises ControlProtocolError if a line exceeds ``max_line``.
        """
        nl = self._buf.find(b"\n", self._scanned)
        if nl < 0:
            self._scanned = len(self._buf)
            if self._scanned > self.max_line:
                raise ControlProtocolError(
                    f"control message longer than {self.max_line} bytes without a newline"
                )
            return None
        if nl > self.max_line:
            raise ControlProtocolError(f"control message of {nl} bytes exceeds {self.max_line}")
        line = bytes(self._buf[:nl])
        del self._buf[: nl + 1]
        self._scanned = 0
        return line

    def next_message(self) -> dict[str, Any] | None:
        """The next JSON object, skipping blank lines; None if more bytes are needed.

        Raises ControlProtocolError for an over-long line, invalid JSON or a non-object.
        """
        while True:
            line = self.next_line()
            if line is None:
                return None
            if line.strip():
                break
        try:
            value = json.loads(line)
        except (ValueError, RecursionError) as e:
            raise ControlProtocolError(f"control message is not valid JSON: {e}") from e
        if not isinstance(value, dict):
            raise ControlProtocolError(
                f"control message must be a JSON object, got {type(value).__name__}"
            )
        return value
