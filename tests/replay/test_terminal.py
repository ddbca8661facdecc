"""Unit tests of the replay terminal emulator, one escape family at a time."""

from __future__ import annotations

import pytest

from replay.terminal import MAX_COLS, Cell, ScreenSnapshot, TerminalEmulator


def emu(data: str | bytes, cols: int = 20, rows: int = 5) -> TerminalEmulator:
    e = TerminalEmulator(cols, rows)
    e.feed(data.encode() if isinstance(data, str) else data)
    return e


def cell(e: TerminalEmulator, x: int, y: int) -> Cell:
    return e.snapshot().lines[y][x]


def cursor(e: TerminalEmulator) -> tuple[int, int]:
    s = e.snapshot()
    return s.cursor_x, s.cursor_y


# -- text, decoding, basic controls ------------------------------------------------


def test_plain_text_and_newlines() -> None:
    e = emu("hello\r\nworld  ")
    assert e.text() == ["hello", "world", "", "", ""]
    assert cursor(e) == (7, 1)


def test_utf8_split_across_feeds_is_decoded_whole() -> None:
    e = TerminalEmulator(10, 2)
    data = "日é".encode()
    for i in range(len(data)):
        e.feed(data[i : i + 1])
    assert e.text()[0] == "日é"


def test_invalid_utf8_becomes_replacement_character() -> None:
    assert emu(b"a\xff\xfeb").text()[0] == "a\ufffd\ufffdb"


def test_autowrap_and_pending_wrap() -> None:
    e = emu("x" * 20)
    assert cursor(e) == (19, 0)  # parked on the last column, wrap pending
    e.feed(b"y")
    assert e.text()[:2] == ["x" * 20, "y"]


def test_pending_wrap_cancelled_by_cursor_motion() -> None:
    e = emu("x" * 20 + "\x1b[B\x1b[Az", rows=3)
    assert e.text()[0] == "x" * 19 + "z"


def test_no_autowrap_overwrites_last_column() -> None:
    e = emu("\x1b[?7l" + "x" * 19 + "abc")
    assert e.text()[:2] == ["x" * 19 + "c", ""]


def test_backspace_tab_and_carriage_return() -> None:
    e = emu("abc\bX\tY\rZ")
    assert e.text()[0] == "ZbX     Y"


def test_linefeed_scrolls_at_bottom() -> None:
    e = emu("1\r\n2\r\n3\r\n4\r\n5\r\n6", rows=5)
    assert e.text() == ["2", "3", "4", "5", "6"]


def test_bell_nul_and_del_are_invisible() -> None:
    assert emu("a\x07\x00\x7fb").text()[0] == "ab"


# -- cursor motion ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "pos"),
    [
        ("\x1b[3;5H", (4, 2)),
        ("\x1b[3;5f", (4, 2)),
        ("\x1b[H", (0, 0)),
        ("\x1b[99;99H", (19, 4)),
        ("\x1b[3;5H\x1b[2A", (4, 0)),
        ("\x1b[3;5H\x1b[B", (4, 3)),
        ("\x1b[3;5H\x1b[3C", (7, 2)),
        ("\x1b[3;5H\x1b[9D", (0, 2)),
        ("\x1b[3;5H\x1b[E", (0, 3)),
        ("\x1b[3;5H\x1b[F", (0, 1)),
        ("\x1b[3;5H\x1b[12G", (11, 2)),
        ("\x1b[3;5H\x1b[12`", (11, 2)),
        ("\x1b[3;5H\x1b[4d", (4, 3)),
        ("\x1b[3;5H\x1b[2a", (6, 2)),
        ("\x1b[3;5H\x1b[e", (4, 3)),
        ("\x1b[3;5H\x1b[I", (8, 2)),
        ("\x1b[3;12H\x1b[Z", (8, 2)),
        ("\x1b[3;12H\x1b[2Z", (0, 2)),
    ],
)
def test_cursor_motion(seq: str, pos: tuple[int, int]) -> None:
    assert cursor(emu(seq)) == pos


def test_save_and_restore_cursor_with_attributes() -> None:
    e = emu("\x1b[2;3H\x1b[31m\x1b7\x1b[0m\x1b[5;5H\x1b8X")
    assert cursor(e) == (3, 1)
    assert cell(e, 2, 1) == Cell("X", fg="color(1)")


