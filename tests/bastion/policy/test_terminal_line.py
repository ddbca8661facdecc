"""The terminal line tracker against bash's real echo (captured from bash 5.2 in a pty)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bastion.policy.terminal_line import (
    Enter,
    LineTracker,
    Paste,
    Submit,
    Unchecked,
    render,
)

PROMPT = b"\x1b[?2004hP$ "


def drive(t: LineTracker, data: bytes) -> tuple[bytes, list[Submit]]:
    """What a relay that allows everything forwards, and the submit points it met."""
    out = bytearray()
    submits: list[Submit] = []
    while data:
        forward, submit, data = t.input(data)
        out += forward
        if submit is None:
            break
        submits.append(submit)
        if isinstance(submit, Enter | Unchecked):
            out += submit.key
            t.submitted()
        elif isinstance(submit, Paste):
            out += submit.raw
    return bytes(out), submits


def typed(pairs: list[tuple[bytes, bytes]], prompt: bytes = PROMPT) -> LineTracker:
    """A tracker after the prompt and each (keys, echo) pair."""
    t = LineTracker()
    t.output(b"last login\r\n" + prompt)
    for keys, echo in pairs:
        forward, submit, rest = t.input(keys)
        assert (forward, submit, rest) == (keys, None, b"")
        t.output(echo)
    return t


def test_plain_typing_then_enter() -> None:
    t = typed([(b"rm -rf X", b"rm -rf X")])
    forward, submit, rest = t.input(b"\r")
    assert (forward, submit, rest) == (b"", Enter(b"\r"), b"")
    assert t.line() == "rm -rf X"


def test_editing_backspace_and_insert_in_the_middle() -> None:
    t = typed(
        [
            (b"echo abc", b"echo abc"),
            (b"\x7f", b"\x08\x1b[K"),
            (b"\x1b[D\x1b[D", b"\x08\x08"),
            (b"X", b"Xab\x08\x08"),
        ]
    )
    assert t.line() == "echo Xab"


def test_tab_completion_is_what_the_echo_shows() -> None:
    t = typed([(b"rm vic", b"rm vic"), (b"\t", b"timfile1 ")])
    assert t.line() == "rm victimfile1"


def test_history_recall_redraws_over_the_prompt() -> None:
    t = typed(
        [
            (b"\x1b[A", b"exit"),
            (b"\x1b[A", b"\r\x1b[C\x1b[C\x1b[C\x1b[4Prm -rf X"),
        ]
    )
    assert t.line() == "rm -rf X"


def test_ctrl_u_redraw_and_the_line_after() -> None:
    t = typed([(b"echo ab", b"echo ab")])
    forward, submit, _ = t.input(b"\x15")
    assert (forward, submit) == (b"\x15", None)
    t.output(b"\r\x1b[C\x1b[C\x1b[C\x1b[K")
    forward, submit, _ = t.input(b"rm -rf X")
    t.output(b"rm -rf X")
    assert t.line() == "rm -rf X"


def test_ctrl_c_then_a_new_line_in_one_chunk() -> None:
    t = typed([(b"echo half", b"echo half")])
    forward, submit, rest = t.input(b"\x03rm -rf X\r")
    assert forward == b"\x03rm -rf X" and submit == Enter(b"\r") and rest == b""
    # the echo arrives after: ^C, a fresh prompt, the new line
    t.output(b"^C\x1b[?2004l\r\x1b[?2004h\x1b[?2004l\r\r\n" + PROMPT + b"rm -rf X")
    assert t.echo_pending is False
    assert t.line() == "rm -rf X"


def test_typed_ahead_is_echoed_by_the_tty_before_the_prompt() -> None:
    t = typed([(b"sleep 1", b"sleep 1")])
    _, submit, _ = t.input(b"\r")
    t.submitted()
    t.output(b"\r\n")
    t.input(b"rm -rf X")  # typed while sleep runs: the tty echoes it, then readline again
    assert t.echo_pending
    t.output(b"\x1b[?2004l\r")
    t.output(b"rm -rf X")
    t.output(PROMPT + b"rm -rf X")  # the prompt follows the tty's echo on the same row
    _, submit, _ = t.input(b"\r")
    assert submit == Enter(b"\r")
    assert t.line() == "rm -rf X"


def test_typed_ahead_on_the_prompt_row() -> None:
    t = typed([(b"true", b"true")])
    t.input(b"\r")
    t.submitted()
    t.output(b"\r\n\x1b[?2004l\r")
    t.input(b"rm -rf X")
    t.output(b"rm -rf X" + PROMPT + b"rm -rf X")
    assert t.line() == "rm -rf X"


def test_echo_pending_until_output() -> None:
    t = typed([])
    t.input(b"ls")
    assert t.echo_pending
    t.output(b"ls")
    assert not t.echo_pending


def test_next_line_after_output() -> None:
    t = typed([(b"echo hi", b"echo hi")])
    _, submit, _ = t.input(b"\r")
    assert submit == Enter(b"\r")
    t.submitted()
    t.output(b"\r\n\x1b[?2004l\rhi\r\n" + PROMPT)
    t.input(b"id")
    t.output(b"id")
    assert t.line() == "id"


def test_bracketed_paste_is_judged_line_by_line_with_what_was_typed() -> None:
    t = typed([(b"sudo ", b"sudo ")])
    forward, submit, rest = t.input(b"\x1b[200~ls\nrm -rf q\r\n\x1b[201~x")
    assert forward == b"" and rest == b"x"
    assert submit == Paste(b"\x1b[200~ls\nrm -rf q\r\n\x1b[201~", ("sudo ls", "rm -rf q"))


def test_paste_split_across_chunks() -> None:
    t = typed([])
    assert t.input(b"\x1b[200~rm -r") == (b"", None, b"")
    assert t.input(b"f X\x1b[20") == (b"", None, b"")
    forward, submit, rest = t.input(b"1~")
    assert submit == Paste(b"\x1b[200~rm -rf X\x1b[201~", ("rm -rf X",))


def test_alternate_screen_lines_are_unchecked_and_leaving_resets() -> None:
    t = typed([(b"vim", b"vim")])
    t.input(b"\r")
    t.submitted()
    t.output(b"\r\n\x1b[?10")  # the switch cut in two chunks
    t.output(b"49h\x1b[H\x1b[2J~\r\n~")
    assert t.alternate
    _, submit, _ = t.input(b":!rm -rf X\r")
    assert submit == Unchecked(b"\r")
    t.output(b"\x1b[?1049l\r\n" + PROMPT)
    assert not t.alternate
    t.input(b"ls")
    t.output(b"ls")
    assert t.line() == "ls"


def test_a_long_line_wraps_and_is_redrawn_across_rows() -> None:
    long = b"echo 12345678901234567890abcdefghijklmnopqrstuvwxyzABCDEFG"
    t = LineTracker(width=20)
    t.output(b"x\r\n" + PROMPT)
    t.input(long)
    t.output(long)
    assert t.line() == long.decode()
    # bash 5.2 at 20 columns, for 30 backspaces then Left x5 and "X" (captured)
    t.input(b"\x7f" * 30)
    t.output(
        b"\r\x1b[K\x1b[A"
        + b"\x1b[C" * 19
        + b"\x1b[K\r\n\r\x1b[K\x1b[A"
        + b"\x1b[C" * 19
        + b"\x08\x1b[K" * 18
        + b"\r\x1b[K\x1b[A"
        + b"\x1b[C" * 19
        + b"\x1b[K\r\n\r\x1b[K\x1b[A"
        + b"\x1b[C" * 19
        + b"\x08\x1b[K" * 8
    )
    assert t.line() == "echo 12345678901234567890abc"
    t.input(b"\x1b[D" * 5)
    t.output(b"\x08" * 5)
    t.input(b"X")
    t.output(b"X90abc\x08\x08\x08\x08\x08")
    assert t.line() == "echo 123456789012345678X90abc"


def test_render_model() -> None:
    assert render(b"abc\rX") == ("Xbc", 1)
    assert render(b"abcdef\x1b[3D\x1b[P") == ("abcef", 3)
    assert render(b"ab\x1b[2@\x1b[0K") == ("ab", 2)
    assert render(b"\x1b[31mred\x1b[0m \x1b]0;title\x07ok") == ("red ok", 6)


_PIECES = [b"\r", b"\n", b"\x03", b"\x15", b"\x1b[200~", b"\x1b[201~", b"\x1b[20", b"1~", b"rm x"]
_OUT_PIECES = [b"\x1b[?1049h", b"\x1b[?1049l", b"\x1b[?10", b"\r\n", b"\x1b[3D", b"P$ "]
_chunks = st.lists(st.one_of(st.binary(max_size=12), st.sampled_from(_PIECES)), max_size=6)
_outs = st.lists(st.one_of(st.binary(max_size=12), st.sampled_from(_OUT_PIECES)), max_size=6)


@given(st.lists(_chunks.map(b"".join), max_size=12), st.lists(_outs.map(b"".join), max_size=12))
def test_fuzz_every_input_byte_is_forwarded_once_in_order(
    inputs: list[bytes], outputs: list[bytes]
) -> None:
    t = LineTracker()
    sent = bytearray()
    for i, data in enumerate(inputs):
        if i < len(outputs):
            t.output(outputs[i])
        forward, _ = drive(t, data)
        sent += forward
        t.line()
    whole = b"".join(inputs)
    if t.in_paste:  # an unfinished paste is held until its end comes
        assert whole.startswith(bytes(sent)) and b"\x1b[200~" in whole[len(sent) :]
    else:
        assert bytes(sent) == whole


def test_the_line_editor_is_known_by_its_bracketed_paste_switch() -> None:
    """bash, zsh and fish switch bracketed paste on while they read a line (they echo every
    key) and off when they run it (a password prompt may then echo nothing)."""
    t = LineTracker()
    assert not t.editing
    t.output(b"x\r\n\x1b[?20")  # the switch cut in two chunks
    t.output(b"04hP$ ")
    assert t.editing
    t.input(b"sudo true")
    t.output(b"sudo true")
    t.input(b"\r")
    t.submitted()
    t.output(b"\x1b[?2004l\r\r\n[sudo] password for u: ")
    assert not t.editing
    t.output(b"\r\n" + PROMPT)
    assert t.editing
