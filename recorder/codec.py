"""Sans-IO codec for the events inside one chunk: bytes in, events out.

A chunk's uncompressed content is a plain concatenation of event records::

    varint  dt_us     microseconds since the previous event (the first event of a
                      chunk counts from the chunk's ``t_first_us``, so it is 0)
    u8      kind      an ``EventKind`` value
    varint  length    payload length in bytes (at most ``MAX_EVENT_BYTES``)
    bytes   payload   kind-specific, see ``FORMAT.md``

Varints are unsigned LEB128 of at most 10 bytes. Nothing here does I/O, so the
decoder can be fed whole chunks or one byte at a time; on any malformed input it
raises ``RecordingFormatError`` and nothing else (the fuzz tests hold it to that).
"""

from __future__ import annotations

import json
from functools import lru_cache

from recorder.errors import RecordingFormatError
from recorder.events import (
    Event,
    EventKind,
    Exit,
    Input,
    JSONValue,
    Marker,
    Output,
    Resize,
    Structured,
)

__all__ = [
    "MAX_EVENT_BYTES",
    "MAX_NAME_BYTES",
    "EventDecoder",
    "canonical_json",
    "decode_chunk",
    "encode_event",
    "encode_record",
    "exit_payload",
    "read_varint",
    "resize_payload",
    "structured_prefix",
    "structured_payload",
    "write_varint",
]

MAX_EVENT_BYTES = 1 << 20
"""Largest payload of one event; longer output is split into several events."""

MAX_NAME_BYTES = 255
"""Largest structured-event name (UTF-8 bytes)."""

_MAX_VARINT_BYTES = 10
_U64_MAX = (1 << 64) - 1


def write_varint(value: int) -> bytes:
    """Encode a non-negative integer below 2**64 as unsigned LEB128."""
    if value < 0 or value > _U64_MAX:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(buf: bytes | bytearray | memoryview, pos: int) -> tuple[int, int] | None:
    """Decode a varint at ``pos``; return ``(value, next_pos)`` or None if incomplete.

    Raises RecordingFormatError for varints longer than 10 bytes or above 2**64-1.
    """
    value = 0
    shift = 0
    end = len(buf)
    for i in range(_MAX_VARINT_BYTES):
        if pos + i >= end:
            return None
        byte = buf[pos + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value > _U64_MAX:
                raise RecordingFormatError("varint exceeds 64 bits")
            return value, pos + i + 1
        shift += 7
    raise RecordingFormatError("varint longer than 10 bytes")


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


def _unzigzag(value: int) -> int:
    return value >> 1 if not value & 1 else -((value + 1) >> 1)


_CANONICAL = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)  # built once: json.dumps with options would build an encoder per call


def canonical_json(value: object) -> bytes:
    """Serialise JSON deterministically (sorted keys, no spaces, UTF-8, no NaN).

    Raises ValueError when ``value`` is not JSON-serialisable.
    """
    try:
        text = _CANONICAL.encode(value)
    except (TypeError, ValueError, RecursionError) as e:
        raise ValueError(
            f"not JSON-serialisable ({e}); use dict/list/str/int/float/bool/None only"
        ) from e
    return text.encode("utf-8")


def encode_record(kind: EventKind, dt_us: int, payload: bytes | memoryview) -> bytes:
    """Encode one event record from its kind, time delta and ready-made payload."""
    if len(payload) > MAX_EVENT_BYTES:
        raise ValueError(f"event payload of {len(payload)} bytes exceeds {MAX_EVENT_BYTES}")
    return b"".join((write_varint(dt_us), bytes((kind,)), write_varint(len(payload)), payload))


def resize_payload(cols: int, rows: int) -> bytes:
    """Payload of a resize event: varint cols, varint rows."""
    if not (0 <= cols < 1 << 32 and 0 <= rows < 1 << 32):
        raise ValueError(f"terminal size out of range: {cols}x{rows}")
    return write_varint(cols) + write_varint(rows)


def exit_payload(status: int | None, signal: str | None) -> bytes:
    """Payload of an exit event: flags, optional zigzag status, optional signal name."""
    flags = (1 if status is not None else 0) | (2 if signal is not None else 0)
    out = bytes((flags,))
    if status is not None:
        if not -(1 << 62) <= status < 1 << 62:
            raise ValueError(f"exit status out of range: {status}")
        out += write_varint(_zigzag(status))
    if signal is not None:
        out += signal.encode("utf-8")
    return out


@lru_cache(maxsize=64)
def structured_prefix(name: str) -> bytes:
    """What comes before a structured event's JSON: varint name length, name (cached:
    a handful of names, one per event on the PostgreSQL relay's hot path)."""
    raw_name = name.encode("utf-8")
    if not 0 < len(raw_name) <= MAX_NAME_BYTES:
        raise ValueError(f"event name must be 1..{MAX_NAME_BYTES} UTF-8 bytes, got {name!r}")
    return write_varint(len(raw_name)) + raw_name


def structured_payload(name: str, payload: JSONValue) -> bytes:
    """Payload of a structured event: varint name length, name, canonical JSON."""
    return structured_prefix(name) + canonical_json(payload)


