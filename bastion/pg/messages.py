"""Typed PostgreSQL v3 protocol messages for both directions.

Every message is a frozen dataclass holding *decoded* values, so the proxy and
the recorder reason about ``Bind.params`` rather than offsets into a buffer.
``encoding.encode`` turns any of them into wire bytes and the parsers in
``protocol`` (via ``decoding``) turn wire bytes back into them; the two are
exact inverses, which the round-trip tests check for every type.

Conventions:

- Text (SQL, names, parameter values of startup packets, error fields) is UTF-8;
  bytes that are not valid UTF-8 are kept with ``surrogateescape`` so that
  re-encoding gives back the very same bytes. Values that are opaque to the
  protocol (Bind parameters, DataRow columns, CopyData, SASL payloads) stay bytes.
- Sequence fields accept any sequence and are stored as tuples; ``None`` in a
  value list is SQL NULL (length -1 on the wire).
- Messages holding a dict (startup parameters, error fields) compare by value but
  are not hashable.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

PROTOCOL_3_0 = 3 << 16
"""Protocol version number of v3.0 as sent in a StartupMessage (196608)."""
SSL_REQUEST_CODE = 80877103
"""The fake protocol version that marks an SSLRequest (1234.5679)."""
GSSENC_REQUEST_CODE = 80877104
"""The fake protocol version that marks a GSSENCRequest (1234.5680)."""
CANCEL_REQUEST_CODE = 80877102
"""The fake protocol version that marks a CancelRequest (1234.5678)."""

TEXT = 0
"""Format code of text values."""
BINARY = 1
"""Format code of binary values."""

ERROR_FIELD_NAMES: Mapping[str, str] = {
    "S": "severity",
    "V": "severity_nonlocalized",
    "C": "code",
    "M": "message",
    "D": "detail",
    "H": "hint",
    "P": "position",
    "p": "internal_position",
    "q": "internal_query",
    "W": "where",
    "s": "schema_name",
    "t": "table_name",
    "c": "column_name",
    "d": "data_type_name",
    "n": "constraint_name",
    "F": "file",
    "L": "line",
    "R": "routine",
}
"""Names of the one-letter ErrorResponse/NoticeResponse field codes."""


class TransactionStatus(enum.StrEnum):
    """The backend's transaction state, as reported by every ReadyForQuery."""

    IDLE = "I"
    IN_TRANSACTION = "T"
    FAILED = "E"


def _freeze(obj: object, name: str) -> None:
    """Store a sequence field as a tuple so equality and immutability hold."""
    object.__setattr__(obj, name, tuple(getattr(obj, name)))


def _copy_dict(obj: object, name: str) -> None:
    object.__setattr__(obj, name, dict(getattr(obj, name)))


# --------------------------------------------------------------------------- frontend


@dataclass(frozen=True)
class StartupMessage:
    """The client's first packet: protocol version and parameters (user, database, ...)."""

    params: Mapping[str, str]
    version: int = PROTOCOL_3_0

    def __post_init__(self) -> None:
        _copy_dict(self, "params")

    @property
    def major(self) -> int:
        """Protocol major version (always 3 once parsed)."""
        return self.version >> 16

    @property
    def minor(self) -> int:
        """Protocol minor version the client asked for."""
        return self.version & 0xFFFF


@dataclass(frozen=True)
class SSLRequest:
    """The client asks to switch to TLS before the startup packet."""


@dataclass(frozen=True)
class GSSENCRequest:
    """The client asks for GSSAPI encryption (the bastion refuses it)."""


@dataclass(frozen=True)
class CancelRequest:
    """Sent on a fresh connection to cancel the query running in backend ``pid``.

    ``secret`` is 4 bytes in protocol 3.0 (up to 256 from 3.2 on).
    """

    pid: int
    secret: bytes


@dataclass(frozen=True)
class PasswordMessage:
    """A cleartext or ``md5...`` password, in answer to the matching request."""

    password: str


@dataclass(frozen=True)
class SASLInitialResponse:
    """First SASL message: the chosen mechanism and its optional initial data."""

    mechanism: str
    data: bytes | None


@dataclass(frozen=True)
class SASLResponse:
    """A later SASL message (e.g. SCRAM's client-final-message)."""

    data: bytes


@dataclass(frozen=True)
class GSSResponse:
    """A GSSAPI or SSPI token, in answer to AuthenticationGSS/SSPI/GSSContinue."""

    data: bytes


@dataclass(frozen=True)
class Query:
    """Simple-query protocol: one string that may hold several statements."""

    query: str


@dataclass(frozen=True)
class Parse:
    """Prepare ``query`` as statement ``name`` ("" is the unnamed statement)."""

    name: str
    query: str
    param_oids: Sequence[int] = ()

    def __post_init__(self) -> None:
        _freeze(self, "param_oids")


