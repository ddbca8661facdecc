"""A hostile recording costs bounded work: reads grow linearly with the file (row K8).

"Never a hang" is asserted without a clock: every read the reader and ``verify`` make
goes through a counting file, and the bytes read and the number of reads must stay
under a fixed multiple of the file's size, for mutated, truncated and random files
alike, small and large (a quadratic rescan would break the bound on the large file).
Every failure is the format's own RecordingFormatError; ``verify`` never raises.
Measured on this code: the reader's whole battery below reads at most ~9.5x the file
and makes one read per ~16 bytes at worst; ``verify`` reads at most ~1.5x.
"""

from __future__ import annotations

import io

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recorder import RecordingFormatError, RecordingReader, RecordingWriter, verify
from recorder.frames import HeaderRecord
from recorder.scan import FileScanner, Item
from tests.fuzzing import Mutation, apply_mutations, budget, byte_mutations
from tests.recorder.conftest import FakeClock, fast_policy, sample_events, write_events

READER_BYTES_PER_BYTE = 16
"""The reader's battery (forwards, from a time, duration, backwards, last events)."""
VERIFY_BYTES_PER_BYTE = 3
READS_PER_BYTE = 1 / 4
SLACK = 64 * 1024
"""Fixed cost: the footer and index probes near the end, the first frame headers."""


class CountingFile(io.BytesIO):
    """An in-memory file that counts what is read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0
        self.reads = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        self.reads += 1
        return data


def _within(f: CountingFile, size: int, per_byte: int) -> None:
    assert f.bytes_read <= per_byte * size + SLACK, (f.bytes_read, size)
    assert f.reads <= READS_PER_BYTE * size + 256, (f.reads, size)


def read_everything(data: bytes) -> CountingFile:
    """Every way an auditor's tools read a recording; only the format's error may escape."""
    f = CountingFile(data)
    try:
        with RecordingReader(f) as r:
            forward = list(r.events())
            list(r.events(start=5.0))
            _ = r.duration
            assert list(r.events_newest_first()) == forward[::-1]
            r.last_events(3)
    except RecordingFormatError:
        pass
    return f


def check(data: bytes, key: Ed25519PrivateKey) -> None:
    _within(read_everything(data), len(data), READER_BYTES_PER_BYTE)
    f = CountingFile(data)
    verify(f, key.public_key())
    _within(f, len(data), VERIFY_BYTES_PER_BYTE)


def _recording(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey, n: int) -> bytes:
    path = tmp_path_factory.mktemp("bounds") / "f.bastrec"
    clock = FakeClock()
    w = RecordingWriter.create(
        path,
        "f",
        {"user": "u"},
        key,
        clock=clock,
        policy=fast_policy(chunk_bytes=2048, checkpoint_chunks=3),
    )
    write_events(w, clock, sample_events(n, 0.3))
    w.close()
    return path.read_bytes()


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> bytes:
    return _recording(tmp_path_factory, key, 60)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, key: Ed25519PrivateKey) -> bytes:
    return _recording(tmp_path_factory, key, 1500)


def _header_end(data: bytes) -> int:
    item = FileScanner(io.BytesIO(data)).read_at(0, with_data=False)
    assert isinstance(item, Item) and isinstance(item.record, HeaderRecord)
    return item.end


def test_intact_files_are_within_the_bound(
    small: bytes, large: bytes, key: Ed25519PrivateKey
) -> None:
    assert len(large) > 20 * len(small)  # big enough for a quadratic rescan to show
    for data in (small, large):
        check(data, key)


_FUZZ = settings(
    max_examples=budget(150), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@_FUZZ
@given(ops=byte_mutations(max_run=300))
def test_mutated_small_files_do_bounded_work(
    small: bytes, key: Ed25519PrivateKey, ops: list[Mutation]
) -> None:
    check(apply_mutations(small, ops, max_insert=16), key)


@settings(
    max_examples=budget(15, share=0.05), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(ops=byte_mutations(max_run=3000))
def test_mutated_large_files_do_bounded_work(
    large: bytes, key: Ed25519PrivateKey, ops: list[Mutation]
) -> None:
    check(apply_mutations(large, ops, max_insert=64), key)


@_FUZZ
@given(junk=st.binary(max_size=4096))
def test_random_bytes_after_a_real_header_do_bounded_work(
    small: bytes, key: Ed25519PrivateKey, junk: bytes
) -> None:
    check(small[: _header_end(small)] + junk, key)
    check(junk, key)


def test_truncated_anywhere_the_reader_stops_with_its_own_error_or_reads_a_prefix(
    small: bytes, key: Ed25519PrivateKey
) -> None:
    with RecordingReader(io.BytesIO(small)) as r:
        everything = list(r.events())
    cuts = sorted({*range(0, len(small), 29), *range(len(small) - 24, len(small))})
    for cut in cuts:
        data = small[:cut]
        check(data, key)
        try:
            with RecordingReader(io.BytesIO(data)) as r:
                got = list(r.events())
        except RecordingFormatError:
            continue
        assert got == everything[: len(got)], cut  # a prefix, never invented events
