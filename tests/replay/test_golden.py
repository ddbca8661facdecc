"""Golden tests: real vim, less, htop, ls and printf output, captured by ``capture.py``.

Each ``fixtures/NAME.bin`` is fed to the emulator; the screen at every mark of
``NAME.json`` and at the end must equal the committed ``NAME[.MARK].expected.txt``
(checked by eye when they were written). Further tests look at what text alone cannot
show: colours, which screen is active, and that leaving the alternate screen gives back
the main screen cell for cell.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from replay.terminal import Cell, ScreenSnapshot, TerminalEmulator

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = sorted(p.stem for p in FIXTURES.glob("*.bin"))


def load(name: str) -> tuple[bytes, dict[str, Any]]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    return (FIXTURES / f"{name}.bin").read_bytes(), meta


def screen_at(name: str, offset: int | None = None) -> ScreenSnapshot:
    data, meta = load(name)
    emu = TerminalEmulator(meta["cols"], meta["rows"])
    emu.feed(data if offset is None else data[:offset])
    return emu.snapshot()


def golden_points() -> list[tuple[str, str]]:
    points = []
    for name in NAMES:
        _, meta = load(name)
        points += [(name, mark) for mark in meta["marks"]] + [(name, "final")]
    return points


def test_fixtures_are_present_and_small() -> None:
    assert {"vim", "less", "htop", "ls_color", "emoji"} <= set(NAMES)
    for name in NAMES:
        data, meta = load(name)
        assert len(data) < 200_000
        assert (meta["cols"], meta["rows"]) == (80, 24)


@pytest.mark.parametrize(("name", "mark"), golden_points())
def test_screen_matches_expected_text(name: str, mark: str) -> None:
    data, meta = load(name)
    offset = len(data) if mark == "final" else meta["marks"][mark]
    suffix = "" if mark == "final" else f".{mark}"
    expected = (FIXTURES / f"{name}{suffix}.expected.txt").read_text().split("\n")[:-1]
    assert screen_at(name, offset).text() == expected


@pytest.mark.parametrize("name", NAMES)
def test_byte_at_a_time_gives_the_same_screen(name: str) -> None:
    data, meta = load(name)
    emu = TerminalEmulator(meta["cols"], meta["rows"])
    for i in range(len(data)):
        emu.feed(data[i : i + 1])
    assert emu.snapshot() == screen_at(name)


@pytest.mark.parametrize("name", ["vim", "less", "htop"])
def test_full_screen_program_uses_alternate_screen_and_restores_main(name: str) -> None:
    data, meta = load(name)
    enter = data.index(b"\x1b[?1049h")
    leave = data.index(b"\x1b[?1049l") + len(b"\x1b[?1049l")
    before, after = screen_at(name, enter), screen_at(name, leave)
    inside = screen_at(name, meta["marks"]["inside" if name != "less" else "first_page"])
    assert inside.alternate and not before.alternate and not after.alternate
    assert after.lines == before.lines  # cell for cell, colours included
    assert (after.cursor_x, after.cursor_y) == (before.cursor_x, before.cursor_y)


def test_vim_inside_shows_typed_text_and_tildes() -> None:
    data, meta = load("vim")
    s = screen_at("vim", meta["marks"]["inside"])
    assert s.text()[0] == "Hello, bastion!"
    assert s.lines[1][0] == Cell("~", fg="color(12)")  # vim's NonText in bright blue
    assert not any(c.underline for line in s.lines for c in line)  # CSI > 4;2 m ignored


def test_less_status_line_is_reverse_video() -> None:
    _, meta = load("less")
    s = screen_at("less", meta["marks"]["first_page"])
    assert s.text()[-1] == "numbers.txt"
    assert all(c.reverse for c in s.lines[-1][:11])
    assert not s.lines[-1][11].reverse


def test_htop_colours() -> None:
    _, meta = load("htop")
    s = screen_at("htop", meta["marks"]["inside"])
    bottom = s.lines[-1]
    assert s.text()[-1].startswith("F1Help  F2Setup")
    assert bottom[0] == Cell("F")
    assert bottom[2] == Cell("H", fg="color(0)", bg="color(6)")
    header = next(
        line for line in s.lines if "".join(c.char for c in line).strip().startswith("PID")
    )
    assert header[2].bg == "color(2)"


def _find(s: ScreenSnapshot, word: str) -> list[Cell]:
    """The cells of the last occurrence of ``word`` (output comes after the echoed command)."""
    for line in reversed(s.lines):
        text = "".join(c.char or "" for c in line)
        if word in text:
            x = text.index(word)
            return list(line[x : x + len(word)])
    raise AssertionError(f"{word!r} not on screen")


def test_ls_and_sgr_colours() -> None:
    s = screen_at("ls_color")
    assert _find(s, "docs")[0] == Cell("d", fg="color(4)", bold=True)
    assert _find(s, "link@")[0] == Cell("l", fg="color(6)", bold=True)
    assert _find(s, "link@")[4] == Cell("@")
    assert _find(s, "run.sh*")[0] == Cell("r", fg="color(2)", bold=True)
    assert _find(s, "notes.txt")[0] == Cell("n")
    assert _find(s, "orange")[0] == Cell("o", fg="color(208)")
    assert _find(s, "green-bg")[0] == Cell("g", bg="color(22)")
    assert _find(s, "hotpink")[0] == Cell("h", fg="#ff69b4")
    assert _find(s, "biur")[0] == Cell("b", bold=True, italic=True, underline=True, reverse=True)


def test_emoji_cells() -> None:
    s = screen_at("emoji")
    lines = s.text()
    assert "heart: \u2764\ufe0f end" in lines
    assert "coder: \U0001f469\u200d\U0001f4bb end" in lines
    assert "accent: cafe\u0301 end" in lines
    assert "cjk: 日本語 end" in lines
    row = s.lines[lines.index("cjk: 日本語 end")]
    assert [c.char for c in row[5:12]] == ["日", "", "本", "", "語", "", " "]
    row = s.lines[lines.index("heart: \u2764\ufe0f end")]
    assert [c.char for c in row[7:9]] == ["\u2764\ufe0f", " "]
