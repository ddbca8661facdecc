"""Sans-IO parsers for the PostgreSQL v3 wire protocol, in the style of h11.

Feed bytes from a socket (or a TLS object) with ``receive_data``; pull typed
messages with ``next_event`` until it returns a sentinel:

- ``NEED_DATA``: the buffer holds no complete message; read more.
- ``PAUSED``: (frontend only) the client sent SSLRequest/GSSENCRequest and the
  parser waits to be told the server's answer (``backend_sent``) because what
  follows depends on it: more plaintext, or a TLS handshake.
- ``CLOSED``: the peer closed its side (``receive_data(b"")``) between messages.

Each direction needs a little of the other's context, exactly as in PostgreSQL:
the shape of a client's ``p`` message depends on the server's last
Authentication request, and the server's one-byte answer to SSLRequest has no
type header. The caller therefore reports the other side's messages with
``FrontendParser.backend_sent`` and ``BackendParser.frontend_sent`` (a proxy
reports what it relays or sends itself; a passive observer reports what it sees).

Limits are checked from the 5-byte header (or the 4-byte startup length) before
any body is buffered, so a declared length of 2 GiB costs nothing. All invalid
input raises ``ProtocolViolation`` with an SQLSTATE; the parser then stays failed.
"""

from __future__ import annotations

import enum
import struct
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from typing import Final, Generic, TypeVar

from bastion.pg.decoding import (
    BACKEND_BODY_LIMITS,
    FRONTEND_BODY_LIMITS,
    AuthContext,
    decode_auth_response,
    decode_backend,
    decode_frontend,
    decode_startup,
)
from bastion.pg.encoding import encode
from bastion.pg.errors import (
    PROGRAM_LIMIT_EXCEEDED,
    PROTOCOL_VIOLATION,
    LocalProtocolError,
    ProtocolViolation,
)
from bastion.pg.messages import (
    AuthenticationCleartextPassword,
    AuthenticationGSS,
    AuthenticationGSSContinue,
    AuthenticationMD5Password,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    AuthenticationSSPI,
    BackendKeyData,
    BackendMessage,
    BindComplete,
    CancelRequest,
    CloseComplete,
    CopyDone,
    DataRow,
    Describe,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    Flush,
    FrontendMessage,
    GSSENCRequest,
    GSSENCResponse,
    NoData,
    ParameterStatus,
    ParseComplete,
    PortalSuspended,
    ReadyForQuery,
    RowDescription,
    SSLRequest,
    SSLResponse,
    StartupMessage,
    Sync,
    Terminate,
    TransactionStatus,
)

__all__ = [
    "CLOSED",
    "DEFAULT_BACKEND_MAX",
    "DEFAULT_FRONTEND_MAX",
    "DEFAULT_STARTUP_MAX",
    "NEED_DATA",
    "PAUSED",
    "BackendParser",
    "FrontendParser",
    "FrontendPhase",
    "LocalProtocolError",
    "ProtocolViolation",
    "Sentinel",
    "encode",
    "error_response",
]

DEFAULT_FRONTEND_MAX = 64 * 1024 * 1024
"""Default largest client message body (Query, Bind, CopyData...): 64 MiB."""
DEFAULT_BACKEND_MAX = 1024 * 1024 * 1024
"""Default largest server message body (a DataRow can legitimately be huge): 1 GiB."""
DEFAULT_STARTUP_MAX = 10_000
"""Default largest startup packet, PostgreSQL's own MAX_STARTUP_PACKET_LENGTH."""

_I32 = struct.Struct("!i")
_TLS_HANDSHAKE = 0x16  # first byte of a TLS ClientHello; a startup length never starts so


class Sentinel(enum.Enum):
    """What ``next_event`` returns when it has no message to give."""

    NEED_DATA = "NEED_DATA"
    PAUSED = "PAUSED"
    CLOSED = "CLOSED"


NEED_DATA: Final = Sentinel.NEED_DATA
PAUSED: Final = Sentinel.PAUSED
CLOSED: Final = Sentinel.CLOSED


