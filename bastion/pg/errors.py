"""Errors raised by the PostgreSQL protocol core, each carrying an SQLSTATE.

The split follows h11: ``ProtocolViolation`` means the *peer* sent bytes that are
not valid protocol (the proxy answers with an ErrorResponse carrying the
exception's SQLSTATE and closes); ``LocalProtocolError`` means *our* code asked
for something the protocol cannot express (a NUL inside a string, a count that
does not fit its field). Parsers raise nothing but ``ProtocolViolation`` on any
input, which the fuzz tests enforce.
"""

from __future__ import annotations

__all__ = [
    "FEATURE_NOT_SUPPORTED",
    "PROGRAM_LIMIT_EXCEEDED",
    "PROTOCOL_VIOLATION",
    "LocalProtocolError",
    "PgProtocolError",
    "ProtocolViolation",
]

PROTOCOL_VIOLATION = "08P01"
"""SQLSTATE protocol_violation: malformed or out-of-sequence message."""

PROGRAM_LIMIT_EXCEEDED = "54000"
"""SQLSTATE program_limit_exceeded: a message longer than the configured maximum."""

FEATURE_NOT_SUPPORTED = "0A000"
"""SQLSTATE feature_not_supported: e.g. a protocol version other than 3."""


class PgProtocolError(Exception):
    """Base class of every error the PostgreSQL protocol core raises on purpose.

    ``sqlstate`` is the five-character code to put in an ErrorResponse.
    """

    def __init__(self, message: str, sqlstate: str = PROTOCOL_VIOLATION) -> None:
        super().__init__(message)
        self.message = message
        self.sqlstate = sqlstate


class ProtocolViolation(PgProtocolError):
    """The peer sent bytes that are not valid PostgreSQL v3 protocol.

    The parser that raised it is unusable afterwards (it stays in its error state);
    the connection must be closed, ideally after sending ``error_response``.
    """


class LocalProtocolError(PgProtocolError, ValueError):
    """Our own code tried to encode a value the wire format cannot carry."""
