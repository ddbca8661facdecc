"""Readable parameter values for the audit record.

Bind parameters are opaque bytes on the wire. For the recording we keep them
readable where that is unambiguous: text-format values that are valid UTF-8
become ``str``; binary-format values of a few well-known types (as declared in
Parse, e.g. psycopg sends Python ints as binary ``int2``/``int4``/``int8``) are
rendered as PostgreSQL would print them. Anything else stays ``bytes``, so no
value is ever lost or guessed at. The raw protocol bytes are recorded anyway;
this is only the searchable view.
"""

from __future__ import annotations

import datetime
import struct
import uuid
from collections.abc import Callable, Sequence

__all__ = ["Param", "decode_binary", "decode_params"]

Param = str | bytes | None
"""A parameter as recorded: text when it could be read as text, else the raw bytes."""

_EPOCH = datetime.datetime(2000, 1, 1)  # PostgreSQL's binary epoch
_INT64_MAX, _INT64_MIN = 2**63 - 1, -(2**63)


def _int(fmt: str) -> Callable[[bytes], str]:
    codec = struct.Struct(fmt)
    return lambda data: str(codec.unpack(data)[0])


def _float(fmt: str) -> Callable[[bytes], str]:
    codec = struct.Struct(fmt)
    return lambda data: repr(codec.unpack(data)[0])


def _bool(data: bytes) -> str:
    if data not in (b"\x00", b"\x01"):
        raise ValueError(data)
    return "t" if data == b"\x01" else "f"


def _text(data: bytes) -> str:
    return data.decode("utf-8")


def _jsonb(data: bytes) -> str:
    if not data.startswith(b"\x01"):
        raise ValueError("unknown jsonb version")
    return data[1:].decode("utf-8")


def _uuid(data: bytes) -> str:
    return str(uuid.UUID(bytes=data))


def _date(data: bytes) -> str:
    (days,) = struct.unpack("!i", data)
    if days in (2**31 - 1, -(2**31)):
        return "infinity" if days > 0 else "-infinity"
    return (_EPOCH.date() + datetime.timedelta(days=days)).isoformat()


def _timestamp(suffix: str) -> Callable[[bytes], str]:
    def render(data: bytes) -> str:
        (micros,) = struct.unpack("!q", data)
        if micros in (_INT64_MAX, _INT64_MIN):
            return "infinity" if micros > 0 else "-infinity"
        return (_EPOCH + datetime.timedelta(microseconds=micros)).isoformat(sep=" ") + suffix

    return render


_BINARY: dict[int, Callable[[bytes], str]] = {
    16: _bool,
    18: _text,  # "char"
    19: _text,  # name
    20: _int("!q"),  # int8
    21: _int("!h"),  # int2
    23: _int("!i"),  # int4
    25: _text,
    26: _int("!I"),  # oid
    114: _text,  # json
    700: _float("!f"),
    701: _float("!d"),
    1042: _text,  # bpchar
    1043: _text,  # varchar
    1082: _date,
    1114: _timestamp(""),
    1184: _timestamp("+00"),
    2950: _uuid,
    3802: _jsonb,
}


def decode_binary(type_oid: int, data: bytes) -> str | None:
    """The text form of a binary value of a well-known type, or None if not readable."""
    render = _BINARY.get(type_oid)
    if render is None:
        return None
    try:
        return render(data)
    except (ValueError, struct.error, OverflowError):  # UnicodeDecodeError is a ValueError
        return None


def decode_params(
    values: Sequence[bytes | None], formats: Sequence[int], type_oids: Sequence[int] = ()
) -> tuple[Param, ...]:
    """Parameters as recorded: readable text where unambiguous, else raw bytes.

    ``formats`` follows the Bind rule (none: all text; one: for all; else one
    each); ``type_oids`` are the types declared in Parse (0 or missing: unknown).
    """
    out: list[Param] = []
    for i, value in enumerate(values):
        if len(formats) == 1:
            fmt = formats[0]
        else:
            fmt = formats[i] if i < len(formats) else 0
        if value is None:
            out.append(None)
        elif fmt == 0:
            try:
                out.append(value.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(value)
        else:
            oid = type_oids[i] if i < len(type_oids) else 0
            text = decode_binary(oid, value) if fmt == 1 else None
            out.append(value if text is None else text)
    return tuple(out)
