"""Encoding PostgreSQL v3 messages: ``encode(msg) -> bytes``.

One small function per message type lays out its body; ``encode`` dispatches on
the message's class. Values the wire cannot carry (a NUL inside a string, a count
above 65535, an integer outside its field) raise ``LocalProtocolError`` rather
than producing bytes a peer would misread. ``decoding`` is the exact inverse.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from bastion.pg.errors import LocalProtocolError
from bastion.pg.messages import (
    CANCEL_REQUEST_CODE,
    GSSENC_REQUEST_CODE,
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
    Flush,
    FrontendMessage,
    FunctionCall,
    FunctionCallResponse,
    GSSENCRequest,
    GSSENCResponse,
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
    SSLResponse,
    StartupMessage,
    Sync,
    Terminate,
    TransactionStatus,
)

__all__ = ["MAX_CANCEL_KEY", "encode"]

_U8 = struct.Struct("!B")
_I16 = struct.Struct("!h")
_U16 = struct.Struct("!H")
_I32 = struct.Struct("!i")
_U32 = struct.Struct("!I")

MAX_CANCEL_KEY = 256
"""Longest cancel secret accepted (protocol 3.2 allows up to 256 bytes; 3.0 uses 4)."""


def _text(value: str, what: str) -> bytes:
    try:
        data = value.encode("utf-8", "surrogateescape")
    except (UnicodeEncodeError, AttributeError) as e:
        raise LocalProtocolError(f"{what} must be encodable text, got {value!r}") from e
    if b"\x00" in data:
        raise LocalProtocolError(f"{what} must not contain NUL: {value!r}")
    return data


class _Writer:
    """Collects a message body, turning out-of-range values into LocalProtocolError."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def pack(self, fmt: struct.Struct, value: int, what: str) -> _Writer:
        try:
            self._parts.append(fmt.pack(value))
        except struct.error as e:
            raise LocalProtocolError(f"{what} does not fit its field: {value!r}") from e
        return self

    def cstr(self, value: str, what: str) -> _Writer:
        self._parts.append(_text(value, what) + b"\x00")
        return self

    def raw(self, data: bytes, what: str) -> _Writer:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise LocalProtocolError(f"{what} must be bytes, got {type(data).__name__}")
        self._parts.append(bytes(data))
        return self

    def value(self, data: bytes | None, what: str) -> _Writer:
        if data is None:
            return self.pack(_I32, -1, what)
        self.raw(data, what)
        self._parts.insert(-1, _I32.pack(len(self._parts[-1])))
        return self

    def ints(self, fmt: struct.Struct, values: Any, what: str) -> _Writer:
        values = tuple(values)
        self.pack(_U16, len(values), f"number of {what}")
        for v in values:
            self.pack(fmt, v, what)
        return self

    def values(self, values: Any, what: str) -> _Writer:
        values = tuple(values)
        self.pack(_U16, len(values), f"number of {what}")
        for v in values:
            self.value(v, what)
        return self

    def body(self) -> bytes:
        return b"".join(self._parts)

    def frame(self, type_byte: bytes) -> bytes:
        body = self.body()
        if len(body) + 4 > 0x7FFF_FFFF:
            raise LocalProtocolError("message too long for the protocol's 32-bit length")
        return type_byte + _I32.pack(len(body) + 4) + body

    def packet(self) -> bytes:
        """An untyped startup-family packet: length word, then the body."""
        body = self.body()
        return _I32.pack(len(body) + 4) + body


_M = TypeVar("_M")
_ENCODERS: dict[type[Any], Callable[[Any], bytes]] = {}


def _encodes(cls: type[_M]) -> Callable[[Callable[[_M], bytes]], Callable[[_M], bytes]]:
    def register(fn: Callable[[_M], bytes]) -> Callable[[_M], bytes]:
        _ENCODERS[cls] = fn
        return fn

    return register


def encode(msg: FrontendMessage | BackendMessage) -> bytes:
    """The wire bytes of ``msg``.

    Raises LocalProtocolError if a value cannot be carried (NUL in a string, an
    integer out of its field's range, a count above 65535, a format-code list that
    matches neither one nor every parameter).
    """
    fn = _ENCODERS.get(type(msg))
    if fn is None:
        raise LocalProtocolError(f"not a PostgreSQL message: {msg!r}")
    return fn(msg)


def _fixed(cls: type[Any], type_byte: bytes) -> None:
    wire = type_byte + _I32.pack(4)
    _ENCODERS[cls] = lambda _msg: wire


for _cls, _byte in (
    (Sync, b"S"),
    (Flush, b"H"),
    (CopyDone, b"c"),
    (Terminate, b"X"),
    (EmptyQueryResponse, b"I"),
    (ParseComplete, b"1"),
    (BindComplete, b"2"),
    (CloseComplete, b"3"),
    (NoData, b"n"),
    (PortalSuspended, b"s"),
):
    _fixed(_cls, _byte)


