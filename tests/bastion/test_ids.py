"""Session ids: format, time prefix, and strict monotonicity within a process."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.ids import (
    ALPHABET,
    ID_LENGTH,
    SessionIdGenerator,
    is_session_id,
    new_session_id,
    session_id_time,
)


def test_format_and_time_prefix() -> None:
    gen = SessionIdGenerator(clock=lambda: 1_700_000_000.123, randbits=lambda: 0)
    sid = gen.new()
    assert len(sid) == ID_LENGTH == 26
    assert set(sid) <= set(ALPHABET)
    assert is_session_id(sid)
    assert session_id_time(sid) == 1_700_000_000.123
    assert sid == "01HF7YAT3V0000000000000000"  # 1700000000123 ms in base32


def test_default_generator_is_increasing_and_unique() -> None:
    ids = [new_session_id() for _ in range(2000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(is_session_id(i) for i in ids)


def test_same_millisecond_counts_up() -> None:
    gen = SessionIdGenerator(clock=lambda: 1000.0, randbits=lambda: 5)
    a, b, c = gen.new(), gen.new(), gen.new()
    assert a < b < c
    assert session_id_time(a) == session_id_time(c) == 1000.0
    assert c[-1] == ALPHABET[7]


def test_clock_going_back_stays_monotonic() -> None:
    times = iter([2000.0, 1999.0, 1500.0])
    gen = SessionIdGenerator(clock=lambda: next(times), randbits=lambda: 123)
    ids = [gen.new() for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3
    assert all(session_id_time(i) == 2000.0 for i in ids)


def test_random_overflow_carries_into_time() -> None:
    gen = SessionIdGenerator(clock=lambda: 1.0, randbits=lambda: (1 << 80) - 1)
    a, b = gen.new(), gen.new()
    assert a < b
    assert session_id_time(b) == pytest.approx(1.001)


def test_threads_never_collide() -> None:
    gen = SessionIdGenerator()
    out: list[list[str]] = [[] for _ in range(8)]

    def work(i: int) -> None:
        out[i].extend(gen.new() for _ in range(500))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [sid for chunk in out for sid in chunk]
    assert len(set(every)) == len(every) == 4000
    for chunk in out:  # each thread sees increasing ids
        assert chunk == sorted(chunk)


@pytest.mark.parametrize(
    "text",
    ["", "01HF7YAT7V000000000000000", "01HF7YAT7V00000000000000000", "81HF7YAT7V0000000000000000",
     "01HF7YAT7V000000000000000U", "01hf7yat7v0000000000000000"],
)  # fmt: skip
def test_malformed_ids_are_rejected(text: str) -> None:
    assert not is_session_id(text)
    with pytest.raises(ValueError, match="not a session id"):
        session_id_time(text)


@given(st.floats(min_value=0, max_value=2**47 / 1000), st.integers(0, (1 << 80) - 1))
def test_time_round_trips(t: float, rand: int) -> None:
    sid = SessionIdGenerator(clock=lambda: t, randbits=lambda: rand).new()
    assert is_session_id(sid)
    assert session_id_time(sid) == int(t * 1000) / 1000.0
