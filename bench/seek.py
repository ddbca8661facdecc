"""Seek benchmark: how fast the player shows any moment of a large recording.

Generates a recording of about ``--size`` bytes of terminal output (default 1 GiB)
with ``recorder.RecordingWriter`` on a simulated clock: a realistic mix of log
streams, coloured ``ls``-style listings, ``top``-like full-screen redraws with cursor
addressing, vim-like alternate-screen editing and slow interactive typing with idle
gaps. Then it builds the player's keyframes (``replay.keyframe_store``, the same code
the TUI runs in its worker), and seeks to random points, each time restoring the
nearest keyframe, feeding the events after it and taking the screen snapshot the
widget draws. Prints a table: recording size, keyframe build time and size, and
seek time (median, p95, max) - the target is well under 100 ms.

    PYTHONPATH=. python bench/seek.py                   # 1 GiB (keyframe build takes minutes)
    PYTHONPATH=. python bench/seek.py --size 64M --points 200
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fake_clock import FakeClock
from recorder import RecordingReader, RecordingWriter, WriterPolicy
from replay.keyframe_store import KeyframeStore

COLS, ROWS = 120, 40


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper().rstrip("B").rstrip("I")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _log_block(rng: random.Random, n: int) -> bytes:
    levels = [b"INFO", b"INFO", b"INFO", b"\x1b[33mWARN\x1b[0m", b"\x1b[31mERROR\x1b[0m"]
    lines = [
        b"2026-11-29T07:%02d:%02d.%03dZ %s worker[%d] request id=%d path=/api/v1/items/%d "
        b"status=%d in %dms\r\n"
        % (
            rng.randrange(60),
            rng.randrange(60),
            rng.randrange(1000),
            rng.choice(levels),
            rng.randrange(16),
            rng.randrange(10**9),
            rng.randrange(10**5),
            rng.choice((200, 200, 201, 404, 500)),
            rng.randrange(900),
        )
        for _ in range(n)
    ]
    return b"".join(lines)


def _ls_block(rng: random.Random, n: int) -> bytes:
    colours = [b"\x1b[01;34m", b"\x1b[01;32m", b"\x1b[01;36m", b"\x1b[0m", b"\x1b[01;31m"]
    out = [b"$ ls -l --color=always\r\n"]
    for _ in range(n):
        c = rng.choice(colours)
        out.append(
            b"-rw-r--r-- 1 deploy deploy %8d Nov 29 07:%02d %sfile_%06d.dat\x1b[0m\r\n"
            % (rng.randrange(10**7), rng.randrange(60), c, rng.randrange(10**6))
        )
    return b"".join(out)


def _top_frame(rng: random.Random) -> bytes:
    out = [
        b"\x1b[H\x1b[1mtop - 07:00:00 up 3 days, load average: %.2f\x1b[0m\x1b[K\r\n" % rng.random()
    ]
    out.append(b"\x1b[7m  PID USER      %CPU %MEM COMMAND" + b" " * 80 + b"\x1b[0m\r\n")
    for row in range(3, ROWS):
        out.append(
            b"\x1b[%d;1H%5d %-8s %5.1f %4.1f \x1b[32m%s\x1b[0m\x1b[K"
            % (
                row,
                rng.randrange(99999),
                b"deploy",
                rng.random() * 100,
                rng.random() * 10,
                rng.choice([b"python3", b"postgres", b"nginx", b"java -jar app.jar"]),
            )
        )
    return b"".join(out)


def _vim_session(rng: random.Random) -> list[bytes]:
    pieces = [b"\x1b[?1049h\x1b[22;0;0t\x1b[H\x1b[2J"]
    for row in range(1, ROWS):
        pieces.append(b"\x1b[%d;1H\x1b[94m~\x1b[0m" % row)
    for i in range(rng.randrange(20, 80)):
        pieces.append(b"\x1b[%d;%dH%s" % (1 + i % (ROWS - 2), 1, b"config_key_%d = %d" % (i, i)))
    pieces.append(b"\x1b[%d;1H:wq\r\x1b[?1049l" % ROWS)
    return pieces


def generate(path: Path, size: int, seed: int = 7) -> tuple[float, float]:
    """Write the recording; returns (session seconds, wall seconds to write)."""
    rng = random.Random(seed)
    clock = FakeClock()
    key = Ed25519PrivateKey.generate()
    started = time.perf_counter()
    w = RecordingWriter.create(
        path,
        "bench-seek",
        {"user": "bench", "target": "bench", "protocol": "ssh", "cols": COLS, "rows": ROWS},
        key,
        clock=clock,
        policy=WriterPolicy(fsync_interval=None),
    )
    logs = [_log_block(rng, 150) for _ in range(64)]  # ~16 KiB: SSH packet sized
    listings = [_ls_block(rng, 150) for _ in range(32)]
    frames = [_top_frame(rng) for _ in range(64)]
    written = 0
    while written < size:
        kind = rng.random()
        if kind < 0.45:  # a log stream: a few seconds of fast output
            for _ in range(rng.randrange(5, 40)):
                block = rng.choice(logs)
                w.output(block)
                written += len(block)
                clock.now += 0.02
        elif kind < 0.65:
            block = rng.choice(listings)
            w.output(block)
            written += len(block)
            clock.now += 0.1
        elif kind < 0.85:  # top: a redraw a second for a while
            for _ in range(rng.randrange(5, 30)):
                frame = rng.choice(frames)
                w.output(frame)
                written += len(frame)
                clock.now += 1.0
        elif kind < 0.95:
            for piece in _vim_session(rng):
                w.output(piece)
                written += len(piece)
                clock.now += 0.05
        else:  # a person typing, then thinking
            for ch in b"systemctl status nginx\r":
                w.input(bytes([ch]))
                w.output(bytes([ch]))
                clock.now += 0.12
            clock.now += rng.uniform(5, 120)
        w.tick(clock.now)
    w.close("bench")
    return clock.now, time.perf_counter() - started


def main() -> None:
    """Generate, index, seek; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1G", help="output bytes to generate (default 1G)")
    parser.add_argument("--points", type=int, default=300, help="random seeks (default 300)")
    parser.add_argument("--dir", help="where to write the recording (default: a temp dir)")
    args = parser.parse_args()
    size = _size(args.size)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-seek-") as tmp:
        path = Path(tmp) / "bench.bastrec"
        duration, write_s = generate(path, size)
        file_size = os.path.getsize(path)
        with RecordingReader.open(path) as reader:
            started = time.perf_counter()
            store = KeyframeStore.build(reader.events(), COLS, ROWS)
            build_s = time.perf_counter() - started
            cache = store.encode()
            started = time.perf_counter()
            store = KeyframeStore.decode(cache)
            load_s = time.perf_counter() - started
            rng = random.Random(1)
            seeks = []
            for _ in range(args.points):
                t = rng.uniform(0, duration)
                started = time.perf_counter()
                emu = store.seek(reader, t)
                emu.snapshot()
                seeks.append(time.perf_counter() - started)
        seeks.sort()
        p95 = seeks[min(len(seeks) - 1, int(len(seeks) * 0.95))]
        rows = [
            ("terminal output", f"{size / 2**20:,.0f} MiB over {duration / 3600:.1f} h of session"),
            ("recording file", f"{file_size / 2**20:,.1f} MiB (written in {write_s:.1f} s)"),
            ("keyframes", f"{len(store):,} ({len(cache) / 2**20:,.1f} MiB cache file)"),
            ("keyframe build", f"{build_s:,.1f} s ({size / 2**20 / build_s:.1f} MiB/s)"),
            ("keyframe cache load", f"{load_s * 1000:.0f} ms"),
            (
                f"seek ({len(seeks)} random points)",
                f"median {statistics.median(seeks) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, "
                f"max {seeks[-1] * 1000:.1f} ms (target: well under 100 ms)",
            ),
        ]
        width = max(len(k) for k, _ in rows)
        print(f"| {'measure'.ljust(width)} | result |")
        print(f"|{'-' * (width + 2)}|--------|")
        for k, v in rows:
            print(f"| {k.ljust(width)} | {v} |")


if __name__ == "__main__":
    main()
