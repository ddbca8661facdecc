"""SIGKILL a real repack process at each of its steps (threat-model row F6).

Whatever step the kill lands on, the file at the recording's path verifies intact and
holds the original's events: before the swap it is the original byte for byte, after
it the verified copy that names the original's final hash. The next repack then
either finishes the job (removing the dead process's temp copy) or finds it done.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from recorder import RecordingReader, RepackPolicy, repack, repack_note, verify
from recorder.events import Event
from tests.recorder.conftest import Recorded
from tests.recorder.repack_kill_child import STEPS

ROOT = Path(__file__).resolve().parents[2]
SWAPPED = STEPS[STEPS.index("replaced") :]


def _events(path: Path) -> list[Event]:
    with RecordingReader.open(path) as r:
        return list(r.events())


def _leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if ".repack-" in p.name)


def _kill_at(path: Path, key_file: Path, step: str) -> None:
    """Run the child repack, wait for it to reach ``step``, SIGKILL it."""
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.recorder.repack_kill_child", str(path), str(key_file), step],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()  # blocks until the child pauses or exits
        assert line == f"at {step}\n", (line, child.stderr.read() if child.stderr else "")
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        for stream in (child.stdin, child.stdout, child.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.parametrize("step", STEPS)
def test_a_repack_killed_at_any_step_loses_nothing(
    step: str,
    make_recording: Callable[..., Recorded],
    key: Ed25519PrivateKey,
    tmp_path: Path,
) -> None:
    rec = make_recording()
    assert rec.summary is not None
    original, before = rec.path.read_bytes(), _events(rec.path)
    original_hash = rec.summary.final_hash
    key_file = tmp_path / "node.key"
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))

    _kill_at(rec.path, key_file, step)

    result = verify(rec.path, key.public_key())
    assert result.status == "intact", result
    assert _events(rec.path) == before
    note = repack_note(rec.path)
    if step in SWAPPED:
        assert note is not None and note.from_final_hash == original_hash
    else:
        assert note is None and rec.path.read_bytes() == original
        assert (
            verify(rec.path, key.public_key(), expected_final_hash=original_hash).status == "intact"
        )
    # the next repack finishes the job or finds it done, and clears the dead one's temp copy
    again = repack(rec.path, key, policy=RepackPolicy(min_saving=None))
    assert again.action == ("skipped" if step in SWAPPED else "repacked"), again.reason
    assert _leftovers(rec.path) == []
    assert _events(rec.path) == before
    final = repack_note(rec.path)
    assert final is not None and final.from_final_hash == original_hash


def test_the_child_repack_runs_to_the_end_when_not_stopped(
    make_recording: Callable[..., Recorded], key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """The harness itself: with no step to stop at, the child's repack succeeds."""
    rec = make_recording()
    key_file = tmp_path / "node.key"
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    argv = [sys.executable, "-m", "tests.recorder.repack_kill_child", str(rec.path), str(key_file)]
    r = subprocess.run([*argv, "none"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.stdout == "done repacked\n", r.stderr
    assert repack_note(rec.path) is not None and _leftovers(rec.path) == []
