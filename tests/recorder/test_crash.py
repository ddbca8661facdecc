"""A real kill -9: everything older than the flush bound at the last tick is readable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import RecordingReader, recover, verify
from recorder.events import EventKind, Input, Output
from recorder.keys import save_signing_key
from tests.recorder.crash_child import expected

ROOT = Path(__file__).resolve().parents[2]
FLUSH = 0.2


def test_kill_9_loses_at_most_the_flush_interval(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    key_path = tmp_path / "key.pem"
    save_signing_key(key, key_path)
    path = tmp_path / "crash.bastrec"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.recorder.crash_child", str(path), str(key_path), str(FLUSH)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    last_t, ticks = 0.0, 0
    try:
        while last_t < 1.0 or ticks < 50:  # about a second of recording
            line = proc.stdout.readline()
            assert line.startswith("tick "), f"child ended early: {line!r}"
            last_t = float(line.split()[1])
            ticks += 1
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL

    with RecordingReader.open(path) as r:
        assert r.trailer is None
        events = list(r.events())
    # content and order: exactly the child's sequence, a prefix with nothing missing
    written = [(e.kind, e.data) for e in events if isinstance(e, Output | Input)]
    assert len(written) == len(events)
    wanted = [
        (EventKind.OUTPUT if k == "o" else EventKind.INPUT, d)
        for i in range(len(events))
        for k, d in expected(i)
    ]
    assert written == wanted[: len(written)]
    assert [e.time for e in events] == sorted(e.time for e in events)
    # nothing older than the flush bound at the last completed tick may be missing:
    # the file is a gap-free prefix, so the first missing event (which comes at most
    # one iteration after the last present one) must be younger than that bound
    last_time = events[-1].time
    times = [e.time for e in events]
    iteration = max(b - a for a, b in zip(times, times[1:], strict=False))
    assert last_time + iteration > last_t - FLUSH, (last_time, iteration, last_t)
    result = verify(path, key.public_key())
    assert result.status == "truncated", result
    assert result.last_time == last_time
    done = recover(path, key)
    assert done.result.status == "truncated" and done.result.recovered
