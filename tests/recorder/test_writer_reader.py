"""Writer and reader: round trips, chunking bounds, seeking, zstd -dc, storage, errors."""

from __future__ import annotations

import errno
import io
import os
import shutil
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from recorder import (
    LocalStorage,
    RecordingClosedError,
    RecordingFormatError,
    RecordingReader,
    RecordingSink,
    RecordingStorageLow,
    RecordingVersionError,
    RecordingWriteError,
    RecordingWriter,
    StoredRecording,
    WriterPolicy,
    verify,
)
from recorder.codec import canonical_json, decode_chunk
from recorder.events import Exit, Resize
from recorder.frames import HeaderRecord, frame, header_hash
from recorder.keys import key_id
from tests.recorder.conftest import WALL_START, FakeClock, Recorded, fast_policy, sample_events
from tests.recorder.helpers import normalise, output_bytes


def test_round_trip_every_kind_and_non_utf8(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording()
    with RecordingReader.open(rec.path) as r:
        assert r.indexed_from_footer and r.complete
        assert normalise(r.events()) == normalise(rec.events)
        assert r.header.session_id == rec.path.stem
        assert r.header.meta["user"] == "alice"
        assert r.header.started_at == WALL_START
        assert r.duration == pytest.approx(rec.events[-1].time + 0.5)
        assert r.damage == []
    assert rec.summary is not None
    assert rec.summary.events >= len(rec.events)
    assert rec.summary.stored_bytes == rec.path.stat().st_size


def test_zstd_cli_decompresses_the_file(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording()
    assert shutil.which("zstd"), "the Debian zstd CLI is required"
    proc = subprocess.run(["zstd", "-dc", str(rec.path)], capture_output=True, check=True)
    assert rec.summary is not None
    assert len(proc.stdout) == rec.summary.raw_bytes
    # the content is the chunk encoding, decodable as one event stream (times aside)
    assert output_bytes(decode_chunk(proc.stdout, 0)) == output_bytes(rec.events)
    subprocess.run(["zstd", "-t", str(rec.path)], capture_output=True, check=True)


def test_time_bound_cuts_chunks_only_while_data_is_pending(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    w = RecordingWriter.create(
        tmp_path / "t.bastrec", "t", {}, key, clock=clock, policy=fast_policy(flush_interval=1.0)
    )
    w.output(b"a")
    clock.advance(0.9)
    w.tick()
    assert w.pending_bytes > 0
    clock.advance(0.1)
    w.tick()
    assert w.pending_bytes == 0
    for _ in range(20):  # idle: nothing pending, no chunks
        clock.advance(1.0)
        w.tick()
    summary = w.close()
    assert summary.last_seq == 1


def test_size_bound_cuts_during_the_event_call(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    w = RecordingWriter.create(
        tmp_path / "s.bastrec", "s", {}, key, clock=clock, policy=fast_policy(chunk_bytes=4096)
    )
    big = os.urandom(50_000)
    w.output(big)
    assert w.pending_bytes < 4096 + 16
    summary = w.close()
    assert summary.last_seq >= 12
    with RecordingReader.open(tmp_path / "s.bastrec") as r:
        assert output_bytes(r.events()) == big


def test_events_after_close_raise_and_close_is_idempotent(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    w = RecordingWriter.create(
        tmp_path / "c.bastrec", "c", {}, key, clock=clock, policy=fast_policy()
    )
    first = w.close("done")
    assert w.close("again") is first
    with pytest.raises(RecordingClosedError):
        w.output(b"late")
    w.tick()  # a no-op on a closed writer
    assert first.final_hash and len(bytes.fromhex(first.signature)) == 64
    assert first.key_id == key_id(key)


def test_seek_matches_linear_scan(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording(sample_events(600, 0.11))
    with RecordingReader.open(rec.path) as r:
        everything = list(r.events())
        assert len(r.index) > 20
        times = sorted({ev.time for ev in everything})
        probes = [0.0, -1.0, times[-1], times[-1] + 1, *times[::37]]
        probes += [t + 1e-6 for t in times[::53]] + [e.time for e in r.index]
        for start in probes:
            expected = [ev for ev in everything if ev.time >= start]
            assert list(r.events(start=start)) == expected, start
        assert list(r.events(start=times[5], end=times[40])) == [
            ev for ev in everything if times[5] <= ev.time < times[40]
        ]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=300), st.floats(0, 20))
def test_seek_with_many_equal_timestamps(
    tmp_path_factory: pytest.TempPathFactory, gaps: list[int], start: float
) -> None:
    key = Ed25519PrivateKey.generate()
    clock = FakeClock()
    path = tmp_path_factory.mktemp("seek") / "x.bastrec"
    w = RecordingWriter.create(
        path, "x", {}, key, clock=clock, policy=fast_policy(chunk_bytes=1024)
    )
    for i, gap in enumerate(gaps):
        clock.advance(gap / 10 if gap > 25 else 0)  # many events share a timestamp
        w.output(b"%d " % i * 20)
    w.close()
    with RecordingReader.open(path) as r:
        everything = list(r.events())
        assert list(r.events(start=start)) == [ev for ev in everything if ev.time >= start]


def test_reader_without_footer_scans(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording(close=False)
    with RecordingReader.open(rec.path) as r:
        assert not r.indexed_from_footer and r.trailer is None
        assert normalise(r.events()) == normalise(rec.events)
        assert r.duration == pytest.approx(rec.events[-1].time)


def test_damaged_chunk_loses_only_itself(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording()
    with RecordingReader.open(rec.path) as r:
        victim = r.index[len(r.index) // 2]
        lost = r.chunk_events(victim)
        total = list(r.events())
    data = bytearray(rec.path.read_bytes())
    data[victim.offset + 8 + 65 + 20] ^= 0x55  # inside the zstd frame
    with RecordingReader(io.BytesIO(bytes(data))) as r:
        got = list(r.events())
        assert len(r.damage) == 1 and f"chunk {victim.seq}" in r.damage[0].reason
    assert [ev for ev in total if ev not in lost] == got


def test_damaged_record_header_resyncs(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording(close=False)
    with RecordingReader.open(rec.path) as r:
        victim = r.index[3]
        lost = r.chunk_events(victim)
        total = list(r.events())
    data = bytearray(rec.path.read_bytes())
    data[victim.offset] ^= 0xFF  # break the skippable magic: scan must resync
    with RecordingReader(io.BytesIO(bytes(data))) as r:
        assert victim.seq not in [e.seq for e in r.index]
        assert list(r.events()) == [ev for ev in total if ev not in lost]
        assert r.damage


def test_local_storage_layout_and_permissions(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    storage = LocalStorage(tmp_path / "rec")
    w = RecordingWriter.create(
        storage,
        "01JDX9",
        {"user": "bob"},
        key,
        clock=clock,
        wall_clock=lambda: WALL_START,
        policy=fast_policy(),
    )
    w.output(b"hi")
    summary = w.close()
    assert summary.location == "2024/11/29/01JDX9.bastrec"
    path = storage.path_of(summary.location)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (path.parent, path.parent.parent, path.parent.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    [listed] = list(storage.list_recordings())
    assert (listed.location, listed.session_id, listed.size) == (
        summary.location,
        "01JDX9",
        path.stat().st_size,
    )
    assert list(storage.list_recordings("2024/12")) == []
    with RecordingReader.from_storage(storage, summary.location) as r:
        assert output_bytes(r.events()) == b"hi"
    with pytest.raises(RecordingWriteError, match="cannot create"):
        RecordingWriter.create(
            storage, "01JDX9", {}, key, clock=clock, wall_clock=lambda: WALL_START
        )
    with pytest.raises(ValueError):
        storage.path_of("../etc/passwd")


@pytest.mark.parametrize("bad", ["", "../x", "a/b", ".hidden", "x" * 129, "é"])
def test_session_id_must_be_a_safe_file_name(
    tmp_path: Path, key: Ed25519PrivateKey, bad: str
) -> None:
    with pytest.raises(ValueError, match="session id"):
        RecordingWriter.create(LocalStorage(tmp_path), bad, {}, key)


def test_metadata_must_be_json(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(ValueError, match="JSON"):
        RecordingWriter.create(tmp_path / "m.bastrec", "m", {"when": object()}, key)
    assert not (tmp_path / "m.bastrec").exists()


class _FailingSink:
    """A sink that fails on the n-th write with the given errno."""

    def __init__(self, fail_at: int, err: int) -> None:
        self.location = "mem://x"
        self.writes = 0
        self.fail_at = fail_at
        self.err = err
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes >= self.fail_at:
            raise OSError(self.err, os.strerror(self.err))

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class _Storage:
    def __init__(self, sink: _FailingSink) -> None:
        self.sink = sink

    def create(self, session_id: str, started_at: float) -> RecordingSink:
        return self.sink

    def open_append(self, location: str) -> _FailingSink:
        raise NotImplementedError

    def open_read(self, location: str) -> BinaryIO:
        raise NotImplementedError

    def list_recordings(self, prefix: str = "") -> Iterator[StoredRecording]:
        return iter(())


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EACCES, errno.EIO])
def test_write_error_raises_from_the_call_that_hit_it(
    key: Ed25519PrivateKey, clock: FakeClock, err: int
) -> None:
    sink = _FailingSink(fail_at=3, err=err)  # header, checkpoint, then the first chunk
    w = RecordingWriter.create(
        _Storage(sink),
        "e",
        {},
        key,
        clock=clock,
        policy=fast_policy(chunk_bytes=1024),
    )
    w.output(b"x" * 100)  # buffered, nothing written yet
    with pytest.raises(RecordingWriteError, match=os.strerror(err)) as info:
        w.output(b"y" * 2000)  # crosses the size bound: writes now
    assert isinstance(info.value.__cause__, OSError)
    assert "session must end" in str(info.value)
    assert w.closed and sink.closed
    for call in (lambda: w.output(b"z"), w.tick, lambda: w.close("x"), lambda: w.marker("m")):
        with pytest.raises(RecordingWriteError):
            call()


def test_disk_full_on_a_real_device(key: Ed25519PrivateKey, clock: FakeClock) -> None:
    from recorder.storage import FileSink

    class DevFull(_Storage):
        def create(self, session_id: str, started_at: float) -> RecordingSink:
            return FileSink(os.open("/dev/full", os.O_WRONLY), "/dev/full")

    with pytest.raises(RecordingWriteError, match="No space left"):
        RecordingWriter.create(DevFull(_FailingSink(0, 0)), "f", {}, key, clock=clock)


def test_future_format_version_is_refused(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    body = canonical_json({"session_id": "f", "started_at": 1.0, "key_id": "k", "meta": {}})
    unsigned = HeaderRecord(2, body, bytes(32))
    record = HeaderRecord(2, body, header_hash(unsigned))
    path = tmp_path / "future.bastrec"
    path.write_bytes(frame(record.encode()))
    with pytest.raises(RecordingVersionError, match="version 2 is newer.*upgrade"):
        RecordingReader.open(path)
    with pytest.raises(RecordingVersionError):
        verify(path, key.public_key())


def test_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "junk.bastrec"
    path.write_bytes(b"hello world, not a recording")
    with pytest.raises(RecordingFormatError, match="not a readable bastion recording"):
        RecordingReader.open(path)
    path.write_bytes(b"")
    with pytest.raises(RecordingFormatError):
        RecordingReader.open(path)


def test_resize_and_exit_signal_round_trip(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    w = RecordingWriter.create(
        tmp_path / "r.bastrec", "r", {}, key, clock=clock, policy=fast_policy()
    )
    w.resize(200, 50)
    clock.advance(1.5)
    w.exit(signal="KILL")
    w.close()
    with RecordingReader.open(tmp_path / "r.bastrec") as r:
        events = list(r.events())
    assert events[0] == Resize(0.0, 200, 50)
    assert isinstance(events[1], Exit) and (events[1].time, events[1].signal) == (1.5, "KILL")


def test_clock_going_backwards_is_clamped(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    w = RecordingWriter.create(
        tmp_path / "b.bastrec", "b", {}, key, clock=clock, policy=fast_policy()
    )
    clock.advance(5)
    w.output(b"a")
    clock.advance(-3)
    w.output(b"b")
    w.close()
    with RecordingReader.open(tmp_path / "b.bastrec") as r:
        assert [e.time for e in r.events()] == [5.0, 5.0]
    assert verify(tmp_path / "b.bastrec", key.public_key()).status == "intact"


class _CountingSink(_FailingSink):
    def __init__(self) -> None:
        super().__init__(fail_at=10**9, err=0)
        self.syncs = 0
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    def sync(self) -> None:
        self.syncs += 1


def test_fsync_and_checkpoint_bounds(key: Ed25519PrivateKey, clock: FakeClock) -> None:
    sink = _CountingSink()
    policy = WriterPolicy(fsync_interval=5.0, checkpoint_interval=3.0, checkpoint_chunks=100)
    w = RecordingWriter.create(
        _Storage(sink),
        "f",
        {},
        key,
        clock=clock,
        policy=policy,
    )
    assert sink.syncs == 1  # the header is durable before the session starts
    for _ in range(4):  # one chunk per second
        w.output(b"x")
        clock.advance(1.0)
        w.tick()
    assert sink.syncs == 1
    result = verify(io.BytesIO(bytes(sink.data)), key.public_key())
    assert (result.status, result.last_seq, result.signed_seq) == ("truncated", 4, 3)
    clock.advance(1.0)
    w.tick()
    assert sink.syncs == 2
    w.close()
    assert sink.syncs == 3
    assert verify(io.BytesIO(bytes(sink.data)), key.public_key()).status == "intact"


def test_checkpoint_every_n_chunks_bounds_the_unsigned_tail(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording(
        close=False,
        policy=fast_policy(chunk_bytes=2048, checkpoint_chunks=4, checkpoint_interval=1e9),
    )
    result = verify(rec.path, key.public_key())
    assert result.last_seq > 20
    assert result.last_seq - result.signed_seq < 4


def test_bad_arguments_are_value_errors(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    with pytest.raises(ValueError, match="chunk_bytes"):
        WriterPolicy(chunk_bytes=10)
    with pytest.raises(ValueError):
        WriterPolicy(flush_interval=0)
    w = RecordingWriter.create(
        tmp_path / "v.bastrec", "v", {}, key, clock=clock, policy=fast_policy()
    )
    with pytest.raises(ValueError, match="JSON"):
        w.event("query", {"bad": {1, 2}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="exceeds"):
        w.event("result", {"rows": "x" * (1 << 20)})
    with pytest.raises(ValueError, match="name"):
        w.event("", {})
    with pytest.raises(ValueError, match="terminal size"):
        w.resize(-1, 24)
    w.output(b"still fine")
    assert w.close().events == 1


def test_tick_from_another_thread(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "th.bastrec"
    w = RecordingWriter.create(path, "th", {}, key, policy=fast_policy(flush_interval=0.001))
    stop = threading.Event()

    def ticker() -> None:
        while not stop.is_set():
            w.tick()

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        for i in range(3000):
            w.output(b"%d\n" % i)
    finally:
        stop.set()
        thread.join()
    w.close()
    with RecordingReader.open(path) as r:
        assert output_bytes(r.events()) == b"".join(b"%d\n" % i for i in range(3000))
    assert verify(path, key.public_key()).status == "intact"


class _SlowSyncSink(_CountingSink):
    """fsync blocks until released, like a saturated disk."""

    def __init__(self) -> None:
        super().__init__()
        self.sync_started = threading.Event()
        self.release = threading.Event()

    def sync(self) -> None:
        if self.syncs >= 1:  # the first sync is create()'s
            self.sync_started.set()
            assert self.release.wait(60)
        self.syncs += 1


def test_periodic_fsync_does_not_block_event_calls(
    key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    sink = _SlowSyncSink()
    policy = WriterPolicy(fsync_interval=1.0, flush_interval=0.5)
    w = RecordingWriter.create(_Storage(sink), "s", {}, key, clock=clock, policy=policy)
    w.output(b"before")
    clock.advance(2.0)
    ticker = threading.Thread(target=w.tick)
    ticker.start()
    assert sink.sync_started.wait(60)
    # the fsync is in progress in the other thread; the session keeps recording
    w.output(b"during")
    w.flush()
    w.marker("still here")
    sink.release.set()
    ticker.join(60)
    assert not ticker.is_alive()
    w.close()
    assert verify(io.BytesIO(bytes(sink.data)), key.public_key()).status == "intact"


def test_below_the_reserve_events_stop_and_close_seals_what_was_recorded(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    room: list[str | None] = [None]
    path = tmp_path / "r.bastrec"
    w = RecordingWriter.create(
        path,
        "s-low",
        {},
        key,
        clock=clock,
        wall_clock=lambda: WALL_START,
        policy=fast_policy(chunk_bytes=4096),
        room=lambda: room[0],
    )
    w.output(b"a" * 5000)  # a chunk is cut: still above the reserve
    room[0] = "3 bytes free"
    with pytest.raises(RecordingStorageLow, match="3 bytes free"):
        w.output(b"b" * 9000)  # the next cut finds the storage below it
    with pytest.raises(RecordingStorageLow):
        w.output(b"c")  # every later event too: nothing more is recorded
    with pytest.raises(RecordingStorageLow):
        w.tick(clock.advance(5))
    summary = w.close("recording-failed")
    assert verify(path, key.public_key(), expected_final_hash=summary.final_hash).ok
    with RecordingReader.open(path) as reader:
        out = output_bytes(reader.events())
    assert out.startswith(b"a" * 5000 + b"b") and b"c" not in out and len(out) < 14000
