"""verify: intact, truncated at any cut, and every kind of tampering detected and located."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import RecordingReader, VerifyResult, verify
from recorder.events import Output
from recorder.frames import FOOTER_FRAME_SIZE, FRAME_HEADER_SIZE
from recorder.scan import FileScanner, Item
from tests.recorder.conftest import Recorded, sample_events
from tests.recorder.helpers import normalise


def _spans(data: bytes) -> list[tuple[int, int, str, int]]:
    """(start, end, record type, seq) for every record in a valid file."""
    scanner = FileScanner(io.BytesIO(data))
    spans, offset = [], 0
    while (item := scanner.read_at(offset)) is not None:
        assert isinstance(item, Item)
        rec = item.record
        spans.append((item.offset, item.end, type(rec).__name__, getattr(rec, "seq", -1)))
        offset = item.end
    return spans


def _verify_bytes(
    data: bytes, key: Ed25519PrivateKey, expected_final_hash: str | None = None
) -> VerifyResult:
    return verify(io.BytesIO(data), key.public_key(), expected_final_hash)


def test_intact(make_recording: Callable[..., Recorded], key: Ed25519PrivateKey) -> None:
    rec = make_recording()
    assert rec.summary is not None
    result = verify(rec.path, key.public_key(), rec.summary.final_hash, rec.path.stem)
    assert result.status == "intact", result
    assert result.ok and result.end == "closed" and result.end_reason == "client disconnected"
    assert result.final_hash == rec.summary.final_hash
    assert result.signed_seq == result.last_seq == rec.summary.last_seq
    assert result.notes == ()


@pytest.mark.parametrize("close", [True, False], ids=["closed", "crashed"])
def test_every_single_byte_flip_is_detected_and_located(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey, close: bool
) -> None:
    rec = make_recording(sample_events(40, 0.4), close=close)
    data = rec.path.read_bytes()
    spans = _spans(data)
    assert len(data) < 40_000
    for start, end, kind, seq in spans:
        for pos in range(start, end):
            mutated = bytearray(data)
            mutated[pos] ^= 0x01 << (pos % 8)
            result = _verify_bytes(bytes(mutated), key)
            assert result.status == "altered", (pos, kind, result)
            if kind == "ChunkMeta":
                assert result.bad_seq == seq, (pos, kind, result)
                assert result.bad_offset is not None and start <= result.bad_offset < end
            elif kind == "HeaderRecord":
                assert result.bad_seq in (0, 1), (pos, result)


def test_deleted_chunk(make_recording: Callable[..., Recorded], key: Ed25519PrivateKey) -> None:
    rec = make_recording()
    data = rec.path.read_bytes()
    chunks = [s for s in _spans(data) if s[2] == "ChunkMeta"]
    start, end, _, seq = chunks[5]
    result = _verify_bytes(data[:start] + data[end:], key)
    assert result.status == "altered"
    assert result.bad_seq == seq and f"chunk seq {seq} is missing" in result.reason
    assert result.bad_offset == start


def test_swapped_chunks(make_recording: Callable[..., Recorded], key: Ed25519PrivateKey) -> None:
    rec = make_recording()
    data = rec.path.read_bytes()
    chunks = [s for s in _spans(data) if s[2] == "ChunkMeta"]
    (a0, a1, _, seq), (b0, b1, _, _) = chunks[6], chunks[7]
    assert a1 == b0, "adjacent chunks"
    swapped = data[:a0] + data[b0:b1] + data[a0:a1] + data[b1:]
    result = _verify_bytes(swapped, key)
    assert result.status == "altered"
    assert result.bad_seq == seq and "reordered" in result.reason


def test_duplicated_chunk(make_recording: Callable[..., Recorded], key: Ed25519PrivateKey) -> None:
    rec = make_recording()
    data = rec.path.read_bytes()
    start, end, _, seq = [s for s in _spans(data) if s[2] == "ChunkMeta"][3]
    result = _verify_bytes(data[:end] + data[start:end] + data[end:], key)
    assert result.status == "altered" and result.bad_seq == seq + 1
    assert "appears again" in result.reason


def test_rewritten_chunk_with_recomputed_hashes_fails_the_signature(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """An attacker without the key rewrites content and the whole chain after it."""
    from dataclasses import replace

    from recorder.codec import decode_chunk, encode_event
    from recorder.compress import compress_chunk, decompress_chunk
    from recorder.frames import Checkpoint, ChunkMeta, Trailer, chunk_hash, frame, parse_payload

    rec = make_recording()
    data = rec.path.read_bytes()
    out = bytearray()
    prev = b""
    forged_seq = 4
    for start, end, kind, seq in _spans(data):
        payload = data[start + FRAME_HEADER_SIZE : start + FRAME_HEADER_SIZE + 65]
        if kind == "HeaderRecord":
            out += data[start:end]
            prev = data[end - 32 : end]
        elif kind == "ChunkMeta":
            meta = parse_payload(payload)
            assert isinstance(meta, ChunkMeta)
            body = data[start + FRAME_HEADER_SIZE + 65 : end]
            if seq == forged_seq:
                events = decode_chunk(decompress_chunk(body, meta.raw_len), meta.t_first_us)
                events = [
                    Output(e.time, b"innocent\r\n") if isinstance(e, Output) else e for e in events
                ]
                raw, t = b"", meta.t_first_us
                for e in events:
                    piece, t = encode_event(e, t)
                    raw += piece
                body = compress_chunk(raw)
                meta = replace(meta, raw_len=len(raw), data_len=len(body))
            meta = replace(meta, hash=chunk_hash(prev, meta, body))
            prev = meta.hash
            out += frame(meta.encode()) + body
        elif kind in ("Checkpoint", "Trailer"):
            full = parse_payload(data[start + FRAME_HEADER_SIZE : end])
            assert isinstance(full, Checkpoint | Trailer)
            out += frame(replace(full, hash=prev).encode())  # cannot re-sign
        else:
            break  # drop index and footer; they are not the point here
    result = _verify_bytes(bytes(out), key)
    assert result.status == "altered", result
    assert result.bad_seq is not None and result.bad_seq <= forged_seq
    assert "signature" in result.reason


def test_wrong_public_key(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording()
    result = verify(rec.path, Ed25519PrivateKey.generate().public_key())
    assert result.status == "altered" and "signature" in result.reason
    assert result.bad_seq in (0, 1)


def test_whole_file_replaced_by_another_session(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    mine = make_recording(session_id="mine")
    other = make_recording(session_id="other")
    assert mine.summary is not None
    mine.path.write_bytes(other.path.read_bytes())
    by_id = verify(mine.path, key.public_key(), expected_session_id="mine")
    assert by_id.status == "altered" and by_id.bad_seq == 0
    assert "header mismatch" in by_id.reason and "'other'" in by_id.reason
    by_hash = verify(mine.path, key.public_key(), expected_final_hash=mine.summary.final_hash)
    assert by_hash.status == "altered" and "final hash" in by_hash.reason


def test_truncation_after_close_is_caught_by_the_expected_hash(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording()
    assert rec.summary is not None
    data = rec.path.read_bytes()
    trailer = next(s for s in _spans(data) if s[2] == "Trailer")
    cut = data[: trailer[0]]
    assert _verify_bytes(cut, key).status == "truncated"
    result = _verify_bytes(cut, key, expected_final_hash=rec.summary.final_hash)
    assert result.status == "altered" and "cut off" in result.reason
    assert result.bad_seq == rec.summary.last_seq + 1


def test_data_appended_after_the_footer(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    data = make_recording().path.read_bytes()
    for extra in (b"\x00" * 10, b"junk", data[:FOOTER_FRAME_SIZE]):
        result = _verify_bytes(data + extra, key)
        assert result.status == "altered" and "after the footer" in result.reason


def test_truncated_at_random_cut_points(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording()
    data = rec.path.read_bytes()
    spans = _spans(data)
    trailer_end = next(s[1] for s in spans if s[2] == "Trailer")
    with RecordingReader.open(rec.path) as r:
        by_chunk = {e.seq: r.chunk_events(e) for e in r.index}
    chunk_ends = {s[3]: s[1] for s in spans if s[2] == "ChunkMeta"}
    rng = random.Random(7)
    cuts = sorted({rng.randrange(len(data)) for _ in range(150)} | {0, 1, 5, 8, trailer_end})
    for cut in cuts:
        result = _verify_bytes(data[:cut], key)
        if cut >= trailer_end:
            assert result.status == "intact", (cut, result)
            continue
        assert result.status == "truncated", (cut, result)
        complete = [seq for seq, end in chunk_ends.items() if end <= cut]
        assert result.last_seq == (max(complete) if complete else (0 if cut > 100 else -1)), cut
        if cut < 100:
            continue
        with RecordingReader(io.BytesIO(data[:cut])) as r:
            expected = [ev for seq in complete for ev in by_chunk[seq]]
            assert normalise(r.events()) == normalise(expected), cut
            assert r.damage == []


def test_crashed_file_is_truncated_with_unsigned_tail(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording(close=False)
    result = verify(rec.path, key.public_key())
    assert result.status == "truncated" and result.end is None
    assert result.signed_seq <= result.last_seq
    assert result.last_time == pytest.approx(rec.events[-1].time)
    assert "no trailer" in result.reason


def test_duplicated_checkpoint(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    data = make_recording().path.read_bytes()
    start, end, _, _ = [s for s in _spans(data) if s[2] == "Checkpoint"][2]
    result = _verify_bytes(data[:end] + data[start:end] + data[end:], key)
    assert result.status == "altered" and "second checkpoint" in result.reason
    assert result.bad_offset == end
