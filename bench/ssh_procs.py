"""The processes the SSH benchmark starts, and how it ends them on any exit path.

``reap`` waits with a blocking ``wait`` and a timer rather than a polling timeout,
so that a measured time is never rounded up to the next poll.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class BenchError(Exception):
    """A peer failed where it must not (the message says which and why)."""


_children: list[subprocess.Popen[bytes]] = []


def spawn(argv: Sequence[str], **kw: object) -> subprocess.Popen[bytes]:
    """Popen, remembered so that ``reap_all`` can end it on any exit path."""
    proc: subprocess.Popen[bytes] = subprocess.Popen(argv, **kw)  # type: ignore[call-overload]
    _children.append(proc)
    return proc


def reap(proc: subprocess.Popen[bytes], timeout: float = 5) -> int:
    """Wait for a child (kill it after ``timeout``) and forget it.

    A blocking wait with a timer, not ``wait(timeout=)``: that polls with sleeps of up
    to 50 ms, which would round every measured time up to the next poll.
    """
    timer = threading.Timer(timeout, _kill, (proc,))
    timer.start()
    try:
        rc = proc.wait()
    finally:
        timer.cancel()
    if proc in _children:
        _children.remove(proc)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()
    return rc


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()


def reap_all() -> None:
    """Terminate every client process still running (by its own pid)."""
    for proc in list(_children):
        if proc.poll() is None:
            proc.terminate()
    for proc in list(_children):
        reap(proc, timeout=3)


def wait_listening(
    proc: subprocess.Popen[bytes], port: int, what: str, exited: Callable[[], str]
) -> None:
    """Wait until ``proc`` accepts connections on ``port`` (BenchError if it dies or not)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(exited())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"{what} did not listen")


def err_tail(path: Path) -> str:
    """The end of a child's stderr file, for an error message."""
    try:
        return path.read_text(errors="replace")[-1500:]
    except FileNotFoundError:
        return ""
