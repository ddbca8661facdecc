"""Time to first screen for a late watcher, after a gigabyte of output.

Writes a live recording (never closed, like a running session) of ``--mib`` MiB of
output with the node's writer and default policy, then measures what a ``watch`` does
before its first event: take the writer's live tail, read the recording backwards
and cut (``build_snapshot``), and check the result on the real emulator. Three
workloads: ``logs`` (scrolling lines: cut by scrolling), ``tui`` (a full-screen
program that clears now and then and repaints cells in between), ``no-cut``
(cursor-addressed updates only: the 4 MiB fallback).

    PYTHONPATH=. python bench/control.py            # 1024 MiB per workload
    PYTHONPATH=. python bench/control.py --mib 64   # quicker
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.control.snapshot import build_snapshot
from recorder.writer import RecordingWriter
from replay.terminal import TerminalEmulator

COLS, ROWS = 120, 40
PIECE = 16 * 1024


def logs() -> Iterator[bytes]:
    """Scrolling log lines with colours."""
    n = 0
    while True:
        yield b"".join(
            b"\x1b[32m2026-01-01T00:00:%02d\x1b[0m worker[%d]: request %d served in %d ms\r\n"
            % (n % 60, n % 7, n + i, (n * 7 + i) % 300)
            for i in range(200)
        )
        n += 200


def tui() -> Iterator[bytes]:
    """Repaints cells by cursor position; a full clear every ~2 MiB."""
    n = 0
    while True:
        if n % 128 == 0:
            yield b"\x1b[H\x1b[2J"
        yield b"".join(
            b"\x1b[%d;%dH\x1b[7m%6d\x1b[0m" % (1 + (n + i) % ROWS, 1 + (i * 9) % 100, n + i)
            for i in range(600)
        )
        n += 1


def no_cut() -> Iterator[bytes]:
    """Cursor-addressed updates and never a clear: nothing fixes the whole screen."""
    n = 0
    while True:
        yield b"".join(b"\x1b[%d;1Hvalue %d" % (1 + (n + i) % ROWS, n + i) for i in range(800))
        n += 1


WORKLOADS = {"logs": logs, "tui": tui, "no-cut": no_cut}


def write_live(path: Path, mib: int, source: Iterator[bytes]) -> tuple[RecordingWriter, float]:
    writer = RecordingWriter.create(
        path,
        "01BENCHCONTROLAAAAAAAAAAAAA",
        {"cols": COLS, "rows": ROWS},
        Ed25519PrivateKey.generate(),
    )
    start = time.perf_counter()
    total, limit = 0, mib * 1024 * 1024
    for block in source:
        for i in range(0, len(block), PIECE):
            writer.output(block[i : i + PIECE])
        total += len(block)
        writer.tick()
        if total >= limit:
            break
    return writer, time.perf_counter() - start


def measure(path: Path, writer: RecordingWriter, runs: int) -> tuple[list[float], float, int, bool]:
    times: list[float] = []
    size = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        tail = writer.live_tail()
        with open(path, "rb") as f:
            snap = build_snapshot(f, tail, "01BENCHCONTROLAAAAAAAAAAAAA", (COLS, ROWS))
        times.append(time.perf_counter() - t0)
        size = len(snap.screen_bytes)
    emu = TerminalEmulator(COLS, ROWS)
    t0 = time.perf_counter()
    emu.feed(snap.screen_bytes)
    render = time.perf_counter() - t0  # the watcher also has to draw it once
    return times, render, size, any(emu.text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="output per workload (MiB)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    args = parser.parse_args()
    print(f"late joiner, {args.mib} MiB of output, {COLS}x{ROWS}, median of {args.runs}")
    print(
        f"{'workload':<8} {'write s':>8} {'file MiB':>9} {'snapshot':>10} {'node ms':>8} "
        f"{'emulate ms':>10} {'first screen ms':>16}"
    )
    for name in args.workload or list(WORKLOADS):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "live.bastrec"
            writer, wrote = write_live(path, args.mib, WORKLOADS[name]())
            times, render, size, drawn = measure(path, writer, args.runs)
            file_mib = path.stat().st_size / 2**20
            writer.close()
        assert drawn, "the snapshot drew nothing"
        node = statistics.median(times)
        print(
            f"{name:<8} {wrote:>8.1f} {file_mib:>9.1f} {size:>9}B {node * 1000:>8.1f} "
            f"{render * 1000:>10.1f} {(node + render) * 1000:>16.1f}"
        )


if __name__ == "__main__":
    main()
