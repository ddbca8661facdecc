"""What the benchmark scripts print: progress lines and markdown tables.

Shared so that every script's tables look alike (``bench/all.py`` cuts the verdict
rows out of them) and its statistics mean the same thing.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence


def say(msg: str) -> None:
    """Progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (p in 0..100)."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    x = (len(s) - 1) * p / 100
    lo = int(x)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (x - lo)


def table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A markdown table with the columns padded for reading in a terminal."""
    body = [list(head), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in body) for i in range(len(head))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
