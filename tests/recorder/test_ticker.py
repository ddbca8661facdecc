"""run_ticker drives tick() from an asyncio loop (inline or in a worker thread)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from recorder import RecordingReader, RecordingWriter, run_ticker
from tests.recorder.conftest import fast_policy
from tests.recorder.helpers import output_bytes


@pytest.mark.parametrize("offload", [False, True])
async def test_ticker_flushes_pending_output(
    tmp_path: Path, key: Ed25519PrivateKey, offload: bool
) -> None:
    path = tmp_path / "a.bastrec"
    w = RecordingWriter.create(path, "a", {}, key, policy=fast_policy(flush_interval=0.05))
    task = asyncio.create_task(run_ticker(w, 0.01, offload=offload))
    w.output(b"hello")
    for _ in range(500):  # wait for the chunk, however slow the machine is
        if w.pending_bytes == 0:
            break
        await asyncio.sleep(0.01)
    assert w.pending_bytes == 0
    with RecordingReader.open(path) as r:  # readable before close
        assert output_bytes(r.events()) == b"hello"
    w.close()
    await asyncio.wait_for(task, 5)
    assert task.done() and task.exception() is None
