"""How late the event loop runs a timer: the delay every keystroke relayed by this node feels.

A node whose loop is blocked (a slow synchronous call, a flood of work) relays
late before it fails outright; this makes that visible on ``/metrics``
(``bastion_event_loop_lag_seconds``), for operators and for ``bench/soak.py``.
The probe is one timer a quarter second: nothing on any data path.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque

PROBE_SECONDS = 0.25
WINDOW_SECONDS = 10.0


class LoopLag:
    """The worst timer lateness over the last ``WINDOW_SECONDS``."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, float]] = deque()

    async def run(self) -> None:
        """Probe until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            start = loop.time()
            await asyncio.sleep(PROBE_SECONDS)
            now = loop.time()
            self._samples.append((now, max(0.0, now - start - PROBE_SECONDS)))
            while self._samples and self._samples[0][0] < now - WINDOW_SECONDS:
                self._samples.popleft()

    def worst(self) -> float:
        """Seconds: the largest lateness seen in the window (0 before the first probe)."""
        return max((lag for _, lag in self._samples), default=0.0)


def open_descriptors() -> float:
    """File descriptors this process holds (Linux ``/proc``; 0 elsewhere)."""
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return 0.0


def resident_bytes() -> float:
    """Resident memory of this process in bytes (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return 0.0


def task_count() -> float:
    """asyncio tasks alive in the running loop (0 outside one)."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return 0.0