@_encodes(StartupMessage)
def _startup(m: StartupMessage) -> bytes:
    if m.major != 3:
        raise LocalProtocolError(f"StartupMessage version must be 3.x, got {m.version}")
    w = _Writer().pack(_I32, m.version, "protocol version")
    for name, value in m.params.items():
        if not name:
            raise LocalProtocolError("startup parameter names must not be empty")
        w.cstr(name, "startup parameter name").cstr(value, f"startup parameter {name!r}")
    return w.raw(b"\x00", "terminator").packet()


_ENCODERS[SSLRequest] = lambda _m: _I32.pack(8) + _I32.pack(SSL_REQUEST_CODE)
_ENCODERS[GSSENCRequest] = lambda _m: _I32.pack(8) + _I32.pack(GSSENC_REQUEST_CODE)
_ENCODERS[SSLResponse] = lambda m: b"S" if m.accepted else b"N"
_ENCODERS[GSSENCResponse] = lambda m: b"G" if m.accepted else b"N"


@_encodes(CancelRequest)
def _cancel(m: CancelRequest) -> bytes:
    if not 4 <= len(m.secret) <= MAX_CANCEL_KEY:
        raise LocalProtocolError(f"cancel secret must be 4..{MAX_CANCEL_KEY} bytes")
    w = _Writer().pack(_I32, CANCEL_REQUEST_CODE, "code").pack(_I32, m.pid, "pid")
    return w.raw(m.secret, "secret").packet()


@_encodes(PasswordMessage)
def _password(m: PasswordMessage) -> bytes:
    return _Writer().cstr(m.password, "password").frame(b"p")


@_encodes(SASLInitialResponse)
def _sasl_initial(m: SASLInitialResponse) -> bytes:
    return _Writer().cstr(m.mechanism, "mechanism").value(m.data, "SASL data").frame(b"p")


@_encodes(SASLResponse)
def _sasl_response(m: SASLResponse) -> bytes:
    return _Writer().raw(m.data, "SASL data").frame(b"p")


@_encodes(GSSResponse)
def _gss_response(m: GSSResponse) -> bytes:
    return _Writer().raw(m.data, "GSS data").frame(b"p")


@_encodes(Query)
def _query(m: Query) -> bytes:
    return _Writer().cstr(m.query, "query").frame(b"Q")


@_encodes(Parse)
def _parse(m: Parse) -> bytes:
    w = _Writer().cstr(m.name, "statement name").cstr(m.query, "query")
    return w.ints(_U32, m.param_oids, "parameter type OIDs").frame(b"P")


def _check_formats(n_formats: int, n_values: int, what: str) -> None:
    if n_formats not in (0, 1, n_values):
        raise LocalProtocolError(f"{n_formats} {what} formats for {n_values} {what}s")


@_encodes(Bind)
def _bind(m: Bind) -> bytes:
    _check_formats(len(m.param_formats), len(m.params), "parameter")
    w = _Writer().cstr(m.portal, "portal name").cstr(m.statement, "statement name")
    w.ints(_I16, m.param_formats, "parameter format codes").values(m.params, "parameters")
    return w.ints(_I16, m.result_formats, "result format codes").frame(b"B")


def _kind_byte(kind: str, what: str) -> bytes:
    if kind not in ("S", "P"):
        raise LocalProtocolError(f"{what} kind must be 'S' or 'P', got {kind!r}")
    return kind.encode()


@_encodes(Describe)
def _describe(m: Describe) -> bytes:
    w = _Writer().raw(_kind_byte(m.kind, "Describe"), "kind")
    return w.cstr(m.name, "name").frame(b"D")


@_encodes(Close)
def _close(m: Close) -> bytes:
    return _Writer().raw(_kind_byte(m.kind, "Close"), "kind").cstr(m.name, "name").frame(b"C")


@_encodes(Execute)
def _execute(m: Execute) -> bytes:
    w = _Writer().cstr(m.portal, "portal name")
    return w.pack(_I32, m.max_rows, "max_rows").frame(b"E")


@_encodes(CopyData)
def _copy_data(m: CopyData) -> bytes:
    return _Writer().raw(m.data, "CopyData").frame(b"d")


@_encodes(CopyFail)
def _copy_fail(m: CopyFail) -> bytes:
    return _Writer().cstr(m.message, "CopyFail message").frame(b"f")


@_encodes(FunctionCall)
def _function_call(m: FunctionCall) -> bytes:
    _check_formats(len(m.arg_formats), len(m.args), "argument")
    w = _Writer().pack(_U32, m.function_oid, "function OID")
    w.ints(_I16, m.arg_formats, "argument format codes").values(m.args, "arguments")
    return w.pack(_I16, m.result_format, "result format").frame(b"F")


_AUTH_CODES: dict[type[Any], int] = {
    AuthenticationOk: 0,
    AuthenticationCleartextPassword: 3,
    AuthenticationMD5Password: 5,
    AuthenticationGSS: 7,
    AuthenticationGSSContinue: 8,
    AuthenticationSSPI: 9,
    AuthenticationSASL: 10,
    AuthenticationSASLContinue: 11,
    AuthenticationSASLFinal: 12,
}