def test_restore_cursor_twice_uses_the_same_slot() -> None:
    e = emu("\x1b[2;3H\x1b7\x1b[5;5H\x1b8\x1b[4;4H\x1b8")
    assert cursor(e) == (2, 1)


def test_csi_s_u_save_restore() -> None:
    assert cursor(emu("\x1b[2;3H\x1b[s\x1b[5;5H\x1b[u")) == (2, 1)


def test_cursor_visibility() -> None:
    assert emu("\x1b[?25l").snapshot().cursor_visible is False
    assert emu("\x1b[?25l\x1b[?25h").snapshot().cursor_visible is True


def test_reverse_index_scrolls_down_at_top() -> None:
    e = emu("a\r\nb\x1b[H\x1bM")
    assert e.text()[:3] == ["", "a", "b"]


def test_index_and_next_line() -> None:
    e = emu("ab\x1bDc\x1bEd")
    assert e.text()[:3] == ["ab", "  c", "d"]


# -- erasing and editing ---------------------------------------------------------


@pytest.mark.parametrize(
    ("seq", "line"),
    [
        ("\x1b[K", "abcd"),
        ("\x1b[0K", "abcd"),
        ("\x1b[1K", "     fghij"),
        ("\x1b[2K", ""),
        ("\x1b[3X", "abcd   hij"),
        ("\x1b[2P", "abcdghij"),
        ("\x1b[2@", "abcd  efghij"),
        ("\x1b[9K", "abcdefghij"),
    ],
)
def test_line_editing(seq: str, line: str) -> None:
    e = emu("abcdefghij\x1b[1;5H" + seq)
    assert e.text()[0] == line


def test_erase_in_display() -> None:
    base = "aaa\r\nbbb\r\nccc\x1b[2;2H"
    assert emu(base + "\x1b[J").text()[:3] == ["aaa", "b", ""]
    assert emu(base + "\x1b[1J").text()[:3] == ["", "  b", "ccc"]
    assert emu(base + "\x1b[2J").text()[:3] == ["", "", ""]
    assert emu(base + "\x1b[3J").text()[:3] == ["aaa", "bbb", "ccc"]  # scrollback only


def test_erase_uses_background_colour() -> None:
    e = emu("\x1b[44;4m\x1b[2J")
    assert cell(e, 7, 3) == Cell(" ", bg="color(4)")  # not underlined


def test_insert_and_delete_lines() -> None:
    e = emu("1\r\n2\r\n3\r\n4\x1b[2;1H\x1b[L")
    assert e.text()[:5] == ["1", "", "2", "3", "4"]
    e.feed(b"\x1b[2M")
    assert e.text()[:5] == ["1", "3", "4", "", ""]


def test_scroll_region_and_su_sd() -> None:
    e = emu("1\r\n2\r\n3\r\n4\r\n5\x1b[2;4r\x1b[4;1H\n")
    assert e.text() == ["1", "3", "4", "", "5"]
    e.feed(b"\x1b[T")
    assert e.text() == ["1", "", "3", "4", "5"]
    e.feed(b"\x1b[2S")
    assert e.text() == ["1", "4", "", "", "5"]


def test_repeat_last_character() -> None:
    assert emu("ab\x1b[3b").text()[0] == "abbbb"


def test_insert_mode() -> None:
    assert emu("abc\x1b[1;2H\x1b[4hXY\x1b[4lZ").text()[0] == "aXYZc"


def test_dec_line_drawing_charset() -> None:
    assert emu("\x1b(0lqk\x1b(Bq").text()[0] == "┌─┐q"


def test_alignment_display() -> None:
    assert emu("\x1b#8", cols=3, rows=2).text() == ["EEE", "EEE"]


def test_full_reset() -> None:
    e = emu("\x1b[31mabc\x1b[?1049h\x1b[?25l\x1bc")
    s = e.snapshot()
    assert s.text()[0] == "" and not s.alternate and s.cursor_visible
    e.feed(b"x")
    assert cell(e, 0, 0) == Cell("x")


def test_soft_reset_keeps_text() -> None:
    e = emu("abc\x1b[1;31m\x1b[?25l\x1b[!px")
    assert e.text()[0] == "abcx"
    assert cell(e, 3, 0) == Cell("x")
    assert e.snapshot().cursor_visible


