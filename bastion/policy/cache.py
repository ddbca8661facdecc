"""A bounded LRU of parse results keyed by exact text.

Guardrails parse each distinct command line or SQL text once; a contractor
repeating ``select * from orders where id = $1`` a million times pays one parse.
The bound is on entries *and* on the summed length of the keys, so a run of huge
texts cannot hold memory; a text longer than ``max_text`` is parsed every time
and never stored.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class TextCache(Generic[V]):
    """Least-recently-used map from text to an immutable parse result."""

    def __init__(
        self, max_entries: int = 4096, max_chars: int = 8_000_000, max_text: int = 262_144
    ) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self.max_text = max_text
        self._items: OrderedDict[str, V] = OrderedDict()
        self._chars = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get_or_compute(self, text: str, compute: Callable[[str], V]) -> V:
        """The stored result for ``text``, or ``compute(text)`` stored for next time."""
        with self._lock:
            found = self._items.get(text)
            if found is not None:
                self._items.move_to_end(text)
                self.hits += 1
                return found
            self.misses += 1
        value = compute(text)
        if len(text) > self.max_text:
            return value
        with self._lock:
            raced = self._items.get(text)
            if raced is not None:  # another thread stored it first: keep one object
                return raced
            self._items[text] = value
            self._chars += len(text)
            while len(self._items) > self.max_entries or self._chars > self.max_chars:
                old, _ = self._items.popitem(last=False)
                self._chars -= len(old)
        return value

    def clear(self) -> None:
        """Forget everything (tests, benchmarks)."""
        with self._lock:
            self._items.clear()
            self._chars = 0
            self.hits = self.misses = 0
