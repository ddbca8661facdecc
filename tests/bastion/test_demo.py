"""``bastion demo`` stops its throwaway sshd on every way out.

The demo runs as a real subprocess (its own session, like a terminal's job) until
it serves; then it gets SIGHUP, SIGTERM or SIGINT, to itself or (SIGHUP, as when
its terminal closes) to its whole process group, and the sshd must be gone after.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bastion.openssh_target import free_port

pytestmark = pytest.mark.integration

SERVING = "bastion: listening on"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _lines(proc: subprocess.Popen[str]) -> tuple[queue.Queue[str], threading.Thread]:
    out: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.put(line)
        out.put("")  # EOF

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    return out, reader


def _wait_serving(out: queue.Queue[str], log: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = out.get(timeout=1)
        except queue.Empty:
            continue
        log.append(line)
        if line == "":
            break
        if line.startswith(SERVING):
            return
    pytest.fail("the demo did not start serving:\n" + "".join(log))


@pytest.mark.parametrize(
    ("sig", "to_group"),
    [
        (signal.SIGHUP, False),
        (signal.SIGHUP, True),
        (signal.SIGTERM, False),
        (signal.SIGINT, False),
    ],
    ids=["hup", "hup-group", "term", "int"],
)
def test_the_demo_stops_its_sshd(tmp_path: Path, sig: signal.Signals, to_group: bool) -> None:
    demo_dir = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bastion",
            "demo",
            "--dir",
            str(demo_dir),
            "--port",
            str(free_port()),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    sshd_pid = None
    log: list[str] = []
    out, reader = _lines(proc)
    try:
        _wait_serving(out, log)
        sshd_pid = int((demo_dir / "target" / "sshd.pid").read_text())
        assert _alive(sshd_pid)
        if to_group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(timeout=30)
        assert not _alive(sshd_pid), "".join(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)  # EOF once the demo is gone
        assert proc.stdout is not None
        proc.stdout.close()
        if sshd_pid is not None and _alive(sshd_pid):
            os.kill(sshd_pid, signal.SIGKILL)  # do not leak it into the other tests