def test_title() -> None:
    assert emu("\x1b]0;my title\x07").snapshot().title == "my title"
    assert emu("\x1b]2;other\x1b\\").snapshot().title == "other"


# -- colours and attributes --------------------------------------------------------


@pytest.mark.parametrize(
    ("sgr", "expected"),
    [
        ("31", Cell("x", fg="color(1)")),
        ("42", Cell("x", bg="color(2)")),
        ("93", Cell("x", fg="color(11)")),
        ("104", Cell("x", bg="color(12)")),
        ("38;5;208", Cell("x", fg="color(208)")),
        ("48;5;22", Cell("x", bg="color(22)")),
        ("38;2;255;105;180", Cell("x", fg="#ff69b4")),
        ("48;2;0;0;1", Cell("x", bg="#000001")),
        ("38:2::255:0:0", Cell("x", fg="#ff0000")),
        ("38:2:1:2:3", Cell("x", fg="#010203")),
        ("38:5:99", Cell("x", fg="color(99)")),
        (
            "1;3;4;7;9",
            Cell("x", bold=True, italic=True, underline=True, reverse=True, strikethrough=True),
        ),
        ("4:3", Cell("x", underline=True)),
        ("4;4:0", Cell("x")),
        ("1;22", Cell("x")),
        ("31;39;41;49", Cell("x")),
        ("7;27;3;23;4;24", Cell("x")),
        ("38;5;300;1", Cell("x", bold=True)),
        ("38;2;300;0;0;1", Cell("x", bold=True)),
        ("58:2::1:2:3;1", Cell("x", bold=True)),
        ("1;31;0", Cell("x")),
        ("", Cell("x")),
    ],
)
def test_sgr(sgr: str, expected: Cell) -> None:
    e = emu("\x1b[1;5;31;44m\x1b[0m\x1b[" + sgr + "mx")
    assert cell(e, 0, 0) == expected


def test_attributes_apply_to_following_text_only() -> None:
    e = emu("a\x1b[1mb\x1b[mc")
    assert [cell(e, x, 0).bold for x in range(3)] == [False, True, False]


def test_private_and_prefixed_sgr_are_not_sgr() -> None:
    # vim sends these: modifyOtherKeys (CSI > 4;2 m) and CSI ? 4 m; neither is underline.
    e = emu("\x1b[>4;2m\x1b[?4m\x1b[>4;mx")
    assert cell(e, 0, 0) == Cell("x")


# -- wide and zero-width characters ------------------------------------------------


def test_cjk_takes_two_cells() -> None:
    e = emu("日本x")
    line = e.snapshot().lines[0]
    assert [c.char for c in line[:5]] == ["日", "", "本", "", "x"]
    assert cursor(e) == (5, 0)
    assert e.text()[0] == "日本x"


def test_emoji_with_vs16_stays_in_one_cell() -> None:
    e = emu("\u2764\ufe0f end")
    line = e.snapshot().lines[0]
    assert line[0].char == "\u2764\ufe0f"
    assert e.text()[0] == "❤️ end"


def test_zwj_sequence_is_kept_whole() -> None:
    e = emu("👩\u200d💻 end")
    assert e.text()[0] == "👩\u200d💻 end"
    line = e.snapshot().lines[0]
    assert [c.char for c in line[:4]] == ["👩\u200d", "", "💻", ""]


def test_combining_mark_attaches_to_previous_cell() -> None:
    e = emu("cafe\u0301!")
    line = e.snapshot().lines[0]
    assert line[3].char == "e\u0301"
    assert line[4].char == "!"
    assert e.text()[0] == "cafe\u0301!"


def test_combining_mark_after_wide_char_and_at_wrap() -> None:
    e = emu("日\u0301", cols=4)
    assert e.snapshot().lines[0][0].char == "日\u0301"
    e = emu("abcd\u0301", cols=4)
    assert e.text()[:2] == ["abcd\u0301", ""]


def test_combining_mark_at_line_start_is_dropped_without_harm() -> None:
    assert emu("\u0301ab").text()[0] == "ab"