@dataclass(frozen=True)
class Bind:
    """Bind parameter values to ``statement``, creating ``portal``.

    ``param_formats`` is empty (all text), one code for all, or one per parameter.
    """

    portal: str
    statement: str
    param_formats: Sequence[int] = ()
    params: Sequence[bytes | None] = ()
    result_formats: Sequence[int] = ()

    def __post_init__(self) -> None:
        _freeze(self, "param_formats")
        _freeze(self, "params")
        _freeze(self, "result_formats")

    def param_format(self, index: int) -> int:
        """The format code that applies to parameter ``index``."""
        if not self.param_formats:
            return TEXT
        if len(self.param_formats) == 1:
            return self.param_formats[0]
        return self.param_formats[index]


@dataclass(frozen=True)
class Describe:
    """Ask for the description of a statement (``kind="S"``) or portal (``"P"``)."""

    kind: Literal["S", "P"]
    name: str


@dataclass(frozen=True)
class Execute:
    """Run ``portal``, returning at most ``max_rows`` rows (0 = all)."""

    portal: str
    max_rows: int = 0


@dataclass(frozen=True)
class Sync:
    """End of an extended-protocol batch: commit an implicit transaction, then ReadyForQuery."""


@dataclass(frozen=True)
class Flush:
    """Ask the server to send what it has buffered, without ending the batch."""


@dataclass(frozen=True)
class Close:
    """Close a statement (``kind="S"``) or portal (``"P"``)."""

    kind: Literal["S", "P"]
    name: str


@dataclass(frozen=True)
class CopyData:
    """A chunk of COPY data (either direction)."""

    data: bytes


@dataclass(frozen=True)
class CopyDone:
    """End of COPY data (either direction)."""


@dataclass(frozen=True)
class CopyFail:
    """The client aborts COPY FROM STDIN with an error message."""

    message: str


@dataclass(frozen=True)
class Terminate:
    """The client is closing the connection."""


@dataclass(frozen=True)
class FunctionCall:
    """Legacy fast-path function call by OID (parsed so it can be recorded or refused)."""

    function_oid: int
    arg_formats: Sequence[int] = ()
    args: Sequence[bytes | None] = ()
    result_format: int = TEXT

    def __post_init__(self) -> None:
        _freeze(self, "arg_formats")
        _freeze(self, "args")


# --------------------------------------------------------------------------- backend


@dataclass(frozen=True)
class AuthenticationOk:
    """Authentication succeeded."""


@dataclass(frozen=True)
class AuthenticationCleartextPassword:
    """The server wants the password in clear text (only sane over TLS)."""


@dataclass(frozen=True)
class AuthenticationMD5Password:
    """The server wants ``md5(md5(password + user) + salt)``."""

    salt: bytes


@dataclass(frozen=True)
class AuthenticationGSS:
    """The server wants GSSAPI authentication."""


@dataclass(frozen=True)
class AuthenticationGSSContinue:
    """Further GSSAPI/SSPI data from the server."""

    data: bytes


@dataclass(frozen=True)
class AuthenticationSSPI:
    """The server wants SSPI authentication."""


@dataclass(frozen=True)
class AuthenticationSASL:
    """The server offers SASL, listing mechanisms (e.g. ``SCRAM-SHA-256``)."""

    mechanisms: Sequence[str]

    def __post_init__(self) -> None:
        _freeze(self, "mechanisms")


@dataclass(frozen=True)
class AuthenticationSASLContinue:
    """A SASL challenge (e.g. SCRAM's server-first-message)."""

    data: bytes


@dataclass(frozen=True)
class AuthenticationSASLFinal:
    """SASL outcome data (e.g. SCRAM's server signature)."""

    data: bytes


@dataclass(frozen=True)
class SSLResponse:
    """The server's one-byte answer to SSLRequest: ``S`` (go TLS) or ``N``."""

    accepted: bool


@dataclass(frozen=True)
class GSSENCResponse:
    """The server's one-byte answer to GSSENCRequest: ``G`` or ``N``."""

    accepted: bool


@dataclass(frozen=True)
class ParameterStatus:
    """A run-time parameter's current value (server_version, client_encoding, ...)."""

    name: str
    value: str


@dataclass(frozen=True)
class BackendKeyData:
    """Backend process id and secret key, needed to send a CancelRequest later."""

    pid: int
    secret: bytes


@dataclass(frozen=True)
class ReadyForQuery:
    """The server is ready for a new query; carries the transaction status."""

    status: TransactionStatus


@dataclass(frozen=True)
class FieldDescription:
    """One column of a RowDescription."""

    name: str
    table_oid: int = 0
    column: int = 0
    type_oid: int = 0
    type_size: int = -1
    type_modifier: int = -1
    format: int = TEXT


@dataclass(frozen=True)
class RowDescription:
    """The columns of the rows that follow."""

    fields: Sequence[FieldDescription]

    def __post_init__(self) -> None:
        _freeze(self, "fields")


@dataclass(frozen=True)
class DataRow:
    """One result row; ``None`` is SQL NULL."""

    values: Sequence[bytes | None]

    def __post_init__(self) -> None:
        _freeze(self, "values")


@dataclass(frozen=True)
class CommandComplete:
    """A statement finished; ``tag`` is e.g. ``SELECT 3`` or ``INSERT 0 1``."""

    tag: str


