"""Mutated whole files: the reader raises only RecordingFormatError (and reads the same events
forwards and backwards), verify never raises."""

from __future__ import annotations

import io

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings

from recorder import RecordingFormatError, RecordingReader, recover, verify
from tests.fuzzing import Mutation, apply_mutations, budget, byte_mutations
from tests.recorder.conftest import sample_events

mutations = byte_mutations(max_run=300)


def _mutate(data: bytes, ops: list[Mutation]) -> bytes:
    return apply_mutations(data, ops, max_insert=16)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> bytes:
    from recorder import RecordingWriter
    from tests.recorder.conftest import FakeClock, fast_policy, write_events

    path = tmp_path_factory.mktemp("fuzz") / "f.bastrec"
    clock = FakeClock()
    w = RecordingWriter.create(
        path,
        "f",
        {"user": "u"},
        key,
        clock=clock,
        policy=fast_policy(chunk_bytes=2048, checkpoint_chunks=3),
    )
    write_events(w, clock, sample_events(60, 0.3))
    w.close()
    return path.read_bytes()


@settings(max_examples=budget(250), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=mutations)
def test_mutated_files(
    original: bytes,
    key: Ed25519PrivateKey,
    ops: list[tuple[str, float, int, int]],
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data = _mutate(original, ops)
    result = verify(io.BytesIO(data), key.public_key())
    if data != original and result.status == "intact":
        # only the index/footer after the signed trailer may differ (a torn tail)
        trailer_end = _trailer_end(original)
        assert data[:trailer_end] == original[:trailer_end], (ops, result)
        assert result.notes, result
    try:
        with RecordingReader(io.BytesIO(data)) as r:
            forward = list(r.events())
            list(r.events(start=5.0))
            _ = r.duration
            # backwards: the same readable events, newest first, whatever the damage
            assert list(r.events_newest_first()) == forward[::-1]
            assert r.last_events(3) == forward[-3:]
    except RecordingFormatError:
        pass
    path = tmp_path_factory.mktemp("rec") / "m.bastrec"
    path.write_bytes(data)
    try:
        done = recover(path)
    except RecordingFormatError:
        assert path.read_bytes() == data
    else:
        assert done.result.status != "altered"


def _trailer_end(data: bytes) -> int:
    from recorder.frames import Trailer
    from recorder.scan import FileScanner, Item

    scanner, offset = FileScanner(io.BytesIO(data)), 0
    while isinstance(item := scanner.read_at(offset), Item):
        if isinstance(item.record, Trailer):
            return item.end
        offset = item.end
    raise AssertionError("no trailer")


def test_fixture_is_sane(original: bytes, key: Ed25519PrivateKey) -> None:
    assert verify(io.BytesIO(original), key.public_key()).status == "intact"
