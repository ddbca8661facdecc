"""Keyframes: state round trips, seeking equals playing, and the serialised form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings

from recorder import RecordingReader, RecordingWriter, WriterPolicy
from recorder.events import Event, Input, Marker, Output, Resize
from replay.keyframes import (
    Keyframe,
    KeyframeError,
    build_keyframes,
    decode,
    dump_state,
    encode,
    load_state,
    seek,
)
from replay.terminal import TerminalEmulator
from tests.replay.strategies import ops

FIXTURES = Path(__file__).parent / "fixtures"


def roundtrip(emu: TerminalEmulator) -> TerminalEmulator:
    """Dump, pass through JSON text, load."""
    return load_state(json.loads(json.dumps(dump_state(emu))))


@pytest.mark.parametrize("name", ["vim", "less", "htop", "ls_color", "emoji"])
def test_state_roundtrip_then_continue_equals_straight_play(name: str) -> None:
    data = (FIXTURES / f"{name}.bin").read_bytes()
    straight = TerminalEmulator(80, 24)
    straight.feed(data)
    checked = 0
    for cut in range(0, len(data), max(1, len(data) // 150)):
        emu = TerminalEmulator(80, 24)
        emu.feed(data[:cut])
        if not emu.at_rest:
            continue
        restored = roundtrip(emu)
        assert restored.snapshot() == emu.snapshot()
        restored.feed(data[cut:])
        assert restored.snapshot() == straight.snapshot(), f"cut at {cut}"
        checked += 1
    assert checked > 10


def test_roundtrip_inside_alternate_screen_keeps_hidden_main_screen() -> None:
    emu = TerminalEmulator(20, 4)
    emu.feed("\x1b[1;31mmain 日本\x1b[0m\r\nline2\x1b[?1049h\x1b[Halt\x1b(0q".encode())
    restored = roundtrip(emu)
    assert restored.snapshot() == emu.snapshot() and restored.alternate
    for e in (emu, restored):
        e.feed(b"q\x1b(Bq\x1b[?1049lX\x1b8\x1b[2b")
    assert restored.snapshot() == emu.snapshot()
    assert restored.text()[:2] == ["main 日本", "line2XX"]  # DECRC: back to (5, 1)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops, ops)
def test_roundtrip_at_rest_is_exact(
    first: list[tuple[str, object]], then: list[tuple[str, object]]
) -> None:
    def play(emu: TerminalEmulator, operations: list[tuple[str, object]]) -> None:
        for kind, arg in operations:
            if kind == "resize":
                assert isinstance(arg, tuple)
                emu.resize(*arg)
            else:
                assert isinstance(arg, bytes)
                emu.feed(arg)

    emu = TerminalEmulator(12, 6)
    play(emu, first)
    if not emu.at_rest:
        emu.feed(b"\x18")  # CAN ends any sequence; a partial UTF-8 char is still pending
        if not emu.at_rest:
            return
    restored = roundtrip(emu)
    play(emu, then)
    play(restored, then)
    assert restored.snapshot() == emu.snapshot()


def make_recording(path: Path, events: list[Event]) -> None:
    """Write ``events`` with a fake clock, as the bastion would during a session."""
    now = [1000.0]
    writer = RecordingWriter.create(
        path,
        "sess-replay",
        {"cols": 40, "rows": 10},
        Ed25519PrivateKey.generate(),
        clock=lambda: now[0],
        wall_clock=lambda: 1_732_838_400.0,
        policy=WriterPolicy(fsync_interval=None, chunk_bytes=2048),
    )
    for event in events:
        now[0] = 1000.0 + event.time
        writer.tick()
        if isinstance(event, Output):
            writer.output(event.data)
        elif isinstance(event, Resize):
            writer.resize(event.cols, event.rows)
        elif isinstance(event, Input):
            writer.input(event.data)
        elif isinstance(event, Marker):
            writer.marker(event.label)
    now[0] += 1
    writer.close("done")


def session_events() -> list[Event]:
    """A shell, vim in the alternate screen, resizes and bursts with equal timestamps."""
    vim = (FIXTURES / "vim.bin").read_bytes()
    events: list[Event] = []
    t = 0.0
    for i in range(120):
        t = round(t + (0.25 if i % 3 else 0.0), 6)  # every third event shares a time
        events.append(Output(t, f"\x1b[3{i % 8}mline {i}\x1b[m é 日本\r\n".encode()))
        if i % 10 == 0:
            events.append(Input(t, b"x"))
        if i == 40:
            events.append(Resize(t, 60, 12))
        if i == 60:
            events.append(Marker(t, "half"))
    for j in range(0, len(vim), 97):
        t = round(t + 0.1, 6)
        events.append(Output(t, vim[j : j + 97]))
    events.append(Output(round(t + 0.5, 6), b"\x1b[?1049h\x1b[Hin alt"))
    return events


def test_seek_equals_playing_from_the_start(tmp_path: Path) -> None:
    events = session_events()
    path = tmp_path / "s.bastrec"
    make_recording(path, events)
    with RecordingReader.open(path) as reader:
        recorded = list(reader.events())
        keyframes = build_keyframes(reader.events(), 40, 10, interval=2.0)
        assert len(keyframes) >= 5
        assert [k.time for k in keyframes] == sorted(k.time for k in keyframes)
        keyframes = decode(encode(keyframes))
        times = sorted({e.time for e in recorded} | {0.0, 0.1, 5.05, 1e9})
        for target in times:
            straight = TerminalEmulator(40, 10)
            for event in recorded:
                if event.time > target:
                    break
                if isinstance(event, Output):
                    straight.feed(event.data)
                elif isinstance(event, Resize):
                    straight.resize(event.cols, event.rows)
            sought = seek(reader, keyframes, target, 40, 10)
            assert sought.snapshot() == straight.snapshot(), f"at {target}"


def test_keyframes_wait_for_rest_and_byte_budget() -> None:
    events: list[Event] = [
        Output(0.0, b"a" * 100),
        Output(1.0, b"\x1b[3"),  # mid-sequence: not a keyframe moment
        Output(1.0, b"1mb"),
        Output(1.5, b"c" * 100),
    ]
    keyframes = build_keyframes(events, interval=0.5)
    assert [(k.time, k.skip) for k in keyframes] == [(1.0, 2), (1.5, 1)]
    keyframes = build_keyframes(events, interval=100, max_bytes=102)
    assert [(k.time, k.skip) for k in keyframes] == [(1.0, 2)]  # 103 bytes, then at rest


def test_encoded_keyframes_are_compact() -> None:
    data = (FIXTURES / "htop.bin").read_bytes()
    events: list[Event] = [Output(i * 0.01, data[i : i + 50]) for i in range(0, len(data), 50)]
    keyframes = build_keyframes(events, interval=0.1)
    blob = encode(keyframes)
    assert len(keyframes) >= 5
    assert len(blob) / len(keyframes) < 2500
    assert decode(blob) == keyframes


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"not zstd at all",
        encode([])[:-3],
    ],
)
def test_decode_rejects_corrupt_data(blob: bytes) -> None:
    with pytest.raises(KeyframeError):
        decode(blob)


def test_decode_rejects_other_versions_and_shapes() -> None:
    docs: list[object] = [
        {"version": 99, "keyframes": []},
        {"version": 1, "keyframes": [[0, 0, 5]]},
    ]
    for doc in [*docs, [], {"version": 1}]:
        blob = zstandard.ZstdCompressor().compress(json.dumps(doc).encode())
        with pytest.raises(KeyframeError):
            decode(blob)


def test_load_state_rejects_garbage() -> None:
    good = dump_state(TerminalEmulator(5, 2))
    for bad in ({}, {**good, "styles": [[1]]}, {**good, "charsets": [0, "?", "B"]}):
        with pytest.raises(KeyframeError):
            load_state(bad)
    assert isinstance(Keyframe(0.0, 0, good), Keyframe)
