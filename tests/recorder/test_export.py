"""Exports: asciicast v2 accepted by asciinema, UTF-8 across chunks, lossless JSON lines."""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import pty
import shutil
import subprocess
import termios
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import RecordingReader, RecordingWriter
from recorder.events import Input, Output, Resize
from recorder.export import to_asciicast, to_jsonl
from tests.recorder.conftest import FakeClock, Recorded, fast_policy
from tests.recorder.helpers import output_bytes


def _asciinema_cat(cast: Path) -> str:
    """Run ``asciinema cat`` with a controlling pty (it opens /dev/tty) and stdout piped."""
    assert shutil.which("asciinema"), "the Debian asciinema CLI is required"
    master, slave = pty.openpty()

    def make_controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    try:
        proc = subprocess.run(
            ["asciinema", "cat", str(cast)],
            stdin=slave,
            capture_output=True,
            start_new_session=True,
            preexec_fn=make_controlling_tty,
            timeout=60,
            check=False,
        )
    finally:
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode("utf-8")


def test_asciicast_plays_in_asciinema(
    make_recording: Callable[..., Recorded], tmp_path: Path
) -> None:
    rec = make_recording()
    cast = tmp_path / "s.cast"
    with RecordingReader.open(rec.path) as r, open(cast, "w", encoding="utf-8") as out:
        count = to_asciicast(r, out)
    lines = cast.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    assert header["version"] == 2 and (header["width"], header["height"]) == (80, 24)
    assert header["title"] == f"alice web1 {rec.path.stem}"
    assert len(lines) == count + 1
    kinds = {json.loads(line)[1] for line in lines[1:]}
    assert kinds == {"o", "i", "r", "m"}
    played = _asciinema_cat(cast)
    assert played == output_bytes(rec.events).decode("utf-8", errors="replace")


def test_utf8_split_across_chunks(tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock) -> None:
    path = tmp_path / "u.bastrec"
    w = RecordingWriter.create(path, "u", {}, key, clock=clock, policy=fast_policy())
    text = "naïve café — 日本語 🎉\r\n".encode()
    for i, byte in enumerate(text):  # one byte per event, a chunk every few bytes
        w.output(bytes([byte]))
        if i % 3 == 0:
            clock.advance(1.0)
            w.tick()
    w.output(b"\xff\xfe broken \xe2\x82")  # invalid and an unfinished sequence at the end
    w.close()
    with RecordingReader.open(path) as r:
        assert len(r.index) > 10
        assert output_bytes(r.events()) == text + b"\xff\xfe broken \xe2\x82"  # lossless
        buf = io.StringIO()
        to_asciicast(r, buf)
    events = [json.loads(line) for line in buf.getvalue().splitlines()[1:]]
    exported = "".join(e[2] for e in events if e[1] == "o")
    assert exported == "naïve café — 日本語 🎉\r\n\ufffd\ufffd broken \ufffd"
    cast = tmp_path / "u.cast"
    cast.write_text(buf.getvalue(), encoding="utf-8")
    assert _asciinema_cat(cast) == exported


def test_asciicast_size_from_first_resize(
    tmp_path: Path, key: Ed25519PrivateKey, clock: FakeClock
) -> None:
    path = tmp_path / "r.bastrec"
    w = RecordingWriter.create(
        path, "r", {"term": "screen"}, key, clock=clock, policy=fast_policy()
    )
    w.resize(132, 43)
    w.output(b"x")
    w.close()
    with RecordingReader.open(path) as r:
        buf = io.StringIO()
        to_asciicast(r, buf, include_input=False)
    header = json.loads(buf.getvalue().splitlines()[0])
    assert (header["width"], header["height"]) == (132, 43)
    assert header["env"] == {"TERM": "screen"}


def test_jsonl_is_lossless(make_recording: Callable[..., Recorded]) -> None:
    rec = make_recording()
    buf = io.StringIO()
    with RecordingReader.open(rec.path) as r:
        count = to_jsonl(r, buf)
        originals = list(r.events())
    lines = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert lines[0]["kind"] == "header" and lines[0]["session_id"] == rec.path.stem
    assert len(lines) == count + 1 == len(originals) + 1
    for obj, ev in zip(lines[1:], originals, strict=True):
        assert obj["t"] == pytest.approx(ev.time)
        assert obj["kind"] == ev.kind.name.lower()
        if isinstance(ev, Output | Input):
            data = obj["text"].encode() if "text" in obj else base64.b64decode(obj["b64"])
            assert data == ev.data
            assert ("text" in obj) != ("b64" in obj)
        elif isinstance(ev, Resize):
            assert (obj["cols"], obj["rows"]) == (ev.cols, ev.rows)
    assert any("b64" in obj for obj in lines[1:]) and any("text" in obj for obj in lines[1:])
    assert any(obj["kind"] == "structured" and obj["name"] == "query" for obj in lines[1:])