class FrontendPhase(enum.Enum):
    """Where a client connection is, which decides how its next bytes are framed."""

    STARTUP = "startup"  # untyped packets: StartupMessage, SSL/GSSENC request, cancel
    NEGOTIATING = "negotiating"  # asked for encryption; waiting for the server's answer
    AUTHENTICATING = "authenticating"  # only password/SASL messages (and Terminate)
    READY = "ready"  # normal operation: queries, extended protocol, COPY
    DONE = "done"  # Terminate, CancelRequest or a fatal auth error: nothing more may come
    ERROR = "error"  # a ProtocolViolation was raised; the parser is unusable


_P = FrontendPhase

# Every phase change, whichever side's message causes it. Messages not listed
# leave the phase alone; ``_READY_TYPES``/``_AUTH_TYPES`` say what may arrive.
_TRANSITIONS: Mapping[tuple[FrontendPhase, type[object]], FrontendPhase] = {
    (_P.STARTUP, SSLRequest): _P.NEGOTIATING,
    (_P.STARTUP, GSSENCRequest): _P.NEGOTIATING,
    (_P.STARTUP, CancelRequest): _P.DONE,
    (_P.STARTUP, StartupMessage): _P.AUTHENTICATING,
    (_P.NEGOTIATING, SSLResponse): _P.STARTUP,
    (_P.NEGOTIATING, GSSENCResponse): _P.STARTUP,
    (_P.NEGOTIATING, ErrorResponse): _P.DONE,
    (_P.AUTHENTICATING, AuthenticationOk): _P.READY,
    (_P.AUTHENTICATING, ErrorResponse): _P.DONE,
    (_P.AUTHENTICATING, Terminate): _P.DONE,
    (_P.READY, Terminate): _P.DONE,
}

# The ``p`` message a client owes after each Authentication request (None: none).
_AUTH_CONTEXT: Mapping[type[object], AuthContext | None] = {
    AuthenticationOk: None,
    AuthenticationCleartextPassword: "password",
    AuthenticationMD5Password: "password",
    AuthenticationGSS: "gss",
    AuthenticationSSPI: "gss",
    AuthenticationGSSContinue: "gss",
    AuthenticationSASL: "sasl_initial",
    AuthenticationSASLContinue: "sasl",
    AuthenticationSASLFinal: None,
}

_AUTH_TYPES: Final = frozenset({ord("p"), ord("X")})
_READY_TYPES: Final = frozenset(FRONTEND_BODY_LIMITS) - {ord("p")}
_BACKEND_TYPES: Final = frozenset(BACKEND_BODY_LIMITS)
_M = TypeVar("_M", FrontendMessage, BackendMessage)


def _common(messages: list[_M]) -> dict[int, dict[bytes, _M]]:
    """Pre-decoded messages whose wire form is always the same (most have no body).

    Messages are immutable, so the parsers hand out these shared instances and
    skip decoding the most frequent messages of every round trip.
    """
    table: dict[int, dict[bytes, _M]] = {}
    for msg in messages:
        wire = encode(msg)
        table.setdefault(wire[0], {})[wire[5:]] = msg
    return table


_COMMON_FRONTEND: Final[dict[int, dict[bytes, FrontendMessage]]] = _common(
    [Sync(), Flush(), CopyDone(), Execute("", 0), Describe("P", ""), Describe("S", "")]
)
_COMMON_BACKEND: Final[dict[int, dict[bytes, BackendMessage]]] = _common(
    [
        ParseComplete(),
        BindComplete(),
        CloseComplete(),
        NoData(),
        PortalSuspended(),
        EmptyQueryResponse(),
        CopyDone(),
        *(ReadyForQuery(status) for status in TransactionStatus),
    ]
)
_DATA_ROW: Final = ord("D")
_UNDECODED_ROW: Final = DataRow(())
_ROW_DESCRIPTION: Final = ord("T")
_UNDECODED_DESCRIPTION: Final = RowDescription(())


def _show_type(type_byte: int) -> str:
    char = chr(type_byte)
    return repr(char) if char.isprintable() and type_byte < 128 else str(type_byte)


def error_response(sqlstate: str, message: str, severity: str = "FATAL") -> bytes:
    """Wire bytes of an ErrorResponse, e.g. to answer a ProtocolViolation before closing."""
    return encode(ErrorResponse({"S": severity, "V": severity, "C": sqlstate, "M": message}))


_T = TypeVar("_T")


