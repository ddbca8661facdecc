"""repack(): closed recordings rewritten into large chunks, same events, never laundered."""

from __future__ import annotations

import fcntl
import importlib
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import (
    Event,
    RecordingFormatError,
    RecordingReader,
    RecordingWriteError,
    RepackPolicy,
    RepackResult,
    recover,
    repack,
    repack_note,
    verify,
)
from recorder.codec import decode_chunk
from recorder.events import Exit, Input, Marker, Output, Resize, Structured
from recorder.storage import FileSink
from tests.recorder.conftest import Recorded, fast_policy
from tests.recorder.helpers import output_bytes
from tests.recorder.test_verify import _spans

ALWAYS = RepackPolicy(min_saving=None)
# the package exports the function ``repack`` under the module's name
repack_module = importlib.import_module("recorder.repack")


def _events(path: Path) -> list[Event]:
    with RecordingReader.open(path) as r:
        return list(r.events())


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if ".repack-" in p.name)


def _as_fields(ev: Event) -> tuple[object, ...]:
    """An event without its time (what ``zstd -dc`` output keeps when decoded alone)."""
    return (ev.kind, *(getattr(ev, f.name) for f in fields(ev) if f.name != "time"))


def _trickle(n: int = 400) -> list[Event]:
    """An interactive session: a keystroke and its echo every ~1.3 s, a prompt now and then."""
    events: list[Event] = [Resize(0.0, 80, 24)]
    for i in range(n):
        t = round(0.5 + i * 1.3, 6)
        events.append(Input(t, b"l"))
        events.append(Output(round(t + 0.002, 6), b"l"))
        if i % 10 == 9:
            events.append(Output(round(t + 0.3, 6), b"\r\n\x1b[01;32malice@web1\x1b[00m:~$ "))
    return events


