"""recover(): crashed files get a recovery trailer, index and footer; tampering is refused."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import RecordingFormatError, RecordingReader, recover, verify
from tests.recorder.conftest import Recorded
from tests.recorder.helpers import normalise


def test_recover_a_crashed_file(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording(close=False)
    before = verify(rec.path, key.public_key())
    assert before.status == "truncated"
    done = recover(rec.path, key)
    assert done.action == "recovered" and done.discarded_bytes == 0
    assert done.final_hash == before.final_hash and done.signature is not None
    after = verify(rec.path, key.public_key(), expected_final_hash=done.final_hash)
    assert after == done.result
    assert after.status == "truncated" and after.recovered and after.end == "recovered"
    assert after.last_seq == before.last_seq and after.signed_seq == before.signed_seq
    assert "closed by recovery" in after.reason
    with RecordingReader.open(rec.path) as r:
        assert r.indexed_from_footer and not r.complete
        assert r.trailer is not None and r.trailer.end == 2
        assert normalise(r.events()) == normalise(rec.events)
        mid = r.index[len(r.index) // 2].time
        assert list(r.events(start=mid)) == [e for e in r.events() if e.time >= mid]
    again = recover(rec.path, key)
    assert (again.action, again.final_hash, again.signature) == (
        "none",
        done.final_hash,
        done.signature,
    )


def test_recover_discards_only_a_torn_tail(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording(close=False)
    full = rec.path.read_bytes()
    rec.path.write_bytes(full[:-7])  # the last record is torn
    truncated = verify(rec.path, key.public_key())
    assert truncated.status == "truncated" and truncated.notes
    done = recover(rec.path)  # no key: chain checked, trailer unsigned
    assert done.discarded_bytes > 0 and done.signature is None
    after = verify(rec.path, key.public_key())
    assert after.status == "truncated" and after.recovered, after
    assert any("discarded" in n for n in after.notes)


def test_recover_refuses_an_altered_file(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording(close=False)
    data = bytearray(rec.path.read_bytes())
    data[len(data) // 2] ^= 0x10
    rec.path.write_bytes(bytes(data))
    with pytest.raises(RecordingFormatError, match="only repairs files cut short"):
        recover(rec.path, key)
    assert rec.path.read_bytes() == bytes(data), "the evidence is left untouched"


def test_recover_adds_a_missing_index_to_a_closed_file(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    rec = make_recording()
    with RecordingReader.open(rec.path) as r:
        assert r.trailer is not None
    data = rec.path.read_bytes()
    from tests.recorder.test_verify import _spans

    index_start = next(s[0] for s in _spans(data) if s[2] == "IndexRecord")
    rec.path.write_bytes(data[: index_start + 10])
    assert verify(rec.path, key.public_key()).status == "intact"
    done = recover(rec.path, key)
    assert done.action == "indexed"
    assert rec.summary is not None and done.signature == rec.summary.signature
    assert rec.path.read_bytes() == data
    assert done.result.status == "intact" and done.result.notes == ()


def test_clean_close_and_recovery_are_distinguishable(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey
) -> None:
    closed = make_recording()
    crashed = make_recording(close=False)
    recover(crashed.path, key)
    assert closed.summary is not None
    untouched = recover(closed.path, key)
    assert (untouched.action, untouched.signature) == ("none", closed.summary.signature)
    a, b = verify(closed.path, key.public_key()), verify(crashed.path, key.public_key())
    assert (a.status, a.end) == ("intact", "closed")
    assert (b.status, b.end) == ("truncated", "recovered")
