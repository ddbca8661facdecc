"""Bloom signatures of trigrams: the PostgreSQL search index of terminal output.

Why: ``pg_trgm`` indexes only a text column stored beside it, and the lines a
terminal showed are already in the recording; storing them again made the index
twice the size of the recordings it covers. A chunk of output lines is kept as a
signature instead: each distinct trigram of its lines (case-folded, within a
line) sets ``HASHES`` bits of a bit string sized ~``BITS_PER_GRAM`` bits per
trigram (a ~3 % false-positive rate per trigram, so a 6-character text matches a
chunk that lacks it about once in 10^6), and each 4-gram of its runs of digits
(``digit_quads``). A search ANDs each signature with a
mask of the text's trigrams; a chunk that passes is a candidate whose lines are
read back from the recording and checked exactly, so a false positive costs a
re-read, never a wrong hit. Sizes come in ``CLASS_BITS`` steps so a search sends
one mask per size, not one per chunk. Pure functions: no database here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

HASHES = 3
BITS_PER_GRAM = 8
CLASS_BITS = 4096
MAX_GRAMS = 4096
"""Distinct trigrams per chunk at most (the writer starts a new chunk past it)."""
MAX_BITS = CLASS_BITS * ((MAX_GRAMS * BITS_PER_GRAM + CLASS_BITS - 1) // CLASS_BITS)
SIZES = tuple(range(CLASS_BITS, MAX_BITS + 1, CLASS_BITS))
"""Every signature length in bits."""


_DIGITS = re.compile(r"[0-9]{4,}")


def line_grams(line: str) -> set[str]:
    """The trigrams of one line, case-folded (a text shorter than 3 has none)."""
    folded = line.lower()
    return {folded[i : i + 3] for i in range(len(folded) - 2)}


def digit_quads(line: str) -> set[str]:
    """The 4-grams of every run of four or more digits in ``line``.

    Why: there are only a thousand digit trigrams and a page of logs holds most of
    them, so a number's trigrams narrow the candidates to a fraction of all sessions
    (13 % for ``build-00000333`` on the bench's fleet). Its 4-grams are ten times
    rarer and, taken from digit runs, still sound: a text holding the number holds
    each of its 4-grams inside a run of digits at least as long.
    """
    return {run[i : i + 4] for run in _DIGITS.findall(line) for i in range(len(run) - 3)}


def items(grams: set[str], quads: set[str]) -> set[str]:
    """What a signature holds: the trigrams and the digit 4-grams (marked apart)."""
    return grams | {"\x00" + q for q in quads}


def _positions(gram: str) -> tuple[int, ...]:
    digest = hashlib.blake2b(gram.encode("utf-8", "surrogatepass"), digest_size=4 * HASHES).digest()
    return tuple(int.from_bytes(digest[4 * j : 4 * j + 4], "little") for j in range(HASHES))


def size_for(grams: int) -> int:
    """The signature length in bits for a chunk of ``grams`` distinct trigrams."""
    wanted = max(1, grams) * BITS_PER_GRAM
    return min(MAX_BITS, CLASS_BITS * ((wanted + CLASS_BITS - 1) // CLASS_BITS))


def _bits(grams: Iterable[str], size: int) -> str:
    cells = bytearray(b"0" * size)
    one = ord("1")
    for gram in grams:
        for h in _positions(gram):
            cells[h % size] = one
    return cells.decode("ascii")


def signature(grams: set[str]) -> str:
    """A chunk's signature as PostgreSQL bit-string text ('0101…', bit 0 first)."""
    return _bits(grams, size_for(len(grams)))


def masks(grams: set[str]) -> list[str]:
    """One mask per signature length: a chunk holding every trigram of ``grams`` has
    all of its mask's bits set."""
    return [_bits(grams, size) for size in SIZES]