def test_combining_flood_is_bounded() -> None:
    e = emu("a" + "\u0301" * 10_000 + "b")
    assert len(e.snapshot().lines[0][0].char) <= 16
    assert e.snapshot().lines[0][1].char == "b"


def test_wide_char_at_last_column_wraps() -> None:
    e = emu("abc日", cols=4)
    assert e.text()[:2] == ["abc", "日"]


def test_overwriting_half_of_a_wide_char_blanks_the_other_half() -> None:
    assert emu("日本\x1b[1;2Hx").text()[0] == " x本"
    assert emu("日本\x1b[1;1Hx").text()[0] == "x 本"


def test_snapshot_invariant_wide_followed_by_stub() -> None:
    e = emu("日本語\x1b[1;2H\x1b[P\x1b[1;5H\x1b[@", cols=6)
    for line in e.snapshot().lines:
        for x, c in enumerate(line):
            if c.char == "":
                assert x > 0 and line[x - 1].char not in ("", " ")


# -- alternate screen ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["1049", "1047", "47"])
def test_alternate_screen_restores_main_exactly(mode: str) -> None:
    e = emu("\x1b[31mmain 1\r\n\x1b[1mmain 2\x1b[m")
    before = e.snapshot()
    e.feed(f"\x1b[?{mode}h\x1b[2J\x1b[Halt text\x1b[?{mode}l".encode())
    after = e.snapshot()
    assert after.lines == before.lines
    assert not after.alternate


def test_1049_saves_and_restores_cursor_and_clears() -> None:
    e = emu("abc\x1b[?1049h")
    s = e.snapshot()
    assert s.alternate and s.text() == ["", "", "", "", ""]
    e.feed(b"\x1b[4;4Hxyz\x1b7\x1b[?1049l")
    assert cursor(e) == (3, 0)
    e.feed(b"\x1b[?1049h")  # entering again starts from a clear screen
    assert e.text()[3] == ""


def test_alternate_screen_is_separate() -> None:
    e = emu("main\x1b[?1049h\x1b[Halt")
    assert e.text()[0] == "alt"
    assert e.snapshot().alternate
    e.feed(b"\x1b[?1049l")
    assert e.text()[0] == "main"


def test_47_keeps_alternate_contents_1047_clears_on_exit() -> None:
    e = emu("\x1b[?47h\x1b[Halt\x1b[?47l\x1b[?47h")
    assert e.text()[0] == "alt"
    e = emu("\x1b[?1047h\x1b[Halt\x1b[?1047l\x1b[?1047h")
    assert e.text()[0] == ""


def test_decsc_inside_alternate_does_not_clobber_main_save() -> None:
    e = emu("\x1b[2;2H\x1b[?1049h\x1b[4;4H\x1b7\x1b[?1049l")
    assert cursor(e) == (1, 1)


def test_repeated_1049h_does_not_lose_main_screen() -> None:
    e = emu("main\x1b[?1049h\x1b[?1049hx\x1b[?1049l")
    assert e.text()[0] == "main"


# -- resize -------------------------------------------------------------------------


def test_resize_wider_and_taller_keeps_text() -> None:
    e = emu("hello\r\nworld", cols=10, rows=3)
    e.resize(20, 5)
    s = e.snapshot()
    assert (s.cols, s.rows) == (20, 5)
    assert s.text() == ["hello", "world", "", "", ""]
    assert all(len(line) == 20 for line in s.lines)


def test_resize_narrower_truncates_and_clamps_cursor() -> None:
    e = emu("hello world", cols=20, rows=3)
    e.resize(5, 3)
    assert e.text()[0] == "hello"
    assert cursor(e) == (4, 0)


def test_resize_shorter_keeps_cursor_line_visible() -> None:
    e = emu("1\r\n2\r\n3\r\n4\r\n5", rows=5)
    e.resize(20, 3)
    assert e.text() == ["3", "4", "5"]
    assert cursor(e) == (1, 2)


def test_resize_shorter_with_cursor_at_top_drops_bottom() -> None:
    e = emu("1\r\n2\r\n3\x1b[H", rows=5)
    e.resize(20, 2)
    assert e.text() == ["1", "2"]


def test_resize_in_alternate_screen_resizes_main_too() -> None:
    e = emu("1\r\n2\r\n3\r\n4\r\n5\x1b[?1049h", rows=5)
    e.resize(10, 3)
    e.feed(b"\x1b[?1049l")
    assert e.text() == ["3", "4", "5"]
    assert cursor(e) == (1, 2)


