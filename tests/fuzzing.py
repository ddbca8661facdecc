"""Byte-level mutations shared by the fuzz tests of every parser we own.

Hypothesis draws a short list of edits (flip a bit, set a byte, insert, delete,
truncate, duplicate a run) and ``apply_mutations`` applies them to a valid stream,
so each parser sees input that is almost right, where bugs hide.
"""

from __future__ import annotations

import os

from hypothesis import strategies as st

FUZZ_EXAMPLES_ENV = "BASTION_FUZZ_EXAMPLES"


def budget(short: int, share: float = 1.0) -> int:
    """Examples per fuzz test: ``short`` in CI, ``share`` of ``$BASTION_FUZZ_EXAMPLES`` if set.

    ``scripts/fuzz-long`` sets it for a long run; tests pass their CI budget here rather
    than to ``settings`` directly so that one variable scales every fuzz test we own
    (``share`` < 1 for the few whose single example is slow).
    """
    value = os.environ.get(FUZZ_EXAMPLES_ENV, "").strip()
    return max(short, int(int(value) * share)) if value else short

Mutation = tuple[str, float, int, int]


def byte_mutations(max_run: int) -> st.SearchStrategy[list[Mutation]]:
    """One to four edits; ``max_run`` bounds deleted and duplicated runs."""
    return st.lists(
        st.tuples(
            st.sampled_from(["flip", "set", "insert", "delete", "truncate", "duplicate"]),
            st.floats(0, 1, exclude_max=True),
            st.integers(0, 255),
            st.integers(1, max_run),
        ),
        min_size=1,
        max_size=4,
    )


def apply_mutations(data: bytes, ops: list[Mutation], max_insert: int) -> bytes:
    """``data`` with ``ops`` applied in order (inserts are 1..max_insert bytes)."""
    buf = bytearray(data)
    for op, where, byte, length in ops:
        if not buf:
            break
        pos = int(where * len(buf))
        if op == "flip":
            buf[pos] ^= 1 << (byte % 8)
        elif op == "set":
            buf[pos] = byte
        elif op == "insert":
            buf[pos:pos] = bytes([byte]) * (length % max_insert + 1)
        elif op == "delete":
            del buf[pos : pos + length]
        elif op == "truncate":
            del buf[pos:]
        else:
            buf[pos:pos] = buf[pos : pos + length]
    return bytes(buf)
