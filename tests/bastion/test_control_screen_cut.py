"""The late-joiner cut, checked against the real terminal emulator.

The property: feeding a fresh emulator ``cut.prefix + data[cut.offset:]`` gives the
same screen (text, cursor, main/alternate) as feeding it everything - for streams
built from what shells, pagers and full-screen programs really send.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.control.screen_cut import ALT_ENTER, find_cut
from replay.terminal import TerminalEmulator

COLS, ROWS = 30, 8


def screen(data: bytes, cols: int = COLS, rows: int = ROWS) -> tuple[object, ...]:
    emu = TerminalEmulator(cols, rows)
    emu.feed(data)
    snap = emu.snapshot()
    return (tuple(snap.text()), snap.cursor_x, snap.cursor_y, snap.alternate)


def assert_same_screen(data: bytes, rows: int = ROWS) -> None:
    cut = find_cut(data, rows)
    if cut.exact:
        assert screen(cut.apply(data), rows=rows) == screen(data, rows=rows), cut


_word = st.text(alphabet="abcdefghij klmnop0123456789漢字", min_size=1, max_size=12)
_token = st.one_of(
    _word.map(str.encode),
    st.just(b"\r\n"),
    st.just(b"\r\n"),
    st.just(b"\n"),
    st.just(b"\r"),
    st.just(b"\x08"),
    st.just(b"\t"),
    st.just(b"\x1b[2J"),
    st.just(b"\x1b[H\x1b[2J"),
    st.just(b"\x1b[H\x1b[J"),
    st.just(b"\x1bc"),
    st.just(b"\x1b[?1049h"),
    st.just(b"\x1b[?1049l"),
    st.just(b"\x1b[?47h"),
    st.just(b"\x1b[?47l"),
    st.just(b"\x1b[K"),
    st.just(b"\x1b[1;31m"),
    st.just(b"\x1b[0m"),
    st.just(b"\x1b[?25l"),
    st.just(b"\x1b]0;title\x07"),
    st.just(b"\x1b[3A"),
    st.just(b"\x1b[2B"),
    st.just(b"\x1bM"),
    st.just(b"\x1b[2;5r"),
    st.just(b"\x1b[r"),
    st.builds(lambda r, c: b"\x1b[%d;%dH" % (r, c), st.integers(1, ROWS), st.integers(1, COLS)),
    st.just(b"".join(b"%d\r\n" % i for i in range(2 * ROWS + 1))),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_token, max_size=60))
def test_cut_reproduces_the_screen(tokens: list[bytes]) -> None:
    assert_same_screen(b"".join(tokens))


@settings(max_examples=100, deadline=None)
@given(st.lists(_token, max_size=40), st.lists(_token, max_size=40))
def test_cut_after_alternate_screen_work(before: list[bytes], after: list[bytes]) -> None:
    assert_same_screen(b"".join(before) + b"\x1b[?1049h\x1b[H\x1b[2J" + b"".join(after))


def test_scrolling_output_cuts_near_the_end() -> None:
    data = b"".join(b"log line %d\r\n" % i for i in range(10_000))
    cut = find_cut(data, ROWS)
    assert cut.exact and cut.prefix == b""
    assert len(data) - cut.offset < 40 * ROWS  # only the last screenfuls are replayed
    assert screen(cut.apply(data)) == screen(data)


def test_clear_screen_is_a_cut() -> None:
    data = b"old\r\n" * 100 + b"\x1b[H\x1b[2J$ ls\r\nfile\r\n$ "
    cut = find_cut(data, ROWS)
    assert data[cut.offset :].startswith(b"\x1b[H\x1b[2J")
    assert screen(cut.apply(data)) == screen(data)


def test_inside_the_alternate_screen_the_bytes_enter_it_first() -> None:
    vim = b"\x1b[?1049h\x1b[22;0;0t\x1b[H\x1b[2J" + b"~\r\n" * 5 + b"\x1b[1;1Hfile"
    data = b"$ vim\r\n" * 50 + vim + b"\x1b[2J\x1b[Hredrawn\x1b[3;1Hx"
    cut = find_cut(data, ROWS)
    assert cut.exact and cut.apply(data).startswith(ALT_ENTER)
    assert screen(cut.apply(data)) == screen(data)
    assert screen(data)[3] is True


def test_leaving_the_alternate_screen_needs_the_main_screen() -> None:
    main = b"".join(b"prompt %d\r\n" % i for i in range(40))
    data = main + b"\x1b[?1049h\x1b[H\x1b[2Jless view\x1b[?1049l$ "
    cut = find_cut(data, ROWS)
    assert cut.offset < len(main)  # the cut is in the main screen's scrolling
    assert screen(cut.apply(data)) == screen(data)


def test_cursor_addressed_updates_without_clear_fall_back() -> None:
    data = b"\x1b[5;5Hx" * 100
    cut = find_cut(data, ROWS)
    assert not cut.exact


def test_partial_scroll_region_blocks_the_scroll_cut() -> None:
    data = b"\x1b[2;5r" + b"".join(b"%d\r\n" % i for i in range(100))
    cut = find_cut(data, ROWS)
    assert not cut.exact or screen(cut.apply(data)) == screen(data)


def test_a_reset_forgets_older_margins() -> None:
    """Found by hypothesis: margins set before a full reset (ESC c) were replayed
    in front of a later clear, so the cursor moved within margins the reset had
    removed."""
    data = b"\x1b[2;5r\x1bc\x1b[H\x1b[2J\x1b[3A"
    cut = find_cut(data, ROWS)
    assert cut.prefix == b""
    assert screen(cut.apply(data)) == screen(data)
