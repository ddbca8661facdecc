"""Hypothesis: any byte stream is accepted, and the snapshot invariants always hold.

A recording may hold anything a program (or an attacker) wrote, so the emulator's only
allowed behaviour on garbage is to show something. Streams are built both from raw bytes
and from fragments of escape sequences (to reach the deep parser states quickly),
interleaved with resizes; each is fed whole and split at random points, which must give
the same screen (the parser and the UTF-8 decoder are incremental).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from replay.terminal import ScreenSnapshot, TerminalEmulator
from tests.replay.strategies import ops


def check_invariants(s: ScreenSnapshot) -> None:
    assert len(s.lines) == s.rows
    assert 0 <= s.cursor_x < s.cols and 0 <= s.cursor_y < s.rows
    for line in s.lines:
        assert len(line) == s.cols
        for x, cell in enumerate(line):
            if cell.char == "":
                assert x > 0 and line[x - 1].char not in ("", " ")
            assert len(cell.char) <= 16


def run(operations: list[tuple[str, object]], split: bool) -> TerminalEmulator:
    emu = TerminalEmulator(12, 6)
    for kind, arg in operations:
        if kind == "resize":
            assert isinstance(arg, tuple)
            emu.resize(*arg)
        else:
            assert isinstance(arg, bytes)
            if split:
                for i in range(0, len(arg), 3):
                    emu.feed(arg[i : i + 3])
            else:
                emu.feed(arg)
        check_invariants(emu.snapshot())
    return emu


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_any_stream_is_accepted_and_split_feeding_agrees(
    operations: list[tuple[str, object]],
) -> None:
    whole = run(operations, split=False)
    pieces = run(operations, split=True)
    assert whole.snapshot() == pieces.snapshot()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
def test_byte_at_a_time(data: bytes) -> None:
    emu = TerminalEmulator(20, 5)
    for i in range(len(data)):
        emu.feed(data[i : i + 1])
    check_invariants(emu.snapshot())
    emu.text()
