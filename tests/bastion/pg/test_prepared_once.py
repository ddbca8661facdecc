"""Prepared statements through the node: the text once per name (and chunk), every reader sees it.

Real pgbench ``-M prepared`` and psycopg ``prepare=True`` against real
PostgreSQL 15 through the bastion. The recording holds a named statement's
text on its first execution in each chunk and ``sql_ref`` after; the control
API's snapshot and watch stream (a watcher joining after the first execution),
the search extraction, ``bastion export --format jsonl`` and the console's
player facts all show the full text, and a name prepared again with another
text (after DEALLOCATE) records the new text.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bastion.control.client import ControlClient
from bastion.control.messages import LiveEnd, LiveEvent, LiveQuery, Snapshot
from bastion.pg.query_event import MAX_REF_GAP
from bastion.recording import recorded_totals
from bastion.search_entries import recording_entries
from bastion.store.models import Role, SessionRecord
from recorder import RecordingReader, repack_note
from recorder.events import Structured
from replay.recording_facts import scan_recording
from tests.peers.bastion_node import BastionHarness
from tests.peers.pg_bastion import PgTargets
from tests.peers.postgres import PgServer
from tests.waiting import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

SQL = "SELECT $1::int + 1 AS x /* prepared-once */"


@pytest.fixture(scope="module")
def pg(bastion: BastionHarness, pg_server: PgServer) -> Iterator[PgTargets]:
    """pg1/pg2 behind the shared bastion."""
    yield PgTargets.create(bastion, pg_server)


def _path(pg: PgTargets, session: SessionRecord) -> str:
    assert session.recording is not None
    return str(pg.harness.config.recordings_dir / session.recording)


def _chunks(path: str) -> tuple[list[list[dict[str, Any]]], int]:
    """The ``pg.query`` payloads of each chunk, as recorded, and how many chunks the
    node wrote (the node repacks a closed recording into fewer, larger chunks)."""
    with open(path, "rb") as f:
        note = repack_note(f)
        reader = RecordingReader(f)
        chunks = [
            [
                e.payload
                for e in reader.chunk_events(entry)
                if isinstance(e, Structured) and isinstance(e.payload, dict)
            ]
            for entry in reader.index
        ]
    return chunks, note.from_chunks if note is not None else len(chunks)


def _check_chunks(path: str) -> tuple[Counter[str], int]:
    """Every reference points into its own chunk; texts recorded per statement name,
    and the chunks the node wrote."""
    texts: Counter[str] = Counter()
    chunks, written = _chunks(path)
    for events in chunks:
        seen: dict[int, str] = {}
        for p in events:
            if "sql_ref" in p:
                assert p["sql"] is None and seen.get(p["sql_ref"]) == p["statement"], p
            elif p.get("statement") and p.get("sql") is not None:
                seen[p["seq"]] = p["statement"]
                texts[p["statement"]] += 1
    return texts, written


async def _watch(sock: str, user: str, sid: str, got: list[LiveEvent]) -> None:
    async with await ControlClient.connect(sock, user=user) as client:
        async for event in client.watch(sid):
            got.append(event)
            if isinstance(event, LiveEnd):
                return


async def test_psycopg_prepared_text_once_and_every_reader_sees_it(pg: PgTargets) -> None:
    harness = pg.harness
    sock = harness.control_socket()
    admin = harness.contractor("adm", Role.ADMIN)
    who = harness.contractor("db")
    pg.grant(who, "pg1", "readwrite")
    token = pg.token(who)
    got: list[LiveEvent] = []
    conn = await asyncio.to_thread(
        psycopg.connect, **pg.conninfo(who, password=token), autocommit=True
    )
    try:
        first = conn.execute(SQL.replace("$1", "%s"), [1], prepare=True).fetchone()
        assert first == (2,)
        (live,) = harness.store.list_sessions(live=True, user=who.name)
        watch = asyncio.create_task(_watch(sock, admin.name, live.id, got))
        await asyncio.to_thread(wait_until, lambda: got, 20, "the snapshot")
        for i in range(2, 40):  # some after a chunk was cut (flush_interval is 1 s)
            row = conn.execute(SQL.replace("$1", "%s"), [i], prepare=True).fetchone()
            assert row == (i + 1,)
            if i % 10 == 0:
                await asyncio.sleep(1.3)
        # the same name prepared again, with another text, after DEALLOCATE
        pgc = conn.pgconn
        for text in (b"SELECT 'first text' AS t", b"SELECT 'second text' AS t"):
            assert pgc.prepare(b"again", text).status == psycopg.pq.ExecStatus.COMMAND_OK
            for _ in range(3):
                assert pgc.exec_prepared(b"again", []).status == psycopg.pq.ExecStatus.TUPLES_OK
            assert pgc.exec_(b"DEALLOCATE again").status == psycopg.pq.ExecStatus.COMMAND_OK
    finally:
        conn.close()
    await asyncio.wait_for(watch, 30)
    session = pg.session_of(who)
    path = _path(pg, session)

    # the recording: the text once per name and chunk, references after
    raw = pg.raw_queries(session)
    mine = [q for q in raw if q.get("statement") == "_pg3_0"]
    assert len(mine) == 39
    texts, _ = _check_chunks(path)
    assert 1 <= texts["_pg3_0"] <= 5 and sum("sql_ref" in q for q in mine) == 39 - texts["_pg3_0"]
    again = [q for q in raw if q.get("statement") == "again"]
    shown = [q["sql"] for q in again]
    assert shown[0] == "SELECT 'first text' AS t" and "SELECT 'second text' AS t" in shown
    second = shown.index("SELECT 'second text' AS t")
    assert all(q["sql_ref"] == again[second]["seq"] for q in again[second + 1 :])
    assert all(q["sql_ref"] == again[0]["seq"] for q in again[1:second])

    # every reader sees the text
    resolved = pg.queries(session)
    assert len(resolved) == len(raw) and not any("sql_ref" in q for q in resolved)
    for q in resolved:
        if q.get("statement") == "_pg3_0":
            assert q["sql"] == SQL
    assert [q["sql"] for q in resolved if q.get("statement") == "again"] == (
        ["SELECT 'first text' AS t"] * len(again[:second])
        + ["SELECT 'second text' AS t"] * len(again[second:])
    )
    # ... the late watcher: snapshot (joined after the first execution) and stream
    snap = got[0]
    assert isinstance(snap, Snapshot) and [q["sql"] for q in snap.queries][-1] == SQL
    streamed = [e.payload for e in got if isinstance(e, LiveQuery)]
    assert streamed and all("sql_ref" not in q for q in streamed)
    assert [q["sql"] for q in streamed if q.get("statement") == "_pg3_0"] == [SQL] * 38
    assert streamed == resolved[len(resolved) - len(streamed) :]
    # ... search (the recording's statements) ...
    assert any(SQL in text for _, text in recorded_totals(path).commands)
    assert SQL in recording_entries(path)[2]
    assert "SELECT 'second text' AS t" in recording_entries(path)[2]
    # ... the console's player ...
    with RecordingReader.open(path) as reader:
        _, facts = scan_recording(reader)
    assert facts.queries == resolved
    # ... and the export a third party reads: self-contained
    out = harness.cli("export", session.id, "--format", "jsonl")
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()[1:]]
    exported = [x["payload"] for x in lines if x.get("name") == "pg.query"]
    assert exported == resolved


def test_pgbench_prepared_records_each_text_once_per_chunk(pg: PgTargets, tmp_path: Path) -> None:
    who = pg.harness.contractor("db")
    pg.grant(who, "pg1", "readwrite")
    token = pg.token(who)
    script = tmp_path / "s.sql"
    script.write_text("\\set a random(1, 1000)\nSELECT :a::int + 1 AS x;\nSELECT 'v' || :a;\n")
    exe = pg.server.bin_dir / "pgbench"
    env = pg.libpq_env(who, token)
    started = time.monotonic()
    run = subprocess.run(
        [str(exe) if exe.exists() else "pgbench", "-n", "-M", "prepared", "-c", "1"]
        + ["-T", "3", "-f", str(script), "pg1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert time.monotonic() - started < 100

    def sealed() -> list[SessionRecord]:
        found = pg.harness.store.list_sessions(user=who.name, limit=10)
        return found if len(found) >= 2 and all(s.final_hash for s in found) else []

    session = max(wait_until(sealed, 60, "pgbench's sessions sealed"), key=lambda s: s.started_at)
    path = _path(pg, session)
    raw = pg.raw_queries(session)
    texts, chunks = _check_chunks(path)
    assert set(texts) == {"P_0", "P_1"}
    most = chunks + len(raw) // MAX_REF_GAP  # once per chunk, and per 10,000 queries
    assert all(1 <= n <= most for n in texts.values()), (texts, chunks, len(raw))
    refs = sum("sql_ref" in q for q in raw)
    assert refs == len(raw) - sum(texts.values()) and refs > 10
    resolved = pg.queries(session)
    assert {q["sql"] for q in resolved} == {"SELECT $1::int + 1 AS x;", "SELECT 'v' || $1;"}
