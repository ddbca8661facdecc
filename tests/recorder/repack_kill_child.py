"""A repack in its own process that stops at a named step and waits to be killed.

``python -m tests.recorder.repack_kill_child PATH KEY_PEM STEP`` runs the real
``repack()`` with the steps below wrapped (in this process only): on reaching STEP it
prints ``at STEP`` and blocks on stdin, where the test SIGKILLs it. STEP ``none`` runs
to the end. Used by tests/recorder/test_repack_kill.py.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from recorder import RepackPolicy, repack

STEPS = (
    "locked",  # the original is locked and verified, nothing written yet
    "temp-created",  # the temp copy exists, empty
    "chunk-written",  # the first new chunk is in the temp copy
    "copy-closed",  # the copy has its trailer, index and footer and is fsynced
    "copy-checked",  # the copy verified and holds the same events
    "replaced",  # os.replace has swapped the copy in; the directory not yet fsynced
    "synced",  # the directory is fsynced: the repack is durable, the caller not yet told
)

repack_module = importlib.import_module("recorder.repack")


def _pause(step: str, stop_at: str) -> None:
    if step == stop_at:
        print(f"at {step}", flush=True)
        sys.stdin.read()  # the test kills us here
        raise SystemExit(f"{step}: stdin closed without a kill")


def _after(fn: Callable[..., Any], step: str, stop_at: str, first_only: bool = False) -> Any:
    seen = [False]

    def wrapped(*args: Any, **kw: Any) -> Any:
        result = fn(*args, **kw)
        if not (first_only and seen[0]):
            seen[0] = True
            _pause(step, stop_at)
        return result

    return wrapped


def install(stop_at: str) -> None:
    """Wrap the repack's steps so that the process pauses after ``stop_at``."""
    job = repack_module._Job
    job.run = _before_run(job.run, stop_at)
    copy_mode = _after(repack_module.__dict__["_copy_mode"], "temp-created", stop_at)
    setattr(repack_module, "_copy_mode", copy_mode)  # noqa: B010  a private name, on purpose
    job._cut = _after(job._cut, "chunk-written", stop_at, first_only=True)
    job._close = _after(job._close, "copy-closed", stop_at)
    job._check_copy = _after(job._check_copy, "copy-checked", stop_at)
    os.replace = _after(os.replace, "replaced", stop_at)
    fsync_dir = _after(repack_module.__dict__["_fsync_dir"], "synced", stop_at)
    setattr(repack_module, "_fsync_dir", fsync_dir)  # noqa: B010  a private name, on purpose


def _before_run(fn: Callable[..., Any], stop_at: str) -> Callable[..., Any]:
    def wrapped(self: Any, *args: Any) -> Any:
        _pause("locked", stop_at)
        return fn(self, *args)

    return wrapped


def main() -> None:
    path, key_file, stop_at = sys.argv[1:4]
    assert stop_at in (*STEPS, "none"), stop_at
    key = load_pem_private_key(Path(key_file).read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    install(stop_at)
    result = repack(path, key, policy=RepackPolicy(chunk_bytes=64 * 1024, min_saving=None))
    print(f"done {result.action}", flush=True)


if __name__ == "__main__":
    main()
