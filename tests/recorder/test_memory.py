"""Idle writers hold small buffers and no compressor of their own."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import zstandard
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import recorder
from recorder import LocalStorage, RecordingWriter
from recorder.compress import _compressor
from tests.recorder.conftest import FakeClock, fast_policy

N = 200


def _attrs(w: RecordingWriter) -> list[object]:
    return [getattr(w, name) for name in RecordingWriter.__slots__]


RECORDER_DIR = str(Path(recorder.__file__).parent)


def test_200_idle_writers_are_small(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    storage = LocalStorage(tmp_path)
    clock = FakeClock()
    warm = RecordingWriter.create(storage, "warm", {}, key, clock=clock, policy=fast_policy())
    warm.output(b"warm up the shared compressor " * 100)
    warm.flush()
    gc.collect()
    tracemalloc.start(25)  # deep enough to see a recorder frame under any allocation
    try:
        before = tracemalloc.take_snapshot()
        writers = []
        for i in range(N):
            w = RecordingWriter.create(
                storage,
                f"idle-{i}",
                {"user": "alice", "target": "web1"},
                key,
                clock=clock,
                policy=fast_policy(),
            )
            w.resize(80, 24)
            w.output(b"some output before going idle\r\n" * 200)
            writers.append(w)
        clock.advance(2.0)
        for w in writers:
            w.tick()
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # Only allocations made on behalf of the recorder: threads other tests of this worker
    # left behind (a session-scoped S3 server, say) allocate meanwhile too.
    ours = [tracemalloc.Filter(True, f"{RECORDER_DIR}/*", all_frames=True)]
    after, before = after.filter_traces(ours), before.filter_traces(ours)
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_writer = grown / N
    assert per_writer < 16 * 1024, f"{per_writer:.0f} bytes per idle writer"
    for w in writers:
        assert w.pending_bytes == 0
        for value in _attrs(w):
            assert not isinstance(value, zstandard.ZstdCompressor | zstandard.ZstdDecompressor)
            if isinstance(value, bytearray | bytes):
                assert len(value) <= 64
    # every writer used the same per-thread compressor
    assert _compressor(3) is _compressor(3)
    for w in writers:
        w.close()
