"""extract_commands: typed command lines from input events."""

from __future__ import annotations

from recorder import extract_commands
from recorder.events import Event, Input, Output


def _typed(*chunks: bytes, step: float = 0.5) -> list[Event]:
    return [Input(i * step, c) for i, c in enumerate(chunks)]


def test_lines_split_at_enter_with_enter_time() -> None:
    events = _typed(b"l", b"s", b" -l", b"\r", b"whoami\r", b"\r")
    assert extract_commands(events) == [(1.5, "ls -l"), (2.0, "whoami")]


def test_editing_keys() -> None:
    events = _typed(
        b"lss\x7f -la\x08\r",  # backspace (DEL and BS)
        b"rm -rf /\x15echo safe\r",  # ctrl-U kills the line
        b"cat /etc/passwd  \x17/etc/shadow\r",  # ctrl-W kills a word
        b"sleep 100\x03",  # ctrl-C abandons the line
        b"uptime\n",
    )
    assert [c for _, c in extract_commands(events)] == [
        "ls -l",
        "echo safe",
        "cat /etc/shadow",
        "uptime",
    ]


def test_escape_sequences_are_ignored_and_utf8_split_across_events() -> None:
    events = _typed(
        b"git lo\x1b[D\x1b[Cg",
        b"\x1bOA",
        b" --oneline\x1b[200~ | head\x1b[201~",
        b"\xc3",
        b"\xa9\r",
    )
    assert extract_commands(events) == [(2.0, "git log --oneline | headé")]


def test_output_is_not_input() -> None:
    events: list[Event] = [Output(0.0, b"ls\r\n"), Input(1.0, b"pwd\r")]
    assert extract_commands(events) == [(1.0, "pwd")]
