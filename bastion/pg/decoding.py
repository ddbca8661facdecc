"""Decoding PostgreSQL v3 message bodies, and the size bounds of each type.

This module knows how each message's *body* is laid out; buffering and
connection state live in ``protocol``. Decoders work on one complete body and
raise ``ProtocolViolation`` for anything malformed (short fields, missing NUL
terminators, bad enum bytes, trailing garbage): every message must consume its
body exactly, as PostgreSQL's own ``pq_getmsgend`` insists. The per-type bounds
let the parser reject an impossible length from the 5-byte header alone, before
buffering a body.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Literal

from bastion.pg.encoding import MAX_CANCEL_KEY
from bastion.pg.errors import ProtocolViolation
from bastion.pg.messages import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
    PROTOCOL_3_0,
    SSL_REQUEST_CODE,
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
    Bind,
    BindComplete,
    CancelRequest,
    Close,
    CloseComplete,
    CommandComplete,
    CopyBothResponse,
    CopyData,
    CopyDone,
    CopyFail,
    CopyInResponse,
    CopyOutResponse,
    DataRow,
    Describe,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    FrontendMessage,
    FunctionCall,
    FunctionCallResponse,
    GSSENCRequest,
    GSSResponse,
    NegotiateProtocolVersion,
    NoData,
    NoticeResponse,
    NotificationResponse,
    ParameterDescription,
    ParameterStatus,
    Parse,
    ParseComplete,
    PasswordMessage,
    PortalSuspended,
    Query,
    ReadyForQuery,
    RowDescription,
    SASLInitialResponse,
    SASLResponse,
    SSLRequest,
    StartupMessage,
    Sync,
    Terminate,
    TransactionStatus,
)

__all__ = [
    "BACKEND_BODY_LIMITS",
    "FRONTEND_BODY_LIMITS",
    "AuthContext",
    "decode_auth_response",
    "decode_backend",
    "decode_frontend",
    "decode_startup",
]

_U8 = struct.Struct("!B")
_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")


_SMALL = 10_000  # PostgreSQL's PQ_SMALL_MESSAGE_LIMIT for fixed-shape client messages
_AUTH_TOKEN = 65_535  # PG_MAX_AUTH_TOKEN_LENGTH

AuthContext = Literal["password", "sasl_initial", "sasl", "gss"]
"""Which kind of ``p`` message the client owes, from the server's last request."""

# (smallest, largest) legal body length per type byte; None = the parser's maximum.
# Checked from the 5-byte header, before the body is buffered.
FRONTEND_BODY_LIMITS: Mapping[int, tuple[int, int | None]] = {
    ord("Q"): (1, None),
    ord("P"): (4, None),
    ord("B"): (8, None),
    ord("D"): (2, _SMALL),
    ord("E"): (5, _SMALL),
    ord("S"): (0, 0),
    ord("H"): (0, 0),
    ord("C"): (2, _SMALL),
    ord("d"): (0, None),
    ord("c"): (0, 0),
    ord("f"): (1, None),
    ord("X"): (0, 0),
    ord("F"): (10, None),
    ord("p"): (0, _AUTH_TOKEN),
}
"""Body length bounds of every typed frontend message."""

BACKEND_BODY_LIMITS: Mapping[int, tuple[int, int | None]] = {
    ord("R"): (4, None),
    ord("S"): (2, None),
    ord("K"): (8, 4 + MAX_CANCEL_KEY),
    ord("Z"): (1, 1),
    ord("T"): (2, None),
    ord("D"): (2, None),
    ord("C"): (1, None),
    ord("I"): (0, 0),
    ord("E"): (1, None),
    ord("N"): (1, None),
    ord("1"): (0, 0),
    ord("2"): (0, 0),
    ord("3"): (0, 0),
    ord("n"): (0, 0),
    ord("s"): (0, 0),
    ord("t"): (2, None),
    ord("G"): (3, None),
    ord("H"): (3, None),
    ord("W"): (3, None),
    ord("d"): (0, None),
    ord("c"): (0, 0),
    ord("A"): (6, None),
    ord("v"): (8, None),
    ord("V"): (4, None),
}
"""Body length bounds of every backend message."""