def encode_event(event: Event, prev_us: int) -> tuple[bytes, int]:
    """Encode ``event`` after an event at ``prev_us``; return (bytes, this event's µs).

    Raises ValueError if the event's time is earlier than ``prev_us``.
    """
    t_us = round(event.time * 1_000_000)
    if t_us < prev_us:
        raise ValueError(f"event time {event.time} precedes the previous event")
    payload: bytes
    if isinstance(event, Output | Input):
        payload = event.data
    elif isinstance(event, Resize):
        payload = resize_payload(event.cols, event.rows)
    elif isinstance(event, Marker):
        payload = event.label.encode("utf-8")
    elif isinstance(event, Exit):
        payload = exit_payload(event.status, event.signal)
    else:
        payload = structured_payload(event.name, event.payload)
    return encode_record(event.kind, t_us - prev_us, payload), t_us


def _utf8(raw: bytes, what: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RecordingFormatError(f"{what} is not valid UTF-8") from e


def _parse_payload(kind: int, payload: bytes, time: float) -> Event:
    if kind == EventKind.OUTPUT:
        return Output(time, payload)
    if kind == EventKind.INPUT:
        return Input(time, payload)
    if kind == EventKind.RESIZE:
        first = read_varint(payload, 0)
        second = read_varint(payload, first[1]) if first else None
        if first is None or second is None or second[1] != len(payload):
            raise RecordingFormatError("malformed resize payload")
        if first[0] >= 1 << 32 or second[0] >= 1 << 32:
            raise RecordingFormatError("resize dimensions out of range")
        return Resize(time, first[0], second[0])
    if kind == EventKind.MARKER:
        return Marker(time, _utf8(payload, "marker label"))
    if kind == EventKind.EXIT:
        return _parse_exit(payload, time)
    if kind == EventKind.STRUCTURED:
        return _parse_structured(payload, time)
    raise RecordingFormatError(f"unknown event kind {kind}")


def _parse_exit(payload: bytes, time: float) -> Exit:
    if not payload or payload[0] & ~3:
        raise RecordingFormatError("malformed exit payload")
    flags, pos = payload[0], 1
    status: int | None = None
    if flags & 1:
        got = read_varint(payload, pos)
        if got is None:
            raise RecordingFormatError("truncated exit status")
        status, pos = _unzigzag(got[0]), got[1]
    signal = _utf8(payload[pos:], "exit signal") if flags & 2 else None
    if not flags & 2 and pos != len(payload):
        raise RecordingFormatError("trailing bytes in exit payload")
    return Exit(time, status, signal)


def _parse_structured(payload: bytes, time: float) -> Structured:
    got = read_varint(payload, 0)
    if got is None or not 0 < got[0] <= MAX_NAME_BYTES or got[1] + got[0] > len(payload):
        raise RecordingFormatError("malformed structured event name")
    name = _utf8(payload[got[1] : got[1] + got[0]], "event name")
    body = _utf8(payload[got[1] + got[0] :], "event payload")
    try:
        value: JSONValue = json.loads(body)
    except (ValueError, RecursionError) as e:
        raise RecordingFormatError(f"structured event payload is not JSON: {e}") from e
    return Structured(time, name, value)


class EventDecoder:
    """Incremental decoder: ``receive_data(bytes)`` then ``next_event()`` until None.

    ``base_us`` is the chunk's first-event time; ``finish()`` checks that no partial
    event is left over when the chunk ends.
    """

    def __init__(self, base_us: int = 0, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._t_us = base_us
        self._max = max_event_bytes

    @property
    def time_us(self) -> int:
        """Time of the last decoded event (or the base), in microseconds."""
        return self._t_us

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes to decode."""
        if self._pos and self._pos * 2 >= len(self._buf):
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_event(self) -> Event | None:
        """Return the next complete event, or None when more bytes are needed."""
        buf, pos = self._buf, self._pos
        got = read_varint(buf, pos)
        if got is None:
            return None
        dt_us, pos = got
        if pos >= len(buf):
            return None
        kind = buf[pos]
        if kind not in _KINDS:
            raise RecordingFormatError(f"unknown event kind {kind} at byte {pos}")
        got = read_varint(buf, pos + 1)
        if got is None:
            return None
        length, pos = got
        if length > self._max:
            raise RecordingFormatError(f"event length {length} exceeds {self._max}")
        if pos + length > len(buf):
            return None
        t_us = self._t_us + dt_us
        if t_us > _U64_MAX:
            raise RecordingFormatError("event time overflows 64 bits")
        event = _parse_payload(kind, bytes(buf[pos : pos + length]), t_us / 1_000_000)
        self._t_us = t_us
        self._pos = pos + length
        return event

    def finish(self) -> None:
        """Raise RecordingFormatError if undecoded bytes remain."""
        if self._pos != len(self._buf):
            raise RecordingFormatError(
                f"{len(self._buf) - self._pos} bytes of an incomplete event at the end of a chunk"
            )


_KINDS = frozenset(int(k) for k in EventKind)


def decode_chunk(raw: bytes, t_first_us: int) -> list[Event]:
    """Decode a whole chunk's content; raises RecordingFormatError if malformed."""
    decoder = EventDecoder(t_first_us)
    decoder.receive_data(raw)
    events: list[Event] = []
    while (event := decoder.next_event()) is not None:
        events.append(event)
    decoder.finish()
    return events