def test_round_trip_keeps_every_event_header_and_end(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording()
    assert rec.summary is not None
    kinds = {type(e) for e in rec.events}
    assert {Output, Input, Resize, Marker, Exit, Structured} <= kinds
    assert any(b"\xff" in e.data for e in rec.events if isinstance(e, Output))  # not UTF-8
    before = _events(rec.path)
    with RecordingReader.open(rec.path) as r:
        old_header, old_trailer, old_chunks = r.header, r.trailer, len(r.index)
    mode = rec.path.stat().st_mode

    done = repack(rec.path, key, policy=RepackPolicy(chunk_bytes=65536, checkpoint_chunks=1))

    assert done.action == "repacked", done.reason
    assert done.old_final_hash == rec.summary.final_hash
    assert done.old_signature == rec.summary.signature
    assert done.final_hash != done.old_final_hash
    assert done.chunks_before == old_chunks and 1 < done.chunks_after < old_chunks
    assert done.bytes_after == rec.path.stat().st_size < done.bytes_before
    assert rec.path.stat().st_mode == mode
    assert _events(rec.path) == before  # identical: kinds, µs times, bytes, no merging
    after = verify(rec.path, key.public_key(), done.final_hash, rec.path.stem)
    assert after.status == "intact", after
    assert after == done.result and after.final_hash == done.final_hash
    assert after.end_reason == "client disconnected"
    with RecordingReader.open(rec.path) as r:
        assert r.complete and r.indexed_from_footer
        assert (r.header.session_id, r.header.started_at) == (
            old_header.session_id,
            old_header.started_at,
        )
        assert (r.header.key_id, r.header.meta) == (old_header.key_id, old_header.meta)
        assert r.trailer is not None and old_trailer is not None
        assert r.trailer.signature.hex() == done.signature
        assert (r.trailer.reason, r.trailer.t_end_us, r.trailer.wall_us) == (
            old_trailer.reason,
            old_trailer.t_end_us,
            old_trailer.wall_us,
        )
        mid = r.index[1].time + 0.01
        assert list(r.events(start=mid)) == [e for e in before if e.time >= mid]
    note = repack_note(rec.path)
    assert note is not None
    assert note.from_final_hash == rec.summary.final_hash
    assert (note.from_chunks, note.from_size) == (old_chunks, done.bytes_before)
    assert _leftovers(rec.path) == []


def test_zstd_cli_output_holds_the_same_events(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    """``zstd -dc`` still decompresses everything, to the same event records.

    It cannot be byte-identical: a chunk's first event stores its time as delta 0
    from the chunk record's ``t_first_us``, so where old chunks are joined that
    one varint becomes the real gap. Every kind and payload is the same, and a
    file repacked into one chunk decodes from ``zstd -dc`` alone with exact times.
    """
    assert shutil.which("zstd"), "the Debian zstd CLI is required"
    rec = make_recording()

    def zstd_dc() -> bytes:
        proc = subprocess.run(["zstd", "-dc", str(rec.path)], capture_output=True, check=True)
        return proc.stdout

    old = decode_chunk(zstd_dc(), 0)
    assert repack(rec.path, key).action == "repacked"
    new = decode_chunk(zstd_dc(), 0)
    assert [_as_fields(e) for e in new] == [_as_fields(e) for e in old]
    assert output_bytes(new) == output_bytes(old) == output_bytes(rec.events)
    assert new == _events(rec.path)  # one chunk: the raw stream carries the real times
    subprocess.run(["zstd", "-t", str(rec.path)], capture_output=True, check=True)


def test_trickle_session_gets_fewer_chunks_and_a_smaller_file(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording(_trickle(), policy=fast_policy())  # production chunking: 1 s
    assert rec.summary is not None
    before_size, before_chunks = rec.path.stat().st_size, rec.summary.last_seq
    assert before_chunks > 300

    done = repack(rec.path, key)

    assert done.action == "repacked"
    assert done.chunks_before == before_chunks and done.chunks_after == 1
    assert done.bytes_after == rec.path.stat().st_size
    assert done.bytes_after * 3 < before_size  # structure, not timing: one frame, no per-second
    assert _events(rec.path) == [replace(e, time=round(e.time, 6)) for e in rec.events]


def test_refuses_an_altered_file_and_leaves_it_untouched(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording()
    data = bytearray(rec.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    rec.path.write_bytes(bytes(data))
    with pytest.raises(RecordingFormatError, match="refusing to repack.*altered"):
        repack(rec.path, key)
    assert rec.path.read_bytes() == bytes(data)
    assert _leftovers(rec.path) == []


@pytest.mark.parametrize("how", ["crashed", "cut"])
def test_refuses_a_truncated_file(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey, how: str
) -> None:
    rec = make_recording(close=how == "cut")
    if how == "cut":  # an attacker cuts the trailer off a closed file
        data = rec.path.read_bytes()
        trailer = next(s[0] for s in _spans(data) if s[2] == "Trailer")
        rec.path.write_bytes(data[: trailer + 10])
    data = rec.path.read_bytes()
    assert verify(rec.path, key.public_key()).status == "truncated"
    with pytest.raises(RecordingFormatError, match="refusing to repack.*truncated"):
        repack(rec.path, key)
    assert rec.path.read_bytes() == data and _leftovers(rec.path) == []


def test_refuses_a_wrong_key_or_final_hash(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording()
    data = rec.path.read_bytes()
    with pytest.raises(RecordingFormatError, match="wrong public key"):
        repack(rec.path, Ed25519PrivateKey.generate())
    with pytest.raises(RecordingFormatError, match="does not match the expected"):
        repack(rec.path, key, expected_final_hash="00" * 32)
    assert rec.path.read_bytes() == data
    assert rec.summary is not None
    done = repack(rec.path, key, expected_final_hash=rec.summary.final_hash)
    assert done.action == "repacked"


def test_skips_a_recovered_file(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording(close=False)
    recovered = recover(rec.path, key)
    data = rec.path.read_bytes()
    done = repack(rec.path, key)
    assert done.action == "skipped" and "recover" in done.reason
    assert done.final_hash == done.old_final_hash == recovered.final_hash
    assert done.signature == recovered.signature
    assert done.result.recovered
    assert rec.path.read_bytes() == data and _leftovers(rec.path) == []


def test_skips_an_already_repacked_file_and_a_file_with_nothing_to_gain(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording()
    first = repack(rec.path, key)
    data = rec.path.read_bytes()
    again = repack(rec.path, key, policy=ALWAYS)
    assert again.action == "skipped" and again.reason == "already repacked"
    assert (again.final_hash, again.signature) == (first.final_hash, first.signature)
    assert rec.path.read_bytes() == data

    tiny = make_recording([Output(0.1, b"hi\r\n")])  # one chunk: the note only adds bytes
    data = tiny.path.read_bytes()
    skipped = repack(tiny.path, key)
    assert skipped.action == "skipped" and "no worthwhile saving" in skipped.reason
    assert tiny.path.read_bytes() == data and _leftovers(tiny.path) == []
    forced = repack(tiny.path, key, policy=ALWAYS)
    assert forced.action == "repacked" and forced.bytes_after > forced.bytes_before
    assert _events(tiny.path) == [Output(0.1, b"hi\r\n")]


def test_a_failed_write_removes_the_temp_file(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = make_recording()
    data = rec.path.read_bytes()
    real_write = FileSink.write
    calls = iter(range(1_000))

    def failing_write(self: FileSink, chunk: bytes) -> None:
        if next(calls) == 3:
            raise OSError(28, "No space left on device")
        real_write(self, chunk)

    monkeypatch.setattr(FileSink, "write", failing_write)
    with pytest.raises(RecordingWriteError, match="No space left"):
        repack(rec.path, key)
    assert rec.path.read_bytes() == data and _leftovers(rec.path) == []


def test_a_copy_that_fails_verification_is_not_installed(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A splicing bug (a time delta off by 1 µs) is caught before the original is replaced."""
    rec = make_recording()
    data = rec.path.read_bytes()
    real = repack_module.write_varint
    monkeypatch.setattr(repack_module, "write_varint", lambda v: real(v + 1))
    with pytest.raises(RecordingWriteError, match="does not verify"):
        repack(rec.path, key)
    assert rec.path.read_bytes() == data and _leftovers(rec.path) == []


def test_a_failed_replace_removes_the_temp_file(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = make_recording()
    data = rec.path.read_bytes()

    def no_replace(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(repack_module.os, "replace", no_replace)
    with pytest.raises(RecordingWriteError, match="Permission denied"):
        repack(rec.path, key)
    assert rec.path.read_bytes() == data and _leftovers(rec.path) == []


def test_a_reader_of_the_old_file_keeps_reading_it(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording()
    before = _events(rec.path)
    with RecordingReader.open(rec.path) as old:
        events = old.events()
        head = [next(events) for _ in range(10)]
        assert repack(rec.path, key).action == "repacked"
        assert head + list(events) == before
        with RecordingReader.open(rec.path) as new:
            assert len(old.index) > len(new.index)
    assert _events(rec.path) == before


def test_concurrent_repacks_are_serialised(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """A repack waiting for the lock notices the file was replaced and looks again."""
    rec = make_recording()
    other = tmp_path / "elsewhere"
    other.mkdir()
    copy = other / rec.path.name
    shutil.copy2(rec.path, copy)
    results: list[object] = []
    with open(rec.path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        waiting = threading.Thread(target=lambda: results.append(repack(rec.path, key)))
        waiting.start()
        time.sleep(0.2)  # time to finish if the lock were ignored: nothing to poll for
        assert not results  # blocked on the lock
        first = repack(copy, key)
        os.replace(copy, rec.path)  # as the lock holder's own repack would
    waiting.join(10)
    (second,) = results
    assert isinstance(second, RepackResult)
    assert second.action == "skipped" and second.reason == "already repacked"
    assert second.final_hash == first.final_hash


def test_policy_bounds() -> None:
    for bad in (
        {"chunk_bytes": 1024},
        {"chunk_bytes": 8 << 20},
        {"level": 0},
        {"checkpoint_chunks": 0},
        {"min_saving": 1.0},
    ):
        with pytest.raises(ValueError):
            RepackPolicy(**bad)
