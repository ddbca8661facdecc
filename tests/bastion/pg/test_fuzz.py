"""Fuzz: any byte stream parses, or raises ProtocolViolation; never hangs, never another error.

``drive`` lets any exception other than ProtocolViolation escape (failing the
test) and bounds every parse loop, so these tests check both invariants. Streams
are fed whole and byte at a time, and the two outcomes must agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.pg import messages as m
from bastion.pg.protocol import BackendParser, FrontendParser, encode
from bastion.pg.tracker import QueryTracker
from tests.bastion.pg.strategies import (
    auth_frontend,
    backend_messages,
    drive,
    ready_frontend,
    ready_messages,
    startup_packets,
)
from tests.fuzzing import Mutation, apply_mutations, budget, byte_mutations

fuzz = settings(
    max_examples=budget(400), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def _ssl_backend() -> BackendParser:
    parser = BackendParser()
    parser.frontend_sent(m.SSLRequest())
    return parser


PARSERS: dict[str, Callable[[], FrontendParser | BackendParser]] = {
    "frontend-startup": FrontendParser,
    "frontend-ready": ready_frontend,
    "frontend-password": lambda: auth_frontend("password"),
    "frontend-sasl-initial": lambda: auth_frontend("sasl_initial"),
    "frontend-sasl": lambda: auth_frontend("sasl"),
    "backend": BackendParser,
    "backend-ssl-answer": _ssl_backend,
}

mutations = byte_mutations(max_run=40)


def _mutate(data: bytes, ops: list[Mutation]) -> bytes:
    return apply_mutations(data, ops, max_insert=8)


def _check(make: Callable[[], FrontendParser | BackendParser], data: bytes) -> None:
    whole = drive(make(), data, eof=True)
    split = drive(make(), data, [1], eof=True)
    if make is _ssl_backend and whole.error and "unencrypted" in whole.error[1]:
        # Bytes right behind the 'S' are only caught if they arrived with it; fed
        # one at a time they fail later, in the TLS layer or (here) the parser.
        assert split.error is not None
    else:
        assert whole == split
    tracker = QueryTracker(clock=lambda: 0.0)  # whatever parses must not upset the tracker
    for event in whole.events:
        tracker.frontend(event)
        tracker.backend(event)
    tracker.close()


@pytest.mark.parametrize("which", sorted(PARSERS))
@fuzz
@given(data=st.binary(max_size=200))
def test_random_bytes(which: str, data: bytes) -> None:
    _check(PARSERS[which], data)


@pytest.mark.parametrize("which", sorted(PARSERS))
@fuzz
@given(prefix=st.sampled_from([b"", b"Q", b"D", b"p", b"R", b"\x00\x00\x00"]), data=st.binary())
def test_typed_prefixes(which: str, prefix: bytes, data: bytes) -> None:
    _check(PARSERS[which], prefix + data)


@fuzz
@given(st.lists(ready_messages, min_size=1, max_size=8), mutations)
def test_mutated_frontend_streams(msgs: list[Any], ops: list[tuple[str, float, int, int]]) -> None:
    _check(ready_frontend, _mutate(b"".join(encode(x) for x in msgs), ops))


@fuzz
@given(startup_packets, st.lists(ready_messages, max_size=4), mutations)
def test_mutated_startup_streams(
    first: Any, msgs: list[Any], ops: list[tuple[str, float, int, int]]
) -> None:
    _check(FrontendParser, _mutate(b"".join(encode(x) for x in [first, *msgs]), ops))


@fuzz
@given(st.lists(backend_messages, min_size=1, max_size=8), mutations)
def test_mutated_backend_streams(msgs: list[Any], ops: list[tuple[str, float, int, int]]) -> None:
    _check(BackendParser, _mutate(b"".join(encode(x) for x in msgs), ops))


@fuzz
@given(st.lists(backend_messages | ready_messages, max_size=30))
def test_tracker_never_raises_on_any_sequence(msgs: list[Any]) -> None:
    """The tracker is fed by real parsers, but must survive nonsense orderings too."""
    tracker = QueryTracker(clock=lambda: 1.0)
    for msg in msgs:
        tracker.backend(msg)
        tracker.frontend(msg)
    for record in tracker.close():
        assert record.finished_at == 1.0
