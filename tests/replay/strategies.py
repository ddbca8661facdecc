"""Hypothesis strategies shared by the emulator fuzz and keyframe tests."""

from __future__ import annotations

from hypothesis import strategies as st

FRAGMENTS = [
    "\x1b", "\x1b[", "\x1b]", "\x1bP", "\x1b_", "\x1b\\", "\x1b(0", "\x1b(B", "\x1b#8",
    "\x1b7", "\x1b8", "\x1bc", "\x1bM", "\x1bD", "\x1bE", "\x9b", "\x9d", "\x9c", "\x07",
    "\x18", "?", ">", "!", "$", " ", ";", ":", "0", "1", "2", "5", "38", "48", "255",
    "1049", "1047", "47", "25", "6", "7", "9999", "m", "h", "l", "H", "J", "K", "L", "M",
    "P", "@", "X", "S", "T", "b", "r", "s", "u", "d", "G", "Z", "I", "p", "q", "\r", "\n",
    "\t", "\b", "\x0e", "\x0f", "a", "xyz", "日本", "\u0301", "\ufe0f", "\u200d", "👩",
    "\u2764", "\U0001f3fb", "\x00", "\x7f",
]  # fmt: skip

fragment_streams = st.lists(st.sampled_from(FRAGMENTS), max_size=80).map(
    lambda parts: "".join(parts).encode()
)
streams = st.one_of(st.binary(max_size=400), fragment_streams)
ops = st.lists(
    st.one_of(
        streams.map(lambda data: ("feed", data)),
        st.tuples(st.integers(-2, 30), st.integers(-2, 12)).map(lambda size: ("resize", size)),
    ),
    max_size=8,
)