@dataclass(frozen=True)
class EmptyQueryResponse:
    """The query string was empty."""


@dataclass(frozen=True)
class _FieldsMessage:
    """Shared shape of ErrorResponse and NoticeResponse: one-letter codes to strings."""

    fields: Mapping[str, str]

    def __post_init__(self) -> None:
        _copy_dict(self, "fields")

    @property
    def severity(self) -> str | None:
        """Non-localized severity (ERROR, FATAL, ...) when sent, else the localized one."""
        return self.fields.get("V", self.fields.get("S"))

    @property
    def sqlstate(self) -> str | None:
        """The five-character SQLSTATE code."""
        return self.fields.get("C")

    @property
    def message(self) -> str | None:
        """The primary human-readable message."""
        return self.fields.get("M")

    def named(self) -> dict[str, str]:
        """The fields keyed by readable names (``severity``, ``code``, ...)."""
        return {ERROR_FIELD_NAMES.get(k, k): v for k, v in self.fields.items()}


@dataclass(frozen=True)
class ErrorResponse(_FieldsMessage):
    """An error; ends the current statement (and, if FATAL, the connection)."""


@dataclass(frozen=True)
class NoticeResponse(_FieldsMessage):
    """A warning or notice; may arrive at any time."""


@dataclass(frozen=True)
class ParseComplete:
    """Answer to Parse."""


@dataclass(frozen=True)
class BindComplete:
    """Answer to Bind."""


@dataclass(frozen=True)
class CloseComplete:
    """Answer to Close."""


@dataclass(frozen=True)
class NoData:
    """Answer to Describe when the statement or portal returns no rows."""


@dataclass(frozen=True)
class ParameterDescription:
    """Answer to Describe(S): the parameter type OIDs."""

    type_oids: Sequence[int]

    def __post_init__(self) -> None:
        _freeze(self, "type_oids")


@dataclass(frozen=True)
class PortalSuspended:
    """Execute stopped at its row limit; the portal can be executed again."""


@dataclass(frozen=True)
class _CopyResponse:
    """Shared shape of the three COPY start messages."""

    format: int = TEXT
    column_formats: Sequence[int] = ()

    def __post_init__(self) -> None:
        _freeze(self, "column_formats")


@dataclass(frozen=True)
class CopyInResponse(_CopyResponse):
    """COPY FROM STDIN started: the client now sends CopyData."""


@dataclass(frozen=True)
class CopyOutResponse(_CopyResponse):
    """COPY TO STDOUT started: the server now sends CopyData."""


@dataclass(frozen=True)
class CopyBothResponse(_CopyResponse):
    """Bidirectional copy (streaming replication) started."""


@dataclass(frozen=True)
class NotificationResponse:
    """A NOTIFY delivered to this session."""

    pid: int
    channel: str
    payload: str


@dataclass(frozen=True)
class NegotiateProtocolVersion:
    """The server supports an older minor version or not all ``_pq_.`` options.

    ``version`` is the newest version the server speaks. The documentation calls
    it the minor version, but PostgreSQL sends (and libpq reads) the whole
    number, ``major << 16 | minor``; ``minor`` extracts the part that matters.
    """

    version: int
    unrecognized: Sequence[str] = ()

    @property
    def minor(self) -> int:
        """Newest minor version the server supports."""
        return self.version & 0xFFFF

    def __post_init__(self) -> None:
        _freeze(self, "unrecognized")


@dataclass(frozen=True)
class FunctionCallResponse:
    """Result of a FunctionCall; ``None`` is SQL NULL."""

    value: bytes | None


AuthenticationRequest: TypeAlias = (
    AuthenticationOk
    | AuthenticationCleartextPassword
    | AuthenticationMD5Password
    | AuthenticationGSS
    | AuthenticationGSSContinue
    | AuthenticationSSPI
    | AuthenticationSASL
    | AuthenticationSASLContinue
    | AuthenticationSASLFinal
)
"""Every ``R`` message the server may send."""

FrontendMessage: TypeAlias = (
    StartupMessage
    | SSLRequest
    | GSSENCRequest
    | CancelRequest
    | PasswordMessage
    | SASLInitialResponse
    | SASLResponse
    | GSSResponse
    | Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Sync
    | Flush
    | Close
    | CopyData
    | CopyDone
    | CopyFail
    | Terminate
    | FunctionCall
)
"""Everything a client can send."""

BackendMessage: TypeAlias = (
    AuthenticationRequest
    | SSLResponse
    | GSSENCResponse
    | ParameterStatus
    | BackendKeyData
    | ReadyForQuery
    | RowDescription
    | DataRow
    | CommandComplete
    | EmptyQueryResponse
    | ErrorResponse
    | NoticeResponse
    | ParseComplete
    | BindComplete
    | CloseComplete
    | NoData
    | ParameterDescription
    | PortalSuspended
    | CopyInResponse
    | CopyOutResponse
    | CopyBothResponse
    | CopyData
    | CopyDone
    | NotificationResponse
    | NegotiateProtocolVersion
    | FunctionCallResponse
)
"""Everything a server can send."""
