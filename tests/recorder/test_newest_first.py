"""Reading a recording backwards: closed, crashed, live (two ways), damaged and cut short."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import Event, Input, Output, RecordingReader, RecordingWriter, Structured
from recorder.events import EventKind
from recorder.keys import save_signing_key
from tests.recorder.conftest import FakeClock, Recorded, fast_policy, sample_events, write_events
from tests.recorder.crash_child import expected
from tests.recorder.helpers import normalise

ROOT = Path(__file__).resolve().parents[2]


def _check_backwards(r: RecordingReader) -> list[Event]:
    """Backwards agrees with forwards on ``r``; returns the events in time order."""
    forward = list(r.events())
    assert list(r.events_newest_first()) == forward[::-1]
    chunks = list(r.chunks_newest_first())
    assert all(c and [e.time for e in c] == sorted(e.time for e in c) for c in chunks)
    assert [e for c in reversed(chunks) for e in c] == forward
    for n in (0, 1, 7, len(forward), len(forward) + 5):
        assert r.last_events(n) == (forward[-n:] if n else [])
    return forward


def test_closed_and_crashed_recordings(make_recording: Callable[..., Recorded]) -> None:
    for close in (True, False):
        rec = make_recording(close=close)
        with RecordingReader.open(rec.path) as r:
            assert len(r.index) > 5 and r.indexed_from_footer is close
            assert normalise(_check_backwards(r)) == normalise(rec.events)
            assert r.damage == []


def test_only_the_chunks_needed_are_read(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording()
    data = bytearray(rec.path.read_bytes())
    with RecordingReader.open(rec.path) as r:
        first, last = r.index[0], r.index[-1]
        newest = r.chunk_events(last)
    data[first.offset + 8 + 65 + 20] ^= 0x55  # damage the oldest chunk
    with RecordingReader(io.BytesIO(bytes(data))) as r:
        assert r.last_events(len(newest)) == newest
        assert r.damage == []  # never got as far as the damaged chunk


def test_live_writer_tail_includes_the_pending_events(
    tmp_path: Path, key: Ed25519PrivateKey
) -> None:
    clock = FakeClock()
    path = tmp_path / "live.bastrec"
    w = RecordingWriter.create(
        path,
        "live",
        {"cols": 80, "rows": 24},
        key,
        clock=clock,
        policy=fast_policy(chunk_bytes=4096),
    )
    events = sample_events(200, 0.2)
    write_events(w, clock, events)
    w.event("note", {"seq": 1})
    tail = w.live_tail()
    assert tail.chunks and tail.pending  # some events in the file, some only in memory
    clock.advance(1)
    w.output(b"after the tail\r\n" * 1000)  # written later: not part of this view
    w.tick()
    with open(path, "rb") as f:
        r = RecordingReader(f, tail=tail)
        got = _check_backwards(r)
        assert next(r.events_newest_first()) == Structured(events[-1].time, "note", {"seq": 1})
        assert r.duration == tail.last_us / 1_000_000
    assert normalise(got[:-1]) == normalise(events)
    w.close()


def test_a_file_another_process_is_writing(tmp_path: Path) -> None:
    key_path = tmp_path / "key.pem"
    save_signing_key(Ed25519PrivateKey.generate(), key_path)
    path = tmp_path / "busy.bastrec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.recorder.crash_child", str(path), str(key_path), "0.05"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    try:
        seen: list[int] = []
        for ticks in range(400):
            assert proc.stdout.readline().startswith("tick "), "child ended early"
            if ticks % 40 != 39:
                continue
            with RecordingReader.open(path) as r:  # what is on disk now, torn tail and all
                assert r.trailer is None
                got = _check_backwards(r)
            seen.append(len(got))
            wanted = [
                (EventKind.OUTPUT if k == "o" else EventKind.INPUT, d)
                for i in range(len(got))
                for k, d in expected(i)
            ]
            written = [(e.kind, e.data) for e in got if isinstance(e, Output | Input)]
            assert written == wanted[: len(written)] and len(written) == len(got)
        assert seen == sorted(seen) and seen[-1] > seen[0] > 0  # it kept growing under us
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()


def test_damaged_and_truncated_chunks_give_the_readable_events(
    make_recording: Callable[..., Recorded],
) -> None:
    rec = make_recording(close=False)
    with RecordingReader.open(rec.path) as r:
        index = list(r.index)
        whole = {e.seq: r.chunk_events(e) for e in index}
    middle, last = index[len(index) // 2], index[-1]
    data = bytearray(rec.path.read_bytes())
    data[middle.offset + 8 + 65 + 20] ^= 0x55  # inside the zstd frame of a middle chunk
    cut = bytes(data[: last.offset + 8 + 65 + 10])  # the file ends inside the last chunk
    with RecordingReader(io.BytesIO(cut)) as r:
        got = _check_backwards(r)
        assert [d.reason for d in r.damage] and f"chunk {middle.seq}" in r.damage[0].reason
    readable = [ev for e in index if e.seq not in (middle.seq, last.seq) for ev in whole[e.seq]]
    assert got == readable
    # damaged at the end too: the newest readable chunk comes first
    with RecordingReader(io.BytesIO(bytes(data))) as r:
        newest = next(r.chunks_newest_first())
        assert newest == whole[last.seq]
    # every chunk record but the first broken: no crash, no hang, nothing made up
    garbage = bytearray(rec.path.read_bytes())
    for e in index[1:]:
        garbage[e.offset : e.offset + 4] = b"\0\0\0\0"
    with RecordingReader(io.BytesIO(bytes(garbage))) as r:
        assert _check_backwards(r) == whole[index[0].seq]