class _Reader:
    """Reads fields off one message body; every shortfall is a ProtocolViolation."""

    __slots__ = ("_data", "_pos", "_what")

    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def fail(self, problem: str) -> ProtocolViolation:
        return ProtocolViolation(f"invalid {self._what} message: {problem}")

    def unpack(self, fmt: struct.Struct) -> int:
        if self._pos + fmt.size > len(self._data):
            raise self.fail("truncated")
        (value,) = fmt.unpack_from(self._data, self._pos)
        self._pos += fmt.size
        return int(value)

    def take(self, n: int) -> bytes:
        if n < 0 or self._pos + n > len(self._data):
            raise self.fail("truncated")
        chunk = self._data[self._pos : self._pos + n]
        self._pos += n
        return chunk

    def cstr(self) -> str:
        end = self._data.find(b"\x00", self._pos)
        if end < 0:
            raise self.fail("string is not NUL-terminated")
        text = self._data[self._pos : end].decode("utf-8", "surrogateescape")
        self._pos = end + 1
        return text

    def value(self) -> bytes | None:
        n = self.unpack(_I32)
        if n == -1:
            return None
        if n < 0:
            raise self.fail(f"invalid value length {n}")
        return self.take(n)

    def ints(self, fmt: struct.Struct) -> tuple[int, ...]:
        return tuple(self.unpack(fmt) for _ in range(self.unpack(_U16)))

    def values(self) -> tuple[bytes | None, ...]:
        return tuple(self.value() for _ in range(self.unpack(_U16)))

    def kind(self) -> Literal["S", "P"]:
        b = self.unpack(_U8)
        if b == ord("S"):
            return "S"
        if b == ord("P"):
            return "P"
        raise self.fail(f"kind must be 'S' or 'P', got {b}")

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    def end(self) -> None:
        if self._pos != len(self._data):
            raise self.fail(f"{len(self._data) - self._pos} unexpected bytes at the end")


def decode_startup(packet: bytes) -> StartupMessage | SSLRequest | GSSENCRequest | CancelRequest:
    """Decode one untyped packet (length word included) sent before the startup.

    Raises ProtocolViolation for a malformed packet, with SQLSTATE 0A000 for a
    protocol version other than 3.x.
    """
    r = _Reader(packet, "startup packet")
    r.unpack(_I32)  # length, already checked by the caller
    code = r.unpack(_I32)
    if code in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
        r.end()
        return SSLRequest() if code == SSL_REQUEST_CODE else GSSENCRequest()
    if code == CANCEL_REQUEST_CODE:
        pid = r.unpack(_I32)
        secret = r.rest()
        if not 4 <= len(secret) <= MAX_CANCEL_KEY:
            raise r.fail(f"cancel key of {len(secret)} bytes")
        return CancelRequest(pid, secret)
    if code >> 16 != PROTOCOL_3_0 >> 16:
        raise ProtocolViolation(
            f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: server supports 3.x",
            "0A000",
        )
    if not packet.endswith(b"\x00"):
        raise r.fail("expected terminator as last byte")
    params: dict[str, str] = {}
    while (name := r.cstr()) != "":
        params[name] = r.cstr()
    r.end()
    return StartupMessage(params, code)


def _describe_or_close(r: _Reader, cls: type[Describe] | type[Close]) -> Describe | Close:
    return cls(r.kind(), r.cstr())


def _decode_bind(r: _Reader) -> Bind:
    portal, statement = r.cstr(), r.cstr()
    formats = r.ints(_I16)
    params = r.values()
    if len(formats) not in (0, 1, len(params)):
        raise r.fail(f"{len(formats)} parameter formats but {len(params)} parameters")
    return Bind(portal, statement, formats, params, r.ints(_I16))


