"""Build the console's fixture recordings from the committed terminal captures.

Why: the app tests (Pilot and snapshots) need real recordings - the same container
the node writes, read by the same ``RecordingReader`` - with fixed content and
timing, so every run and every snapshot sees exactly the same sessions. This script
replays a capture (``fixtures/NAME.bin``, raw bytes from a real pty) through
``RecordingWriter`` on a fake clock: each typed step of ``NAME.json`` becomes an
input event, the output up to the next step follows it in small pieces, and there
is an idle gap before ``exit``. A database session is built from hand-written
``pg.query`` payloads in the node's format.

Run from the project root; the output is committed under
``tests/replay/fixtures/recordings/``::

    python tests/replay/make_recordings.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bastion.pg.query_event import QUERY_EVENT
from recorder import RecordingWriter, WriterPolicy
from tests.replay.capture import SCENARIOS

FIXTURES = Path(__file__).resolve().parent / "fixtures"
OUT = FIXTURES / "recordings"
STARTED_AT = 1_746_093_600.0  # 2025-05-01 10:00Z
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PIECE = 96  # output bytes per event


class FakeClock:
    """The writer's clock: set explicitly before each event."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _writer(name: str, meta: dict[str, Any], clock: FakeClock) -> RecordingWriter:
    path = OUT / f"{name}.bastrec"
    path.unlink(missing_ok=True)
    return RecordingWriter.create(
        path,
        name,
        meta,
        KEY,
        clock=clock,
        wall_clock=lambda: STARTED_AT,
        policy=WriterPolicy(chunk_bytes=4096, fsync_interval=None),
    )


def _boundaries(name: str, data: bytes) -> list[int]:
    """Where each step's output starts: the capture's mark taken before the step was
    sent, else where the shell's echo of the typed line starts; steps with neither
    (keys typed into a full-screen program) are placed between their neighbours."""
    steps = next(s for s in SCENARIOS if s.name == name).steps
    marks = json.loads((FIXTURES / f"{name}.json").read_text())["marks"]
    cuts: list[int | None] = []
    pos = 0
    for step in steps:
        echo = step.send.rstrip(b"\r")
        found = marks[step.mark] if step.mark else -1
        if found < 0 and step.send.endswith(b"\r"):
            found = data.find(echo, pos)
        cuts.append(found if found >= pos else None)
        pos = found if found >= pos else pos
    known = [*(c for c in cuts), len(data)]
    filled: list[int] = []
    for k, cut in enumerate(cuts):
        if cut is None:
            before = filled[-1] if filled else 0
            after = next(c for c in known[k + 1 :] if c is not None)
            cut = (before + after) // 2
        filled.append(cut)
    return filled


def terminal_session(name: str, session_id: str, gap: float = 40.0) -> None:
    """A recording of capture ``name``: step k typed at about 4k+2 s, a long idle gap
    before the last step, a marker halfway."""
    data = (FIXTURES / f"{name}.bin").read_bytes()
    meta = json.loads((FIXTURES / f"{name}.json").read_text())
    steps: list[str] = meta["steps"]
    clock = FakeClock()
    w = _writer(
        session_id,
        {
            "user": "alice",
            "target": "web1",
            "protocol": "ssh",
            "cols": meta["cols"],
            "rows": meta["rows"],
            "term": meta["term"],
        },
        clock,
    )
    cuts = [*_boundaries(name, data), len(data)]
    clock.now = 0.2
    for i in range(0, cuts[0], PIECE):
        w.output(data[i : min(i + PIECE, cuts[0])])
        clock.now += 0.01
    t = 2.0
    for k, step in enumerate(steps):
        if k == len(steps) - 1:
            t += gap
        if k == len(steps) // 2:
            clock.now = t - 0.5
            w.marker("grant ends in 5 minutes")
        clock.now = t
        start, end = cuts[k], cuts[k + 1]
        echo = step.rstrip("\r").encode()
        echoed = step.endswith("\r") and data[start : start + len(echo)] == echo
        for ch in step:  # typed one key at a time, as people do; the shell echoes each
            w.input(ch.encode())
            if echoed and ch != "\r":
                clock.now += 0.002
                w.output(data[start : start + 1])
                start += 1
            clock.now += 0.05
        for i in range(start, end, PIECE):
            w.output(data[i : min(i + PIECE, end)])
            clock.now += 0.01
        t = clock.now + 4.0
    w.exit(status=0)
    w.close("client disconnected")


QUERIES: list[dict[str, Any]] = [
    {"kind": "simple", "sql": "BEGIN", "tag": "BEGIN", "rows": None, "tx": "in-transaction"},
    {
        "kind": "extended",
        "sql": "SELECT id, email FROM customers WHERE id = $1",
        "params": ["42"],
        "statement": "s1",
        "portal": "",
        "tag": "SELECT 1",
        "rows": 1,
        "tx": "in-transaction",
    },
    {
        "kind": "simple",
        "sql": "UPDATE customers SET email = 'x@example.com'\n WHERE id = 42",
        "tag": "UPDATE 1",
        "rows": 1,
        "tx": "in-transaction",
    },
    {
        "kind": "error",
        "sql": "DELETE FROM audit_log",
        "error": {"sqlstate": "42501", "message": "permission denied for table audit_log"},
        "tx": "failed",
    },
    {"kind": "simple", "sql": "ROLLBACK", "tag": "ROLLBACK", "tx": "idle"},
    {
        "kind": "copy",
        "sql": "COPY customers TO STDOUT",
        "tag": "COPY 1200",
        "rows": 1200,
        "copy": {"direction": "out", "bytes": 48000, "messages": 1200},
        "tx": "idle",
    },
    {
        "kind": "extended",
        "sql": "INSERT INTO notes(body, blob) VALUES ($1, $2)",
        "params": ["hello", {"hex": "00ff"}],
        "tag": "INSERT 0 1",
        "rows": 1,
        "tx": "idle",
    },
]


def database_session(session_id: str) -> None:
    """A PostgreSQL session: the queries above, 6 s apart, in the node's payload format."""
    clock = FakeClock()
    w = _writer(
        session_id,
        {"user": "bob", "target": "db1", "protocol": "postgres", "database": "shop"},
        clock,
    )
    for seq, q in enumerate(QUERIES, 1):
        clock.now = 3.0 + 6.0 * (seq - 1)
        duration = 0.4 + seq * 0.3
        payload: dict[str, Any] = {
            "seq": seq,
            "params": [],
            "statement": None,
            "portal": None,
            "tag": None,
            "tags": [q["tag"]] if q.get("tag") else [],
            "rows": None,
            "error": None,
            "start": clock.now,
            "duration_ms": duration,
            "completed": True,
            "suspended": False,
            "copy": None,
            **q,
        }
        clock.now += duration / 1000
        w.event(QUERY_EVENT, payload)
    clock.now += 5.0
    w.close("client disconnected")


def main() -> None:
    """(Re)write every fixture recording."""
    OUT.mkdir(parents=True, exist_ok=True)
    terminal_session("vim", "s-vim")
    terminal_session("ls_color", "s-ls")
    terminal_session("htop", "s-htop")
    database_session("s-pg")
    for p in sorted(OUT.glob("*.bastrec")):
        print(p.relative_to(FIXTURES.parent.parent.parent), p.stat().st_size)


if __name__ == "__main__":
    main()