def _auth(m: Any) -> bytes:
    w = _Writer().pack(_I32, _AUTH_CODES[type(m)], "auth code")
    if isinstance(m, AuthenticationMD5Password):
        if len(m.salt) != 4:
            raise LocalProtocolError("MD5 salt must be 4 bytes")
        w.raw(m.salt, "salt")
    elif isinstance(m, AuthenticationSASL):
        for mech in m.mechanisms:
            if not mech:
                raise LocalProtocolError("SASL mechanism names must not be empty")
            w.cstr(mech, "SASL mechanism")
        w.raw(b"\x00", "terminator")
    elif isinstance(
        m, AuthenticationGSSContinue | AuthenticationSASLContinue | AuthenticationSASLFinal
    ):
        w.raw(m.data, "authentication data")
    return w.frame(b"R")


for _cls in _AUTH_CODES:
    _ENCODERS[_cls] = _auth


@_encodes(ParameterStatus)
def _parameter_status(m: ParameterStatus) -> bytes:
    return _Writer().cstr(m.name, "parameter name").cstr(m.value, "parameter value").frame(b"S")


@_encodes(BackendKeyData)
def _backend_key(m: BackendKeyData) -> bytes:
    if not 4 <= len(m.secret) <= MAX_CANCEL_KEY:
        raise LocalProtocolError(f"cancel secret must be 4..{MAX_CANCEL_KEY} bytes")
    return _Writer().pack(_I32, m.pid, "pid").raw(m.secret, "secret").frame(b"K")


@_encodes(ReadyForQuery)
def _ready(m: ReadyForQuery) -> bytes:
    try:
        status = TransactionStatus(m.status)
    except ValueError as e:
        raise LocalProtocolError(f"transaction status must be I, T or E: {m.status!r}") from e
    return _Writer().raw(status.value.encode(), "status").frame(b"Z")


@_encodes(RowDescription)
def _row_description(m: RowDescription) -> bytes:
    w = _Writer().pack(_U16, len(m.fields), "number of fields")
    for f in m.fields:
        w.cstr(f.name, "field name").pack(_U32, f.table_oid, "table OID")
        w.pack(_I16, f.column, "column number").pack(_U32, f.type_oid, "type OID")
        w.pack(_I16, f.type_size, "type size").pack(_I32, f.type_modifier, "type modifier")
        w.pack(_I16, f.format, "format code")
    return w.frame(b"T")


@_encodes(DataRow)
def _data_row(m: DataRow) -> bytes:
    return _Writer().values(m.values, "column values").frame(b"D")


@_encodes(CommandComplete)
def _command_complete(m: CommandComplete) -> bytes:
    return _Writer().cstr(m.tag, "command tag").frame(b"C")


def _fields(fields: Mapping[str, str], type_byte: bytes) -> bytes:
    w = _Writer()
    for code, value in fields.items():
        if not isinstance(code, str) or len(code) != 1 or not 0 < ord(code) < 256:
            raise LocalProtocolError(f"error field codes are single non-NUL bytes: {code!r}")
        w.raw(bytes([ord(code)]), "field code").cstr(value, f"field {code!r}")
    return w.raw(b"\x00", "terminator").frame(type_byte)


_ENCODERS[ErrorResponse] = lambda m: _fields(m.fields, b"E")
_ENCODERS[NoticeResponse] = lambda m: _fields(m.fields, b"N")


@_encodes(ParameterDescription)
def _parameter_description(m: ParameterDescription) -> bytes:
    return _Writer().ints(_U32, m.type_oids, "parameter type OIDs").frame(b"t")


def _copy_response(m: Any, type_byte: bytes) -> bytes:
    w = _Writer().pack(_U8, m.format, "copy format")
    return w.ints(_I16, m.column_formats, "column format codes").frame(type_byte)


_ENCODERS[CopyInResponse] = lambda m: _copy_response(m, b"G")
_ENCODERS[CopyOutResponse] = lambda m: _copy_response(m, b"H")
_ENCODERS[CopyBothResponse] = lambda m: _copy_response(m, b"W")


@_encodes(NotificationResponse)
def _notification(m: NotificationResponse) -> bytes:
    w = _Writer().pack(_I32, m.pid, "pid").cstr(m.channel, "channel")
    return w.cstr(m.payload, "payload").frame(b"A")


@_encodes(NegotiateProtocolVersion)
def _negotiate(m: NegotiateProtocolVersion) -> bytes:
    w = _Writer().pack(_I32, m.version, "protocol version")
    w.pack(_I32, len(m.unrecognized), "number of options")
    for name in m.unrecognized:
        w.cstr(name, "option name")
    return w.frame(b"v")


@_encodes(FunctionCallResponse)
def _function_response(m: FunctionCallResponse) -> bytes:
    return _Writer().value(m.value, "function result").frame(b"V")