def _decode_function_call(r: _Reader) -> FunctionCall:
    oid = r.unpack(_U32)
    formats = r.ints(_I16)
    args = r.values()
    if len(formats) not in (0, 1, len(args)):
        raise r.fail(f"{len(formats)} argument formats but {len(args)} arguments")
    return FunctionCall(oid, formats, args, r.unpack(_I16))


_FRONTEND: dict[int, tuple[str, Callable[[_Reader], FrontendMessage]]] = {
    ord("Q"): ("Query", lambda r: Query(r.cstr())),
    ord("P"): ("Parse", lambda r: Parse(r.cstr(), r.cstr(), r.ints(_U32))),
    ord("B"): ("Bind", _decode_bind),
    ord("D"): ("Describe", lambda r: _describe_or_close(r, Describe)),
    ord("E"): ("Execute", lambda r: Execute(r.cstr(), r.unpack(_I32))),
    ord("S"): ("Sync", lambda r: Sync()),
    ord("H"): ("Flush", lambda r: Flush()),
    ord("C"): ("Close", lambda r: _describe_or_close(r, Close)),
    ord("d"): ("CopyData", lambda r: CopyData(r.rest())),
    ord("c"): ("CopyDone", lambda r: CopyDone()),
    ord("f"): ("CopyFail", lambda r: CopyFail(r.cstr())),
    ord("X"): ("Terminate", lambda r: Terminate()),
    ord("F"): ("FunctionCall", _decode_function_call),
}


def decode_frontend(type_byte: int, body: bytes) -> FrontendMessage:
    """Decode a typed client message other than ``p`` (see ``decode_auth_response``)."""
    entry = _FRONTEND.get(type_byte)
    if entry is None:
        raise ProtocolViolation(f"invalid frontend message type {type_byte}")
    name, fn = entry
    r = _Reader(body, name)
    msg = fn(r)
    r.end()
    return msg


def _decode_sasl_initial(r: _Reader) -> SASLInitialResponse:
    return SASLInitialResponse(r.cstr(), r.value())


_AUTH_RESPONSES: dict[str, Callable[[_Reader], FrontendMessage]] = {
    "password": lambda r: PasswordMessage(r.cstr()),
    "sasl_initial": _decode_sasl_initial,
    "sasl": lambda r: SASLResponse(r.rest()),
    "gss": lambda r: GSSResponse(r.rest()),
}


def decode_auth_response(body: bytes, context: AuthContext) -> FrontendMessage:
    """Decode a ``p`` message; its shape depends on what the server asked for."""
    r = _Reader(body, "password")
    msg = _AUTH_RESPONSES[context](r)
    r.end()
    return msg


def _decode_auth(r: _Reader) -> BackendMessage:
    code = r.unpack(_I32)
    if code == 0:
        return AuthenticationOk()
    if code == 3:
        return AuthenticationCleartextPassword()
    if code == 5:
        return AuthenticationMD5Password(r.take(4))
    if code == 7:
        return AuthenticationGSS()
    if code == 8:
        return AuthenticationGSSContinue(r.rest())
    if code == 9:
        return AuthenticationSSPI()
    if code == 10:
        mechanisms: list[str] = []
        while mech := r.cstr():
            mechanisms.append(mech)
        return AuthenticationSASL(mechanisms)
    if code == 11:
        return AuthenticationSASLContinue(r.rest())
    if code == 12:
        return AuthenticationSASLFinal(r.rest())
    raise r.fail(f"unsupported authentication request {code}")


def _decode_key(r: _Reader) -> BackendKeyData:
    pid = r.unpack(_I32)
    secret = r.rest()
    if not 4 <= len(secret) <= MAX_CANCEL_KEY:
        raise r.fail(f"cancel key of {len(secret)} bytes")
    return BackendKeyData(pid, secret)