def test_resize_extends_tab_stops() -> None:
    e = emu("", cols=10)
    e.resize(30, 5)
    e.feed(b"\t\t\tx")
    assert e.text()[0] == " " * 24 + "x"


def test_resize_cuts_wide_char_at_new_edge() -> None:
    e = emu("ab日", cols=10)
    e.resize(3, 5)
    assert e.text()[0] == "ab"


def test_resize_is_clamped() -> None:
    e = TerminalEmulator(0, -3)
    assert (e.cols, e.rows) == (1, 1)
    e.resize(10**9, 10**9)
    assert e.cols == MAX_COLS


def test_deccolm_is_ignored() -> None:
    e = emu("abc\x1b[?3h")
    assert e.cols == 20 and e.text()[0] == "abc"


# -- robustness of the parser -------------------------------------------------------


@pytest.mark.parametrize(
    "seq",
    [
        "\x1bPzz\x1b\\",  # DCS (vim's XTGETTCAP-like probe)
        "\x1bP+q544e\x1b\\",
        "\x1b_apc string\x1b\\",
        "\x1b^pm\x1b\\",
        "\x1bXsos\x1b\\",
        "\x1b]8;;https://example.com\x1b\\",
        "\x1b]10;?\x07",
        "\x1b[0%m",
        "\x1b[2 q",
        "\x1b[?1$p",
        "\x1b[>c",
        "\x1b[=5u",
        "\x1b[22;0;0t",
        "\x1b[6n",
        "\x1b[?1006;1000h",
        "\x1b=\x1b>",
        "\x1b%G",
        "\x1b[1;2;3;4;5T",
    ],
)
def test_unimplemented_sequences_leave_no_trace(seq: str) -> None:
    e = emu("a" + seq + "b")
    assert e.text()[0] == "ab"
    assert cell(e, 1, 0) == Cell("b")


def test_esc_aborts_a_sequence_in_progress() -> None:
    assert emu("a\x1b[12\x1b[31mb").snapshot().lines[0][1] == Cell("b", fg="color(1)")
    assert emu("a\x1b]0;title\x1b[1mb").text()[0] == "ab"


def test_can_aborts_a_sequence() -> None:
    assert emu("a\x1b[12\x18b").text()[0] == "ab"


def test_sequence_split_across_feeds() -> None:
    e = TerminalEmulator(20, 5)
    for byte in b"\x1b[38;2;1;2;3mx\x1bPq\x1b\\y":
        e.feed(bytes([byte]))
        assert isinstance(e.snapshot(), ScreenSnapshot)
    assert e.text()[0] == "xy"
    assert cell(e, 0, 0).fg == "#010203"


def test_at_rest_only_between_sequences() -> None:
    e = TerminalEmulator(20, 5)
    assert e.at_rest
    e.feed(b"\x1b[3")
    assert not e.at_rest
    e.feed(b"1m\xe6")
    assert not e.at_rest
    e.feed(b"\x97\xa5")
    assert e.at_rest


def test_c1_controls() -> None:
    e = emu("a\u009b31mb\u009d0;t\u009cc")
    assert e.text()[0] == "abc"
    assert cell(e, 1, 0).fg == "color(1)"
    assert e.snapshot().title == "t"


def test_origin_mode_with_line_positioning_does_not_raise() -> None:
    e = emu("\x1b[?6h\x1b[3d\x1b[2;4r\x1b[2dx")
    assert e.text()[2] == "x"


def test_margin_reset_homes_cursor() -> None:
    assert cursor(emu("\x1b[2;4r\x1b[3;3H\x1b[r")) == (0, 0)


def test_ansi_modes_other_than_irm_and_lnm_are_ignored() -> None:
    e = emu("abc\x1b[96h\x1b[224l\x1b[800l")  # pyte's shifted DEC constants, non-private
    s = e.snapshot()
    assert (s.cols, s.text()[0], s.cursor_visible) == (20, "abc", True)


def test_line_feed_new_line_mode() -> None:
    assert emu("ab\x1b[20h\ncd\x1b[20l\nef").text()[:3] == ["ab", "cd", "  ef"]
