"""Recording size of a fixed ``pgbench -M prepared`` run through a real node (issue 17 step 3).

Starts PostgreSQL 15 and a bastion node (``bench/pg.py``'s helpers, production
config), runs a fixed number of pgbench transactions in each mode through the
node (one client, so one session and one recording per run), and prints, per
run: the ``pg.query`` events, the statement texts they carry (``sql`` not null),
the recording's raw bytes (the events as encoded, what ``zstd -dc`` gives), the
file the node wrote at close, and the file after the node's repack.

The figures depend only on the code that writes the recording, so the same
script measures the code before the change by importing it from another
checkout::

    PYTHONPATH=. python bench/pg_prepared_bytes.py [--transactions 20000]
    PYTHONPATH=/path/to/older/checkout python bench/pg_prepared_bytes.py

(the node is a subprocess of the same interpreter and inherits PYTHONPATH).
Run from the repository root; everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import bastion
from bastion.store.models import SessionRecord
from pg import (
    bastion_env,
    bastion_token,
    bench_server,
    direct_libpq_env,
    pgbench_bin,
    say,
    start_bastion,
)
from recorder import RecordingReader, repack_note
from recorder.events import Structured
from recorder.frames import ChunkMeta
from recorder.scan import FileScanner, Item
from tests.waiting import wait_until

MODES: tuple[tuple[str, list[str]], ...] = (
    ("select-only", ["-S"]),
    ("tpcb-like", []),
    ("2 KB statement", ["-f", "{long}"]),
)
_COLUMNS = ", ".join(f"abalance + {i} AS report_column_{i:03d}" for i in range(64))
LONG = f"\\set a random(1, 100000)\nSELECT {_COLUMNS} FROM pgbench_accounts WHERE aid = :a;\n"
"""An ORM-sized statement (about 2 KB of text) in a custom pgbench script."""


def measure(path: Path) -> tuple[int, int, int, int, int]:
    """(pg.query events, of them with text, raw bytes, bytes written at close, bytes now)."""
    with open(path, "rb") as f:
        note = repack_note(f)
        reader = RecordingReader(f)
        events = texts = raw = 0
        for entry in reader.index:
            chunk = reader.chunk_events(entry)
            for e in chunk:
                if isinstance(e, Structured) and e.name == "pg.query":
                    events += 1
                    texts += isinstance(e.payload, dict) and e.payload.get("sql") is not None
        scanner = FileScanner(f)
        for entry in reader.index:
            item = scanner.read_at(entry.offset, with_data=False)
            if isinstance(item, Item) and isinstance(item.record, ChunkMeta):
                raw += item.record.raw_len
    size = path.stat().st_size
    return events, texts, raw, note.from_size if note is not None else size, size


def main() -> None:
    """Run and print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--scale", type=int, default=1)
    args = parser.parse_args()
    say(f"bastion imported from {Path(bastion.__file__).parent}")
    work = Path(tempfile.mkdtemp(prefix="bench-pgprep-"))
    os.chmod(work, 0o755)  # noqa: S103  postgres must reach it
    rows: list[tuple[str, str, float, int, int, int, int, int]] = []
    with ExitStack() as stack:
        server, user, password = stack.enter_context(bench_server())
        exe = pgbench_bin(server)
        direct = direct_libpq_env(server, user, password)
        subprocess.run(
            [exe, "-i", "-q", "-s", str(args.scale), "bench"], env=direct, check=True,
            capture_output=True,
        )  # fmt: skip
        long = work / "long.sql"
        long.write_text(LONG)
        h = start_bastion(work, "bastion")
        stack.callback(h.close)
        for name, flags in MODES:
            for mode in ("prepared", "extended", "simple"):
                target = f"b{len(rows)}"  # a target per run: its own contractor and session
                who, token = bastion_token(h, server, user, password, target)
                env = bastion_env(dict(os.environ), h, who, token)
                flags = [f.format(long=long) for f in flags]
                cmd = [exe, "-n", *flags, "-M", mode, "-c", "1", "-t", str(args.transactions)]
                started = time.monotonic()
                run = subprocess.run([*cmd, target], env=env, capture_output=True, text=True)
                if run.returncode != 0:
                    raise SystemExit(f"{' '.join(cmd)} failed: {run.stderr}")
                took = time.monotonic() - started

                def sealed(who: str = who) -> list[SessionRecord]:
                    found = h.store.list_sessions(user=who, limit=10)
                    ready = found and all(s.final_hash for s in found)
                    return list(found) if ready else []

                sessions = wait_until(sealed, 120, "the recording sealed")
                session = max(sessions, key=lambda s: s.started_at)
                assert session.recording is not None
                path = h.config.recordings_dir / session.recording
                deadline = time.monotonic() + 60  # the node repacks after close
                while repack_note(path) is None and time.monotonic() < deadline:
                    time.sleep(0.5)
                rows.append((name, mode, took, *measure(path)))
                say(f"{name} {mode}: {rows[-1]}")
    print("| workload | -M | transactions | pg.query events | with text | raw bytes | "
          "written | after repack | bytes/event raw |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for name, mode, _took, events, texts, raw, written, now in rows:
        print(
            f"| {name} | {mode} | {args.transactions:,} | {events:,} | {texts:,} | {raw:,} | "
            f"{written:,} | {now:,} | {raw / max(events, 1):.0f} |"
        )


if __name__ == "__main__":
    main()