def _decode_ready(r: _Reader) -> ReadyForQuery:
    b = r.unpack(_U8)
    try:
        return ReadyForQuery(TransactionStatus(chr(b)))
    except ValueError:
        raise r.fail(f"invalid transaction status {b}") from None


def _decode_row_description(r: _Reader) -> RowDescription:
    fields = []
    for _ in range(r.unpack(_U16)):
        name = r.cstr()
        table, column, type_oid = r.unpack(_U32), r.unpack(_I16), r.unpack(_U32)
        size, modifier, fmt = r.unpack(_I16), r.unpack(_I32), r.unpack(_I16)
        fields.append(FieldDescription(name, table, column, type_oid, size, modifier, fmt))
    return RowDescription(fields)


def _decode_fields(r: _Reader) -> dict[str, str]:
    fields: dict[str, str] = {}
    while code := r.unpack(_U8):
        fields[chr(code)] = r.cstr()
    return fields


def _decode_negotiate(r: _Reader) -> NegotiateProtocolVersion:
    version, count = r.unpack(_I32), r.unpack(_I32)
    if count < 0:
        raise r.fail(f"negative option count {count}")
    names: list[str] = []
    for _ in range(count):
        names.append(r.cstr())  # a lying count runs out of body and fails here
    return NegotiateProtocolVersion(version, names)


def _copy_start(r: _Reader) -> tuple[int, tuple[int, ...]]:
    return r.unpack(_U8), r.ints(_I16)


_BACKEND: dict[int, tuple[str, Callable[[_Reader], BackendMessage]]] = {
    ord("R"): ("Authentication", _decode_auth),
    ord("S"): ("ParameterStatus", lambda r: ParameterStatus(r.cstr(), r.cstr())),
    ord("K"): ("BackendKeyData", _decode_key),
    ord("Z"): ("ReadyForQuery", _decode_ready),
    ord("T"): ("RowDescription", _decode_row_description),
    ord("D"): ("DataRow", lambda r: DataRow(r.values())),
    ord("C"): ("CommandComplete", lambda r: CommandComplete(r.cstr())),
    ord("I"): ("EmptyQueryResponse", lambda r: EmptyQueryResponse()),
    ord("E"): ("ErrorResponse", lambda r: ErrorResponse(_decode_fields(r))),
    ord("N"): ("NoticeResponse", lambda r: NoticeResponse(_decode_fields(r))),
    ord("1"): ("ParseComplete", lambda r: ParseComplete()),
    ord("2"): ("BindComplete", lambda r: BindComplete()),
    ord("3"): ("CloseComplete", lambda r: CloseComplete()),
    ord("n"): ("NoData", lambda r: NoData()),
    ord("s"): ("PortalSuspended", lambda r: PortalSuspended()),
    ord("t"): ("ParameterDescription", lambda r: ParameterDescription(r.ints(_U32))),
    ord("G"): ("CopyInResponse", lambda r: CopyInResponse(*_copy_start(r))),
    ord("H"): ("CopyOutResponse", lambda r: CopyOutResponse(*_copy_start(r))),
    ord("W"): ("CopyBothResponse", lambda r: CopyBothResponse(*_copy_start(r))),
    ord("d"): ("CopyData", lambda r: CopyData(r.rest())),
    ord("c"): ("CopyDone", lambda r: CopyDone()),
    ord("A"): (
        "NotificationResponse",
        lambda r: NotificationResponse(r.unpack(_I32), r.cstr(), r.cstr()),
    ),
    ord("v"): ("NegotiateProtocolVersion", _decode_negotiate),
    ord("V"): ("FunctionCallResponse", lambda r: FunctionCallResponse(r.value())),
}


def decode_backend(type_byte: int, body: bytes) -> BackendMessage:
    """Decode one typed server message."""
    entry = _BACKEND.get(type_byte)
    if entry is None:
        raise ProtocolViolation(f"invalid backend message type {type_byte}")
    name, fn = entry
    r = _Reader(body, name)
    msg = fn(r)
    r.end()
    return msg
