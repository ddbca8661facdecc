"""The sans-IO event codec and record parsers: round trips and fuzzing."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import RecordingFormatError
from recorder.codec import (
    EventDecoder,
    decode_chunk,
    encode_event,
    read_varint,
    write_varint,
)
from recorder.compress import compress_chunk, decompress_chunk
from recorder.events import Event, Exit, Input, Marker, Output, Resize, Structured
from recorder.frames import expected_payload_size, parse_payload, zstd_frame_length

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

payload_events = st.one_of(
    st.builds(lambda d: ("o", d), st.binary(max_size=300)),
    st.builds(lambda d: ("i", d), st.binary(max_size=50)),
    st.builds(lambda c, r: ("r", c, r), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
    st.builds(lambda s: ("m", s), st.text(max_size=40)),
    st.builds(
        lambda s, g: ("x", s, g),
        st.none() | st.integers(-(2**40), 2**40),
        st.none() | st.text(max_size=10),
    ),
    st.builds(lambda n, p: ("s", n, p), st.text(min_size=1, max_size=20), json_values),
)


def _make(spec: tuple[object, ...], t: float) -> Event:
    tag = spec[0]
    if tag == "o":
        return Output(t, spec[1])  # type: ignore[arg-type]
    if tag == "i":
        return Input(t, spec[1])  # type: ignore[arg-type]
    if tag == "r":
        return Resize(t, spec[1], spec[2])  # type: ignore[arg-type]
    if tag == "m":
        return Marker(t, spec[1])  # type: ignore[arg-type]
    if tag == "x":
        return Exit(t, spec[1], spec[2])  # type: ignore[arg-type]
    return Structured(t, spec[1], spec[2])  # type: ignore[arg-type]


def _timed(items: list[tuple[int, tuple[object, ...]]]) -> list[Event]:
    times = itertools.accumulate(dt for dt, _ in items)
    return [_make(spec, t_us / 1e6) for t_us, (_, spec) in zip(times, items, strict=True)]


events_lists = st.lists(
    st.tuples(st.integers(0, 10**7), payload_events), min_size=1, max_size=30
).map(_timed)


def _encode_all(events: list[Event], base_us: int) -> bytes:
    out, prev = [], base_us
    for ev in events:
        raw, prev = encode_event(ev, prev)
        out.append(raw)
    return b"".join(out)


@given(st.integers(0, 2**64 - 1))
def test_varint_round_trip(value: int) -> None:
    raw = write_varint(value)
    assert read_varint(raw, 0) == (value, len(raw))
    assert read_varint(raw[:-1], 0) is None


def test_varint_rejects_overlong_and_out_of_range() -> None:
    with pytest.raises(RecordingFormatError):
        read_varint(b"\xff" * 11, 0)
    with pytest.raises(RecordingFormatError):
        read_varint(b"\xff" * 9 + b"\x7f", 0)  # 70 bits
    with pytest.raises(ValueError):
        write_varint(-1)


@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(events_lists)
def test_events_round_trip_whole_and_bytewise(events: list[Event]) -> None:
    base = round(events[0].time * 1e6)
    raw = _encode_all(events, base)
    assert decode_chunk(raw, base) == events
    dec = EventDecoder(base)
    got: list[Event] = []
    for i in range(len(raw)):
        dec.receive_data(raw[i : i + 1])
        while (ev := dec.next_event()) is not None:
            got.append(ev)
    dec.finish()
    assert got == events


def test_non_utf8_output_is_lossless() -> None:
    data = bytes(range(256)) + b"\xc3" + b"\xff\xfe"
    raw, _ = encode_event(Output(0.0, data), 0)
    assert decode_chunk(raw, 0) == [Output(0.0, data)]


def test_truncated_chunk_is_an_error() -> None:
    raw, _ = encode_event(Marker(1.0, "hello"), 0)
    with pytest.raises(RecordingFormatError, match="incomplete event"):
        decode_chunk(raw[:-1], 0)


def test_encode_refuses_time_going_backwards() -> None:
    with pytest.raises(ValueError):
        encode_event(Output(1.0, b"x"), 2_000_000)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 7))
def test_fuzz_decoder_raises_only_format_error(data: bytes, step: int) -> None:
    dec = EventDecoder(0)
    try:
        for i in range(0, len(data), step):
            dec.receive_data(data[i : i + step])
            while dec.next_event() is not None:
                pass
        dec.finish()
    except RecordingFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(events_lists, st.data())
def test_fuzz_mutated_chunks(events: list[Event], data: st.DataObject) -> None:
    raw = bytearray(_encode_all(events, 0))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    try:
        decode_chunk(bytes(raw), 0)
    except RecordingFormatError:
        pass


def test_structured_payload_nesting_bomb_is_a_format_error() -> None:
    body = b"\x05query" + b"[" * 100_000 + b"]" * 100_000
    raw = b"\x00\x06" + write_varint(len(body)) + body
    with pytest.raises(RecordingFormatError):
        decode_chunk(raw, 0)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_record_payloads(data: bytes) -> None:
    try:
        expected_payload_size(data)
        parse_payload(data)
    except RecordingFormatError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(b"HCKTIF"), st.binary(max_size=200))
def test_fuzz_typed_record_payloads(rtype: int, body: bytes) -> None:
    try:
        parse_payload(bytes([rtype]) + body)
    except RecordingFormatError:
        pass


@pytest.mark.parametrize("size", [0, 1, 100, 200_000, 1_000_000])
def test_zstd_frame_length_matches_real_frames(size: int) -> None:
    raw = (os.urandom(size // 2) + b"a" * (size - size // 2)) if size else b"x"
    frame = compress_chunk(raw)
    assert zstd_frame_length(frame) == len(frame)
    assert zstd_frame_length(frame + b"trailing") == len(frame)
    for cut in (1, 4, 7, len(frame) // 2, len(frame) - 1):
        assert zstd_frame_length(frame[:cut]) is None
    assert decompress_chunk(frame, len(raw)) == raw


def test_decompress_rejects_wrong_sizes_and_bombs() -> None:
    frame = compress_chunk(b"hello" * 100)
    with pytest.raises(RecordingFormatError):
        decompress_chunk(frame, 499)
    with pytest.raises(RecordingFormatError):
        decompress_chunk(frame + frame, 500)
    with pytest.raises(RecordingFormatError):
        decompress_chunk(frame, 1 << 40)
    damaged = bytearray(frame)
    damaged[len(frame) // 2] ^= 0xFF
    with pytest.raises(RecordingFormatError):
        decompress_chunk(bytes(damaged), 500)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_fuzz_zstd_frame_walker(data: bytes) -> None:
    try:
        zstd_frame_length(b"\x28\xb5\x2f\xfd" + data)
    except RecordingFormatError:
        pass
