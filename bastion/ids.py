"""Sortable session ids (ULID layout).

26 characters of Crockford base32: 48 bits of Unix milliseconds, then 80 random
bits. Ids sort by creation time as plain strings, so ``ls`` of a recording
directory and ``ORDER BY id`` both come out chronological. Within one process
ids are strictly increasing even when many are made in the same millisecond or
the clock steps back: the random part is then incremented instead of redrawn.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ID_LENGTH = 26
_TIME_BITS = 48
_RANDOM_BITS = 80
_MAX_TIME = (1 << _TIME_BITS) - 1
_MAX_RANDOM = (1 << _RANDOM_BITS) - 1
_DECODE = {c: i for i, c in enumerate(ALPHABET)}


def _encode(value: int) -> str:
    chars = []
    for _ in range(ID_LENGTH):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class SessionIdGenerator:
    """Makes monotonic ids; the clock and randomness are injectable for tests."""

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        randbits: Callable[[], int] = lambda: int.from_bytes(os.urandom(10), "big"),
    ) -> None:
        self._clock = clock
        self._randbits = randbits
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def new(self) -> str:
        """A fresh id, greater than every id this generator made before."""
        with self._lock:
            ms = min(max(int(self._clock() * 1000), 0), _MAX_TIME)
            if ms > self._last_ms:
                rand = self._randbits() & _MAX_RANDOM
            else:
                # Same millisecond or the clock went back: stay on the last
                # timestamp and count up, carrying into the time part on overflow.
                ms, rand = self._last_ms, self._last_rand + 1
                if rand > _MAX_RANDOM:
                    ms, rand = ms + 1, 0
            self._last_ms, self._last_rand = ms, rand
            return _encode((ms << _RANDOM_BITS) | rand)


_default = SessionIdGenerator()


def new_session_id() -> str:
    """A new 26-character, time-ordered session id, unique and increasing in this process."""
    return _default.new()


def is_session_id(text: str) -> bool:
    """True for a well-formed id (upper-case Crockford base32, 26 characters)."""
    return len(text) == ID_LENGTH and text[0] in "01234567" and all(c in _DECODE for c in text)


def session_id_time(session_id: str) -> float:
    """The creation time (POSIX seconds) encoded in an id; ValueError if malformed."""
    if not is_session_id(session_id):
        raise ValueError(f"{session_id!r} is not a session id (26 Crockford base32 characters)")
    ms = 0
    for c in session_id[:10]:
        ms = (ms << 5) | _DECODE[c]
    return ms / 1000.0
