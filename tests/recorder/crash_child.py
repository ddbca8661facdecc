"""Child process for the kill -9 test: records forever, reporting each completed tick.

Usage: python -m tests.recorder.crash_child RECORDING KEY_PEM FLUSH_INTERVAL

After each ``tick()`` returns it prints ``tick <t>``: every event with session time
<= t - FLUSH_INTERVAL has been handed to the OS.
"""

from __future__ import annotations

import sys
import time

from recorder import RecordingWriter, WriterPolicy
from recorder.keys import load_signing_key


def main() -> None:
    path, key_path, flush = sys.argv[1], sys.argv[2], float(sys.argv[3])
    policy = WriterPolicy(flush_interval=flush, fsync_interval=None, checkpoint_interval=0.3)
    w = RecordingWriter.create(
        path, "crash", {"user": "alice"}, load_signing_key(key_path), policy=policy
    )
    for i in range(10**9):
        for kind, data in expected(i):
            (w.output if kind == "o" else w.input)(data)
        time.sleep(0.003)
        t = w.elapsed
        w.tick()
        sys.stdout.write(f"tick {t:.6f}\n")
        sys.stdout.flush()


def expected(i: int) -> list[tuple[str, bytes]]:
    """The events written in iteration ``i``."""
    events = [("o", b"line %d\r\n" % i)]
    if i % 3 == 0:
        events.append(("i", b"k%d" % i))
    return events


if __name__ == "__main__":
    main()