class _Parser(ABC, Generic[_T]):
    """Buffering, framing, EOF and error state shared by both directions."""

    _direction = ""

    def __init__(self, max_message_length: int) -> None:
        if max_message_length < 0:
            raise ValueError("max_message_length must not be negative")
        self.max_message_length = max_message_length
        self._buf = bytearray()
        self._pos = 0
        self._eof = False
        self._error: ProtocolViolation | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as messages."""
        return len(self._buf) - self._pos

    @property
    def failed(self) -> bool:
        """True once a ProtocolViolation has been raised."""
        return self._error is not None

    def receive_data(self, data: bytes) -> None:
        """Add bytes from the peer; ``b""`` means the peer closed its side (EOF).

        Raises LocalProtocolError if data is fed after EOF.
        """
        if self._eof:
            if data:
                raise LocalProtocolError("received data after EOF")
            return
        if not data:
            self._eof = True
            return
        if self._pos:  # compact lazily: once per receive, not once per message
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> _T | Sentinel:
        """The next complete message, or a Sentinel saying why there is none.

        Raises ProtocolViolation on invalid input; every later call raises again.
        """
        if self._error is not None:
            raise ProtocolViolation(
                f"{self._direction} stream already failed: {self._error.message}",
                self._error.sqlstate,
            ) from self._error
        try:
            return self._next()
        except ProtocolViolation as e:
            self._fail(e)
            raise

    def take_unparsed(self) -> bytes:
        """Remove and return the bytes received but not yet parsed (a proxy changing
        hands between two readers forwards them as they came)."""
        data = bytes(self._buf[self._pos :])
        self._buf = bytearray()
        self._pos = 0
        return data

    def events(self) -> Iterator[_T]:
        """Every complete message now available (stops at any Sentinel)."""
        while not isinstance(event := self.next_event(), Sentinel):
            yield event

    @abstractmethod
    def _next(self) -> _T | Sentinel:
        """Decode the next message from the buffer (each direction has its own rules)."""

    def _fail(self, error: ProtocolViolation) -> None:
        self._error = error

    def _idle(self) -> Sentinel:
        """No complete message: NEED_DATA, CLOSED, or an error if EOF cut one short."""
        if not self._eof:
            return NEED_DATA
        if self.buffered:
            raise ProtocolViolation(f"{self._direction} closed the connection mid-message")
        return CLOSED

    def _take_typed(
        self, allowed: frozenset[int], limits: Mapping[int, tuple[int, int | None]]
    ) -> tuple[int, bytes] | None:
        """Split off one ``type + length + body`` frame, validating the header first."""
        if self.buffered < 5:
            return None
        buf, pos = self._buf, self._pos
        type_byte = buf[pos]
        if type_byte not in allowed:
            raise ProtocolViolation(self._unexpected(type_byte))
        (length,) = _I32.unpack_from(buf, pos + 1)
        size = length - 4
        low, high = limits[type_byte]
        if size < low or (high is not None and size > high):
            raise ProtocolViolation(
                f"invalid length {length} of {self._direction} message {_show_type(type_byte)}"
            )
        if size > self.max_message_length:
            raise ProtocolViolation(
                f"{self._direction} message {_show_type(type_byte)} of {size} bytes exceeds "
                f"the limit of {self.max_message_length}",
                PROGRAM_LIMIT_EXCEEDED,
            )
        end = pos + 5 + size
        if len(buf) < end:
            return None
        self._pos = end
        return type_byte, bytes(buf[pos + 5 : end])

    def _unexpected(self, type_byte: int) -> str:
        return f"invalid {self._direction} message type {_show_type(type_byte)}"


class FrontendParser(_Parser[FrontendMessage]):
    """Parses what a PostgreSQL client sends.

    The first packets carry no type byte (StartupMessage, SSLRequest,
    GSSENCRequest, CancelRequest). After an SSLRequest/GSSENCRequest the parser
    returns PAUSED until ``backend_sent(SSLResponse(...))`` reports the answer;
    if it was "yes", any plaintext already buffered is an injection attempt
    (CVE-2021-23214) and raises. During authentication only ``p`` messages are
    allowed and their shape comes from the request reported by ``backend_sent``;
    ``backend_sent(AuthenticationOk())`` opens normal operation.
    """

    _direction = "frontend"

    def __init__(
        self,
        max_message_length: int = DEFAULT_FRONTEND_MAX,
        max_startup_length: int = DEFAULT_STARTUP_MAX,
    ) -> None:
        super().__init__(max_message_length)
        self.max_startup_length = max_startup_length
        self._phase = FrontendPhase.STARTUP
        self._auth_context: AuthContext | None = None
        self._ssl_done = False
        self._gss_done = False
        self._requested: type[SSLRequest] | type[GSSENCRequest] | None = None
        self.startup: StartupMessage | None = None
        """The StartupMessage, once received (user, database, options...)."""

    @property
    def phase(self) -> FrontendPhase:
        """The connection phase, which decides how the next bytes are framed."""
        return self._phase

    @property
    def auth_context(self) -> AuthContext | None:
        """The kind of ``p`` message the client owes now, if any."""
        return self._auth_context

    def backend_sent(self, msg: BackendMessage) -> None:
        """Report a message the server side sent to this client.

        Needed for SSLResponse/GSSENCResponse (to leave PAUSED), Authentication*
        (to know what a ``p`` message holds) and AuthenticationOk (to enter READY);
        anything else is accepted and ignored. Raises ProtocolViolation if the
        server accepted encryption while unencrypted client bytes are buffered;
        LocalProtocolError if an encryption answer comes when none was asked for.
        """
        if self._phase is FrontendPhase.ERROR:
            return
        if isinstance(msg, SSLResponse | GSSENCResponse):
            self._encryption_answer(msg)
        elif self._phase is FrontendPhase.AUTHENTICATING and type(msg) in _AUTH_CONTEXT:
            self._auth_context = _AUTH_CONTEXT[type(msg)]
        self._transition(msg)

    def _encryption_answer(self, msg: SSLResponse | GSSENCResponse) -> None:
        expected = SSLResponse if self._requested is SSLRequest else GSSENCResponse
        if self._phase is not FrontendPhase.NEGOTIATING or not isinstance(msg, expected):
            raise LocalProtocolError(f"{type(msg).__name__} but the client did not ask for it")
        if msg.accepted:
            if self.buffered:
                error = ProtocolViolation("received unencrypted data after encryption request")
                self._fail(error)
                raise error
            # Once encrypted, neither kind of request may come again (as in PostgreSQL).
            self._ssl_done = self._gss_done = True
        self._requested = None

    def _transition(self, msg: object) -> None:
        new = _TRANSITIONS.get((self._phase, type(msg)))
        if new is not None:
            self._phase = new

    def _fail(self, error: ProtocolViolation) -> None:
        super()._fail(error)
        self._phase = FrontendPhase.ERROR

    def _next(self) -> FrontendMessage | Sentinel:
        phase = self._phase
        if phase is FrontendPhase.NEGOTIATING:
            return PAUSED
        if phase is FrontendPhase.STARTUP:
            return self._next_startup()
        if phase is FrontendPhase.DONE:
            if self.buffered:
                raise ProtocolViolation("client sent data after the end of its conversation")
            return self._idle()
        allowed = _AUTH_TYPES if phase is FrontendPhase.AUTHENTICATING else _READY_TYPES
        frame = self._take_typed(allowed, FRONTEND_BODY_LIMITS)
        if frame is None:
            return self._idle()
        type_byte, body = frame
        msg: FrontendMessage
        if type_byte == ord("p"):
            if self._auth_context is None:
                raise ProtocolViolation("password message when none was requested")
            msg = decode_auth_response(body, self._auth_context)
            self._auth_context = None  # one answer per request
        else:
            known = _COMMON_FRONTEND.get(type_byte)
            common = known.get(body) if known is not None else None
            msg = common if common is not None else decode_frontend(type_byte, body)
        self._transition(msg)
        return msg

    def _unexpected(self, type_byte: int) -> str:
        if self._phase is FrontendPhase.AUTHENTICATING:
            return f"expected password response, got message type {_show_type(type_byte)}"
        return super()._unexpected(type_byte)

    def _next_startup(self) -> FrontendMessage | Sentinel:
        if self.buffered < 4:
            return self._idle()
        if self._buf[self._pos] == _TLS_HANDSHAKE:
            raise ProtocolViolation("direct TLS handshake (sslnegotiation=direct) not supported")
        (length,) = _I32.unpack_from(self._buf, self._pos)
        if length < 8:
            raise ProtocolViolation(f"invalid length of startup packet: {length}")
        if length > self.max_startup_length:
            raise ProtocolViolation(
                f"startup packet of {length} bytes exceeds the limit of {self.max_startup_length}",
                PROGRAM_LIMIT_EXCEEDED,
            )
        if self.buffered < length:
            return self._idle()
        packet = bytes(self._buf[self._pos : self._pos + length])
        self._pos += length
        msg = decode_startup(packet)
        if isinstance(msg, SSLRequest):
            if self._ssl_done:
                raise ProtocolViolation("SSLRequest sent twice", PROTOCOL_VIOLATION)
            self._ssl_done = True
            self._requested = SSLRequest
        elif isinstance(msg, GSSENCRequest):
            if self._gss_done:
                raise ProtocolViolation("GSSENCRequest sent twice", PROTOCOL_VIOLATION)
            self._gss_done = True
            self._requested = GSSENCRequest
        elif isinstance(msg, StartupMessage):
            self.startup = msg
        self._transition(msg)
        return msg


class BackendParser(_Parser[BackendMessage]):
    """Parses what a PostgreSQL server sends.

    Messages are self-describing except the one-byte answer to an encryption
    request, so the caller reports SSLRequest/GSSENCRequest with
    ``frontend_sent``. The parser keeps what a proxy needs to know about the
    session: transaction status, backend key, run-time parameters.
    """

    _direction = "backend"

    def __init__(
        self, max_message_length: int = DEFAULT_BACKEND_MAX, *, decode_rows: bool = True
    ) -> None:
        super().__init__(max_message_length)
        self.decode_rows = decode_rows
        """False: DataRows and RowDescriptions come out as shared, empty messages
        (count them, skip the values): a relay that keeps no rows saves that decoding."""
        self._awaiting: type[SSLRequest] | type[GSSENCRequest] | None = None
        self.transaction_status: TransactionStatus | None = None
        """From the latest ReadyForQuery (None before the first)."""
        self.backend_key: BackendKeyData | None = None
        """The server's cancel key, once sent."""
        self.parameters: dict[str, str] = {}
        """Latest value of every ParameterStatus (server_version, TimeZone, ...)."""

    @property
    def awaiting_encryption_response(self) -> bool:
        """True while the next byte is the single-byte answer to an encryption request."""
        return self._awaiting is not None

    def frontend_sent(self, msg: FrontendMessage) -> None:
        """Report a message the client side sent; only encryption requests matter."""
        if isinstance(msg, SSLRequest):
            self._awaiting = SSLRequest
        elif isinstance(msg, GSSENCRequest):
            self._awaiting = GSSENCRequest

    def _next(self) -> BackendMessage | Sentinel:
        if self._awaiting is not None:
            answer = self._encryption_answer()
            if answer is not None:
                return answer
        frame = self._take_typed(_BACKEND_TYPES, BACKEND_BODY_LIMITS)
        if frame is None:
            return self._idle()
        if not self.decode_rows:
            if frame[0] == _DATA_ROW:
                return _UNDECODED_ROW
            if frame[0] == _ROW_DESCRIPTION:
                return _UNDECODED_DESCRIPTION
        known = _COMMON_BACKEND.get(frame[0])
        found = known.get(frame[1]) if known is not None else None
        msg = found if found is not None else decode_backend(*frame)
        if isinstance(msg, ReadyForQuery):
            self.transaction_status = msg.status
        elif isinstance(msg, BackendKeyData):
            self.backend_key = msg
        elif isinstance(msg, ParameterStatus):
            self.parameters[msg.name] = msg.value
        return msg

    def _encryption_answer(self) -> BackendMessage | Sentinel | None:
        """The S/G/N byte, or None if the server answered with a typed ErrorResponse."""
        if not self.buffered:
            return self._idle()
        byte = self._buf[self._pos]
        ssl = self._awaiting is SSLRequest
        if byte == ord("E"):  # a server too old to know the request (or refusing it)
            self._awaiting = None
            return None
        if byte not in (ord("N"), ord("S") if ssl else ord("G")):
            raise ProtocolViolation(
                f"invalid answer to {'SSL' if ssl else 'GSSENC'} request: {_show_type(byte)}"
            )
        self._pos += 1
        self._awaiting = None
        accepted = byte != ord("N")
        if accepted and self.buffered:
            raise ProtocolViolation("received unencrypted data after encryption response")
        return SSLResponse(accepted) if ssl else GSSENCResponse(accepted)
